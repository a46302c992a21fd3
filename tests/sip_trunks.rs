//! Trunks and access control against the real binary: address lists, routes, digest
//! authentication of a trunk, registration to a SIPp registrar, a flood from one address,
//! and responses that follow the request's real source (rport).

mod support;

use std::time::Duration;

use support::uac::Uac;
use support::{assert_sipp_ok, msg, sipp, sipp_from, sipp_port, Relay};

const TRUNK_LOCAL: &str = r#"[{name = "main", addresses = ["127.0.0.1/32"]}]"#;

#[test]
fn only_the_trunks_addresses_may_call() {
    let relay = Relay::start(&[("VOXRELAY__TRUNKS", TRUNK_LOCAL)]);
    // From the trunk's address: a normal call.
    assert_sipp_ok(
        &sipp(&relay, "call_pcap.xml", &["-m", "1", "-d", "500"]),
        1,
        &relay,
    );
    let started = relay.wait_for(|v| msg(v) == "call started", Duration::from_secs(5));
    assert_eq!(started["trunk"], "main");
    // From another address: 403, and no call reaches an agent.
    let run = sipp_from(
        "127.0.0.2",
        &relay.sip.to_string(),
        sipp_port(),
        "refused_403.xml",
        &["-m", "1"],
    );
    assert_sipp_ok(&run, 1, &relay);
    let calls = relay
        .logs()
        .iter()
        .filter(|v| msg(v) == "call started")
        .count();
    assert_eq!(calls, 1);
}

#[test]
fn in_ignore_mode_an_unknown_source_gets_no_answer_at_all() {
    let relay = Relay::start(&[
        ("VOXRELAY__TRUNKS", TRUNK_LOCAL),
        ("VOXRELAY__SIP__UNKNOWN_SOURCE", "ignore"),
    ]);
    let mut stranger = Uac::new_from("127.0.0.2", relay.sip);
    let options = stranger.request("OPTIONS", "");
    stranger.send_raw(options.as_bytes());
    assert!(
        stranger.recv(Duration::from_secs(2)).is_none(),
        "a scanner learns nothing"
    );
    // The trunk is still answered.
    let mut trunk = Uac::new(relay.sip);
    let options = trunk.request("OPTIONS", "");
    trunk.send_raw(options.as_bytes());
    assert_eq!(
        trunk
            .recv(Duration::from_secs(5))
            .expect("an answer")
            .status(),
        200
    );
}

#[test]
fn the_dialled_number_picks_the_agent_and_unknown_numbers_get_404() {
    let relay = Relay::start(&[("VOXRELAY__ROUTES", r#"{"+15551230000" = "echo"}"#)]);
    let mut known = Uac::new(relay.sip);
    known.dial = "+15551230000".into();
    assert_eq!(known.invite().status(), 200);
    known.ack();
    let started = relay.wait_for(|v| msg(v) == "call started", Duration::from_secs(5));
    assert_eq!(started["agent"], "echo");
    assert_eq!(known.bye().status(), 200);
    let run = sipp(
        &relay,
        "refused_404.xml",
        &["-m", "1", "-s", "+15559999999"],
    );
    assert_sipp_ok(&run, 1, &relay);
}

#[test]
fn a_trunk_with_inbound_auth_must_answer_the_digest_challenge() {
    let trunk = r#"[{name = "auth", addresses = ["127.0.0.1/32"], username = "trunkuser", password_env = "TEST_TRUNK_PW", inbound_auth = true}]"#;
    let relay = Relay::start(&[("VOXRELAY__TRUNKS", trunk), ("TEST_TRUNK_PW", "pa55-w0rd")]);
    // Right credentials: challenged once, then answered.
    // The digest uri must be the Request-URI (SIPp writes sip:<remote> unless told).
    let auth_uri = format!("reception@{}", relay.sip);
    let run = sipp(
        &relay,
        "auth_call.xml",
        &[
            "-m",
            "1",
            "-au",
            "trunkuser",
            "-ap",
            "pa55-w0rd",
            "-auth_uri",
            &auth_uri,
        ],
    );
    assert_sipp_ok(&run, 1, &relay);
    relay.wait_for(
        |v| msg(v) == "call ended" && v["reason"] == "caller_bye",
        Duration::from_secs(5),
    );
    // Wrong password: the second INVITE is challenged again, no call starts.
    let run = sipp(
        &relay,
        "auth_call.xml",
        &[
            "-m",
            "1",
            "-au",
            "trunkuser",
            "-ap",
            "wrong",
            "-auth_uri",
            &auth_uri,
        ],
    );
    assert_ne!(
        run.code, 0,
        "a wrong password must not get through:\n{}",
        run.output
    );
    assert!(run.output.contains("401"), "{}", run.output);
    // No credentials at all: 401.
    assert_sipp_ok(&sipp(&relay, "refused_401.xml", &["-m", "1"]), 1, &relay);
    let calls = relay
        .logs()
        .iter()
        .filter(|v| msg(v) == "call started")
        .count();
    assert_eq!(calls, 1);
    assert!(
        !relay.dump().contains("pa55-w0rd"),
        "the trunk password never appears in the logs"
    );
}

#[test]
fn the_relay_registers_with_digest_and_refreshes_before_expiry() {
    let port = sipp_port();
    let registrar = std::thread::spawn(move || {
        sipp_from(
            "127.0.0.1",
            "127.0.0.1:9",
            port,
            "registrar.xml",
            &["-m", "1"],
        )
    });
    let trunk = format!(
        r#"[{{name = "reg", registrar = "sip:127.0.0.1:{port}", username = "relay1", password_env = "TEST_REG_PW", expires = 120, addresses = ["127.0.0.1/32"]}}]"#
    );
    let relay = Relay::start(&[("VOXRELAY__TRUNKS", &trunk), ("TEST_REG_PW", "secret1")]);
    let run = registrar.join().unwrap();
    assert!(
        run.code == 0 && run.successful == 1,
        "the registrar saw a good digest and a refresh: exit {}\n{}\nrelay:\n{}",
        run.code,
        run.output,
        relay.dump()
    );
    relay.wait_for(
        |v| msg(v) == "trunk registered" && v["trunk"] == "reg",
        Duration::from_secs(5),
    );
    assert!(!relay.dump().contains("secret1"));
}

#[test]
fn a_flood_from_one_address_does_not_stop_the_trunks_calls() {
    let relay = Relay::start(&[("VOXRELAY__TRUNKS", TRUNK_LOCAL)]);
    let target = relay.sip;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut attacker = Uac::new_from("127.0.0.3", target);
            let mut sent = 0u32;
            // Bounded: at most 100,000 INVITEs, or until the trunk's call is done.
            while sent < 100_000 && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let offer = attacker.offer();
                let invite = attacker.request("INVITE", &offer);
                attacker.send_raw(invite.as_bytes());
                sent += 1;
            }
            sent
        })
    };
    let run = sipp(
        &relay,
        "call_pcap.xml",
        &["-m", "5", "-l", "5", "-d", "2000"],
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = flood.join().unwrap();
    assert_sipp_ok(&run, 5, &relay);
    assert!(sent > 1000, "the flood was a flood: {sent} INVITEs");
    let calls = relay
        .logs()
        .iter()
        .filter(|v| msg(v) == "call started")
        .count();
    assert_eq!(calls, 5, "only the trunk's calls reached an agent");
}

#[test]
fn responses_go_where_the_request_came_from() {
    let relay = Relay::start(&[]);
    let uac = Uac::new(relay.sip);
    // A Via that names an address behind NAT, with rport: the answer must come back to the
    // socket it came from, with received and rport filled in.
    let req = format!(
        "OPTIONS sip:echo@{r} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5999;branch=z9hG4bK-nat-1;rport\r\n\
         From: <sip:nat@192.0.2.1>;tag=n1\r\nTo: <sip:echo@{r}>\r\nCall-ID: nat-1\r\nCSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        r = relay.sip
    );
    uac.send_raw(req.as_bytes());
    let resp = uac
        .recv(Duration::from_secs(5))
        .expect("the answer comes back to the real source");
    assert_eq!(resp.status(), 200);
    let via = resp.header("via").unwrap();
    let port = uac.sip.local_addr().unwrap().port();
    assert!(via.contains("received=127.0.0.1"), "{via}");
    assert!(via.contains(&format!("rport={port}")), "{via}");
}
