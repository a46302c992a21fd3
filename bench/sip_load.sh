#!/usr/bin/env bash
# Load figures for the SIP layer with the echo agent, on loopback only:
#   INVITE -> 200 OK time (SIPp's response-time figures), RSS idle and with N live calls.
# Usage: bench/sip_load.sh [CALLS] [SECONDS]      (defaults: 50 calls of 10 s)
# Needs: sipp (Debian sip-tester). Builds the release binary first.
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${1:-50}
SECS=${2:-10}
OUT=bench/out/sip_load
rm -rf "$OUT"; mkdir -p "$OUT"
cargo build --release --quiet --bin voxrelay

SIP_PORT=25060
RUST_LOG=warn VOXRELAY__SIP__LISTEN=127.0.0.1:$SIP_PORT VOXRELAY__AGENTS__DEFAULT=echo \
  VOXRELAY__ADMIN__LISTEN=127.0.0.1:28080 VOXRELAY__BOOKING__DATABASE_URL=sqlite://$OUT/v.db \
  VOXRELAY__SIP__RTP_PORTS="[40000, 40999]" \
  target/release/voxrelay serve >"$OUT/relay.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
# Wait for the SIP port (bounded).
for _ in $(seq 1 100); do
  sipp 127.0.0.1:$SIP_PORT -sf tests/sipp/options.xml -m 1 -i 127.0.0.1 -p 25070 -nostdin \
    -timeout 2s -timeout_error >/dev/null 2>&1 && break
done
rss() { awk '/VmRSS/ {print $2}' /proc/$PID/status; }
IDLE=$(rss)

(cd "$OUT" && exec sipp 127.0.0.1:$SIP_PORT -sf ../../../tests/sipp/call_pcap.xml -i 127.0.0.1 -p 25080 -mi 127.0.0.1 -mp 26000 \
  -m "$CALLS" -l "$CALLS" -r "$CALLS" -d "$((SECS * 1000))" -nostdin -timeout 120s -timeout_error \
  -trace_stat -stf stats.csv -fd 1 -trace_rtt -rtt_freq 1 >sipp.out 2>&1) &
SIPP=$!
# Sample RSS while every call is live (half-way through the calls).
sleep $((SECS / 2 + 1))
LOADED=$(rss)
CPU_TICKS_A=$(awk '{print $14 + $15}' /proc/$PID/stat)
sleep 2
CPU_TICKS_B=$(awk '{print $14 + $15}' /proc/$PID/stat)
wait $SIPP || true
HWM=$(awk '/VmHWM/ {print $2}' /proc/$PID/status)

# SIPp counts response times in whole milliseconds; time INVITE -> 200 OK to the microsecond
# with a plain UDP caller too (sequential calls, each ACKed and hung up).
python3 - "$SIP_PORT" > "$OUT/invite_timing.txt" <<'PY'
import socket, sys, time
port = int(sys.argv[1]); relay = ("127.0.0.1", port)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); s.settimeout(5)
me = "127.0.0.1:%d" % s.getsockname()[1]
def req(method, cid, cseq, totag="", body=""):
    ct = "Content-Type: application/sdp\r\n" if body else ""
    return (f"{method} sip:echo@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{cid}{cseq}{method}\r\n"
            f"From: <sip:b@{me}>;tag=b{cid}\r\nTo: <sip:echo@127.0.0.1>{totag}\r\nCall-ID: {cid}\r\n"
            f"CSeq: {cseq} {method}\r\nContact: <sip:b@{me}>\r\nMax-Forwards: 70\r\n{ct}Content-Length: {len(body)}\r\n\r\n{body}").encode()
sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"
times = []
for i in range(200):
    cid = "bench%d" % i
    t0 = time.perf_counter(); s.sendto(req("INVITE", cid, 1, body=sdp), relay)
    while True:
        data = s.recv(65536).decode(errors="replace")
        if data.startswith("SIP/2.0 200") and "INVITE" in data.split("CSeq:")[1].split("\r\n")[0]:
            break
    times.append((time.perf_counter() - t0) * 1000)
    tag = data.split("\r\nTo:")[1].split("\r\n")[0].split(";tag=")[1]
    s.sendto(req("ACK", cid, 1, ";tag=" + tag), relay); s.sendto(req("BYE", cid, 2, ";tag=" + tag), relay)
    while True:
        d = s.recv(65536).decode(errors="replace")
        if d.startswith("SIP/2.0 200") and "BYE" in d.split("CSeq:")[1].split("\r\n")[0]:
            break
times.sort()
print("INVITE->200 (UDP client, 200 sequential calls) ms: p50=%.3f p99=%.3f max=%.3f" % (times[100], times[197], times[-1]))
PY

python3 - "$OUT" "$CALLS" "$IDLE" "$LOADED" "$HWM" "$CPU_TICKS_A" "$CPU_TICKS_B" <<'PY'
import csv, glob, statistics, sys
out, calls, idle, loaded, hwm, a, b = sys.argv[1:]
rows = list(csv.reader(open(f"{out}/stats.csv"), delimiter=';'))
h, last = rows[0], rows[-1]
get = lambda k: last[h.index(k)]
rtt = []
for f in glob.glob(f"{out}/*_rtt.csv"):
    for r in list(csv.reader(open(f), delimiter=';'))[1:]:
        try: rtt.append(float(r[1]))
        except (ValueError, IndexError): pass
rtt.sort()
pct = lambda p: rtt[min(len(rtt)-1, int(p * len(rtt)))] if rtt else float('nan')
hz = 100
print(f"calls: {get('SuccessfulCall(C)')} successful, {get('FailedCall(C)')} failed of {calls}")
print(f"INVITE->200 (SIPp, whole ms): n={len(rtt)} p50={pct(0.5):.0f} p99={pct(0.99):.0f} max={rtt[-1] if rtt else float('nan'):.0f}")
print(open(f"{out}/invite_timing.txt").read().strip())
print(f"RSS idle: {int(idle)/1024:.1f} MiB; with {calls} calls: {int(loaded)/1024:.1f} MiB; peak {int(hwm)/1024:.1f} MiB")
print(f"CPU with {calls} calls: {(int(b)-int(a))/hz/2*100:.1f}% of one core")
PY
