//! The SDES keys of an SRTP call stay out of the logs whatever `RUST_LOG` asks for: the real
//! relay (echo agent) at `RUST_LOG=trace`, called over SRTP by a small SIP caller.

mod support;

use std::time::Duration;

use base64::Engine as _;
use support::uac::Uac;
use support::{msg, Relay};

#[test]
fn rust_log_trace_never_prints_sdes_keys() {
    let relay = Relay::start(&[("RUST_LOG", "trace")]);
    let mut uac = Uac::new(relay.sip);
    let key: Vec<u8> = (0..30u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let inline = base64::engine::general_purpose::STANDARD.encode(&key);
    uac.crypto = Some(format!(
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{inline}\r\n"
    ));
    let ok = uac.invite();
    assert_eq!(ok.status(), 200, "{}", relay.dump());
    uac.ack();
    let relay_inline = ok
        .body
        .lines()
        .find_map(|l| l.split("inline:").nth(1))
        .expect("the answer has the relay's key")
        .trim_end()
        .to_string();
    assert_eq!(uac.bye().status(), 200);
    relay.wait_for(|v| msg(v) == "call ended", Duration::from_secs(10));

    let logs = relay.logs();
    // the filter was raised: events below INFO (sqlx's queries at DEBUG) are there
    assert!(
        logs.iter()
            .any(|v| v["level"] == "DEBUG" || v["level"] == "TRACE"),
        "RUST_LOG=trace took effect: {}",
        relay.dump()
    );
    let text = relay.dump();
    assert!(!text.contains(&inline), "the caller's key is never logged");
    assert!(!text.contains(&relay_inline), "nor the relay's");
    assert!(!text.contains("inline:"), "no a=crypto line at all");
    assert!(!text.contains("a=crypto"), "no a=crypto line at all");
}
