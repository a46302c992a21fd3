//! The operator steps into a live call through the admin API: say, mute, interrupt, hang up.
//! SIPp (or the small UDP caller) is the caller, the in-process simulator the model; an echo
//! call (no model) takes mute and hang up and refuses the rest.

mod support;

use std::time::Duration;

use serde_json::json;
use support::agent::{agent_env, get_json, post_json, sim_sessions};
use support::uac::Uac;
use support::{assert_sipp_ok, msg, sipp, Relay};

#[test]
fn the_operator_says_mutes_interrupts_and_hangs_up() {
    let env = agent_env("booking");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let relay = Relay::start(&env);
    let admin = format!("http://{}", relay.admin);
    std::thread::scope(|s| {
        // a caller who listens until the relay hangs up
        let caller = s.spawn(|| sipp(&relay, "operator_hangs_up.xml", &["-m", "1"]));
        let answered = relay.wait_for(|v| msg(v) == "call answered", Duration::from_secs(10));
        let id = answered["span"]["id"].as_str().unwrap().to_string();
        let url = |what: &str| format!("{admin}/api/calls/{id}/{what}");

        // mute: the call's view says so
        let (status, body) = post_json(&url("mute"), &json!({"muted": true}));
        assert_eq!(status, 202, "{body}");
        relay.wait_for(
            |v| msg(v) == "the operator muted the caller",
            Duration::from_secs(5),
        );
        let call = get_json(&format!("{admin}/api/calls/{id}"));
        assert_eq!(call["muted"], true, "{call:#}");

        // interrupt: the greeting stops at once
        let (status, body) = post_json(&url("interrupt"), &json!({}));
        assert_eq!(status, 202, "{body}");
        let b = relay.wait_for(|v| msg(v) == "barge-in", Duration::from_secs(5));
        assert_eq!(b["forced"], true);

        // say: the model gets the operator's words to act on
        let (status, body) = post_json(
            &url("say"),
            &json!({"text": "Tell the caller we close at five today."}),
        );
        assert_eq!(status, 202, "{body}");
        let told = || {
            sim_sessions(&relay)[0]["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| {
                    i["role"] == "system"
                        && i["content"][0]["text"]
                            .as_str()
                            .unwrap_or("")
                            .contains("we close at five")
                })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !told() {
            assert!(
                std::time::Instant::now() < deadline,
                "the model never got the operator's text"
            );
            std::thread::sleep(Duration::from_millis(50)); // polling an HTTP endpoint, bounded
        }

        // hang up: the caller gets a BYE
        let (status, body) = post_json(&url("hangup"), &json!({}));
        assert_eq!(status, 202, "{body}");
        let run = caller.join().unwrap();
        assert_sipp_ok(&run, 1, &relay);
    });
    let end = relay.wait_calls_ended(1, Duration::from_secs(10)).remove(0);
    assert_eq!(end["reason"], "operator_hangup");
    let call = get_json(&format!("{admin}/api/calls?state=ended"));
    assert_eq!(
        call["calls"][0]["end_reason"], "operator_hangup",
        "{call:#}"
    );
    assert!(sim_sessions(&relay)[0]["closed"].is_string());
}

/// Sends `frames` 20 ms PCMU frames filled with `byte`, paced by what comes back; the
/// payloads the relay sent meanwhile (and shortly after).
fn talk(uac: &Uac, byte: u8, seq: &mut u16, frames: u16) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    for _ in 0..frames {
        *seq = seq.wrapping_add(1);
        uac.send_rtp(0, *seq, u32::from(*seq) * 160, 0x00ec_0ec0, &[byte; 160]);
        if let Some(p) = uac.recv_rtp(Duration::from_millis(100)) {
            got.push(p.5);
        }
    }
    while let Some(p) = uac.recv_rtp(Duration::from_millis(200)) {
        got.push(p.5);
        if got.len() > usize::from(frames) * 3 {
            break;
        }
    }
    got
}

#[test]
fn the_operator_mutes_and_hangs_up_an_echo_call_which_has_no_model_to_steer() {
    let relay = Relay::start(&[]);
    let admin = format!("http://{}", relay.admin);
    let mut uac = Uac::new(relay.sip);
    assert_eq!(uac.invite().status(), 200);
    uac.ack();
    let answered = relay.wait_for(|v| msg(v) == "call answered", Duration::from_secs(10));
    let id = answered["span"]["id"].as_str().unwrap().to_string();
    let url = |what: &str| format!("{admin}/api/calls/{id}/{what}");
    let mut seq = 100;
    let heard = |got: &[Vec<u8>], byte: u8| got.iter().any(|p| p.contains(&byte));

    // the caller hears themselves
    let got = talk(&uac, 0x41, &mut seq, 40);
    assert!(heard(&got, 0x41), "the echo works before mute");

    // muted: the relay still sends frames, but not the caller's audio
    let (status, body) = post_json(&url("mute"), &json!({"muted": true}));
    assert_eq!(status, 202, "{body}");
    relay.wait_for(
        |v| msg(v) == "the operator muted the caller" && v["muted"] == true,
        Duration::from_secs(5),
    );
    assert_eq!(get_json(&format!("{admin}/api/calls/{id}"))["muted"], true);
    let got = talk(&uac, 0x42, &mut seq, 40);
    assert!(
        got.len() >= 20,
        "frames keep coming while muted: {}",
        got.len()
    );
    assert!(!heard(&got, 0x42), "the muted caller's audio came back");

    // unmuted: the echo is back
    let (status, body) = post_json(&url("mute"), &json!({"muted": false}));
    assert_eq!(status, 202, "{body}");
    relay.wait_for(
        |v| msg(v) == "the operator muted the caller" && v["muted"] == false,
        Duration::from_secs(5),
    );
    let got = talk(&uac, 0x43, &mut seq, 40);
    assert!(heard(&got, 0x43), "the echo works after unmute");

    // no model: interrupt and say are refused, clearly
    for (action, body) in [
        ("interrupt", json!({})),
        ("say", json!({"text": "Hello there"})),
    ] {
        let (status, body) = post_json(&url(action), &body);
        assert_eq!(status, 409, "{action}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "not_supported", "{action}: {v}");
    }

    // hang up: this caller gets a BYE
    let (status, body) = post_json(&url("hangup"), &json!({}));
    assert_eq!(status, 202, "{body}");
    let bye = loop {
        let m = uac.recv(Duration::from_secs(10)).expect("a BYE");
        if m.method() == "BYE" {
            break m;
        }
    };
    uac.reply_ok(&bye);
    let end = relay.wait_calls_ended(1, Duration::from_secs(10)).remove(0);
    assert_eq!(end["reason"], "operator_hangup");

    // and a SIPp caller too
    std::thread::scope(|s| {
        let caller = s.spawn(|| sipp(&relay, "silent_until_bye.xml", &["-m", "1"]));
        let answered = relay.wait_for(
            |v| msg(v) == "call answered" && v["span"]["id"] != id.as_str(),
            Duration::from_secs(10),
        );
        let second = answered["span"]["id"].as_str().unwrap().to_string();
        // a BYE waits for the caller's ACK (RFC 3261 13.3.1.4): hang up once it is in
        relay.wait_for(
            |v| msg(v) == "call acked" && v["span"]["id"] == second.as_str(),
            Duration::from_secs(10),
        );
        let (status, body) = post_json(&format!("{admin}/api/calls/{second}/hangup"), &json!({}));
        assert_eq!(status, 202, "{body}");
        assert_sipp_ok(&caller.join().unwrap(), 1, &relay);
    });
    // SIPp is done once it answered the BYE; the call is recorded ended just after
    relay.wait_calls_ended(2, Duration::from_secs(10));
    let ended = get_json(&format!("{admin}/api/calls?state=ended"));
    let reasons: Vec<&str> = ended["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["end_reason"].as_str())
        .collect();
    assert_eq!(reasons, ["operator_hangup", "operator_hangup"], "{ended:#}");
}
