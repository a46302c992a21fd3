#!/usr/bin/env bash
# Load figures for the whole call bridge, on loopback only: SIPp callers -> the relay -> the
# realtime simulator in echo mode (a second process, so its CPU is not counted as the relay's).
#
# Usage: bench/bridge-load.sh CALLS [SECONDS] [RATE]
#   CALLS    concurrent calls (all up at once during the measured window)
#   SECONDS  length of each call, rounded up to whole plays of the 7 s pcap (default 60)
#   RATE     new calls per second while ramping up (default 10)
# Environment:
#   TRANSPORT=webrtc|websocket  the realtime transport (default: webrtc, the relay's default)
#   VOXRELAY_BIN=FILE           use this binary instead of building; the default builds the
#                               release binary and copies it to bench/out/ at once, so that other
#                               builds of target/ cannot swap it during the run
#   PORT_BASE=N                 first of the loopback ports used (default 35100)
#
# Prints: relay CPU (% of one core) per call over the window in which all CALLS calls are up,
# RSS per call ((steady - idle) / CALLS), added latency p50/p99 per direction and frame
# processing time from the relay's histograms (bucket bounds, not exact values), set-up time
# p50/p99 from the relay's `call answered` log lines, calls completed and failed.
# Needs: sipp (Debian sip-tester), curl, python3. Every wait below is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${1:?usage: bench/bridge-load.sh CALLS [SECONDS] [RATE]}
SECS=${2:-60}
RATE=${3:-10}
TRANSPORT=${TRANSPORT:-webrtc}
BASE=${PORT_BASE:-35100}
SIP_PORT=$BASE ADMIN_PORT=$((BASE + 1)) SIM_PORT=$((BASE + 2)) SIPP_PORT=$((BASE + 3))
SIPP_MEDIA=$((BASE + 10))
OUT=bench/out/bridge-$TRANSPORT-$CALLS
rm -rf "$OUT"; mkdir -p "$OUT"
HZ=$(getconf CLK_TCK)
unset RUST_LOG

if [ -n "${VOXRELAY_BIN:-}" ]; then
  cp "$VOXRELAY_BIN" "$OUT/voxrelay"
else
  cargo build --release --quiet --bin voxrelay
  cp target/release/voxrelay "$OUT/voxrelay"
fi
BIN=$OUT/voxrelay

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

# The simulator: its own process, echo scenario, one accepted server key.
"$BIN" sim --listen "127.0.0.1:$SIM_PORT" --scenario echo --api-key sk-bench >"$OUT/sim.log" 2>&1 &
SIM=$!; PIDS+=("$SIM")
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$SIM_PORT") 2>/dev/null && break; sleep 0.1; done

# The relay, at its default log level (info; RUST_LOG would replace the filter that keeps the
# SIP stack quiet).
OPENAI_API_KEY=sk-bench \
  VOXRELAY__OPENAI__BASE_URL="http://127.0.0.1:$SIM_PORT" \
  VOXRELAY__OPENAI__TRANSPORT="$TRANSPORT" \
  VOXRELAY__SIP__LISTEN="127.0.0.1:$SIP_PORT" \
  VOXRELAY__ADMIN__LISTEN="127.0.0.1:$ADMIN_PORT" \
  VOXRELAY__SIP__RTP_PORTS="[20000, 29999]" \
  VOXRELAY__SIP__MAX_CALLS=1000 \
  VOXRELAY__SIP__LIMITS__INVITES_PER_SECOND=0 \
  VOXRELAY__SIP__LIMITS__PACKETS_PER_SECOND=0 \
  VOXRELAY__AGENTS__DEFAULT=receptionist \
  VOXRELAY__AGENTS__DIR="$PWD/config/agents" \
  VOXRELAY__BOOKING__DATABASE_URL="sqlite://$OUT/bench.db" \
  "$BIN" --log-format json serve >"$OUT/relay.log" 2>&1 &
RELAY=$!; PIDS+=("$RELAY")
METRICS="http://127.0.0.1:$ADMIN_PORT/metrics"
for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_PORT/readyz" && break; sleep 0.1; done
curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_PORT/readyz" || { echo "the relay did not start"; tail "$OUT/relay.log"; exit 1; }

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
active() { curl -sf "$METRICS" | awk '/^voxrelay_calls_active / {print int($2)}'; }
busy_jiffies() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8}' /proc/stat; }

# Idle: 5 s with no call.
sleep 2
IDLE_RSS=$(rss_kib "$RELAY")
I0=$(ticks "$RELAY"); IT0=$(date +%s.%N)
sleep 5
I1=$(ticks "$RELAY"); IT1=$(date +%s.%N)

PLAYS=$(( (SECS * 100 + 704) / 705 ))
CALL_S=$(( (PLAYS * 706 + 99) / 100 ))
(cd "$OUT" && exec sipp "127.0.0.1:$SIP_PORT" -sf ../../bridge_call.xml -set plays "$PLAYS" \
  -i 127.0.0.1 -p "$SIPP_PORT" -mi 127.0.0.1 -mp "$SIPP_MEDIA" -s echo \
  -m "$CALLS" -l "$CALLS" -r "$RATE" -nostdin -timeout "$((CALL_S + CALLS / RATE + 120))s" \
  -timeout_error -trace_stat -stf stats.csv -fd 5 -trace_err >sipp.out 2>&1) &
SIPP=$!; PIDS+=("$SIPP")
START=$(date +%s)
FIRST_END=$((START + CALL_S))   # the first call hangs up about now

# Wait (bounded) until every call is up.
ALL_UP=
while [ "$(date +%s)" -lt $((FIRST_END - 8)) ]; do
  n=$(active || echo 0)
  if [ "${n:-0}" -ge "$CALLS" ]; then ALL_UP=$(date +%s); break; fi
  kill -0 "$SIPP" 2>/dev/null || break
  sleep 0.5
done
if [ -z "$ALL_UP" ]; then
  echo "only $(active || echo '?') of $CALLS calls were up at once; measuring what is up" >&2
fi

# Steady window: from 3 s after the last call is up to 3 s before the first one ends.
sleep 3
W_END=$((FIRST_END - 3))
A=$(ticks "$RELAY"); SA=$(ticks "$SIM"); SP0=$(ticks "$SIPP" 2>/dev/null || echo 0)
read -r MB0 MT0 < <(busy_jiffies); T0=$(date +%s.%N)
UP0=$(active || echo 0)
RSS_SAMPLES=()
while [ "$(date +%s)" -lt "$W_END" ]; do
  RSS_SAMPLES+=("$(rss_kib "$RELAY")")
  sleep 1
done
B=$(ticks "$RELAY"); SB=$(ticks "$SIM"); SP1=$(ticks "$SIPP" 2>/dev/null || echo 0)
read -r MB1 MT1 < <(busy_jiffies); T1=$(date +%s.%N)
UP1=$(active || echo 0)
SIM_RSS=$(rss_kib "$SIM")
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

# Let every call end (bounded by SIPp's own -timeout), then read the metrics.
wait "$SIPP" || true
for _ in $(seq 1 60); do [ "$(active || echo 0)" = 0 ] && break; sleep 0.5; done
curl -sf "$METRICS" >"$OUT/metrics.txt"
HWM=$(awk '/^VmHWM/ {print $2}' "/proc/$RELAY/status")

python3 - "$OUT" "$CALLS" "$TRANSPORT" "$HZ" "$IDLE_RSS" "$I0" "$I1" "$IT0" "$IT1" "$A" "$B" "$T0" "$T1" \
  "$SA" "$SB" "$SP0" "$SP1" "$MB0" "$MT0" "$MB1" "$MT1" "$UP0" "$UP1" "$SIM_RSS" "$HWM" "$LOAD" \
  "$CALL_S" "$RATE" "${RSS_SAMPLES[*]:-0}" <<'PY'
import csv, json, re, statistics, sys
(out, calls, transport, hz, idle_rss, i0, i1, it0, it1, a, b, t0, t1, sa, sb, sp0, sp1,
 mb0, mt0, mb1, mt1, up0, up1, sim_rss, hwm, load, call_s, rate, rss_samples) = sys.argv[1:]
calls, hz = int(calls), int(hz)
f = float
win = f(t1) - f(t0)
idle_cpu = (f(i1) - f(i0)) / hz / (f(it1) - f(it0)) * 100
cpu = (f(b) - f(a)) / hz / win * 100
sim_cpu = (f(sb) - f(sa)) / hz / win * 100
sipp_cpu = (f(sp1) - f(sp0)) / hz / win * 100
machine = (f(mb1) - f(mb0)) / max(1.0, f(mt1) - f(mt0)) * 100
rss = sorted(int(x) for x in rss_samples.split() if x.isdigit())
steady = statistics.median(rss) if rss else 0
n_up = min(int(up0), int(up1))
per = max(1, n_up)

# Histograms from the Prometheus text.
hist = {}
for line in open(f"{out}/metrics.txt"):
    m = re.match(r'^(voxrelay_\w+)_bucket\{(.*)\} (\S+)', line)
    if m:
        name, labels, v = m.groups()
        lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        key = (name, lab.get("direction", ""))
        le = lab["le"]
        hist.setdefault(key, []).append((float("inf") if le == "+Inf" else float(le), float(v)))
def quant(key, q):
    b = sorted(hist.get(key, []))
    if not b or b[-1][1] == 0:
        return "n/a"
    total = b[-1][1]
    lo = 0.0
    for le, c in b:
        if c >= q * total:
            fmt = (lambda s: f"{s*1e6:.0f} µs") if le < 0.001 else (lambda s: f"{s*1e3:g} ms")
            return f"≤ {fmt(le)} (bucket {fmt(lo)}–{fmt(le)})" if le != float("inf") else f"> {fmt(lo)}"
        lo = le
    return "n/a"
def count(key):
    b = hist.get(key, [])
    return int(max((c for _, c in b), default=0))

# Set-up time from the relay's log.
setup = []
for line in open(f"{out}/relay.log"):
    if "call answered" not in line:
        continue
    try:
        j = json.loads(line)
    except ValueError:
        continue
    fields = j.get("fields", j)
    if "setup_ms" in fields:
        setup.append(int(fields["setup_ms"]))
setup.sort()
pct = lambda xs, p: xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")

# SIPp's own count.
ok = failed = "?"
try:
    rows = list(csv.reader(open(f"{out}/stats.csv"), delimiter=';'))
    h, last = rows[0], rows[-1]
    ok, failed = last[h.index("SuccessfulCall(C)")], last[h.index("FailedCall(C)")]
except (OSError, ValueError, IndexError):
    pass
outcomes = {}
for line in open(f"{out}/metrics.txt"):
    m = re.match(r'^voxrelay_calls_total\{outcome="([^"]+)"\} (\S+)', line)
    if m:
        outcomes[m.group(1)] = int(float(m.group(2)))

print(f"# bridge load: {calls} calls of {call_s} s, {rate} calls/s, transport {transport}")
print(f"calls: {ok} completed, {failed} failed (SIPp); relay outcomes: {outcomes}")
print(f"calls up during the window: {up0} at its start, {up1} at its end; window {win:.1f} s")
print(f"relay CPU idle: {idle_cpu:.2f} % of one core")
print(f"relay CPU with {n_up} calls: {cpu:.1f} % of one core -> {(cpu - idle_cpu) / per:.3f} % per call")
print(f"relay RSS idle {int(idle_rss)/1024:.1f} MiB, steady {steady/1024:.1f} MiB (min {rss[0]/1024 if rss else 0:.1f}, "
      f"max {rss[-1]/1024 if rss else 0:.1f}), peak {int(hwm)/1024:.1f} MiB -> "
      f"{(steady - int(idle_rss)) / 1024 / per * 1024:.0f} KiB per call")
print(f"simulator CPU {sim_cpu:.1f} % of one core, RSS {int(sim_rss)/1024:.1f} MiB; SIPp CPU {sipp_cpu:.1f} %; "
      f"machine busy {machine:.0f} % of 2 cores; load average {load}")
for d in ("to_agent", "to_caller"):
    k = ("voxrelay_added_latency_seconds", d)
    print(f"added latency {d}: p50 {quant(k, .5)}, p99 {quant(k, .99)}; {count(k)} frames")
for d in ("to_agent", "to_caller"):
    k = ("voxrelay_frame_processing_seconds", d)
    print(f"frame processing {d}: p50 {quant(k, .5)}, p99 {quant(k, .99)}; {count(k)} samples")
k = ("voxrelay_call_setup_seconds", "")
print(f"set-up (histogram): p50 {quant(k, .5)}, p99 {quant(k, .99)}")
if setup:
    print(f"set-up (log, setup_ms): n={len(setup)} p50 {pct(setup, .5)} ms, p99 {pct(setup, .99)} ms, max {setup[-1]} ms")
else:
    print("set-up (log): no `call answered` lines")
PY
