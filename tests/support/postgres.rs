//! A throwaway PostgreSQL server for tests and benchmarks: `initdb` into a temporary folder,
//! a free loopback port, `pg_ctl start`, and `pg_ctl stop` when the last handle is dropped.
//!
//! The server binaries come from Debian's `postgresql` package (`/usr/lib/postgresql/*/bin`) or
//! from the folder named by `VOXRELAY_PG_BINDIR`. When they are missing this panics with a
//! message saying so: a test run without PostgreSQL fails rather than skips.
//!
//! PostgreSQL refuses to run as root; when the tests run as root, the server runs as the
//! `postgres` system user (the package creates it) through `runuser`, in a folder chowned to it.
//!
//! Use: `let pg = postgres::shared();` then `pg.create_database().await` for a fresh, empty
//! database URL per test. Tests in one binary share one server while any of them holds it.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// A running PostgreSQL server in a temporary folder; stopped on drop.
pub struct PgServer {
    bindir: PathBuf,
    data: PathBuf,
    port: u16,
    run_as: Option<String>,
    _dir: tempfile::TempDir,
    next_db: AtomicU32,
}

/// Options for [`PgServer::start_with`]; the default is for tests (fsync off).
#[derive(Debug, Clone, Copy, Default)]
pub struct PgOptions {
    /// Flush to disk on commit (`fsync`). Off makes tests quicker; benchmarks keep it on.
    pub fsync: bool,
}

static SHARED: Mutex<Weak<PgServer>> = Mutex::new(Weak::new());

/// The server shared by the tests of this binary, started when none is running.
pub fn shared() -> Arc<PgServer> {
    let mut slot = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = slot.upgrade() {
        return s;
    }
    let s = Arc::new(PgServer::start());
    *slot = Arc::downgrade(&s);
    s
}

/// Where the PostgreSQL server binaries are, or a panic that says how to get them.
pub fn bindir() -> PathBuf {
    find_bindir(
        std::env::var_os("VOXRELAY_PG_BINDIR").map(PathBuf::from),
        Path::new("/usr/lib/postgresql"),
    )
    .unwrap_or_else(|message| panic!("{message}"))
}

/// The folder with `initdb` and `pg_ctl`: `explicit` when given, else the newest
/// `<root>/<version>/bin`. The error says what is missing and how to install it.
pub fn find_bindir(explicit: Option<PathBuf>, root: &Path) -> Result<PathBuf, String> {
    if let Some(dir) = explicit {
        return if dir.join("initdb").exists() && dir.join("pg_ctl").exists() {
            Ok(dir)
        } else {
            Err(format!(
                "VOXRELAY_PG_BINDIR={} has no initdb and pg_ctl",
                dir.display()
            ))
        };
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e
                .file_name()
                .to_str()?
                .split('.')
                .next()?
                .parse::<u32>()
                .ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        format!(
            "PostgreSQL server binaries not found: these tests start their own PostgreSQL and need \
             initdb and pg_ctl from Debian's `postgresql` package (apt-get install postgresql), \
             under {}/<version>/bin, or a folder named by VOXRELAY_PG_BINDIR",
            root.display()
        )
    })
}

impl PgServer {
    /// Starts a server with the default test options (fsync off).
    pub fn start() -> Self {
        Self::start_with(PgOptions::default())
    }

    /// Initialises a cluster in a temporary folder and starts it on a free loopback port.
    pub fn start_with(opts: PgOptions) -> Self {
        let bindir = bindir();
        let run_as = if is_root() {
            Some("postgres".to_string())
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("voxrelay-pg-")
            .tempdir()
            .expect("temporary folder");
        if let Some(user) = &run_as {
            let out = Command::new("chown")
                .arg(user)
                .arg(dir.path())
                .output()
                .expect("run chown");
            assert!(
                out.status.success(),
                "chown {user} {}: {} (is Debian's postgresql package installed? it creates the postgres user)",
                dir.path().display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let data = dir.path().join("data");
        let out = run(
            &run_as,
            &bindir.join("initdb"),
            &[
                "-D",
                path_str(&data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        // A port free a moment ago may be taken by the time the server binds it: try a few.
        let log = dir.path().join("server.log");
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            let server_opts = format!(
                "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync={} -c max_connections=200",
                path_str(dir.path()),
                if opts.fsync { "on" } else { "off" }
            );
            let out = run(
                &run_as,
                &bindir.join("pg_ctl"),
                &[
                    "-D",
                    path_str(&data),
                    "-l",
                    path_str(&log),
                    "-o",
                    &server_opts,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            );
            if out.status.success() {
                return Self {
                    bindir,
                    data,
                    port,
                    run_as,
                    _dir: dir,
                    next_db: AtomicU32::new(0),
                };
            }
            last_err = format!(
                "{}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        panic!("pg_ctl start failed: {last_err}");
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a new empty database and returns its URL.
    pub async fn create_database(&self) -> String {
        use sqlx::Connection;
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            self.next_db.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to test PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create database");
        conn.close().await.ok();
        self.url(&name)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let out = run(
            &self.run_as,
            &self.bindir.join("pg_ctl"),
            &[
                "-D",
                path_str(&self.data),
                "-m",
                "immediate",
                "-w",
                "-t",
                "30",
                "stop",
            ],
        );
        if !out.status.success() {
            eprintln!("pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

fn run(run_as: &Option<String>, program: &Path, args: &[&str]) -> Output {
    let mut cmd = match run_as {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.arg("-u").arg(user).arg("--").arg(program);
            c
        }
        None => Command::new(program),
    };
    // The server's own locale and time zone settings, not the test machine's.
    cmd.args(args).env("LC_ALL", "C").env("TZ", "UTC");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

fn is_root() -> bool {
    // The effective uid, from /proc (no libc binding needed): "Uid: real effective saved fs".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}
