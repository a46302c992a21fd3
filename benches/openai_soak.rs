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
//! `openai_soak live --base-url URL --sessions N --seconds S [--transport …]` holds N sessions
//! open with audio both ways and prints this process's CPU and RSS per live session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use voxrelay::config::RealtimeTransport;
use voxrelay::media::g711::Law;
use voxrelay::openai::events::ClientEvent;
use voxrelay::openai::{CallerAudio, Connector, LegEvent, LegSettings, RealtimeLeg, Secret};

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
    let (_, rss0, fds0) = usage();
    let stop = Arc::new(AtomicU64::new(0));
    let open = Arc::new(AtomicU64::new(0));
    let heard = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (conn, stop, open, heard) = (conn.clone(), stop.clone(), open.clone(), heard.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(mut leg) = conn
                .connect(&voxrelay::openai::AgentSpec::default(), Law::Mu)
                .await
            else {
                return;
            };
            open.fetch_add(1, Ordering::Relaxed);
            let h = talk(leg.as_mut(), u64::MAX, Some(&stop)).await;
            heard.fetch_add(h, Ordering::Relaxed);
            leg.close().await;
        }));
        // open them at a steady pace, as calls arrive
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wait_until = Instant::now() + Duration::from_secs(60);
    while (open.load(Ordering::Relaxed) as usize) < n && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (cpu1, rss1, fds1) = usage();
    let t1 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (cpu2, rss2, _) = usage();
    let wall = t1.elapsed().as_secs_f64();
    let live = open.load(Ordering::Relaxed).max(1) as f64;
    println!(
        "{{\"sessions\":{},\"cpu_pct_of_core\":{:.1},\"cpu_pct_per_session\":{:.3},\"rss_kib_before\":{rss0},\"rss_kib_live\":{rss2},\"rss_kib_per_session\":{:.0},\"fds_before\":{fds0},\"fds_live\":{fds1}}}",
        live,
        (cpu2 - cpu1) / wall * 100.0,
        (cpu2 - cpu1) / wall * 100.0 / live,
        (rss1.max(rss2) - rss0) as f64 / live,
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
