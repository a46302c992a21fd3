//! Digest authentication of inbound requests (RFC 2617 / RFC 3261 section 22), MD5 with
//! `qop=auth` or without qop. IO-free: the time, the random salt and the server secret are
//! passed in.
//!
//! Nonces are signed, not stored when issued: `<seconds hex>.<salt hex>.<md5(seconds:salt:secret)>`,
//! so handing out challenges costs no memory, and they expire after [`NONCE_TTL_SECS`]. A nonce
//! is remembered only once it was used with a valid response, with the highest nonce-count
//! (`nc`) seen ([`NonceCounts`], bounded): a request may reuse a nonce only with a higher count,
//! so a captured Authorization header cannot be replayed. The digest `uri` must be the
//! request's own Request-URI, so credentials for one request do not authorise another.

use std::collections::HashMap;

use md5::{Digest, Md5};

/// How long a nonce stays valid.
pub const NONCE_TTL_SECS: u64 = 300;

/// Nonces remembered with their count, at most (about 100 bytes each).
pub const NONCES_TRACKED: usize = 16_384;

/// Why an Authorization header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No usable Digest credentials.
    #[error("missing or malformed credentials")]
    Malformed,
    /// Someone else's user name or realm.
    #[error("unknown user or realm")]
    UnknownUser,
    /// The nonce was not ours.
    #[error("foreign nonce")]
    Foreign,
    /// The credentials were right but the nonce is too old (or no longer tracked): the
    /// client may retry at once with the fresh nonce of a `stale=true` challenge.
    #[error("stale nonce")]
    Stale,
    /// The digest `uri` is not the request's Request-URI.
    #[error("digest uri is not the Request-URI")]
    UriMismatch,
    /// The nonce was used before with this nonce-count or a higher one.
    #[error("replayed nonce count")]
    Replay,
    /// The response does not match the password.
    #[error("wrong password")]
    Mismatch,
}

/// What the request must prove.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The request's method, e.g. `INVITE`.
    pub method: &'a str,
    /// The request's Request-URI as received.
    pub request_uri: &'a str,
    /// The user name the credentials must be for.
    pub username: &'a str,
    /// That user's password.
    pub password: &'a str,
    /// Our realm.
    pub realm: &'a str,
}

fn md5_hex(parts: &[&str]) -> String {
    let mut h = Md5::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(p.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh nonce for `now_secs` (seconds since the epoch) and a random `salt`, which makes
/// nonces handed out in the same second distinct.
pub fn nonce(now_secs: u64, salt: u64, secret: &str) -> String {
    let ts = format!("{now_secs:x}");
    let salt = format!("{salt:016x}");
    let mac = md5_hex(&[&ts, &salt, secret]);
    format!("{ts}.{salt}.{mac}")
}

/// The second a nonce of ours was issued; `None` when it is not ours.
fn issued_at(n: &str, secret: &str) -> Option<u64> {
    let mut parts = n.split('.');
    let (ts, salt) = (parts.next()?, parts.next()?);
    if ts.len() > 16 || salt.len() != 16 {
        return None;
    }
    let issued = u64::from_str_radix(ts, 16).ok()?;
    let salt = u64::from_str_radix(salt, 16).ok()?;
    constant_time_eq(&nonce(issued, salt, secret), n).then_some(issued)
}

/// The WWW-Authenticate header value of a challenge; `stale` tells a client whose
/// credentials were right that only the nonce was too old (RFC 2617 3.2.1).
pub fn challenge(realm: &str, now_secs: u64, salt: u64, secret: &str, stale: bool) -> String {
    format!(
        "Digest realm=\"{realm}\", nonce=\"{}\", algorithm=MD5, qop=\"auth\"{}",
        nonce(now_secs, salt, secret),
        if stale { ", stale=true" } else { "" }
    )
}

/// The parameters of a `Digest` Authorization header.
fn params(value: &str) -> Option<Vec<(String, String)>> {
    let rest = value.trim().strip_prefix("Digest")?.trim();
    let mut out = Vec::new();
    let mut s = rest;
    while !s.is_empty() {
        let (k, after) = s.split_once('=')?;
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            match after.find(',') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            }
        };
        out.push((k, v.trim().to_string()));
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(out)
}

/// Whether the digest `uri` names the Request-URI: the same text, or the same URI once
/// parsed (a client may write it with other case or spacing than the stack prints it).
fn same_uri(digest_uri: &str, request_uri: &str) -> bool {
    if digest_uri == request_uri {
        return true;
    }
    match (
        rsipstack::sip::Uri::try_from(digest_uri),
        rsipstack::sip::Uri::try_from(request_uri),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Compares without an early exit on the first differing byte (`subtle`).
fn constant_time_eq(a: &str, b: &str) -> bool {
    crate::secret::ct_eq(a.as_bytes(), b.as_bytes())
}

/// Checks an Authorization header against what the request must prove, and records the
/// nonce-count in `counts` when it passes.
pub fn verify(
    authorization: &str,
    expected: &Expected<'_>,
    now_secs: u64,
    secret: &str,
    counts: &mut NonceCounts,
) -> Result<(), AuthError> {
    let p = params(authorization).ok_or(AuthError::Malformed)?;
    let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let (user, r, n, uri, response) = match (
        get("username"),
        get("realm"),
        get("nonce"),
        get("uri"),
        get("response"),
    ) {
        (Some(a), Some(b), Some(c), Some(d), Some(e)) => (a, b, c, d, e),
        _ => return Err(AuthError::Malformed),
    };
    if let Some(alg) = get("algorithm") {
        if !alg.eq_ignore_ascii_case("MD5") {
            return Err(AuthError::Malformed);
        }
    }
    if user != expected.username || r != expected.realm {
        return Err(AuthError::UnknownUser);
    }
    if !same_uri(uri, expected.request_uri) {
        return Err(AuthError::UriMismatch);
    }
    let issued = issued_at(n, secret).ok_or(AuthError::Foreign)?;
    let ha1 = md5_hex(&[user, r, expected.password]);
    let ha2 = md5_hex(&[expected.method, uri]);
    let (expected_response, nc) = match get("qop") {
        Some(q) if q.eq_ignore_ascii_case("auth") => {
            let (nc, cnonce) = match (get("nc"), get("cnonce")) {
                (Some(a), Some(b)) => (a, b),
                _ => return Err(AuthError::Malformed),
            };
            let count = (nc.len() == 8)
                .then(|| u32::from_str_radix(nc, 16).ok())
                .flatten()
                .ok_or(AuthError::Malformed)?;
            (md5_hex(&[&ha1, n, nc, cnonce, q, &ha2]), count)
        }
        Some(_) => return Err(AuthError::Malformed),
        // RFC 2069 style, without a count: the nonce is good for one request.
        None => (md5_hex(&[&ha1, n, &ha2]), 1),
    };
    if !constant_time_eq(&expected_response, &response.to_ascii_lowercase()) {
        return Err(AuthError::Mismatch);
    }
    if now_secs.saturating_sub(issued) > NONCE_TTL_SECS || issued > now_secs + 5 {
        return Err(AuthError::Stale);
    }
    counts.record(n, issued, nc, now_secs)
}

/// The highest nonce-count used with each nonce still valid: bounded to [`NONCES_TRACKED`]
/// entries. When full, the oldest eighth is forgotten, and every nonce issued no later than
/// the newest one forgotten counts as stale from then on, so forgetting never reopens a
/// nonce to replay (the client just answers a fresh challenge).
#[derive(Debug)]
pub struct NonceCounts {
    seen: HashMap<String, (u64, u32)>,
    cap: usize,
    /// Nonces issued at or before this second that are not in `seen` are refused.
    floor: Option<u64>,
}

impl Default for NonceCounts {
    fn default() -> Self {
        Self::with_capacity(NONCES_TRACKED)
    }
}

impl NonceCounts {
    /// Tracks at most `cap` nonces.
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            seen: HashMap::new(),
            cap: cap.max(8),
            floor: None,
        }
    }

    /// Nonces tracked now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no nonce is tracked.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn record(&mut self, nonce: &str, issued: u64, nc: u32, now: u64) -> Result<(), AuthError> {
        if let Some((_, last)) = self.seen.get_mut(nonce) {
            if nc <= *last {
                return Err(AuthError::Replay);
            }
            *last = nc;
            return Ok(());
        }
        if self.floor.is_some_and(|f| issued <= f) {
            return Err(AuthError::Stale);
        }
        if self.seen.len() >= self.cap {
            self.seen
                .retain(|_, (t, _)| now.saturating_sub(*t) <= NONCE_TTL_SECS);
        }
        if self.seen.len() >= self.cap {
            let mut times: Vec<u64> = self.seen.values().map(|(t, _)| *t).collect();
            let k = times.len() / 8;
            let (_, cut, _) = times.select_nth_unstable(k);
            let cut = *cut;
            self.seen.retain(|_, (t, _)| *t > cut);
            self.floor = Some(self.floor.map_or(cut, |f| f.max(cut)));
            if issued <= cut {
                return Err(AuthError::Stale);
            }
        }
        self.seen.insert(nonce.to_string(), (issued, nc));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "relay-secret";
    const URI: &str = "sip:+1555@relay";

    fn expected<'a>(pass: &'a str, uri: &'a str) -> Expected<'a> {
        Expected {
            method: "INVITE",
            request_uri: uri,
            username: "trunk",
            password: pass,
            realm: "voxrelay",
        }
    }

    /// What a client computes (RFC 2617 3.2.2), written out independently of `verify`.
    fn client_header(user: &str, pass: &str, nonce: &str, uri: &str, nc: Option<u32>) -> String {
        let realm = "voxrelay";
        let ha1 = md5_hex(&[user, realm, pass]);
        let ha2 = md5_hex(&["INVITE", uri]);
        match nc {
            Some(nc) => {
                let nc = format!("{nc:08x}");
                let resp = md5_hex(&[&ha1, nonce, &nc, "abc", "auth", &ha2]);
                format!("Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"abc\"")
            }
            None => {
                let resp = md5_hex(&[&ha1, nonce, &ha2]);
                format!("Digest username=\"{user}\",realm=\"{realm}\",nonce=\"{nonce}\",uri=\"{uri}\",response=\"{resp}\"")
            }
        }
    }

    fn check(h: &str, pass: &str, now: u64, counts: &mut NonceCounts) -> Result<(), AuthError> {
        verify(h, &expected(pass, URI), now, SECRET, counts)
    }

    #[test]
    fn the_rfc_2617_example_response() {
        // RFC 2617 section 3.5: Mufasa / Circle Of Life.
        let ha1 = md5_hex(&["Mufasa", "testrealm@host.com", "Circle Of Life"]);
        let ha2 = md5_hex(&["GET", "/dir/index.html"]);
        let r = md5_hex(&[
            &ha1,
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "00000001",
            "0a4f113b",
            "auth",
            &ha2,
        ]);
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn good_credentials_pass_with_and_without_qop() {
        let mut counts = NonceCounts::default();
        for (salt, nc) in [(1, Some(1)), (2, None)] {
            let n = nonce(1000, salt, SECRET);
            let h = client_header("trunk", "pw", &n, URI, nc);
            assert_eq!(check(&h, "pw", 1010, &mut counts), Ok(()));
        }
    }

    #[test]
    fn nonces_of_one_second_differ() {
        assert_ne!(nonce(1000, 1, SECRET), nonce(1000, 2, SECRET));
    }

    #[test]
    fn a_replayed_header_is_refused_and_a_higher_count_passes() {
        let mut counts = NonceCounts::default();
        let n = nonce(1000, 7, SECRET);
        let first = client_header("trunk", "pw", &n, URI, Some(1));
        assert_eq!(check(&first, "pw", 1001, &mut counts), Ok(()));
        assert_eq!(
            check(&first, "pw", 1002, &mut counts),
            Err(AuthError::Replay)
        );
        let second = client_header("trunk", "pw", &n, URI, Some(2));
        assert_eq!(check(&second, "pw", 1003, &mut counts), Ok(()));
        assert_eq!(
            check(&first, "pw", 1004, &mut counts),
            Err(AuthError::Replay)
        );
        // Without qop there is no count: the nonce is good once.
        let n = nonce(1000, 8, SECRET);
        let once = client_header("trunk", "pw", &n, URI, None);
        assert_eq!(check(&once, "pw", 1001, &mut counts), Ok(()));
        assert_eq!(
            check(&once, "pw", 1002, &mut counts),
            Err(AuthError::Replay)
        );
    }

    #[test]
    fn the_digest_uri_must_be_the_request_uri() {
        let mut counts = NonceCounts::default();
        let n = nonce(1000, 1, SECRET);
        let h = client_header("trunk", "pw", &n, "sip:other@relay", Some(1));
        assert_eq!(
            check(&h, "pw", 1001, &mut counts),
            Err(AuthError::UriMismatch)
        );
        let h = client_header("trunk", "pw", &n, URI, Some(1));
        assert_eq!(check(&h, "pw", 1001, &mut counts), Ok(()));
    }

    #[test]
    fn the_tracked_nonces_are_bounded_and_forgetting_never_reopens_a_replay() {
        let mut counts = NonceCounts::with_capacity(64);
        let mut headers = Vec::new();
        for i in 0..1000u64 {
            let n = nonce(1000 + i / 10, i, SECRET);
            let h = client_header("trunk", "pw", &n, URI, Some(1));
            assert_eq!(check(&h, "pw", 1000 + i / 10, &mut counts), Ok(()), "{i}");
            assert!(counts.len() <= 64);
            headers.push(h);
        }
        // Every header used once is refused now, tracked or forgotten.
        for (i, h) in headers.iter().enumerate() {
            let r = check(h, "pw", 1100, &mut counts);
            assert!(
                matches!(r, Err(AuthError::Replay | AuthError::Stale)),
                "{i}: {r:?}"
            );
        }
        // A fresh nonce still works.
        let n = nonce(1100, 5000, SECRET);
        let h = client_header("trunk", "pw", &n, URI, Some(1));
        assert_eq!(check(&h, "pw", 1100, &mut counts), Ok(()));
    }

    #[test]
    fn wrong_password_stale_nonce_and_garbage_fail() {
        let mut counts = NonceCounts::default();
        let n = nonce(1000, 1, SECRET);
        let h = client_header("trunk", "nope", &n, URI, Some(1));
        assert_eq!(check(&h, "pw", 1010, &mut counts), Err(AuthError::Mismatch));
        let h = client_header("trunk", "pw", &n, URI, Some(1));
        assert_eq!(
            check(&h, "pw", 1000 + NONCE_TTL_SECS + 1, &mut counts),
            Err(AuthError::Stale)
        );
        assert_eq!(
            verify(&h, &expected("pw", URI), 1010, "other-secret", &mut counts),
            Err(AuthError::Foreign)
        );
        let mut someone = expected("pw", URI);
        someone.username = "someone";
        assert_eq!(
            verify(&h, &someone, 1010, SECRET, &mut counts),
            Err(AuthError::UnknownUser)
        );
        let forged = client_header("trunk", "pw", "5.deadbeef", URI, Some(1));
        assert_eq!(
            check(&forged, "pw", 10, &mut counts),
            Err(AuthError::Foreign)
        );
        for bad in [
            "",
            "Basic abc",
            "Digest",
            "Digest username=\"x",
            "Digest a=b,,,=",
            "Digest username=\"trunk\"",
        ] {
            assert!(check(bad, "pw", 1010, &mut counts).is_err(), "{bad}");
        }
        // A count that is not 8 hex digits is malformed.
        let h = client_header("trunk", "pw", &n, URI, Some(1)).replace("nc=00000001", "nc=1");
        assert_eq!(
            check(&h, "pw", 1010, &mut counts),
            Err(AuthError::Malformed)
        );
        assert!(counts.is_empty(), "nothing is tracked for refused requests");
    }
}
