//! A booking the caller heard confirmed survives `kill -9` of the process that made it.
//!
//! The test re-runs its own binary as a child (only the `durability_child` helper, told what
//! to do through an environment variable). The child opens the store, calls `create_booking`,
//! prints the confirmation and waits; the parent sends SIGKILL the moment it reads the line,
//! then opens the database again as a restarted relay would and looks for the booking.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use voxrelay::booking::{BookingConfig, FixedClock, Status, Store, Tools};

/// Set in the child: the database URL to book into.
const CHILD_ENV: &str = "VOXRELAY_TEST_DURABILITY_CHILD_URL";

fn tools_config(url: &str) -> BookingConfig {
    BookingConfig {
        database_url: url.into(),
        time_zone: "UTC".into(),
        ..BookingConfig::default()
    }
}

fn clock() -> Arc<FixedClock> {
    // Tuesday 24 November 2026, 08:00 UTC.
    Arc::new(FixedClock::new("2026-11-24T08:00:00Z".parse().unwrap()))
}

/// The child half of the durability tests; does nothing unless a parent test started it.
#[test]
fn durability_child() {
    let Ok(url) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = Store::open(&url, 2).await.expect("child: open store");
        let tools = Tools::new(store, &tools_config(&url), clock()).unwrap();
        let args = json!({"patient_name": "Ada Lovelace", "phone": "+1 201 555 0123", "date": "2026-11-25", "time": "10:00"});
        let out = tools.call("create_booking", &args.to_string()).await;
        let code = out["booking_id"].as_str().unwrap_or_else(|| panic!("child: not booked: {out}"));
        let mut stdout = std::io::stdout();
        writeln!(stdout, "BOOKED {code}").unwrap();
        stdout.flush().unwrap();
        // Stay alive with the pool open until the parent's SIGKILL.
        std::future::pending::<()>().await;
    });
}

/// Runs the child on `url`, kills it with SIGKILL right after it reports the booking, and
/// returns the confirmation code it printed.
fn book_in_child_then_kill(url: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "durability_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Lines are read on their own thread so a child that hangs fails the test instead.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest prints "test durability_child ... " before the child's own output.
            if let Some((_, c)) = line.split_once("BOOKED ") {
                let _ = tx.send(c.trim().to_string());
                return;
            }
        }
    });
    let code = rx.recv_timeout(Duration::from_secs(120)).ok();
    // `Child::kill` is SIGKILL on Unix: no destructor, no checkpoint, no flush. Sent at once
    // when the line arrives (and on a timeout, so no child outlives the test).
    let _ = child.kill();
    let status = child.wait().unwrap();
    let Some(code) = code else {
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).ok();
        panic!("child exited ({status}) without booking:\n{err}");
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "the child was killed by SIGKILL, not ended some other way"
    );
    code
}

async fn assert_booking_survived(url: &str, code: &str) {
    let store = Store::open(url, 2).await.unwrap();
    let b = store
        .booking_by_code(code)
        .await
        .unwrap()
        .expect("the confirmed booking is in the database after a restart");
    assert_eq!(b.status, Status::Active);
    assert_eq!(b.patient_name, "Ada Lovelace");
    assert_eq!(b.phone, "+12015550123");
    // And the restarted relay's tools see it.
    let tools = Tools::new(store, &tools_config(url), clock()).unwrap();
    let found = tools
        .call_as(&tools.caller(Some("2015550123")), "find_bookings", "{}")
        .await;
    assert_eq!(found["bookings"][0]["booking_id"], code, "{found}");
}

#[tokio::test]
async fn sqlite_booking_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let url = format!("sqlite://{}", db.display());
    let code = tokio::task::spawn_blocking({
        let url = url.clone();
        move || book_in_child_then_kill(&url)
    })
    .await
    .unwrap();
    // The killed process never checkpointed: the booking is in the write-ahead log, which the
    // next open replays.
    let wal = std::fs::metadata(dir.path().join("relay.db-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(
        wal > 0,
        "expected the booking to be in the WAL file after kill -9"
    );
    assert_booking_survived(&url, &code).await;
}

#[tokio::test]
async fn postgres_booking_survives_kill_9() {
    let pg = support::postgres::shared();
    let url = pg.create_database().await;
    let code = tokio::task::spawn_blocking({
        let url = url.clone();
        move || book_in_child_then_kill(&url)
    })
    .await
    .unwrap();
    assert_booking_survived(&url, &code).await;
}
