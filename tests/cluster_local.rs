//! `deploy/local-cluster.sh`, as an operator runs it: `up 2` starts Debian's Kamailio, two
//! relays and PostgreSQL on loopback and prints the cluster's SIP address and an admin URL; a
//! call through that address is answered; the admin URL shows both relays of one cluster;
//! `down` stops everything it started. Needs kamailio, PostgreSQL's server binaries, SIPp and
//! curl (CI installs them); fails, saying so, without them.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use support::{free_tcp_port, free_udp_port, sipp_from, sipp_port};

fn script(args: &[&str], state: &Path, sip_port: u16, pg_port: u16) -> Output {
    Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local-cluster.sh"))
        .args(args)
        .env("VOXRELAY_CLUSTER_DIR", state)
        .env("CLUSTER_SIP_PORT", sip_port.to_string())
        .env("CLUSTER_PG_PORT", pg_port.to_string())
        .env("VOXRELAY_BIN", support::relay_binary())
        // the relays' RTP ports away from the other tests' (21000 up)
        .env("CLUSTER_RTP_BASE", "40000")
        .env_remove("OPENAI_API_KEY")
        .output()
        .expect("bash runs")
}

/// Stops the cluster even when an assertion fails.
struct Down<'a>(&'a Path, u16, u16);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = script(&["down"], self.0, self.1, self.2);
        }
    }
}

#[test]
fn local_cluster_up_answers_a_call_shows_one_cluster_and_down_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("cluster");
    let (sip_port, pg_port) = (free_udp_port(), free_tcp_port());
    let _down = Down(&state, sip_port, pg_port);

    let up = script(&["up", "2"], &state, sip_port, pg_port);
    let out = String::from_utf8_lossy(&up.stdout).to_string();
    assert!(
        up.status.success(),
        "up failed:\n{out}\n{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(
        out.contains(&format!("cluster SIP address: sip:127.0.0.1:{sip_port}")),
        "{out}"
    );
    assert!(out.contains("admin:               http://127.0.0.11:8080/"), "{out}");
    assert!(out.contains("PostgreSQL"), "{out}");

    // a call through the cluster's address is answered by one of the relays
    let run = sipp_from(
        "127.0.0.1",
        &format!("127.0.0.1:{sip_port}"),
        sipp_port(),
        "call_via_proxy.xml",
        &["-m", "1", "-d", "500", "-default_behaviors", "all,-abortunexp"],
    );
    assert!(
        run.code == 0 && run.successful == 1,
        "SIPp through the local cluster: {}\n{}",
        run.output,
        std::fs::read_to_string(state.join("kamailio.log")).unwrap_or_default()
    );

    // the admin URL shows one cluster of two relays
    let curl = Command::new("curl")
        .args(["-sf", "--max-time", "10", "http://127.0.0.11:8080/api/cluster"])
        .output()
        .unwrap();
    assert!(curl.status.success(), "the admin URL answers");
    let v: Value = serde_json::from_slice(&curl.stdout).unwrap();
    assert_eq!(v["node_id"], "relay1", "{v}");
    let names: Vec<&str> = v["relays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["relay1", "relay2"], "{v}");
    let secret = std::fs::read_to_string(state.join("cluster.secret")).unwrap();
    assert_eq!(secret.len(), 64, "a 256-bit secret, in hex");
    assert!(!out.contains(&secret), "the secret is not printed");

    let down = script(&["down"], &state, sip_port, pg_port);
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    assert!(String::from_utf8_lossy(&down.stdout).contains("local-cluster: stopped"));
    assert!(!state.exists(), "down removes its state");
    // nothing answers any more: the relays' admin ports and PostgreSQL are closed
    for addr in ["127.0.0.11:8080", "127.0.0.12:8080", &format!("127.0.0.1:{pg_port}")] {
        let refused = std::net::TcpStream::connect_timeout(
            &addr.parse().unwrap(),
            Duration::from_secs(2),
        )
        .is_err();
        assert!(refused, "{addr} still answers after down");
    }
}
