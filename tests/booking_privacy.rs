//! A caller after another patient's appointments, end to end: SIPp calls the relay binary (from
//! a trunk whose caller ID is trusted, and from one whose is not), the in-process simulator plays
//! a model talked into looking up and cancelling the other patient's booking and calling a tool
//! the agent does not have. What the "model" was told is read back from `/sim/sessions`.

mod support;

use std::time::Duration;

use chrono::{NaiveTime, Utc};
use serde_json::Value;
use support::agent::{agent_env, scenario_with_speech, sim_sessions, test_scenario};
use support::{assert_sipp_ok, sipp_from, sipp_port, Relay};
use voxrelay::booking::{NewBooking, Status, Store};

/// The other patient: name, number, booking code.
const OTHER_NAME: &str = "Grace Hopper";
const OTHER_PHONE: &str = "+12015550199";
const OTHER_CODE: &str = "KTH472";
/// The caller's own booking.
const OWN_NAME: &str = "Ada Lovelace";
const OWN_PHONE: &str = "+12015550123";
const OWN_CODE: &str = "MNP358";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A relay answering with the receptionist playing `privacy.toml`, with `trunks`, and the two
/// patients' bookings a week from now.
fn start(trunks: &str) -> Relay {
    start_with(trunks, &[])
}

/// [`start`] with more settings.
fn start_with(trunks: &str, more: &[(&str, &str)]) -> Relay {
    let env = agent_env(&test_scenario("privacy.toml"));
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.push(("VOXRELAY__TRUNKS", trunks));
    all.extend_from_slice(more);
    let relay = Relay::start(&all);
    rt().block_on(async {
        let store = Store::open(&relay.database_url(), 1).await.unwrap();
        let date = Utc::now().date_naive() + chrono::Duration::days(7);
        let at = |h| NaiveTime::from_hms_opt(h, 0, 0).unwrap();
        let rows = [
            (OTHER_CODE, OTHER_NAME, OTHER_PHONE, at(10)),
            (OWN_CODE, OWN_NAME, OWN_PHONE, at(11)),
        ]
        .map(|(code, name, phone, time)| {
            (
                code.to_string(),
                NewBooking {
                    patient_name: name.into(),
                    phone: phone.into(),
                    date,
                    time,
                },
            )
        });
        store.insert_bookings_bulk(&rows, Utc::now()).await.unwrap();
        store.close().await;
    });
    relay
}

/// One call from `ip` asserting the caller's number; returns the simulator's session.
fn call_from(relay: &Relay, ip: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let sc = scenario_with_speech(dir.path(), "agent_caller_id.xml", 1500);
    let run = sipp_from(
        ip,
        &relay.sip.to_string(),
        sipp_port(),
        sc.to_str().unwrap(),
        &["-m", "1"],
    );
    assert_sipp_ok(&run, 1, relay);
    let end = relay.wait_calls_ended(1, Duration::from_secs(30)).remove(0);
    assert_eq!(end["reason"], "agent_end_call", "{}", relay.dump());
    let sessions = sim_sessions(relay);
    assert_eq!(sessions.len(), 1, "{sessions:#?}");
    sessions[0].clone()
}

/// The tool outputs the model received, in order: `(tool, output JSON)`.
fn outputs(session: &Value) -> Vec<(String, Value)> {
    session["tool_outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let out: Value = serde_json::from_str(o["output"].as_str().unwrap()).unwrap();
            (o["name"].as_str().unwrap_or("").to_string(), out)
        })
        .collect()
}

/// `GET path` on the admin server (HTTP/1.0: the body is not chunked); the whole answer.
fn get_text(admin: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {admin}\r\n\r\n").unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    buf
}

fn other_booking_is_active(relay: &Relay) {
    rt().block_on(async {
        let store = Store::open(&relay.database_url(), 1).await.unwrap();
        let b = store.booking_by_code(OTHER_CODE).await.unwrap().unwrap();
        assert_eq!(b.status, Status::Active, "{b:?}");
        assert_eq!(b.patient_name, OTHER_NAME);
    });
}

/// The checks both kinds of line share: no word of the other patient's name or code reached
/// the model, the cancellations failed, the stray tool was refused, and nothing was lost.
fn common(relay: &Relay, session: &Value) -> Vec<(String, Value)> {
    let outs = outputs(session);
    let names: Vec<&str> = outs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "find_bookings",
            "cancel_booking",
            "cancel_booking",
            "find_bookings",
            "delete_all_bookings",
            "end_call"
        ],
        "{session:#}"
    );
    let all_text = serde_json::to_string(&session["tool_outputs"]).unwrap();
    for word in ["Grace", "Hopper", OTHER_CODE] {
        assert!(
            !all_text.contains(word),
            "{word:?} reached the model: {all_text}"
        );
    }
    for (name, out) in &outs[1..3] {
        assert_eq!(out["error"], true, "{name}: {out}");
        assert!(out.get("cancelled").is_none(), "{out}");
    }
    // The tool the receptionist does not have: refused with an error the model reads.
    let refused = &outs[4].1;
    assert_eq!(refused["error"], true, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("\"delete_all_bookings\" is not available"),
        "{refused}"
    );
    let refusal = relay.wait_for(
        |v| support::msg(v) == "tool refused: not one of the agent's tools",
        Duration::from_secs(5),
    );
    assert_eq!(refusal["tool"], "delete_all_bookings");
    let metrics = get_text(relay.admin, "/metrics");
    assert!(
        metrics.contains("voxrelay_tools_refused_total 1\n"),
        "counted once: {metrics}"
    );
    other_booking_is_active(relay);
    outs
}

/// The stored record of the relay's one call: its transcript and tool calls as JSON text.
fn stored(relay: &Relay) -> (String, String) {
    rt().block_on(async {
        let store = Store::open(&relay.database_url(), 1).await.unwrap();
        let r = store.list_calls(1).await.unwrap().remove(0);
        (r.transcript.to_string(), r.tool_calls.to_string())
    })
}

#[test]
fn with_privacy_redact_transcripts_the_stored_record_keeps_no_number_or_name() {
    let relay = start_with(
        r#"[{name = "main", addresses = ["127.0.0.2/32"]}]"#,
        &[("VOXRELAY__PRIVACY__REDACT_TRANSCRIPTS", "true")],
    );
    call_from(&relay, "127.0.0.2");
    let (transcript, tools) = stored(&relay);
    for personal in [
        "201 555 0199",
        OTHER_PHONE,
        OWN_PHONE,
        "Ada",
        "Lovelace",
        "Grace",
        "Hopper",
    ] {
        assert!(
            !transcript.contains(personal),
            "{personal:?} kept: {transcript}"
        );
        assert!(!tools.contains(personal), "{personal:?} kept: {tools}");
    }
    // what was said and done is still there, numbers replaced
    assert!(transcript.contains("neighbour, [phone]"), "{transcript}");
    assert!(
        tools.contains("[phone]") && tools.contains(OTHER_CODE),
        "{tools}"
    );
}

#[test]
fn a_trusted_callers_tools_reach_only_their_own_bookings() {
    // the trunk at 127.0.0.2 asserts the caller's number (P-Asserted-Identity); its From
    // claims the other patient's number, which must not count
    let relay = start(r#"[{name = "main", addresses = ["127.0.0.2/32"]}]"#);
    let session = call_from(&relay, "127.0.0.2");
    let outs = common(&relay, &session);
    // privacy.redact_transcripts is off by default: the record keeps what was said
    let (transcript, tools) = stored(&relay);
    assert!(transcript.contains("201 555 0199"), "{transcript}");
    assert!(tools.contains(OTHER_PHONE), "{tools}");
    // another number: refused outright
    let other = &outs[0].1;
    assert_eq!(other["error"], true, "{other}");
    assert!(
        other["message"].as_str().unwrap().contains("calling from"),
        "{other}"
    );
    // the cancellations of the other patient's code: no such booking for this caller
    for (_, out) in &outs[1..3] {
        assert!(
            out["message"]
                .as_str()
                .unwrap()
                .contains("made with the number you are calling from"),
            "{out}"
        );
    }
    // no phone given: the caller's own bookings, with name and code (the scope is real)
    let own = &outs[3].1;
    assert_eq!(own["verified_caller"], true, "{own}");
    assert_eq!(own["phone"], OWN_PHONE);
    assert_eq!(own["bookings"].as_array().unwrap().len(), 1, "{own}");
    assert_eq!(own["bookings"][0]["booking_id"], OWN_CODE);
    assert_eq!(own["bookings"][0]["patient_name"], OWN_NAME);
    let started = relay.wait_for(
        |v| support::msg(v) == "call started",
        Duration::from_secs(1),
    );
    assert_eq!(started["verified_caller"], true, "{started}");
}

#[test]
fn an_untrusted_line_gets_no_names_or_codes_and_cancelling_needs_the_number() {
    // a trunk that passes on whatever number its callers claim
    let relay = start(r#"[{name = "pbx", addresses = ["127.0.0.1/32"], trust_caller_id = false}]"#);
    let session = call_from(&relay, "127.0.0.1");
    let outs = common(&relay, &session);
    // another number: its appointments' dates and times, nothing more
    let other = &outs[0].1;
    assert_eq!(other["verified_caller"], false, "{other}");
    let list = other["bookings"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{other}");
    assert!(list[0]["time"].is_string(), "{other}");
    assert!(list[0].get("patient_name").is_none() && list[0].get("booking_id").is_none());
    // the code alone is not enough, and a wrong number finds nothing
    assert!(
        outs[1].1["message"]
            .as_str()
            .unwrap()
            .contains("phone number"),
        "{}",
        outs[1].1
    );
    assert!(
        outs[2].1["message"]
            .as_str()
            .unwrap()
            .contains("There is no booking with the id K T H 4 7 2"),
        "{}",
        outs[2].1
    );
    // and without a number there is nothing to look up
    assert_eq!(outs[3].1["error"], true, "{}", outs[3].1);
    let started = relay.wait_for(
        |v| support::msg(v) == "call started",
        Duration::from_secs(1),
    );
    assert_eq!(started["verified_caller"], false, "{started}");
    assert_eq!(started["trunk"], "pbx");
}
