//! Several relays behind Debian's Kamailio (deploy/kamailio/kamailio.cfg) on loopback: calls
//! spread over the relays, failover when one dies, draining on SIGTERM, one shared PostgreSQL
//! schedule that no two relays double-book; callers over UDP and TCP, whose in-dialog
//! requests (re-INVITE, BYE) and the relay's own BYE follow the Record-Route set. Real Kamailio, real `voxrelay` processes, SIPp as
//! the trunk. Without kamailio installed these tests fail and
//! say so (CI installs it). Also the relay's side of the contract: OPTIONS 503 when it must
//! not be sent calls.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::agent::{agent_env, get_json, post_json, sim_sessions, test_scenario};
use support::kamailio::{uri, Kamailio};
use support::uac::Uac;
use support::{msg, sipp_from, sipp_port, Relay, SippRun};
use voxrelay::booking::{Status, Store};

/// Calls a relay has taken so far ("call started" in its log).
fn started(relay: &Relay) -> usize {
    relay
        .logs()
        .iter()
        .filter(|v| msg(v) == "call started")
        .count()
}

/// Calls through Kamailio with the record-routing caller scenario. A relay's 180 sometimes
/// reaches the caller after its 200 (over UDP through the proxy; legal), which SIPp would take
/// for a failure: such a late provisional answer is let through (`-abortunexp` off). A call
/// still fails on a missing or wrong final answer: its wait for the 200 times out (40 s).
fn call_through(k: &Kamailio, args: &[&str]) -> SippRun {
    call_through_with(k, "call_via_proxy.xml", args)
}

/// As [`call_through`], with another scenario (a name under tests/sipp, or a path).
fn call_through_with(k: &Kamailio, scenario: &str, args: &[&str]) -> SippRun {
    let mut all = vec!["-default_behaviors", "all,-abortunexp"];
    all.extend_from_slice(args);
    sipp_from("127.0.0.1", &k.sip.to_string(), sipp_port(), scenario, &all)
}

fn logs_of(relays: &[&Relay], k: &Kamailio) -> String {
    let mut s = String::new();
    for (i, r) in relays.iter().enumerate() {
        s.push_str(&format!("--- relay {i} ({})\n{}\n", r.sip, r.dump()));
    }
    s.push_str(&format!("--- kamailio\n{}", k.log()));
    s
}

fn assert_all_ok(run: &SippRun, calls: u64, relays: &[&Relay], k: &Kamailio) {
    assert!(
        run.code == 0 && run.successful == calls && run.failed == 0,
        "SIPp: exit {} successful {} failed {} (wanted {calls})\n{}\n{}",
        run.code,
        run.successful,
        run.failed,
        run.output,
        logs_of(relays, k)
    );
}

/// Waits until the calls each relay has started have all ended.
fn wait_all_ended(relays: &[&Relay]) {
    for r in relays {
        r.wait_calls_ended(started(r), Duration::from_secs(30));
    }
}

#[test]
fn options_says_503_with_retry_after_when_full_then_200_again() {
    let relay = Relay::start(&[("VOXRELAY__SIP__MAX_CALLS", "1")]);
    assert_eq!(relay.options().status(), 200);
    let mut call = Uac::new(relay.sip);
    assert_eq!(call.invite().status(), 200);
    call.ack();
    let full = relay.options();
    assert_eq!(full.status(), 503);
    assert_eq!(full.header("retry-after"), Some("5"));
    assert_eq!(call.bye().status(), 200);
    relay.wait_calls_ended(1, Duration::from_secs(10));
    assert_eq!(relay.options().status(), 200);
}

#[test]
fn a_draining_relay_says_503_to_options_and_invites_and_lets_its_call_finish() {
    let mut relay = Relay::start(&[]);
    let mut call = Uac::new(relay.sip);
    assert_eq!(call.invite().status(), 200);
    call.ack();
    relay.terminate();
    relay.wait_for(|v| msg(v) == "draining", Duration::from_secs(10));
    let probe = relay.options();
    assert_eq!(probe.status(), 503);
    assert!(probe.header("retry-after").is_some());
    assert_eq!(Uac::new(relay.sip).invite().status(), 503);
    // the live call goes on: the caller hangs up when it likes, and the relay then exits
    assert_eq!(call.bye().status(), 200);
    let ended = relay.wait_calls_ended(1, Duration::from_secs(10));
    assert_eq!(ended[0]["reason"], "caller_bye");
    assert_eq!(relay.wait_exit(Duration::from_secs(20)), Some(0));
}

#[test]
fn an_overloaded_relay_is_taken_out_of_the_set_until_it_recovers() {
    let relays = [Relay::start(&[]), Relay::start(&[])];
    let all: Vec<&Relay> = relays.iter().collect();
    let k = Kamailio::start(&all);
    // relay 0 carries eight calls of its own (enough for it to judge its ticks)
    let mut calls: Vec<Uac> = (0..8)
        .map(|_| {
            let mut uac = Uac::new(relays[0].sip);
            assert_eq!(uac.invite().status(), 200);
            uac.ack();
            uac
        })
        .collect();
    let starving = AtomicBool::new(true);
    thread::scope(|s| {
        // its machine has no CPU to spare: the process stopped 100 ms of every 200, at most
        // a minute; each stop is far shorter than the dispatcher's probe timeout
        s.spawn(|| relays[0].starve_while(&starving));
        relays[0].wait_for(
            |v| msg(v).starts_with("overloaded"),
            Duration::from_secs(30),
        );
        k.wait_until(
            |d| d.iter().any(|x| x.uri == uri(&relays[0]) && !x.active()),
            Duration::from_secs(5),
            "the overloaded relay inactive",
        );
        // every new call goes to the other relay, and none fails
        let run = call_through(&k, &["-m", "10", "-r", "10", "-l", "10", "-d", "200"]);
        assert_all_ok(&run, 10, &all, &k);
        assert_eq!(started(&relays[0]), 8, "{}", logs_of(&all, &k));
        assert_eq!(started(&relays[1]), 10, "{}", logs_of(&all, &k));
        starving.store(false, Ordering::Release);
    });
    // the machine recovers: the relay takes calls again, and is back in the set
    relays[0].wait_for(
        |v| msg(v) == "no longer overloaded: new calls are taken",
        Duration::from_secs(30),
    );
    k.wait_until(
        |d| d.iter().all(|x| x.active()),
        Duration::from_secs(5),
        "both relays active again",
    );
    let run = call_through(&k, &["-m", "20", "-r", "20", "-l", "20", "-d", "200"]);
    assert_all_ok(&run, 20, &all, &k);
    assert!(started(&relays[0]) > 8, "{}", logs_of(&all, &k));
    // its own calls were up all along
    for c in &mut calls {
        assert_eq!(c.bye().status(), 200);
    }
    wait_all_ended(&all);
}

/// A relay that must hang up before the caller's ACK of its 200 OK (here the operator, at
/// once) sends its BYE only after that ACK (RFC 3261 15): behind a proxy a BYE sent at once
/// can overtake the 200 on its way to the caller. Two repeats of the 200 (the stack resends
/// it at 0.5 s, then 1 s later) come first, and no BYE among them.
#[test]
fn a_relay_hanging_up_before_the_ack_sends_its_bye_after_it() {
    let relay = Relay::start(&[]);
    let admin = format!("http://{}", relay.admin);
    let mut uac = Uac::new(relay.sip);
    assert_eq!(uac.invite().status(), 200);
    let answered = relay.wait_for(|v| msg(v) == "call answered", Duration::from_secs(10));
    let id = answered["span"]["id"].as_str().unwrap().to_string();
    let (status, body) = post_json(&format!("{admin}/api/calls/{id}/hangup"), &json!({}));
    assert_eq!(status, 202, "{body}");
    relay.wait_for(|v| msg(v) == "the operator hung up", Duration::from_secs(5));
    let mut repeats = 0;
    while repeats < 2 {
        let m = uac.recv(Duration::from_secs(5)).expect("the 200 repeated");
        assert_ne!(m.method(), "BYE", "a BYE before the ACK: {m:?}");
        if m.status() == 200 {
            repeats += 1;
        }
    }
    uac.ack();
    let bye = loop {
        let m = uac
            .recv(Duration::from_secs(5))
            .expect("the BYE after the ACK");
        if m.method() == "BYE" {
            break m;
        }
    };
    uac.reply_ok(&bye);
    let end = relay.wait_calls_ended(1, Duration::from_secs(10)).remove(0);
    assert_eq!(end["reason"], "operator_hangup", "{end}");
}

#[test]
fn a_hundred_calls_through_kamailio_spread_over_three_relays() {
    let relays = [Relay::start(&[]), Relay::start(&[]), Relay::start(&[])];
    let all: Vec<&Relay> = relays.iter().collect();
    let k = Kamailio::start(&all);
    let run = call_through(&k, &["-m", "100", "-r", "20", "-l", "40", "-d", "500"]);
    assert_all_ok(&run, 100, &all, &k);
    wait_all_ended(&all);
    let counts: Vec<usize> = relays.iter().map(started).collect();
    eprintln!("calls per relay: {counts:?}");
    assert_eq!(counts.iter().sum::<usize>(), 100, "{counts:?}");
    for c in &counts {
        assert!(*c > 0 && *c <= 50, "one relay took {c} of 100: {counts:?}");
    }
    for r in &relays {
        for e in r.logs().iter().filter(|v| msg(v) == "call ended") {
            assert_eq!(e["reason"], "caller_bye", "{e}");
        }
    }
}

/// Calls a relay has answered so far ("call answered" in its log).
fn answered(relay: &Relay) -> usize {
    relay
        .logs()
        .iter()
        .filter(|v| msg(v) == "call answered")
        .count()
}

/// Waits until the relays together have answered `n` calls, so that none of them is still
/// ringing. The relays' logs are read by threads of their own, so this looks every 20 ms, for
/// at most 30 s.
fn wait_answered(relays: &[Relay], n: usize, k: &Kamailio) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while relays.iter().map(answered).sum::<usize>() < n {
        let all: Vec<&Relay> = relays.iter().collect();
        assert!(Instant::now() < deadline, "{}", logs_of(&all, k));
        thread::sleep(Duration::from_millis(20));
    }
}

/// Seconds since midnight UTC now.
fn seconds_of_day_now() -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    now.as_secs_f64().rem_euclid(86_400.0)
}

/// Seconds since midnight of a log timestamp such as `2026-12-05T02:30:42.869022Z`.
fn seconds_of_day(ts: &str) -> Option<f64> {
    let time = ts.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

#[test]
fn kill_9_one_relay_its_calls_end_and_new_calls_go_to_the_others() {
    let relays = [Relay::start(&[]), Relay::start(&[]), Relay::start(&[])];
    let all: Vec<&Relay> = relays.iter().collect();
    let k = Kamailio::start(&all);
    let long = thread::scope(|s| {
        // Nine long calls up on the relays, all answered (a call still ringing on the relay
        // that dies goes to another: a_relay_killed_while_a_call_rings_...).
        let long = s.spawn(|| call_through(&k, &["-m", "9", "-r", "9", "-l", "9", "-d", "15000"]));
        wait_answered(&relays, 9, &k);
        // The relay with the most calls dies.
        let victim = (0..3).max_by_key(|&i| started(&relays[i])).unwrap();
        let lost = started(&relays[victim]);
        let dead = uri(&relays[victim]);
        let killed_at = Instant::now();
        let killed_wall = seconds_of_day_now();
        relays[victim].kill();
        let kam = &k;
        let out = s.spawn(move || {
            kam.wait_until(
                |d| d.iter().any(|x| x.uri == dead && !x.active()),
                Duration::from_secs(5),
                "the killed relay inactive",
            )
        });
        // New calls right after the kill: every one succeeds, on the other relays.
        let first = call_through(&k, &["-m", "6", "-r", "6", "-l", "6", "-d", "100"]);
        let first_done = killed_at.elapsed();
        let out = out.join().unwrap();
        let rest = call_through(&k, &["-m", "30", "-r", "15", "-l", "30", "-d", "200"]);
        (
            long.join().unwrap(),
            victim,
            lost,
            first,
            first_done,
            out,
            rest,
            killed_wall,
        )
    });
    let (long, victim, lost, first, first_done, out, rest, killed_wall) = long;
    let others: Vec<&Relay> = (0..3)
        .filter(|&i| i != victim)
        .map(|i| &relays[i])
        .collect();
    // The first call a surviving relay answered after the kill (the long calls were all
    // answered before it), from the relays' log timestamps.
    let answered_after_kill: Vec<f64> = others
        .iter()
        .flat_map(|r| r.logs())
        .filter(|v| msg(v) == "call answered")
        .filter_map(|v| v["timestamp"].as_str().and_then(seconds_of_day))
        .map(|t| (t - killed_wall).rem_euclid(86_400.0))
        .filter(|d| *d < 3_600.0)
        .collect();
    let first_answer = answered_after_kill.iter().copied().fold(f64::MAX, f64::min);
    // The last of the six made right after the kill: one that hashed to the dead relay and
    // waited for the failover.
    let last_of_six = answered_after_kill
        .iter()
        .copied()
        .filter(|d| *d < first_done.as_secs_f64())
        .fold(0.0, f64::max);
    eprintln!(
        "killed relay {victim} with {lost} live calls; first new call answered {first_answer:.3} s \
         after the kill, the last of the first 6 {last_of_six:.3} s after it; the 6 calls made right after the kill were all answered and hung up \
         {first_done:?} after it; the dispatcher showed the relay inactive {out:?} after it"
    );
    assert_all_ok(&first, 6, &others, &k);
    assert_all_ok(&rest, 30, &others, &k);
    // The dead relay's calls end (their BYE finds nobody); the others' finish normally.
    assert_eq!(long.successful, 9 - lost as u64, "{}", long.output);
    assert_eq!(long.failed, lost as u64, "{}", long.output);
    wait_all_ended(&others);
    let on_others: usize = others.iter().map(|r| started(r)).sum();
    assert_eq!(on_others, 9 - lost + 36, "{}", logs_of(&all, &k));
}

/// A relay that dies after its 100 and 180, before it answers: the call was answered nowhere,
/// so once the relay has been silent for Kamailio's `ANSWER_TIMEOUT` (here 5 s) the call goes
/// to the other relay, which answers it; the caller sees one call, answered. (Before, Kamailio
/// passed its 408 to the caller.) The relays ring 3 s before answering (echo agent,
/// `bridge.answer_delay_ms`) so that the first can be killed while it rings; its 100 Trying
/// left before its "call started" line (src/sip/server.rs), so Kamailio has had a reply.
#[test]
fn a_relay_killed_while_a_call_rings_on_it_the_call_is_answered_by_another() {
    let ringing = [("VOXRELAY__BRIDGE__ANSWER_DELAY_MS", "3000")];
    let relays = [Relay::start(&ringing), Relay::start(&ringing)];
    let all: Vec<&Relay> = relays.iter().collect();
    let k = Kamailio::start_with(&all, &["ANSWER_TIMEOUT=5000"]);
    let (run, victim, killed_at) = thread::scope(|s| {
        let call = s.spawn(|| call_through(&k, &["-m", "1", "-d", "500"]));
        let deadline = Instant::now() + Duration::from_secs(10);
        let victim = loop {
            if let Some(i) = (0..2).find(|&i| started(&relays[i]) > 0) {
                break i;
            }
            assert!(Instant::now() < deadline, "{}", logs_of(&all, &k));
            thread::sleep(Duration::from_millis(5));
        };
        relays[victim].kill();
        let killed_at = Instant::now();
        (call.join().unwrap(), victim, killed_at)
    });
    let done = killed_at.elapsed();
    let other = &relays[1 - victim];
    assert_all_ok(&run, 1, &all, &k);
    assert_eq!(answered(&relays[victim]), 0, "{}", logs_of(&all, &k));
    assert_eq!(started(other), 1, "{}", logs_of(&all, &k));
    let end = other.wait_calls_ended(1, Duration::from_secs(10)).remove(0);
    assert_eq!(end["reason"], "caller_bye", "{end}");
    eprintln!("relay {victim} killed while the call rang; the call was answered by the other and hung up {done:?} after the kill");
}

#[test]
fn sigterm_one_relay_no_new_calls_for_it_and_its_calls_finish() {
    let mut relays = [Relay::start(&[]), Relay::start(&[]), Relay::start(&[])];
    let all: Vec<&Relay> = relays.iter().collect();
    let k = Kamailio::start(&all);
    let (long, victim, had, rest) = thread::scope(|s| {
        let long = s.spawn(|| call_through(&k, &["-m", "9", "-r", "9", "-l", "9", "-d", "6000"]));
        wait_answered(&relays, 9, &k);
        let victim = (0..3).max_by_key(|&i| started(&relays[i])).unwrap();
        let had = started(&relays[victim]);
        relays[victim].terminate();
        // Its OPTIONS answer turns 503: the dispatcher takes it out.
        k.wait_until(
            |d| {
                d.iter()
                    .any(|x| x.uri == uri(&relays[victim]) && !x.active())
            },
            Duration::from_secs(5),
            "the draining relay inactive",
        );
        let rest = call_through(&k, &["-m", "30", "-r", "15", "-l", "30", "-d", "200"]);
        (long.join().unwrap(), victim, had, rest)
    });
    // No caller got an error: the long calls (the draining relay's too) and the new ones.
    assert_all_ok(&long, 9, &all, &k);
    assert_all_ok(&rest, 30, &all, &k);
    // No new call went to the draining relay, and its calls ended by the caller's BYE.
    assert_eq!(started(&relays[victim]), had, "{}", logs_of(&all, &k));
    let ended = relays[victim].wait_calls_ended(had, Duration::from_secs(30));
    assert!(
        ended.iter().all(|e| e["reason"] == "caller_bye"),
        "{ended:?}"
    );
    let others: Vec<&Relay> = (0..3)
        .filter(|&i| i != victim)
        .map(|i| &relays[i])
        .collect();
    wait_all_ended(&others);
    assert_eq!(
        others.iter().map(|r| started(r)).sum::<usize>(),
        9 - had + 30
    );
    // Once its calls are over the relay stops by itself, cleanly.
    drop((all, others));
    assert_eq!(relays[victim].wait_exit(Duration::from_secs(30)), Some(0));
}

/// The `create_booking` call of a stored call record: its arguments and the answer the model got.
fn create_booking_of(record: &voxrelay::booking::CallRecord) -> (Value, Value, bool) {
    let tools = record.tool_calls.as_array().cloned().unwrap_or_default();
    let calls: Vec<&Value> = tools
        .iter()
        .filter(|t| t["name"] == "create_booking")
        .collect();
    assert_eq!(calls.len(), 1, "one create_booking per call: {tools:#?}");
    let t = calls[0];
    (
        t["arguments"].clone(),
        t["result"].clone(),
        t["ok"].as_bool().unwrap_or(false),
    )
}

/// Ten callers at once, spread by Kamailio over three relays that share one PostgreSQL
/// database, each a different patient (the key the caller presses picks the patient in
/// tests/scenarios/one_slot.toml) asking the agent for the same appointment. The database's
/// unique index on active slots decides: one booking, and nine answers that the slot is
/// taken, which the agent reads to its caller.
#[test]
fn ten_callers_on_different_relays_asking_for_one_slot_get_exactly_one_booking() {
    let pg = support::postgres::shared();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = rt.block_on(pg.create_database());
    let agent = agent_env(&test_scenario("one_slot.toml"));
    let mut env: Vec<(&str, &str)> = agent
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.push(("VOXRELAY__BOOKING__DATABASE_URL", &url));
    let relays = [Relay::start(&env), Relay::start(&env), Relay::start(&env)];
    let all: Vec<&Relay> = relays.iter().collect();
    let k = Kamailio::start(&all);

    // One SIPp per caller, all at once: each presses its own key (SIPp plays a pcap named in
    // the scenario, so the key cannot change from call to call within one SIPp run).
    let dir = tempfile::tempdir().unwrap();
    let template = std::fs::read_to_string(support::scenario("agent_key_via_proxy.xml")).unwrap();
    let scenarios: Vec<String> = (0..10)
        .map(|key| {
            let path = dir.path().join(format!("key{key}.xml"));
            let pcap = format!("/usr/share/sip-tester/dtmf_2833_{key}.pcap");
            std::fs::write(&path, template.replace("KEY_PCAP", &pcap)).unwrap();
            path.display().to_string()
        })
        .collect();
    let runs: Vec<SippRun> = thread::scope(|s| {
        let callers: Vec<_> = scenarios
            .iter()
            .map(|sc| {
                let k = &k;
                s.spawn(move || call_through_with(k, sc, &["-m", "1"]))
            })
            .collect();
        callers.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for run in &runs {
        assert_all_ok(run, 1, &all, &k);
    }
    wait_all_ended(&all);

    // The calls went to more than one relay.
    let counts: Vec<usize> = relays.iter().map(started).collect();
    eprintln!("calls per relay: {counts:?}");
    assert_eq!(counts.iter().sum::<usize>(), 10, "{counts:?}");
    assert!(
        counts.iter().filter(|c| **c > 0).count() >= 2,
        "all ten calls on one relay: {counts:?}"
    );

    rt.block_on(async {
        let store = Store::open(&url, 2).await.unwrap();
        // Every relay stored its calls in the shared database, each with its booking attempt.
        let records = store.list_calls(50).await.unwrap();
        assert_eq!(records.len(), 10, "{records:#?}");
        let attempts: Vec<(Value, Value, bool)> = records.iter().map(create_booking_of).collect();
        let patients: std::collections::BTreeSet<&str> = attempts
            .iter()
            .map(|(args, _, _)| args["patient_name"].as_str().unwrap())
            .collect();
        assert_eq!(patients.len(), 10, "ten different patients: {patients:?}");
        let (date, time) = (&attempts[0].0["date"], &attempts[0].0["time"]);
        assert!(
            attempts
                .iter()
                .all(|(a, _, _)| &a["date"] == date && &a["time"] == time),
            "one slot asked for: {attempts:#?}"
        );
        let date: chrono::NaiveDate = date.as_str().unwrap().parse().unwrap();
        // How close together the ten attempts were and how long each took (for the reader;
        // not asserted).
        let (asked, took): (Vec<chrono::DateTime<chrono::Utc>>, Vec<Value>) = records
            .iter()
            .filter_map(|r| {
                let t = r
                    .tool_calls
                    .as_array()?
                    .iter()
                    .find(|t| t["name"] == "create_booking")?;
                let at = r.started_at + chrono::Duration::milliseconds(t["at_ms"].as_i64()?);
                Some((at, t["duration_ms"].clone()))
            })
            .unzip();
        eprintln!("create_booking took (ms): {}", Value::Array(took));
        if let (Some(first), Some(last)) = (asked.iter().min(), asked.iter().max()) {
            eprintln!(
                "the ten create_booking calls came within {} ms",
                (*last - *first).num_milliseconds()
            );
        }

        // One caller got the slot; the nine others an error saying it is taken.
        let won: Vec<&(Value, Value, bool)> = attempts.iter().filter(|(_, _, ok)| *ok).collect();
        assert_eq!(won.len(), 1, "{attempts:#?}");
        let (winner, booked, _) = won[0];
        assert_eq!(booked["booked"], true, "{booked}");
        assert_eq!(booked["already_booked"], false, "{booked}");
        for (args, result, ok) in &attempts {
            if !ok {
                assert_eq!(result["error"], true, "{args} {result}");
                let said = result["message"].as_str().unwrap_or("");
                assert!(said.contains("is already taken"), "{args} {result}");
            }
        }
        // The agent read each answer to its caller.
        for r in &records {
            let agent_said: Vec<&str> = r
                .transcript
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["speaker"] == "agent")
                .filter_map(|t| t["text"].as_str())
                .collect();
            assert!(
                agent_said
                    .iter()
                    .any(|t| t.contains("already taken") || t.starts_with("Booked ")),
                "{agent_said:#?}"
            );
            assert_eq!(r.outcome, "agent_end_call", "{r:#?}");
        }

        // Exactly one booking on that day: the winner's, active, at 10:00.
        let on_day = store.bookings_on(date).await.unwrap();
        assert_eq!(on_day.len(), 1, "{on_day:#?}");
        let b = &on_day[0];
        assert_eq!(b.status, Status::Active);
        assert_eq!(b.time.format("%H:%M").to_string(), "10:00");
        assert_eq!(b.patient_name, winner["patient_name"].as_str().unwrap());
        assert_eq!(b.code, booked["booking_id"].as_str().unwrap());
    });

    // What the model itself was given, from each relay's simulator: one booking, nine errors.
    let outputs: Vec<Value> = relays
        .iter()
        .flat_map(sim_sessions)
        .flat_map(|s| s["tool_outputs"].as_array().cloned().unwrap_or_default())
        .filter(|o| o["name"] == "create_booking")
        .map(|o| serde_json::from_str(o["output"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(outputs.len(), 10, "{outputs:#?}");
    let refused = outputs.iter().filter(|o| o["error"] == true).count();
    let booked = outputs.iter().filter(|o| o["booked"] == true).count();
    assert_eq!((booked, refused), (1, 9), "{outputs:#?}");
}

/// SIPp's arguments for one caller over `transport` ("udp" or "tcp": `-t t1`, one connection to
/// Kamailio), with SIPp's `<log>` lines written to `log` when given.
fn one_caller(transport: &str, log: Option<&std::path::Path>) -> Vec<String> {
    let mut args = vec!["-m".to_string(), "1".to_string()];
    if let Some(log) = log {
        args.extend(["-trace_logs".into(), "-log_file".into()]);
        args.push(log.display().to_string());
    }
    if transport == "tcp" {
        args.extend(["-t".to_string(), "t1".to_string()]);
    }
    args
}

/// Asserts that the relay's call came from Kamailio, over UDP whatever the caller's transport
/// (the dispatcher's URIs name none).
fn assert_came_through(relay: &Relay, k: &Kamailio) {
    let started = relay.wait_for(|v| msg(v) == "call started", Duration::from_secs(1));
    assert_eq!(started["source"], k.sip.to_string(), "{started}");
    assert_eq!(started["transport"], "udp", "{started}");
}

/// What SIPp logged after `key ` (see tests/sipp/operator_hangs_up_via_proxy.xml): the
/// values of that header, without its name (SIPp joins several with ", ").
fn logged(log: &str, key: &str) -> Vec<String> {
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .unwrap_or_else(|| panic!("no {key} in SIPp's log: {log}"));
    let value = line.split_once(": ").map_or(line, |(_, v)| v).trim();
    value
        .split(", ")
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect()
}

/// The operator hangs up a call that came in through Kamailio over `transport`: the relay's
/// BYE follows the Record-Route set, so it reaches the caller through Kamailio (Kamailio's
/// Via on top of the relay's, no Route left in it), the caller's 200 goes back the same way,
/// and the call's record says the operator ended it.
fn the_operator_hangs_up_through_kamailio(transport: &str) {
    let relay = Relay::start(&[]);
    let k = Kamailio::start(&[&relay]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("bye.log");
    let args = one_caller(transport, Some(&log));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let admin = format!("http://{}", relay.admin);
    let run = thread::scope(|s| {
        let k = &k;
        let caller =
            s.spawn(move || call_through_with(k, "operator_hangs_up_via_proxy.xml", &args));
        let answered = relay.wait_for(|v| msg(v) == "call answered", Duration::from_secs(10));
        let id = answered["span"]["id"].as_str().unwrap().to_string();
        let (status, body) = post_json(&format!("{admin}/api/calls/{id}/hangup"), &json!({}));
        assert_eq!(status, 202, "{body}");
        caller.join().unwrap()
    });
    assert_all_ok(&run, 1, &[&relay], &k);
    assert_came_through(&relay, &k);
    let end = relay.wait_calls_ended(1, Duration::from_secs(10)).remove(0);
    assert_eq!(end["reason"], "operator_hangup", "{end}");
    let calls = get_json(&format!("{admin}/api/calls?state=ended"));
    assert_eq!(
        calls["calls"][0]["end_reason"], "operator_hangup",
        "{calls:#}"
    );

    // How the BYE reached the caller.
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    let proto = transport.to_ascii_uppercase();
    let vias = logged(&log, "BYE-VIA");
    assert_eq!(vias.len(), 2, "Kamailio's Via and the relay's: {log}");
    assert!(
        vias[0].starts_with(&format!("SIP/2.0/{proto} {};branch=", k.sip)),
        "the BYE came from Kamailio ({} over {proto}): {log}",
        k.sip
    );
    assert!(
        vias[1].starts_with(&format!("SIP/2.0/UDP {};", relay.sip)),
        "the relay ({}) sent it to Kamailio over UDP: {log}",
        relay.sip
    );
    let uri = logged(&log, "BYE-URI");
    assert!(
        uri.len() == 1 && uri[0].starts_with("sip:caller@127.0.0.1:"),
        "to the caller's Contact: {log}"
    );
    assert_eq!(logged(&log, "BYE-ROUTE"), Vec::<String>::new(), "{log}");
}

#[test]
fn the_operators_hangup_reaches_a_udp_caller_through_kamailio() {
    the_operator_hangs_up_through_kamailio("udp");
}

#[test]
fn the_operators_hangup_reaches_a_tcp_caller_through_kamailio() {
    the_operator_hangs_up_through_kamailio("tcp");
}

/// A caller over `transport` through Kamailio holds the call and resumes it (two re-INVITEs
/// along the Record-Route set, each answered by the relay with the mirrored direction),
/// talks to the echo (media straight between caller and relay), and hangs up.
fn hold_and_resume_through_kamailio(transport: &str) {
    let relay = Relay::start(&[]);
    let k = Kamailio::start(&[&relay]);
    let args = one_caller(transport, None);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = call_through_with(&k, "hold_resume_via_proxy.xml", &args);
    assert_all_ok(&run, 1, &[&relay], &k);
    let end = relay.wait_calls_ended(1, Duration::from_secs(10)).remove(0);
    assert_eq!(end["reason"], "caller_bye", "{end}");
    assert_came_through(&relay, &k);
    // both re-INVITEs reached the relay, which put the call on hold and back
    let changes: Vec<Value> = relay
        .logs()
        .iter()
        .filter(|v| msg(v) == "call media changed")
        .map(|v| v["direction"].clone())
        .collect();
    assert_eq!(
        changes,
        [json!("recvonly"), json!("sendrecv")],
        "{}",
        relay.dump()
    );
    // media flowed straight between caller and relay, both ways
    assert!(end["rtp_in"].as_u64().unwrap() > 0, "{end}");
    assert!(end["rtp_out"].as_u64().unwrap() > 0, "{end}");
}

#[test]
fn a_tcp_caller_through_kamailio_holds_resumes_and_hangs_up() {
    hold_and_resume_through_kamailio("tcp");
}

#[test]
fn a_udp_caller_through_kamailio_holds_resumes_and_hangs_up() {
    hold_and_resume_through_kamailio("udp");
}
