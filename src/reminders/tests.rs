//! The scheduler on a simulated clock, over a real (in-memory SQLite) store, placing its
//! calls through a scripted placer. The SIP path is tested end to end in tests/reminders.rs.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;

use super::scheduler::CallSettings;
use super::*;
use crate::booking::schedule::Schedule;
use crate::booking::store::{NewBooking, ReminderStatus};
use crate::booking::Store;
use crate::config::{BookingConfig, RemindersConfig};
use crate::sip::{Dial, DialError, DialOutcome};

#[derive(Default)]
struct Script {
    dials: Vec<Dial>,
    /// What calls to each number give, in turn (answered when none is left).
    outcomes: HashMap<String, VecDeque<DialOutcome>>,
    live: HashSet<String>,
}

#[derive(Clone, Default)]
struct Scripted(Arc<Mutex<Script>>);

impl Placer for Scripted {
    fn place(&self, dial: Dial) -> BoxFuture<'static, Result<Attempt, DialError>> {
        let mut s = self.0.lock().unwrap();
        let outcome = s
            .outcomes
            .get_mut(&dial.to)
            .and_then(|q| q.pop_front())
            .unwrap_or(DialOutcome::Answered);
        s.dials.push(dial);
        let n = s.dials.len();
        let id = format!("call-{n}");
        if outcome == DialOutcome::Answered {
            s.live.insert(id.clone());
        }
        let attempt = Attempt {
            id,
            from: "sip:relay@trunk".into(),
            to: "sip:callee@trunk".into(),
            outcome: async move { outcome }.boxed(),
        };
        async move { Ok(attempt) }.boxed()
    }

    fn is_live(&self, call_id: &str) -> bool {
        self.0.lock().unwrap().live.contains(call_id)
    }
}

impl Scripted {
    fn dials(&self) -> usize {
        self.0.lock().unwrap().dials.len()
    }
    fn dial(&self, i: usize) -> Dial {
        self.0.lock().unwrap().dials[i].clone()
    }
    fn hang_up(&self, id: &str) {
        self.0.lock().unwrap().live.remove(id);
    }
    fn will(&self, number: &str, outcomes: &[DialOutcome]) {
        self.0
            .lock()
            .unwrap()
            .outcomes
            .entry(number.into())
            .or_default()
            .extend(outcomes.iter().cloned());
    }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn book(
    store: &Store,
    name: &str,
    phone: &str,
    date: &str,
    time: &str,
    made: &str,
) -> String {
    store
        .insert_booking(
            &NewBooking {
                patient_name: name.into(),
                phone: phone.into(),
                date: NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap(),
                time: NaiveTime::parse_from_str(time, "%H:%M").unwrap(),
            },
            at(made),
        )
        .await
        .unwrap()
        .code
}

/// A clinic in London open 09:00-12:00 and 13:00-17:00 on weekdays (the defaults), reminders
/// a day ahead, retried after an hour, three calls at most.
async fn scheduler(
    store: &Store,
    placer: &Scripted,
    f: impl FnOnce(&mut RemindersConfig),
) -> Scheduler {
    let booking = BookingConfig {
        time_zone: "Europe/London".into(),
        ..Default::default()
    };
    let mut cfg = RemindersConfig {
        enabled: true,
        ..Default::default()
    };
    f(&mut cfg);
    let schedule = Schedule::from_config(&booking).unwrap();
    let plan = Plan::new(&cfg, schedule.time_zone(), &booking.hours).unwrap();
    Scheduler::new(
        store.clone(),
        plan,
        schedule,
        CallSettings {
            agent: "receptionist".into(),
            trunk: Some("main".into()),
            ring_timeout: Duration::from_millis(cfg.ring_timeout_ms),
            max_concurrent: cfg.max_concurrent as usize,
        },
        Arc::new(placer.clone()),
    )
}

#[tokio::test]
async fn a_reminder_goes_out_a_day_ahead_and_busy_or_unanswered_calls_are_retried_in_the_hours() {
    let store = Store::open("sqlite::memory:", 1).await.unwrap();
    let placer = Scripted::default();
    let mut s = scheduler(&store, &placer, |_| {}).await;
    // booked on Monday for Thursday 11:00 (London is on UTC in December)
    let code = book(
        &store,
        "Ada Lovelace",
        "+442071234567",
        "2026-12-10",
        "11:00",
        "2026-12-07T10:00:00Z",
    )
    .await;

    s.tick(at("2026-12-07T12:00:00Z")).await.unwrap();
    let r = store.reminder(&code).await.unwrap().unwrap();
    assert_eq!(r.status, ReminderStatus::Pending);
    assert_eq!(r.next_attempt_at, Some(at("2026-12-09T11:00:00Z")));
    s.tick(at("2026-12-09T10:59:00Z")).await.unwrap();
    assert_eq!(placer.dials(), 0);

    // Wednesday 11:00: the call
    placer.will(
        "+442071234567",
        &[DialOutcome::Busy(486), DialOutcome::NoAnswer],
    );
    s.tick(at("2026-12-09T11:00:00Z")).await.unwrap();
    assert_eq!(placer.dials(), 1);
    let d = placer.dial(0);
    assert_eq!(d.to, "+442071234567");
    assert_eq!(
        (d.agent.as_str(), d.trunk.as_deref()),
        ("receptionist", Some("main"))
    );
    let context = d.context.unwrap();
    assert!(context.contains("Ada Lovelace"), "{context}");
    assert!(
        context.contains("Thursday 10 December 2026 at 11:00"),
        "{context}"
    );
    assert!(context.contains(&code), "{context}");
    assert_eq!(
        store.reminder(&code).await.unwrap().unwrap().status,
        ReminderStatus::Calling
    );
    // busy: again in an hour, but 12:00-13:00 is the clinic's lunch → 13:00
    assert!(s.settle_one(at("2026-12-09T11:00:20Z")).await.unwrap());
    let r = store.reminder(&code).await.unwrap().unwrap();
    assert_eq!(r.status, ReminderStatus::Pending);
    assert_eq!(r.attempts, 1);
    assert_eq!(r.last_outcome.as_deref(), Some("busy"));
    assert_eq!(r.next_attempt_at, Some(at("2026-12-09T13:00:00Z")));
    let busy_call = store.get_call("call-1").await.unwrap().unwrap();
    assert_eq!(busy_call.outcome, "busy");

    s.tick(at("2026-12-09T12:30:00Z")).await.unwrap();
    assert_eq!(placer.dials(), 1);
    s.tick(at("2026-12-09T13:00:00Z")).await.unwrap();
    assert_eq!(placer.dials(), 2);
    assert!(s.settle_one(at("2026-12-09T13:00:45Z")).await.unwrap());
    let r = store.reminder(&code).await.unwrap().unwrap();
    assert_eq!(
        (r.attempts, r.last_outcome.as_deref()),
        (2, Some("no_answer"))
    );
    assert_eq!(r.next_attempt_at, Some(at("2026-12-09T14:00:45Z")));

    // the third call is answered: done, and nothing more
    s.tick(at("2026-12-09T14:01:00Z")).await.unwrap();
    assert_eq!(placer.dials(), 3);
    assert!(s.settle_one(at("2026-12-09T14:01:05Z")).await.unwrap());
    let r = store.reminder(&code).await.unwrap().unwrap();
    assert_eq!(r.status, ReminderStatus::Done);
    assert_eq!(
        (r.attempts, r.last_outcome.as_deref()),
        (3, Some("answered"))
    );
    assert_eq!(r.last_call_id.as_deref(), Some("call-3"));
    s.tick(at("2026-12-09T16:00:00Z")).await.unwrap();
    assert_eq!(placer.dials(), 3);
    assert!(!s.settle_one(at("2026-12-09T16:00:00Z")).await.unwrap());
}

#[tokio::test]
async fn attempts_run_out_and_a_refused_number_is_not_called_again() {
    let store = Store::open("sqlite::memory:", 1).await.unwrap();
    let placer = Scripted::default();
    let mut s = scheduler(&store, &placer, |c| {
        c.max_attempts = 2;
        c.retry_after_ms = 600_000;
    })
    .await;
    let a = book(
        &store,
        "Ada",
        "+442071234567",
        "2026-12-10",
        "15:00",
        "2026-12-01T10:00:00Z",
    )
    .await;
    let b = book(
        &store,
        "Bob",
        "+442071234568",
        "2026-12-10",
        "16:00",
        "2026-12-01T10:00:00Z",
    )
    .await;
    placer.will(
        "+442071234567",
        &[DialOutcome::NoAnswer, DialOutcome::NoAnswer],
    );
    placer.will("+442071234568", &[DialOutcome::Refused(404)]);
    s.tick(at("2026-12-09T16:00:00Z")).await.unwrap();
    assert_eq!(placer.dials(), 2, "max_concurrent 2: both at once");
    s.settle_one(at("2026-12-09T16:00:30Z")).await.unwrap();
    s.settle_one(at("2026-12-09T16:00:30Z")).await.unwrap();
    let rb = store.reminder(&b).await.unwrap().unwrap();
    assert_eq!(rb.status, ReminderStatus::Skipped);
    assert_eq!(rb.skip_reason.as_deref(), Some("refused"));
    s.tick(at("2026-12-09T16:10:30Z")).await.unwrap();
    assert_eq!(placer.dials(), 3);
    s.settle_one(at("2026-12-09T16:11:00Z")).await.unwrap();
    let ra = store.reminder(&a).await.unwrap().unwrap();
    assert_eq!(ra.status, ReminderStatus::Skipped);
    assert_eq!(ra.skip_reason.as_deref(), Some("attempts_used"));
    assert_eq!(ra.attempts, 2);
    s.tick(at("2026-12-09T17:00:00Z")).await.unwrap();
    assert_eq!(placer.dials(), 3);
}

#[tokio::test]
async fn cancelled_and_late_bookings_get_no_call() {
    let store = Store::open("sqlite::memory:", 1).await.unwrap();
    let placer = Scripted::default();
    let mut s = scheduler(&store, &placer, |_| {}).await;
    let cancelled = book(
        &store,
        "Ada",
        "+442071234567",
        "2026-12-10",
        "11:00",
        "2026-12-01T10:00:00Z",
    )
    .await;
    // booked on Wednesday afternoon for Thursday: inside its reminder window
    let late = book(
        &store,
        "Bob",
        "+442071234568",
        "2026-12-10",
        "14:00",
        "2026-12-09T15:00:00Z",
    )
    .await;
    s.tick(at("2026-12-09T10:00:00Z")).await.unwrap();
    store
        .cancel_booking(&cancelled, "+442071234567", at("2026-12-09T10:30:00Z"))
        .await
        .unwrap()
        .unwrap();
    s.tick(at("2026-12-09T11:00:00Z")).await.unwrap();
    s.tick(at("2026-12-09T16:00:00Z")).await.unwrap();
    assert_eq!(placer.dials(), 0);
    let r = store.reminder(&cancelled).await.unwrap().unwrap();
    assert_eq!(
        (r.status, r.skip_reason.as_deref()),
        (ReminderStatus::Skipped, Some("cancelled"))
    );
    let r = store.reminder(&late).await.unwrap().unwrap();
    assert_eq!(
        (r.status, r.skip_reason.as_deref()),
        (ReminderStatus::Skipped, Some("booked_late"))
    );
}

#[tokio::test]
async fn at_most_max_concurrent_calls_ring_or_talk() {
    let store = Store::open("sqlite::memory:", 1).await.unwrap();
    let placer = Scripted::default();
    let mut s = scheduler(&store, &placer, |c| c.max_concurrent = 1).await;
    for (i, t) in ["10:00", "10:30", "11:00"].iter().enumerate() {
        book(
            &store,
            "Ada",
            &format!("+44207123456{i}"),
            "2026-12-10",
            t,
            "2026-12-01T10:00:00Z",
        )
        .await;
    }
    s.tick(at("2026-12-09T11:00:00Z")).await.unwrap();
    assert_eq!(placer.dials(), 1);
    assert_eq!(s.ringing(), 1);
    s.tick(at("2026-12-09T11:00:05Z")).await.unwrap();
    assert_eq!(placer.dials(), 1, "one rings");
    s.settle_one(at("2026-12-09T11:00:10Z")).await.unwrap();
    s.tick(at("2026-12-09T11:00:30Z")).await.unwrap();
    assert_eq!(placer.dials(), 1, "one talks");
    placer.hang_up("call-1");
    s.tick(at("2026-12-09T11:03:00Z")).await.unwrap();
    assert_eq!(placer.dials(), 2, "the next once it hung up");
}

#[tokio::test]
async fn a_reminder_cut_short_by_a_stop_is_due_again_at_the_next_start() {
    let store = Store::open("sqlite::memory:", 1).await.unwrap();
    let placer = Scripted::default();
    let mut s = scheduler(&store, &placer, |_| {}).await;
    let code = book(
        &store,
        "Ada",
        "+442071234567",
        "2026-12-10",
        "11:00",
        "2026-12-01T10:00:00Z",
    )
    .await;
    s.tick(at("2026-12-09T11:00:00Z")).await.unwrap();
    assert_eq!(placer.dials(), 1);
    drop(s); // the relay stops while the call rings
    assert_eq!(
        store
            .release_own_reminders(at("2026-12-09T11:05:00Z"))
            .await
            .unwrap(),
        1
    );
    let r = store.reminder(&code).await.unwrap().unwrap();
    assert_eq!(r.status, ReminderStatus::Pending);
    assert_eq!(r.attempts, 1);
    let mut s = scheduler(&store, &placer, |_| {}).await;
    s.tick(at("2026-12-09T11:05:00Z")).await.unwrap();
    assert_eq!(placer.dials(), 2);
    s.settle_one(at("2026-12-09T11:05:10Z")).await.unwrap();
    assert_eq!(
        store.reminder(&code).await.unwrap().unwrap().status,
        ReminderStatus::Done
    );
}

#[tokio::test]
async fn one_number_gets_one_reminder_call_a_day() {
    // however many appointments someone booked for a number (theirs or not), it is called
    // once a day at most
    let store = Store::open("sqlite::memory:", 1).await.unwrap();
    let placer = Scripted::default();
    let mut s = scheduler(&store, &placer, |_| {}).await;
    let made = "2026-12-01T10:00:00Z";
    let first = book(&store, "Ada", "+442071234567", "2026-12-10", "10:00", made).await;
    let second = book(&store, "Ada", "+442071234567", "2026-12-10", "15:00", made).await;
    let next_day = book(&store, "Ada", "+442071234567", "2026-12-11", "10:00", made).await;
    let someone_else = book(&store, "Bob", "+442071234568", "2026-12-10", "10:30", made).await;
    s.tick(at("2026-12-09T09:00:00Z")).await.unwrap();
    let status = |code: String| {
        let store = store.clone();
        async move {
            let r = store.reminder(&code).await.unwrap().unwrap();
            (r.status, r.skip_reason)
        }
    };
    assert_eq!(status(first).await, (ReminderStatus::Pending, None));
    assert_eq!(
        status(second).await,
        (ReminderStatus::Skipped, Some("same_day".into()))
    );
    assert_eq!(status(next_day).await, (ReminderStatus::Pending, None));
    assert_eq!(status(someone_else).await, (ReminderStatus::Pending, None));
}
