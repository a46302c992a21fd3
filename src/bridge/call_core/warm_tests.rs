//! Warm transfer on the fake clock: the caller on hold while the person's phone rings, the
//! agent briefing the person on the person's line, the join (each leg's packets forwarded
//! into the other's stream), and every way it can fail.

use std::time::Duration;

use serde_json::json;

use super::tests::{ended, ms, sent_texts, tone, Call};
use super::warm::BRIEFING_NOTE;
use super::*;
use crate::bridge::registry::Envelope;
use crate::media::g711::Law;
use crate::media::rtp::{self, Packetizer, HEADER_LEN};
use crate::openai::{AgentAudio, LegEnd, LegEvent};
use tokio::sync::broadcast::Receiver;

const WARM: &str = r#"{"warm": true, "reason": "wants to move a booking"}"#;

/// How loud a G.711 payload is (mean absolute sample).
fn loudness(payload: &[u8]) -> i32 {
    let mut pcm = vec![0i16; payload.len()];
    Law::Mu.decode(payload, &mut pcm);
    pcm.iter().map(|&s| i32::from(s).abs()).sum::<i32>() / pcm.len().max(1) as i32
}

/// An RTP packet: its header as parsed and the datagram.
fn packet(ssrc: u32, seq: u16, payload: &[u8]) -> (rtp::RtpIn, Vec<u8>) {
    let mut p = Packetizer::new(ssrc, seq, u32::from(seq) * 160);
    let mut out = vec![0u8; HEADER_LEN + payload.len()];
    let n = p.write(0, payload, 160, &mut out);
    out.truncate(n);
    (rtp::parse(&out).unwrap(), out)
}

impl Call {
    /// Ticks to `until` as the task does, keeping the person's packets too.
    fn run_both(&mut self, until: Duration, person: &mut Vec<Vec<u8>>) {
        while self.now + ms(20) <= until {
            self.now += ms(20);
            let _ = self.core.caller_frame(self.now);
            if let Some(p) = self.core.handle_tick(self.now) {
                self.heard.push(p[HEADER_LEN..].to_vec());
            }
            if let Some(p) = self.core.person_packet(self.now) {
                person.push(p[HEADER_LEN..].to_vec());
            }
        }
    }

    /// A warm transfer asked for; the person's phone rings. With the call's events.
    fn warm_ringing() -> (Self, Receiver<std::sync::Arc<Envelope>>) {
        let mut c = Call::answered();
        let events = c.registry.subscribe();
        c.tool_call("transfer_call", WARM);
        let outs = c.outputs();
        assert!(
            matches!(&outs[..], [Output::CallPerson { target, codec: Law::Mu }] if target == "sip:desk@127.0.0.1:5070"),
            "{outs:?}"
        );
        (c, events)
    }
}

/// The outcomes of the transfer events so far.
fn transfer_outcomes(events: &mut Receiver<std::sync::Arc<Envelope>>) -> Vec<String> {
    std::iter::from_fn(|| events.try_recv().ok())
        .map(|e| serde_json::to_value(&*e).unwrap())
        .filter(|e| e["type"] == "transfer")
        .map(|e| e["outcome"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_caller_waits_on_hold_then_the_agent_briefs_the_person_then_they_are_joined() {
    let (mut c, mut events) = Call::warm_ringing();
    // ringing: the caller hears the hold sound (comfort noise here), the agent hears nothing
    c.rtp(0, &[0x10; 160]);
    assert_eq!(
        c.core.caller_frame(c.now + ms(20)),
        &crate::media::frame::SILENCE
    );
    let mut person = Vec::new();
    c.run_both(ms(2000), &mut person);
    assert!(person.is_empty(), "no person's line yet");
    let on_hold = &c.heard[c.heard.len() - 20..];
    assert!(
        on_hold.iter().all(|p| loudness(p) > 0 && loudness(p) < 200),
        "comfort noise"
    );
    assert!(c.outputs().is_empty(), "the tool waits for the person");

    // the person answers: the tool's output tells the agent to brief them
    assert!(
        !c.core.forwards_caller(),
        "the caller's packets wait for the ticks"
    );
    c.core.handle_person_answered(c.now, Law::Mu, 0, Some(101));
    let outs = c.outputs();
    assert!(
        matches!(&outs[..], [Output::ToolOutput { output, .. }] if output.contains("briefing") && output.contains(BRIEFING_NOTE)),
        "{outs:?}"
    );
    // the briefing: the person hears the agent, the caller still the hold sound
    c.agent_speaks("resp_brief", 25);
    let heard_before = c.heard.len();
    c.run_both(ms(2300), &mut person);
    assert!(person.len() >= 14, "{}", person.len());
    assert!(
        person.iter().take(10).all(|p| loudness(p) > 1000),
        "the agent's voice"
    );
    assert!(
        c.heard[heard_before..].iter().all(|p| loudness(p) < 200),
        "the caller hears no briefing"
    );
    // the person's voice reaches the agent
    let (p, d) = packet(0x5151, 1, &[0x20; 160]);
    assert!(c
        .core
        .handle_person_rtp(c.now, &p, &d[HEADER_LEN..])
        .is_none());
    c.event(json!({"type": "response.done", "event_id": "e9",
        "response": {"id": "resp_brief", "object": "realtime.response", "status": "completed"}}));
    c.run_both(ms(3400), &mut person);
    let outs = c.outputs();
    assert!(
        outs.contains(&Output::CloseLeg),
        "the agent leaves: {outs:?}"
    );
    assert!(ended(&outs).is_none());
    assert_eq!(
        transfer_outcomes(&mut events),
        ["trying", "briefing", "succeeded"]
    );
    let rec = &c.detail().tool_calls[0];
    assert!(rec.ok && rec.duration_ms.unwrap() >= 2000, "{rec:?}");

    // joined: nothing is played by the relay any more; each leg's packets go to the other,
    // as they come (the task reads the caller's socket per packet again, not at the ticks)
    assert!(c.core.forwards_caller());
    let (caller_ssrc_seen, n_before) = (c.heard.len(), person.len());
    c.run_both(ms(3600), &mut person);
    assert_eq!((c.heard.len(), person.len()), (caller_ssrc_seen, n_before));
    let (p, d) = packet(7, 500, &[0x33; 160]);
    let out = c
        .core
        .handle_rtp(c.now, &p, &d[HEADER_LEN..])
        .unwrap()
        .to_vec();
    let fwd = rtp::parse(&out).unwrap();
    assert_eq!(&out[fwd.payload_start..], &[0x33; 160][..]);
    assert_ne!(fwd.ssrc, 7, "the person's leg's own stream");
    let (p, d) = packet(0x5151, 40, &[0x44; 160]);
    let out = c
        .core
        .handle_person_rtp(c.now, &p, &d[HEADER_LEN..])
        .unwrap()
        .to_vec();
    let back = rtp::parse(&out).unwrap();
    assert_eq!(&out[back.payload_start..], &[0x44; 160][..]);
    assert_ne!(back.ssrc, 0x5151, "the caller's leg's own stream");
    // the caller's RTP keeps the call alive; the person hanging up ends it
    assert!(c.core.poll_timeout().is_some());
    c.core.handle_person_ended(c.now, "the person hung up");
    assert_eq!(ended(&c.outputs()), Some(&Ended::relay("transferred")));
}

#[test]
fn a_busy_person_gives_the_caller_back_to_the_agent_with_the_reason() {
    let (mut c, mut events) = Call::warm_ringing();
    let mut person = Vec::new();
    c.run_both(ms(1000), &mut person);
    c.core
        .handle_person_ended(c.now, "the person's line is busy");
    let outs = c.outputs();
    assert!(
        matches!(&outs[..], [Output::ToolOutput { output, .. }] if output.contains("busy") && output.contains("\"error\":true")),
        "{outs:?}"
    );
    // the caller is heard by the agent again, and hears the agent
    c.rtp(0, &[0x10; 160]);
    assert_ne!(
        c.core.caller_frame(c.now + ms(20)),
        &crate::media::frame::SILENCE
    );
    let n = c.heard.len();
    c.agent_speaks("resp_sorry", 10);
    c.run_to(ms(1400));
    let loud = c.heard[n..].iter().filter(|p| loudness(p) > 1000).count();
    assert_eq!(loud, 10, "the agent is heard");
    assert_eq!(
        transfer_outcomes(&mut events),
        ["trying", "failed: the person's line is busy"]
    );
    assert!(!c.detail().tool_calls[0].ok);
    // and a second transfer may be tried
    c.tool_call("transfer_call", WARM);
    assert!(matches!(&c.outputs()[..], [Output::CallPerson { .. }]));
}

#[test]
fn the_person_hanging_up_during_the_briefing_brings_the_agent_back_to_the_caller() {
    let (mut c, _) = Call::warm_ringing();
    c.core.handle_person_answered(c.now, Law::Mu, 0, None);
    c.outputs();
    c.agent_speaks("resp_brief", 50);
    let mut person = Vec::new();
    c.run_both(ms(300), &mut person);
    c.core.handle_person_ended(c.now, "the person hung up");
    let outs = c.outputs();
    assert!(
        outs.iter().any(|o| matches!(o, Output::Interrupt { .. })),
        "the briefing is cut: {outs:?}"
    );
    let texts = sent_texts(&outs);
    assert!(
        texts
            .iter()
            .any(|t| t.contains("The transfer failed: the person hung up")),
        "{texts:?}"
    );
    assert!(texts.iter().any(|t| t.contains("response.create")));
    // the agent's next words reach the caller, not the gone person's line
    c.agent_speaks("resp_sorry", 10);
    let (n, heard) = (person.len(), c.heard.len());
    c.run_both(ms(700), &mut person);
    assert_eq!(person.len(), n);
    let loud = c.heard[heard..]
        .iter()
        .filter(|p| loudness(p) > 1000)
        .count();
    assert_eq!(loud, 10, "the agent is heard by the caller");
}

#[test]
fn no_answer_in_time_is_given_up_by_the_core_if_the_dialler_says_nothing() {
    let (mut c, _) = Call::warm_ringing();
    let deadline = c.core.poll_timeout().unwrap();
    assert!(deadline > TRANSFER_LIMIT, "the dialler cancels first");
    c.core.handle_timeout(deadline);
    let outs = c.outputs();
    assert_eq!(outs[0], Output::DropPerson, "{outs:?}");
    assert!(
        matches!(&outs[1], Output::ToolOutput { output, .. } if output.contains("did not answer in time"))
    );
    // an answer after that is let go
    c.core.handle_person_answered(c.now, Law::Mu, 0, None);
    assert_eq!(c.outputs(), [Output::DropPerson]);
}

#[test]
fn a_session_lost_while_the_person_rings_puts_them_through_without_a_briefing() {
    let (mut c, mut events) = Call::warm_ringing();
    c.core.handle_leg(
        c.now,
        LegEvent::Ended(LegEnd::SocketClosed {
            code: 1011,
            reason: "gone".into(),
        }),
    );
    let outs = c.outputs();
    assert_eq!(outs, [Output::CloseLeg], "no apology: a person is coming");
    c.core.handle_person_answered(c.now, Law::Mu, 0, None);
    assert!(c.outputs().is_empty());
    assert_eq!(transfer_outcomes(&mut events), ["trying", "succeeded"]);
    let (p, d) = packet(7, 9, &[0x21; 160]);
    assert!(
        c.core.handle_rtp(c.now, &p, &d[HEADER_LEN..]).is_some(),
        "joined"
    );
}

#[test]
fn a_session_lost_and_no_person_ends_with_the_apology() {
    let (mut c, _) = Call::warm_ringing();
    c.core.handle_leg(
        c.now,
        LegEvent::Ended(LegEnd::SocketClosed {
            code: 1011,
            reason: "gone".into(),
        }),
    );
    c.outputs();
    c.core
        .handle_person_ended(c.now, "the person did not answer");
    c.run_to(Duration::from_secs(20));
    let outs = c.outputs();
    assert_eq!(
        ended(&outs).map(|e| e.reason.as_str()),
        Some("realtime_failed")
    );
    assert!(
        c.heard.iter().filter(|p| loudness(p) > 1000).count() > 25,
        "the apology is heard"
    );
}

#[test]
fn another_codec_from_the_person_or_a_browsers_call_cannot_be_joined() {
    let (mut c, _) = Call::warm_ringing();
    c.core.handle_person_answered(c.now, Law::A, 8, None);
    let outs = c.outputs();
    assert_eq!(outs[0], Output::DropPerson);
    assert!(
        matches!(&outs[1], Output::ToolOutput { output, .. } if output.contains("another codec"))
    );

    let mut w = Call::web();
    w.tool_call("transfer_call", WARM);
    assert!(
        matches!(&w.outputs()[..], [Output::ToolOutput { output, .. }] if output.contains("without warm"))
    );
}

#[test]
fn the_agent_cannot_start_a_second_transfer_while_one_rings() {
    let (mut c, _) = Call::warm_ringing();
    c.tool_call("transfer_call", "{}");
    assert!(
        matches!(&c.outputs()[..], [Output::ToolOutput { output, .. }] if output.contains("already in progress"))
    );
    // an agent's audio late in the ringing still plays, then the hold sound resumes
    c.core
        .handle_leg(c.now, LegEvent::Audio(AgentAudio::Pcm(tone())));
    let mut person = Vec::new();
    c.run_both(ms(200), &mut person);
    assert!(loudness(&c.heard[0]) > 1000);
    assert!(loudness(c.heard.last().unwrap()) < 200);
}

#[test]
fn the_agents_last_words_to_the_caller_play_out_before_the_briefing_begins() {
    let (mut c, _) = Call::warm_ringing();
    // "please hold" still playing (the service sends audio faster than real time)
    c.agent_speaks("resp_hold", 30);
    c.core.handle_person_answered(c.now, Law::Mu, 0, None);
    assert!(c.outputs().is_empty(), "the briefing waits");
    let mut person = Vec::new();
    let n = c.heard.len();
    c.run_both(ms(300), &mut person);
    assert!(
        c.heard[n..].iter().all(|p| loudness(p) > 1000),
        "the caller hears the rest"
    );
    assert!(
        person.iter().all(|p| loudness(p) < 100),
        "the person hears silence, not the caller's words"
    );
    assert_eq!(person.len(), 15, "their line has packets meanwhile");
    c.event(json!({"type": "response.done", "event_id": "e9",
        "response": {"id": "resp_hold", "object": "realtime.response", "status": "completed"}}));
    c.run_both(ms(500), &mut person);
    assert!(c.outputs().is_empty(), "still playing to the caller");
    c.run_both(ms(1000), &mut person);
    let outs = c.outputs();
    assert!(
        matches!(&outs[..], [Output::ToolOutput { output, .. }] if output.contains("briefing")),
        "{outs:?}"
    );
    c.agent_speaks("resp_brief", 10);
    let n = person.len();
    c.run_both(ms(1300), &mut person);
    assert_eq!(
        person[n..].iter().filter(|p| loudness(p) > 1000).count(),
        10
    );
}

#[test]
fn the_rest_of_a_briefing_the_service_still_plays_never_reaches_the_caller() {
    let (mut c, _) = Call::warm_ringing();
    c.core.handle_person_answered(c.now, Law::Mu, 0, None);
    c.outputs();
    // WebRTC: the answer is done, but the service still plays it out on the line
    c.agent_speaks("resp_brief", 5);
    c.event(json!({"type": "output_audio_buffer.started", "event_id": "e5", "response_id": "resp_brief"}));
    c.event(json!({"type": "response.done", "event_id": "e6",
        "response": {"id": "resp_brief", "object": "realtime.response", "status": "completed"}}));
    c.core.handle_person_ended(c.now, "the person hung up");
    let outs = c.outputs();
    assert!(
        outs.iter().any(|o| matches!(o, Output::Interrupt { .. })),
        "the service is told to stop: {outs:?}"
    );
    // what still comes of the briefing is dropped; the caller hears only the hold's end
    c.core
        .handle_leg(c.now, LegEvent::Audio(AgentAudio::Pcm(tone())));
    c.run_to(ms(400));
    assert!(
        c.heard.iter().all(|p| loudness(p) < 200),
        "no briefing for the caller"
    );
}

#[test]
fn a_joined_person_whose_line_goes_silent_ends_the_call_while_the_caller_still_talks() {
    let (mut c, _events) = Call::warm_ringing();
    let mut person = Vec::new();
    c.run_both(ms(1000), &mut person);
    c.core.handle_person_answered(c.now, Law::Mu, 0, Some(101));
    c.outputs();
    c.agent_speaks("resp_brief", 10);
    c.run_both(ms(1400), &mut person);
    c.event(json!({"type": "response.done", "event_id": "e9",
        "response": {"id": "resp_brief", "object": "realtime.response", "status": "completed"}}));
    c.run_both(ms(2000), &mut person);
    let outs = c.outputs();
    assert!(outs.contains(&Output::CloseLeg), "joined: {outs:?}");
    // the person's last packet; from here on only the caller sends
    let (p, d) = packet(0x5151, 40, &[0x44; 160]);
    assert!(c
        .core
        .handle_person_rtp(c.now, &p, &d[HEADER_LEN..])
        .is_some());
    let person_last = c.now;
    let mut seq = 500;
    let ended_at = loop {
        // the caller talks every 20 ms; the core's timer fires when it is due
        let next = c.now + ms(20);
        while let Some(due) = c.core.poll_timeout().filter(|&d| d <= next) {
            c.now = due.max(c.now);
            c.core.handle_timeout(c.now);
            if c.core.is_over() {
                break;
            }
        }
        if c.core.is_over() {
            break c.now;
        }
        c.now = next;
        seq += 1;
        let (p, d) = packet(7, seq, &[0x33; 160]);
        let _ = c.core.handle_rtp(c.now, &p, &d[HEADER_LEN..]);
        assert!(c.now < ms(200_000), "the call never ended");
    };
    assert_eq!(
        ended(&c.outputs()),
        Some(&Ended::hang_up(EndReason::RtpTimeout))
    );
    // settings(): a 60 s RTP timeout, counted from the person's last packet
    let after = ended_at - person_last;
    assert!(after > ms(60_000) && after <= ms(60_020), "{after:?}");
}
