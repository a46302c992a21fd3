//! Digest authentication of inbound requests (RFC 2617 / RFC 3261 section 22), MD5 with
//! `qop=auth` or without qop. IO-free: the time and the server secret are passed in.
//!
//! Nonces are stateless: `<seconds hex>.<md5(seconds:secret)>`, so any relay instance with the
//! same secret can check them, and they expire after [`NONCE_TTL_SECS`].

use md5::{Digest, Md5};

/// How long a nonce stays valid.
pub const NONCE_TTL_SECS: u64 = 300;

/// Why an Authorization header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No usable Digest credentials.
    #[error("missing or malformed credentials")]
    Malformed,
    /// Someone else's user name or realm.
    #[error("unknown user or realm")]
    UnknownUser,
    /// The nonce was not ours, or is too old.
    #[error("stale or foreign nonce")]
    Stale,
    /// The response does not match the password.
    #[error("wrong password")]
    Mismatch,
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

/// A fresh nonce for `now_secs` (seconds since the epoch).
pub fn nonce(now_secs: u64, secret: &str) -> String {
    let ts = format!("{now_secs:x}");
    let mac = md5_hex(&[&ts, secret]);
    format!("{ts}.{mac}")
}

/// The WWW-Authenticate header value of a challenge.
pub fn challenge(realm: &str, now_secs: u64, secret: &str) -> String {
    format!(
        "Digest realm=\"{realm}\", nonce=\"{}\", algorithm=MD5, qop=\"auth\"",
        nonce(now_secs, secret)
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

/// Checks an Authorization header for `method` against the user's password.
pub fn verify(
    authorization: &str,
    method: &str,
    username: &str,
    password: &str,
    realm: &str,
    now_secs: u64,
    secret: &str,
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
    if user != username || r != realm {
        return Err(AuthError::UnknownUser);
    }
    let (ts, _) = n.split_once('.').ok_or(AuthError::Stale)?;
    let issued = u64::from_str_radix(ts, 16).map_err(|_| AuthError::Stale)?;
    if nonce(issued, secret) != n
        || now_secs.saturating_sub(issued) > NONCE_TTL_SECS
        || issued > now_secs + 5
    {
        return Err(AuthError::Stale);
    }
    let ha1 = md5_hex(&[user, realm, password]);
    let ha2 = md5_hex(&[method, uri]);
    let expected = match get("qop") {
        Some(q) if q.eq_ignore_ascii_case("auth") => {
            let (nc, cnonce) = match (get("nc"), get("cnonce")) {
                (Some(a), Some(b)) => (a, b),
                _ => return Err(AuthError::Malformed),
            };
            md5_hex(&[&ha1, n, nc, cnonce, q, &ha2])
        }
        Some(_) => return Err(AuthError::Malformed),
        None => md5_hex(&[&ha1, n, &ha2]),
    };
    // Constant-time comparison: no early exit on the first differing byte.
    let a = expected.as_bytes();
    let b = response.to_ascii_lowercase();
    let b = b.as_bytes();
    let diff = a.len() ^ b.len();
    let acc = a
        .iter()
        .zip(b.iter())
        .fold(diff, |acc, (x, y)| acc | usize::from(x ^ y));
    if acc == 0 {
        Ok(())
    } else {
        Err(AuthError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "relay-secret";

    /// What a client computes (RFC 2617 3.2.2), written out independently of `verify`.
    fn client_header(
        user: &str,
        pass: &str,
        realm: &str,
        nonce: &str,
        uri: &str,
        qop: bool,
    ) -> String {
        let ha1 = md5_hex(&[user, realm, pass]);
        let ha2 = md5_hex(&["INVITE", uri]);
        if qop {
            let resp = md5_hex(&[&ha1, nonce, "00000001", "abc", "auth", &ha2]);
            format!("Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"abc\"")
        } else {
            let resp = md5_hex(&[&ha1, nonce, &ha2]);
            format!("Digest username=\"{user}\",realm=\"{realm}\",nonce=\"{nonce}\",uri=\"{uri}\",response=\"{resp}\"")
        }
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
        let n = nonce(1000, SECRET);
        for qop in [true, false] {
            let h = client_header("trunk", "pw", "voxrelay", &n, "sip:+1555@relay", qop);
            assert_eq!(
                verify(&h, "INVITE", "trunk", "pw", "voxrelay", 1010, SECRET),
                Ok(())
            );
        }
    }

    #[test]
    fn wrong_password_stale_nonce_and_garbage_fail() {
        let n = nonce(1000, SECRET);
        let h = client_header("trunk", "nope", "voxrelay", &n, "sip:x@y", true);
        assert_eq!(
            verify(&h, "INVITE", "trunk", "pw", "voxrelay", 1010, SECRET),
            Err(AuthError::Mismatch)
        );
        let h = client_header("trunk", "pw", "voxrelay", &n, "sip:x@y", true);
        assert_eq!(
            verify(
                &h,
                "INVITE",
                "trunk",
                "pw",
                "voxrelay",
                1000 + NONCE_TTL_SECS + 1,
                SECRET
            ),
            Err(AuthError::Stale)
        );
        assert_eq!(
            verify(
                &h,
                "INVITE",
                "trunk",
                "pw",
                "voxrelay",
                1010,
                "other-secret"
            ),
            Err(AuthError::Stale)
        );
        assert_eq!(
            verify(&h, "INVITE", "someone", "pw", "voxrelay", 1010, SECRET),
            Err(AuthError::UnknownUser)
        );
        let forged = client_header("trunk", "pw", "voxrelay", "5.deadbeef", "sip:x@y", true);
        assert_eq!(
            verify(&forged, "INVITE", "trunk", "pw", "voxrelay", 10, SECRET),
            Err(AuthError::Stale)
        );
        for bad in [
            "",
            "Basic abc",
            "Digest",
            "Digest username=\"x",
            "Digest a=b,,,=",
            "Digest username=\"trunk\"",
        ] {
            assert!(
                verify(bad, "INVITE", "trunk", "pw", "voxrelay", 1010, SECRET).is_err(),
                "{bad}"
            );
        }
    }
}
