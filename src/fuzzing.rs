//! Entry points of the fuzz targets in `fuzz/` (see docs/fuzzing.md). Each takes the bytes a
//! fuzzer made up and feeds them to one parser of untrusted input the way the relay does:
//! SIP from the network, SDP, RTP/RTCP, SRTP, RFC 4733 events, the Realtime service's and
//! the simulator's clients' events, and the model's tool arguments. None may panic, whatever
//! the bytes. Not part of the relay's API: the harnesses live here, beside the parsers, so
//! they can reach the crate-private helpers and the tests can replay the seeds.
//!
//! Several targets take a sequence of inputs from one byte string, split by
//! [`Chunks`] (length-prefixed) or by lines, so that state kept between packets or events
//! (replay windows, sequence numbers, turn tracking) is fuzzed too.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use rsipstack::dialog::DialogId;
use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::{Header, SipMessage, Transport};
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transport::stream::{SipCodec, SipCodecType};
use rsipstack::transport::SipConnection;
use tokio_util::codec::Decoder;

use crate::booking::clock::FixedClock;
use crate::booking::store::Store;
use crate::booking::tools::Tools;
use crate::booking::BookingConfig;
use crate::bridge::digits::DigitGrouper;
use crate::media::codec::{Codec, Decoder as AudioDecoder};
use crate::media::dtmf::DtmfReceiver;
use crate::media::jitter::{JitterBuffer, JitterConfig};
use crate::media::rtcp::{self, PeerReport};
use crate::media::rtp::{self, ReceiveStats};
use crate::media::srtp::{CryptoSuite, MasterKey, SrtpContext, SrtpKeys, MASTER_LEN};
use crate::openai::events::{ClientEvent, ServerEvent};
use crate::openai::session::Turns;
use crate::sim::engine::{Engine, EngineConfig, Transport as SimTransport};
use crate::sim::record::SessionRecord;
use crate::sim::scenario::Scenario;
use crate::sip::{digest, headers, sdp};

/// Most items one input is split into, so one exec stays short.
const MAX_ITEMS: usize = 64;

/// Splits bytes into length-prefixed items: one length byte, then that many bytes (fewer at
/// the end). Empty when the bytes are.
#[derive(Debug, Clone)]
pub struct Chunks<'a> {
    rest: &'a [u8],
}

impl<'a> Chunks<'a> {
    /// Items of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }
}

impl<'a> Iterator for Chunks<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (&len, rest) = self.rest.split_first()?;
        let n = usize::from(len).min(rest.len());
        let (item, rest) = rest.split_at(n);
        self.rest = rest;
        Some(item)
    }
}

/// Writes `items` in the [`Chunks`] format (for seeds and tests).
pub fn chunked(items: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        let n = item.len().min(255);
        out.push(n as u8);
        out.extend_from_slice(&item[..n]);
    }
    out
}

// ---------------------------------------------------------------------------------------
// SIP

/// The fixed clock of the digest checks (seconds since the epoch).
const DIGEST_NOW: u64 = 1_800_000_000;
const DIGEST_SECRET: &str = "fuzz-nonce-secret";
/// Replaced by a nonce that is valid at [`DIGEST_NOW`], so the fuzzer gets past the nonce
/// check to the response computation (it cannot forge the MAC itself).
pub const NONCE_PLACEHOLDER: &str = "@NONCE@";

/// A SIP message as a datagram (UDP) and as the bytes of a stream (TCP/TLS), then every
/// header helper the server applies to a request, and the SDP and sipfrag bodies.
pub fn sip_message(data: &[u8]) {
    if let Ok(msg) = SipMessage::try_from(data) {
        sip_handling(msg, Transport::Udp);
    }
    let mut buf = BytesMut::from(data);
    let mut codec = SipCodec::new();
    for _ in 0..MAX_ITEMS {
        match codec.decode(&mut buf) {
            Ok(Some(SipCodecType::Message(msg))) => sip_handling(msg, Transport::Tcp),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
}

fn sip_handling(msg: SipMessage, transport: Transport) {
    let from: SocketAddr = SocketAddr::from(([127, 0, 0, 2], 5062));
    // What the transport does to every message it receives (adds `received`/`rport`).
    let Ok(msg) = SipConnection::update_msg_received(msg, from, transport) else {
        return;
    };
    let _ = msg.to_string();
    match msg {
        SipMessage::Request(req) => sip_request(&req),
        SipMessage::Response(resp) => {
            let _ = DialogId::try_from((&resp, TransactionRole::Client));
            let _ = resp.to_header().and_then(|h| h.typed());
            let _ = headers::sipfrag_status(&resp.body);
        }
    }
}

fn sip_request(req: &rsipstack::sip::Request) {
    // The transaction and dialog lookups of every request.
    let _ = TransactionKey::from_request(req, TransactionRole::Server);
    let _ = DialogId::try_from((req, TransactionRole::Server));
    let _ = req.to_header().and_then(|t| t.tag());
    if let Ok(to) = req.to_header().and_then(|t| t.typed()) {
        let _ = to.with_tag(String::from("fuzz").into());
    }
    let _ = req.from_header().and_then(|h| h.typed());
    let _ = req.via_header().and_then(|h| h.typed());
    let _ = req.contact_header().and_then(|h| h.typed());
    let _ = req.cseq_header().and_then(|h| h.typed());
    let _ = req.call_id_header();
    // Our helpers.
    let _ = headers::dialled_number(req);
    let _ = headers::from_value(req);
    let _ = headers::to_value(req);
    let _ = headers::required(req);
    let _ = headers::authorization(req);
    for h in req.headers.iter() {
        if let Header::Authorization(a) = h {
            let valid = digest::nonce(DIGEST_NOW - 10, 7, DIGEST_SECRET);
            let value = a.value().replace(NONCE_PLACEHOLDER, &valid);
            let request_uri = req.uri.to_string();
            let expected = digest::Expected {
                method: "INVITE",
                request_uri: &request_uri,
                username: "trunk",
                password: "secret",
                realm: "voxrelay",
            };
            let mut counts = digest::NonceCounts::default();
            let _ = digest::verify(&value, &expected, DIGEST_NOW, DIGEST_SECRET, &mut counts);
        }
    }
    sdp_offer(&req.body);
    let _ = headers::sipfrag_status(&req.body);
}

/// An SDP offer (the body of an INVITE, re-INVITE or UPDATE), negotiated and answered.
pub fn sdp_offer(data: &[u8]) {
    if let Ok(n) = sdp::negotiate(data) {
        let mut local = sdp::LocalSdp::new([127, 0, 0, 1].into(), 40_000, 1);
        let _ = local.answer(&n);
    }
}

// ---------------------------------------------------------------------------------------
// Media

/// A stream of RTP packets ([`Chunks`]; the first byte picks the codec) through what the
/// phone leg does with each: parse, receive statistics, the jitter buffer and playout.
pub fn rtp_packets(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let codec = match pick % 3 {
        0 => Codec::Pcmu,
        1 => Codec::Pcma,
        _ => Codec::Opus,
    };
    let Ok(mut dec) = AudioDecoder::new(codec) else {
        return;
    };
    let mut jitter = JitterBuffer::new(JitterConfig::new(codec));
    let mut stats = ReceiveStats::default();
    let mut frame = [0i16; crate::media::frame::FRAME_SAMPLES];
    let mut now = Duration::ZERO;
    for packet in Chunks::new(rest).take(MAX_ITEMS) {
        now += crate::media::frame::FRAME_DURATION;
        if let Ok(p) = rtp::parse(packet) {
            stats.on_packet(&p, (now.as_millis() as u32).wrapping_mul(8));
            let payload = &packet[p.payload_start..p.payload_end];
            let _ = jitter.push(now, p.ssrc, p.sequence, p.timestamp, payload);
        }
        let _ = jitter.pop(now, &mut dec, &mut frame);
    }
    let _ = (stats.lost(), stats.jitter(), stats.take_fraction_lost());
    let _ = jitter.stats();
}

/// A compound RTCP packet from the peer.
pub fn rtcp_packet(data: &[u8]) {
    let mut peer = PeerReport::default();
    let _ = rtcp::on_peer_packet(data, 0x1234_5678, &mut peer);
}

fn srtp_keys(suite: CryptoSuite, local: u8, remote: u8) -> SrtpKeys {
    SrtpKeys {
        suite,
        local: MasterKey::from_bytes([local; MASTER_LEN]),
        remote: MasterKey::from_bytes([remote; MASTER_LEN]),
    }
}

/// A stream of SRTP and SRTCP packets ([`Chunks`]) into one receiving context with fixed
/// keys. The first byte of each item says what it is: even items are unprotected as they
/// are (what an attacker sends), odd ones are first protected by the caller's context (so
/// the fuzzer gets past the authentication tag to the index, replay and rollover logic),
/// and must then come out as they went in; bit 1 picks RTCP.
pub fn srtp_packets(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let suite = CryptoSuite::ALL[usize::from(pick & 1)];
    let (Ok(mut caller), Ok(mut relay)) = (
        SrtpContext::new(&srtp_keys(suite, 1, 2)),
        SrtpContext::new(&srtp_keys(suite, 2, 1)),
    ) else {
        return;
    };
    let mut buf = [0u8; 300];
    for item in Chunks::new(rest).take(MAX_ITEMS) {
        let Some((&how, packet)) = item.split_first() else {
            continue;
        };
        let rtcp = how & 2 != 0;
        if how & 1 == 0 {
            let b = &mut buf[..packet.len()];
            b.copy_from_slice(packet);
            let _ = if rtcp {
                relay.unprotect_rtcp(b)
            } else {
                relay.unprotect_rtp(b)
            };
            continue;
        }
        let sealed = if rtcp {
            caller.protect_rtcp(packet, &mut buf)
        } else {
            caller.protect_rtp(packet, &mut buf)
        };
        let Ok(n) = sealed else {
            continue;
        };
        let opened = if rtcp {
            relay.unprotect_rtcp(&mut buf[..n])
        } else {
            relay.unprotect_rtp(&mut buf[..n])
        };
        if let Ok(m) = opened {
            assert_eq!(&buf[..m], packet, "SRTP round trip changed the packet");
        }
    }
}

/// RFC 4733 telephone events as the call task takes them: items of ([`Chunks`]) a time step,
/// a timestamp step and the payload, into the key detector, then the digit grouper.
pub fn dtmf_events(data: &[u8]) {
    let mut rx = DtmfReceiver::new();
    let mut groups = DigitGrouper::new(crate::bridge::digits::DEFAULT_INTER_DIGIT);
    let mut now = Duration::ZERO;
    let mut ts = 0u32;
    for item in Chunks::new(data).take(MAX_ITEMS) {
        let [dt, dts, payload @ ..] = item else {
            continue;
        };
        now += Duration::from_millis(u64::from(*dt) * 10);
        // Steps back in time too: timestamps wrap and stragglers arrive.
        ts = ts.wrapping_add((i32::from(*dts as i8) * 160) as u32);
        let _ = rx.pressed();
        for digit in [rx.push(now, ts, payload), rx.poll(now)]
            .into_iter()
            .flatten()
        {
            let _ = groups.push(now, digit.key);
        }
        let _ = groups.poll(now);
    }
}

// ---------------------------------------------------------------------------------------
// Events and tools

/// Server events of the Realtime API, one per line, as the realtime leg reads them: parse,
/// the turn tracker, and the base64 audio of the WebSocket transport.
pub fn realtime_events(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut turns = Turns::new();
    let mut audio = Vec::new();
    for line in text.lines().take(MAX_ITEMS) {
        let Ok(ev) = ServerEvent::parse(line) else {
            continue;
        };
        let _ = ev.kind().len();
        // What we read we can write and read again.
        let again = ev.to_json();
        assert!(
            ServerEvent::parse(&again).is_ok(),
            "a parsed event does not parse again: {again}"
        );
        let _ = turns.incoming(&ev);
        if let ServerEvent::OutputAudioDelta { delta, .. } = &ev {
            use base64::Engine as _;
            audio.clear();
            let _ = base64::engine::general_purpose::STANDARD.decode_vec(delta, &mut audio);
        }
    }
    let _ = (
        turns.response_active(),
        turns.cancel_needed(),
        turns.queued(),
    );
}

/// Client events, one per line, into a simulator session (the `booking` scenario) on a fake
/// clock, as its WebSocket and data-channel transports feed it; the session's timers run
/// between events.
pub fn sim_client_events(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    static SCENARIO: OnceLock<Arc<Scenario>> = OnceLock::new();
    let scenario = SCENARIO
        .get_or_init(|| Scenario::load("booking").expect("the bundled booking scenario"))
        .clone();
    let transport = if text.starts_with(' ') {
        SimTransport::WebRtc
    } else {
        SimTransport::WebSocket
    };
    let record = Arc::new(SessionRecord::new("sess_fuzz", "ws", &scenario.name));
    let mut engine = Engine::new(
        EngineConfig {
            session_id: "sess_FUZZFUZZ".into(),
            model: "gpt-realtime".into(),
            transport,
            scenario,
            initial: None,
            unix_now: 1_800_000_000,
        },
        record,
    );
    let mut now = Duration::ZERO;
    engine.open(now);
    for line in text.lines().take(MAX_ITEMS) {
        engine.handle_text(now, line);
        // Let the session's timers run a little: responses stream, turns end.
        for _ in 0..8 {
            while engine.poll_output().is_some() {}
            match engine.poll_timeout() {
                Some(at) if at <= now + Duration::from_millis(200) => {
                    now = now.max(at);
                    engine.handle_timeout(now);
                }
                _ => break,
            }
        }
        now += crate::media::frame::FRAME_DURATION;
    }
    while engine.poll_output().is_some() {}
    // The typed client event parser on its own, as the relay's tests and tools use it.
    for line in text.lines().take(MAX_ITEMS) {
        if let Ok(ev) = ClientEvent::parse(line) {
            let _ = (
                ev.kind().len(),
                ev.event_id(),
                ev.is_malformed(),
                ev.to_json(),
            );
        }
    }
}

/// The tool names the model can call, and one it cannot.
pub const TOOL_NAMES: [&str; 5] = [
    "check_availability",
    "create_booking",
    "cancel_booking",
    "find_bookings",
    "no_such_tool",
];

struct ToolsHarness {
    rt: tokio::runtime::Runtime,
    tools: Tools,
}

/// A booking tool call as the model makes it: the first byte picks the tool from
/// [`TOOL_NAMES`], the rest is the arguments text. One in-memory SQLite store per process
/// on a fixed clock, so bookings made by earlier inputs stay (as in a day of calls).
pub fn tool_arguments(data: &[u8]) {
    static HARNESS: OnceLock<ToolsHarness> = OnceLock::new();
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(arguments) = std::str::from_utf8(rest) else {
        return;
    };
    let h = HARNESS.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let store = rt
            .block_on(Store::open("sqlite::memory:", 1))
            .expect("an in-memory store");
        let now = "2026-03-02T09:00:00Z".parse().expect("a time");
        let clock = Arc::new(FixedClock::new(now));
        let config = BookingConfig {
            database_url: "sqlite::memory:".into(),
            ..BookingConfig::default()
        };
        let tools = Tools::new(store, &config, clock).expect("the default booking config");
        ToolsHarness { rt, tools }
    });
    let name = TOOL_NAMES[usize::from(pick) % TOOL_NAMES.len()];
    let out = h.rt.block_on(h.tools.call(name, arguments));
    assert!(out.is_object(), "a tool answered with a non-object: {out}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every harness over its committed seeds (fuzz/seeds/<target>/), so the seeds stay
    /// valid inputs and the harnesses keep compiling and running in the ordinary tests.
    #[test]
    fn the_fuzz_seeds_run_without_a_panic() {
        type Harness = fn(&[u8]);
        let targets: [(&str, Harness); 9] = [
            ("sip_message", sip_message),
            ("sdp_offer", sdp_offer),
            ("rtp_packet", rtp_packets),
            ("rtcp_packet", rtcp_packet),
            ("srtp_unprotect", srtp_packets),
            ("dtmf_event", dtmf_events),
            ("realtime_event", realtime_events),
            ("sim_client_event", sim_client_events),
            ("tool_arguments", tool_arguments),
        ];
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
        for (name, run) in targets {
            let dir = root.join(name);
            let mut n = 0;
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
                let bytes = std::fs::read(entry.unwrap().path()).unwrap();
                run(&bytes);
                n += 1;
            }
            assert!(n > 0, "no seeds for {name}");
        }
    }

    /// Found by `sip_message`: rsipstack's stream codec adds a Content-Length of
    /// 2^64 - 1 to the header length, which panicked with overflow checks on (see the
    /// `rsipstack` profile override in Cargo.toml). The fuzzer's input, and a minimal one.
    #[test]
    fn a_content_length_of_2_64_on_a_stream_does_not_panic() {
        sip_message(include_bytes!(
            "../fuzz/seeds/sip_message/crash-content-length-overflow"
        ));
        let minimal = b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nl: 18446744073709551615\r\n\r\nrest";
        sip_message(minimal);
        let mut buf = BytesMut::from(&minimal[..]);
        // Not a whole message, or a malformed one: nothing to hand on, and no panic.
        let _ = SipCodec::new().decode(&mut buf);
    }

    #[test]
    fn chunks_split_length_prefixed_items() {
        let data = chunked(&[b"ab", b"", b"cde"]);
        let items: Vec<&[u8]> = Chunks::new(&data).collect();
        assert_eq!(items, vec![&b"ab"[..], b"", b"cde"]);
        // A short last item is what is left.
        let items: Vec<&[u8]> = Chunks::new(&[5, 1, 2]).collect();
        assert_eq!(items, vec![&[1u8, 2][..]]);
    }
}
