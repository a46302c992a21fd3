//! Reminder calls (`[reminders]`), end to end: a booking is in the relay's database (made two
//! days ago, for a few hours from now), the relay binary's scheduler calls the patient through
//! a trunk played by SIPp, and the agent (the in-process simulator) is told which appointment
//! it reminds of. A busy callee is called again and reminded; a callee who never answers gets
//! a CANCEL at the ring timeout and is called again, until the attempts run out. The timing
//! rules (calling hours, a day ahead, lunch breaks, clock changes, retries) are tested on a
//! simulated clock in `cargo test --lib reminders`.

mod support;

use std::thread;
use std::time::Duration;

use chrono::{Duration as Days, Timelike, Utc};
use serde_json::Value;
use support::agent::{agent_env, get_json, sim_sessions};
use support::{msg, sipp_from, sipp_port, Relay, SippRun};
use voxrelay::booking::store::NewBooking;
use voxrelay::booking::Store;

const PASSWORD: &str = "trunk-secret-123";
const PHONE: &str = "+12015550123";

/// A database holding one active booking of Ada Lovelace's, made two days ago, five hours
/// from now; its URL and the booking's code.
fn database_with_a_booking(dir: &std::path::Path) -> (String, String) {
    let url = format!("sqlite://{}", dir.join("clinic.db").display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let code = rt.block_on(async {
        let store = Store::open(&url, 1).await.unwrap();
        let at = Utc::now() + Days::hours(5);
        let at = at.with_second(0).unwrap().with_nanosecond(0).unwrap();
        let b = store
            .insert_booking(
                &NewBooking {
                    patient_name: "Ada Lovelace".into(),
                    phone: PHONE.into(),
                    date: at.date_naive(),
                    time: at.time(),
                },
                Utc::now() - Days::days(2),
            )
            .await
            .unwrap();
        store.close().await;
        b.code
    });
    (url, code)
}

/// A relay on `db` with reminders on (a day ahead, any hour, retried after 1 s, two calls
/// at most, ringing 5 s at most) through a trunk at `127.0.0.1:port` with digest credentials.
fn relay(db: &str, port: u16) -> Relay {
    let env = agent_env("booking");
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let trunk = format!(
        r#"[{{name = "out", addresses = ["127.0.0.1/32"], outbound_proxy = "127.0.0.1:{port}", username = "relayuser", password_env = "OUT_TRUNK_PW"}}]"#
    );
    let day = r#"["00:00-24:00"]"#;
    let hours = format!(
        "{{monday = {day}, tuesday = {day}, wednesday = {day}, thursday = {day}, friday = {day}, saturday = {day}, sunday = {day}}}"
    );
    all.extend([
        ("VOXRELAY__TRUNKS", trunk.as_str()),
        ("OUT_TRUNK_PW", PASSWORD),
        ("VOXRELAY__BOOKING__DATABASE_URL", db),
        ("VOXRELAY__REMINDERS__ENABLED", "true"),
        ("VOXRELAY__REMINDERS__HOURS", hours.as_str()),
        ("VOXRELAY__REMINDERS__RETRY_AFTER_MS", "1000"),
        ("VOXRELAY__REMINDERS__MAX_ATTEMPTS", "2"),
        ("VOXRELAY__REMINDERS__RING_TIMEOUT_MS", "5000"),
        ("VOXRELAY__REMINDERS__POLL_MS", "200"),
    ]);
    Relay::start(&all)
}

/// SIPp playing the trunk on `port`: each scenario in turn, one call each.
fn trunk_scenarios(
    port: u16,
    scenarios: Vec<(String, Vec<&'static str>)>,
) -> thread::JoinHandle<Vec<SippRun>> {
    thread::spawn(move || {
        scenarios
            .iter()
            .map(|(sc, args)| {
                let mut all = vec!["-m", "1"];
                all.extend_from_slice(args);
                sipp_from("127.0.0.1", "127.0.0.1:9", port, sc, &all)
            })
            .collect()
    })
}

/// SIPp playing the trunk on `port`: each bundled scenario in turn, one call each.
fn trunk(
    port: u16,
    scenarios: &'static [(&'static str, &'static [&'static str])],
) -> thread::JoinHandle<Vec<SippRun>> {
    trunk_scenarios(
        port,
        scenarios
            .iter()
            .map(|(sc, args)| (sc.to_string(), args.to_vec()))
            .collect(),
    )
}

/// The call `id` as the admin API gives it.
fn call_record(relay: &Relay, id: &str) -> Value {
    get_json(&format!("http://{}/api/calls/{id}", relay.admin))
}

fn reminder(relay: &Relay, code: &str) -> Value {
    let list = get_json(&format!("http://{}/api/reminders", relay.admin));
    list["reminders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["booking_code"] == code)
        .cloned()
        .unwrap_or_else(|| panic!("no reminder for {code}: {list}"))
}

#[test]
fn a_busy_patient_is_called_again_and_reminded_of_the_appointment() {
    let dir = tempfile::tempdir().unwrap();
    let (db, code) = database_with_a_booking(dir.path());
    let port = sipp_port();
    let sipp = trunk(
        port,
        &[
            ("trunk_busy.xml", &[]),
            ("trunk_answers.xml", &["-d", "3000"]),
        ],
    );
    let relay = relay(&db, port);
    let given = relay.wait_for(|v| msg(v) == "reminder given", Duration::from_secs(30));
    let runs = sipp.join().unwrap();
    for run in &runs {
        assert!(
            run.code == 0 && run.successful == 1,
            "{}\n{}",
            run.output,
            relay.dump()
        );
    }
    let retried = relay.wait_for(
        |v| msg(v) == "reminder call not answered: trying again later",
        Duration::from_secs(1),
    );
    assert_eq!(retried["outcome"], "busy", "{retried}");
    assert_eq!(retried["booking"], code.as_str());

    let r = reminder(&relay, &code);
    assert_eq!(r["status"], "done", "{r}");
    assert_eq!(r["attempts"], 2, "{r}");
    assert_eq!(r["last_outcome"], "answered", "{r}");
    assert_eq!(r["last_call_id"], given["call"], "{r}");
    // the busy call is a stored call of its own
    let busy = call_record(&relay, retried["call"].as_str().unwrap());
    assert_eq!(busy["end_reason"], "busy", "{busy}");
    // the answered call: to the booking's phone, the agent told which appointment
    let end = relay.wait_calls_ended(1, Duration::from_secs(20)).remove(0);
    assert_eq!(end["span"]["id"], given["call"]);
    assert!(
        end["rtp_out"].as_u64().unwrap() > 50,
        "the agent spoke: {end}"
    );
    let told = serde_json::to_string(&sim_sessions(&relay)).unwrap();
    assert!(
        told.contains("appointment reminder for Ada Lovelace"),
        "{told}"
    );
    assert!(told.contains(&code), "{told}");
    let call = call_record(&relay, given["call"].as_str().unwrap());
    assert_eq!(
        call["to"],
        format!("sip:{PHONE}@127.0.0.1:{port}"),
        "{call}"
    );
}

#[test]
fn a_patient_who_never_answers_gets_a_cancel_each_time_until_the_attempts_run_out() {
    let dir = tempfile::tempdir().unwrap();
    let (db, code) = database_with_a_booking(dir.path());
    let port = sipp_port();
    let sipp = trunk(port, &[("trunk_rings.xml", &[]), ("trunk_rings.xml", &[])]);
    let relay = relay(&db, port);
    let gave_up = relay.wait_for(
        |v| msg(v) == "no more reminder calls",
        Duration::from_secs(40),
    );
    assert_eq!(gave_up["reason"], "attempts_used", "{gave_up}");
    let runs = sipp.join().unwrap();
    for run in &runs {
        // the scenario passes only if the relay CANCELled, took the 487 and ACKed it
        assert!(
            run.code == 0 && run.successful == 1,
            "{}\n{}",
            run.output,
            relay.dump()
        );
    }
    let cancels = relay
        .logs()
        .iter()
        .filter(|v| msg(v) == "no answer in time: cancelling the call")
        .count();
    assert_eq!(cancels, 2, "{}", relay.dump());
    for v in relay.logs().iter().filter(|v| {
        [
            "reminder planned",
            "reminder call placed",
            "no answer in time: cancelling the call",
            "the outbound call was not answered",
            "no more reminder calls",
        ]
        .contains(&msg(v))
    }) {
        eprintln!("{} {}", v["timestamp"].as_str().unwrap_or(""), msg(v));
    }
    let r = reminder(&relay, &code);
    assert_eq!(r["status"], "skipped", "{r}");
    assert_eq!(r["skip_reason"], "attempts_used", "{r}");
    assert_eq!(r["attempts"], 2, "{r}");
    assert_eq!(r["last_outcome"], "no_answer", "{r}");
    let last = call_record(&relay, r["last_call_id"].as_str().unwrap());
    assert_eq!(last["end_reason"], "no_answer", "{last}");
    assert_eq!(last["answered_at"], Value::Null, "{last}");
}

fn tone(hz: f32, ms: u32) -> Vec<i16> {
    (0..ms * 8)
        .map(|i| ((2.0 * std::f32::consts::PI * hz * i as f32 / 8000.0).sin() * 6000.0) as i16)
        .collect()
}

#[test]
fn a_number_not_in_service_is_heard_in_the_early_media_and_not_called_again() {
    // the network answers 183 and plays the three special information tones (and then its
    // announcement, silence here) without a final answer: the relay hears them, cancels, and
    // the reminder is not tried again although two attempts are allowed
    not_in_service("trunk_not_in_service.xml");
}

#[test]
fn tones_that_overtake_the_183_are_heard_too() {
    // the same network, whose announcement starts 400 ms before the 183 that says where it
    // comes from (the whole first tone, 274 ms, and part of the second): what came first is
    // listened to once the 183 is in
    not_in_service("trunk_not_in_service_media_first.xml");
}

/// A reminder call through a trunk playing `scenario`, a number not in service: the tones
/// are heard, the call cancelled, and the patient not called again.
fn not_in_service(scenario: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (db, code) = database_with_a_booking(dir.path());
    let pcap = dir.path().join("sit.pcap");
    let sit = [
        tone(913.8, 274),
        tone(1370.6, 274),
        tone(1776.7, 380),
        vec![0; 8 * 3000],
    ]
    .concat();
    support::agent::write_pcma_pcap(&pcap, &sit, 1);
    let text = std::fs::read_to_string(support::scenario(scenario))
        .unwrap()
        .replace("AUDIO_PCAP", &pcap.display().to_string());
    let sc = dir.path().join(scenario);
    std::fs::write(&sc, text).unwrap();
    let port = sipp_port();
    let sipp = trunk_scenarios(port, vec![(sc.display().to_string(), vec![])]);
    let relay = relay(&db, port);
    let gave_up = relay.wait_for(
        |v| msg(v) == "no more reminder calls",
        Duration::from_secs(20),
    );
    assert_eq!(
        gave_up["reason"],
        "unreachable",
        "{gave_up}\n{}",
        relay.dump()
    );
    let runs = sipp.join().unwrap();
    assert!(
        runs[0].code == 0 && runs[0].successful == 1,
        "{}\n{}",
        runs[0].output,
        relay.dump()
    );
    let placed = relay.wait_for(|v| msg(v) == "reminder call placed", Duration::from_secs(1));
    let heard = relay.wait_for(
        |v| msg(v).starts_with("special information tones"),
        Duration::from_secs(1),
    );
    eprintln!(
        "tones heard {} after the call was placed",
        elapsed(&placed, &heard)
    );
    let r = reminder(&relay, &code);
    assert_eq!(r["status"], "skipped", "{r}");
    assert_eq!(r["attempts"], 1, "{r}");
    assert_eq!(r["last_outcome"], "unreachable", "{r}");
    let call = call_record(&relay, r["last_call_id"].as_str().unwrap());
    assert_eq!(call["end_reason"], "unreachable", "{call}");
}

/// The time between two log events, as text.
fn elapsed(a: &Value, b: &Value) -> String {
    let t =
        |v: &Value| chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).unwrap();
    format!("{} ms", (t(b) - t(a)).num_milliseconds())
}
