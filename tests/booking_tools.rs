//! The booking tools against a real database: every test runs on SQLite (a file, WAL) and on
//! a PostgreSQL server the test run starts itself.

mod support;

use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::{json, Value};
use tokio::sync::Barrier;
use voxrelay::booking::{
    Backend, BookingConfig, CallRecord, FixedClock, RecordingRef, Status, Store, Tools, TOOL_NAMES,
};

/// Tuesday 24 November 2026, 09:10 in Berlin.
const NOW: &str = "2026-11-24T08:10:00Z";

struct Env {
    tools: Tools,
    clock: Arc<FixedClock>,
    url: String,
    _pg: Option<Arc<support::postgres::PgServer>>,
    _dir: Option<tempfile::TempDir>,
}

fn config(url: &str) -> BookingConfig {
    BookingConfig {
        database_url: url.to_string(),
        time_zone: "Europe/Berlin".into(),
        closed_dates: vec!["2026-12-24".parse().unwrap()],
        default_region: "US".into(),
        ..BookingConfig::default()
    }
}

async fn env(backend: Backend) -> Env {
    let (url, pg, dir) = match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("bookings.db").display());
            (url, None, Some(dir))
        }
        Backend::Postgres => {
            let pg = support::postgres::shared();
            let url = pg.create_database().await;
            (url, Some(pg), None)
        }
    };
    let store = Store::open(&url, 8).await.expect("open store");
    assert_eq!(store.backend(), backend);
    let clock = Arc::new(FixedClock::new(NOW.parse::<DateTime<Utc>>().unwrap()));
    let tools = Tools::new(store, &config(&url), clock.clone()).unwrap();
    Env {
        tools,
        clock,
        url,
        _pg: pg,
        _dir: dir,
    }
}

fn args(v: Value) -> String {
    v.to_string()
}

fn book(name: &str, phone: &str, date: &str, time: &str) -> String {
    args(json!({"patient_name": name, "phone": phone, "date": date, "time": time}))
}

/// Asserts an error the model can read aloud and returns its message.
#[track_caller]
fn spoken_error(v: &Value) -> String {
    assert_eq!(v["error"], json!(true), "expected an error, got {v}");
    let msg = v["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message in {v}"))
        .to_string();
    assert!(
        msg.len() > 10 && msg.ends_with('.'),
        "not a sentence: {msg:?}"
    );
    msg
}

fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(voxrelay::booking::Backend::Sqlite).await
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(voxrelay::booking::Backend::Postgres).await
                }
            )*
        }
    };
}

on_both_backends!(
    book_find_and_cancel,
    bad_arguments_come_back_as_spoken_errors,
    names_are_cleaned_and_phones_normalised,
    taken_slot_offers_the_nearest_free_ones,
    same_caller_asking_again_gets_the_same_booking,
    availability_leaves_out_taken_and_past_slots,
    cancel_refusals,
    fifty_concurrent_bookings_of_one_slot_from_two_relays_make_one,
    database_fault_is_a_spoken_error,
    bookings_of_a_day_for_the_admin_api,
    call_records_round_trip,
    reopening_keeps_everything,
    callers_reach_only_their_own_bookings,
    old_call_records_are_pruned,
    webhook_deliveries_are_due_listed_updated_and_pruned,
    reminders_are_planned_once_claimed_by_one_relay_and_released,
);

#[test]
fn the_four_tools_have_function_schemas() {
    let defs = Tools::definitions();
    let names: Vec<&str> = defs.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, TOOL_NAMES);
    for d in &defs {
        assert_eq!(d["type"], "function");
        assert!(d["description"].as_str().is_some_and(|s| !s.is_empty()));
        let p = &d["parameters"];
        assert_eq!(p["type"], "object");
        assert_eq!(p["additionalProperties"], false);
        let props = p["properties"].as_object().unwrap();
        for r in p["required"].as_array().unwrap() {
            let prop = &props[r.as_str().unwrap()];
            assert_eq!(prop["type"], "string", "{r} in {}", d["name"]);
            assert!(prop["description"].is_string());
        }
    }
    let req = |i: usize| defs[i]["parameters"]["required"].clone();
    assert_eq!(req(0), json!(["start_date", "end_date"]));
    assert_eq!(req(1), json!(["patient_name", "phone", "date", "time"]));
    assert_eq!(req(2), json!(["booking_id"]));
    // find_bookings: the phone may be left out when the caller's number is known
    assert_eq!(req(3), json!([]));
    assert_eq!(
        defs[2]["parameters"]["properties"]["phone"]["type"], "string",
        "cancel_booking takes the number it was booked with"
    );
}

async fn book_find_and_cancel(b: Backend) {
    let e = env(b).await;
    let out = e
        .tools
        .call(
            "create_booking",
            &book("Ada Lovelace", "(201) 555-0123", "2026-11-25", "10:30"),
        )
        .await;
    assert_eq!(out["booked"], true, "{out}");
    let id = out["booking_id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 6);
    assert_eq!(out["confirmation_code"], id.as_str());
    assert_eq!(
        out["confirmation_code_spoken"]
            .as_str()
            .unwrap()
            .replace(' ', ""),
        id
    );
    assert_eq!(out["phone"], "+12015550123");
    assert_eq!(out["date"], "2026-11-25");
    assert_eq!(out["time"], "10:30");
    assert!(out["message"]
        .as_str()
        .unwrap()
        .contains("Wednesday 25 November 2026 at 10:30"));

    // Found by the same number said another way, on the line of that number.
    let me = e.tools.caller(Some("2015550123"));
    let found = e
        .tools
        .call_as(
            &me,
            "find_bookings",
            &args(json!({"phone": "+1 201 555 0123"})),
        )
        .await;
    assert_eq!(found["bookings"].as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found["bookings"][0]["booking_id"], id.as_str());
    assert_eq!(found["bookings"][0]["time"], "10:30");

    // Cancelled by the code as the model may have heard it.
    let spaced = id
        .chars()
        .map(|c| c.to_ascii_lowercase().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let cancelled = e
        .tools
        .call_as(&me, "cancel_booking", &args(json!({"booking_id": spaced})))
        .await;
    assert_eq!(cancelled["cancelled"], true, "{cancelled}");
    assert_eq!(cancelled["booking_id"], id.as_str());
    let found = e.tools.call_as(&me, "find_bookings", "{}").await;
    assert!(found["bookings"].as_array().unwrap().is_empty());
    assert!(found["message"]
        .as_str()
        .unwrap()
        .contains("no upcoming appointments"));

    // The slot is free again and can be booked by someone else.
    let again = e
        .tools
        .call(
            "create_booking",
            &book("Grace Hopper", "201-555-0188", "2026-11-25", "10:30"),
        )
        .await;
    assert_eq!(again["booked"], true, "{again}");
    assert_ne!(again["booking_id"], id.as_str());
}

async fn bad_arguments_come_back_as_spoken_errors(b: Backend) {
    let e = env(b).await;
    let t = &e.tools;
    let ok = |d: &str, tm: &str| book("Ada Lovelace", "2015550123", d, tm);
    let cases: Vec<(&str, String, &str)> = vec![
        ("create_booking", "{not json".into(), "not valid JSON"),
        ("create_booking", "[1,2]".into(), "JSON object"),
        ("create_booking", "".into(), "patient_name"),
        ("book_table", "{}".into(), "no tool called"),
        (
            "create_booking",
            args(json!({"patient_name": "Ada", "phone": "2015550123", "date": "2026-11-25"})),
            "time",
        ),
        (
            "create_booking",
            args(
                json!({"patient_name": ["Ada"], "phone": "2015550123", "date": "2026-11-25", "time": "10:00"}),
            ),
            "must be text",
        ),
        ("create_booking", ok("2026-11-23", "10:00"), "in the past"),
        ("create_booking", ok("2026-11-24", "09:00"), "in the past"),
        (
            "create_booking",
            ok("2026-11-28", "10:00"),
            "closed on Saturday",
        ),
        (
            "create_booking",
            ok("2026-12-24", "10:00"),
            "closed on Thursday 24 December",
        ),
        (
            "create_booking",
            ok("2026-11-25", "12:30"),
            "outside opening hours",
        ),
        (
            "create_booking",
            ok("2026-11-25", "07:00"),
            "outside opening hours",
        ),
        (
            "create_booking",
            ok("2026-11-25", "10:15"),
            "every 30 minutes",
        ),
        ("create_booking", ok("2027-06-01", "10:00"), "too far ahead"),
        ("create_booking", ok("25/11/2026", "10:00"), "YYYY-MM-DD"),
        ("create_booking", ok("2026-02-30", "10:00"), "YYYY-MM-DD"),
        ("create_booking", ok("2026-11-25", "half past ten"), "HH:MM"),
        ("create_booking", ok("2026-11-25", "25:00"), "HH:MM"),
        (
            "create_booking",
            book("Ada", "12", "2026-11-25", "10:00"),
            "phone number",
        ),
        (
            "create_booking",
            book("Ada", "call me", "2026-11-25", "10:00"),
            "phone number",
        ),
        (
            "create_booking",
            book("", "2015550123", "2026-11-25", "10:00"),
            "name is missing",
        ),
        (
            "create_booking",
            book("\u{0}\u{7} \t", "2015550123", "2026-11-25", "10:00"),
            "name is missing",
        ),
        (
            "create_booking",
            book(&"x".repeat(101), "2015550123", "2026-11-25", "10:00"),
            "at most 100",
        ),
        (
            "check_availability",
            args(json!({"start_date": "2026-11-24", "end_date": "2026-12-25"})),
            "at most 31 days",
        ),
        (
            "check_availability",
            args(json!({"start_date": "2026-11-20", "end_date": "2026-11-26"})),
            "in the past",
        ),
        (
            "check_availability",
            args(json!({"start_date": "2026-11-26", "end_date": "2026-11-25"})),
            "before the start date",
        ),
        (
            "check_availability",
            args(json!({"start_date": "2026-11-26"})),
            "end_date",
        ),
        (
            "cancel_booking",
            args(json!({"booking_id": "hello"})),
            "not a booking id",
        ),
        ("cancel_booking", args(json!({})), "booking_id"),
        (
            "find_bookings",
            args(json!({"phone": "+999 1"})),
            "phone number",
        ),
        ("find_bookings", "x".repeat(20_000), "too long"),
    ];
    for (tool, arguments, expect) in cases {
        let out = t.call(tool, &arguments).await;
        let msg = spoken_error(&out);
        assert!(
            msg.contains(expect),
            "{tool} {arguments:.80}: {msg:?} lacks {expect:?}"
        );
    }
    // Schedule refusals say what today is, so the model can correct a wrong year.
    let out = t.call("create_booking", &ok("2025-11-25", "10:00")).await;
    assert_eq!(out["today"], "2026-11-24");
    // Nothing was booked along the way.
    assert!(t
        .store()
        .bookings_on(date("2026-11-25"))
        .await
        .unwrap()
        .is_empty());
}

async fn names_are_cleaned_and_phones_normalised(b: Backend) {
    let e = env(b).await;
    let out = e
        .tools
        .call(
            "create_booking",
            &book(
                "  Zoë\u{0}  \u{202E}Ångström\u{1b}\n",
                "+44 20 7946 0018",
                "2026-11-26",
                "13:00",
            ),
        )
        .await;
    assert_eq!(out["booked"], true, "{out}");
    let stored = e
        .tools
        .store()
        .bookings_on(date("2026-11-26"))
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].patient_name, "Zoë Ångström");
    assert_eq!(stored[0].phone, "+442079460018");
    assert_eq!(stored[0].time.to_string(), "13:00:00");
    // A phone number sent as a JSON number is read as its digits.
    let out = e
        .tools
        .call(
            "create_booking",
            &book("Ada", "201.555.0147", "2026-11-26", "13:30"),
        )
        .await;
    assert_eq!(out["phone"], "+12015550147", "{out}");
    let found = e
        .tools
        .call_as(
            &e.tools.caller(Some("+12015550147")),
            "find_bookings",
            r#"{"phone": 2015550147}"#,
        )
        .await;
    assert_eq!(found["phone"], "+12015550147", "{found}");
    assert_eq!(found["bookings"][0]["booking_id"], out["booking_id"]);
    // Without a country code a number is taken as the default region's (US here).
    let msg = spoken_error(
        &e.tools
            .call("find_bookings", r#"{"phone": 442079460018}"#)
            .await,
    );
    assert!(msg.contains("phone number"), "{msg}");
}

async fn taken_slot_offers_the_nearest_free_ones(b: Backend) {
    let e = env(b).await;
    for (i, tm) in ["10:00", "10:30", "11:00"].iter().enumerate() {
        let out = e
            .tools
            .call(
                "create_booking",
                &book("Patient", &format!("201555010{i}"), "2026-11-25", tm),
            )
            .await;
        assert_eq!(out["booked"], true, "{out}");
    }
    let out = e
        .tools
        .call(
            "create_booking",
            &book("Late Comer", "2015550199", "2026-11-25", "10:30"),
        )
        .await;
    let msg = spoken_error(&out);
    assert!(msg.contains("already taken"), "{msg}");
    assert_eq!(
        out["nearest_free"],
        json!([
            {"date": "2026-11-25", "time": "09:00"},
            {"date": "2026-11-25", "time": "09:30"},
            {"date": "2026-11-25", "time": "11:30"},
        ]),
        "{out}"
    );
    assert!(msg.contains("Wednesday 25 November 2026 at 09:30"), "{msg}");
}

async fn same_caller_asking_again_gets_the_same_booking(b: Backend) {
    let e = env(b).await;
    let first = e
        .tools
        .call(
            "create_booking",
            &book("Åsa Öberg", "2015550123", "2026-11-27", "14:00"),
        )
        .await;
    let again = e
        .tools
        .call(
            "create_booking",
            &book("åsa öberg", "+12015550123", "2026-11-27", "14:00"),
        )
        .await;
    assert_eq!(again["booked"], true, "{again}");
    assert_eq!(again["already_booked"], true);
    assert_eq!(again["booking_id"], first["booking_id"]);
    // Someone else on the same phone (a parent booking for a child) does not get that slot.
    let other = e
        .tools
        .call(
            "create_booking",
            &book("Ola Öberg", "2015550123", "2026-11-27", "14:00"),
        )
        .await;
    assert!(spoken_error(&other).contains("already taken"));
    assert_eq!(
        e.tools
            .store()
            .bookings_on(date("2026-11-27"))
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn availability_leaves_out_taken_and_past_slots(b: Backend) {
    let e = env(b).await;
    let out = e
        .tools
        .call(
            "create_booking",
            &book("Ada", "2015550123", "2026-11-24", "09:30"),
        )
        .await;
    assert_eq!(out["booked"], true, "{out}");
    let out = e
        .tools
        .call(
            "check_availability",
            &args(json!({"start_date": "2026-11-24", "end_date": "2026-11-30"})),
        )
        .await;
    assert!(out["error"].is_null(), "{out}");
    assert_eq!(out["today"], "2026-11-24");
    assert_eq!(out["time_zone"], "Europe/Berlin");
    let days = out["days"].as_array().unwrap();
    // Tue to Fri, and Mon 30; the weekend is closed and not listed.
    let listed: Vec<&str> = days.iter().map(|d| d["date"].as_str().unwrap()).collect();
    assert_eq!(
        listed,
        [
            "2026-11-24",
            "2026-11-25",
            "2026-11-26",
            "2026-11-27",
            "2026-11-30"
        ]
    );
    let today: Vec<&str> = days[0]["free"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // 09:00 has passed (it is 09:10) and 09:30 is taken.
    assert_eq!(today.first(), Some(&"10:00"));
    assert_eq!(today.len(), 12);
    assert_eq!(days[1]["free"].as_array().unwrap().len(), 14);
    assert_eq!(out["free_count"], 12 + 14 * 4);

    // An hour later 10:00 has gone too.
    e.clock.advance(Duration::hours(1));
    let out = e
        .tools
        .call(
            "check_availability",
            &args(json!({"start_date": "2026-11-24", "end_date": "2026-11-24"})),
        )
        .await;
    assert_eq!(out["days"][0]["free"][0], "10:30");

    // Asking past the horizon gives what can be booked and says so.
    let out = e
        .tools
        .call(
            "check_availability",
            &args(json!({"start_date": "2027-02-15", "end_date": "2027-03-01"})),
        )
        .await;
    assert_eq!(out["end_date"], "2027-02-22", "{out}");
    assert!(out["message"]
        .as_str()
        .unwrap()
        .contains("only be booked up to"));
}

async fn cancel_refusals(b: Backend) {
    let e = env(b).await;
    let msg = spoken_error(
        &e.tools
            .call(
                "cancel_booking",
                r#"{"booking_id":"KTH472","phone":"2015550123"}"#,
            )
            .await,
    );
    assert!(msg.contains("no booking with the id K T H 4 7 2"), "{msg}");
    let out = e
        .tools
        .call(
            "create_booking",
            &book("Ada", "2015550123", "2026-11-24", "11:00"),
        )
        .await;
    let id = out["booking_id"].as_str().unwrap().to_string();
    let cancel = args(json!({"booking_id": id, "phone": "(201) 555-0123"}));
    assert_eq!(
        e.tools.call("cancel_booking", &cancel).await["cancelled"],
        true
    );
    let msg = spoken_error(&e.tools.call("cancel_booking", &cancel).await);
    assert!(msg.contains("already cancelled"), "{msg}");

    let out = e
        .tools
        .call(
            "create_booking",
            &book("Ada", "2015550123", "2026-11-24", "11:30"),
        )
        .await;
    let id = out["booking_id"].as_str().unwrap().to_string();
    e.clock.advance(Duration::hours(3)); // 12:10 in Berlin: the appointment is over
    let msg = spoken_error(
        &e.tools
            .call(
                "cancel_booking",
                &args(json!({"booking_id": id, "phone": "2015550123"})),
            )
            .await,
    );
    assert!(msg.contains("already passed"), "{msg}");
    let b = e.tools.store().booking_by_code(&id).await.unwrap().unwrap();
    assert_eq!(b.status, Status::Active);
}

async fn fifty_concurrent_bookings_of_one_slot_from_two_relays_make_one(b: Backend) {
    let e = env(b).await;
    let barrier = Arc::new(Barrier::new(50));
    let mut tasks = Vec::new();
    // Two relays: the second has its own connection pool to the same database.
    let other = Store::open(&e.url, 8).await.unwrap();
    let other = Tools::new(other, &config(&e.url), e.clock.clone()).unwrap();
    for i in 0..50 {
        let tools = if i % 2 == 0 {
            e.tools.clone()
        } else {
            other.clone()
        };
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            tools
                .call(
                    "create_booking",
                    &book(
                        &format!("Caller {i}"),
                        &format!("20155501{i:02}"),
                        "2026-11-25",
                        "15:00",
                    ),
                )
                .await
        }));
    }
    let mut booked = 0;
    let mut taken = 0;
    for t in tasks {
        let out = t.await.unwrap();
        if out["booked"] == true {
            booked += 1;
        } else {
            let msg = spoken_error(&out);
            assert!(msg.contains("already taken"), "{msg}");
            taken += 1;
        }
    }
    assert_eq!((booked, taken), (1, 49));
    let rows = e
        .tools
        .store()
        .bookings_on(date("2026-11-25"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].status, Status::Active);
}

async fn database_fault_is_a_spoken_error(b: Backend) {
    let e = env(b).await;
    e.tools.store().close().await;
    for (tool, a) in [
        (
            "create_booking",
            book("Ada", "2015550123", "2026-11-25", "10:00"),
        ),
        (
            "check_availability",
            args(json!({"start_date": "2026-11-25", "end_date": "2026-11-26"})),
        ),
        (
            "cancel_booking",
            args(json!({"booking_id": "KTH472", "phone": "2015550123"})),
        ),
        ("find_bookings", args(json!({"phone": "2015550123"}))),
    ] {
        let msg = spoken_error(&e.tools.call(tool, &a).await);
        assert!(msg.contains("not answering"), "{tool}: {msg}");
    }
}

async fn bookings_of_a_day_for_the_admin_api(b: Backend) {
    let e = env(b).await;
    for (tm, phone) in [
        ("16:00", "2015550101"),
        ("09:30", "2015550102"),
        ("13:00", "2015550103"),
    ] {
        let out = e
            .tools
            .call("create_booking", &book("P", phone, "2026-11-30", tm))
            .await;
        assert_eq!(out["booked"], true, "{out}");
    }
    let id = e
        .tools
        .call(
            "create_booking",
            &book("Q", "2015550104", "2026-12-01", "09:00"),
        )
        .await["booking_id"]
        .clone();
    let cancel_me = e
        .tools
        .store()
        .bookings_on(date("2026-11-30"))
        .await
        .unwrap()[1]
        .clone();
    let out = e
        .tools
        .call(
            "cancel_booking",
            &args(json!({"booking_id": cancel_me.code, "phone": cancel_me.phone})),
        )
        .await;
    assert_eq!(out["cancelled"], true, "{out}");

    let day = e
        .tools
        .store()
        .bookings_on(date("2026-11-30"))
        .await
        .unwrap();
    let times: Vec<String> = day
        .iter()
        .map(|b| b.time.format("%H:%M").to_string())
        .collect();
    assert_eq!(times, ["09:30", "13:00", "16:00"]);
    assert_eq!(day[1].status, Status::Cancelled);
    assert!(day[1].cancelled_at.is_some());
    assert_eq!(day.iter().filter(|b| b.status == Status::Active).count(), 2);
    let json = serde_json::to_value(&day[0]).unwrap();
    assert_eq!(json["status"], "active");
    assert_eq!(json["date"], "2026-11-30");
    let next = e
        .tools
        .store()
        .bookings_on(date("2026-12-01"))
        .await
        .unwrap();
    assert_eq!(json!(next[0].code), id);
    assert!(e
        .tools
        .store()
        .bookings_on(date("2026-12-02"))
        .await
        .unwrap()
        .is_empty());
}

async fn call_records_round_trip(b: Backend) {
    let e = env(b).await;
    let store = e.tools.store();
    let t0: DateTime<Utc> = NOW.parse().unwrap();
    let rec = |id: &str, start: DateTime<Utc>| CallRecord {
        id: id.into(),
        caller: "+12015550123".into(),
        callee: "+15551230000".into(),
        agent: "receptionist".into(),
        kind: Default::default(),
        started_at: start,
        answered_at: Some(start + Duration::milliseconds(1500)),
        ended_at: Some(start + Duration::seconds(95)),
        outcome: "caller_hangup".into(),
        transcript: json!([{"role": "assistant", "text": "Good morning, ünïcode clinic."}, {"role": "user", "text": "I'd like an appointment."}]),
        tool_calls: json!([{"name": "check_availability", "arguments": {"start_date": "2026-11-25"}, "output": {"free_count": 3}}]),
        recording: None,
        node: None,
        answered_by: None,
    };
    let a = rec("call-a", t0);
    let b2 = rec("call-b", t0 + Duration::minutes(5));
    let mut c = rec("call-c", t0 - Duration::minutes(5));
    c.answered_at = None;
    c.ended_at = None;
    c.outcome = "rejected".into();
    c.transcript = json!([]);
    // a placed call that reached a voicemail keeps who answered
    let mut b2 = b2;
    b2.answered_by = Some("machine".into());
    for r in [&a, &b2, &c] {
        store.insert_call(r).await.unwrap();
    }
    assert_eq!(store.get_call("call-a").await.unwrap().as_ref(), Some(&a));
    assert_eq!(store.get_call("call-b").await.unwrap().as_ref(), Some(&b2));
    assert_eq!(store.get_call("call-c").await.unwrap().as_ref(), Some(&c));
    // a recorded call: where its file is, how big and long; retention marks it deleted
    let mut r = rec("call-r", t0 - Duration::days(40));
    r.recording = Some(RecordingRef {
        path: "/var/lib/voxrelay/recordings/call-r.wav".into(),
        bytes: 3_200_044,
        duration_ms: 100_000,
        offset_ms: 40,
        deleted_at: None,
    });
    store.insert_call(&r).await.unwrap();
    assert_eq!(store.get_call("call-r").await.unwrap().as_ref(), Some(&r));
    let old = store
        .recordings_before(t0 - Duration::days(30))
        .await
        .unwrap();
    assert_eq!(
        old,
        [(
            "call-r".to_string(),
            "/var/lib/voxrelay/recordings/call-r.wav".to_string()
        )]
    );
    store.mark_recording_deleted("call-r", t0).await.unwrap();
    let got = store
        .get_call("call-r")
        .await
        .unwrap()
        .unwrap()
        .recording
        .unwrap();
    assert_eq!(got.deleted_at, Some(t0));
    assert!(store.recordings_before(t0).await.unwrap().is_empty());
    store.prune_calls(t0 - Duration::days(30)).await.unwrap();
    assert_eq!(store.get_call("nope").await.unwrap(), None);
    let ids: Vec<String> = store
        .list_calls(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["call-b", "call-a", "call-c"]);
    assert_eq!(store.list_calls(1).await.unwrap().len(), 1);
    // Writing a record again replaces it.
    let mut a2 = a.clone();
    a2.outcome = "completed".into();
    store.insert_call(&a2).await.unwrap();
    assert_eq!(
        store.get_call("call-a").await.unwrap().unwrap().outcome,
        "completed"
    );
    assert_eq!(store.list_calls(10).await.unwrap().len(), 3);
}

async fn reopening_keeps_everything(b: Backend) {
    let e = env(b).await;
    let out = e
        .tools
        .call(
            "create_booking",
            &book("Ada", "2015550123", "2026-11-25", "09:00"),
        )
        .await;
    let id = out["booking_id"].as_str().unwrap().to_string();
    e.tools.store().close().await;
    // A second start runs the migrations again: nothing to do, nothing lost.
    let store = Store::open(&e.url, 2).await.unwrap();
    let found = store
        .booking_by_code(&id)
        .await
        .unwrap()
        .expect("booking after reopen");
    assert_eq!(found.patient_name, "Ada");
    if b == Backend::Sqlite {
        assert_eq!(
            store.sqlite_durability().await.unwrap(),
            Some(("wal".to_string(), 2))
        );
    }
}

#[tokio::test]
async fn unsupported_urls_are_refused_with_the_key_and_no_password() {
    let err = Store::open("mysql://root:hunter2@localhost/db", 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("booking.database_url"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[tokio::test]
async fn in_memory_sqlite_keeps_one_database() {
    // Each connection to :memory: would be its own empty database; the store keeps to one.
    let url = "sqlite::memory:";
    let store = Store::open(url, 8).await.unwrap();
    let clock = Arc::new(FixedClock::new(NOW.parse::<DateTime<Utc>>().unwrap()));
    let tools = Tools::new(store, &config(url), clock).unwrap();
    let mut ids = Vec::new();
    for tm in ["09:00", "09:30", "10:00"] {
        let out = tools
            .call(
                "create_booking",
                &book("Ada", "2015550123", "2026-11-25", tm),
            )
            .await;
        ids.push(out["booking_id"].clone());
    }
    let found = tools
        .call_as(
            &tools.caller(Some("2015550123")),
            "find_bookings",
            r#"{"phone":"2015550123"}"#,
        )
        .await;
    let got: Vec<Value> = found["bookings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["booking_id"].clone())
        .collect();
    assert_eq!(got, ids);
}

#[test]
fn missing_postgres_binaries_fail_with_a_clear_message() {
    use support::postgres::find_bindir;
    let empty = tempfile::tempdir().unwrap();
    let err = find_bindir(None, empty.path()).unwrap_err();
    assert!(
        err.contains("PostgreSQL server binaries not found")
            && err.contains("apt-get install postgresql"),
        "{err}"
    );
    let err = find_bindir(Some(empty.path().to_path_buf()), empty.path()).unwrap_err();
    assert!(err.contains("VOXRELAY_PG_BINDIR"), "{err}");
    // A folder laid out like Debian's is found, the newest version first.
    for v in ["13", "15"] {
        let bin = empty.path().join(v).join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("initdb"), "").unwrap();
        std::fs::write(bin.join("pg_ctl"), "").unwrap();
    }
    assert_eq!(
        find_bindir(None, empty.path()).unwrap(),
        empty.path().join("15/bin")
    );
}

async fn callers_reach_only_their_own_bookings(b: Backend) {
    let e = env(b).await;
    let code = |v: Value| v["booking_id"].as_str().unwrap().to_string();
    let ada = code(
        e.tools
            .call(
                "create_booking",
                &book("Ada Lovelace", "2015550123", "2026-11-25", "10:00"),
            )
            .await,
    );
    let grace = code(
        e.tools
            .call(
                "create_booking",
                &book("Grace Hopper", "2015550199", "2026-11-25", "10:30"),
            )
            .await,
    );
    let still_active = |code: String| {
        let store = e.tools.store().clone();
        async move {
            let b = store.booking_by_code(&code).await.unwrap().unwrap();
            b.status == Status::Active
        }
    };

    // A caller whose number the trunk asserted: another number is refused, without a name.
    let me = e.tools.caller(Some("+1 201 555 0123"));
    let out = e
        .tools
        .call_as(&me, "find_bookings", r#"{"phone":"201 555 0199"}"#)
        .await;
    let msg = spoken_error(&out);
    assert!(!out.to_string().contains("Grace") && !out.to_string().contains(&grace));
    assert!(msg.contains("calling from"), "{msg}");
    // Their own, with names and codes, with or without the phone argument.
    for a in ["{}", r#"{"phone":"2015550123"}"#] {
        let out = e.tools.call_as(&me, "find_bookings", a).await;
        assert_eq!(out["verified_caller"], true, "{out}");
        assert_eq!(out["bookings"].as_array().unwrap().len(), 1, "{out}");
        assert_eq!(out["bookings"][0]["booking_id"], ada.as_str());
        assert_eq!(out["bookings"][0]["patient_name"], "Ada Lovelace");
    }
    // Another number's code cannot be cancelled, whatever number the model adds.
    for a in [
        json!({"booking_id": grace}),
        json!({"booking_id": grace, "phone": "2015550199"}),
    ] {
        let out = e.tools.call_as(&me, "cancel_booking", &args(a)).await;
        let msg = spoken_error(&out);
        assert!(msg.contains("There is no booking with the id"), "{msg}");
        assert!(!out.to_string().contains("Grace"), "{out}");
    }
    assert!(still_active(grace.clone()).await);

    // A line without a verified number: dates and times only.
    let out = e
        .tools
        .call("find_bookings", r#"{"phone":"2015550199"}"#)
        .await;
    assert_eq!(out["verified_caller"], false, "{out}");
    assert_eq!(out["bookings"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(out["bookings"][0]["time"], "10:30");
    let text = out.to_string();
    assert!(
        !text.contains("Grace") && !text.contains(&grace),
        "name or code given out: {text}"
    );
    // Cancelling needs the number the booking was made with; a wrong one finds nothing.
    let msg = spoken_error(
        &e.tools
            .call("cancel_booking", &args(json!({"booking_id": grace})))
            .await,
    );
    assert!(msg.contains("phone number"), "{msg}");
    let msg = spoken_error(
        &e.tools
            .call(
                "cancel_booking",
                &args(json!({"booking_id": grace, "phone": "2015550123"})),
            )
            .await,
    );
    assert!(msg.contains("There is no booking with the id"), "{msg}");
    assert!(still_active(grace.clone()).await);
    // The code with its number cancels, and still does not say whose it was.
    let out = e
        .tools
        .call(
            "cancel_booking",
            &args(json!({"booking_id": grace, "phone": "+1 (201) 555-0199"})),
        )
        .await;
    assert_eq!(out["cancelled"], true, "{out}");
    assert!(!out.to_string().contains("Grace"), "{out}");
    assert!(!still_active(grace).await);
    // The verified caller cancels their own and hears the name they booked under.
    let out = e
        .tools
        .call_as(&me, "cancel_booking", &args(json!({"booking_id": ada})))
        .await;
    assert_eq!(out["cancelled"], true, "{out}");
    assert_eq!(out["patient_name"], "Ada Lovelace");
}

async fn old_call_records_are_pruned(b: Backend) {
    let e = env(b).await;
    let store = e.tools.store();
    let now: DateTime<Utc> = NOW.parse().unwrap();
    for (id, age) in [("old", 91), ("edge", 90), ("new", 3)] {
        let at = now - Duration::days(age) + Duration::seconds(if age == 90 { 1 } else { 0 });
        store
            .insert_call(&CallRecord {
                id: id.into(),
                caller: "sip:+12015550123@trunk".into(),
                callee: "sip:100@relay".into(),
                agent: "receptionist".into(),
                kind: Default::default(),
                started_at: at,
                answered_at: Some(at),
                ended_at: Some(at + Duration::seconds(60)),
                outcome: "caller_bye".into(),
                transcript: json!([{"speaker": "caller", "text": "I am Ada Lovelace"}]),
                tool_calls: json!([]),
                recording: None,
                node: None,
                answered_by: None,
            })
            .await
            .unwrap();
    }
    let deleted = voxrelay::booking::retention::prune(store, 90, now)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let mut left: Vec<String> = store
        .list_calls(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    left.sort();
    assert_eq!(left, ["edge", "new"]);
    // 0 keeps everything; bookings are never touched.
    assert_eq!(
        voxrelay::booking::retention::prune(store, 0, now + Duration::days(999))
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.list_calls(10).await.unwrap().len(), 2);
}

/// The webhook delivery table: a relay sends only its own due rows, in order; an attempt's
/// outcome is written; the log lists every relay's, filtered; retention deletes old finished
/// rows with the call records and keeps pending ones.
async fn webhook_deliveries_are_due_listed_updated_and_pruned(b: Backend) {
    use voxrelay::booking::store::{AttemptUpdate, Delivery, DeliveryFilter, DeliveryStatus};
    let e = env(b).await;
    let store = e.tools.store().clone();
    let other = Store::open(&e.url, 2)
        .await
        .unwrap()
        .for_node(Some("relay-2"));
    let now: DateTime<Utc> = NOW.parse().unwrap();
    let d = |id: &str, call: &str, due: i64, created_days_ago: i64| Delivery {
        id: id.into(),
        url: "https://clinic.example/hook".into(),
        event: "call.ended".into(),
        call_id: call.into(),
        payload: format!(r#"{{"call":"{call}"}}"#),
        status: DeliveryStatus::Pending,
        attempts: 0,
        next_attempt_at: Some(now + Duration::seconds(due)),
        last_status: None,
        last_error: None,
        created_at: now - Duration::days(created_days_ago),
        delivered_at: None,
    };
    store
        .insert_deliveries(&[d("dlv_late", "c1", 60, 0), d("dlv_due", "c1", -5, 0)])
        .await
        .unwrap();
    store
        .insert_deliveries(&[d("dlv_old", "c0", -60, 100)])
        .await
        .unwrap();
    other
        .insert_deliveries(&[d("dlv_theirs", "c2", -10, 0)])
        .await
        .unwrap();

    // this relay's due rows, oldest due first; another relay's are not its to send
    let due: Vec<String> = store
        .due_deliveries(now, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(due, ["dlv_old", "dlv_due"]);
    let theirs = other.due_deliveries(now, 10).await.unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].payload, r#"{"call":"c2"}"#);
    assert_eq!(store.due_deliveries(now, 1).await.unwrap().len(), 1);
    assert_eq!(
        store.next_delivery_due().await.unwrap(),
        Some(now - Duration::seconds(60))
    );

    // attempts: one delivered, one retried later
    let delivered = AttemptUpdate {
        status: DeliveryStatus::Delivered,
        attempts: 1,
        next_attempt_at: None,
        last_status: Some(200),
        last_error: None,
        delivered_at: Some(now),
    };
    store.update_delivery("dlv_old", &delivered).await.unwrap();
    let retry = AttemptUpdate {
        status: DeliveryStatus::Pending,
        attempts: 1,
        next_attempt_at: Some(now + Duration::seconds(30)),
        last_status: Some(503),
        last_error: Some("the receiver answered 503".into()),
        delivered_at: None,
    };
    store.update_delivery("dlv_due", &retry).await.unwrap();
    assert!(store.due_deliveries(now, 10).await.unwrap().is_empty());
    assert_eq!(
        store.next_delivery_due().await.unwrap(),
        Some(now + Duration::seconds(30))
    );

    // the log: every relay's, newest first, filtered by status and call
    let all = store
        .list_deliveries(&DeliveryFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all.last().unwrap().id, "dlv_old");
    let old = all.last().unwrap();
    assert_eq!(
        (old.status, old.attempts, old.last_status),
        (DeliveryStatus::Delivered, 1, Some(200))
    );
    assert_eq!(old.delivered_at, Some(now));
    let pending_c1 = store
        .list_deliveries(
            &DeliveryFilter {
                status: Some(DeliveryStatus::Pending),
                call_id: Some("c1".into()),
            },
            10,
        )
        .await
        .unwrap();
    let mut ids: Vec<&str> = pending_c1.iter().map(|x| x.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["dlv_due", "dlv_late"]);
    let due_row = pending_c1.iter().find(|x| x.id == "dlv_due").unwrap();
    assert_eq!(
        due_row.last_error.as_deref(),
        Some("the receiver answered 503")
    );
    assert_eq!(
        store
            .list_deliveries(&DeliveryFilter::default(), 2)
            .await
            .unwrap()
            .len(),
        2
    );

    // retention: the old delivered row goes; a pending one of the same age would stay
    store
        .insert_deliveries(&[d("dlv_old_pending", "c0", 600, 100)])
        .await
        .unwrap();
    voxrelay::booking::retention::prune(&store, 90, now)
        .await
        .unwrap();
    let left: Vec<String> = store
        .list_deliveries(&DeliveryFilter::default(), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.id)
        .collect();
    assert!(!left.contains(&"dlv_old".to_string()), "{left:?}");
    assert!(left.contains(&"dlv_old_pending".to_string()), "{left:?}");
    assert_eq!(left.len(), 4, "{left:?}");
    other.close().await;
}

/// The reminders table: a booking is planned once (a second row for it is refused), a due
/// reminder is claimed by one relay only, what follows a call is written, the rows a relay
/// was dialling when it stopped are due again (its own at its start; in a cluster, those of a
/// relay that is gone), and retention deletes the reminders of past appointments.
async fn reminders_are_planned_once_claimed_by_one_relay_and_released(b: Backend) {
    use voxrelay::booking::store::{NewBooking, Reminder, ReminderStatus, ReminderUpdate};
    let e = env(b).await;
    let store = Store::open(&e.url, 2)
        .await
        .unwrap()
        .for_node(Some("relay-1"));
    let other = Store::open(&e.url, 2)
        .await
        .unwrap()
        .for_node(Some("relay-2"));
    let now: DateTime<Utc> = NOW.parse().unwrap();
    let day = |d: &str| d.parse::<chrono::NaiveDate>().unwrap();
    let mut codes = Vec::new();
    for (date, time) in [
        ("2026-11-25", "10:00"),
        ("2026-11-26", "11:00"),
        ("2026-12-20", "09:00"),
    ] {
        let booking = NewBooking {
            patient_name: "Ada Lovelace".into(),
            phone: "+12015550123".into(),
            date: day(date),
            time: chrono::NaiveTime::parse_from_str(time, "%H:%M").unwrap(),
        };
        codes.push(
            store
                .insert_booking(&booking, now - Duration::days(3))
                .await
                .unwrap()
                .code,
        );
    }
    let unplanned = |s: &Store| {
        let s = s.clone();
        async move {
            s.bookings_without_reminder(day("2026-11-24"), day("2026-11-30"))
                .await
                .unwrap()
                .into_iter()
                .map(|b| b.code)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        unplanned(&store).await,
        codes[..2].to_vec(),
        "the third is too far ahead"
    );
    let row = |code: &str, due: i64| Reminder {
        booking_code: code.into(),
        appointment_at: now + Duration::days(1),
        status: ReminderStatus::Pending,
        attempts: 0,
        next_attempt_at: Some(now + Duration::seconds(due)),
        last_outcome: None,
        skip_reason: None,
        last_call_id: None,
        created_at: now,
        updated_at: now,
    };
    assert!(store.insert_reminder(&row(&codes[0], -5)).await.unwrap());
    assert!(
        !other.insert_reminder(&row(&codes[0], 100)).await.unwrap(),
        "planned once"
    );
    assert!(store.insert_reminder(&row(&codes[1], 60)).await.unwrap());
    assert!(unplanned(&store).await.is_empty());

    // due: the first only; claimed by one relay, not by the other, even when both try many
    // times at once
    let due = store.due_reminders(now, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].booking_code, codes[0]);
    assert_eq!(due[0].next_attempt_at, Some(now - Duration::seconds(5)));
    assert!(other.claim_reminder(&codes[0], now).await.unwrap());
    assert!(!store.claim_reminder(&codes[0], now).await.unwrap());
    assert!(store.due_reminders(now, 10).await.unwrap().is_empty());
    let claimed = store.reminder(&codes[0]).await.unwrap().unwrap();
    assert_eq!(
        (claimed.status, claimed.attempts),
        (ReminderStatus::Calling, 1)
    );

    // forty claims at once from two relays: one wins
    assert!(store.insert_reminder(&row(&codes[2], -1)).await.unwrap());
    let claims: Vec<_> = (0..40)
        .map(|i| {
            let s = if i % 2 == 0 {
                other.clone()
            } else {
                store.clone()
            };
            let code = codes[2].clone();
            tokio::spawn(async move { (i % 2 == 0, s.claim_reminder(&code, now).await.unwrap()) })
        })
        .collect();
    let mut won = vec![];
    for c in claims {
        let (by_other, ok) = c.await.unwrap();
        if ok {
            won.push(by_other);
        }
    }
    assert_eq!(won.len(), 1, "one claim of forty wins");
    let raced = store.reminder(&codes[2]).await.unwrap().unwrap();
    assert_eq!((raced.status, raced.attempts), (ReminderStatus::Calling, 1));
    let winner = if won[0] { &other } else { &store };
    let u = ReminderUpdate {
        status: ReminderStatus::Done,
        next_attempt_at: None,
        last_outcome: Some("answered".into()),
        skip_reason: None,
        last_call_id: None,
    };
    winner.update_reminder(&codes[2], &u, now).await.unwrap();

    // relay-2 went away mid-call: relay-1 takes the row back in a cluster (PostgreSQL)
    let taken = store
        .adopt_orphan_reminders(std::time::Duration::from_secs(15), now)
        .await
        .unwrap();
    match b {
        Backend::Postgres => {
            assert_eq!(taken, 1);
            let r = store.reminder(&codes[0]).await.unwrap().unwrap();
            assert_eq!((r.status, r.attempts), (ReminderStatus::Pending, 1));
            assert_eq!(r.last_outcome.as_deref(), Some("failed"));
            assert!(store.claim_reminder(&codes[0], now).await.unwrap());
        }
        Backend::Sqlite => {
            assert_eq!(taken, 0);
            // relay-2 itself puts it back when it starts again
            assert_eq!(other.release_own_reminders(now).await.unwrap(), 1);
            assert!(store.claim_reminder(&codes[0], now).await.unwrap());
        }
    }
    // what the call gave: busy, again in an hour
    let update = ReminderUpdate {
        status: ReminderStatus::Pending,
        next_attempt_at: Some(now + Duration::hours(1)),
        last_outcome: Some("busy".into()),
        skip_reason: None,
        last_call_id: Some("call-1".into()),
    };
    store
        .update_reminder(&codes[0], &update, now)
        .await
        .unwrap();
    let r = store.reminder(&codes[0]).await.unwrap().unwrap();
    assert_eq!(r.status, ReminderStatus::Pending);
    assert_eq!(r.attempts, 2);
    assert_eq!(r.last_call_id.as_deref(), Some("call-1"));
    assert_eq!(r.next_attempt_at, Some(now + Duration::hours(1)));
    // a claim given back (the relay was full) does not count as an attempt
    let later = now + Duration::hours(1);
    assert!(store.claim_reminder(&codes[0], later).await.unwrap());
    store
        .unclaim_reminder(&codes[0], later + Duration::minutes(1), later)
        .await
        .unwrap();
    let r = store.reminder(&codes[0]).await.unwrap().unwrap();
    assert_eq!((r.status, r.attempts), (ReminderStatus::Pending, 2));

    // the list, filtered
    let all = store.list_reminders(None, 10).await.unwrap();
    assert_eq!(all.len(), 3);
    let pending = store
        .list_reminders(Some(ReminderStatus::Pending), 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 2);
    let done = store
        .list_reminders(Some(ReminderStatus::Done), 10)
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].booking_code, codes[2]);
    // retention: reminders of appointments before the cut-off go
    assert_eq!(
        store
            .prune_reminders(now + Duration::days(2))
            .await
            .unwrap(),
        3
    );
    assert!(store.list_reminders(None, 10).await.unwrap().is_empty());
}
