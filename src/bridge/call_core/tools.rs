//! The model's tool calls: booking tools run beside the call (with the hold sound when they
//! run long), `end_call` with its grace, handoffs to another agent, and transfer to a person
//! with its deadline.

use std::time::Duration;

use serde_json::{json, Value};
use tracing::{info, warn};

use super::{truncate, CallCore, Ended, Ending, Mode, Output, Transfer};
use super::{END_CALL_GRACE, TRANSFER_LIMIT};
use crate::booking::CallKind;
use crate::bridge::registry::{CallEvent, ToolCallRecord};
use crate::bridge::tool_run::{
    arguments_value, classify, error_json, refused_json, ToolDone, ToolKind,
};
use crate::openai::events::ClientEvent;
use crate::openai::{ToolCall, Turns};

impl CallCore {
    /// The model called a tool.
    pub fn handle_tool_call(&mut self, now: Duration, tc: ToolCall) {
        let Mode::Agent(agent) = &self.mode else {
            return;
        };
        let agent = agent.clone();
        let args = arguments_value(&tc.arguments);
        info!(tool = %truncate(&tc.name, 64), "tool called");
        self.p.emit(CallEvent::ToolCall {
            call_id: tc.call_id.clone(),
            name: tc.name.clone(),
            arguments: args.clone(),
        });
        let record = ToolCallRecord {
            call_id: tc.call_id.clone(),
            name: tc.name.clone(),
            arguments: args,
            result: Value::Null,
            ok: false,
            at_ms: super::at_ms(now),
            duration_ms: None,
        };
        self.p.update(|d| d.tool_calls.push(record));
        if !agent.allows(&tc.name) {
            // counted before it is logged: whoever reads the log and then the metrics sees it
            self.metrics.tools_refused.inc();
            warn!(tool = %truncate(&tc.name, 64), agent = %agent.name, "tool refused: not one of the agent's tools");
            // also a failed tool call, under `other` unless the name is a known tool
            self.metrics.tool(&tc.name, false, 0.0);
            let out = refused_json(&tc.name);
            self.record_result(&tc.call_id, &out, false, Duration::ZERO);
            self.p.emit(CallEvent::ToolResult {
                call_id: tc.call_id.clone(),
                name: tc.name.clone(),
                result: out.clone(),
                ok: false,
                duration_ms: 0,
            });
            self.tool_output(tc.call_id, &out);
            return;
        }
        match classify(&tc.name) {
            ToolKind::EndCall => {
                let output = json!({"ok": true, "note": "The call ends after your goodbye."});
                // the output only: no new response, the goodbye is this response's
                let [item, _create] = Turns::tool_output(&tc.call_id, output.to_string());
                self.send(item);
                self.record_result(&tc.call_id, &output, true, Duration::ZERO);
                info!("the agent ends the call");
                self.ending = Some(Ending {
                    deadline: now + END_CALL_GRACE,
                    quiet_since: None,
                });
            }
            ToolKind::TransferCall => self.start_transfer(now, tc),
            ToolKind::Handoff(target) => self.hand_off(tc, &target),
            ToolKind::Booking => {
                self.tools_running += 1;
                self.tool_since.get_or_insert(now);
                self.outputs.push_back(Output::RunTool(tc));
            }
        }
    }

    pub(super) fn tool_output(&mut self, call_id: String, output: &Value) {
        if self.has_leg {
            self.outputs.push_back(Output::ToolOutput {
                call_id,
                output: output.to_string(),
            });
        }
    }

    pub(super) fn record_result(
        &mut self,
        call_id: &str,
        result: &Value,
        ok: bool,
        took: Duration,
    ) {
        let ms = took.as_millis() as u64;
        let update = |r: &mut ToolCallRecord| {
            if r.call_id == call_id {
                r.result = result.clone();
                r.ok = ok;
                r.duration_ms = Some(ms);
            }
        };
        self.p.update(|d| d.tool_calls.iter_mut().for_each(update));
    }

    /// Counts and records a tool that answered.
    fn count_tool(&mut self, done: &ToolDone) {
        self.metrics
            .tool(&done.name, done.ok, done.elapsed.as_secs_f64());
        if done.ok && done.name == "create_booking" {
            self.metrics.bookings_created.inc();
        }
        self.record_result(&done.call_id, &done.result, done.ok, done.elapsed);
    }

    /// A booking tool answered.
    pub fn handle_tool_done(&mut self, now: Duration, done: ToolDone) {
        if self.is_over() {
            // the call ended while it ran: what it did is kept and recorded
            self.count_tool(&done);
            return;
        }
        self.tools_running = self.tools_running.saturating_sub(1);
        if self.tools_running == 0 {
            self.tool_since = None;
            self.hold_pos = 0;
        }
        self.count_tool(&done);
        info!(
            tool = %truncate(&done.name, 64), ok = done.ok,
            ms = done.elapsed.as_millis() as u64, "tool answered"
        );
        self.p.emit(CallEvent::ToolResult {
            call_id: done.call_id.clone(),
            name: done.name.clone(),
            result: done.result.clone(),
            ok: done.ok,
            duration_ms: done.elapsed.as_millis() as u64,
        });
        // the hold sound stops as soon as the agent can speak again
        if self.tools_running == 0 {
            self.media.flush(now);
        }
        self.tool_output(done.call_id, &done.result);
    }

    fn hand_off(&mut self, tc: ToolCall, target: &str) {
        let Mode::Agent(agent) = &self.mode else {
            return;
        };
        let from = agent.name.clone();
        let next = agent
            .handoff_target(&tc.name)
            .and_then(|name| self.agents.get(name));
        let Some(next) = next else {
            let out = error_json(format!(
                "There is no agent called {target:?} to hand over to."
            ));
            self.record_result(&tc.call_id, &out, false, Duration::ZERO);
            self.tool_output(tc.call_id, &out);
            return;
        };
        info!(from = %from, to = %next.name, "handoff");
        let mut spec = next.spec.clone();
        // the voice cannot change once the session has spoken
        spec.voice = None;
        self.send(ClientEvent::SessionUpdate {
            event_id: None,
            session: spec.session(None),
        });
        let out = json!({"ok": true, "agent": next.name, "note": "You are now this agent; continue the conversation."});
        self.record_result(&tc.call_id, &out, true, Duration::ZERO);
        self.p.update(|d| d.agent = next.name.clone());
        self.p.emit(CallEvent::Handoff {
            from,
            to: next.name.clone(),
        });
        self.mode = Mode::Agent(next);
        self.watch.reset();
        self.tool_output(tc.call_id, &out);
    }

    fn start_transfer(&mut self, now: Duration, tc: ToolCall) {
        let target = match &self.mode {
            Mode::Agent(a) => a.transfer_target.clone(),
            Mode::Echo(_) => None,
        };
        let Some(target) = target else {
            let out = error_json("This line cannot transfer callers to a person.");
            self.record_result(&tc.call_id, &out, false, Duration::ZERO);
            self.tool_output(tc.call_id, &out);
            return;
        };
        if self.transfer.is_some() || self.warm.is_some() {
            let out = error_json("A transfer is already in progress.");
            self.record_result(&tc.call_id, &out, false, Duration::ZERO);
            self.tool_output(tc.call_id, &out);
            return;
        }
        if arguments_value(&tc.arguments)["warm"] == Value::Bool(true) {
            if self.kind != CallKind::Phone {
                let out = error_json(
                    "This call cannot stay on hold while you brief a person: transfer without warm.",
                );
                self.record_result(&tc.call_id, &out, false, Duration::ZERO);
                self.tool_output(tc.call_id, &out);
                return;
            }
            self.start_warm_transfer(now, tc, target);
            return;
        }
        info!(target = %target, "transferring the caller");
        self.p.emit(CallEvent::Transfer {
            target: target.clone(),
            outcome: "trying".into(),
        });
        self.transfer = Some(Transfer {
            call_id: tc.call_id,
            target: target.clone(),
            started: now,
            deadline: now + TRANSFER_LIMIT,
        });
        self.outputs.push_back(Output::Refer(target));
    }

    /// The answer to [`Output::Refer`]: its final status, or why it could not be sent.
    pub fn handle_refer_answer(&mut self, now: Duration, r: Result<u16, String>) {
        let why = match r {
            Ok(s) if (200..300).contains(&s) => return,
            Ok(s) => format!("the phone system refused the transfer ({s})"),
            Err(e) => format!("the transfer could not be sent ({e})"),
        };
        if let Some(t) = self.transfer.take() {
            self.transfer_failed(now, t, &why);
        }
    }

    /// The transfer's progress (the status in a NOTIFY's sipfrag).
    pub fn handle_transfer_progress(&mut self, now: Duration, status: u16) {
        if status < 200 || self.is_over() {
            return;
        }
        let Some(t) = self.transfer.take() else {
            return;
        };
        if status < 300 {
            info!(target = %t.target, "the transfer succeeded");
            self.p.emit(CallEvent::Transfer {
                target: t.target.clone(),
                outcome: "succeeded".into(),
            });
            let out = json!({"ok": true});
            self.record_result(&t.call_id, &out, true, now.saturating_sub(t.started));
            self.end(Ended::relay("transferred"));
            return;
        }
        self.transfer_failed(now, t, &format!("the person's line answered {status}"));
    }

    pub(super) fn transfer_failed(&mut self, now: Duration, t: Transfer, why: &str) {
        info!(target = %t.target, why, "the transfer failed");
        self.p.emit(CallEvent::Transfer {
            target: t.target.clone(),
            outcome: format!("failed: {why}"),
        });
        let out = error_json(format!(
            "The transfer failed: {why}. Tell the caller and offer to help or take a message."
        ));
        self.record_result(&t.call_id, &out, false, now.saturating_sub(t.started));
        self.tool_output(t.call_id, &out);
    }
}
