//! Several relays behind Debian's Kamailio (deploy/kamailio/kamailio.cfg) on loopback: calls
//! spread over the relays, failover when one dies, draining on SIGTERM. Real Kamailio, real
//! `voxrelay` processes, SIPp as the trunk. Without kamailio installed these tests fail and
//! say so (CI installs it). Also the relay's side of the contract: OPTIONS 503 when it must
//! not be sent calls.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use support::kamailio::{uri, Kamailio};
use support::uac::Uac;
use support::{msg, sipp_from, sipp_port, Relay, SippRun};

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
/// still fails on a missing or wrong final answer (its step times out).
fn call_through(k: &Kamailio, args: &[&str]) -> SippRun {
    let mut all = vec!["-default_behaviors", "all,-abortunexp"];
    all.extend_from_slice(args);
    sipp_from(
        "127.0.0.1",
        &k.sip.to_string(),
        sipp_port(),
        "call_via_proxy.xml",
        &all,
    )
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

fn options(relay: &Relay) -> support::uac::Msg {
    let mut uac = Uac::new(relay.sip);
    let req = uac.request("OPTIONS", "");
    uac.send_raw(req.as_bytes());
    uac.recv(Duration::from_secs(5))
        .expect("an answer to OPTIONS")
}

#[test]
fn options_says_503_with_retry_after_when_full_then_200_again() {
    let relay = Relay::start(&[("VOXRELAY__SIP__MAX_CALLS", "1")]);
    assert_eq!(options(&relay).status(), 200);
    let mut call = Uac::new(relay.sip);
    assert_eq!(call.invite().status(), 200);
    call.ack();
    let full = options(&relay);
    assert_eq!(full.status(), 503);
    assert_eq!(full.header("retry-after"), Some("5"));
    assert_eq!(call.bye().status(), 200);
    relay.wait_calls_ended(1, Duration::from_secs(10));
    assert_eq!(options(&relay).status(), 200);
}

#[test]
fn a_draining_relay_says_503_to_options_and_invites_and_lets_its_call_finish() {
    let mut relay = Relay::start(&[]);
    let mut call = Uac::new(relay.sip);
    assert_eq!(call.invite().status(), 200);
    call.ack();
    relay.terminate();
    relay.wait_for(|v| msg(v) == "draining", Duration::from_secs(10));
    let probe = options(&relay);
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

/// Waits until the relays together have started `n` calls. The relays' logs are read by
/// threads of their own, so this looks every 20 ms, for at most 30 s.
fn wait_started(relays: &[Relay], n: usize, k: &Kamailio) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while relays.iter().map(started).sum::<usize>() < n {
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
        // Nine long calls up on the relays.
        let long = s.spawn(|| call_through(&k, &["-m", "9", "-r", "9", "-l", "9", "-d", "15000"]));
        wait_started(&relays, 9, &k);
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

#[test]
fn sigterm_one_relay_no_new_calls_for_it_and_its_calls_finish() {
    let mut relays = [Relay::start(&[]), Relay::start(&[]), Relay::start(&[])];
    let all: Vec<&Relay> = relays.iter().collect();
    let k = Kamailio::start(&all);
    let (long, victim, had, rest) = thread::scope(|s| {
        let long = s.spawn(|| call_through(&k, &["-m", "9", "-r", "9", "-l", "9", "-d", "6000"]));
        wait_started(&relays, 9, &k);
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
