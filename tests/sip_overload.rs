//! Overload: a relay whose calls' media ticks run late refuses new calls with 503 until
//! they run on time again, and the calls already up go on. The real `voxrelay` binary on
//! loopback, with the echo agent; SIPp and a small hand-made caller as the peers. The
//! machine's starvation is made by stopping the relay's process again and again.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::agent::post_json;
use support::uac::Uac;
use support::{assert_sipp_ok, msg, sipp, Relay};

/// Enough calls for the relay to judge its ticks (five calls' worth a second, or more).
const CALLS: usize = 8;

/// [`CALLS`] calls to `relay`, answered and acknowledged.
fn calls_up(relay: &Relay) -> Vec<Uac> {
    (0..CALLS)
        .map(|_| {
            let mut uac = Uac::new(relay.sip);
            assert_eq!(uac.invite().status(), 200);
            uac.ack();
            uac
        })
        .collect()
}

/// Starves the relay ([`Relay::starve_while`]) in a thread until the returned flag is
/// cleared.
fn starve(relay: &Arc<Relay>) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let on = Arc::new(AtomicBool::new(true));
    let (r, flag) = (relay.clone(), on.clone());
    (on, std::thread::spawn(move || r.starve_while(&flag)))
}

#[test]
fn a_starved_relay_refuses_new_calls_and_keeps_the_calls_it_has() {
    // a trunk the relay could place calls through (nothing listens there: none is placed)
    let trunk = r#"[{name = "out", addresses = ["127.0.0.1/32"], outbound_proxy = "127.0.0.1:9"}]"#;
    // and the receptionist to place it for; the calls in get the echo agent
    let relay = Arc::new(Relay::start(&[
        ("VOXRELAY__TRUNKS", trunk),
        (
            "VOXRELAY__ROUTES",
            r#"{"*" = "echo", "+15551230000" = "receptionist"}"#,
        ),
    ]));
    let mut calls = calls_up(&relay);
    assert_eq!(relay.metric("voxrelay_overloaded").unwrap(), 0.0);
    assert_eq!(relay.options().status(), 200, "a healthy relay takes calls");

    let (starving, stalls) = starve(&relay);
    let entered = relay.wait_for(
        |v| msg(v).starts_with("overloaded"),
        Duration::from_secs(30),
    );
    let late: f64 = entered["late_percent"].as_str().unwrap().parse().unwrap();
    assert!(late >= 2.0, "{entered}");
    assert_eq!(relay.metric("voxrelay_overloaded").unwrap(), 1.0);
    assert!(relay.metric("voxrelay_media_ticks_late_total").unwrap() > 0.0);

    // while it stays starved: a new INVITE gets 503 with Retry-After (SIPp checks the
    // header), and so does a proxy's OPTIONS probe
    assert_sipp_ok(&sipp(&relay, "busy.xml", &["-m", "1"]), 1, &relay);
    let probe = relay.options();
    assert_eq!(probe.status(), 503);
    assert!(probe.header("retry-after").is_some());
    assert!(relay
        .logs()
        .iter()
        .any(|v| msg(v).starts_with("call refused: overloaded")));
    // nor does it place a call of its own
    let (status, answer) = post_json(
        &format!("http://{}/api/calls", relay.admin),
        &serde_json::json!({"to": "+12015550123", "agent": "receptionist"}),
    );
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("relay_busy"), "{answer}");

    // the machine recovers: calls are taken again, and the calls up all along are still up
    starving.store(false, Ordering::Release);
    stalls.join().unwrap();
    relay.wait_for(
        |v| msg(v) == "no longer overloaded: new calls are taken",
        Duration::from_secs(30),
    );
    assert_eq!(relay.metric("voxrelay_overloaded").unwrap(), 0.0);
    assert_eq!(relay.options().status(), 200);
    let mut after = Uac::new(relay.sip);
    assert_eq!(after.invite().status(), 200);
    after.ack();
    assert_eq!(
        relay.metric("voxrelay_calls_active").unwrap(),
        (CALLS + 1) as f64
    );
    for uac in calls.iter_mut().chain(std::iter::once(&mut after)) {
        assert_eq!(uac.bye().status(), 200, "the call was still up");
    }
    let ended = relay.wait_calls_ended(CALLS + 1, Duration::from_secs(30));
    assert!(
        ended.iter().all(|v| v["reason"] == "caller_bye"),
        "{ended:?}"
    );
}

#[test]
fn with_the_guard_off_a_starved_relay_takes_calls() {
    let relay = Arc::new(Relay::start(&[(
        "VOXRELAY__SIP__OVERLOAD_LATE_TICKS_PERCENT",
        "0",
    )]));
    let mut calls = calls_up(&relay);
    let (starving, stalls) = starve(&relay);
    // as many late ticks as took the guarded relay out of service
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // a counter has no event to wait on: it is read every 50 ms, for at most 30 s
    while relay.metric("voxrelay_media_ticks_late_total").unwrap() < (CALLS * 50) as f64 {
        assert!(
            std::time::Instant::now() < deadline,
            "too few late ticks counted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut more = Uac::new(relay.sip);
    assert_eq!(more.invite().status(), 200);
    more.ack();
    starving.store(false, Ordering::Release);
    stalls.join().unwrap();
    assert_eq!(relay.metric("voxrelay_overloaded").unwrap(), 0.0);
    for uac in calls.iter_mut().chain(std::iter::once(&mut more)) {
        assert_eq!(uac.bye().status(), 200);
    }
}
