//! What a call's task runs beside its core, the same on a phone call and a browser call: the
//! realtime session, the booking tools and the moderation checks. The task feeds their results
//! back to the core; [`SessionIo::carry_out`] does what the core asks of them.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::warn;

use super::call_core::{CallCore, Ended, Output};
use super::tool_run::{self, ToolDone};
use super::LiveContext;
use crate::booking::Caller;
use crate::openai::{LegError, RealtimeLeg};

/// Running tools get this long to finish after the call ended (a booking being written is
/// kept, never cut off half-way).
pub const TOOL_DRAIN: Duration = Duration::from_secs(10);

/// A moderation check's answer: the category that flagged the turn, or why it failed.
pub type CheckDone = Result<Option<String>, String>;

/// The core's outputs a task carries out itself: they touch the phone, or open a session.
#[derive(Debug)]
pub enum TaskOutput {
    /// Open a new session ([`Output::OpenLeg`]).
    OpenLeg,
    /// Transfer the caller ([`Output::Refer`]).
    Refer(String),
    /// Call a warm transfer's person ([`Output::CallPerson`]).
    CallPerson {
        target: String,
        codec: crate::media::g711::Law,
    },
    /// Let the person go ([`Output::DropPerson`]).
    DropPerson,
    /// The call is over ([`Output::End`]).
    End(Ended),
}

/// The realtime session of a call and what runs beside it.
pub struct SessionIo {
    /// The realtime session, while one is open.
    pub leg: Option<Box<dyn RealtimeLeg>>,
    /// Booking tools running.
    pub tools: JoinSet<ToolDone>,
    /// Moderation checks running.
    pub checks: JoinSet<CheckDone>,
    /// `None` on the echo line test.
    ctx: Option<Arc<LiveContext>>,
    /// Whom the booking tools act for.
    caller: Caller,
}

impl SessionIo {
    /// Nothing open or running yet.
    pub fn new(ctx: Option<Arc<LiveContext>>, caller: Caller) -> Self {
        Self {
            leg: None,
            tools: JoinSet::new(),
            checks: JoinSet::new(),
            ctx,
            caller,
        }
    }

    /// What every call shares, when it has a model.
    pub fn ctx(&self) -> Option<&Arc<LiveContext>> {
        self.ctx.as_ref()
    }

    /// Carries out `out` when it concerns the session, a tool or a check; gives back the
    /// outputs the task must carry out itself.
    pub async fn carry_out(&mut self, out: Output, tool_timeout: Duration) -> Option<TaskOutput> {
        match out {
            Output::Send(ev) => {
                if let Some(leg) = self.leg.as_mut() {
                    warn_failed(
                        leg.send(*ev).await,
                        "sending to the realtime session failed",
                    );
                }
            }
            Output::Interrupt { unplayed_ms } => {
                if let Some(leg) = self.leg.as_mut() {
                    warn_failed(
                        leg.interrupt(unplayed_ms).await,
                        "interrupting the realtime session failed",
                    );
                }
            }
            Output::ToolOutput { call_id, output } => {
                if let Some(leg) = self.leg.as_mut() {
                    warn_failed(
                        leg.submit_tool_output(&call_id, output).await,
                        "the tool output did not reach the session",
                    );
                }
            }
            Output::RunTool(tc) => {
                let tools = self.ctx.as_ref().and_then(|c| c.tools.clone());
                let caller = self.caller.clone();
                self.tools
                    .spawn(tool_run::run_booking(tools, caller, tc, tool_timeout));
            }
            Output::Moderate(text) => {
                if let Some(m) = self.ctx.as_ref().and_then(|c| c.moderation.clone()) {
                    self.checks
                        .spawn(async move { m.check(&text).await.map_err(|e| e.to_string()) });
                }
            }
            Output::CloseLeg => self.close_leg().await,
            Output::OpenLeg => return Some(TaskOutput::OpenLeg),
            Output::Refer(target) => return Some(TaskOutput::Refer(target)),
            Output::CallPerson { target, codec } => {
                return Some(TaskOutput::CallPerson { target, codec })
            }
            Output::DropPerson => return Some(TaskOutput::DropPerson),
            Output::End(end) => return Some(TaskOutput::End(end)),
        }
        None
    }

    /// Closes the session, if one is open.
    pub async fn close_leg(&mut self) {
        if let Some(mut leg) = self.leg.take() {
            leg.close().await;
        }
    }

    /// After the call's end: gives running tools [`TOOL_DRAIN`] to finish and hands their
    /// answers to the core (a booking being written is kept).
    pub async fn finish_tools(&mut self, core: &mut CallCore, t0: Instant) {
        let drain = async {
            while let Some(done) = self.tools.join_next().await {
                if let Ok(done) = done {
                    core.handle_tool_done(t0.elapsed(), done);
                }
            }
        };
        if tokio::time::timeout(TOOL_DRAIN, drain).await.is_err() {
            warn!("tools still running at hang-up were abandoned");
        }
    }
}

/// Logs a failed operation on the realtime session (the session's end shows up as its own
/// event).
fn warn_failed(r: Result<(), LegError>, what: &'static str) {
    if let Err(e) = r {
        warn!(error = %e, "{what}");
    }
}
