//! Phone calls to the realtime agent, end to end: SIPp calls the relay binary, the relay's
//! in-process simulator plays the model, the bookings land in the relay's SQLite database.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::agent::{agent_env, scenario_with_speech, sim_sessions, test_scenario};
use support::{assert_sipp_ok, msg, sipp, Relay};
use voxrelay::booking::Store;

fn start(scenario: &str, extra: &[(&str, &str)]) -> Relay {
    let env = agent_env(scenario);
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.extend_from_slice(extra);
    Relay::start(&all)
}

fn ended(relay: &Relay) -> Value {
    relay.wait_calls_ended(1, Duration::from_secs(30)).remove(0)
}

/// Takes the relay's SQLite write lock (as another writer would), so a booking waits for it.
fn lock_database(
    rt: &tokio::runtime::Runtime,
    relay: &Relay,
) -> (sqlx::SqlitePool, sqlx::pool::PoolConnection<sqlx::Sqlite>) {
    rt.block_on(async {
        let store = Store::open(&relay.database_url(), 1).await.unwrap();
        store.ping().await.unwrap();
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect(&relay.database_url())
            .await
            .unwrap();
        let mut conn = pool.acquire().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .unwrap();
        (pool, conn)
    })
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_caller_books_an_appointment_by_talking_and_the_agent_hangs_up() {
    let relay = start("booking", &[]);
    let dir = tempfile::tempdir().unwrap();
    let sc = scenario_with_speech(dir.path(), "agent_booking.xml", 1500);
    let run = sipp(&relay, sc.to_str().unwrap(), &["-m", "1"]);
    assert_sipp_ok(&run, 1, &relay);
    let end = ended(&relay);
    assert_eq!(end["reason"], "agent_end_call", "{}", relay.dump());

    rt().block_on(async {
        let store = Store::open(&relay.database_url(), 1).await.unwrap();
        let calls = store.list_calls(10).await.unwrap();
        assert_eq!(calls.len(), 1, "one call record");
        let call = &calls[0];
        assert_eq!(call.outcome, "agent_end_call");
        // the booking the caller asked for is in the database
        let tools = call.tool_calls.as_array().unwrap();
        let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["check_availability", "create_booking", "end_call"]);
        let created = &tools[1];
        assert_eq!(created["ok"], true, "{created}");
        let id = created["result"]["booking_id"]
            .as_str()
            .unwrap()
            .to_string();
        let date: chrono::NaiveDate = created["arguments"]["date"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let on_day = store.bookings_on(date).await.unwrap();
        let b = on_day
            .iter()
            .find(|b| b.code == id)
            .unwrap_or_else(|| panic!("booking {id} not in the database: {on_day:?}"));
        assert_eq!(b.patient_name, "Ada Lovelace");
        // and the confirmation, with its reference, in the transcript
        let lines: Vec<String> = call
            .transcript
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                format!(
                    "{}: {}",
                    t["speaker"].as_str().unwrap(),
                    t["text"].as_str().unwrap()
                )
            })
            .collect();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("agent: You are booked in, reference") && l.contains(&id)),
            "{lines:#?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("caller: I would like to book")),
            "{lines:#?}"
        );
        assert!(
            lines[0].starts_with("agent: Hello"),
            "the agent greets first: {lines:#?}"
        );
    });
}

#[test]
fn barge_in_stops_the_agent_within_a_frame() {
    let relay = start("booking", &[]);
    let dir = tempfile::tempdir().unwrap();
    let sc = scenario_with_speech(dir.path(), "agent_barge_in.xml", 1500);
    // five callers, each talking over the greeting
    let run = sipp(&relay, sc.to_str().unwrap(), &["-m", "5", "-l", "5"]);
    assert_sipp_ok(&run, 5, &relay);
    relay.wait_calls_ended(5, Duration::from_secs(30));
    let residuals: Vec<u64> = relay
        .logs()
        .iter()
        .filter(|v| msg(v) == "barge-in")
        .map(|v| v["residual_ms"].as_u64().unwrap())
        .collect();
    assert!(
        residuals.len() >= 5,
        "one barge-in per call: {residuals:?}\n{}",
        relay.dump()
    );
    let mut sorted = residuals.clone();
    sorted.sort_unstable();
    let p99 = sorted[(sorted.len() * 99).div_ceil(100) - 1];
    assert!(p99 <= 40, "residual p99 {p99} ms: {sorted:?}");
    // the model was told, and the greeting is marked as cut off in the records
    rt().block_on(async {
        let store = Store::open(&relay.database_url(), 1).await.unwrap();
        for call in store.list_calls(10).await.unwrap() {
            let first = &call.transcript[0];
            assert_eq!(first["speaker"], "agent");
            assert_eq!(first["cut_off"], true, "{first}");
        }
    });
}

#[test]
fn keypad_digits_reach_the_model_and_pick_its_answer() {
    let relay = start("booking", &[]);
    let dir = tempfile::tempdir().unwrap();
    let sc = scenario_with_speech(dir.path(), "agent_dtmf.xml", 1500);
    let run = sipp(&relay, sc.to_str().unwrap(), &["-m", "1"]);
    assert_sipp_ok(&run, 1, &relay);
    assert_eq!(ended(&relay)["reason"], "agent_end_call");
    let sessions = sim_sessions(&relay);
    let texts: Vec<&str> = sessions[0]["text_items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(texts, ["[keypad] 2"], "{:#}", sessions[0]);
    // the script's branch for "2": no booking, a goodbye
    let tools: Vec<&str> = sessions[0]["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["check_availability", "end_call"]);
}

#[test]
fn a_caller_hanging_up_mid_tool_call_keeps_the_booking() {
    let relay = start("booking", &[]);
    let dir = tempfile::tempdir().unwrap();
    let sc = scenario_with_speech(dir.path(), "agent_hangs_up_early.xml", 1500);
    let rt = rt();
    // hold the database's write lock, so create_booking is still waiting when the caller
    // hangs up
    let blocker = lock_database(&rt, &relay);
    let run = sipp(&relay, sc.to_str().unwrap(), &["-m", "1"]);
    assert_sipp_ok(&run, 1, &relay);
    relay.wait_for(
        |v| msg(v) == "tool called" && v["tool"] == "create_booking",
        Duration::from_secs(5),
    );
    // the caller is gone; now the database lets the booking through
    let (pool, mut conn) = blocker;
    rt.block_on(async {
        sqlx::query("COMMIT").execute(&mut *conn).await.unwrap();
        drop(conn);
        pool.close().await;
    });
    let end = ended(&relay);
    assert_eq!(end["reason"], "caller_bye");
    rt.block_on(async {
        let store = Store::open(&relay.database_url(), 1).await.unwrap();
        let call = store.list_calls(1).await.unwrap().remove(0);
        let created = call
            .tool_calls
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "create_booking")
            .cloned()
            .unwrap();
        assert_eq!(created["ok"], true, "{created}");
        let id = created["result"]["booking_id"].as_str().unwrap();
        let b = store.booking_by_code(id).await.unwrap();
        assert!(b.is_some(), "booking {id} was lost");
    });
}

#[test]
fn the_call_time_limit_says_goodbye_then_hangs_up() {
    let relay = start("booking", &[("VOXRELAY__BRIDGE__MAX_CALL_SECONDS", "2")]);
    let run = sipp(&relay, "agent_listen.xml", &["-m", "1"]);
    assert_sipp_ok(&run, 1, &relay);
    let end = ended(&relay);
    assert_eq!(end["reason"], "max_duration");
    // the goodbye prompt (about five seconds) went out before the BYE
    assert!(end["rtp_out"].as_u64().unwrap() > 2 * 50 + 4 * 50, "{end}");
    // and the realtime session was closed
    let sessions = sim_sessions(&relay);
    assert!(sessions[0]["closed"].is_string(), "{:#}", sessions[0]);
}

#[test]
fn a_failing_realtime_service_gets_an_apology_and_a_bye() {
    for fault in [
        "fault-mint-500.toml",
        "fault-calls-5xx.toml",
        "fault-channel-closes.toml",
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config/scenarios")
            .join(fault);
        let relay = start(path.to_str().unwrap(), &[]);
        let run = sipp(&relay, "agent_listen.xml", &["-m", "1"]);
        assert_sipp_ok(&run, 1, &relay);
        let end = ended(&relay);
        assert_eq!(
            end["reason"],
            "realtime_failed",
            "{fault}: {}",
            relay.dump()
        );
        // the apology is about six seconds of audio: never dead air
        assert!(end["rtp_out"].as_u64().unwrap() >= 250, "{fault}: {end}");
        assert!(
            relay.logs().iter().any(|v| msg(v).contains("apologising")),
            "{fault}"
        );
    }
}

#[test]
fn the_session_limit_rolls_over_to_a_new_session_with_the_conversation() {
    let relay = start(&test_scenario("expires.toml"), &[]);
    let dir = tempfile::tempdir().unwrap();
    let sc = scenario_with_speech(dir.path(), "agent_barge_in.xml", 1500);
    let run = sipp(&relay, sc.to_str().unwrap(), &["-m", "1"]);
    assert_sipp_ok(&run, 1, &relay);
    assert_eq!(ended(&relay)["reason"], "caller_bye");
    let sessions = sim_sessions(&relay);
    assert_eq!(sessions.len(), 2, "{sessions:#?}");
    // the second session has the agent's own instructions, word for word: nothing the
    // caller said is in them
    let first = &sessions[0];
    let second = &sessions[1];
    let instructions = second["session"]["instructions"].as_str().unwrap();
    assert_eq!(
        instructions,
        first["session"]["instructions"].as_str().unwrap(),
        "{second:#}"
    );
    assert!(!instructions.contains("Hello, you have reached"));
    // the conversation so far came as conversation items: the agent's greeting as its own
    // words, the caller's turn as a user message
    let items = second["items"].as_array().unwrap();
    let said = |role: &str| -> Vec<String> {
        items
            .iter()
            .filter(|i| i["type"] == "message" && i["role"] == role)
            .filter_map(|i| i["content"][0]["text"].as_str().map(str::to_string))
            .collect()
    };
    let agent = said("assistant");
    assert!(
        agent.first().is_some_and(|t| t.starts_with("Hello")),
        "{items:#?}"
    );
    assert_eq!(
        items
            .iter()
            .find(|i| i["role"] == "assistant")
            .map(|i| i["content"][0]["type"].clone()),
        Some(Value::from("output_text"))
    );
    let caller = said("user");
    assert!(!caller.is_empty(), "the caller's turn: {items:#?}");
    assert!(
        said("system")
            .first()
            .is_some_and(|t| t.contains("already in progress")),
        "{items:#?}"
    );
}

#[test]
fn a_slow_booking_puts_comfort_noise_on_the_line_and_still_completes() {
    let relay = start("booking", &[]);
    let dir = tempfile::tempdir().unwrap();
    let sc = scenario_with_speech(dir.path(), "agent_booking.xml", 1500);
    let rt = rt();
    // the database is busy (another relay writing, say): create_booking waits for it
    let (pool, conn) = lock_database(&rt, &relay);
    let mut conn = Some(conn);
    std::thread::scope(|s| {
        let caller = s.spawn(|| sipp(&relay, sc.to_str().unwrap(), &["-m", "1"]));
        // past 700 ms the caller hears comfort noise instead of dead air
        let hold = relay.wait_for(
            |v| msg(v) == "a tool runs long: the caller hears the hold sound",
            Duration::from_secs(40),
        );
        assert_eq!(hold["sound"], "comfort_noise");
        let mut c = conn.take().unwrap();
        rt.block_on(async {
            sqlx::query("COMMIT").execute(&mut *c).await.unwrap();
            drop(c);
            pool.close().await;
        });
        let run = caller.join().unwrap();
        assert_sipp_ok(&run, 1, &relay);
    });
    let end = ended(&relay);
    assert_eq!(end["reason"], "agent_end_call");
    assert!(end["hold_frames"].as_u64().unwrap() > 0, "{end}");
    let answered = relay.wait_for(
        |v| msg(v) == "tool answered" && v["tool"] == "create_booking",
        Duration::from_secs(1),
    );
    assert_eq!(answered["ok"], true, "{answered}");
    assert!(answered["ms"].as_u64().unwrap() >= 700, "{answered}");
}
