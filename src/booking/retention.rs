//! How long call records (who called, transcripts, tool calls: patients' personal data) are
//! kept: records of calls that started more than `booking.keep_call_records_days` ago are
//! deleted when the relay starts and every hour after, with the finished webhook deliveries
//! (whose bodies hold the same data) made before the same time.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;

use super::clock::Clock;
use super::error::StoreError;
use super::store::Store;

/// How often the pruning runs after the first time.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The start time before which call records go, at `now`, keeping `keep_days`; `None` when
/// records are kept forever (`0`).
pub fn cutoff(now: DateTime<Utc>, keep_days: u32) -> Option<DateTime<Utc>> {
    if keep_days == 0 {
        return None;
    }
    now.checked_sub_signed(chrono::Duration::days(i64::from(keep_days)))
}

/// Deletes the call records older than `keep_days` at `now`; returns how many went.
pub async fn prune(store: &Store, keep_days: u32, now: DateTime<Utc>) -> Result<u64, StoreError> {
    match cutoff(now, keep_days) {
        Some(before) => {
            let calls = store.prune_calls(before).await?;
            store.prune_deliveries(before).await?;
            store.prune_reminders(before).await?;
            Ok(calls)
        }
        None => Ok(0),
    }
}

/// Prunes now and then every [`PRUNE_EVERY`], telling the time by `clock`, until the task is
/// aborted; `None` when records are kept forever. A failed run is logged and retried at the
/// next one.
pub fn spawn(store: Store, keep_days: u32, clock: Arc<dyn Clock>) -> Option<JoinHandle<()>> {
    if keep_days == 0 {
        return None;
    }
    Some(every(PRUNE_EVERY, move || {
        let (store, now) = (store.clone(), clock.now());
        async move {
            match prune(&store, keep_days, now).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, keep_days, "old call records deleted"),
                Err(e) => tracing::warn!(error = %e, "deleting old call records failed"),
            }
        }
    }))
}

/// Runs `run` at once, then every `period`, until the task is aborted; a run missed while
/// the last one took long is not made up.
pub fn every<F, Fut>(period: std::time::Duration, mut run: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            run().await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::booking::store::CallRecord;
    use crate::booking::FixedClock;

    fn record(id: &str, started_at: DateTime<Utc>) -> CallRecord {
        CallRecord {
            id: id.into(),
            caller: "sip:+12015550123@trunk".into(),
            callee: "sip:100@relay".into(),
            agent: "receptionist".into(),
            kind: Default::default(),
            started_at,
            answered_at: None,
            ended_at: None,
            outcome: "caller_bye".into(),
            transcript: serde_json::json!([{"speaker": "caller", "text": "my name is Ada"}]),
            tool_calls: serde_json::json!([]),
            recording: None,
            node: None,
            answered_by: None,
        }
    }

    async fn ids(store: &Store) -> Vec<String> {
        let mut v: Vec<String> = store
            .list_calls(100)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn zero_keeps_forever() {
        let now: DateTime<Utc> = "2026-12-04T12:00:00Z".parse().unwrap();
        assert_eq!(cutoff(now, 0), None);
        assert_eq!(
            cutoff(now, 90),
            Some("2026-09-05T12:00:00Z".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn records_older_than_the_limit_go_and_newer_ones_stay() {
        let store = Store::open("sqlite::memory:", 1).await.unwrap();
        let now: DateTime<Utc> = "2026-12-04T12:00:00.250Z".parse().unwrap();
        let day = chrono::Duration::days(1);
        let ms = chrono::Duration::milliseconds(1);
        for (id, at) in [
            ("old", now - day * 400),
            ("just-over", now - day * 90 - ms),
            ("just-under", now - day * 90 + ms),
            ("today", now),
        ] {
            store.insert_call(&record(id, at)).await.unwrap();
        }
        assert_eq!(prune(&store, 0, now).await.unwrap(), 0);
        assert_eq!(ids(&store).await.len(), 4);
        assert_eq!(prune(&store, 90, now).await.unwrap(), 2);
        assert_eq!(ids(&store).await, ["just-under", "today"]);
        // A day later the next one is over the limit too.
        assert_eq!(prune(&store, 90, now + day).await.unwrap(), 1);
        assert_eq!(ids(&store).await, ["today"]);
    }

    #[tokio::test]
    async fn the_task_prunes_at_once_on_start() {
        let store = Store::open("sqlite::memory:", 1).await.unwrap();
        let now: DateTime<Utc> = "2026-12-04T12:00:00Z".parse().unwrap();
        store
            .insert_call(&record("old", now - chrono::Duration::days(31)))
            .await
            .unwrap();
        store.insert_call(&record("new", now)).await.unwrap();
        assert!(spawn(store.clone(), 0, Arc::new(FixedClock::new(now))).is_none());
        let task = spawn(store.clone(), 30, Arc::new(FixedClock::new(now))).unwrap();
        // bounded wait for the first run (a condition, not a sleep)
        let gone = async {
            while ids(&store).await.len() != 1 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), gone)
            .await
            .expect("the old record is pruned at start");
        assert_eq!(ids(&store).await, ["new"]);
        task.abort();
    }
}
