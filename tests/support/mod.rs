//! Test support: the real `voxrelay` binary on loopback, its logs as events, SIPp runs, and
//! a small SIP caller for checks SIPp cannot make.

#![allow(dead_code)]

pub mod agent;
pub mod browser;
pub mod kamailio;
pub mod postgres;
pub mod uac;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Each relay in a test run gets its own RTP range, so parallel tests never share a port.
static NEXT_RTP_BASE: AtomicU16 = AtomicU16::new(21000);
/// SIPp's SIP and media ports come from below the relays' RTP ranges and below the kernel's
/// ephemeral range (where the relays' own SIP ports are), offset by process so that test
/// binaries running at the same time do not meet.
static NEXT_SIPP_PORT: AtomicU16 = AtomicU16::new(0);

fn sipp_ports() -> (u16, u16) {
    let base = 10000 + (std::process::id() % 40) as u16 * 250;
    let n = NEXT_SIPP_PORT.fetch_add(6, Ordering::SeqCst) % 240;
    (base + n, base + n + 2)
}

/// A free UDP port on loopback (the socket is closed again; fine for tests).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback port free on both UDP and TCP (both sockets are closed again; fine for tests).
pub fn free_udp_and_tcp_port() -> u16 {
    for _ in 0..100 {
        let port = free_udp_port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free on both UDP and TCP");
}

/// A free TCP port on loopback (the listener is closed again; fine for tests).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary under test: `VOXRELAY_BIN` when set (to test a release or installed build),
/// else the one cargo built for this test run.
pub fn relay_binary() -> PathBuf {
    std::env::var_os("VOXRELAY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_voxrelay")))
}

/// A running relay process, killed when dropped.
pub struct Relay {
    child: Option<Child>,
    /// Its SIP address (UDP and TCP).
    pub sip: SocketAddr,
    /// Its SIP-over-TLS address, when `sip.tls_listen` is set.
    pub tls: Option<SocketAddr>,
    /// Its admin HTTP address (`admin.listen`).
    pub admin: SocketAddr,
    logs: Arc<Mutex<Vec<Value>>>,
    events: Mutex<mpsc::Receiver<Value>>,
    _dir: tempfile::TempDir,
}

impl Relay {
    /// Starts `voxrelay serve` with the echo agent on free ports plus `env` overrides, and
    /// waits until it says it is ready.
    pub fn start(env: &[(&str, &str)]) -> Relay {
        Self::start_with(&[], env)
    }

    /// As [`Relay::start`], with `serve_args` after `serve` (e.g. `--config FILE`); an `env`
    /// entry with an empty value removes that variable. The working directory is a fresh
    /// empty folder ([`Relay::dir`]).
    pub fn start_with(serve_args: &[&str], env: &[(&str, &str)]) -> Relay {
        let dir = tempfile::tempdir().unwrap();
        let base = NEXT_RTP_BASE.fetch_add(400, Ordering::SeqCst);
        let rtp = format!("[{}, {}]", base, base + 399);
        let db = format!("sqlite://{}", dir.path().join("v.db").display());
        // port 0: the relay picks a free port itself and logs it (a port picked here and
        // released could be taken by the relay's own SIP socket before the admin binds it)
        let admin: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut cmd = Command::new(relay_binary());
        cmd.arg("--log-format")
            .arg("json")
            .arg("serve")
            .args(serve_args)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                "info,rsipstack=warn,rtc=warn,rtc_ice=warn,rtc_dtls=warn,rtc_sctp=warn,webrtc=warn",
            )
            .env("VOXRELAY__SIP__LISTEN", "127.0.0.1:0")
            .env("VOXRELAY__SIP__RTP_PORTS", rtp)
            .env("VOXRELAY__AGENTS__DEFAULT", "echo")
            .env("VOXRELAY__ADMIN__LISTEN", admin.to_string())
            .env("VOXRELAY__BOOKING__DATABASE_URL", db)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            if v.is_empty() {
                // an empty value takes away one of the variables set above
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let mut child = cmd.spawn().expect("voxrelay starts");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let v: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|_| serde_json::json!({ "raw": line }));
                    logs.lock().unwrap().push(v.clone());
                    let _ = tx.send(v);
                }
            });
        }
        let mut relay = Relay {
            child: Some(child),
            sip: "0.0.0.0:0".parse().unwrap(),
            tls: None,
            admin,
            logs,
            events: Mutex::new(rx),
            _dir: dir,
        };
        let ready = relay.wait_for(|v| msg(v) == "voxrelay ready", Duration::from_secs(30));
        relay.sip = ready["sip"]
            .as_str()
            .expect("ready line names the SIP address")
            .parse()
            .unwrap();
        relay.tls = ready["tls"].as_str().map(|a| a.parse().unwrap());
        let listening =
            relay.wait_for(|v| msg(v) == "admin HTTP listening", Duration::from_secs(5));
        relay.admin = listening["admin"]
            .as_str()
            .expect("the admin line names its address")
            .parse()
            .unwrap();
        relay
    }

    /// The relay's working directory (its SQLite database is `v.db` there).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// The booking database's URL.
    pub fn database_url(&self) -> String {
        format!("sqlite://{}", self.dir().join("v.db").display())
    }

    /// Waits for a log event matching `pred` (events already seen count too).
    pub fn wait_for(&self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        if let Some(v) = self.logs.lock().unwrap().iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + timeout;
        let rx = self.events.lock().unwrap();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(v) if pred(&v) => return v,
                Ok(_) => continue,
                Err(_) => panic!(
                    "no matching log event within {timeout:?}; logs:\n{}",
                    self.dump()
                ),
            }
        }
    }

    /// Waits for the `n`-th "call ended" event and returns them all.
    pub fn wait_calls_ended(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let ended: Vec<Value> = self
                .logs
                .lock()
                .unwrap()
                .iter()
                .filter(|v| msg(v) == "call ended")
                .cloned()
                .collect();
            if ended.len() >= n {
                return ended;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("{} of {n} calls ended; logs:\n{}", ended.len(), self.dump());
            }
            let _ = self.events.lock().unwrap().recv_timeout(left);
        }
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<Value> {
        self.logs.lock().unwrap().clone()
    }

    /// The log as text, for failure messages.
    pub fn dump(&self) -> String {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        if let Some(c) = &self.child {
            unsafe_kill(c.id(), "TERM");
        }
    }

    /// Sends SIGKILL: the relay dies at once, as in a crash.
    pub fn kill(&self) {
        if let Some(c) = &self.child {
            unsafe_kill(c.id(), "KILL");
        }
    }

    /// Stops the process (SIGSTOP) for `stall`, then lets it go on (SIGCONT): what a
    /// machine with no CPU to spare does to it, every thread at once.
    pub fn stall(&self, stall: Duration) {
        if let Some(c) = &self.child {
            unsafe_kill(c.id(), "STOP");
            // the stall itself, the condition under test: nothing is waited for
            std::thread::sleep(stall);
            unsafe_kill(c.id(), "CONT");
        }
    }

    /// Stalls the process ([`Relay::stall`]) for 100 ms of every 200 while `on` is set, for
    /// at most a minute.
    pub fn starve_while(&self, on: &std::sync::atomic::AtomicBool) {
        for _ in 0..300 {
            if !on.load(Ordering::Acquire) {
                break;
            }
            self.stall(Duration::from_millis(100));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One sample of the relay's `/metrics`, by its exposition line's name and labels.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let text = agent::get_text(&format!("http://{}/metrics", self.admin));
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// An out-of-dialog OPTIONS to the relay over UDP, and its answer.
    pub fn options(&self) -> uac::Msg {
        let mut uac = uac::Uac::new(self.sip);
        let req = uac.request("OPTIONS", "");
        uac.send_raw(req.as_bytes());
        uac.recv(Duration::from_secs(10))
            .expect("an answer to OPTIONS")
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "relay did not exit within {timeout:?}; logs:\n{}",
                    self.dump()
                );
            }
            // Polling a child's exit has no event to wait on in std; a short poll is bounded.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory of the process in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().unwrap().id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// The `message` of a JSON log line.
pub fn msg(v: &Value) -> &str {
    v["message"].as_str().unwrap_or("")
}

/// Where the SIPp scenarios are.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// The outcome of one SIPp run.
#[derive(Debug)]
pub struct SippRun {
    /// SIPp's exit code: 0 when every call succeeded.
    pub code: i32,
    /// SIPp's final statistics screen and errors.
    pub output: String,
    /// Successful calls, from the statistics file.
    pub successful: u64,
    /// Failed calls.
    pub failed: u64,
}

/// Runs SIPp against the relay with a scenario and extra arguments; bounded by `-timeout`.
pub fn sipp(relay: &Relay, scenario_name: &str, args: &[&str]) -> SippRun {
    sipp_from(
        "127.0.0.1",
        &relay.sip.to_string(),
        sipp_ports().0,
        scenario_name,
        args,
    )
}

/// Runs SIPp from `local_ip`:`port` towards `target` (or as a server when the scenario
/// starts by receiving).
pub fn sipp_from(
    local_ip: &str,
    target: &str,
    port: u16,
    scenario_name: &str,
    args: &[&str],
) -> SippRun {
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.csv");
    let media = (sipp_ports().1 / 2 * 2).to_string();
    let port = port.to_string();
    let mut cmd = Command::new("sipp");
    cmd.arg(target)
        .arg("-sf")
        .arg(scenario(scenario_name))
        .args(["-i", local_ip, "-p", &port, "-mi", local_ip, "-mp", &media])
        .args([
            "-s",
            "reception",
            "-nostdin",
            "-timeout",
            "120s",
            "-timeout_error",
        ])
        .args(["-trace_stat", "-stf"])
        .arg(&stats)
        .args(["-fd", "1", "-trace_err"])
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null());
    let out = cmd.output().expect("sipp runs (Debian package sip-tester)");
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
        if entry.file_name().to_string_lossy().ends_with("_errors.log") {
            output.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    let (successful, failed) = parse_stats(&stats);
    SippRun {
        code: out.status.code().unwrap_or(-1),
        output,
        successful,
        failed,
    }
}

/// A SIP port for a SIPp that the relay must reach (a registrar, say).
pub fn sipp_port() -> u16 {
    sipp_ports().0
}

fn parse_stats(path: &Path) -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return (0, 0);
    };
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return (0, 0);
    };
    let cols: Vec<&str> = header.split(';').collect();
    let Some(last) = lines.rfind(|l| !l.trim().is_empty()) else {
        return (0, 0);
    };
    let vals: Vec<&str> = last.split(';').collect();
    let get = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .and_then(|i| vals.get(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("SuccessfulCall(C)"), get("FailedCall(C)"))
}

/// Asserts a SIPp run passed with `calls` successful calls.
pub fn assert_sipp_ok(run: &SippRun, calls: u64, relay: &Relay) {
    assert!(
        run.code == 0 && run.successful == calls && run.failed == 0,
        "SIPp: exit {} successful {} failed {} (wanted {calls})\n{}\nrelay logs:\n{}",
        run.code,
        run.successful,
        run.failed,
        run.output,
        relay.dump()
    );
}
