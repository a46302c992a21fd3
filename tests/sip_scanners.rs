//! SIPVicious, the scanner that finds SIP servers on the internet, against a relay with one
//! trunk (127.0.0.2, with digest authentication): `svmap` (OPTIONS and INVITE sweeps),
//! `svwar -m INVITE` (extension enumeration by calling) and `svcrack` (password guessing,
//! from outside and from the trunk's own address). No scanner's call reaches the agent (the
//! in-process simulator mints no key and opens no session for them), the relay stays up, and
//! the trunk's call made during the scan completes.
//!
//! Needs SIPVicious from `tests/conformance/requirements.txt` in the virtualenv whose Python
//! is `$VOXRELAY_CONFORMANCE_PYTHON` (its `bin/` holds the `sipvicious_*` tools).

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::agent::{agent_env, get_json, sim_url};
use support::uac::Uac;
use support::{assert_sipp_ok, msg, sipp_from, sipp_port, Relay};

/// The trunk: 127.0.0.2 only, with digest authentication.
const TRUNK: &str = r#"[{name = "main", addresses = ["127.0.0.2/32"], username = "trunkuser", password_env = "TEST_TRUNK_PW", inbound_auth = true}]"#;
/// The same trunk, as a network that the scanner's 127.0.0.1 belongs to too.
const TRUNK_NET: &str = r#"[{name = "main", addresses = ["127.0.0.0/30"], username = "trunkuser", password_env = "TEST_TRUNK_PW", inbound_auth = true}]"#;
const PASSWORD: &str = "c0rrect-h0rse";

/// The directory of the `sipvicious_*` tools: next to the conformance virtualenv's Python.
fn tools_dir() -> PathBuf {
    let python = std::env::var("VOXRELAY_CONFORMANCE_PYTHON").unwrap_or_else(|_| {
        panic!(
            "VOXRELAY_CONFORMANCE_PYTHON is not set: create a virtualenv, \
             `pip install -r tests/conformance/requirements.txt` (it includes sipvicious), and \
             export VOXRELAY_CONFORMANCE_PYTHON=<venv>/bin/python (.ci/run does this)"
        )
    });
    let dir = PathBuf::from(python)
        .parent()
        .expect("the Python's directory")
        .to_path_buf();
    assert!(
        dir.join("sipvicious_svmap").exists(),
        "no sipvicious_svmap in {}: pip install -r tests/conformance/requirements.txt there",
        dir.display()
    );
    dir
}

/// A relay with `trunks`, whose calls go to the simulator.
fn relay(trunks: &str) -> Relay {
    let env = agent_env("echo");
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.push(("VOXRELAY__TRUNKS", trunks));
    all.push(("TEST_TRUNK_PW", PASSWORD));
    // no keys minted ahead of calls: every key the simulator counts is one a call asked for
    all.push(("VOXRELAY__OPENAI__KEY_POOL", "0"));
    Relay::start(&all)
}

/// Starts a SIPVicious tool against the relay; its session files go to a temporary folder.
fn scanner(tool: &str, args: &[String], home: &tempfile::TempDir) -> Child {
    Command::new(tools_dir().join(tool))
        .args(args)
        .current_dir(home.path())
        .env("HOME", home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{tool} starts: {e}"))
}

/// Waits for the scanner to finish (or kills it after `limit`); its output.
fn finish(mut child: Child, limit: Duration) -> String {
    let pid = child.id();
    let out_pipe = child.stdout.take();
    let err_pipe = child.stderr.take();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        use std::io::Read;
        if let Some(mut o) = out_pipe {
            let _ = o.read_to_string(&mut text);
        }
        if let Some(mut e) = err_pipe {
            let _ = e.read_to_string(&mut text);
        }
        let _ = tx.send(text);
    });
    let text = match rx.recv_timeout(limit) {
        Ok(t) => t,
        Err(_) => {
            // Still scanning: stop it (the pipes then close and the reader returns).
            let _ = Command::new("kill").arg(pid.to_string()).status();
            rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default()
        }
    };
    let _ = child.wait();
    text
}

/// The simulator's counts: (keys minted, sessions opened).
fn sim_counts(relay: &Relay) -> (u64, usize) {
    let v = get_json(&format!("{}/sim/sessions", sim_url(relay)));
    let sessions = v["data"].as_array().map_or(0, |a| a.len());
    (v["keys_minted"].as_u64().expect("keys_minted"), sessions)
}

/// The trunk's call, from its own address, with its password: completes.
fn trunk_call(relay: &Relay) {
    // The digest uri must be the Request-URI (SIPp writes sip:<remote> unless told).
    let auth_uri = format!("reception@{}", relay.sip);
    let run = sipp_from(
        "127.0.0.2",
        &relay.sip.to_string(),
        sipp_port(),
        "auth_call.xml",
        &[
            "-m",
            "1",
            "-au",
            "trunkuser",
            "-ap",
            PASSWORD,
            "-auth_uri",
            &auth_uri,
        ],
    );
    assert_sipp_ok(&run, 1, relay);
}

/// Where a scanner is told to go: `host -p port` for svmap, `udp://host:port` for the others.
enum Target {
    HostAndPort,
    Url,
}

/// Runs `tool` from 127.0.0.1 against a relay with `trunks` while the trunk calls, stopping
/// it after `limit` if it has not finished; checks the outcome. `seen` is the log line that
/// proves the scanner's requests reached the relay.
fn scan(
    tool: &str,
    trunks: &str,
    args: &[&str],
    target: Target,
    seen: &str,
    limit: Duration,
) -> Relay {
    let relay = relay(trunks);
    let home = tempfile::tempdir().unwrap();
    // Its own source port (SIPVicious binds 5060 by default: parallel tests would collide).
    let local_port = support::free_udp_port().to_string();
    let mut all: Vec<String> = vec!["-b".into(), "127.0.0.1".into(), "-P".into(), local_port];
    all.extend(args.iter().map(|s| s.to_string()));
    match target {
        Target::HostAndPort => all.extend([
            "-p".into(),
            relay.sip.port().to_string(),
            "127.0.0.1".into(),
        ]),
        Target::Url => all.push(format!("udp://127.0.0.1:{}", relay.sip.port())),
    }
    let child = scanner(tool, &all, &home);
    // The scan is under way once the relay has answered its first request.
    relay.wait_for(|v| msg(v) == seen, Duration::from_secs(30));
    trunk_call(&relay);
    let output = finish(child, limit);
    // The relay is alive and still takes the trunk's calls.
    trunk_call(&relay);
    let mut trunk = Uac::new_from("127.0.0.2", relay.sip);
    let options = trunk.request("OPTIONS", "");
    trunk.send_raw(options.as_bytes());
    assert_eq!(
        trunk
            .recv(Duration::from_secs(5))
            .expect("the relay answers")
            .status(),
        200
    );
    let (minted, sessions) = sim_counts(&relay);
    assert_eq!(
        (minted, sessions),
        (2, 2),
        "only the trunk's two calls reached the agent\n{tool}:\n{output}\nrelay:\n{}",
        relay.dump()
    );
    let started = relay
        .logs()
        .iter()
        .filter(|v| msg(v) == "call started")
        .count();
    assert_eq!(started, 2, "{tool}:\n{output}");
    let panics = relay
        .logs()
        .iter()
        .filter(|v| v.to_string().contains("panicked"))
        .count();
    assert_eq!(panics, 0, "{}", relay.dump());
    relay
}

const REFUSED: &str = "request refused: not from a trunk";

#[test]
fn svmap_finds_nothing_to_call() {
    scan(
        "sipvicious_svmap",
        TRUNK,
        &["-t", "0.01"],
        Target::HostAndPort,
        REFUSED,
        Duration::from_secs(30),
    );
}

#[test]
fn svmap_with_invite_starts_no_call() {
    scan(
        "sipvicious_svmap",
        TRUNK,
        &["-m", "INVITE", "-e", "100", "-t", "0.01"],
        Target::HostAndPort,
        REFUSED,
        Duration::from_secs(30),
    );
}

#[test]
fn svwar_invite_enumeration_starts_no_call() {
    scan(
        "sipvicious_svwar",
        TRUNK,
        &[
            "-m",
            "INVITE",
            "-e",
            "100-400",
            "--force",
            "-t",
            "0.01",
            "--maximumtime",
            "5",
        ],
        Target::Url,
        REFUSED,
        Duration::from_secs(30),
    );
}

#[test]
fn svcrack_from_outside_is_refused_before_any_password_is_tried() {
    // SIPVicious retries a 403 without end: it is stopped after 10 s of being refused.
    scan(
        "sipvicious_svcrack",
        TRUNK,
        &[
            "-u",
            "trunkuser",
            "-m",
            "INVITE",
            "-r",
            "1000-1100",
            "-t",
            "0.01",
            "--maximumtime",
            "5",
        ],
        Target::Url,
        REFUSED,
        Duration::from_secs(10),
    );
}

#[test]
fn svcrack_from_the_trunks_network_guesses_in_vain() {
    // An attacker inside the trunk's network: every guess is refused and challenged again,
    // also when it reuses one nonce (-n); no call starts.
    let relay = scan(
        "sipvicious_svcrack",
        TRUNK_NET,
        &[
            "-u",
            "trunkuser",
            "-m",
            "INVITE",
            "-r",
            "1000-1010",
            "-n",
            "-t",
            "0.05",
            "--maximumtime",
            "5",
        ],
        Target::Url,
        "INVITE challenged",
        Duration::from_secs(60),
    );
    let guesses = relay
        .logs()
        .iter()
        .filter(|v| msg(v) == "INVITE challenged" && v["reason"] == "wrong password")
        .count();
    assert!(guesses >= 5, "svcrack tried its passwords: {guesses}");
}
