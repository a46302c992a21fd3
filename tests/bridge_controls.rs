//! The operator steps into a live call through the admin API: say, mute, interrupt, hang up.
//! SIPp is the caller, the in-process simulator the model.

mod support;

use std::time::Duration;

use serde_json::json;
use support::agent::{agent_env, get_json, post_json, sim_sessions};
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
