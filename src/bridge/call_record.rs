//! A call's entry in the registry and its stored record: made when the call starts, stored
//! when it ends.

use serde_json::Value;
use tracing::warn;

use super::redaction::Redactor;
use super::registry::{CallDetail, CallPublisher};
use crate::booking::{CallRecord, Tools};
use crate::metrics::Metrics;
use crate::sip::IncomingCall;
use crate::webhooks::Webhooks;

/// The registry entry of a call that starts, answered by `agent`.
pub fn detail(call: &IncomingCall, agent: &str) -> CallDetail {
    let mut d = CallDetail::new(&call.id, &call.from, &call.to, agent, call.trunk.as_deref());
    d.transport = call.transport.into();
    d.sip_call_id = call.sip_call_id.clone();
    d.started_at = call.started.into();
    d.media.codec = call.sip.negotiated().codec.name().into();
    d
}

/// Records a call that ended: metrics, the registry's ended list, the database (with
/// personal data redacted when `redact`: see [`super::redaction`]), then its `call.ended`
/// event to the `webhooks` (made from the record as stored).
pub async fn finish(
    metrics: &Metrics,
    tools: Option<&Tools>,
    p: CallPublisher,
    reason: &str,
    redact: bool,
    webhooks: Option<&Webhooks>,
) {
    metrics.calls_active.dec();
    metrics.call_ended(reason);
    let d = p.finish(reason);
    if let Some(tools) = tools {
        let mut r = record(&d, reason);
        if redact {
            Redactor::for_call(&r.tool_calls).record(&mut r.transcript, &mut r.tool_calls);
        }
        if let Err(e) = tools.store().insert_call(&r).await {
            warn!(error = %e, "the call record was not stored");
        }
        if let Some(w) = webhooks {
            w.call_ended(r);
        }
    }
}

/// The stored record of an ended call's view, ended for `reason`.
pub fn record(d: &CallDetail, reason: &str) -> CallRecord {
    CallRecord {
        id: d.id.clone(),
        caller: d.from.clone(),
        callee: d.to.clone(),
        agent: d.agent.clone(),
        kind: d.kind,
        started_at: d.started_at,
        answered_at: d.answered_at,
        ended_at: d.ended_at,
        outcome: reason.to_string(),
        transcript: serde_json::to_value(&d.transcript).unwrap_or(Value::Null),
        tool_calls: serde_json::to_value(&d.tool_calls).unwrap_or(Value::Null),
        recording: d.recording.clone(),
        node: None,
        answered_by: d.answered_by.map(str::to_string),
    }
}
