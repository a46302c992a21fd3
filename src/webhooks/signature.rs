//! The webhook signature: `Voxrelay-Signature: t=<unix seconds>,v1=<hex>`, the HMAC-SHA256 of
//! `<t>.<body>` under the webhook's secret. The time in the signed text lets a receiver refuse
//! an old delivery replayed by someone who captured it; [`verify`] is what a receiver does
//! (docs/webhooks.md shows it in Python too).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::Secret;

/// The header that carries the signature.
pub const HEADER: &str = "voxrelay-signature";

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not `t=…,v1=…`.
    #[error("the signature header is malformed")]
    Malformed,
    /// Signed too long ago, or in the future.
    #[error("the signature is {0} s away from now")]
    Stale(i64),
    /// Not made with this secret over this body.
    #[error("the signature does not match")]
    Mismatch,
}

fn mac(secret: &Secret, t: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length
    let mut m = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts any key length");
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The header value for `body` sent at `t` (unix seconds).
pub fn sign(secret: &Secret, t: i64, body: &[u8]) -> String {
    let tag = mac(secret, t, body).finalize().into_bytes();
    format!("t={t},v1={}", hex::encode(tag))
}

/// Checks `header` against `body` at `now` (unix seconds), allowing `tolerance` seconds either
/// way. Any `v1` in the header may match (a receiver rotating secrets); compared in constant
/// time.
pub fn verify(
    secrets: &[Secret],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance: i64,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut tags = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            Some(("v1", v)) => tags.push(hex::decode(v).map_err(|_| SignatureError::Malformed)?),
            _ => {}
        }
    }
    let (Some(t), false) = (t, tags.is_empty()) else {
        return Err(SignatureError::Malformed);
    };
    let skew = now.saturating_sub(t);
    if skew.saturating_abs() > tolerance {
        return Err(SignatureError::Stale(skew));
    }
    for secret in secrets {
        for tag in &tags {
            if mac(secret, t, body).verify_slice(tag).is_ok() {
                return Ok(());
            }
        }
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Secret {
        Secret::new("whsec-test-0123456789abcdef")
    }

    #[test]
    fn a_signature_verifies_with_its_secret_and_body_only() {
        let body = br#"{"type":"call.ended"}"#;
        let h = sign(&key(), 1_800_000_000, body);
        assert!(h.starts_with("t=1800000000,v1="), "{h}");
        assert_eq!(h.len(), "t=1800000000,v1=".len() + 64);
        assert_eq!(verify(&[key()], &h, body, 1_800_000_010, 300), Ok(()));
        let other = Secret::new("another-secret-0123456789");
        assert_eq!(
            verify(std::slice::from_ref(&other), &h, body, 1_800_000_000, 300),
            Err(SignatureError::Mismatch)
        );
        // a rotated receiver knows both
        assert_eq!(
            verify(&[other, key()], &h, body, 1_800_000_000, 300),
            Ok(())
        );
        assert_eq!(
            verify(
                &[key()],
                &h,
                br#"{"type":"call.ended" }"#,
                1_800_000_000,
                300
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn an_old_or_future_signature_is_stale() {
        let h = sign(&key(), 1_800_000_000, b"x");
        assert_eq!(
            verify(&[key()], &h, b"x", 1_800_000_301, 300),
            Err(SignatureError::Stale(301))
        );
        assert_eq!(
            verify(&[key()], &h, b"x", 1_799_999_000, 300),
            Err(SignatureError::Stale(-1000))
        );
    }

    #[test]
    fn a_changed_time_breaks_the_signature() {
        let h = sign(&key(), 1_800_000_000, b"x");
        let moved = h.replace("t=1800000000", "t=1800000100");
        assert_eq!(
            verify(&[key()], &moved, b"x", 1_800_000_100, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn malformed_headers_are_refused_without_panicking() {
        for h in [
            "",
            "t=1",
            "v1=00",
            "t=x,v1=00",
            "t=1,v1=zz",
            "garbage",
            ",,,",
            "t=,v1=",
        ] {
            assert_eq!(
                verify(&[key()], h, b"x", 1, 300),
                Err(SignatureError::Malformed),
                "{h:?}"
            );
        }
        let huge = format!("t={},v1=00", i64::MIN);
        assert!(verify(&[key()], &huge, b"x", i64::MAX, 300).is_err());
    }
}
