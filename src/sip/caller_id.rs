//! The caller's number, as a trusted trunk asserts it: the user part of the
//! `P-Asserted-Identity` (preferred) or `From` URI, `tel:` or `sip:`/`sips:`. IO-free.
//!
//! Anyone can write any `From`, so a number is only taken from a request that came from a
//! configured trunk (its source address is on the trunk's list) whose `trust_caller_id` is on;
//! the booking tools then scope look-ups and cancellations to it. The result is the number as
//! written, visual separators removed (`+12015550123`, or national digits such as
//! `02079460018`); the booking layer normalises it to E.164 with `booking.default_region`.

use rsipstack::sip::{Header, Request};

use super::trunks::Trunk;

/// Longest header value looked at; a real identity header is well under this.
const MAX_HEADER: usize = 1024;
/// How many identities of one `P-Asserted-Identity` list are looked at (RFC 3325 allows two).
const MAX_IDENTITIES: usize = 4;
/// E.164 numbers have at most 15 digits; national forms with a trunk prefix a few more.
const MAX_DIGITS: usize = 17;
/// Fewer digits than this is a short code or an extension, not a caller's number.
const MIN_DIGITS: usize = 3;

/// The caller's number of `req`, when it came from `trunk` and that trunk's caller ID is
/// trusted; `None` otherwise or when no header holds a number.
pub fn trusted_number(req: &Request, trunk: Option<&Trunk>) -> Option<String> {
    if !trunk.is_some_and(|t| t.cfg.trust_caller_id) {
        return None;
    }
    let mut pai = Vec::new();
    let mut from = None;
    for h in req.headers.iter() {
        match h {
            Header::PAssertedIdentity(v) if pai.len() < MAX_IDENTITIES => pai.push(v.value()),
            Header::From(v) if from.is_none() => from = Some(v.value()),
            _ => {}
        }
    }
    caller_number(&pai, from)
}

/// The number of the first `P-Asserted-Identity` value that holds one, else of `from`.
pub fn caller_number(pai: &[&str], from: Option<&str>) -> Option<String> {
    pai.iter()
        .flat_map(|v| split_identities(v).into_iter().take(MAX_IDENTITIES))
        .find_map(number_of_identity)
        .or_else(|| from.and_then(number_of_identity))
}

/// Splits a header value at the commas that separate identities (not inside quotes or `<>`).
fn split_identities(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    if value.len() > MAX_HEADER {
        return out;
    }
    let (mut quoted, mut escaped, mut angle, mut start) = (false, false, false, 0);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

/// The number in one name-addr or addr-spec (`"Ann" <sip:+1201…@host>;tag=x`, `<tel:+1…>`,
/// `sip:2015550123@host`).
pub fn number_of_identity(value: &str) -> Option<String> {
    if value.len() > MAX_HEADER {
        return None;
    }
    let uri = uri_of(value)?;
    let lower = uri
        .get(..5)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let user = if lower.starts_with("tel:") {
        // tel:+1-201-555-0123;phone-context=…
        uri[4..].split(';').next()?
    } else if lower.starts_with("sip:") || lower.starts_with("sips:") {
        let rest = &uri[uri.find(':')? + 1..];
        // the user part ends at '@'; without one the URI names a host, not a caller
        let (userinfo, _host) = rest.split_once('@')?;
        // user parameters (;isub=…) and a password (:secret) are not the number
        userinfo.split([';', ':']).next()?
    } else {
        return None;
    };
    clean_number(&percent_decode(user)?)
}

/// The URI of a header value: inside `<>` when there are angle brackets outside quotes, else
/// the text up to the header's own parameters.
fn uri_of(value: &str) -> Option<&str> {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => {
                let rest = &value[i + 1..];
                return rest.find('>').map(|end| rest[..end].trim());
            }
            _ => {}
        }
    }
    if quoted {
        return None;
    }
    // addr-spec form: header parameters follow a ';' (the URI then has none of its own)
    value.split(';').next().map(str::trim)
}

/// `%2B` and friends in a user part; anything that is not an ASCII character is refused.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            let v = u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?;
            if !v.is_ascii() {
                return None;
            }
            out.push(v as char);
        } else if b.is_ascii() {
            out.push(b as char);
        } else {
            return None;
        }
    }
    Some(out)
}

/// Digits with an optional leading `+`, visual separators (RFC 3966) removed; anything else
/// (letters: `anonymous`, `*` or `#` codes, an extension) is not a caller's number.
fn clean_number(s: &str) -> Option<String> {
    let s = s.trim();
    let (plus, body) = match s.strip_prefix('+') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let mut digits = String::with_capacity(body.len() + 1);
    if plus {
        digits.push('+');
    }
    for c in body.chars() {
        match c {
            '0'..='9' => digits.push(c),
            '-' | '.' | '(' | ')' | ' ' => {}
            _ => return None,
        }
    }
    let n = digits.len() - usize::from(plus);
    (MIN_DIGITS..=MAX_DIGITS).contains(&n).then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_come_from_sip_and_tel_uris() {
        for (value, want) in [
            (
                "\"Ada\" <sip:+12015550123@trunk.example;user=phone>;tag=abc",
                "+12015550123",
            ),
            ("<sip:2015550123@10.0.0.1:5060>;tag=1", "2015550123"),
            ("sip:+44-20-7946-0018@host;tag=1", "+442079460018"),
            (
                "<tel:+1-201-555-0123;phone-context=example.com>",
                "+12015550123",
            ),
            ("<sips:%2B12015550123@host>", "+12015550123"),
            ("<sip:+12015550123;isub=12@host>", "+12015550123"),
            ("\"Smith, <Ann>\" <sip:(201) 555.0123@h>", "2015550123"),
            ("<SIP:+12015550123@HOST>", "+12015550123"),
        ] {
            assert_eq!(number_of_identity(value).as_deref(), Some(want), "{value}");
        }
    }

    #[test]
    fn pai_wins_over_from_and_lists_are_read_in_order() {
        let from = Some("<sip:+15550000000@spoofed>;tag=1");
        assert_eq!(
            caller_number(&["<sip:anonymous@h>, <tel:+12015550123>"], from).as_deref(),
            Some("+12015550123")
        );
        assert_eq!(
            caller_number(&["\"Ann, B\" <sip:+12015550199@h>"], from).as_deref(),
            Some("+12015550199")
        );
        // no PAI, or one without a number: the From
        assert_eq!(caller_number(&[], from).as_deref(), Some("+15550000000"));
        assert_eq!(
            caller_number(&["<sip:anonymous@anonymous.invalid>"], from).as_deref(),
            Some("+15550000000")
        );
        assert_eq!(caller_number(&[], None), None);
    }

    #[test]
    fn hostile_or_numberless_identities_give_nothing() {
        let long = format!("<sip:{}@h>", "1".repeat(5000));
        let many_commas = ",".repeat(5000);
        for value in [
            "",
            "<",
            ">",
            "\"unterminated <sip:+12015550123@h>",
            "<sip:+12015550123@h",
            "\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=1",
            "<sip:caller@127.0.0.1:5060>",
            "<sip:127.0.0.1>",
            "<sip:+1201555012345678901@h>",
            "<sip:12@h>",
            "<sip:+@h>",
            "<sip:*69@h>",
            "<sip:2015550123#1@h>",
            "<tel:>",
            "<http://+12015550123@h>",
            "<sip:%zz12015550123@h>",
            "<sip:%C3%A912015550123@h>",
            "<sip:%2@h>",
            "<sip:１２０１５５５０１２３@h>",
            "<sip:+1 201\u{0}555 0123@h>",
            long.as_str(),
            many_commas.as_str(),
        ] {
            assert_eq!(number_of_identity(value), None, "{value:?}");
            assert_eq!(caller_number(&[value], None), None, "{value:?}");
        }
    }

    fn invite(headers: &str) -> Request {
        let text = format!(
            "INVITE sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK1\r\n{headers}Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        Request::try_from(text.as_str()).expect("a test INVITE parses")
    }

    fn trunk(trust: bool) -> Trunk {
        let cfg: crate::config::TrunkConfig = toml::from_str(&format!(
            "name = \"main\"\naddresses = [\"127.0.0.2/32\"]\ntrust_caller_id = {trust}"
        ))
        .unwrap();
        Trunk {
            cfg,
            password: None,
        }
    }

    #[test]
    fn only_a_trusting_trunk_gives_a_number() {
        let req = invite(
            "From: <sip:+15550000000@h>;tag=1\r\nTo: <sip:100@h>\r\nP-Asserted-Identity: <sip:+12015550123@trunk>\r\n",
        );
        assert_eq!(
            trusted_number(&req, Some(&trunk(true))).as_deref(),
            Some("+12015550123")
        );
        assert_eq!(trusted_number(&req, Some(&trunk(false))), None);
        assert_eq!(trusted_number(&req, None), None);
        let req = invite("From: \"X\" <sip:2015550123@h>;tag=1\r\nTo: <sip:100@h>\r\n");
        assert_eq!(
            trusted_number(&req, Some(&trunk(true))).as_deref(),
            Some("2015550123")
        );
        // trust is the default of a trunk entry
        let cfg: crate::config::TrunkConfig = toml::from_str("name = \"t\"").unwrap();
        assert!(cfg.trust_caller_id);
    }
}
