//! Ephemeral keys against the simulator: success, retried 429s, 5xx and hangs that end at
//! the deadline, and 401/403 that are final and say why.

mod openai_support;

use std::time::{Duration, Instant};

use openai_support::{agent, scenario, sim};
use voxrelay::openai::{KeyMinter, MintError};
use voxrelay::secret::Secret;
use voxrelay::sim::{SimConfig, Simulator};

fn minter(base: &str, key: &str, deadline_ms: u64) -> KeyMinter {
    KeyMinter::new(
        reqwest::Client::new(),
        base,
        Secret::new(key),
        Duration::from_millis(deadline_ms),
        600,
    )
}

#[tokio::test]
async fn a_key_is_minted_with_the_agents_session_and_never_printed() {
    let sim = sim("booking").await;
    let key = minter(&sim.base_url(), "sk-test", 3_000)
        .mint(&agent().session(None))
        .await
        .unwrap();
    assert!(key.value.expose().starts_with("ek_"));
    assert!(key.expires_at > 0);
    assert_eq!(
        key.session["instructions"],
        "You book appointments for the clinic."
    );
    assert_eq!(key.session["audio"]["output"]["voice"], "marin");
    assert_eq!(key.session["tools"][0]["name"], "check_availability");
    assert!(!format!("{key:?}").contains(key.value.expose()));
}

#[tokio::test]
async fn rate_limits_are_retried_until_a_key_comes() {
    let sim = sim(&scenario("fault-mint-429")).await;
    let key = minter(&sim.base_url(), "sk-test", 3_000)
        .mint(&agent().session(None))
        .await
        .expect("the third attempt succeeds");
    assert!(key.value.expose().starts_with("ek_"));
}

#[tokio::test]
async fn server_errors_end_at_the_deadline_after_several_attempts() {
    let sim = sim(&scenario("fault-mint-500")).await;
    let started = Instant::now();
    let err = minter(&sim.base_url(), "sk-test", 1_000)
        .mint(&agent().session(None))
        .await
        .unwrap_err();
    let MintError::Deadline { attempts, last, .. } = &err else {
        panic!("not a deadline error: {err}")
    };
    assert!(*attempts >= 2, "{err}");
    assert!(last.starts_with("500"), "{err}");
    assert!(err.is_transient());
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_hanging_service_ends_at_the_deadline() {
    let sim = sim(&scenario("fault-mint-hang")).await;
    let started = Instant::now();
    let err = minter(&sim.base_url(), "sk-test", 900)
        .mint(&agent().session(None))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, MintError::Deadline { last, .. } if last == "timed out"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1_400),
        "{:?}",
        started.elapsed()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_wrong_key_is_final_and_named() {
    let sim = Simulator::start(SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        scenario: "booking".into(),
        api_key: Some("sk-the-right-one".into()),
    })
    .await
    .unwrap();
    let err = minter(&sim.base_url(), "sk-the-wrong-one", 3_000)
        .mint(&agent().session(None))
        .await
        .unwrap_err();
    assert!(matches!(&err, MintError::Unauthorized { code } if code == "invalid_api_key"));
    let text = format!("{err} {err:?}");
    assert!(text.contains("OPENAI_API_KEY"), "{text}");
    assert!(!text.contains("sk-the-wrong-one"), "{text}");
}

#[tokio::test]
async fn forbidden_is_final_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("forbidden.toml");
    std::fs::write(
        &path,
        "name = \"forbidden\"\n[[steps]]\nsay = { text = \"Hi.\" }\n[faults]\nmint = { status = 403 }\n",
    )
    .unwrap();
    let sim = sim(path.to_str().unwrap()).await;
    let started = Instant::now();
    let err = minter(&sim.base_url(), "sk-test", 3_000)
        .mint(&agent().session(None))
        .await
        .unwrap_err();
    assert!(matches!(&err, MintError::Forbidden { .. }), "{err}");
    assert!(err.to_string().contains("403"));
    assert!(!err.is_transient());
    // not retried: one round trip, far from the deadline
    assert!(started.elapsed() < Duration::from_millis(1_000));
}

#[tokio::test]
async fn a_bad_session_is_rejected_without_retries() {
    let sim = sim("booking").await;
    let mut session = agent().session(None);
    session.kind = Some("transcription-only-nonsense".into());
    let err = minter(&sim.base_url(), "sk-test", 3_000)
        .mint(&session)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, MintError::Rejected { status: 400, .. }),
        "{err}"
    );
}
