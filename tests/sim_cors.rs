//! The simulator answers browsers as OpenAI's API does: CORS preflights on `/v1` answered with
//! the methods and the request headers OpenAI's browser SDKs send, `Access-Control-Allow-Origin:
//! *` on the answers (errors too), `Location` exposed; server-key endpoints still refuse an
//! ephemeral key, and the test-only `/sim` routes answer no browser. (A real browser running the
//! official Agents SDK against it: tests/sdk_browser.rs.)

mod sim_support;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sim_support::{mint, start_sim};
use voxrelay::sim::SimHandle;

const SERVER_KEY: &str = "sk-sim-cors";
const PAGE: &str = "http://127.0.0.1:5173";

async fn start() -> SimHandle {
    start_sim("booking", Some(SERVER_KEY)).await
}

/// A browser's preflight: `OPTIONS` with `Origin`, the method and the headers it will send.
async fn preflight(sim: &SimHandle, path: &str, method: &str, headers: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(Method::OPTIONS, format!("{}{path}", sim.base_url()))
        .header("origin", PAGE)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", headers)
        .send()
        .await
        .unwrap()
}

/// A request from the page: `Origin` set, and `key` as the bearer token when given.
fn from_page(
    sim: &SimHandle,
    method: Method,
    path: &str,
    key: Option<&str>,
) -> reqwest::RequestBuilder {
    let req = reqwest::Client::new()
        .request(method, format!("{}{path}", sim.base_url()))
        .header("origin", PAGE);
    match key {
        Some(key) => req.bearer_auth(key),
        None => req,
    }
}

/// A comma-separated header as a lowercase list.
fn list(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// An ephemeral key for a plain realtime session, as the page's server would mint it.
async fn ephemeral_key(sim: &SimHandle) -> String {
    mint(sim, SERVER_KEY, json!({"type": "realtime"})).await
}

/// An offer as Chromium writes it (audio with Opus, the data channel), its candidates left
/// out: the simulator answers without them, the call just never connects.
const OFFER: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
a=extmap-allow-mixed\r\n\
a=msid-semantic: WMS\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Yh3k\r\n\
a=ice-pwd:w9Rk2bq8Fv1Zp0Lx7Tn4Cs6D\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 8B:2A:1C:44:0F:9E:63:D1:7A:B5:20:3E:91:C8:4F:6D:E2:05:7B:AA:13:58:C9:0D:64:F1:2E:87:B3:5C:D0:19\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=sendrecv\r\n\
a=msid:- 3c6f0b7e-1d2a-4e59-9a51-0c1f2e3d4b5a\r\n\
a=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=rtcp-fb:111 transport-cc\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=ssrc:1001 cname:k2Zb0yq1\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
c=IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Yh3k\r\n\
a=ice-pwd:w9Rk2bq8Fv1Zp0Lx7Tn4Cs6D\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 8B:2A:1C:44:0F:9E:63:D1:7A:B5:20:3E:91:C8:4F:6D:E2:05:7B:AA:13:58:C9:0D:64:F1:2E:87:B3:5C:D0:19\r\n\
a=setup:actpass\r\n\
a=mid:1\r\n\
a=sctp-port:5000\r\n\
a=max-message-size:262144\r\n";

#[tokio::test]
async fn the_offer_preflight_allows_what_the_agents_sdk_sends() {
    let sim = start().await;
    // what Chromium sends before the Agents SDK's offer (header names sorted, lowercase)
    let resp = preflight(
        &sim,
        "/v1/realtime/calls",
        "POST",
        "authorization,content-type,x-openai-agents-sdk",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(
        h.get("access-control-allow-credentials").is_none(),
        "no cookies"
    );
    assert!(list(h, "access-control-allow-methods").contains(&"post".into()));
    let allowed = list(h, "access-control-allow-headers");
    for wanted in ["authorization", "content-type", "x-openai-agents-sdk"] {
        assert!(allowed.contains(&wanted.into()), "{wanted} in {allowed:?}");
    }
    assert_eq!(h["access-control-max-age"], "86400");
    // the openai-node SDK's headers pass too (a page using it with an ephemeral key)
    let resp = preflight(
        &sim,
        "/v1/realtime/calls",
        "POST",
        "authorization,content-type,openai-beta,x-stainless-arch,x-stainless-lang,x-stainless-os,x-stainless-package-version,x-stainless-retry-count,x-stainless-runtime,x-stainless-runtime-version,x-stainless-timeout",
    )
    .await;
    let allowed = list(resp.headers(), "access-control-allow-headers");
    for wanted in [
        "openai-beta",
        "x-stainless-os",
        "x-stainless-retry-count",
        "x-stainless-timeout",
    ] {
        assert!(allowed.contains(&wanted.into()), "{wanted} in {allowed:?}");
    }
    // a header outside OpenAI's list is not allowed: the browser then refuses the request
    let resp = preflight(
        &sim,
        "/v1/realtime/calls",
        "POST",
        "authorization,originator",
    )
    .await;
    assert!(!list(resp.headers(), "access-control-allow-headers").contains(&"originator".into()));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_call_posted_from_a_page_is_readable_with_its_location() {
    let sim = start().await;
    let ek = ephemeral_key(&sim).await;
    let resp = from_page(&sim, Method::POST, "/v1/realtime/calls", Some(&ek))
        .header("content-type", "application/sdp")
        .header("x-openai-agents-sdk", "openai-agents-sdk.0.20.0")
        .body(OFFER)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let h = resp.headers().clone();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert_eq!(list(&h, "access-control-expose-headers"), vec!["location"]);
    let location = h["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with("/v1/realtime/calls/rtc_"),
        "{location}"
    );
    assert!(resp.text().await.unwrap().starts_with("v=0"));

    // the hangup sub-resource answers the page too, preflight and all
    let hangup = format!("{location}/hangup");
    let pre = preflight(&sim, &hangup, "POST", "authorization").await;
    assert_eq!(pre.status(), StatusCode::OK);
    assert_eq!(pre.headers()["access-control-allow-origin"], "*");
    let resp = from_page(&sim, Method::POST, &hangup, Some(&ek))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    sim.shutdown().await;
}

#[tokio::test]
async fn errors_reach_the_page_so_the_sdk_can_say_why() {
    let sim = start().await;
    // an expired or made-up key: 401 in OpenAI's shape, readable cross-origin
    let resp = from_page(
        &sim,
        Method::POST,
        "/v1/realtime/calls",
        Some("ek_not_minted_here"),
    )
    .header("content-type", "application/sdp")
    .body(OFFER)
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    sim.shutdown().await;
}

#[tokio::test]
async fn server_key_endpoints_answer_browsers_but_refuse_an_ephemeral_key() {
    let sim = start().await;
    let ek = ephemeral_key(&sim).await;
    // as at OpenAI, CORS is the same on the whole API; the key decides what a caller may do
    for (path, body) in [
        ("/v1/realtime/client_secrets", json!({})),
        ("/v1/moderations", json!({"input": "hello"})),
    ] {
        let pre = preflight(&sim, path, "POST", "authorization,content-type").await;
        assert_eq!(pre.status(), StatusCode::OK, "{path}");
        let resp = from_page(&sim, Method::POST, path, Some(&ek))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(resp.headers()["access-control-allow-origin"], "*");
        let text = resp.text().await.unwrap();
        assert!(text.contains("invalid_api_key"), "{path}: {text}");
        assert!(!text.contains(&ek), "the key is never echoed");
    }
    assert_eq!(sim.minted_keys(), 1, "the page minted nothing");
    sim.shutdown().await;
}

#[tokio::test]
async fn the_test_inspection_routes_answer_no_browser() {
    let sim = start().await;
    let resp = from_page(&sim, Method::GET, "/sim/sessions", None)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    let pre = preflight(&sim, "/sim/sessions", "GET", "authorization").await;
    assert!(pre.headers().get("access-control-allow-origin").is_none());
    sim.shutdown().await;
}
