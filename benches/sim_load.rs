//! Load for the realtime simulator in echo mode: how many sessions one core holds, and the
//! simulator's CPU per session. Two roles, run as two processes (see `bench/sim-load.sh`):
//!
//! `sim_load serve --listen 127.0.0.1:PORT` runs the simulator (echo scenario) on a single-threaded
//! runtime, so that pinning the process to one core measures exactly one core.
//!
//! `sim_load load --base-url http://127.0.0.1:PORT --pid PID --transport webrtc|websocket
//! --sessions N --seconds S` opens N sessions whose caller talks 1 s and pauses 2 s in a loop,
//! then samples the simulator's CPU time (from /proc) over S seconds and prints one JSON line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_OPUS};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use webrtc::data_channel::DataChannelEvent;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCSessionDescription, SettingEngineBuilder,
};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") => {
            let listen = arg(&args, "--listen").unwrap_or_else(|| "127.0.0.1:0".into());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let sim = voxrelay::sim::Simulator::start(voxrelay::sim::SimConfig {
                    listen: listen.parse()?,
                    scenario: arg(&args, "--scenario").unwrap_or_else(|| "echo".into()),
                    api_key: None,
                })
                .await?;
                println!("listening {}", sim.local_addr());
                tokio::signal::ctrl_c().await?;
                sim.shutdown().await;
                anyhow::Ok(())
            })
        }
        Some("load") => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(load(&args))
        }
        // `cargo bench` runs every bench with `--bench`: nothing to do without a role
        _ => {
            eprintln!("usage: sim_load serve|load …  (see bench/sim-load.sh)");
            Ok(())
        }
    }
}

/// Process CPU seconds (user + system) and RSS in KiB, from /proc.
fn proc_usage(pid: u32) -> anyhow::Result<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("bad stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields after the command: state is [0], utime [11], stime [12]
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((ticks / 100.0, rss))
}

/// Caller audio: 1 s of a tone then 2 s of silence, as 20 ms frames at 48 kHz.
fn caller_frame(i: u64) -> Vec<i16> {
    let talking = i % 150 < 50;
    let amp = if talking { 9_000.0 } else { 0.0 };
    (0..960)
        .map(|n| ((n as f32 * 0.07).sin() * amp) as i16)
        .collect()
}

struct Counters {
    received: AtomicU64,
    connected: AtomicU64,
    /// Milliseconds from building the peer connection to the channel opening.
    connect_ms: std::sync::Mutex<Vec<f64>>,
}

async fn load(args: &[String]) -> anyhow::Result<()> {
    let base = arg(args, "--base-url").ok_or_else(|| anyhow::anyhow!("--base-url"))?;
    let pid: u32 = arg(args, "--pid")
        .ok_or_else(|| anyhow::anyhow!("--pid"))?
        .parse()?;
    let n: usize = arg(args, "--sessions")
        .unwrap_or_else(|| "10".into())
        .parse()?;
    let secs: u64 = arg(args, "--seconds")
        .unwrap_or_else(|| "10".into())
        .parse()?;
    let transport = arg(args, "--transport").unwrap_or_else(|| "webrtc".into());
    let counters = Arc::new(Counters {
        received: AtomicU64::new(0),
        connected: AtomicU64::new(0),
        connect_ms: std::sync::Mutex::new(Vec::new()),
    });
    let stop = tokio_util::sync::CancellationToken::new();
    // Opus packets made once and replayed, so the load generator spends little CPU
    let mut enc = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)?;
    let mut buf = vec![0u8; 1_500];
    let mut packets = Vec::with_capacity(150);
    for i in 0..150 {
        let len = enc.encode(&caller_frame(i), &mut buf)?;
        packets.push(bytes::Bytes::copy_from_slice(&buf[..len]));
    }
    let packets = Arc::new(packets);
    let (idle_cpu, _) = proc_usage(pid)?;
    let ramp_start = Instant::now();
    let mut tasks = vec![];
    for s in 0..n {
        let (base, counters, stop, packets) = (
            base.clone(),
            counters.clone(),
            stop.clone(),
            packets.clone(),
        );
        let t = transport.clone();
        tasks.push(tokio::spawn(async move {
            let r = if t == "websocket" {
                ws_session(&base, &counters, &stop).await
            } else {
                rtc_session(&base, s as u32, &counters, &stop, packets).await
            };
            if let Err(e) = r {
                eprintln!("session {s}: {e}");
            }
        }));
        // ramp gently: sessions start 20 ms apart
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // wait until all are connected (or 60 s)
    let wait_until = Instant::now() + Duration::from_secs(60);
    while (counters.connected.load(Ordering::Relaxed) as usize) < n && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ramp = ramp_start.elapsed().as_secs_f64();
    let connected = counters.connected.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await; // settle into the talk/pause cycle
    let (cpu0, _) = proc_usage(pid)?;
    let rx0 = counters.received.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (cpu1, rss) = proc_usage(pid)?;
    let rx1 = counters.received.load(Ordering::Relaxed);
    let wall = t0.elapsed().as_secs_f64();
    stop.cancel();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let cpu_pct = (cpu1 - cpu0) / wall * 100.0;
    let mut connect_ms = counters
        .connect_ms
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    connect_ms.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| {
        connect_ms
            .get(((connect_ms.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
            .round()
    };
    // echo returns the 1 s turn plus its 300 ms prefix each 3 s: about 22 frames/s of 50
    let rx_per_session = (rx1 - rx0) as f64 / wall / connected.max(1) as f64;
    println!(
        "{}",
        json!({
            "transport": transport, "sessions": n, "connected": connected,
            "ramp_seconds": (ramp * 10.0).round() / 10.0,
            "sim_cpu_percent_of_one_core": (cpu_pct * 10.0).round() / 10.0,
            "sim_cpu_percent_per_session": (cpu_pct / connected.max(1) as f64 * 1000.0).round() / 1000.0,
            "sim_rss_mib": rss / 1024,
            "model_audio_frames_per_session_per_second": (rx_per_session * 10.0).round() / 10.0,
            "sim_cpu_seconds_before_load": idle_cpu,
            "connect_ms_p50": pick(0.5),
            "connect_ms_p95": pick(0.95),
        })
    );
    Ok(())
}

struct Client {
    gathered: tokio::sync::mpsc::Sender<()>,
    counters: Arc<Counters>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Client {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.try_send(());
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let counters = self.counters.clone();
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(_) = ev {
                    counters.received.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
}

async fn rtc_session(
    base: &str,
    index: u32,
    counters: &Arc<Counters>,
    stop: &tokio_util::sync::CancellationToken,
    packets: Arc<Vec<bytes::Bytes>>,
) -> anyhow::Result<()> {
    let began = Instant::now();
    let (gathered_tx, mut gathered_rx) = tokio::sync::mpsc::channel(1);
    let mut media = MediaEngine::default();
    media.register_default_codecs()?;
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(media)
        .with_setting_engine(
            SettingEngineBuilder::new()
                .with_multicast_dns_mode(MulticastDnsMode::Disabled)
                .with_ice_connection_attempts(Some(Duration::from_millis(20)), None)
                .build(),
        )
        .with_handler(Arc::new(Client {
            gathered: gathered_tx,
            counters: counters.clone(),
        }))
        .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
        .build()
        .await?;
    let ssrc = 0x1000_0000 + index;
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "load".into(),
        format!("load-{index}"),
        "load".into(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            ..Default::default()
        }],
    )));
    pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
    let dc = pc.create_data_channel("oai-events", None).await?;
    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer).await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), gathered_rx.recv()).await;
    let offer = pc
        .local_description()
        .await
        .ok_or_else(|| anyhow::anyhow!("no offer"))?;
    let answer = reqwest::Client::new()
        .post(format!("{base}/v1/realtime/calls"))
        .bearer_auth("sk-load")
        .header("content-type", "application/sdp")
        .body(offer.sdp)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    pc.set_remote_description(RTCSessionDescription::answer(answer)?)
        .await?;
    // wait for the channel, then configure the session
    loop {
        match tokio::time::timeout(Duration::from_secs(30), dc.poll()).await {
            Ok(Some(DataChannelEvent::OnOpen)) => break,
            Ok(Some(_)) => continue,
            _ => anyhow::bail!("channel did not open"),
        }
    }
    dc.send_text(&json!({"type": "session.update", "session": {"type": "realtime"}}).to_string())
        .await?;
    if let Ok(mut v) = counters.connect_ms.lock() {
        v.push(began.elapsed().as_secs_f64() * 1000.0);
    }
    counters.connected.fetch_add(1, Ordering::Relaxed);
    let dc2 = dc.clone();
    let drain = tokio::spawn(async move { while dc2.poll().await.is_some() {} });
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut i: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let pkt = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                payload_type: 111,
                sequence_number: i as u16,
                timestamp: (i as u32).wrapping_mul(960),
                ssrc,
                ..Default::default()
            },
            payload: packets[(i % 150) as usize].clone(),
        };
        track.write_rtp(pkt).await?;
        i += 1;
    }
    drain.abort();
    pc.close().await?;
    Ok(())
}

async fn ws_session(
    base: &str,
    counters: &Arc<Counters>,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    use base64::Engine as _;
    let url = format!(
        "{}/v1/realtime?model=gpt-realtime",
        base.replacen("http", "ws", 1)
    );
    let mut req = url.into_client_request()?;
    req.headers_mut()
        .insert("authorization", "Bearer sk-load".parse()?);
    let (ws, _) = tokio_tungstenite::connect_async(req).await?;
    let (mut tx, mut rx) = ws.split();
    tx.send(Message::Text(
        json!({"type": "session.update", "session": {"type": "realtime"}})
            .to_string()
            .into(),
    ))
    .await?;
    counters.connected.fetch_add(1, Ordering::Relaxed);
    // 100 ms appends of 24 kHz PCM, made once
    let appends: Vec<String> = (0..30u64)
        .map(|k| {
            let talking = k % 30 < 10;
            let pcm: Vec<u8> = (0..2_400)
                .flat_map(|n| {
                    let v = if talking {
                        ((n as f32 * 0.13).sin() * 9_000.0) as i16
                    } else {
                        0
                    };
                    v.to_le_bytes()
                })
                .collect();
            json!({"type": "input_audio_buffer.append", "audio": base64::engine::general_purpose::STANDARD.encode(pcm)}).to_string()
        })
        .collect();
    let c = counters.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = rx.next().await {
            if let Message::Text(t) = msg {
                if t.as_str().contains("\"response.output_audio.delta\"") {
                    // each delta carries 100 ms: count it as five 20 ms frames
                    c.received.fetch_add(5, Ordering::Relaxed);
                }
            }
        }
    });
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut k = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        tx.send(Message::Text(appends[k % 30].clone().into()))
            .await?;
        k += 1;
    }
    let _ = tx.close().await;
    reader.abort();
    Ok(())
}
