//! Running the model's function calls: which tool a name means, and the booking tools run
//! with a timeout, always answering JSON the model can read.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::booking::{Caller, Tools};
use crate::openai::ToolCall;

use super::agent::{END_CALL, HANDOFF_PREFIX, TRANSFER_CALL};

/// What a function call asks the bridge to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolKind {
    /// Hang up once the goodbye has been heard.
    EndCall,
    /// Transfer the caller to the agent's person (SIP REFER).
    TransferCall,
    /// Hand the conversation to another agent.
    Handoff(String),
    /// A booking tool (or an unknown name, which the booking tools answer with an error).
    Booking,
}

/// Reads a tool name.
pub fn classify(name: &str) -> ToolKind {
    match name {
        END_CALL => ToolKind::EndCall,
        TRANSFER_CALL => ToolKind::TransferCall,
        n if n.starts_with(HANDOFF_PREFIX) => ToolKind::Handoff(n[HANDOFF_PREFIX.len()..].into()),
        _ => ToolKind::Booking,
    }
}

/// A finished tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDone {
    /// The model's call id.
    pub call_id: String,
    /// The tool.
    pub name: String,
    /// The output given to the model.
    pub result: Value,
    /// It answered without an error.
    pub ok: bool,
    /// How long it took.
    pub elapsed: Duration,
}

/// The error shape every tool uses: `{"error": true, "message": …}`.
pub fn error_json(message: impl Into<String>) -> Value {
    json!({"error": true, "message": message.into()})
}

/// Whether a tool output is an error.
pub fn is_error(v: &Value) -> bool {
    v.get("error").and_then(Value::as_bool).unwrap_or(false)
}

/// The arguments as JSON for records (the raw text when they do not parse).
pub fn arguments_value(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

/// The answer to a function call naming a tool the agent does not have.
pub fn refused_json(name: &str) -> Value {
    let shown: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
    error_json(format!(
        "The tool {shown:?} is not available to you on this call; use only the tools you were given."
    ))
}

/// Runs a booking tool for `caller` within `limit`. Without a booking store, or past the
/// limit, the model gets an error it can read aloud.
pub async fn run_booking(
    tools: Option<Tools>,
    caller: Caller,
    call: ToolCall,
    limit: Duration,
) -> ToolDone {
    let started = Instant::now();
    let result = match tools {
        None => error_json("The booking system is not available on this line."),
        Some(tools) => {
            let run = tools.call_as(&caller, &call.name, &call.arguments);
            match tokio::time::timeout(limit, run).await {
                Ok(v) => v,
                Err(_) => error_json(
                    "The booking system did not answer in time. Apologise and offer to try again.",
                ),
            }
        }
    };
    ToolDone {
        ok: !is_error(&result),
        call_id: call.call_id,
        name: call.name,
        result,
        elapsed: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_classified() {
        assert_eq!(classify("end_call"), ToolKind::EndCall);
        assert_eq!(classify("transfer_call"), ToolKind::TransferCall);
        assert_eq!(
            classify("transfer_to_billing"),
            ToolKind::Handoff("billing".into())
        );
        assert_eq!(classify("create_booking"), ToolKind::Booking);
        assert_eq!(classify("rm -rf"), ToolKind::Booking);
    }

    #[tokio::test]
    async fn without_a_store_the_model_gets_an_error_it_can_read() {
        let call = ToolCall {
            call_id: "call_1".into(),
            name: "create_booking".into(),
            arguments: "{".into(),
        };
        let done = run_booking(None, Caller::Unverified, call, Duration::from_secs(1)).await;
        assert!(!done.ok);
        assert!(done.result["message"].as_str().unwrap().contains("booking"));
        assert_eq!(arguments_value("{"), Value::String("{".into()));
        assert_eq!(arguments_value("{\"a\":1}")["a"], 1);
    }

    #[test]
    fn a_refusal_is_an_error_naming_the_tool_without_control_characters() {
        let out = refused_json("drop_table\u{1b}[2J");
        assert!(is_error(&out));
        let m = out["message"].as_str().unwrap();
        assert!(m.contains("drop_table[2J") && !m.contains('\u{1b}'), "{m}");
        let long = refused_json(&"x".repeat(10_000));
        assert!(long["message"].as_str().unwrap().len() < 200);
    }
}
