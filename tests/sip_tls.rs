//! SIP over TLS against the real `voxrelay` binary on loopback: a call and OPTIONS with SIPp,
//! the relay's BYE over the caller's TLS connection, rubbish on the TLS port, and the TLS keys
//! checked at start. Every test makes its own self-signed certificate.
//!
//! Debian's SIPp (sip-tester 3.6.1) is built without OpenSSL and refuses `-t l1`, so SIPp runs
//! its scenarios over TCP into [`TlsTunnel`], which carries each connection over TLS to the
//! relay, checking the relay's certificate. The relay sees TLS connections only; SIPp's Via
//! says TCP, which changes nothing for the relay (answers go back on the connection).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use support::{assert_sipp_ok, msg, relay_binary, scenario, sipp_from, sipp_port, Relay, SippRun};

/// A self-signed certificate for `localhost` and 127.0.0.1, its key, and the folder holding
/// both as PEM files.
struct TestCert {
    dir: tempfile::TempDir,
    der: Vec<u8>,
    key_pem: String,
}

impl TestCert {
    fn new() -> TestCert {
        let k = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), k.cert.pem()).unwrap();
        let key_pem = k.signing_key.serialize_pem();
        std::fs::write(dir.path().join("key.pem"), &key_pem).unwrap();
        TestCert {
            der: k.cert.der().to_vec(),
            key_pem,
            dir,
        }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// The relay's environment for TLS on a free port.
    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("VOXRELAY__SIP__TLS_LISTEN".into(), "127.0.0.1:0".into()),
            ("VOXRELAY__SIP__TLS_CERT".into(), path(&self.cert())),
            ("VOXRELAY__SIP__TLS_KEY".into(), path(&self.key())),
        ]
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn start(cert: &TestCert, extra: &[(&str, &str)]) -> Relay {
    let env = cert.env();
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.extend_from_slice(extra);
    let relay = Relay::start(&all);
    let tls = relay.tls.expect("the ready line names the TLS address");
    assert_ne!(tls.port(), 0);
    assert_ne!(tls.port(), relay.sip.port());
    relay
}

/// A TLS client configuration that trusts only the test certificate.
fn client_config(cert: &TestCert) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(cert.der.clone()))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

/// Plain TCP in on a loopback port, TLS out to the relay: every accepted connection gets its
/// own TLS connection (the certificate checked for `localhost`), bytes copied both ways until
/// either side closes.
struct TlsTunnel {
    addr: SocketAddr,
    _rt: tokio::runtime::Runtime,
}

impl TlsTunnel {
    fn new(cert: &TestCert, to: SocketAddr) -> TlsTunnel {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let connector = tokio_rustls::TlsConnector::from(client_config(cert));
        rt.spawn(async move {
            while let Ok((mut plain, _)) = listener.accept().await {
                let connector = connector.clone();
                tokio::spawn(async move {
                    let tcp = tokio::net::TcpStream::connect(to).await.unwrap();
                    let name = "localhost".try_into().unwrap();
                    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
                    let _ = tokio::io::copy_bidirectional(&mut plain, &mut tls).await;
                });
            }
        });
        TlsTunnel { addr, _rt: rt }
    }
}

/// SIPp over TCP into a [`TlsTunnel`] to the relay's TLS address.
fn sipp_tls(relay: &Relay, cert: &TestCert, scenario_path: &str, args: &[&str]) -> SippRun {
    let tunnel = TlsTunnel::new(cert, relay.tls.unwrap());
    let mut all = vec!["-t", "t1"];
    all.extend_from_slice(args);
    sipp_from(
        "127.0.0.1",
        &tunnel.addr.to_string(),
        sipp_port(),
        scenario_path,
        &all,
    )
}

/// A TLS client that trusts only the test certificate and checks the name `localhost`.
fn tls_client(
    cert: &TestCert,
    to: SocketAddr,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let conn = rustls::ClientConnection::new(client_config(cert), "localhost".try_into().unwrap())
        .unwrap();
    let sock = TcpStream::connect(to).unwrap();
    // Bounds a read that never gets an answer; no test waits on this to pass.
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut s = rustls::StreamOwned::new(conn, sock);
    // Completes the handshake: the relay serves the configured certificate.
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).expect("TLS handshake");
    }
    s
}

#[test]
fn a_call_over_tls_with_a_sips_contact() {
    let cert = TestCert::new();
    let relay = start(&cert, &[]);
    // The scenario checks the 200's Contact against the relay's own TLS port.
    let text = std::fs::read_to_string(scenario("call_tls.xml"))
        .unwrap()
        .replace("TLS_PORT", &relay.tls.unwrap().port().to_string());
    let dir = tempfile::tempdir().unwrap();
    let sf = dir.path().join("call_tls.xml");
    std::fs::write(&sf, text).unwrap();
    let run = sipp_tls(&relay, &cert, &path(&sf), &["-m", "1", "-d", "1000"]);
    assert_sipp_ok(&run, 1, &relay);
    let started = relay.wait_for(|v| msg(v) == "call started", Duration::from_secs(5));
    assert_eq!(started["transport"], "tls", "{started}");
    let ended = relay.wait_for(
        |v| msg(v) == "call ended" && v["reason"] == "caller_bye",
        Duration::from_secs(30),
    );
    // The echo agent sent the caller's audio back over RTP.
    assert!(ended["rtp_in"].as_u64().unwrap() > 0, "{ended}");
    assert!(ended["rtp_out"].as_u64().unwrap() > 0, "{ended}");
}

#[test]
fn options_over_tls_and_udp_side_by_side() {
    let cert = TestCert::new();
    let relay = start(&cert, &[]);
    assert_sipp_ok(
        &sipp_tls(&relay, &cert, "options.xml", &["-m", "3"]),
        3,
        &relay,
    );
    // UDP still answers on its own port.
    assert_sipp_ok(
        &support::sipp(&relay, "options.xml", &["-m", "1"]),
        1,
        &relay,
    );
}

#[test]
fn the_relay_hangs_up_over_the_callers_tls_connection() {
    let cert = TestCert::new();
    let relay = start(&cert, &[("VOXRELAY__BRIDGE__MAX_CALL_SECONDS", "2")]);
    let run = sipp_tls(&relay, &cert, "relay_hangs_up.xml", &["-m", "1"]);
    assert_sipp_ok(&run, 1, &relay);
    relay.wait_for(
        |v| msg(v) == "call ended" && v["reason"] == "max_duration",
        Duration::from_secs(30),
    );
}

#[test]
fn rubbish_on_the_tls_port_does_not_hurt_a_following_call() {
    let cert = TestCert::new();
    let relay = start(&cert, &[]);
    let tls = relay.tls.unwrap();

    // Plain text where a TLS handshake belongs: the handshake fails and the relay closes.
    let mut plain = TcpStream::connect(tls).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"OPTIONS sip:x SIP/2.0\r\n\r\nnot a client hello\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    loop {
        match plain.read(&mut buf) {
            Ok(0) => break,
            // A TLS alert may come first.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the relay kept a non-TLS connection open: {e}"),
        }
    }
    // A connection that never says anything, held open during the call.
    let _silent = TcpStream::connect(tls).unwrap();
    // A real TLS session that sends rubbish instead of SIP, also held open.
    let mut rubbish = tls_client(&cert, tls);
    rubbish
        .write_all(b"\x00\x01\x02garbage\r\nContent-Length: x\r\n\r\nINVITE\r\n\r\n\xff\xfe")
        .unwrap();
    rubbish.flush().unwrap();
    // A well-behaved TLS peer on its own connection still gets answers.
    let mut ok = tls_client(&cert, tls);
    let options = format!(
        "OPTIONS sip:echo@{tls} SIP/2.0\r\n\
         Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-tls-1;rport\r\n\
         From: <sip:probe@127.0.0.1>;tag=t1\r\n\
         To: <sip:echo@{tls}>\r\n\
         Call-ID: tls-probe-1\r\n\
         CSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    );
    ok.write_all(options.as_bytes()).unwrap();
    ok.flush().unwrap();
    let mut answer = Vec::new();
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = ok.read(&mut buf).expect("an answer to OPTIONS over TLS");
        assert!(n > 0, "the relay closed the connection");
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    assert!(answer.contains("Call-ID: tls-probe-1"), "{answer}");

    let run = sipp_tls(&relay, &cert, "call_pcap.xml", &["-m", "1", "-d", "500"]);
    assert_sipp_ok(&run, 1, &relay);
    relay.wait_for(
        |v| msg(v) == "call ended" && v["reason"] == "caller_bye",
        Duration::from_secs(30),
    );
}

/// Runs the binary with `args` and the TLS environment, without waiting for a ready line.
fn run(args: &[&str], env: &[(String, String)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    // coreutils' timeout bounds a relay that wrongly starts and would serve forever.
    let out = Command::new("timeout")
        .arg("60")
        .arg(relay_binary())
        .args(args)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("VOXRELAY__SIP__LISTEN", "127.0.0.1:0")
        .env("VOXRELAY__AGENTS__DEFAULT", "echo")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .output()
        .expect("voxrelay runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn with(env: &[(String, String)], key: &str, value: &str) -> Vec<(String, String)> {
    let mut env: Vec<_> = env.iter().filter(|(k, _)| k != key).cloned().collect();
    env.push((key.to_string(), value.to_string()));
    env
}

#[test]
fn a_bad_certificate_or_key_is_refused_at_start_naming_the_key() {
    let cert = TestCert::new();
    let missing = cert.dir.path().join("missing.pem");
    let env = with(&cert.env(), "VOXRELAY__SIP__TLS_CERT", &path(&missing));
    let (code, _, err) = run(&["serve"], &env);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("sip.tls_cert") && err.contains("missing.pem"),
        "{err}"
    );

    // The certificate where the key belongs.
    let env = with(&cert.env(), "VOXRELAY__SIP__TLS_KEY", &path(&cert.cert()));
    let (code, _, err) = run(&["serve"], &env);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("sip.tls_key"), "{err}");

    // A TLS port already taken is refused too, not merely logged.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let env = with(&cert.env(), "VOXRELAY__SIP__TLS_LISTEN", &addr);
    let (code, _, err) = run(&["serve"], &env);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("sip.tls_listen") && err.contains(&addr),
        "{err}"
    );
}

#[test]
fn check_config_shows_the_tls_keys_but_never_the_key_itself() {
    let cert = TestCert::new();
    let env = with(&cert.env(), "VOXRELAY__SIP__TLS_LISTEN", "127.0.0.1:5061");
    let (code, out, err) = run(&["check-config"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("tls_listen = \"127.0.0.1:5061\""), "{out}");
    assert!(
        out.contains(&format!("tls_cert = \"{}\"", path(&cert.cert()))),
        "{out}"
    );
    assert!(
        out.contains(&format!("tls_key = \"{}\"", path(&cert.key()))),
        "{out}"
    );
    let key_body = cert.key_pem.lines().nth(1).unwrap();
    assert!(
        !out.contains("PRIVATE KEY") && !out.contains(key_body),
        "{out}"
    );

    let env = with(&env, "VOXRELAY__SIP__TLS_KEY", "/nonexistent/key.pem");
    let (code, _, err) = run(&["check-config"], &env);
    assert_eq!(code, 1);
    assert!(
        err.contains("sip.tls_key") && err.contains("/nonexistent/key.pem"),
        "{err}"
    );
}
