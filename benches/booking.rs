//! Latency of the booking tools with 10,000 bookings in the table, on SQLite and PostgreSQL.
//!
//! `cargo bench --bench booking` prints p50/p99/mean of `check_availability` (a 7-day range),
//! `create_booking` (a free slot: one durable insert) and `create_booking` on a taken slot (the
//! refusal with the nearest free times), each through `Tools::call` as the bridge calls it.
//! PostgreSQL is a fresh local server started by the bench with fsync on; SQLite is a file in a
//! temporary folder in WAL mode with `synchronous = FULL`.
//! `VOXRELAY_BENCH_SAMPLES` sets the samples per figure (default 1000);
//! `VOXRELAY_BENCH_BACKENDS=sqlite` (or `postgres`) runs one backend only.

#[path = "../tests/support/postgres.rs"]
mod postgres;

use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use serde_json::json;
use voxrelay::booking::{BookingConfig, FixedClock, NewBooking, Store, Tools, WeeklyHours};

const SEEDED: usize = 10_000;
const SLOT_MINUTES: u32 = 5;
const SLOTS_PER_DAY: usize = 24 * 60 / SLOT_MINUTES as usize;

fn main() {
    // `cargo test --benches` runs this without `--bench`: nothing to measure then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("booking bench: run with `cargo bench --bench booking`");
        return;
    }
    let samples: usize = std::env::var("VOXRELAY_BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let backends =
        std::env::var("VOXRELAY_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!("booking tools, {SEEDED} bookings in the table, {samples} samples each, one caller at a time");
    println!(
        "{:<10} {:<36} {:>9} {:>9} {:>9}",
        "backend", "operation", "p50 ms", "p99 ms", "mean ms"
    );
    if backends.contains("sqlite") {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        rt.block_on(run("sqlite", &url, samples));
    }
    if backends.contains("postgres") {
        let pg = postgres::PgServer::start_with(postgres::PgOptions { fsync: true });
        let url = rt.block_on(pg.create_database());
        rt.block_on(run("postgres", &url, samples));
    }
}

fn start_day() -> NaiveDate {
    "2026-11-25".parse().unwrap()
}

fn slot_time(i: usize) -> NaiveTime {
    let m = (i % SLOTS_PER_DAY) as u32 * SLOT_MINUTES;
    NaiveTime::from_hms_opt(m / 60, m % 60, 0).unwrap()
}

async fn run(backend: &str, url: &str, samples: usize) {
    let config = BookingConfig {
        database_url: url.into(),
        time_zone: "UTC".into(),
        slot_minutes: SLOT_MINUTES,
        hours: WeeklyHours::every_day(&["00:00-24:00"]),
        max_days_ahead: 365,
        ..BookingConfig::default()
    };
    let now: DateTime<Utc> = "2026-11-24T08:00:00Z".parse().unwrap();
    let store = Store::open(url, 8).await.unwrap();
    // Every other slot, from tomorrow on: 10,000 bookings over 70 days, the odd slots free.
    let days_seeded = SEEDED.div_ceil(SLOTS_PER_DAY / 2);
    let seed: Vec<(String, NewBooking)> = (0..SEEDED)
        .map(|i| {
            let day = i / (SLOTS_PER_DAY / 2);
            let slot = (i % (SLOTS_PER_DAY / 2)) * 2;
            (
                format!("S{i:05}"),
                NewBooking {
                    patient_name: format!("Seeded Patient {i}"),
                    phone: format!("+1201555{:04}", i % 10_000),
                    date: start_day() + Duration::days(day as i64),
                    time: slot_time(slot),
                },
            )
        })
        .collect();
    for chunk in seed.chunks(1000) {
        store.insert_bookings_bulk(chunk, now).await.unwrap();
    }
    let tools = Tools::new(store, &config, Arc::new(FixedClock::new(now))).unwrap();

    let mut avail = Vec::with_capacity(samples);
    for i in 0..samples + 20 {
        let from = start_day() + Duration::days((i % (days_seeded - 7)) as i64);
        let args = json!({"start_date": from.to_string(), "end_date": (from + Duration::days(6)).to_string()}).to_string();
        let t = Instant::now();
        let out = tools.call("check_availability", &args).await;
        let dt = t.elapsed();
        assert!(out["error"].is_null(), "{out}");
        if i >= 20 {
            avail.push(dt);
        }
    }
    report(backend, "check_availability (7 days)", &mut avail);

    let mut create = Vec::with_capacity(samples);
    for i in 0..samples {
        // The odd slots are free.
        let day = i / (SLOTS_PER_DAY / 2);
        let slot = (i % (SLOTS_PER_DAY / 2)) * 2 + 1;
        let date = start_day() + Duration::days(day as i64);
        let args = json!({"patient_name": "Bench Caller", "phone": "+1 201 555 0100", "date": date.to_string(),
            "time": slot_time(slot).format("%H:%M").to_string()})
        .to_string();
        let t = Instant::now();
        let out = tools.call("create_booking", &args).await;
        let dt = t.elapsed();
        assert_eq!(out["booked"], true, "{out}");
        create.push(dt);
    }
    report(backend, "create_booking (free slot)", &mut create);

    let mut taken = Vec::with_capacity(samples);
    for i in 0..samples {
        let day = 20 + i % 40;
        let date = start_day() + Duration::days(day as i64);
        let args = json!({"patient_name": "Bench Caller", "phone": "+1 201 555 0199", "date": date.to_string(),
            "time": slot_time((i * 2) % SLOTS_PER_DAY).format("%H:%M").to_string()})
        .to_string();
        let t = Instant::now();
        let out = tools.call("create_booking", &args).await;
        let dt = t.elapsed();
        assert_eq!(out["error"], true, "{out}");
        taken.push(dt);
    }
    report(backend, "create_booking (taken slot, refused)", &mut taken);
    tools.store().close().await;
}

fn report(backend: &str, op: &str, d: &mut [StdDuration]) {
    d.sort();
    let ms = |x: StdDuration| x.as_secs_f64() * 1e3;
    let pct = |p: f64| ms(d[((d.len() as f64 * p).ceil() as usize).clamp(1, d.len()) - 1]);
    let mean = d.iter().map(|x| ms(*x)).sum::<f64>() / d.len() as f64;
    println!(
        "{backend:<10} {op:<36} {:>9.3} {:>9.3} {:>9.3}",
        pct(0.50),
        pct(0.99),
        mean
    );
}
