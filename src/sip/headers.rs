//! The SIP header helpers of the relay, in one place: the headers it writes (`Allow`,
//! `Content-Type`) and what it reads by hand from a request's headers and bodies (the dialled
//! number, From and To for the call record, `Require`, `Authorization`, a sipfrag status, a
//! host's IP). IO-free; every reader takes hostile input and answers `None` or an empty
//! string, never a panic.

use std::net::IpAddr;

use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, Request};

/// Methods the relay accepts, for `Allow` headers.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO";

/// `Allow`, for an answer to OPTIONS or a refused method.
pub fn allow_headers() -> Vec<Header> {
    vec![Header::Allow(ALLOW.into())]
}

/// The headers of an answer carrying SDP.
pub fn sdp_headers() -> Vec<Header> {
    vec![
        Header::ContentType("application/sdp".into()),
        Header::Allow(ALLOW.into()),
    ]
}

/// The status code of a `message/sipfrag` body (`SIP/2.0 200 OK`), as a NOTIFY about a
/// transfer carries it; `None` for anything else.
pub fn sipfrag_status(body: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text.lines().next()?.trim();
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("SIP/") {
        return None;
    }
    parts
        .next()?
        .parse()
        .ok()
        .filter(|c| (100..700).contains(c))
}

/// The IP of `host`, `host:port`, `[v6]:port` or a `sip:` URI, when it is a literal.
pub fn host_ip(s: &str) -> Option<IpAddr> {
    let s = s
        .trim()
        .trim_start_matches("sips:")
        .trim_start_matches("sip:");
    let s = s.split(['@']).next_back()?.split(';').next()?;
    if let Some(v6) = s.strip_prefix('[') {
        return v6.split(']').next()?.parse().ok();
    }
    s.split(':').next()?.parse().ok()
}

/// The user part of a `sip:`, `sips:` or `tel:` URI (in angle brackets or not).
fn user_of(uri: &str) -> &str {
    let u = uri.trim().trim_start_matches('<');
    let u = u
        .trim_start_matches("sips:")
        .trim_start_matches("sip:")
        .trim_start_matches("tel:");
    u.split(['@', ';', '>']).next().unwrap_or("")
}

/// The dialled number: the Request-URI's user part, else the To URI's.
pub fn dialled_number(req: &Request) -> String {
    let ruri = req.uri.to_string();
    if ruri.contains('@') || ruri.starts_with("tel:") {
        return user_of(&ruri).to_string();
    }
    let to = to_value(req);
    let to = to.split('<').nth(1).unwrap_or(&to);
    user_of(to).to_string()
}

/// The From header's value, for the call record; empty without one.
pub fn from_value(req: &Request) -> String {
    req.from_header()
        .map(|h| h.value().to_string())
        .unwrap_or_default()
}

/// The To header's value, for the call record; empty without one.
pub fn to_value(req: &Request) -> String {
    req.to_header()
        .map(|h| h.value().to_string())
        .unwrap_or_default()
}

/// The first `Require` header's value: the extensions the request cannot do without.
pub fn required(req: &Request) -> Option<String> {
    req.headers.iter().find_map(|h| match h {
        Header::Require(r) => Some(r.value().to_string()),
        _ => None,
    })
}

/// The first `Authorization` header's value (a digest response).
pub fn authorization(req: &Request) -> Option<String> {
    req.headers.iter().find_map(|h| match h {
        Header::Authorization(a) => Some(a.value().to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(ruri: &str, headers: &str) -> Request {
        let text = format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK1\r\n{headers}Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        Request::try_from(text.as_str()).expect("a test request parses")
    }

    #[test]
    fn the_dialled_number_is_the_request_uri_user_else_the_to_user() {
        let r = request("sip:+15551234@127.0.0.1;user=phone", "To: <sip:999@x>\r\n");
        assert_eq!(dialled_number(&r), "+15551234");
        let r = request(
            "sip:127.0.0.1",
            "To: \"Desk\" <sip:100@127.0.0.1>;tag=a\r\n",
        );
        assert_eq!(dialled_number(&r), "100");
        let r = request("sip:127.0.0.1", "To: sips:200@example.com\r\n");
        assert_eq!(dialled_number(&r), "200");
        let r = request("sip:127.0.0.1", "");
        assert_eq!(dialled_number(&r), "", "no To: no number");
    }

    #[test]
    fn from_to_require_and_authorization_are_read_as_given() {
        let r = request(
            "sip:1@h",
            "From: <sip:alice@h>;tag=f\r\nTo: <sip:1@h>\r\nRequire: 100rel\r\nAuthorization: Digest username=\"u\"\r\n",
        );
        assert_eq!(from_value(&r), "<sip:alice@h>;tag=f");
        assert_eq!(to_value(&r), "<sip:1@h>");
        assert_eq!(required(&r).as_deref(), Some("100rel"));
        assert_eq!(authorization(&r).as_deref(), Some("Digest username=\"u\""));
        let bare = request("sip:1@h", "");
        assert_eq!(
            (from_value(&bare), to_value(&bare)),
            (String::new(), String::new())
        );
        assert_eq!((required(&bare), authorization(&bare)), (None, None));
    }

    #[test]
    fn hostile_headers_give_nothing_and_never_panic() {
        let long = "9".repeat(10_000);
        for to in [
            "<".to_string(),
            "<<<>>>".to_string(),
            "<sip:".to_string(),
            "sip:@".to_string(),
            ";;;@@@".to_string(),
            "\u{1F4DE}<sip:\u{00e9}@h>".to_string(),
            format!("<sip:{long}@h>"),
        ] {
            let r = request("sip:127.0.0.1", &format!("To: {to}\r\n"));
            let n = dialled_number(&r);
            assert!(n.len() <= to.len(), "{n:?}");
        }
    }

    #[test]
    fn host_ips_are_literals_only() {
        assert_eq!(host_ip("10.0.0.1"), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(
            host_ip("sip:10.0.0.1:5060;transport=tcp"),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            host_ip("sips:trunk@[2001:db8::1]:5061"),
            Some("2001:db8::1".parse().unwrap())
        );
        for bad in [
            "",
            "sip:",
            "[",
            "]",
            "@",
            "example.com",
            "sip:host.example:5060",
            "1.2.3.4.5",
            "[zz]:1",
        ] {
            assert_eq!(host_ip(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sipfrag_bodies() {
        assert_eq!(sipfrag_status(b"SIP/2.0 200 OK\r\n"), Some(200));
        assert_eq!(sipfrag_status(b"SIP/2.0 486 Busy Here"), Some(486));
        assert_eq!(sipfrag_status(b""), None);
        assert_eq!(sipfrag_status(b"SIP/2.0"), None);
        assert_eq!(sipfrag_status(b"HTTP/1.1 200 OK"), None);
        assert_eq!(sipfrag_status(b"SIP/2.0 99999 x"), None);
        assert_eq!(sipfrag_status(b"SIP/2.0 099 x"), None);
        assert_eq!(sipfrag_status(&[0xff, 0xfe]), None);
    }

    #[test]
    fn allow_lists_every_method_the_relay_answers() {
        for m in [
            "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "INFO",
        ] {
            assert!(ALLOW.split(", ").any(|a| a == m), "{m}");
        }
        assert!(sdp_headers()
            .iter()
            .any(|h| matches!(h, Header::ContentType(c) if c.value() == "application/sdp")));
        assert_eq!(allow_headers().len(), 1);
    }
}
