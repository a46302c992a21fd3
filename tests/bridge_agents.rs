//! What the agents can do on a call, end to end with SIPp and the in-process simulator:
//! hand the caller to another agent, be stopped by an output guardrail, transfer the caller
//! to a person with SIP REFER.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::agent::{agent_env, scenario_with_speech, sim_sessions, test_scenario};
use support::{assert_sipp_ok, msg, sipp, Relay};
use voxrelay::booking::Store;

fn start(scenario: &str) -> Relay {
    let env = agent_env(&test_scenario(scenario));
    let all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Relay::start(&all)
}

fn call(relay: &Relay, template: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let sc = scenario_with_speech(dir.path(), template, 1500);
    let run = sipp(relay, sc.to_str().unwrap(), &["-m", "1"]);
    assert_sipp_ok(&run, 1, relay);
    relay.wait_calls_ended(1, Duration::from_secs(30)).remove(0)
}

fn record(relay: &Relay) -> voxrelay::booking::CallRecord {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = Store::open(&relay.database_url(), 1).await.unwrap();
            store.list_calls(1).await.unwrap().remove(0)
        })
}

fn system_texts(session: &Value) -> Vec<String> {
    session["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "message" && i["role"] == "system")
        .filter_map(|i| i["content"][0]["text"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn the_receptionist_hands_a_billing_question_to_the_billing_agent() {
    let relay = start("handoff.toml");
    let end = call(&relay, "agent_speak_once.xml");
    assert_eq!(end["reason"], "agent_end_call", "{}", relay.dump());
    let handoff = relay.wait_for(|v| msg(v) == "handoff", Duration::from_secs(1));
    assert_eq!(handoff["from"], "receptionist");
    assert_eq!(handoff["to"], "billing");
    // the session was switched to the billing agent's instructions and tools
    let s = &sim_sessions(&relay)[0];
    let updates = s["session_updates"].as_array().unwrap();
    let last = updates.last().unwrap();
    let billing = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/agents/billing.toml"),
    )
    .unwrap();
    let first_line = last["instructions"]
        .as_str()
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert!(billing.contains(&first_line), "{last:#}");
    let tools: Vec<&str> = last["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(tools.contains(&"transfer_to_receptionist"), "{tools:?}");
    assert_eq!(record(&relay).agent, "billing");
}

#[test]
fn a_guardrail_stops_medical_advice_and_the_agent_answers_again() {
    let relay = start("guardrail.toml");
    let dir = tempfile::tempdir().unwrap();
    // a caller who speaks twice, then hangs up
    let sc = scenario_with_speech(dir.path(), "agent_hangs_up_early.xml", 1500);
    let run = sipp(&relay, sc.to_str().unwrap(), &["-m", "1"]);
    assert_sipp_ok(&run, 1, &relay);
    relay.wait_calls_ended(1, Duration::from_secs(30));
    let trip = relay.wait_for(
        |v| msg(v) == "an output guardrail stopped the agent",
        Duration::from_secs(1),
    );
    assert_eq!(trip["rule"], "no-medical-advice");
    // the model was told what was blocked, and answered again
    let s = &sim_sessions(&relay)[0];
    let told = system_texts(s);
    assert!(
        told.iter().any(|t| t.contains("no-medical-advice")),
        "{told:?}"
    );
    let rec = record(&relay);
    let agent_lines: Vec<(&str, bool)> = rec
        .transcript
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["speaker"] == "agent")
        .map(|t| (t["text"].as_str().unwrap(), t["cut_off"].as_bool().unwrap()))
        .collect();
    let advice = agent_lines.iter().find(|(t, _)| t.contains("ibuprofen"));
    assert!(
        matches!(advice, Some((_, true))),
        "the advice is cut off: {agent_lines:?}"
    );
    assert!(
        agent_lines
            .iter()
            .any(|(t, _)| t.contains("only a clinician")),
        "{agent_lines:?}\n{}",
        relay.dump()
    );
}

#[test]
fn a_transfer_to_a_person_sends_refer_and_ends_the_agent_on_success() {
    let relay = start("transfer.toml");
    let end = call(&relay, "agent_transfer.xml");
    assert_eq!(end["reason"], "transferred", "{}", relay.dump());
    let rec = record(&relay);
    let t = rec
        .tool_calls
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "transfer_call")
        .cloned()
        .unwrap();
    assert_eq!(t["ok"], true, "{t}");
    let s = &sim_sessions(&relay)[0];
    assert!(s["closed"].is_string(), "the realtime session ended: {s:#}");
}

#[test]
fn a_failed_transfer_is_told_to_the_agent_and_the_call_goes_on() {
    let relay = start("transfer.toml");
    let end = call(&relay, "agent_transfer_busy.xml");
    assert_eq!(end["reason"], "caller_bye", "{}", relay.dump());
    let s = &sim_sessions(&relay)[0];
    let outputs = s["tool_outputs"].as_array().unwrap();
    let out = outputs
        .iter()
        .find(|o| o["name"] == "transfer_call")
        .unwrap();
    let out = out["output"].as_str().unwrap();
    assert!(
        out.contains("486") && out.contains("\"error\":true"),
        "{out}"
    );
    // the agent spoke again after the failure
    let rec = record(&relay);
    assert!(
        rec.transcript
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["text"].as_str().unwrap().contains("front desk is busy")),
        "{:#}",
        rec.transcript
    );
}

#[test]
fn the_moderation_check_stops_a_flagged_answer_when_it_is_on() {
    let env = agent_env(&test_scenario("moderation.toml"));
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.push(("VOXRELAY__OPENAI__MODERATION", "true"));
    let relay = Relay::start(&all);
    // a caller who lets the greeting finish
    let end = call(&relay, "agent_hangs_up_early.xml");
    assert_eq!(end["reason"], "caller_bye");
    let trip = relay.wait_for(
        |v| msg(v) == "an output guardrail stopped the agent",
        Duration::from_secs(1),
    );
    assert_eq!(trip["rule"], "moderation:harassment");
    let told = system_texts(&sim_sessions(&relay)[0]);
    assert!(told.iter().any(|t| t.contains("moderation")), "{told:?}");
}
