//! Soak and load for the relay's realtime leg (`voxrelay::openai`) against the simulator on
//! loopback. Two processes (see `bench/openai-soak.sh`), so the figures are the relay side's
//! alone:
//!
//! `openai_soak sim --listen 127.0.0.1:PORT` runs the simulator (echo scenario).
//!
//! `openai_soak cycles --base-url URL --cycles N --concurrency C [--transport webrtc|websocket]`
//! runs N sessions, C at a time, each: connect (mint + offer/answer, or the socket), 2 s of
//! caller audio while receiving the agent's, close. Prints RSS and open fds after 100 cycles
//! and after N, and the connect-time split (WebRTC).
//!
//! `openai_soak connect --base-url URL --count N` opens N WebRTC sessions one after another
//! and prints the median of each set-up step (offer, answer, channel open, session.created).
//!
//! `openai_soak live --base-url URL --sessions N --seconds S [--transport …] [--pace-ms P]
//! [--sim-pid PID]` holds N sessions open with audio both ways (one new session every P ms,
//! default 10) and prints this process's CPU and RSS per live session, how long the sessions
//! took to open, why those that did not open failed, how many ended early, and the
//! simulator's CPU over the same window when its pid is given.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use voxrelay::config::RealtimeTransport;
use voxrelay::media::g711::Law;
use voxrelay::openai::events::ClientEvent;
use voxrelay::openai::{CallerAudio, Connector, LegEvent, LegSettings, RealtimeLeg};
use voxrelay::secret::Secret;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.get(1).map(String::as_str) {
        Some("sim") => rt.block_on(async {
            let listen = arg(&args, "--listen").unwrap_or_else(|| "127.0.0.1:0".into());
            let sim = voxrelay::sim::Simulator::start(voxrelay::sim::SimConfig {
                listen: listen.parse()?,
                scenario: "echo".into(),
                api_key: None,
            })
            .await?;
            println!("listening {}", sim.local_addr());
            tokio::signal::ctrl_c().await?;
            sim.shutdown().await;
            anyhow::Ok(())
        }),
        Some("cycles") => rt.block_on(cycles(&args)),
        Some("live") => rt.block_on(live(&args)),
        Some("connect") => rt.block_on(connect_times(&args)),
        _ => {
            eprintln!("usage: openai_soak sim|cycles|live …  (see bench/openai-soak.sh)");
            Ok(())
        }
    }
}

/// CPU seconds of a process (`self` or a pid), from /proc.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

/// Why a connect failed, coarsely: the error's kind and, for a timeout, its stage.
fn failure_kind(e: &voxrelay::openai::LegError) -> String {
    use voxrelay::openai::LegError;
    match e {
        LegError::Mint(voxrelay::openai::MintError::Deadline { last, .. }) => {
            format!("mint deadline, last: {last}")
        }
        LegError::Mint(m) => format!("mint: {m}"),
        LegError::Refused { status, .. } => format!("refused {status}"),
        LegError::Timeout { stage, .. } => format!("timeout: {stage}"),
        LegError::BadAnswer(_) => "bad answer".into(),
        LegError::Transport(t) => format!("transport: {}", t.chars().take(60).collect::<String>()),
        LegError::Ended(r) => format!("ended: {r}"),
    }
}

/// This process's CPU seconds, RSS in KiB and open file descriptors, from /proc.
fn usage() -> (f64, u64, usize) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    let rss = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0);
    (ticks / 100.0, rss, fds)
}

fn connector(args: &[String]) -> anyhow::Result<Connector> {
    let base = arg(args, "--base-url").ok_or_else(|| anyhow::anyhow!("--base-url"))?;
    let transport = match arg(args, "--transport").as_deref() {
        Some("websocket") => RealtimeTransport::Websocket,
        _ => RealtimeTransport::Webrtc,
    };
    Ok(Connector::new(
        &base,
        Secret::new("sk-soak"),
        transport,
        LegSettings::default(),
    )?)
}

fn tone(i: u64) -> [i16; 160] {
    let mut f = [0i16; 160];
    // 1 s of tone, 1 s of quiet: the echo agent answers each turn
    if i % 100 < 50 {
        for (n, s) in f.iter_mut().enumerate() {
            *s = (((i * 160 + n as u64) as f32 * 0.345).sin() * 9_000.0) as i16;
        }
    }
    f
}

/// Talks for `frames` × 20 ms while taking in what the agent sends; returns agent frames.
async fn talk(leg: &mut dyn RealtimeLeg, frames: u64, stop: Option<&AtomicU64>) -> u64 {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut i = 0;
    let mut heard = 0;
    let _ = leg
        .send(ClientEvent::ResponseCreate {
            event_id: None,
            response: None,
        })
        .await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if i >= frames || stop.is_some_and(|s| s.load(Ordering::Relaxed) > 0) {
                    return heard;
                }
                let f = tone(i);
                if leg.send_audio(CallerAudio::Pcm(&f)).await.is_err() {
                    return heard;
                }
                i += 1;
            }
            ev = leg.recv() => match ev {
                LegEvent::Audio(_) => heard += 1,
                LegEvent::Ended(_) => return heard,
                _ => {}
            }
        }
    }
}

async fn cycles(args: &[String]) -> anyhow::Result<()> {
    let conn = Arc::new(connector(args)?);
    let n: u64 = arg(args, "--cycles")
        .unwrap_or_else(|| "500".into())
        .parse()?;
    let c: u64 = arg(args, "--concurrency")
        .unwrap_or_else(|| "10".into())
        .parse()?;
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let heard = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let (_, rss0, fds0) = usage();
    println!("{{\"phase\":\"start\",\"rss_kib\":{rss0},\"fds\":{fds0}}}");
    let mut checkpoints = vec![100.min(n), n];
    checkpoints.dedup();
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..c {
        let (conn, done, failed, heard, next) = (
            conn.clone(),
            done.clone(),
            failed.clone(),
            heard.clone(),
            next.clone(),
        );
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                match conn
                    .connect(&voxrelay::openai::AgentSpec::default(), Law::Mu)
                    .await
                {
                    Ok(mut leg) => {
                        heard.fetch_add(talk(leg.as_mut(), 100, None).await, Ordering::Relaxed);
                        leg.close().await;
                    }
                    Err(e) => {
                        eprintln!("connect failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for cp in checkpoints {
        while done.load(Ordering::Relaxed) < cp {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // let closed connections finish tearing down before sampling
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, rss, fds) = usage();
        println!(
            "{{\"phase\":\"after\",\"cycles\":{},\"rss_kib\":{rss},\"fds\":{fds},\"failed\":{},\"agent_frames\":{},\"seconds\":{:.1}}}",
            done.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed),
            heard.load(Ordering::Relaxed),
            started.elapsed().as_secs_f64()
        );
    }
    for w in workers {
        let _ = w.await;
    }
    Ok(())
}

async fn live(args: &[String]) -> anyhow::Result<()> {
    let conn = Arc::new(connector(args)?);
    let n: usize = arg(args, "--sessions")
        .unwrap_or_else(|| "50".into())
        .parse()?;
    let secs: u64 = arg(args, "--seconds")
        .unwrap_or_else(|| "10".into())
        .parse()?;
    let pace: u64 = arg(args, "--pace-ms")
        .unwrap_or_else(|| "10".into())
        .parse()?;
    let sim_pid = arg(args, "--sim-pid");
    let (_, rss0, fds0) = usage();
    let stop = Arc::new(AtomicU64::new(0));
    let open = Arc::new(AtomicU64::new(0));
    let ended_early = Arc::new(AtomicU64::new(0));
    let heard = Arc::new(AtomicU64::new(0));
    let outcomes = Arc::new(std::sync::Mutex::new((
        Vec::<f64>::new(),
        std::collections::BTreeMap::<String, u64>::new(),
    )));
    let mut tasks = Vec::new();
    let launch = Instant::now();
    for _ in 0..n {
        let (conn, stop, open, heard, outcomes, ended_early) = (
            conn.clone(),
            stop.clone(),
            open.clone(),
            heard.clone(),
            outcomes.clone(),
            ended_early.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let connected = conn
                .connect(&voxrelay::openai::AgentSpec::default(), Law::Mu)
                .await;
            let mut leg = match connected {
                Ok(leg) => {
                    if let Ok(mut o) = outcomes.lock() {
                        o.0.push(t0.elapsed().as_secs_f64() * 1_000.0);
                    }
                    leg
                }
                Err(e) => {
                    if let Ok(mut o) = outcomes.lock() {
                        *o.1.entry(failure_kind(&e)).or_default() += 1;
                    }
                    return;
                }
            };
            open.fetch_add(1, Ordering::Relaxed);
            let h = talk(leg.as_mut(), u64::MAX, Some(&stop)).await;
            if stop.load(Ordering::Relaxed) == 0 {
                ended_early.fetch_add(1, Ordering::Relaxed);
            }
            heard.fetch_add(h, Ordering::Relaxed);
            leg.close().await;
        }));
        // open them at a steady pace, as calls arrive
        tokio::time::sleep(Duration::from_millis(pace)).await;
    }
    // every connect has finished (opened or failed) once the counts add up
    let wait_until = Instant::now() + Duration::from_secs(60);
    loop {
        let settled = outcomes
            .lock()
            .map(|o| o.0.len() + o.1.values().sum::<u64>() as usize)
            .unwrap_or(n);
        if settled >= n || Instant::now() >= wait_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_settled = launch.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (cpu1, rss1, fds1) = usage();
    let sim1 = sim_pid.as_deref().map(cpu_seconds);
    let t1 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (cpu2, rss2, _) = usage();
    let sim2 = sim_pid.as_deref().map(cpu_seconds);
    let wall = t1.elapsed().as_secs_f64();
    let live = open.load(Ordering::Relaxed).max(1) as f64;
    let (mut times, failures) = outcomes
        .lock()
        .map(|o| (o.0.clone(), o.1.clone()))
        .unwrap_or_default();
    times.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        times
            .get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    let sim_cpu = match (sim1, sim2) {
        (Some(a), Some(b)) => format!("{:.1}", (b - a) / wall * 100.0),
        _ => "null".into(),
    };
    println!(
        "{{\"sessions\":{},\"asked\":{n},\"cpu_pct_of_core\":{:.1},\"cpu_pct_per_session\":{:.3},\"sim_cpu_pct_of_core\":{sim_cpu},\"rss_kib_before\":{rss0},\"rss_kib_live\":{rss2},\"rss_kib_per_session\":{:.0},\"fds_before\":{fds0},\"fds_live\":{fds1},\"connect_ms_p50\":{:.0},\"connect_ms_p95\":{:.0},\"connect_ms_max\":{:.0},\"all_settled_s\":{all_settled:.1},\"ended_early\":{},\"failures\":{}}}",
        live,
        (cpu2 - cpu1) / wall * 100.0,
        (cpu2 - cpu1) / wall * 100.0 / live,
        (rss1.max(rss2) - rss0) as f64 / live,
        pct(0.5),
        pct(0.95),
        times.last().copied().unwrap_or(0.0),
        ended_early.load(Ordering::Relaxed),
        serde_json::to_string(&failures).unwrap_or_default(),
    );
    stop.store(1, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

async fn connect_times(args: &[String]) -> anyhow::Result<()> {
    let conn = connector(args)?;
    let n: usize = arg(args, "--count")
        .unwrap_or_else(|| "20".into())
        .parse()?;
    let mut steps: [Vec<f64>; 4] = Default::default();
    for _ in 0..n {
        let mut leg = conn
            .connect_webrtc(&voxrelay::openai::AgentSpec::default())
            .await?;
        let t = leg.connect_times();
        for (v, d) in steps
            .iter_mut()
            .zip([t.offer, t.answer, t.channel_open, t.session_created])
        {
            v.push(d.as_secs_f64() * 1_000.0);
        }
        leg.close().await;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!(
        "{{\"count\":{n},\"offer_ms\":{:.1},\"answer_ms\":{:.1},\"channel_open_ms\":{:.1},\"session_created_ms\":{:.1}}}",
        median(&mut steps[0]),
        median(&mut steps[1]),
        median(&mut steps[2]),
        median(&mut steps[3])
    );
    Ok(())
}
