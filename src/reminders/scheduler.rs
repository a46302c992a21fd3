//! The reminder scheduler: every `poll_ms` it writes a reminder row for each booking of the
//! next `before_minutes` and eight days (when [`Plan`] says its call goes out), claims the rows that are
//! due (one UPDATE: two relays never call for one appointment) and places their calls through
//! a [`Placer`]; when a call is answered or not, [`Plan::after`] decides what follows. At most
//! `max_concurrent` reminder calls at once, ringing or talking.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::plan::{Next, Plan, Skip};
use crate::booking::error::StoreError;
use crate::booking::schedule::{speak_date, speak_time, Schedule};
use crate::booking::store::{Booking, CallRecord, Reminder, ReminderStatus, ReminderUpdate};
use crate::booking::{Clock, Status, Store};
use crate::bridge::registry::Registry;
use crate::metrics::Metrics;
use crate::sip::{Dial, DialError, DialOutcome, Dialer};

/// An answered call counts as talking until the registry shows it, for this long at most
/// (the call's task registers it just after the answer).
const REGISTER_GRACE: chrono::Duration = chrono::Duration::seconds(10);
/// How far past `before_minutes` bookings are planned.
const LOOK_PAST_HORIZON: chrono::Duration = chrono::Duration::days(8);
/// When the relay is full (at `sip.max_calls`), a due reminder waits this long.
const FULL_WAIT: chrono::Duration = chrono::Duration::seconds(60);

/// Places calls: the SIP dialler in the relay, a fake in the scheduler's own tests.
pub trait Placer: Send + Sync {
    /// Places `dial`; the call's id and how it goes.
    fn place(&self, dial: Dial) -> BoxFuture<'static, Result<Attempt, DialError>>;
    /// Whether an answered call is still on.
    fn is_live(&self, call_id: &str) -> bool;
}

/// A placed call.
pub struct Attempt {
    /// The call's id (its record's).
    pub id: String,
    /// Our From URI.
    pub from: String,
    /// The callee's URI.
    pub to: String,
    /// Resolves when it was answered or not.
    pub outcome: BoxFuture<'static, DialOutcome>,
}

/// The relay's SIP dialler and its calls' registry.
#[derive(Debug, Clone)]
pub struct SipPlacer {
    /// Places the calls.
    pub dialer: Dialer,
    /// Knows which calls are on.
    pub registry: Registry,
}

impl Placer for SipPlacer {
    fn place(&self, dial: Dial) -> BoxFuture<'static, Result<Attempt, DialError>> {
        let dialer = self.dialer.clone();
        async move {
            let placed = dialer.dial(dial).await?;
            let outcome = placed.outcome;
            Ok(Attempt {
                id: placed.id,
                from: placed.from,
                to: placed.to,
                outcome: async move {
                    outcome
                        .await
                        .unwrap_or_else(|e| DialOutcome::Failed(e.to_string()))
                }
                .boxed(),
            })
        }
        .boxed()
    }

    fn is_live(&self, call_id: &str) -> bool {
        self.registry.is_live(call_id)
    }
}

/// Who talks and through which trunk.
#[derive(Debug, Clone)]
pub struct CallSettings {
    /// The agent.
    pub agent: String,
    /// The trunk (the first that can place calls when `None`).
    pub trunk: Option<String>,
    /// How long a call may ring.
    pub ring_timeout: Duration,
    /// Reminder calls at once.
    pub max_concurrent: usize,
}

/// One placed reminder call's end of ringing.
struct Rung {
    code: String,
    appointment: DateTime<Utc>,
    attempts: u32,
    agent: String,
    started_at: DateTime<Utc>,
    id: String,
    from: String,
    to: String,
    outcome: DialOutcome,
}

/// The scheduler's state. Driven by [`Scheduler::run`], or step by step in tests.
pub struct Scheduler {
    store: Store,
    plan: Plan,
    schedule: Schedule,
    calls: CallSettings,
    placer: Arc<dyn Placer>,
    ringing: FuturesUnordered<BoxFuture<'static, Rung>>,
    /// Answered reminder calls, by id, with when they were answered.
    talking: HashMap<String, DateTime<Utc>>,
    metrics: Option<Arc<Metrics>>,
}

impl Scheduler {
    /// A scheduler over `store`.
    pub fn new(
        store: Store,
        plan: Plan,
        schedule: Schedule,
        calls: CallSettings,
        placer: Arc<dyn Placer>,
    ) -> Self {
        Self {
            store,
            plan,
            schedule,
            calls,
            placer,
            ringing: FuturesUnordered::new(),
            talking: HashMap::new(),
            metrics: None,
        }
    }

    /// Counts the calls in `metrics` (`voxrelay_reminder_calls_total`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Reminder calls ringing now.
    pub fn ringing(&self) -> usize {
        self.ringing.len()
    }

    /// Plans the bookings not yet planned and places the calls that are due, as many as
    /// `max_concurrent` allows.
    pub async fn tick(&mut self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.discover(now).await?;
        let placer = self.placer.clone();
        self.talking
            .retain(|id, at| placer.is_live(id) || now - *at < REGISTER_GRACE);
        let busy = self.ringing.len() + self.talking.len();
        let free = self.calls.max_concurrent.saturating_sub(busy);
        if free == 0 {
            return Ok(());
        }
        let due = self.store.due_reminders(now, free as u32).await?;
        for r in due {
            self.start(now, r).await?;
        }
        Ok(())
    }

    /// The next reminder call that stopped ringing (answered or not); `None` when none
    /// rings. Hand it to [`Scheduler::rung`].
    async fn next_rung(&mut self) -> Option<Rung> {
        self.ringing.next().await
    }

    /// Waits until a ringing call is answered or not and records what follows: for tests,
    /// which drive the scheduler step by step. False when no call rings.
    pub async fn settle_one(&mut self, now: DateTime<Utc>) -> Result<bool, StoreError> {
        match self.next_rung().await {
            Some(r) => self.rung(now, r).await.map(|()| true),
            None => Ok(false),
        }
    }

    async fn discover(&mut self, now: DateTime<Utc>) -> Result<(), StoreError> {
        // a week past the horizon too: when the hours leave no time on the due day (a
        // Sunday), the call goes out on the last calling day before it
        let from = self.schedule.today(now);
        let to = self
            .schedule
            .today(now + self.plan.horizon() + LOOK_PAST_HORIZON);
        for b in self.store.bookings_without_reminder(from, to).await? {
            let Some(appointment) = self.schedule.instant(b.date, b.time) else {
                continue;
            };
            let mut next = self.plan.first(now, appointment, b.created_at);
            if matches!(next, Next::CallAt(_))
                && self.store.reminders_for_phone_on(&b.phone, b.date).await? > 0
            {
                // the bookings come in time order: the day's first one is reminded
                next = Next::Skip(Skip::SameDay);
            }
            let (status, next_attempt_at, skip_reason) = match next {
                Next::CallAt(t) => (ReminderStatus::Pending, Some(t), None),
                Next::Skip(s) => (ReminderStatus::Skipped, None, Some(s.as_str().to_string())),
                Next::Done => (ReminderStatus::Done, None, None),
            };
            let row = Reminder {
                booking_code: b.code.clone(),
                appointment_at: appointment,
                status,
                attempts: 0,
                next_attempt_at,
                last_outcome: None,
                skip_reason: skip_reason.clone(),
                last_call_id: None,
                created_at: now,
                updated_at: now,
            };
            if self.store.insert_reminder(&row).await? {
                info!(
                    booking = %b.code,
                    appointment = %appointment,
                    call_at = next_attempt_at.map(tracing::field::display),
                    skipped = skip_reason.as_deref(),
                    "reminder planned"
                );
            }
        }
        Ok(())
    }

    async fn start(&mut self, now: DateTime<Utc>, r: Reminder) -> Result<(), StoreError> {
        let code = r.booking_code.clone();
        let booking = self.store.booking_by_code(&code).await?;
        let appointment = booking
            .as_ref()
            .filter(|b| b.status == Status::Active)
            .and_then(|b| self.schedule.instant(b.date, b.time));
        let Some(booking) = booking.filter(|_| appointment == Some(r.appointment_at)) else {
            return self.skip(now, &code, Skip::Cancelled, None, None).await;
        };
        // due, but found late (the relay was down): maybe outside the hours by now
        match self.plan.call_from(now, r.appointment_at) {
            Next::CallAt(t) if t > now => {
                let u = ReminderUpdate {
                    status: ReminderStatus::Pending,
                    next_attempt_at: Some(t),
                    last_outcome: None,
                    skip_reason: None,
                    last_call_id: None,
                };
                return self.store.update_reminder(&code, &u, now).await;
            }
            Next::Skip(s) => return self.skip(now, &code, s, None, None).await,
            _ => {}
        }
        if !self.store.claim_reminder(&code, now).await? {
            return Ok(()); // another relay's
        }
        let attempts = r.attempts + 1;
        let dial = Dial {
            to: booking.phone.clone(),
            trunk: self.calls.trunk.clone(),
            agent: self.calls.agent.clone(),
            context: Some(context(&booking)),
            ring_timeout: Some(self.calls.ring_timeout),
        };
        match self.placer.place(dial).await {
            Ok(a) => {
                info!(booking = %code, call = %a.id, attempt = attempts, "reminder call placed");
                let (appointment, agent) = (r.appointment_at, self.calls.agent.clone());
                self.ringing.push(
                    async move {
                        let outcome = a.outcome.await;
                        Rung {
                            code,
                            appointment,
                            attempts,
                            agent,
                            started_at: now,
                            id: a.id,
                            from: a.from,
                            to: a.to,
                            outcome,
                        }
                    }
                    .boxed(),
                );
                Ok(())
            }
            Err(e @ (DialError::Busy | DialError::NoPort)) => {
                info!(booking = %code, reason = %e, "reminder call waits: the relay is full");
                self.store
                    .unclaim_reminder(&code, now + FULL_WAIT, now)
                    .await
            }
            Err(e) => {
                warn!(booking = %code, error = %e, "the reminder call cannot be placed");
                self.skip(now, &code, Skip::CannotCall, None, None).await
            }
        }
    }

    async fn rung(&mut self, now: DateTime<Utc>, r: Rung) -> Result<(), StoreError> {
        if let Some(m) = &self.metrics {
            m.reminder_call(r.outcome.as_str());
        }
        if r.outcome == DialOutcome::Answered {
            self.talking.insert(r.id.clone(), now);
        } else {
            let record = CallRecord::unanswered(
                r.id.clone(),
                r.from,
                r.to,
                r.agent,
                r.started_at,
                now,
                r.outcome.as_str(),
            );
            if let Err(e) = self.store.insert_call(&record).await {
                warn!(call = %r.id, error = %e, "the unanswered reminder call was not stored");
            }
        }
        let outcome = Some(r.outcome.as_str().to_string());
        let call = Some(r.id.clone());
        // logged once written, so that what the log says is what the API shows
        match self.plan.after(now, r.appointment, r.attempts, &r.outcome) {
            Next::Done => {
                let u = ReminderUpdate {
                    status: ReminderStatus::Done,
                    next_attempt_at: None,
                    last_outcome: outcome,
                    skip_reason: None,
                    last_call_id: call,
                };
                self.store.update_reminder(&r.code, &u, now).await?;
                info!(booking = %r.code, call = %r.id, "reminder given");
                Ok(())
            }
            Next::CallAt(t) => {
                let u = ReminderUpdate {
                    status: ReminderStatus::Pending,
                    next_attempt_at: Some(t),
                    last_outcome: outcome,
                    skip_reason: None,
                    last_call_id: call,
                };
                self.store.update_reminder(&r.code, &u, now).await?;
                info!(booking = %r.code, call = %r.id, outcome = r.outcome.as_str(), retry_at = %t, "reminder call not answered: trying again later");
                Ok(())
            }
            Next::Skip(s) => self.skip(now, &r.code, s, outcome, call).await,
        }
    }

    async fn skip(
        &mut self,
        now: DateTime<Utc>,
        code: &str,
        why: Skip,
        last_outcome: Option<String>,
        last_call_id: Option<String>,
    ) -> Result<(), StoreError> {
        let u = ReminderUpdate {
            status: ReminderStatus::Skipped,
            next_attempt_at: None,
            last_outcome,
            skip_reason: Some(why.as_str().to_string()),
            last_call_id,
        };
        self.store.update_reminder(code, &u, now).await?;
        info!(booking = %code, reason = why.as_str(), "no more reminder calls");
        Ok(())
    }

    /// Runs until aborted: this relay's reminders left mid-call at its last stop are put
    /// back, then it ticks every `poll` (and, in a cluster, takes back the reminders of
    /// relays gone for `adopt_after`).
    pub fn spawn(
        mut self,
        clock: Arc<dyn Clock>,
        poll: Duration,
        adopt_after: Option<Duration>,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            match self.store.release_own_reminders(clock.now()).await {
                Ok(0) => {}
                Ok(n) => info!(
                    reminders = n,
                    "reminder calls cut short by the last stop are due again"
                ),
                Err(e) => warn!(error = %e, "looking for reminders cut short failed"),
            }
            let mut ticks = tokio::time::interval(poll);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let rung = tokio::select! {
                    _ = ticks.tick() => None,
                    Some(r) = self.next_rung(), if !self.ringing.is_empty() => Some(r),
                };
                let now = clock.now();
                let result = match rung {
                    Some(r) => self.rung(now, r).await,
                    None => {
                        if let Some(stale) = adopt_after {
                            if let Ok(n @ 1..) = self.store.adopt_orphan_reminders(stale, now).await
                            {
                                info!(
                                    reminders = n,
                                    "took back the reminder calls of a relay that is gone"
                                );
                            }
                        }
                        self.tick(now).await
                    }
                };
                if let Err(e) = result {
                    warn!(error = %e, "the reminder scheduler's database work failed; tried again at the next tick");
                }
            }
        })
    }
}

/// What the agent is told about a reminder call.
pub fn context(b: &Booking) -> String {
    format!(
        "This is an appointment reminder for {name}: the appointment is on {date} at {time} \
         (booking code {code}). Ask whether they will come. If they cannot, offer to move it \
         (check availability, book the new time, then cancel this booking) or to cancel it. \
         If you reach a voicemail, say who you are and the day and time of the appointment, \
         and ask them to call back to change it; do not say the booking code there.",
        name = b.patient_name,
        date = speak_date(b.date),
        time = speak_time(b.time),
        code = b.code,
    )
}
