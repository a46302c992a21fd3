//! The agent as a call uses it: its realtime session, greeting, guardrails, hold sound and
//! transfer target, resolved once from the agent files so a call never touches the disk.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::agent::{AgentConfig, Agents};
use super::guardrail::{GuardrailError, Guardrails};
use crate::openai::events::TurnDetection;
use crate::openai::AgentSpec;

/// One agent, ready for calls.
#[derive(Debug, Clone)]
pub struct CallAgent {
    /// The agent's name.
    pub name: String,
    /// The realtime session's view of it (instructions, voice, tools).
    pub spec: AgentSpec,
    /// What it says first, if configured.
    pub greeting: Option<String>,
    /// A person to transfer callers to (SIP URI).
    pub transfer_target: Option<String>,
    /// Its output guardrails.
    pub guardrails: Arc<Guardrails>,
    /// Played while a tool runs long; `None` for comfort noise.
    pub hold_sound: Option<Arc<[i16]>>,
    /// Its calls are recorded (`Some(true)`) or not (`Some(false)`) whatever
    /// `recording.enabled` says.
    pub record: Option<bool>,
    config: Arc<AgentConfig>,
}

impl CallAgent {
    /// Its one-line description (`description` in its file; empty when unset).
    pub fn description(&self) -> &str {
        &self.config.description
    }

    /// The agent a handoff tool name points at, if this agent may hand off there.
    pub fn handoff_target(&self, tool: &str) -> Option<&str> {
        self.config.handoff_target(tool)
    }

    /// Whether `tool` is one of this agent's tools (the ones its session lists). A function
    /// call naming any other tool is refused without running: the model's output is not
    /// trusted to stay within the list it was given.
    pub fn allows(&self, tool: &str) -> bool {
        self.spec.tools.iter().any(|t| t.name == tool)
    }
}

/// Every configured agent, resolved.
#[derive(Debug, Clone, Default)]
pub struct AgentBook {
    agents: BTreeMap<String, Arc<CallAgent>>,
}

impl AgentBook {
    /// Resolves every agent of `agents` for `model`.
    pub fn new(agents: &Agents, model: &str) -> Result<Self, GuardrailError> {
        let mut out = BTreeMap::new();
        for name in agents.names() {
            let Some(cfg) = agents.get(&name) else {
                continue;
            };
            let guardrails = Arc::new(Guardrails::new(&cfg.guardrails)?);
            out.insert(
                name.clone(),
                Arc::new(CallAgent {
                    name: name.clone(),
                    spec: cfg.spec(model, agents),
                    greeting: cfg.greeting.clone(),
                    transfer_target: cfg.transfer_target.clone(),
                    guardrails,
                    hold_sound: agents.hold_sound(&name),
                    record: cfg.record,
                    config: cfg,
                }),
            );
        }
        Ok(Self { agents: out })
    }

    /// These agents for phone calls whose barge-in the relay owns (see
    /// [`super::backchannel`]): voice activity detection stays the service's, but it neither
    /// cancels the running answer when the caller starts speaking (`interrupt_response`) nor
    /// answers by itself when a turn ends (`create_response`): the relay does both.
    pub fn with_relay_turns(&self) -> Self {
        let agents = self
            .agents
            .iter()
            .map(|(name, a)| {
                let mut a = CallAgent::clone(a);
                let mut td = a
                    .spec
                    .turn_detection
                    .take()
                    .unwrap_or_else(|| TurnDetection {
                        kind: "server_vad".into(),
                        ..TurnDetection::default()
                    });
                td.create_response = Some(false);
                td.interrupt_response = Some(false);
                a.spec.turn_detection = Some(td);
                (name.clone(), Arc::new(a))
            })
            .collect();
        Self { agents }
    }

    /// An agent by name.
    pub fn get(&self, name: &str) -> Option<Arc<CallAgent>> {
        self.agents.get(name).cloned()
    }

    /// The names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.agents.keys().map(String::as_str)
    }
}
