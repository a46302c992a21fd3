//! Output guardrails: rules checked on the agent's transcript as it grows.

use serde::{Deserialize, Serialize};

/// One rule as an agent file writes it (`[[guardrails]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The rule's name, for logs, events and metrics.
    pub name: String,
    /// Regular expressions; any match trips the rule.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Words or phrases; any of them as whole words, in any case, trips the rule.
    #[serde(default)]
    pub words: Vec<String>,
    /// What the model is told when the rule trips (a default names the rule).
    #[serde(default)]
    pub message: Option<String>,
}
