//! Ephemeral keys: `POST {base}/v1/realtime/client_secrets` with the server key and the
//! agent's session, retried on 429, 5xx and timeouts with capped, jittered backoff inside one
//! deadline. 401 and 403 are final. No key reaches a log, an error or `Debug`.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::events::Session;
use crate::secret::Secret;

/// First retry waits up to this long (full jitter: a random share of it).
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// No retry waits longer than this.
const BACKOFF_CAP: Duration = Duration::from_millis(1_000);
/// One attempt never gets less than this (a shorter one could not succeed anyway).
const MIN_ATTEMPT: Duration = Duration::from_millis(200);

/// Why no ephemeral key was minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// 401: the server key is wrong, revoked, or missing.
    #[error("the OpenAI API key was refused (401 {code}): check OPENAI_API_KEY")]
    Unauthorized {
        /// OpenAI's error code, e.g. `invalid_api_key`.
        code: String,
    },
    /// 403: the key may not use the Realtime API (region, project or model permission).
    #[error("the OpenAI API key may not use the Realtime API (403 {code}): {message}")]
    Forbidden {
        /// OpenAI's error code.
        code: String,
        /// OpenAI's message (never contains the key).
        message: String,
    },
    /// Another 4xx: the request itself is wrong (a bad session config); not retried.
    #[error("minting an ephemeral key was rejected ({status} {code}): {message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// OpenAI's error code.
        code: String,
        /// OpenAI's message.
        message: String,
    },
    /// The deadline passed with only retryable failures (429, 5xx, timeouts, connection
    /// errors).
    #[error("no ephemeral key within {deadline_ms} ms after {attempts} attempts; last: {last}")]
    Deadline {
        /// The deadline.
        deadline_ms: u64,
        /// Attempts made.
        attempts: u32,
        /// The last failure, e.g. `429 rate_limit_exceeded` or `timed out`.
        last: String,
    },
    /// A 200 whose body is not the documented shape.
    #[error("the client_secrets answer is not understood: {0}")]
    BadAnswer(String),
}

impl MintError {
    /// True when retrying later could help (as opposed to a configuration problem).
    pub fn is_transient(&self) -> bool {
        matches!(self, MintError::Deadline { .. })
    }
}

/// A minted key and when it expires.
#[derive(Debug, Clone)]
pub struct EphemeralKey {
    /// `ek_…`, redacted in `Debug`.
    pub value: Secret,
    /// Unix seconds.
    pub expires_at: i64,
    /// The session as the service will run it (`id`, `model`, defaults filled in).
    pub session: Value,
}

/// Capped exponential backoff with full jitter, IO-free: the delay before retry `n` (0-based)
/// is a uniform share of `min(cap, base·2ⁿ)`, or the server's `retry-after-ms` when that is
/// longer (still capped).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The first ceiling.
    pub base: Duration,
    /// The largest ceiling.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: BACKOFF_BASE,
            cap: BACKOFF_CAP,
        }
    }
}

impl Backoff {
    /// The delay before retry `n`, with `unit` in `[0, 1)` as the jitter draw.
    pub fn delay(&self, n: u32, unit: f64, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.base.saturating_mul(1u32 << n.min(16)).min(self.cap);
        let jittered = ceiling.mul_f64(unit.clamp(0.0, 1.0));
        match retry_after {
            Some(r) => jittered.max(r.min(self.cap)),
            None => jittered,
        }
    }
}

/// Mints ephemeral keys with the server key.
#[derive(Debug, Clone)]
pub struct KeyMinter {
    http: reqwest::Client,
    base_url: String,
    api_key: Secret,
    deadline: Duration,
    ttl_seconds: u32,
    backoff: Backoff,
}

impl KeyMinter {
    /// A minter for `base_url` (e.g. `https://api.openai.com`) with the server key.
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        api_key: Secret,
        deadline: Duration,
        ttl_seconds: u32,
    ) -> Self {
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
            deadline,
            ttl_seconds: ttl_seconds.clamp(10, 7_200),
            backoff: Backoff::default(),
        }
    }

    /// The same minter with another deadline (minting ahead of calls can wait longer).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The server key (the WebSocket transport authenticates with it directly).
    pub fn api_key(&self) -> &Secret {
        &self.api_key
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Mints one key for `session` within the deadline.
    pub async fn mint(&self, session: &Session) -> Result<EphemeralKey, MintError> {
        let started = Instant::now();
        let end = started + self.deadline;
        let body = json!({
            "expires_after": {"anchor": "created_at", "seconds": self.ttl_seconds},
            "session": session,
        });
        let url = format!("{}/v1/realtime/client_secrets", self.base_url);
        let mut attempts = 0u32;
        let mut last;
        loop {
            let remaining = end.saturating_duration_since(Instant::now());
            // each attempt may take a third of the whole, so one hang leaves room to retry
            let per_attempt = (self.deadline / 3).max(MIN_ATTEMPT).min(remaining);
            attempts += 1;
            let sent = self
                .http
                .post(&url)
                .bearer_auth(self.api_key.expose())
                .json(&body)
                .timeout(per_attempt)
                .send()
                .await;
            let retry_after = match sent {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get("retry-after-ms")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_millis);
                    if resp.status().is_success() {
                        let v: Value = resp
                            .json()
                            .await
                            .map_err(|e| MintError::BadAnswer(e.to_string()))?;
                        return parse_minted(v);
                    }
                    let (code, message) = api_error(resp).await;
                    match status {
                        401 => return Err(MintError::Unauthorized { code }),
                        403 => return Err(MintError::Forbidden { code, message }),
                        429 | 500..=599 => {}
                        408 => {}
                        _ => {
                            return Err(MintError::Rejected {
                                status,
                                code,
                                message,
                            })
                        }
                    }
                    last = format!("{status} {code}");
                    retry_after
                }
                Err(e) if e.is_timeout() => {
                    last = "timed out".into();
                    None
                }
                Err(e) => {
                    // reqwest's error names the URL, never the headers
                    last = format!("request failed: {e}");
                    None
                }
            };
            let wait = self
                .backoff
                .delay(attempts - 1, rand::random::<f64>(), retry_after);
            let now = Instant::now();
            if now + wait >= end || now + wait + MIN_ATTEMPT.min(self.deadline / 10) > end {
                tracing::warn!(attempts, last = %last, "minting an ephemeral key gave up at the deadline");
                return Err(MintError::Deadline {
                    deadline_ms: self.deadline.as_millis() as u64,
                    attempts,
                    last,
                });
            }
            tracing::debug!(attempt = attempts, last = %last, wait_ms = wait.as_millis() as u64, "retrying client_secrets");
            tokio::time::sleep(wait).await;
        }
    }
}

/// OpenAI's `{"error":{"code","message"}}`, or the status text.
pub(crate) async fn api_error(resp: reqwest::Response) -> (String, String) {
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    let code = v
        .pointer("/error/code")
        .and_then(Value::as_str)
        .or_else(|| v.pointer("/error/type").and_then(Value::as_str))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error"))
        .to_string();
    let message = v
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    (code, message)
}

fn parse_minted(v: Value) -> Result<EphemeralKey, MintError> {
    let value = v
        .get("value")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| MintError::BadAnswer("no `value`".into()))?;
    let expires_at = v
        .get("expires_at")
        .and_then(Value::as_i64)
        .ok_or_else(|| MintError::BadAnswer("no `expires_at`".into()))?;
    Ok(EphemeralKey {
        value: Secret::new(value),
        expires_at,
        session: v.get("session").cloned().unwrap_or(Value::Null),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_and_jitters_below_it() {
        let b = Backoff::default();
        assert_eq!(b.delay(0, 0.999_999, None).as_millis(), 99);
        assert_eq!(b.delay(2, 0.5, None), Duration::from_millis(200));
        assert_eq!(b.delay(10, 0.999_999, None).as_millis(), 999);
        assert_eq!(b.delay(30, 0.0, None), Duration::ZERO);
        // the server's hint wins when longer, but never beyond the cap
        assert_eq!(
            b.delay(0, 0.0, Some(Duration::from_millis(20))),
            Duration::from_millis(20)
        );
        assert_eq!(b.delay(0, 0.0, Some(Duration::from_secs(60))), BACKOFF_CAP);
    }

    #[test]
    fn a_minted_key_is_redacted_in_debug() {
        let k =
            parse_minted(json!({"value": "ek_abc123", "expires_at": 5, "session": {}})).unwrap();
        let shown = format!("{k:?}");
        assert!(!shown.contains("ek_abc123"), "{shown}");
        assert!(parse_minted(json!({"expires_at": 5})).is_err());
        assert!(parse_minted(json!({"value": "ek_x"})).is_err());
    }
}
