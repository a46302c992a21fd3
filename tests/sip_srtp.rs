//! SRTP with SDES keys on the phone leg, end to end: the real relay (echo agent) on loopback
//! and a small caller whose SRTP is `rtc-srtp`'s, an implementation independent of the
//! relay's.

mod support;

use std::time::Duration;

use base64::Engine as _;
use rtc_srtp::context::Context;
use rtc_srtp::protection_profile::ProtectionProfile;
use support::uac::Uac;
use support::{msg, Relay};

const SUITE: &str = "AES_CM_128_HMAC_SHA1_80";

/// A caller's master key and salt: its `inline:` text and the bytes.
fn caller_key(fill: u8) -> (String, Vec<u8>) {
    let bytes: Vec<u8> = (0..30u8)
        .map(|i| fill.wrapping_mul(7).wrapping_add(i))
        .collect();
    (
        base64::engine::general_purpose::STANDARD.encode(&bytes),
        bytes,
    )
}

fn context(key_salt: &[u8]) -> Context {
    let provider = rtc_srtp::crypto::default_provider().unwrap();
    Context::new(
        &key_salt[..16],
        &key_salt[16..],
        ProtectionProfile::Aes128CmHmacSha1_80,
        None,
        None,
        provider.crypto(),
    )
    .unwrap()
}

/// The relay's `a=crypto` lines in an answer: (tag, suite, key bytes).
fn answer_crypto(body: &str) -> Vec<(String, String, Vec<u8>)> {
    body.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=crypto:"))
        .map(|v| {
            let f: Vec<&str> = v.split(' ').collect();
            let key = f[2].strip_prefix("inline:").expect("an inline key");
            let key = base64::engine::general_purpose::STANDARD
                .decode(key)
                .expect("base64");
            (f[0].to_string(), f[1].to_string(), key)
        })
        .collect()
}

fn rtp(seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(5000 + u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&0x5EC0_0001u32.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// Sends `frames` SRTP frames (each a distinct byte, the first `first_byte`) and collects
/// what comes back, paced by the relay's own 20 ms packets; returns the raw datagrams.
fn talk(uac: &Uac, tx: &mut Context, first_seq: u16, first_byte: u8, frames: u16) -> Vec<Vec<u8>> {
    let to = uac.relay_rtp.expect("the relay's RTP address");
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    uac.rtp
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    for i in 0..frames {
        let plain = rtp(first_seq + i, &[first_byte + i as u8; 160]);
        let sealed = tx.encrypt_rtp(&plain).unwrap();
        uac.rtp.send_to(&sealed, to).unwrap();
        if let Ok((n, _)) = uac.rtp.recv_from(&mut buf) {
            got.push(buf[..n].to_vec());
        }
    }
    uac.rtp
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    while let Ok((n, _)) = uac.rtp.recv_from(&mut buf) {
        got.push(buf[..n].to_vec());
        if got.len() > 400 {
            break;
        }
    }
    got
}

/// Decrypts what the relay sent with its key; returns the first payload byte of each packet
/// whose frame was one of ours.
fn echoed(rx: &mut Context, got: &[Vec<u8>], sent: std::ops::Range<u8>) -> Vec<u8> {
    got.iter()
        .map(|p| {
            assert_eq!(p.len(), 12 + 160 + 10, "PCMU and an 80-bit tag");
            let plain = rx
                .decrypt_rtp(p)
                .expect("the relay's packets open with the key in its answer");
            assert_eq!(plain.len(), 12 + 160);
            plain[12]
        })
        .filter(|b| sent.contains(b))
        .collect()
}

#[test]
fn an_srtp_call_echoes_the_audio_encrypted_with_the_relays_key() {
    let relay = Relay::start(&[]);
    let mut uac = Uac::new(relay.sip);
    let (inline, key) = caller_key(1);
    uac.crypto = Some(format!(
        "a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{inline}\r\na=crypto:2 {SUITE} inline:{inline}|2^31\r\n"
    ));
    let ok = uac.invite();
    assert_eq!(ok.status(), 200, "{}", relay.dump());
    uac.ack();
    assert!(ok.body.contains(" RTP/SAVP 0 101\r\n"), "{}", ok.body);
    let lines = answer_crypto(&ok.body);
    assert_eq!(lines.len(), 1, "one a=crypto line: {}", ok.body);
    let (tag, suite, relay_key) = &lines[0];
    assert_eq!((tag.as_str(), suite.as_str()), ("2", SUITE));
    assert_eq!(relay_key.len(), 30);
    assert_ne!(relay_key, &key, "the relay has its own key");

    let mut tx = context(&key);
    let mut rx = context(relay_key);
    let got = talk(&uac, &mut tx, 1000, 1, 30);
    assert!(got.len() >= 10, "the relay sends a frame every 20 ms");
    for p in &got {
        assert!(
            !(1..31).any(|b| p[12..172] == [b; 160]),
            "no frame comes back in clear"
        );
    }
    let first = echoed(&mut rx, &got, 1..31);
    assert!(first.len() >= 5, "our frames come back: {first:?}");

    // A packet whose tag is wrong: dropped, counted, and the call goes on.
    let mut forged = tx.encrypt_rtp(&rtp(1030, &[200; 160])).unwrap().to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 0x5A;
    uac.rtp.send_to(&forged, uac.relay_rtp.unwrap()).unwrap();
    let got = talk(&uac, &mut tx, 1031, 100, 30);
    let after = echoed(&mut rx, &got, 100..130);
    assert!(after.len() >= 5, "the call goes on: {after:?}");
    assert!(
        !echoed(&mut rx, &got, 200..201).contains(&200),
        "the forged frame is not played"
    );

    // The relay's RTCP is SRTCP under the same key.
    let sr = uac
        .recv_rtcp(Duration::from_secs(10))
        .expect("an RTCP report");
    let plain = rx.decrypt_rtcp(&sr).expect("SRTCP with the relay's key");
    assert_eq!(plain[1], 200, "a sender report");

    assert_eq!(uac.bye().status(), 200);
    relay.wait_for(
        |v| msg(v) == "a packet failed SRTP checks and was dropped (further ones are only counted)",
        Duration::from_secs(5),
    );
    let closed = relay.wait_for(|v| msg(v) == "SRTP leg closed", Duration::from_secs(10));
    assert_eq!(closed["auth_failed"], 1, "{closed}");
    assert_eq!(closed["replayed"], 0, "{closed}");
    let logs = relay.dump();
    assert!(!logs.contains(&inline), "the caller's key is never logged");
    let relay_inline = base64::engine::general_purpose::STANDARD.encode(relay_key);
    assert!(!logs.contains(&relay_inline), "nor the relay's");
}

#[test]
fn a_reinvite_with_a_new_key_rekeys_both_ways() {
    let relay = Relay::start(&[]);
    let mut uac = Uac::new(relay.sip);
    let (inline, key) = caller_key(2);
    uac.crypto = Some(format!("a=crypto:1 {SUITE} inline:{inline}\r\n"));
    let ok = uac.invite();
    assert_eq!(ok.status(), 200, "{}", relay.dump());
    uac.ack();
    let old_relay_key = answer_crypto(&ok.body).remove(0).2;
    let got = talk(&uac, &mut context(&key), 10, 1, 20);
    assert!(echoed(&mut context(&old_relay_key), &got, 1..21).len() >= 3);

    let (new_inline, new_key) = caller_key(3);
    uac.crypto = Some(format!("a=crypto:5 {SUITE} inline:{new_inline}\r\n"));
    let ok = uac.reinvite_new_address();
    assert_eq!(ok.status(), 200);
    let lines = answer_crypto(&ok.body);
    assert_eq!(lines.len(), 1);
    let (tag, _, new_relay_key) = &lines[0];
    assert_eq!(tag, "5");
    assert_ne!(
        new_relay_key, &old_relay_key,
        "a new key of the relay's too"
    );
    // From the new address with the new key (a fresh stream state, sequence numbers go on).
    let got = talk(&uac, &mut context(&new_key), 30, 50, 30);
    let mut rx = context(new_relay_key);
    let opened: Vec<&Vec<u8>> = got.iter().filter(|p| rx.decrypt_rtp(p).is_ok()).collect();
    assert!(
        opened.len() + 2 >= got.len() && !got.is_empty(),
        "after the answer the relay sends under its new key: {} of {}",
        opened.len(),
        got.len()
    );
    let mut rx = context(new_relay_key);
    let echoed: Vec<u8> = got
        .iter()
        .filter_map(|p| rx.decrypt_rtp(p).ok())
        .map(|p| p[12])
        .filter(|b| (50..80).contains(b))
        .collect();
    assert!(
        echoed.len() >= 5,
        "the new key's audio comes back: {echoed:?}"
    );
    assert_eq!(uac.bye().status(), 200);
}

#[test]
fn an_srtp_offer_without_a_usable_key_is_refused_with_488() {
    let relay = Relay::start(&[]);
    for crypto in [
        String::new(),
        format!(
            "a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{}\r\n",
            caller_key(4).0
        ),
        format!("a=crypto:1 {SUITE} inline:{}|2^31|1:4\r\n", caller_key(4).0),
        format!("a=crypto:1 {SUITE} inline:tooshort\r\n"),
    ] {
        let mut uac = Uac::new(relay.sip);
        uac.crypto = Some(crypto.clone());
        let refused = uac.invite();
        assert_eq!(refused.status(), 488, "{crypto}");
    }
    // The same caller without SRTP is fine.
    let mut uac = Uac::new(relay.sip);
    let ok = uac.invite();
    assert_eq!(ok.status(), 200);
    assert!(ok.body.contains(" RTP/AVP ") && !ok.body.contains("a=crypto"));
    uac.ack();
    assert_eq!(uac.bye().status(), 200);
}
