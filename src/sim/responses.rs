//! The simulated Responses API (`POST /v1/responses`), enough for a call's summary: the answer
//! has OpenAI's shape (what the SDKs read as `output_text`), and its text is a plain account
//! made from the input without a model: how many turns each side spoke, and every schedule
//! change listed in it (`[schedule: booked KTH472 on 2026-12-08 at 09:00]`).

use serde_json::{json, Value};

use super::state::random_id;

/// The input's text: a string, or the text parts of a list of input messages.
pub fn input_text(input: &Value) -> Option<String> {
    match input {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                match &item["content"] {
                    Value::String(s) => out.push(s.clone()),
                    Value::Array(parts) => out.extend(
                        parts
                            .iter()
                            .filter(|p| p["type"] == "input_text")
                            .filter_map(|p| p["text"].as_str().map(str::to_string)),
                    ),
                    _ => return None,
                }
            }
            Some(out.join("\n"))
        }
        _ => None,
    }
}

/// The simulated summary of `text`.
pub fn summary(text: &str) -> String {
    let count = |who: &str| {
        text.lines()
            .filter(|l| l.starts_with(&format!("{who}: ")))
            .count()
    };
    let changes: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("[schedule: ")?.strip_suffix(']'))
        .map(str::to_string)
        .collect();
    let mut s = format!(
        "The caller spoke {} times and the assistant {} times.",
        count("caller"),
        count("agent")
    );
    if changes.is_empty() {
        s.push_str(" Nothing in the schedule changed.");
    } else {
        s.push_str(&format!(" Schedule: {}.", changes.join("; ")));
    }
    s
}

/// The answer to a request for `model` with `instructions`, whose input reads `text`.
pub fn answer(model: &str, instructions: Option<&str>, text: &str, now: i64) -> Value {
    let out = summary(text);
    let words = |s: &str| s.split_whitespace().count() as u64;
    let (input_tokens, output_tokens) = (words(text) + instructions.map_or(0, words), words(&out));
    json!({
        "id": random_id("resp", 48),
        "object": "response",
        "created_at": now,
        "status": "completed",
        "background": false,
        "error": null,
        "incomplete_details": null,
        "instructions": instructions,
        "max_output_tokens": null,
        "model": model,
        "output": [{
            "id": random_id("msg", 48),
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": out, "annotations": [], "logprobs": []}],
        }],
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "store": false,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        },
        "user": null,
        "metadata": {},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_turns_and_lists_the_changes() {
        let text = "caller: I'd like an appointment.\nagent: Tuesday at nine?\ncaller: Yes.\n\
                    [schedule: booked KTH472 on 2026-12-08 at 09:00]";
        assert_eq!(
            summary(text),
            "The caller spoke 2 times and the assistant 1 times. Schedule: booked KTH472 on 2026-12-08 at 09:00."
        );
        assert!(summary("agent: Hello.").ends_with("Nothing in the schedule changed."));
    }

    #[test]
    fn the_input_is_a_string_or_messages_with_text_parts() {
        assert_eq!(input_text(&json!("hi")).as_deref(), Some("hi"));
        let items = json!([
            {"role": "user", "content": "a"},
            {"role": "user", "content": [{"type": "input_text", "text": "b"}, {"type": "input_image", "image_url": "x"}]}
        ]);
        assert_eq!(input_text(&items).as_deref(), Some("a\nb"));
        assert_eq!(input_text(&json!(3)), None);
        assert_eq!(input_text(&json!([{"content": 3}])), None);
    }

    #[test]
    fn the_answer_has_the_responses_shape() {
        let v = answer(
            "gpt-4.1-mini",
            Some("Summarise."),
            "caller: hi",
            1_800_000_000,
        );
        assert!(v["id"].as_str().unwrap().starts_with("resp_"));
        assert_eq!(v["object"], "response");
        assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
        assert_eq!(
            v["usage"]["total_tokens"],
            v["usage"]["input_tokens"].as_u64().unwrap()
                + v["usage"]["output_tokens"].as_u64().unwrap()
        );
    }
}
