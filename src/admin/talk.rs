//! The browser voice page (`/talk`, "Test call"): one page, a script and a style sheet,
//! compiled into the binary like the dashboard. The page opens WebRTC straight to the OpenAI
//! Realtime API (or the simulator) with an ephemeral key from `/api/session`, so its
//! Content-Security-Policy lets it reach `openai.base_url` and nothing else; that URL is
//! written into the page when it is served (it is not a secret).

use axum::extract::State;
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::AdminState;

const INDEX: &str = include_str!("talk/index.html");
const SCRIPT: &str = include_str!("talk/talk.js");
const STYLE: &str = include_str!("talk/talk.css");

/// Where the page's `<meta name="openai-base">` gets the base URL.
const BASE_SLOT: &str = "{{openai_base}}";

/// As the dashboard's, plus the realtime API's origin for the SDP offer. Media from
/// `blob:`/`mediastream:` is the agent's audio track, played by an `<audio>` element.
fn csp(api_origin: Option<&str>) -> String {
    let extra = api_origin.map(|o| format!(" {o}")).unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; \
         connect-src 'self'{extra}; img-src 'self' data:; media-src 'self' blob: mediastream:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// The origin (`scheme://host[:port]`) of `base_url`, as a CSP source; `None` when it is not
/// an http(s) URL (the page then has nowhere to send its offer, and says so).
fn api_origin(base_url: &str) -> Option<String> {
    let url = reqwest::Url::parse(base_url).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    Some(url.origin().ascii_serialization())
}

/// Escapes text for an HTML attribute value in double quotes.
fn attr_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn asset(body: impl IntoResponse, content_type: &'static str, csp: String) -> Response {
    let csp = HeaderValue::from_str(&csp)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"));
    let headers: [(HeaderName, HeaderValue); 5] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CONTENT_SECURITY_POLICY, csp),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        // the microphone for this page only, never for a frame
        (
            HeaderName::from_static("permissions-policy"),
            HeaderValue::from_static("microphone=(self), camera=()"),
        ),
    ];
    (headers, body).into_response()
}

/// The realtime API's base URL the relay uses, when it has one (no minter: no key, no page
/// can connect).
fn base_url(state: &AdminState) -> Option<String> {
    let base = state.minter.as_ref()?.base_url();
    api_origin(base).map(|_| base.to_string())
}

/// `GET /talk`.
pub async fn page(State(state): State<AdminState>) -> Response {
    let base = base_url(&state);
    let origin = base.as_deref().and_then(api_origin);
    let html = INDEX.replace(BASE_SLOT, &attr_escape(base.as_deref().unwrap_or("")));
    asset(html, "text/html; charset=utf-8", csp(origin.as_deref()))
}

/// `GET /talk.js`.
pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8", csp(None))
}

/// `GET /talk.css`.
pub async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8", csp(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_only_the_api_origin() {
        assert_eq!(
            api_origin("http://127.0.0.1:41234").as_deref(),
            Some("http://127.0.0.1:41234")
        );
        assert_eq!(
            api_origin("https://api.openai.com/").as_deref(),
            Some("https://api.openai.com")
        );
        // a path or a query never reaches the header
        assert_eq!(
            api_origin("https://api.openai.com/x; script-src *").as_deref(),
            Some("https://api.openai.com")
        );
        assert_eq!(api_origin("file:///etc/passwd"), None);
        assert_eq!(api_origin("not a url"), None);
        let p = csp(Some("http://127.0.0.1:9"));
        assert!(p.contains("connect-src 'self' http://127.0.0.1:9;"), "{p}");
        assert!(csp(None).contains("connect-src 'self';"));
    }

    #[test]
    fn the_base_url_cannot_break_out_of_its_attribute() {
        assert_eq!(
            attr_escape(r#"http://x/"><script>'"#),
            "http://x/&quot;&gt;&lt;script&gt;&#39;"
        );
    }
}
