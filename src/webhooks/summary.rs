//! The call's summary: the stored transcript (redacted when the relay redacts) and the
//! schedule's changes, sent to OpenAI's Responses API (`POST {base}/v1/responses`, or the
//! simulator's, offline) with instructions for a short note to the clinic's staff.

use std::time::Duration;

use serde_json::{json, Value};

use super::payload::booking_changes;
use crate::booking::CallRecord;
use crate::secret::Secret;

/// What the model is told to write.
pub const INSTRUCTIONS: &str = "You write the note a clinic's front desk reads after a phone \
call handled by its voice assistant. In two to four plain sentences: why the person called, \
what was done (bookings made or cancelled, with dates and times), and anything the staff must \
follow up. No greeting, no lists, no personal data beyond what the transcript shows.";

/// Longest transcript text sent (characters); a long call's end is kept.
const MAX_INPUT_CHARS: usize = 24_000;

/// Why there is no summary.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    /// No answer within the timeout.
    #[error("the summary request timed out")]
    Timeout,
    /// The request could not be made.
    #[error("the summary request failed: {0}")]
    Request(String),
    /// A non-2xx answer.
    #[error("the summary endpoint answered {status} {code}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// OpenAI's error code.
        code: String,
    },
    /// A 2xx answer without text.
    #[error("the summary answer is not understood: {0}")]
    BadAnswer(String),
}

/// A Responses API client. `Debug` never shows the key.
#[derive(Debug, Clone)]
pub struct Summarizer {
    http: reqwest::Client,
    url: String,
    api_key: Secret,
    model: String,
    timeout: Duration,
}

impl Summarizer {
    /// A client for `base_url` with the server key, asking `model`, giving up after
    /// `timeout`.
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        api_key: Secret,
        model: &str,
        timeout: Duration,
    ) -> Self {
        Self {
            http,
            url: format!("{}/v1/responses", base_url.trim_end_matches('/')),
            api_key,
            model: model.to_string(),
            timeout,
        }
    }

    /// The summary of `record`; `Ok(None)` when nobody said anything (nothing is sent).
    pub async fn summarize(&self, record: &CallRecord) -> Result<Option<String>, SummaryError> {
        let Some(input) = input_text(record) else {
            return Ok(None);
        };
        let body = json!({
            "model": self.model,
            "instructions": INSTRUCTIONS,
            "input": input,
            "max_output_tokens": 400,
            "store": false,
        });
        let sent = self
            .http
            .post(&self.url)
            .bearer_auth(self.api_key.expose())
            .json(&body)
            .timeout(self.timeout)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Err(SummaryError::Timeout),
            Err(e) => return Err(SummaryError::Request(e.to_string())),
        };
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let (code, _) = crate::openai::keys::api_error(resp).await;
            return Err(SummaryError::Status { status, code });
        }
        let value: Value = resp.json().await.map_err(|e| {
            if e.is_timeout() {
                SummaryError::Timeout
            } else {
                SummaryError::BadAnswer(e.to_string())
            }
        })?;
        output_text(&value).map(Some)
    }
}

/// The text the model reads: one line per turn (`caller: …`, `agent: …`), then the changes
/// made; `None` when the call has no words.
pub fn input_text(record: &CallRecord) -> Option<String> {
    let mut lines: Vec<String> = record
        .transcript
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let text = t["text"].as_str()?.trim();
            let who = t["speaker"].as_str().unwrap_or("unknown");
            (!text.is_empty()).then(|| format!("{who}: {text}"))
        })
        .collect();
    if lines.is_empty() {
        return None;
    }
    for c in booking_changes(&record.tool_calls) {
        lines.push(format!(
            "[schedule: {} {} on {} at {}]",
            c["change"].as_str().unwrap_or("changed"),
            c["booking_id"].as_str().unwrap_or("?"),
            c["date"].as_str().unwrap_or("?"),
            c["time"].as_str().unwrap_or("?"),
        ));
    }
    let text = lines.join("\n");
    if text.chars().count() <= MAX_INPUT_CHARS {
        return Some(text);
    }
    let skip = text.chars().count() - MAX_INPUT_CHARS;
    Some(text.chars().skip(skip).collect())
}

/// The answer's text: every `output_text` part of every `message` item, joined (what the SDKs
/// call `output_text`).
pub fn output_text(value: &Value) -> Result<String, SummaryError> {
    let items = value
        .get("output")
        .and_then(Value::as_array)
        .ok_or_else(|| SummaryError::BadAnswer("no `output` list".into()))?;
    let text: String = items
        .iter()
        .filter(|i| i["type"] == "message")
        .flat_map(|i| i["content"].as_array().into_iter().flatten())
        .filter(|c| c["type"] == "output_text")
        .filter_map(|c| c["text"].as_str())
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return Err(SummaryError::BadAnswer("no output text".into()));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_text_is_every_text_part_of_every_message() {
        let v = json!({"id": "resp_1", "object": "response", "status": "completed", "output": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": [
                {"type": "output_text", "text": "The caller booked ", "annotations": []},
                {"type": "refusal", "refusal": "no"},
                {"type": "output_text", "text": "a check-up.", "annotations": []}
            ]}
        ]});
        assert_eq!(output_text(&v).unwrap(), "The caller booked a check-up.");
    }

    #[test]
    fn an_answer_without_text_is_an_error() {
        for bad in [
            json!({}),
            json!({"output": []}),
            json!({"output": [{"type": "message", "content": [{"type": "output_text", "text": "  "}]}]}),
            json!({"output": "text"}),
        ] {
            assert!(
                matches!(output_text(&bad), Err(SummaryError::BadAnswer(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        let s = Summarizer::new(
            reqwest::Client::new(),
            "http://127.0.0.1:9",
            Secret::new("sk-summary-key"),
            "gpt-4.1-mini",
            Duration::from_secs(1),
        );
        let shown = format!("{s:?}");
        assert!(!shown.contains("sk-summary-key"), "{shown}");
    }
}
