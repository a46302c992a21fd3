//! Ephemeral keys minted ahead of calls (`openai.key_pool`), against the real binary and its
//! in-process simulator. Minting takes 4 s there (tests/scenarios/slow-mint.toml), longer than
//! the relay's 3 s mint deadline, so a call's session opens only if its key was minted ahead.

mod support;

use std::time::Duration;

use support::agent::{agent_env, get_json, sim_url};
use support::uac::Uac;
use support::{msg, Relay};

/// The trunk's address; 127.0.0.1 is a stranger.
const TRUNK: &str = r#"[{name = "main", addresses = ["127.0.0.2/32"]}]"#;

/// The simulator's counts: (keys minted, sessions opened).
fn sim_counts(relay: &Relay) -> (u64, usize) {
    let v = get_json(&format!("{}/sim/sessions", sim_url(relay)));
    let sessions = v["data"].as_array().map_or(0, |a| a.len());
    (v["keys_minted"].as_u64().expect("keys_minted"), sessions)
}

#[test]
fn a_call_opens_its_session_with_a_key_minted_ahead_and_a_stranger_takes_none() {
    let env = agent_env(&support::agent::test_scenario("slow-mint.toml"));
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.push(("VOXRELAY__TRUNKS", TRUNK));
    let relay = Relay::start(&all);

    // the default pool: four keys for the receptionist, minted at start
    let ready = relay.wait_for(
        |v| msg(v) == "ephemeral keys ready ahead of calls",
        Duration::from_secs(30),
    );
    assert_eq!(ready["agent"], "receptionist", "{ready}");
    assert_eq!(ready["keys"], 4, "{ready}");
    assert_eq!(sim_counts(&relay), (4, 0), "four keys, no session");
    assert_eq!(relay.metric("voxrelay_openai_keys_ready"), Some(4.0));

    // a stranger's INVITE is refused before any key is touched: nothing taken, nothing minted
    let mut stranger = Uac::new_from("127.0.0.1", relay.sip);
    assert_eq!(stranger.invite().status(), 403);
    assert_eq!(sim_counts(&relay), (4, 0), "the stranger cost nothing");
    assert_eq!(relay.metric("voxrelay_openai_keys_ready"), Some(4.0));

    // the trunk's call takes a key from the pool: its session opens although minting its own
    // would miss the deadline
    let mut trunk = Uac::new_from("127.0.0.2", relay.sip);
    let answer = trunk.invite();
    assert_eq!(answer.status(), 200, "{answer:?}\n{}", relay.dump());
    trunk.ack();
    let (_, sessions) = sim_counts(&relay);
    assert_eq!(sessions, 1, "the call's session opened");
    assert_eq!(trunk.bye().status(), 200);
    let ended = relay.wait_calls_ended(1, Duration::from_secs(30)).remove(0);
    assert_eq!(ended["reason"], "caller_bye", "{}", relay.dump());
    assert_eq!(
        relay.metric(r#"voxrelay_openai_keys_used_total{source="pool"}"#),
        Some(1.0)
    );
    assert_eq!(
        relay.metric(r#"voxrelay_openai_keys_used_total{source="minted"}"#),
        None,
        "no call minted its own"
    );
    // no key reaches the log
    assert!(!relay.dump().contains("ek_"), "a key in the log");
}
