//! The moderation client against the simulator's `/v1/moderations` on loopback, and its
//! failures (which the bridge logs and ignores).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use voxrelay::bridge::moderation::{Moderation, ModerationError};
use voxrelay::secret::Secret;
use voxrelay::sim::{SimConfig, SimHandle, Simulator};

const KEY: &str = "sk-sim-moderation";

async fn start() -> SimHandle {
    Simulator::start(SimConfig {
        listen: "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        scenario: "booking".into(),
        api_key: Some(KEY.into()),
    })
    .await
    .unwrap()
}

fn client(base: &str, key: &str, timeout: Duration) -> Moderation {
    Moderation::new(reqwest::Client::new(), base, Secret::new(key), timeout)
}

#[tokio::test]
async fn the_simulator_flags_only_its_listed_words() {
    let sim = start().await;
    let m = client(&sim.base_url(), KEY, Duration::from_secs(10));
    assert_eq!(
        m.check("Your appointment is on Tuesday at nine.")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        m.check("well, Forbidden-Test-Word to you")
            .await
            .unwrap()
            .as_deref(),
        Some("harassment")
    );
    // blank text is not worth a request
    assert_eq!(m.check("  ").await.unwrap(), None);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_simulator_answers_in_openais_shape() {
    let sim = start().await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/moderations", sim.base_url());
    let resp = http
        .post(&url)
        .bearer_auth(KEY)
        .json(&json!({"model": "omni-moderation-latest", "input": ["fine", "flagged-test-phrase"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("modr-"), "{v}");
    assert_eq!(v["model"], "omni-moderation-latest");
    assert_eq!(v["results"].as_array().unwrap().len(), 2);
    assert_eq!(v["results"][0]["flagged"], false);
    assert_eq!(v["results"][1]["flagged"], true);
    assert_eq!(v["results"][1]["categories"]["harassment"], true);
    assert!(
        v["results"][1]["category_scores"]["harassment"]
            .as_f64()
            .unwrap()
            > 0.5
    );

    let missing = http
        .post(&url)
        .bearer_auth(KEY)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    let err: Value = missing.json().await.unwrap();
    assert_eq!(err["error"]["code"], "missing_required_parameter");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_refused_key_is_an_error_that_does_not_show_it() {
    let sim = start().await;
    let m = client(&sim.base_url(), "sk-test-nope", Duration::from_secs(10));
    let err = m.check("hello").await.unwrap_err();
    assert!(
        matches!(&err, ModerationError::Status { status: 401, code } if code == "invalid_api_key"),
        "{err:?}"
    );
    let shown = format!("{err} {err:?} {m:?}");
    assert!(!shown.contains("sk-test-nope"), "{shown}");
    sim.shutdown().await;
}

/// A loopback server that answers every request with `answer` (or never, if `None`).
async fn fake(answer: Option<&'static str>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                match answer {
                    Some(a) => {
                        let _ = sock.write_all(a.as_bytes()).await;
                    }
                    // hold the connection open without answering
                    None => {
                        let _ = sock.read(&mut buf).await;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn failures_are_errors_the_bridge_can_ignore() {
    let hang = fake(None).await;
    let err = client(&hang, KEY, Duration::from_millis(300))
        .check("hello")
        .await
        .unwrap_err();
    assert!(matches!(err, ModerationError::Timeout), "{err:?}");

    let server_error = fake(Some(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 62\r\nconnection: close\r\n\r\n{\"error\":{\"message\":\"busy\",\"type\":\"server_error\",\"code\":null}}",
    ))
    .await;
    let err = client(&server_error, KEY, Duration::from_secs(10))
        .check("hello")
        .await
        .unwrap_err();
    assert!(
        matches!(err, ModerationError::Status { status: 503, .. }),
        "{err:?}"
    );

    let not_json = fake(Some(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot json!",
    ))
    .await;
    let err = client(&not_json, KEY, Duration::from_secs(10))
        .check("hello")
        .await
        .unwrap_err();
    assert!(matches!(err, ModerationError::BadAnswer(_)), "{err:?}");

    // nothing listens on a port just freed
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let err = client(&closed, KEY, Duration::from_secs(10))
        .check("hello")
        .await
        .unwrap_err();
    assert!(matches!(err, ModerationError::Request(_)), "{err:?}");
    assert!(!format!("{err}").contains(KEY));
}
