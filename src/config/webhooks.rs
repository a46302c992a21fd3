//! `[[webhooks]]` (where each call's `call.ended` event is posted, signed) and `[summary]`
//! (the call's summary in that event). See docs/webhooks.md.

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// One `[[webhooks]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are posted (`https://…`; `http://` is for a receiver on this host or a
    /// private network).
    pub url: String,
    /// The environment variable that holds the signing secret (never the secret itself);
    /// 16 characters or more.
    pub secret_env: String,
    /// Attempts in all before a delivery is given up (1..=50).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// The wait after the first failed attempt, doubled after each later one (ms, ≥ 100).
    #[serde(default = "default_retry_first_ms")]
    pub retry_first_ms: u64,
    /// The longest wait between attempts (ms, ≥ `retry_first_ms`).
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// How long one attempt may take (ms, 100..=60000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_max_attempts() -> u32 {
    12
}

fn default_retry_first_ms() -> u64 {
    5_000
}

fn default_retry_max_ms() -> u64 {
    3_600_000
}

fn default_timeout_ms() -> u64 {
    10_000
}

/// Shortest signing secret accepted.
pub const MIN_SECRET_CHARS: usize = 16;

/// A `[[webhooks]]` entry that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config: {key}: {reason}")]
pub struct WebhookError {
    /// The dotted key, e.g. `webhooks[0].url`.
    pub key: String,
    /// Why.
    pub reason: String,
}

impl WebhookConfig {
    /// Checks entry `index` and reads its secret through `env`.
    pub fn check(
        &self,
        index: usize,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Secret, WebhookError> {
        let err = |field: &str, reason: String| WebhookError {
            key: format!("webhooks[{index}].{field}"),
            reason,
        };
        let url =
            reqwest::Url::parse(&self.url).map_err(|e| err("url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(err("url", "must be http:// or https:// with a host".into()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(err(
                "url",
                "must not hold credentials: the signature authenticates the relay".into(),
            ));
        }
        let secret = match env(&self.secret_env) {
            Some(v) if v.chars().count() >= MIN_SECRET_CHARS => Secret::new(v),
            Some(_) => {
                return Err(err(
                    "secret_env",
                    format!(
                        "environment variable {} holds fewer than {MIN_SECRET_CHARS} characters",
                        self.secret_env
                    ),
                ))
            }
            None => {
                return Err(err(
                    "secret_env",
                    format!("environment variable {} is not set", self.secret_env),
                ))
            }
        };
        if !(1..=50).contains(&self.max_attempts) {
            return Err(err("max_attempts", "must be 1..=50".into()));
        }
        if self.retry_first_ms < 100 || self.retry_max_ms < self.retry_first_ms {
            return Err(err(
                "retry_first_ms",
                "must be at least 100, and retry_max_ms at least retry_first_ms".into(),
            ));
        }
        if !(100..=60_000).contains(&self.timeout_ms) {
            return Err(err("timeout_ms", "must be 100..=60000".into()));
        }
        Ok(secret)
    }
}

/// `[summary]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SummaryConfig {
    /// Summarise each call that had words, for its `call.ended` event (only when webhooks are
    /// configured: the summary goes nowhere else).
    pub enabled: bool,
    /// The model asked (OpenAI's Responses API).
    pub model: String,
    /// How long the summary may take before the event goes without it (ms).
    pub timeout_ms: u64,
}

impl Default for SummaryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            model: "gpt-4.1-mini".into(),
            timeout_ms: 20_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(url: &str) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            secret_env: "HOOK_SECRET".into(),
            max_attempts: default_max_attempts(),
            retry_first_ms: default_retry_first_ms(),
            retry_max_ms: default_retry_max_ms(),
            timeout_ms: default_timeout_ms(),
        }
    }

    fn env(name: &str) -> Option<String> {
        (name == "HOOK_SECRET").then(|| "0123456789abcdef-secret".to_string())
    }

    #[test]
    fn a_good_entry_gives_its_secret() {
        let s = hook("https://clinic.example/voxrelay")
            .check(0, env)
            .unwrap();
        assert_eq!(s.expose(), "0123456789abcdef-secret");
    }

    #[test]
    fn bad_entries_name_their_key_and_never_the_secret() {
        let cases = [
            (hook("ftp://clinic.example/x"), "webhooks[2].url"),
            (hook("not a url"), "webhooks[2].url"),
            (hook("https://user:pw@clinic.example/x"), "webhooks[2].url"),
            (
                WebhookConfig {
                    secret_env: "UNSET".into(),
                    ..hook("https://a.example")
                },
                "webhooks[2].secret_env",
            ),
            (
                WebhookConfig {
                    max_attempts: 0,
                    ..hook("https://a.example")
                },
                "webhooks[2].max_attempts",
            ),
            (
                WebhookConfig {
                    retry_first_ms: 10,
                    ..hook("https://a.example")
                },
                "webhooks[2].retry_first_ms",
            ),
            (
                WebhookConfig {
                    timeout_ms: 0,
                    ..hook("https://a.example")
                },
                "webhooks[2].timeout_ms",
            ),
        ];
        for (h, key) in cases {
            let e = h.check(2, env).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(!e.to_string().contains("0123456789abcdef"), "{e}");
        }
        let short = hook("https://a.example")
            .check(0, |_| Some("short".into()))
            .unwrap_err();
        assert_eq!(short.key, "webhooks[0].secret_env");
        assert!(!short.to_string().contains("short"), "{short}");
    }
}
