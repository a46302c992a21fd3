//! Runs sessions on both transports and failing mints with every log level on, capturing the
//! log, and checks that no key (the server key, or any `ek_…` key) appears in it, nor in any
//! error or `Debug` output.

mod openai_support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use openai_support::{agent, kind, scenario, sim, until, Seen};
use voxrelay::config::RealtimeTransport;
use voxrelay::media::g711::Law;
use voxrelay::openai::events::ClientEvent;
use voxrelay::openai::{Connector, LegSettings};
use voxrelay::secret::Secret;

const SERVER_KEY: &str = "sk-log-secret-42";

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_reaches_the_log() {
    let buf = Buffer::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let mut shown = String::new();
    let service = sim("booking").await;
    for transport in [RealtimeTransport::Webrtc, RealtimeTransport::Websocket] {
        let conn = Connector::new(
            &service.base_url(),
            Secret::new(SERVER_KEY),
            transport,
            LegSettings::default(),
        )
        .unwrap();
        shown.push_str(&format!("{conn:?}"));
        let mut leg = conn.connect(&agent(), Law::Mu).await.unwrap();
        shown.push_str(&format!("{leg:?}"));
        leg.send(ClientEvent::ResponseCreate {
            event_id: None,
            response: None,
        })
        .await
        .unwrap();
        let mut seen = Seen::default();
        until(leg.as_mut(), 5, &mut seen, kind("response.created")).await;
        leg.close().await;
    }
    // failures log too: a refused key, and a mint that gives up
    let failing = sim(&scenario("fault-mint-500")).await;
    for base in [
        format!("{}/nowhere", service.base_url()),
        failing.base_url(),
    ] {
        let settings = LegSettings {
            mint_deadline_ms: 400,
            ..Default::default()
        };
        let conn = Connector::new(
            &base,
            Secret::new(SERVER_KEY),
            RealtimeTransport::Webrtc,
            settings,
        )
        .unwrap();
        let err = conn.connect(&agent(), Law::Mu).await.unwrap_err();
        shown.push_str(&format!("{err} {err:?}"));
    }
    let key = conn_key(&service.base_url()).await;
    shown.push_str(&format!("{key:?}"));

    let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("DEBUG") || log.contains("TRACE"),
        "the log was captured"
    );
    for text in [&log, &shown] {
        assert!(!text.contains(SERVER_KEY), "the server key leaked");
        assert!(!text.contains("sk-very"), "part of the server key leaked");
        assert!(!text.contains("ek_"), "an ephemeral key leaked");
        assert!(!text.contains(key.value.expose()));
    }
}

async fn conn_key(base: &str) -> voxrelay::openai::EphemeralKey {
    Connector::new(
        base,
        Secret::new(SERVER_KEY),
        RealtimeTransport::Webrtc,
        LegSettings::default(),
    )
    .unwrap()
    .minter()
    .mint(&agent().session(None))
    .await
    .unwrap()
}
