//! Debian's Kamailio on loopback with deploy/kamailio/kamailio.cfg, in front of test relays.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_udp_and_tcp_port, Relay};

/// A running Kamailio, stopped when dropped.
pub struct Kamailio {
    child: Child,
    /// Its SIP address, on UDP and TCP (one port): the cluster's address.
    pub sip: SocketAddr,
    ctl: String,
    dir: tempfile::TempDir,
}

/// A relay as the dispatcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// `sip:ip:port`.
    pub uri: String,
    /// `A` active, `I` inactive, `T` trying, `D` disabled; then `P` when probed.
    pub flags: String,
}

impl Destination {
    /// Takes calls.
    pub fn active(&self) -> bool {
        self.flags.starts_with('A')
    }
}

/// The dispatcher's URI for a relay.
pub fn uri(relay: &Relay) -> String {
    format!("sip:{}", relay.sip)
}

fn binary(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/local/sbin", "/usr/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{name} is not installed: these tests need Debian's kamailio \
         (apt-get install --no-install-recommends kamailio; .ci/run installs it)"
    );
}

impl Kamailio {
    /// Starts Kamailio with the repository's config, the `relays` as its dispatcher set and
    /// 127.0.0.1 as the only trunk; waits until every relay answered its OPTIONS probe.
    pub fn start(relays: &[&Relay]) -> Kamailio {
        Kamailio::start_with(relays, &[])
    }

    /// As [`Kamailio::start`], with more of the config's parameters (`NAME=VALUE`, as
    /// `kamailio -A` takes them).
    pub fn start_with(relays: &[&Relay], params: &[&str]) -> Kamailio {
        let bin = binary("kamailio");
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("dispatcher.list");
        let mut text = String::new();
        for r in relays {
            text.push_str(&format!("1 {} 8\n", uri(r)));
        }
        std::fs::write(&list, text).unwrap();
        let trunks = dir.path().join("trunks.list");
        std::fs::write(&trunks, "1 127.0.0.1 32 0 test\n").unwrap();
        let port = free_udp_and_tcp_port();
        let sip: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let ctl = format!("unix:{}", dir.path().join("ctl").display());
        let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kamailio/kamailio.cfg");
        let log = std::fs::File::create(dir.path().join("kamailio.log")).unwrap();
        let child = Command::new(bin)
            .arg("-f")
            .arg(&cfg)
            .args(["-DD", "-E", "-m", "32", "-M", "4"])
            .arg("-Y")
            .arg(dir.path())
            .arg("-P")
            .arg(dir.path().join("kamailio.pid"))
            .arg("-A")
            .arg(format!("LISTEN=udp:{sip}"))
            .arg("-A")
            .arg(format!("LISTEN_TCP=tcp:{sip}"))
            .arg("-A")
            .arg(format!("DISPATCHER_LIST=\"{}\"", list.display()))
            .arg("-A")
            .arg(format!("TRUNKS_LIST=\"{}\"", trunks.display()))
            .arg("-A")
            .arg(format!("CTL_SOCKET=\"{ctl}\""))
            .args(params.iter().flat_map(|p| ["-A", p]))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("kamailio starts");
        let k = Kamailio {
            child,
            sip,
            ctl,
            dir,
        };
        let want: Vec<String> = relays.iter().map(|r| uri(r)).collect();
        k.wait_until(
            |d| {
                want.iter()
                    .all(|u| d.iter().any(|x| &x.uri == u && x.active()))
            },
            Duration::from_secs(15),
            "every relay active",
        );
        k
    }

    /// The dispatcher's view of the relays (`kamcmd dispatcher.list`), empty until Kamailio
    /// answers on its control socket.
    pub fn destinations(&self) -> Vec<Destination> {
        let out = Command::new(binary("kamcmd"))
            .args(["-s", &self.ctl, "dispatcher.list"])
            .stdin(Stdio::null())
            .output()
            .expect("kamcmd runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut found = Vec::new();
        let mut uri = None;
        for line in text.lines() {
            let line = line.trim();
            if let Some(u) = line.strip_prefix("URI: ") {
                uri = Some(u.to_string());
            } else if let Some(f) = line.strip_prefix("FLAGS: ") {
                if let Some(u) = uri.take() {
                    found.push(Destination {
                        uri: u,
                        flags: f.to_string(),
                    });
                }
            }
        }
        found
    }

    /// Waits until the dispatcher's view satisfies `pred`; returns how long that took. There
    /// is no event to wait on in Kamailio, so this asks it every 50 ms, for at most `timeout`.
    pub fn wait_until(
        &self,
        pred: impl Fn(&[Destination]) -> bool,
        timeout: Duration,
        what: &str,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let d = self.destinations();
            if pred(&d) {
                return start.elapsed();
            }
            if start.elapsed() > timeout {
                panic!(
                    "Kamailio: not {what} within {timeout:?}: {d:?}\nlog:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kamailio's own log (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kamailio.log")).unwrap_or_default()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        // SIGTERM lets Kamailio stop its worker processes and remove its control socket.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
