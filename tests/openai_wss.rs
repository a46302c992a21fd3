//! `wss://`: the WebSocket leg does TLS for an `https://` base. A TLS terminator on loopback
//! (a self-signed certificate made here) sits in front of the simulator: trusted as an extra
//! root, a whole session runs through it; with the default roots, the handshake is refused.

mod openai_support;

use std::sync::Arc;
use std::time::Duration;

use openai_support::{agent, kind, record, sim, until, Seen};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use voxrelay::config::RealtimeTransport;
use voxrelay::media::g711::Law;
use voxrelay::openai::events::ClientEvent;
use voxrelay::openai::{
    AgentAudio, CertificateDer, Connector, LegEnd, LegError, LegEvent, LegSettings, RealtimeLeg,
};
use voxrelay::secret::Secret;

/// A TLS terminator on `127.0.0.1`: every connection is decrypted and piped to `upstream`.
/// Returns its `https://` base and the certificate it presents.
async fn tls_front(upstream: std::net::SocketAddr) -> (String, CertificateDer<'static>) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let der = cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![der.clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // a refused handshake ends here, as a real server's would
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut up) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    (format!("https://127.0.0.1:{}", addr.port()), der)
}

fn upstream(base: &str) -> std::net::SocketAddr {
    base.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wss_session_runs_through_tls_with_a_trusted_root() {
    let sim = sim("booking").await;
    let (base, cert) = tls_front(upstream(&sim.base_url())).await;
    assert!(base.starts_with("https://"));
    let mut leg = Connector::with_extra_roots(
        &base,
        Secret::new("sk-test"),
        RealtimeTransport::Websocket,
        LegSettings::default(),
        &[cert],
    )
    .unwrap()
    .connect(&agent(), Law::Mu)
    .await
    .expect("the wss:// session opens");
    let session_id = leg.session_id().unwrap().to_string();
    let leg: &mut dyn RealtimeLeg = leg.as_mut();
    let mut seen = Seen::default();
    until(leg, 5, &mut seen, kind("session.updated")).await;
    // audio comes back through the TLS socket
    leg.send(ClientEvent::ResponseCreate {
        event_id: None,
        response: None,
    })
    .await
    .unwrap();
    while seen.frames < 10 {
        let ev = until(leg, 5, &mut seen, |e| matches!(e, LegEvent::Audio(_))).await;
        assert!(matches!(ev, LegEvent::Audio(AgentAudio::G711(Law::Mu, _))));
    }
    // the simulator saw a WebSocket session: the TLS front only piped bytes
    assert_eq!(record(&sim, &session_id).await["transport"], "websocket");
    leg.close().await;
    assert_eq!(leg.recv().await, LegEvent::Ended(LegEnd::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_server_is_refused_by_default() {
    let sim = sim("booking").await;
    let (base, _cert) = tls_front(upstream(&sim.base_url())).await;
    let conn = Connector::new(
        &base,
        Secret::new("sk-secret-key-value"),
        RealtimeTransport::Websocket,
        LegSettings {
            connect_deadline_ms: 5_000,
            ..Default::default()
        },
    )
    .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), conn.connect(&agent(), Law::Mu))
        .await
        .expect("the refusal is prompt, not the deadline")
        .expect_err("an untrusted certificate must not connect");
    let text = format!("{err} {err:?}");
    assert!(matches!(err, LegError::Transport(_)), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    assert!(!text.contains("sk-secret-key-value"), "{text}");
    // nothing reached the service
    let sessions: serde_json::Value = reqwest::get(format!("{}/sim/sessions", sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        sessions["data"].as_array().map(Vec::len),
        Some(0),
        "{sessions}"
    );
}
