//! How long call recordings are kept: the recordings of calls that started more than
//! `recording.keep_days` ago are deleted when the relay starts and every hour after. Their
//! call records stay (they have their own retention, `booking.keep_call_records_days`) and
//! say when the file went (`recording.deleted_at`).
//!
//! A WAV in the folder that no record names (the relay stopped before storing the record, or
//! runs without a database) goes once its last write is older than the limit.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::booking::retention::cutoff;
use crate::booking::{Clock, Store, StoreError};

/// How often the sweep runs after the first time.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// What one sweep deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Call records marked as having lost their recording.
    pub records: u64,
    /// Files deleted (named by a record or not).
    pub files: u64,
}

/// Why a sweep stopped early.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The database could not be read or written.
    #[error("the call records could not be read or updated: {0}")]
    Store(#[from] StoreError),
    /// The folder could not be read.
    #[error("the recordings folder could not be read: {0}")]
    Dir(#[from] io::Error),
}

/// Deletes the recordings older than `keep_days` at `now` (0: keeps them forever): the files
/// the records of `store` name, marking those records, then other WAV files in `dir` last
/// written before the limit.
pub async fn sweep(
    store: Option<&Store>,
    dir: &Path,
    keep_days: u32,
    now: DateTime<Utc>,
) -> Result<Swept, SweepError> {
    let mut swept = Swept::default();
    let Some(before) = cutoff(now, keep_days) else {
        return Ok(swept);
    };
    if let Some(store) = store {
        for (id, path) in store.recordings_before(before).await? {
            match std::fs::remove_file(&path) {
                Ok(()) => swept.files += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    // the record keeps pointing at it; the next sweep tries again
                    warn!(error = %e, call = %id, "an old recording could not be deleted");
                    continue;
                }
            }
            store.mark_recording_deleted(&id, now).await?;
            swept.records += 1;
        }
    }
    let limit = SystemTime::from(before);
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(swept),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let is_wav = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("wav"));
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < limit);
        if is_wav && old && std::fs::remove_file(&path).is_ok() {
            swept.files += 1;
        }
    }
    Ok(swept)
}

/// Sweeps now and then every [`SWEEP_EVERY`], telling the time by `clock`, until the task is
/// aborted; `None` when recordings are kept forever. A failed run is logged and retried at
/// the next one.
pub fn spawn(
    store: Option<Store>,
    dir: std::path::PathBuf,
    keep_days: u32,
    clock: Arc<dyn Clock>,
) -> Option<JoinHandle<()>> {
    if keep_days == 0 {
        return None;
    }
    Some(crate::booking::retention::every(SWEEP_EVERY, move || {
        let (store, dir, now) = (store.clone(), dir.clone(), clock.now());
        async move {
            match sweep(store.as_ref(), &dir, keep_days, now).await {
                Ok(s) if s == Swept::default() => {}
                Ok(s) => info!(
                    files = s.files,
                    records = s.records,
                    keep_days,
                    "old recordings deleted"
                ),
                Err(e) => warn!(error = %e, "deleting old recordings failed"),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::booking::{CallRecord, RecordingRef};

    fn record(id: &str, started_at: DateTime<Utc>, path: &Path) -> CallRecord {
        CallRecord {
            id: id.into(),
            caller: "sip:+12015550123@trunk".into(),
            callee: "sip:100@relay".into(),
            agent: "receptionist".into(),
            kind: Default::default(),
            started_at,
            answered_at: Some(started_at),
            ended_at: Some(started_at),
            outcome: "caller_bye".into(),
            transcript: serde_json::json!([]),
            tool_calls: serde_json::json!([]),
            recording: Some(RecordingRef {
                path: path.to_string_lossy().into_owned(),
                bytes: 44,
                duration_ms: 0,
                offset_ms: 120,
                deleted_at: None,
            }),
            node: None,
            answered_by: None,
        }
    }

    /// In a cluster the database holds every relay's records, but each relay sweeps only the
    /// recordings it made: another relay's file is not on its disk, and marking that record
    /// deleted would hide a file that is still there.
    #[tokio::test]
    async fn a_relay_sweeps_only_the_recordings_it_made() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("shared.db").display());
        let a = Store::open(&url, 1)
            .await
            .unwrap()
            .for_node(Some("relay-a"));
        let b = Store::open(&url, 1)
            .await
            .unwrap()
            .for_node(Some("relay-b"));
        let now: DateTime<Utc> = "2026-12-04T12:00:00Z".parse().unwrap();
        let on_b = dir.path().join("b.wav");
        std::fs::write(&on_b, crate::media::recording::header(0)).unwrap();
        b.insert_call(&record("b-call", now - chrono::Duration::days(31), &on_b))
            .await
            .unwrap();
        let empty = tempfile::tempdir().unwrap();
        let s = sweep(Some(&a), empty.path(), 30, now).await.unwrap();
        assert_eq!(
            s,
            Swept::default(),
            "relay A leaves relay B's recording alone"
        );
        let r = a.get_call("b-call").await.unwrap().unwrap();
        assert_eq!(r.node.as_deref(), Some("relay-b"));
        assert_eq!(r.recording.unwrap().deleted_at, None);
        let s = sweep(Some(&b), empty.path(), 30, now).await.unwrap();
        assert_eq!(s.records, 1, "relay B sweeps its own");
        assert!(!on_b.exists());
    }

    #[tokio::test]
    async fn old_recordings_go_and_their_records_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open("sqlite::memory:", 1).await.unwrap();
        let now: DateTime<Utc> = "2026-12-04T12:00:00Z".parse().unwrap();
        let day = chrono::Duration::days(1);
        let old = dir.path().join("old.wav");
        let new = dir.path().join("new.wav");
        let stray = dir.path().join("stray.wav");
        let note = dir.path().join("notes.txt");
        for p in [&old, &new, &stray, &note] {
            std::fs::write(p, crate::media::recording::header(0)).unwrap();
        }
        // a file no record names, last written 40 days ago
        let long_ago = SystemTime::from(now - day * 40);
        std::fs::File::options()
            .write(true)
            .open(&stray)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        std::fs::File::options()
            .write(true)
            .open(&note)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        store
            .insert_call(&record("old", now - day * 31, &old))
            .await
            .unwrap();
        store
            .insert_call(&record("new", now - day * 29, &new))
            .await
            .unwrap();

        // 0 keeps everything
        let s = sweep(Some(&store), dir.path(), 0, now).await.unwrap();
        assert_eq!(s, Swept::default());
        assert!(old.exists());

        let s = sweep(Some(&store), dir.path(), 30, now).await.unwrap();
        assert_eq!(
            s,
            Swept {
                records: 1,
                files: 2
            }
        );
        assert!(!old.exists() && !stray.exists());
        assert!(new.exists(), "a recording inside the limit stays");
        assert!(note.exists(), "only WAV files are recordings");
        let r = store.get_call("old").await.unwrap().unwrap();
        assert_eq!(r.recording.unwrap().deleted_at, Some(now));
        let r = store.get_call("new").await.unwrap().unwrap();
        assert_eq!(r.recording.unwrap().deleted_at, None);

        // swept once: the next run finds nothing more, a day later the next one goes
        let s = sweep(Some(&store), dir.path(), 30, now).await.unwrap();
        assert_eq!(s, Swept::default());
        let s = sweep(Some(&store), dir.path(), 30, now + day * 2)
            .await
            .unwrap();
        assert_eq!(
            s,
            Swept {
                records: 1,
                files: 1
            }
        );
        assert!(!new.exists());
    }

    #[tokio::test]
    async fn a_missing_folder_is_nothing_to_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let s = sweep(None, &dir.path().join("none"), 7, now).await.unwrap();
        assert_eq!(s, Swept::default());
    }
}
