//! Bearer-token authentication for the API routes, compared in constant time.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::{Choice, ConstantTimeEq};

use super::error::ApiError;
use crate::openai::secret::Secret;

/// True when `presented` is the token. The time taken depends only on the token's length,
/// never on where the two first differ or on the presented value's length.
pub fn token_matches(token: &Secret, presented: &[u8]) -> bool {
    let want = token.expose().as_bytes();
    let mut same = (want.len() as u64).ct_eq(&(presented.len() as u64));
    for (i, w) in want.iter().enumerate() {
        // a short presented value is compared against zeros, so the loop never ends early
        let p = presented.get(i).copied().unwrap_or(0);
        same &= w.ct_eq(&p);
    }
    bool::from(same & Choice::from(u8::from(!want.is_empty())))
}

/// Lets a request through when no token is configured or it carries
/// `Authorization: Bearer <token>`; 401 otherwise.
pub async fn require_token(
    State(token): State<Option<Secret>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = token else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| bearer(v.as_bytes()));
    match presented {
        Some(p) if token_matches(&token, p) => next.run(req).await,
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is wrong",
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this route needs `Authorization: Bearer <admin.token>`",
        )
        .into_response(),
    }
}

/// The credentials of a `Bearer` authorization header (scheme case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if scheme.eq_ignore_ascii_case(b"bearer ") {
        Some(rest.trim_ascii())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let t = Secret::new("s3cret-token");
        assert!(token_matches(&t, b"s3cret-token"));
        assert!(!token_matches(&t, b"s3cret-toke"));
        assert!(!token_matches(&t, b"s3cret-tokenX"));
        assert!(!token_matches(&t, b"S3cret-token"));
        assert!(!token_matches(&t, b""));
        assert!(!token_matches(&Secret::new(""), b""));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bear"), None);
    }
}
