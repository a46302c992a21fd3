//! The delivery task: takes this relay's due deliveries from the database, posts each signed,
//! and writes what happened; sleeps until the next one is due or a call ends.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::payload::{call_ended, Summary, CALL_ENDED};
use super::retry::{Attempt, RetryPolicy};
use super::signature;
use super::summary::Summarizer;
use crate::booking::store::{AttemptUpdate, Delivery, DeliveryStatus, Store};
use crate::booking::CallRecord;
use crate::secret::Secret;

/// Deliveries attempted together at most.
const BATCH: u32 = 16;

/// The longest sleep with nothing due (a delivery written by another process of the same
/// node is found within this).
const IDLE: Duration = Duration::from_secs(30);

/// The wait after the database failed.
const DB_RETRY: Duration = Duration::from_secs(5);

/// How often a relay of a cluster looks for the pending deliveries of relays that are gone.
const ADOPT_EVERY: Duration = Duration::from_secs(5);

/// One configured receiver. `Debug` never shows the secret.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Where events go.
    pub url: String,
    /// The signing secret.
    pub secret: Secret,
    /// When to try again.
    pub policy: RetryPolicy,
    /// How long one attempt may take.
    pub timeout: Duration,
}

/// The relay's webhooks: cheap to clone.
#[derive(Debug, Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    hooks: Vec<Webhook>,
    summarizer: Option<Summarizer>,
    http: reqwest::Client,
    wake: Notify,
    /// In a cluster: a relay silent this long is gone, and its pending deliveries are taken.
    adopt_after: Option<Duration>,
}

impl Webhooks {
    /// Webhooks over `store`'s delivery table; `summarizer` writes each call's summary.
    pub fn new(store: Store, hooks: Vec<Webhook>, summarizer: Option<Summarizer>) -> Self {
        Self::with_adoption(store, hooks, summarizer, None)
    }

    /// As [`Webhooks::new`], in a cluster whose relays count as gone after `adopt_after`
    /// without a heartbeat: their pending deliveries are taken over and sent by this one.
    pub fn with_adoption(
        store: Store,
        hooks: Vec<Webhook>,
        summarizer: Option<Summarizer>,
        adopt_after: Option<Duration>,
    ) -> Self {
        let http = reqwest::Client::builder()
            // a receiver's redirect is a failed attempt, never followed with the signed body
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("voxrelay/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                store,
                hooks,
                summarizer,
                http,
                wake: Notify::new(),
                adopt_after,
            }),
        }
    }

    /// The configured receivers.
    pub fn hooks(&self) -> &[Webhook] {
        &self.inner.hooks
    }

    /// A call ended and its record is stored: summarise it, write one delivery per webhook,
    /// and wake the sender. Runs in a task of its own; failures are logged.
    pub fn call_ended(&self, record: CallRecord) {
        let this = self.clone();
        tokio::spawn(async move { this.enqueue(&record).await });
    }

    async fn enqueue(&self, record: &CallRecord) {
        let summary = match &self.inner.summarizer {
            None => Summary::None,
            Some(s) => match s.summarize(record).await {
                Ok(Some(text)) => Summary::Text(text),
                Ok(None) => Summary::None,
                Err(e) => {
                    warn!(call = %record.id, error = %e, "the call's summary failed; its event goes without it");
                    Summary::Failed(e.to_string())
                }
            },
        };
        let now = Utc::now();
        let body = call_ended(record, &summary, now).to_string();
        let deliveries: Vec<Delivery> = self
            .inner
            .hooks
            .iter()
            .map(|h| Delivery {
                id: delivery_id(),
                url: h.url.clone(),
                event: CALL_ENDED.into(),
                call_id: record.id.clone(),
                payload: body.clone(),
                status: DeliveryStatus::Pending,
                attempts: 0,
                next_attempt_at: Some(now),
                last_status: None,
                last_error: None,
                created_at: now,
                delivered_at: None,
            })
            .collect();
        match self.inner.store.insert_deliveries(&deliveries).await {
            Ok(()) => self.inner.wake.notify_one(),
            Err(e) => {
                warn!(call = %record.id, error = %e, "the call's webhook deliveries were not stored")
            }
        }
    }

    /// Starts the delivery task (it runs until aborted).
    pub fn spawn_sender(&self) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move { this.run().await })
    }

    async fn run(&self) {
        let mut adopted_at: Option<tokio::time::Instant> = None;
        loop {
            if let Some(stale) = self.inner.adopt_after {
                if adopted_at.is_none_or(|t| t.elapsed() >= ADOPT_EVERY) {
                    adopted_at = Some(tokio::time::Instant::now());
                    match self.inner.store.adopt_orphan_deliveries(stale).await {
                        Ok(0) => {}
                        Ok(n) => info!(
                            deliveries = n,
                            "took over the webhook deliveries of a relay that is gone"
                        ),
                        Err(e) => {
                            warn!(error = %e, "looking for other relays' webhook deliveries failed")
                        }
                    }
                }
            }
            let wait = match self.inner.store.due_deliveries(Utc::now(), BATCH).await {
                Ok(due) if !due.is_empty() => {
                    let attempts = due.iter().map(|d| self.attempt(d));
                    futures::future::join_all(attempts).await;
                    continue;
                }
                Ok(_) => match self.inner.store.next_delivery_due().await {
                    Ok(Some(at)) => (at - Utc::now())
                        .to_std()
                        .unwrap_or(Duration::ZERO)
                        .min(IDLE),
                    Ok(None) => IDLE,
                    Err(_) => DB_RETRY,
                },
                Err(e) => {
                    warn!(error = %e, "reading the due webhook deliveries failed");
                    DB_RETRY
                }
            };
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One attempt at `d`, and its outcome written.
    async fn attempt(&self, d: &Delivery) {
        let n = d.attempts.saturating_add(1);
        let now = Utc::now();
        let update = match self.inner.hooks.iter().find(|h| h.url == d.url) {
            None => AttemptUpdate {
                status: DeliveryStatus::Failed,
                attempts: d.attempts,
                next_attempt_at: None,
                last_status: None,
                last_error: Some("the webhook is no longer configured".into()),
                delivered_at: None,
            },
            Some(h) => {
                let outcome = self.post(h, d).await;
                let jitter: f64 = rand::rng().random();
                h.policy.after(n, &outcome, Utc::now(), jitter)
            }
        };
        // stored first, so that whoever reads the line below finds the delivery log saying it
        if let Err(e) = self.inner.store.update_delivery(&d.id, &update).await {
            // the attempt is made again: a receiver drops the repeat by its delivery id
            warn!(delivery = %d.id, error = %e, "a webhook delivery's outcome was not stored");
        }
        match update.status {
            DeliveryStatus::Delivered => {
                info!(delivery = %d.id, call = %d.call_id, url = %d.url, attempts = n, "webhook delivered")
            }
            DeliveryStatus::Failed => {
                warn!(delivery = %d.id, call = %d.call_id, url = %d.url, attempts = update.attempts,
                      error = update.last_error.as_deref().unwrap_or("-"), "webhook delivery given up")
            }
            DeliveryStatus::Pending => {
                info!(delivery = %d.id, call = %d.call_id, url = %d.url, attempts = n,
                      error = update.last_error.as_deref().unwrap_or("-"),
                      retry_in_ms = update.next_attempt_at.map_or(0, |t| (t - now).num_milliseconds()),
                      "webhook delivery failed; it will be retried")
            }
        }
    }

    async fn post(&self, h: &Webhook, d: &Delivery) -> Attempt {
        let t = Utc::now().timestamp();
        let sent = self
            .inner
            .http
            .post(&h.url)
            .header("content-type", "application/json")
            .header(
                signature::HEADER,
                signature::sign(&h.secret, t, d.payload.as_bytes()),
            )
            .header("voxrelay-event", &d.event)
            .header("voxrelay-delivery", &d.id)
            .body(d.payload.clone())
            .timeout(h.timeout)
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                Attempt::Answered {
                    status: resp.status().as_u16(),
                    retry_after,
                }
            }
            Err(e) if e.is_timeout() => Attempt::NoAnswer("no answer in time".into()),
            Err(e) if e.is_connect() => Attempt::NoAnswer("could not connect".into()),
            Err(e) => Attempt::NoAnswer(format!("request failed: {e}")),
        }
    }
}

/// A new delivery's id: `dlv_` and 24 random letters and digits.
fn delivery_id() -> String {
    let tail: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("dlv_{tail}")
}
