//! The optional moderation check of the agent's transcript: `POST {base}/v1/moderations`
//! with `omni-moderation-latest`. Off by default. Any failure is an error the bridge logs and
//! then ignores (fail open): a moderation outage must not silence every call.

use std::time::Duration;

use serde_json::{json, Value};

use crate::secret::Secret;

/// The moderation model asked for.
pub const MODEL: &str = "omni-moderation-latest";

/// Why a check gave no verdict.
#[derive(Debug, thiserror::Error)]
pub enum ModerationError {
    /// No answer within the timeout.
    #[error("the moderation check timed out")]
    Timeout,
    /// The request could not be made (connection refused, reset, TLS).
    #[error("the moderation request failed: {0}")]
    Request(String),
    /// A non-2xx answer.
    #[error("the moderation endpoint answered {status} {code}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// OpenAI's error code (or the status text).
        code: String,
    },
    /// A 2xx answer whose body is not the documented shape.
    #[error("the moderation answer is not understood: {0}")]
    BadAnswer(String),
}

/// A moderation client. `Debug` never shows the key.
#[derive(Debug, Clone)]
pub struct Moderation {
    http: reqwest::Client,
    url: String,
    api_key: Secret,
    timeout: Duration,
}

impl Moderation {
    /// A client for `base_url` (e.g. `https://api.openai.com`) with the server key; each
    /// check gives up after `timeout`.
    pub fn new(http: reqwest::Client, base_url: &str, api_key: Secret, timeout: Duration) -> Self {
        Self {
            http,
            url: format!("{}/v1/moderations", base_url.trim_end_matches('/')),
            api_key,
            timeout,
        }
    }

    /// Checks `text`: `Some(category)` when it is flagged (the flagged category with the
    /// highest score, e.g. `harassment`), `None` when not. Blank text is not sent.
    pub async fn check(&self, text: &str) -> Result<Option<String>, ModerationError> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        let sent = self
            .http
            .post(&self.url)
            .bearer_auth(self.api_key.expose())
            .json(&json!({"model": MODEL, "input": text}))
            .timeout(self.timeout)
            .send()
            .await;
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) if e.is_timeout() => return Err(ModerationError::Timeout),
            // reqwest's error names the URL, never the headers
            Err(e) => return Err(ModerationError::Request(e.to_string())),
        };
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let (code, _) = crate::openai::keys::api_error(resp).await;
            return Err(ModerationError::Status { status, code });
        }
        let body = resp.bytes().await.map_err(|e| {
            if e.is_timeout() {
                ModerationError::Timeout
            } else {
                ModerationError::Request(e.to_string())
            }
        })?;
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| ModerationError::BadAnswer(format!("not JSON: {e}")))?;
        parse_answer(&value)
    }
}

/// Reads `results[0]`: `flagged`, then the flagged category with the highest
/// `category_scores` value (ties and missing scores by name).
pub fn parse_answer(value: &Value) -> Result<Option<String>, ModerationError> {
    let result = value
        .pointer("/results/0")
        .ok_or_else(|| ModerationError::BadAnswer("no `results[0]`".into()))?;
    let flagged = result
        .get("flagged")
        .and_then(Value::as_bool)
        .ok_or_else(|| ModerationError::BadAnswer("no boolean `flagged`".into()))?;
    if !flagged {
        return Ok(None);
    }
    let score = |name: &str| {
        result
            .pointer("/category_scores")
            .and_then(|s| s.get(name))
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
    };
    let mut best: Option<(&str, f64)> = None;
    if let Some(categories) = result.get("categories").and_then(Value::as_object) {
        for (name, on) in categories {
            if on.as_bool() != Some(true) {
                continue;
            }
            let s = score(name);
            let better = match best {
                None => true,
                Some((b, bs)) => s > bs || (s == bs && name.as_str() < b),
            };
            if better {
                best = Some((name, s));
            }
        }
    }
    // flagged with no category named: still a verdict
    Ok(Some(
        best.map_or("unspecified", |(name, _)| name).to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_gives_the_strongest_flagged_category() {
        let v = json!({"id": "modr-1", "model": MODEL, "results": [{
            "flagged": true,
            "categories": {"harassment": true, "hate": false, "violence": true},
            "category_scores": {"harassment": 0.4, "hate": 0.9, "violence": 0.7}
        }]});
        assert_eq!(parse_answer(&v).unwrap().as_deref(), Some("violence"));
        let clean = json!({"results": [{"flagged": false, "categories": {"hate": false}}]});
        assert_eq!(parse_answer(&clean).unwrap(), None);
        let bare = json!({"results": [{"flagged": true}]});
        assert_eq!(parse_answer(&bare).unwrap().as_deref(), Some("unspecified"));
    }

    #[test]
    fn a_malformed_answer_is_an_error() {
        for bad in [
            json!({}),
            json!({"results": []}),
            json!({"results": [{"categories": {}}]}),
            json!({"results": [{"flagged": "yes"}]}),
            json!([1, 2]),
        ] {
            assert!(
                matches!(parse_answer(&bad), Err(ModerationError::BadAnswer(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        let m = Moderation::new(
            reqwest::Client::new(),
            "http://127.0.0.1:9/",
            Secret::new("sk-moderation-key"),
            Duration::from_secs(1),
        );
        let shown = format!("{m:?}");
        assert!(!shown.contains("sk-moderation-key"), "{shown}");
        assert!(shown.contains("127.0.0.1:9/v1/moderations"), "{shown}");
    }
}
