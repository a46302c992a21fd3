//! The body of a `call.ended` event: who, when, how it ended, the summary, what changed in the
//! schedule, and the transcript as stored (redacted when `privacy.redact_transcripts` is on).

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::booking::CallRecord;

/// The event's name.
pub const CALL_ENDED: &str = "call.ended";

/// The call's summary, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Summary {
    /// The model's summary.
    Text(String),
    /// Not asked for: summaries are off, or the call has no words to summarise.
    None,
    /// Asked for and not had (the reason, without secrets).
    Failed(String),
}

/// The schedule's changes a call's tools made: `{"change": "booked"|"cancelled",
/// "booking_id", "date", "time"}` in the order made. A refused or failed tool call, a
/// lookup, and a booking the caller already held change nothing.
pub fn booking_changes(tool_calls: &Value) -> Vec<Value> {
    let Some(calls) = tool_calls.as_array() else {
        return Vec::new();
    };
    calls
        .iter()
        .filter(|c| c["ok"] == true)
        .filter_map(|c| {
            let r = &c["result"];
            let change = match c["name"].as_str()? {
                "create_booking" if r["booked"] == true && r["already_booked"] != true => "booked",
                "cancel_booking" if r["cancelled"] == true => "cancelled",
                _ => return None,
            };
            Some(json!({
                "change": change,
                "booking_id": r["booking_id"],
                "date": r["date"],
                "time": r["time"],
            }))
        })
        .collect()
}

/// The event for a call that ended, made at `now`.
pub fn call_ended(record: &CallRecord, summary: &Summary, now: DateTime<Utc>) -> Value {
    let seconds = |from: Option<DateTime<Utc>>| {
        from.zip(record.ended_at)
            .map(|(a, b)| ((b - a).num_milliseconds().max(0) as f64) / 1000.0)
    };
    let (text, error) = match summary {
        Summary::Text(t) => (Some(t.as_str()), None),
        Summary::None => (None, None),
        Summary::Failed(why) => (None, Some(why.as_str())),
    };
    json!({
        "type": CALL_ENDED,
        "created_at": now,
        "call": {
            "id": record.id,
            "kind": record.kind,
            "caller": record.caller,
            "callee": record.callee,
            "agent": record.agent,
            "node": record.node,
            "started_at": record.started_at,
            "answered_at": record.answered_at,
            "ended_at": record.ended_at,
            "duration_seconds": seconds(Some(record.started_at)),
            "talk_seconds": seconds(record.answered_at),
            "outcome": record.outcome,
            "answered_by": record.answered_by,
            "recorded": record.recording.is_some(),
        },
        "summary": text,
        "summary_error": error,
        "booking_changes": booking_changes(&record.tool_calls),
        "transcript": record.transcript,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::booking::store::CallKind;

    fn record(tool_calls: Value) -> CallRecord {
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        CallRecord {
            id: "c1".into(),
            caller: "sip:+12015550123@trunk".into(),
            callee: "sip:reception@relay".into(),
            agent: "receptionist".into(),
            kind: CallKind::Phone,
            started_at: t,
            answered_at: Some(t + chrono::Duration::milliseconds(250)),
            ended_at: Some(t + chrono::Duration::seconds(42)),
            outcome: "caller_bye".into(),
            transcript: json!([{"role": "agent", "text": "Hello."}]),
            tool_calls,
            recording: None,
            node: None,
            answered_by: None,
        }
    }

    #[test]
    fn only_bookings_made_and_cancelled_are_changes() {
        let calls = json!([
            {"name": "check_availability", "ok": true, "result": {"free": ["09:00"]}},
            {"name": "create_booking", "ok": true, "result": {"booked": true, "already_booked": false,
              "booking_id": "KTH472", "date": "2026-12-08", "time": "09:00", "patient_name": "Ann"}},
            {"name": "create_booking", "ok": true, "result": {"booked": true, "already_booked": true,
              "booking_id": "KTH472", "date": "2026-12-08", "time": "09:00"}},
            {"name": "create_booking", "ok": false, "result": {"error": true, "message": "taken"}},
            {"name": "cancel_booking", "ok": true, "result": {"cancelled": true,
              "booking_id": "ABC123", "date": "2026-12-09", "time": "10:30"}},
            {"name": "find_bookings", "ok": true, "result": {"bookings": []}},
            {"name": "cancel_booking", "ok": true, "result": null}
        ]);
        assert_eq!(
            booking_changes(&calls),
            vec![
                json!({"change": "booked", "booking_id": "KTH472", "date": "2026-12-08", "time": "09:00"}),
                json!({"change": "cancelled", "booking_id": "ABC123", "date": "2026-12-09", "time": "10:30"}),
            ]
        );
        assert!(booking_changes(&json!(null)).is_empty());
        assert!(booking_changes(&json!({"not": "a list"})).is_empty());
    }

    #[test]
    fn the_event_carries_the_call_its_summary_and_its_changes() {
        let r = record(json!([]));
        let now = r.ended_at.unwrap();
        let v = call_ended(&r, &Summary::Text("Booked a check-up.".into()), now);
        assert_eq!(v["type"], "call.ended");
        assert_eq!(v["call"]["id"], "c1");
        assert_eq!(v["call"]["kind"], "phone");
        assert_eq!(v["call"]["outcome"], "caller_bye");
        assert_eq!(v["call"]["answered_by"], Value::Null);
        assert_eq!(v["call"]["duration_seconds"], 42.0);
        assert_eq!(v["call"]["talk_seconds"], 41.75);
        assert_eq!(v["summary"], "Booked a check-up.");
        assert_eq!(v["summary_error"], Value::Null);
        assert_eq!(v["booking_changes"], json!([]));
        assert_eq!(v["transcript"][0]["text"], "Hello.");
        let failed = call_ended(&r, &Summary::Failed("timed out".into()), now);
        assert_eq!(failed["summary"], Value::Null);
        assert_eq!(failed["summary_error"], "timed out");
    }
}
