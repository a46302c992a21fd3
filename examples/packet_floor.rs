//! The kernel's part of moving one WebRTC call's packets, alone: a second floor beside
//! `examples/opus_floor.rs` for `bench/bridge-load.sh`.
//!
//! Per second of a call the relay receives the caller's RTP (G.711 packets of
//! `--caller-ptime-ms`; by default SIPp's 30 ms, 33.3 a second of 252 bytes) and the agent's
//! SRTP (`--agent-per-second`), and sends 50 packets to the caller (172 bytes) and 50 to the
//! agent (`--agent-out-bytes`). This makes the same system calls over loopback UDP sockets for
//! `--calls` calls of `--seconds` seconds, one thread, no waiting, and prints the CPU time of
//! those calls alone (the thread's clock, read around them) per call as a share of one core.
//! On loopback a send also pays for the delivery into the receiving socket, as the relay's
//! sends do in the bench. The peers' sends and reads are made outside the timed part. What it
//! leaves out: waking up (epoll, futex, the scheduler), SRTP, and everything else the relay
//! does.

use std::net::UdpSocket;
use std::time::Duration;

use clap::Parser;
use nix::time::{clock_gettime, ClockId};

#[derive(Parser)]
#[command(about = "The packet system calls of WebRTC calls, timed alone")]
struct Args {
    /// Calls.
    #[arg(long, default_value_t = 50)]
    calls: u32,
    /// Seconds of each call.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// The agent's packets received per second of a call (50 while the agent speaks).
    #[arg(long, default_value_t = 50.0)]
    agent_per_second: f64,
    /// Bytes of one of the agent's SRTP packets.
    #[arg(long, default_value_t = 70)]
    agent_in_bytes: usize,
    /// Bytes of one SRTP packet of the caller's audio toward the agent.
    #[arg(long, default_value_t = 75)]
    agent_out_bytes: usize,
    /// Milliseconds of audio in one of the caller's RTP packets (SIPp's speech pcap: 30; most
    /// trunks: 20).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=120))]
    caller_ptime_ms: u32,
    /// Send on sockets `connect`ed to their peer (`send`) instead of naming it each time
    /// (`sendto`).
    #[arg(long)]
    connected: bool,
}

/// G.711 samples per millisecond, one byte each.
const SAMPLES_PER_MS: u32 = 8;
/// Packets to the caller per second (one per 20 ms tick) and their size.
const TO_CALLER_PER_SECOND: usize = 50;
const TO_CALLER_BYTES: usize = 12 + 160;
const TO_AGENT_PER_SECOND: usize = 50;

fn thread_cpu() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

fn bind() -> std::io::Result<UdpSocket> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Reads whatever waits in `s`; how many datagrams.
fn drain(s: &UdpSocket, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while s.recv_from(buf).is_ok() {
        n += 1;
    }
    n
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    // the relay's two sockets of a call, and the two peers
    let (relay_phone, relay_agent) = (bind()?, bind()?);
    let (caller, agent) = (bind()?, bind()?);
    let (to_relay_phone, to_relay_agent) = (relay_phone.local_addr()?, relay_agent.local_addr()?);
    let (to_caller, to_agent) = (caller.local_addr()?, agent.local_addr()?);
    let ptime = args.caller_ptime_ms;
    let caller_per_second = 1000.0 / f64::from(ptime);
    let caller_packet = vec![0x80u8; 12 + (SAMPLES_PER_MS * ptime) as usize];
    let agent_packet = vec![0x80u8; args.agent_in_bytes];
    let out_caller = vec![0x80u8; TO_CALLER_BYTES];
    let out_agent = vec![0x80u8; args.agent_out_bytes];
    let mut buf = [0u8; 1500];
    if args.connected {
        relay_phone.connect(to_caller)?;
        relay_agent.connect(to_agent)?;
    }
    let send = |s: &UdpSocket, b: &[u8], to| {
        if args.connected {
            s.send(b)
        } else {
            s.send_to(b, to)
        }
    };

    let (mut caller_due, mut agent_due) = (0.0f64, 0.0f64);
    let (mut received, mut sent) = (0usize, 0usize);
    let mut used = Duration::ZERO;
    for _ in 0..args.calls * args.seconds {
        // one second of a call: the peers' packets wait in the relay's sockets (not timed)
        caller_due += caller_per_second;
        agent_due += args.agent_per_second;
        let (n_caller, n_agent) = (caller_due as usize, agent_due as usize);
        caller_due -= n_caller as f64;
        agent_due -= n_agent as f64;
        for _ in 0..n_caller {
            caller.send_to(&caller_packet, to_relay_phone)?;
        }
        for _ in 0..n_agent {
            agent.send_to(&agent_packet, to_relay_agent)?;
        }
        // the relay's part (timed): read them, send its 50 + 50
        let start = thread_cpu();
        received += drain(&relay_phone, &mut buf) + drain(&relay_agent, &mut buf);
        for _ in 0..TO_CALLER_PER_SECOND {
            send(&relay_phone, &out_caller, to_caller)?;
        }
        for _ in 0..TO_AGENT_PER_SECOND {
            send(&relay_agent, &out_agent, to_agent)?;
        }
        used += thread_cpu() - start;
        sent += TO_CALLER_PER_SECOND + TO_AGENT_PER_SECOND;
        // the peers read theirs (not timed)
        drain(&caller, &mut buf);
        drain(&agent, &mut buf);
    }
    let call_seconds = f64::from(args.calls) * f64::from(args.seconds);
    println!(
        "{{\"calls\": {}, \"seconds\": {}, \"received\": {received}, \"sent\": {sent}, \
         \"cpu_seconds\": {:.3}, \"per_call_pct\": {:.4}}}",
        args.calls,
        args.seconds,
        used.as_secs_f64(),
        used.as_secs_f64() / call_seconds * 100.0
    );
    Ok(())
}
