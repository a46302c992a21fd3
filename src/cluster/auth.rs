//! How relays prove to each other that a request comes from the cluster: an HMAC-SHA256 over
//! the request, keyed with `cluster.secret`, in one header.
//!
//! ```text
//! X-Voxrelay-Cluster: v1 from=relay-1 to=relay-2 ts=1764900000 nonce=<32 hex> sig=<64 hex>
//! sig = HMAC-SHA256(secret, "voxrelay-cluster-v1\n" from \n to \n ts \n nonce \n METHOD \n
//!                   path-and-query \n hex(SHA-256(body)))
//! ```
//!
//! The receiver takes a request only when it is addressed to it (`to`), signed within
//! [`MAX_SKEW`] of its clock, and its nonce has not been seen: a captured request cannot be
//! sent again, nor to another relay. The checks are IO-free and take `now`; the shell
//! (`admin::cluster_api`) reads the clock.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// The header that carries the signature.
pub const HEADER: &str = "x-voxrelay-cluster";
/// How far a request's time may be from the receiver's clock, either way, in seconds.
pub const MAX_SKEW: i64 = 30;
/// Nonces remembered at most: far above what a cluster sends in [`MAX_SKEW`] × 2 seconds;
/// when it is reached, new requests are refused until old nonces age out.
pub const NONCE_CAPACITY: usize = 65_536;

const CONTEXT: &str = "voxrelay-cluster-v1";

type HmacSha256 = Hmac<Sha256>;

/// Why a request was not taken. The answer says only "not authenticated"; this is for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No header.
    Missing,
    /// The header is not in the form above.
    Malformed,
    /// Addressed to another relay.
    WrongNode,
    /// Signed too long ago or in the future.
    Stale,
    /// The signature does not match.
    BadSignature,
    /// This nonce was used before.
    Replayed,
    /// Too many nonces in the window.
    Busy,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Missing => "no cluster signature",
            Self::Malformed => "a malformed cluster signature header",
            Self::WrongNode => "a request signed for another relay",
            Self::Stale => "a request signed outside the allowed clock skew",
            Self::BadSignature => "a wrong cluster signature",
            Self::Replayed => "a replayed cluster request",
            Self::Busy => "too many cluster requests in the replay window",
        })
    }
}

/// One request as it is signed.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, `POST`.
    pub method: &'a str,
    /// The path with its query, as sent (`/cluster/v1/calls?x=1`).
    pub path: &'a str,
    /// The body's bytes (empty for a GET).
    pub body: &'a [u8],
}

/// Signs this relay's requests to the others.
#[derive(Clone)]
pub struct Signer {
    secret: Secret,
    node: String,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("node", &self.node)
            .field("secret", &self.secret)
            .finish()
    }
}

impl Signer {
    /// Signs as `node` with `secret`.
    pub fn new(secret: Secret, node: impl Into<String>) -> Self {
        Self {
            secret,
            node: node.into(),
        }
    }

    /// The header value for `req` to relay `to`, at unix time `now` with this `nonce`.
    pub fn sign(&self, to: &str, now: i64, nonce: u128, req: Request<'_>) -> String {
        let nonce = format!("{nonce:032x}");
        let sig = mac(&self.secret, &self.node, to, now, &nonce, req);
        format!(
            "v1 from={} to={to} ts={now} nonce={nonce} sig={}",
            self.node,
            hex::encode(sig)
        )
    }
}

fn mac(secret: &Secret, from: &str, to: &str, ts: i64, nonce: &str, req: Request<'_>) -> [u8; 32] {
    // new_from_slice takes a key of any length for HMAC
    let mut m = HmacSha256::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes any key");
    let body = hex::encode(Sha256::digest(req.body));
    for part in [
        CONTEXT,
        from,
        to,
        &ts.to_string(),
        nonce,
        req.method,
        req.path,
        &body,
    ] {
        m.update(part.as_bytes());
        m.update(b"\n");
    }
    m.finalize().into_bytes().into()
}

/// The parts of a header.
#[derive(Debug, PartialEq, Eq)]
struct Parsed<'a> {
    from: &'a str,
    to: &'a str,
    ts: i64,
    nonce: &'a str,
    sig: [u8; 32],
}

fn parse(header: &str) -> Result<Parsed<'_>, AuthError> {
    let mut parts = header.split(' ');
    if parts.next() != Some("v1") {
        return Err(AuthError::Malformed);
    }
    let mut field = |name: &str| {
        parts
            .next()
            .and_then(|p| p.strip_prefix(name))
            .and_then(|p| p.strip_prefix('='))
            .ok_or(AuthError::Malformed)
    };
    let from = field("from")?;
    let to = field("to")?;
    let ts = field("ts")?;
    let nonce = field("nonce")?;
    let sig = field("sig")?;
    if parts.next().is_some()
        || !crate::config::valid_node_id(from)
        || !crate::config::valid_node_id(to)
        || nonce.len() != 32
        || !nonce.bytes().all(|b| b.is_ascii_hexdigit())
        || ts.is_empty()
        || ts.len() > 12
        || !ts.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(AuthError::Malformed);
    }
    let ts: i64 = ts.parse().map_err(|_| AuthError::Malformed)?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(sig, &mut bytes).map_err(|_| AuthError::Malformed)?;
    Ok(Parsed {
        from,
        to,
        ts,
        nonce,
        sig: bytes,
    })
}

/// Checks the requests this relay receives from the others, and remembers their nonces.
pub struct Verifier {
    secret: Secret,
    node: String,
    /// Nonce → the request's time; with the order they came in, to forget the old ones.
    seen: HashMap<u128, i64>,
    order: VecDeque<(i64, u128)>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("node", &self.node)
            .field("nonces", &self.seen.len())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Checks requests addressed to `node`, signed with `secret`.
    pub fn new(secret: Secret, node: impl Into<String>) -> Self {
        Self {
            secret,
            node: node.into(),
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Takes `req` with its `header` at unix time `now`: the sending relay's id, or why not.
    pub fn verify(
        &mut self,
        now: i64,
        header: Option<&str>,
        req: Request<'_>,
    ) -> Result<String, AuthError> {
        self.forget(now);
        let p = parse(header.ok_or(AuthError::Missing)?)?;
        if p.to != self.node {
            return Err(AuthError::WrongNode);
        }
        if (now - p.ts).abs() > MAX_SKEW {
            return Err(AuthError::Stale);
        }
        let want = mac(&self.secret, p.from, p.to, p.ts, p.nonce, req);
        if !crate::secret::ct_eq_padded(&want, &p.sig) {
            return Err(AuthError::BadSignature);
        }
        let nonce = u128::from_str_radix(p.nonce, 16).map_err(|_| AuthError::Malformed)?;
        if self.seen.contains_key(&nonce) {
            return Err(AuthError::Replayed);
        }
        if self.seen.len() >= NONCE_CAPACITY {
            return Err(AuthError::Busy);
        }
        self.seen.insert(nonce, p.ts);
        self.order.push_back((now, nonce));
        Ok(p.from.to_string())
    }

    /// Forgets the nonces of requests that are now too old to be taken anyway.
    fn forget(&mut self, now: i64) {
        while let Some(&(at, nonce)) = self.order.front() {
            if now - at <= 2 * MAX_SKEW {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&nonce);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_764_900_000;

    fn secret() -> Secret {
        Secret::new("0123456789abcdef0123456789abcdef")
    }

    fn req(body: &[u8]) -> Request<'_> {
        Request {
            method: "POST",
            path: "/cluster/v1/calls/abc/hangup",
            body,
        }
    }

    #[test]
    fn a_signed_request_is_taken_once() {
        let a = Signer::new(secret(), "relay-a");
        let mut b = Verifier::new(secret(), "relay-b");
        let h = a.sign("relay-b", T, 7, req(b"{}"));
        assert_eq!(b.verify(T + 1, Some(&h), req(b"{}")), Ok("relay-a".into()));
        assert_eq!(
            b.verify(T + 2, Some(&h), req(b"{}")),
            Err(AuthError::Replayed)
        );
    }

    #[test]
    fn anything_changed_breaks_the_signature() {
        let a = Signer::new(secret(), "relay-a");
        let mut b = Verifier::new(secret(), "relay-b");
        let h = a.sign("relay-b", T, 1, req(b"{}"));
        let other_path = Request {
            path: "/cluster/v1/calls/other/hangup",
            ..req(b"{}")
        };
        assert_eq!(
            b.verify(T, Some(&h), other_path),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            b.verify(T, Some(&h), req(b"{\"x\":1}")),
            Err(AuthError::BadSignature)
        );
        let get = Request {
            method: "GET",
            ..req(b"{}")
        };
        assert_eq!(b.verify(T, Some(&h), get), Err(AuthError::BadSignature));
        let forged = h.replace("from=relay-a", "from=relay-c");
        assert_eq!(
            b.verify(T, Some(&forged), req(b"{}")),
            Err(AuthError::BadSignature)
        );
        let wrong_key = Signer::new(Secret::new("f".repeat(32)), "relay-a");
        let h = wrong_key.sign("relay-b", T, 2, req(b"{}"));
        assert_eq!(
            b.verify(T, Some(&h), req(b"{}")),
            Err(AuthError::BadSignature)
        );
        // a refused request does not use up its nonce: the genuine one still goes through
        let h = a.sign("relay-b", T, 1, req(b"{}"));
        assert_eq!(b.verify(T, Some(&h), req(b"{}")), Ok("relay-a".into()));
    }

    #[test]
    fn a_request_for_another_relay_or_out_of_time_is_refused() {
        let a = Signer::new(secret(), "relay-a");
        let mut b = Verifier::new(secret(), "relay-b");
        let for_c = a.sign("relay-c", T, 3, req(b""));
        assert_eq!(
            b.verify(T, Some(&for_c), req(b"")),
            Err(AuthError::WrongNode)
        );
        let old = a.sign("relay-b", T - MAX_SKEW - 1, 4, req(b""));
        assert_eq!(b.verify(T, Some(&old), req(b"")), Err(AuthError::Stale));
        let future = a.sign("relay-b", T + MAX_SKEW + 1, 5, req(b""));
        assert_eq!(b.verify(T, Some(&future), req(b"")), Err(AuthError::Stale));
        let edge = a.sign("relay-b", T - MAX_SKEW, 6, req(b""));
        assert!(b.verify(T, Some(&edge), req(b"")).is_ok());
    }

    #[test]
    fn nonces_are_forgotten_once_their_requests_are_too_old_anyway() {
        let a = Signer::new(secret(), "relay-a");
        let mut b = Verifier::new(secret(), "relay-b");
        for n in 0..100 {
            let h = a.sign("relay-b", T, n, req(b""));
            assert!(b.verify(T, Some(&h), req(b"")).is_ok());
        }
        assert_eq!(b.seen.len(), 100);
        let h = a.sign("relay-b", T + 2 * MAX_SKEW + 1, 1000, req(b""));
        assert!(b.verify(T + 2 * MAX_SKEW + 1, Some(&h), req(b"")).is_ok());
        assert_eq!(b.seen.len(), 1, "the old nonces are gone");
        // and an old request sent again is refused by its time, not its nonce
        let again = a.sign("relay-b", T, 0, req(b""));
        assert_eq!(
            b.verify(T + 2 * MAX_SKEW + 1, Some(&again), req(b"")),
            Err(AuthError::Stale)
        );
    }

    #[test]
    fn malformed_headers_are_errors_never_panics() {
        let mut b = Verifier::new(secret(), "relay-b");
        assert_eq!(b.verify(T, None, req(b"")), Err(AuthError::Missing));
        let nonce = "0".repeat(32);
        let sig = "0".repeat(64);
        for h in [
            String::new(),
            "v2 from=a to=relay-b ts=1 nonce=x sig=y".into(),
            "v1".into(),
            format!("v1 from=a to=relay-b ts=1 nonce={nonce}"),
            format!("v1 from=a to=relay-b ts=-1 nonce={nonce} sig={sig}"),
            format!("v1 from=a to=relay-b ts=99999999999999 nonce={nonce} sig={sig}"),
            format!("v1 from=a to=relay-b ts=1 nonce=zz sig={sig}"),
            format!("v1 from=a to=relay-b ts=1 nonce={nonce} sig=00"),
            format!("v1 from=a to=relay-b ts=1 nonce={nonce} sig={sig} extra"),
            format!("v1 to=relay-b from=a ts=1 nonce={nonce} sig={sig}"),
            format!("v1 from=a b to=relay-b ts=1 nonce={nonce} sig={sig}"),
            format!("v1 from=é to=relay-b ts=1 nonce={nonce} sig={sig}"),
        ] {
            assert_eq!(
                b.verify(T, Some(&h), req(b"")),
                Err(AuthError::Malformed),
                "{h:?}"
            );
        }
    }

    #[test]
    fn the_secret_never_prints() {
        let s = Signer::new(secret(), "relay-a");
        let v = Verifier::new(secret(), "relay-a");
        for text in [format!("{s:?}"), format!("{v:?}")] {
            assert!(!text.contains("0123456789abcdef"), "{text}");
        }
    }
}
