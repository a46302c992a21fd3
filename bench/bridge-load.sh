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
#   CALLER_PAUSES=1             the callers take turns with the agent, as in a conversation:
#                               each play of the 7 s pcap is followed by 7 s of the A-law idle
#                               code (a line that carries nothing), while the echo agent
#                               answers; the libopus floor encodes the same. Default: the pcap
#                               back to back, the caller never silent.
#   CALLER_PTIME=MS             the callers send packets of MS ms (20, as most trunks do), the
#                               same speech cut again on a steady clock; default: the pcap's own
#                               30 ms packets. Either setting writes the callers' pcap with
#                               bench/caller_pcap.py.
#   SIM_SCENARIO=NAME|FILE      the simulator's scenario (default: echo); e.g.
#                               bench/echo-slow-mint.toml adds OpenAI-like mint latency
#   VOXRELAY__…                 any other relay setting, e.g. VOXRELAY__OPENAI__KEY_POOL=0
#   VOXRELAY_BIN=FILE           use this binary instead of building; the default builds the
#                               release binary and copies it to bench/out/ at once, so that other
#                               builds of target/ cannot swap it during the run
#   SIM_BIN=FILE                run the simulator from this binary instead (default: the
#                               relay's), e.g. to time two builds of the relay against one
#                               simulator, or to keep the simulator out of a training profile
#   PORT_BASE=N                 first of the loopback ports used (default 35100)
#   DATABASE_URL=URL            the relay's booking database (default: a SQLite file in the
#                               output folder); with postgres://... the run also reports the
#                               relay's connections and call records per call (needs psql)
#   CAPTURE_SECONDS=N           length of the loopback capture of the relay's traffic after the
#                               CPU window (default 5; 0 skips it; needs root for a raw socket)
#   INSTRUCTIONS=1              also count the relay's instructions in user space, which this
#                               host's load does not change as it changes CPU time: the relay
#                               runs under valgrind's callgrind, counting only over the idle
#                               window and the window with every call up, and the libopus floor
#                               is counted the same way. Use a few calls (4): under callgrind the
#                               relay runs 15-20 times slower, so its CPU and latency figures
#                               in this mode are callgrind's, not the relay's. The counts are in
#                               the output folder's callgrind.out.* for callgrind_annotate.
#                               Callgrind counts a `rep` fill or copy (glibc's memset and memcpy
#                               above a few KiB) once per byte. CALLGRIND_ARGS="--cache-sim=yes
#                               --branch-sim=yes" also prints the simulated caches' misses and
#                               the mispredicted branches inside libopus and outside it (2 calls:
#                               the simulation is slower still). Needs valgrind.
#
# Prints: relay CPU (% of one core) per call over the window in which all CALLS calls are up
# (and how much of it is the kernel's: system time),
# RSS per call ((steady - idle) / CALLS), file descriptors and sockets per call (steady - idle,
# by kind, from /proc/PID/fd), bytes and packets per second per call on the phone leg and the
# OpenAI leg, each way (bench/relay_census.py, a capture of the loopback interface), the
# jitter of the relay's RTP as the callers get it (from the same capture), added
# latency p50/p99 per direction and frame processing time from the relay's histograms (bucket
# bounds, not exact values), set-up time p50/p99 and a histogram of it from the relay's `call
# answered` log lines, calls completed and failed; over WebRTC, the same calls' libopus work
# timed alone (examples/opus_floor.rs) and their packets' system calls timed alone
# (examples/packet_floor.rs), and the relay's CPU per call divided by them (FLOOR=0 skips
# both).
# Needs: sipp (Debian sip-tester), curl, python3. Every wait below is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${1:?usage: bench/bridge-load.sh CALLS [SECONDS] [RATE]}
SECS=${2:-60}
RATE=${3:-10}
TRANSPORT=${TRANSPORT:-webrtc}
CAPTURE=${CAPTURE_SECONDS:-5}
[ "$(id -u)" = 0 ] || CAPTURE=0
BASE=${PORT_BASE:-35100}
SIP_PORT=$BASE ADMIN_PORT=$((BASE + 1)) SIM_PORT=$((BASE + 2)) SIPP_PORT=$((BASE + 3))
SIPP_MEDIA=$((BASE + 10))
OUT=bench/out/bridge-$TRANSPORT-$CALLS
rm -rf "$OUT"; mkdir -p "$OUT"
DB_URL=${DATABASE_URL:-sqlite://$OUT/bench.db}
RTP_LO=20000 RTP_HI=29999
HZ=$(getconf CLK_TCK)
unset RUST_LOG

if [ -n "${VOXRELAY_BIN:-}" ]; then
  cp "$VOXRELAY_BIN" "$OUT/voxrelay"
else
  cargo build --release --quiet --bin voxrelay
  cp target/release/voxrelay "$OUT/voxrelay"
fi
BIN=$OUT/voxrelay
SIM_BIN=${SIM_BIN:-$BIN}
INSTR=${INSTRUCTIONS:-0}
COUNT=()
if [ "$INSTR" = 1 ]; then
  command -v callgrind_control >/dev/null || { echo "INSTRUCTIONS=1 needs valgrind" >&2; exit 1; }
  # shellcheck disable=SC2206 # CALLGRIND_ARGS is a list of options
  COUNT=(valgrind --tool=callgrind ${CALLGRIND_ARGS:-} --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out")
fi
# Count the relay's instructions from now on (INSTRUCTIONS=1; a no-op otherwise).
count_on() { [ "$INSTR" != 1 ] || callgrind_control -i on "$RELAY" >/dev/null; }
# Stop counting and write what was counted since count_on to the next OUT/callgrind.out.N.
count_off() {
  [ "$INSTR" != 1 ] && return
  callgrind_control -i off "$RELAY" >/dev/null
  callgrind_control -d "$1" "$RELAY" >/dev/null
}

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

# The simulator: its own process, echo scenario, one accepted server key.
"$SIM_BIN" sim --listen "127.0.0.1:$SIM_PORT" --scenario "${SIM_SCENARIO:-echo}" --api-key sk-bench >"$OUT/sim.log" 2>&1 &
SIM=$!; PIDS+=("$SIM")
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$SIM_PORT") 2>/dev/null && break; sleep 0.1; done

# The relay, at its default log level (info; RUST_LOG would replace the filter that keeps the
# SIP stack quiet).
OPENAI_API_KEY=sk-bench \
  VOXRELAY__OPENAI__BASE_URL="http://127.0.0.1:$SIM_PORT" \
  VOXRELAY__OPENAI__TRANSPORT="$TRANSPORT" \
  VOXRELAY__SIP__LISTEN="127.0.0.1:$SIP_PORT" \
  VOXRELAY__ADMIN__LISTEN="127.0.0.1:$ADMIN_PORT" \
  VOXRELAY__SIP__RTP_PORTS="[$RTP_LO, $RTP_HI]" \
  VOXRELAY__SIP__MAX_CALLS=1000 \
  VOXRELAY__SIP__LIMITS__INVITES_PER_SECOND=0 \
  VOXRELAY__SIP__LIMITS__PACKETS_PER_SECOND=0 \
  VOXRELAY__SIP__LIMITS__IN_DIALOG_PER_SECOND=0 \
  VOXRELAY__SIP__MAX_SETUP_CALLS_PER_SOURCE=0 \
  VOXRELAY__AGENTS__DEFAULT=receptionist \
  VOXRELAY__AGENTS__DIR="$PWD/config/agents" \
  VOXRELAY__BOOKING__DATABASE_URL="$DB_URL" \
  "${COUNT[@]}" "$BIN" --log-format json serve >"$OUT/relay.log" 2>&1 &
RELAY=$!; PIDS+=("$RELAY")
METRICS="http://127.0.0.1:$ADMIN_PORT/metrics"
for _ in $(seq 1 600); do curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_PORT/readyz" && break; sleep 0.1; done
curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_PORT/readyz" || { echo "the relay did not start"; tail "$OUT/relay.log"; exit 1; }

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
kernel_ticks() { awk '{print $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
active() { curl -sf "$METRICS" | awk '/^voxrelay_calls_active / {print int($2)}'; }
census() { python3 bench/relay_census.py fds "$RELAY" "$RTP_LO" "$RTP_HI"; }
# Call records stored in the relay's PostgreSQL database so far (counted in the table: the
# server's statistics reach pg_stat_database up to 10 s late from an idle pooled connection).
pg_rows() {
  case "$DB_URL" in
    postgres*) psql "$DB_URL" -Atc "select count(*) from calls" ;;
    *) echo 0 ;;
  esac
}
# Connections to that database other than this query's.
pg_conns() {
  case "$DB_URL" in
    postgres*) psql "$DB_URL" -Atc "select count(*) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()" ;;
    *) echo 0 ;;
  esac
}
# The machine's busy and total time, and the time the host took away from its virtual CPUs
# (steal), to read a run's CPU figures in seconds with.
busy_jiffies() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8, $9}' /proc/stat; }

# Idle: 5 s with no call.
sleep 2
IDLE_RSS=$(rss_kib "$RELAY")
count_on; CI0=$(date +%s.%N)
I0=$(ticks "$RELAY"); KI0=$(kernel_ticks "$RELAY"); IT0=$(date +%s.%N)
sleep 5
I1=$(ticks "$RELAY"); KI1=$(kernel_ticks "$RELAY"); IT1=$(date +%s.%N)
count_off idle; CI1=$(date +%s.%N)
census >"$OUT/fds-idle.json"
PG_CONNS_IDLE=$(pg_conns)
PG_X0=$(pg_rows)

# The callers' audio: SIPp's 7 s speech pcap, or (CALLER_PAUSES, CALLER_PTIME) that speech in
# other packets, followed by as long of the A-law idle code (bench/caller_pcap.py), in a copy
# of the scenario that plays it, with the pause between plays set to one play's length.
CALLER_PCAP=/usr/share/sip-tester/g711a.pcap PLAY_CS=706 SCENARIO=../../bridge_call.xml
if [ "${CALLER_PAUSES:-0}" = 1 ] || [ -n "${CALLER_PTIME:-}" ]; then
  PCAP_ARGS=()
  [ "${CALLER_PAUSES:-0}" = 1 ] && PCAP_ARGS+=(--pauses)
  [ -n "${CALLER_PTIME:-}" ] && PCAP_ARGS+=(--ptime "$CALLER_PTIME")
  PLAY_MS=$(python3 bench/caller_pcap.py "$CALLER_PCAP" "$OUT/caller.pcap" "${PCAP_ARGS[@]}")
  CALLER_PCAP=$PWD/$OUT/caller.pcap PLAY_CS=$(( (PLAY_MS + 9) / 10 )) SCENARIO=call.xml
  sed -e "s|/usr/share/sip-tester/g711a.pcap|$CALLER_PCAP|" -e "s|milliseconds=\"7060\"|milliseconds=\"$PLAY_MS\"|" \
    bench/bridge_call.xml >"$OUT/call.xml"
fi
PLAYS=$(( (SECS * 100 + PLAY_CS - 2) / (PLAY_CS - 1) ))
CALL_S=$(( (PLAYS * PLAY_CS + 99) / 100 ))
(cd "$OUT" && exec sipp "127.0.0.1:$SIP_PORT" -sf "$SCENARIO" -set plays "$PLAYS" \
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

# Steady window: from 3 s after the last call is up to 3 s before the first one ends, less the
# capture that follows it (so the capture's own CPU does not count as the relay's).
sleep 3
census >"$OUT/fds-steady.json"
PG_CONNS=$(pg_conns)
W_END=$((FIRST_END - 3))
[ "$CAPTURE" -gt 0 ] && W_END=$((W_END - CAPTURE - 1))
A=$(ticks "$RELAY"); KA=$(kernel_ticks "$RELAY"); SA=$(ticks "$SIM"); SP0=$(ticks "$SIPP" 2>/dev/null || echo 0)
count_on; CW0=$(date +%s.%N)
read -r MB0 MT0 MS0 < <(busy_jiffies); T0=$(date +%s.%N)
UP0=$(active || echo 0)
RSS_SAMPLES=()
while [ "$(date +%s)" -lt "$W_END" ]; do
  RSS_SAMPLES+=("$(rss_kib "$RELAY")")
  sleep 1
done
B=$(ticks "$RELAY"); KB=$(kernel_ticks "$RELAY"); SB=$(ticks "$SIM"); SP1=$(ticks "$SIPP" 2>/dev/null || echo 0)
read -r MB1 MT1 MS1 < <(busy_jiffies); T1=$(date +%s.%N)
count_off calls; CW1=$(date +%s.%N)
UP1=$(active || echo 0)
SIM_RSS=$(rss_kib "$SIM")
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
if [ "$CAPTURE" -gt 0 ]; then
  DB_PORT=$(python3 -c 'import sys, urllib.parse as u; print(u.urlparse(sys.argv[1]).port or (5432 if sys.argv[1].startswith("postgres") else 0))' "$DB_URL")
  python3 bench/relay_census.py traffic "$RELAY" "$CAPTURE" "$RTP_LO" "$RTP_HI" "$SIP_PORT" "$ADMIN_PORT" \
    "$DB_PORT" >"$OUT/traffic.json"
  UP2=$(active || echo 0)
  echo "{\"up_before\": $UP1, \"up_after\": $UP2}" >"$OUT/traffic-calls.json"
fi

# Let every call end (bounded by SIPp's own -timeout), then read the metrics.
wait "$SIPP" || true
for _ in $(seq 1 60); do [ "$(active || echo 0)" = 0 ] && break; sleep 0.5; done
curl -sf "$METRICS" >"$OUT/metrics.txt"
HWM=$(awk '/^VmHWM/ {print $2}' "/proc/$RELAY/status")
# A call's record is written just after it leaves voxrelay_calls_active: wait (bounded) for
# all of them.
PG_X1=$(pg_rows)
for _ in $(seq 1 50); do
  [ $((PG_X1 - PG_X0)) -ge "$CALLS" ] && break
  sleep 0.1; PG_X1=$(pg_rows)
done

python3 - "$OUT" "$CALLS" "$TRANSPORT" "$HZ" "$IDLE_RSS" "$I0" "$I1" "$IT0" "$IT1" "$A" "$B" "$T0" "$T1" \
  "$SA" "$SB" "$SP0" "$SP1" "$MB0" "$MT0" "$MB1" "$MT1" "$UP0" "$UP1" "$SIM_RSS" "$HWM" "$LOAD" \
  "$CALL_S" "$RATE" "${RSS_SAMPLES[*]:-0}" "$DB_URL" "$PG_CONNS_IDLE" "$PG_CONNS" "$PG_X0" "$PG_X1" "$KI0" "$KI1" "$KA" "$KB" "$MS0" "$MS1" <<'PY'
import csv, json, os, re, statistics, sys
(out, calls, transport, hz, idle_rss, i0, i1, it0, it1, a, b, t0, t1, sa, sb, sp0, sp1,
 mb0, mt0, mb1, mt1, up0, up1, sim_rss, hwm, load, call_s, rate, rss_samples,
 db_url, pg_conns_idle, pg_conns, pg_x0, pg_x1, ki0, ki1, ka, kb, ms0, ms1) = sys.argv[1:]
calls, hz = int(calls), int(hz)
f = float
win = f(t1) - f(t0)
idle_cpu = (f(i1) - f(i0)) / hz / (f(it1) - f(it0)) * 100
cpu = (f(b) - f(a)) / hz / win * 100
# the kernel's part of both (system time: system calls, the loopback delivery of what the relay
# sends, its threads' switches)
idle_kernel = (f(ki1) - f(ki0)) / hz / (f(it1) - f(it0)) * 100
kernel = (f(kb) - f(ka)) / hz / win * 100
sim_cpu = (f(sb) - f(sa)) / hz / win * 100
sipp_cpu = (f(sp1) - f(sp0)) / hz / win * 100
machine = (f(mb1) - f(mb0)) / max(1.0, f(mt1) - f(mt0)) * 100
steal = (f(ms1) - f(ms0)) / max(1.0, f(mt1) - f(mt0) + f(ms1) - f(ms0)) * 100
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
if os.environ.get("INSTRUCTIONS") == "1":
    print("(INSTRUCTIONS=1: the relay runs under callgrind, so its CPU and latency figures below "
          "are callgrind's; its instruction counts follow the floors)")
print(f"relay CPU idle: {idle_cpu:.2f} % of one core")
print(f"relay CPU with {n_up} calls: {cpu:.1f} % of one core -> {(cpu - idle_cpu) / per:.3f} % per call")
print(f"  of which in the kernel: {(kernel - idle_kernel) / per:.3f} % per call, in user space "
      f"{(cpu - idle_cpu - kernel + idle_kernel) / per:.3f} %")
print(f"relay RSS idle {int(idle_rss)/1024:.1f} MiB, steady {steady/1024:.1f} MiB (min {rss[0]/1024 if rss else 0:.1f}, "
      f"max {rss[-1]/1024 if rss else 0:.1f}), peak {int(hwm)/1024:.1f} MiB -> "
      f"{(steady - int(idle_rss)) / 1024 / per * 1024:.0f} KiB per call")
print(f"simulator CPU {sim_cpu:.1f} % of one core, RSS {int(sim_rss)/1024:.1f} MiB; SIPp CPU {sipp_cpu:.1f} %; "
      f"machine busy {machine:.0f} % of 2 cores; load average {load}")
print(f"the host took {steal:.1f} % of the machine's CPU time away over the window (steal)")
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
    # Every call's set-up counted in bins of milliseconds, up to the slowest call's bin.
    edges = [10, 20, 30, 40, 50, 75, 100, 150, 250, 500, 1000, 3000]
    counts = [0] * (len(edges) + 1)
    for ms in setup:
        counts[next((i for i, e in enumerate(edges) if ms < e), len(edges))] += 1
    last = max(i for i, c in enumerate(counts) if c)
    names = [f"<{edges[0]}"] + [f"{a}–{b}" for a, b in zip(edges, edges[1:])] + [f"≥{edges[-1]}"]
    print("set-up histogram (ms: calls): " + ", ".join(f"{names[i]}: {counts[i]}" for i in range(last + 1)))
else:
    print("set-up (log): no `call answered` lines")
# For the libopus floor below: the relay's CPU per call, and the agent's frames per second of
# a call (what the pacer played toward the callers, over every call's whole length).
json.dump({"per_call_pct": (cpu - idle_cpu) / per,
           "per_call_user_pct": (cpu - idle_cpu - kernel + idle_kernel) / per,
           "calls_up": n_up,
           "steal_pct": steal,
           "agent_fps": count(("voxrelay_added_latency_seconds", "to_caller")) / max(1, calls * int(call_s))},
          open(f"{out}/summary.json", "w"))

# File descriptors and sockets: steady minus idle, per call up.
def load_json(name):
    try:
        return json.load(open(f"{out}/{name}"))
    except (OSError, ValueError):
        return None
fi, fs = load_json("fds-idle.json"), load_json("fds-steady.json")
if fi and fs:
    def flat(d):
        f = {k: v for k, v in d.items() if isinstance(v, int)}
        f["tcp_connected"] = sum(d["tcp_connected"].values())
        for k, v in d["other"].items():
            f[k] = v
        return f
    a_, b_ = flat(fi), flat(fs)
    keys = ["total", "udp_rtp_range", "udp_other", "tcp_connected", "tcp_listen"] + sorted(
        k for k in set(a_) | set(b_)
        if k not in ("total", "udp_rtp_range", "udp_other", "tcp_connected", "tcp_listen"))
    print(f"fds idle {fi['total']}, with {n_up} calls {fs['total']} (limit {fs.get('limit_soft')}): "
          + ", ".join(f"{k} {a_.get(k, 0)}->{b_.get(k, 0)}" for k in keys))
    print(f"fds per call: {(fs['total'] - fi['total']) / per:.2f} "
          f"(UDP in the RTP range {(b_['udp_rtp_range'] - a_['udp_rtp_range']) / per:.2f}, "
          f"other UDP {(b_['udp_other'] - a_['udp_other']) / per:.2f}, "
          f"TCP connected {(b_['tcp_connected'] - a_['tcp_connected']) / per:.2f}); "
          f"TCP peers by port with calls up: {fs['tcp_connected']}")
tr, tc = load_json("traffic.json"), load_json("traffic-calls.json")
if tr and tc:
    n_cap = max(1, min(tc["up_before"], tc["up_after"]))
    secs = tr["seconds"]
    print(f"traffic: {secs:.1f} s capture of the loopback interface with {n_cap} calls up, "
          f"{tr['drops']} packets dropped by the kernel (IP bytes: IP and UDP/TCP headers included)")
    rt = tr.get("rtp_timing") or {}
    for k, what in (("phone_out", "the relay's RTP as the callers get it"),
                    ("openai_in", "the agent's RTP as the realtime service sent it")):
        tt = rt.get(k) or {}
        if tt.get("streams"):
            print(f"  {what} ({tt['streams']} streams): RFC 3550 jitter "
                  f"mean {tt['jitter_ms_mean']:.2f} ms, max {tt['jitter_ms_max']:.2f} ms; change in "
                  f"transit between consecutive packets p50 {tt['transit_change_ms_p50']:.2f} ms, "
                  f"p99 {tt['transit_change_ms_p99']:.2f} ms, max {tt['transit_change_ms_max']:.2f} ms")
    for leg in ("phone", "openai", "sip", "admin", "db"):
        parts = []
        for d in ("in", "out"):
            c = tr["legs"].get(f"{leg}_{d}")
            if not c:
                continue
            bps = c["bytes"] / secs / n_cap
            pps = c["packets"] / secs / n_cap
            parts.append(f"{d} {bps:,.0f} B/s = {bps * 8 / 1000:.1f} kbit/s, {pps:.1f} packets/s"
                         f" ({c['bytes'] / max(1, c['packets']):.0f} B each)")
        if parts:
            print(f"  per call, {leg} leg: " + "; ".join(parts))
        for d in ("in", "out"):
            # (what flows less than once every 10 s per call, e.g. the pooled HTTP connection
            # that mints the WebRTC legs' keys, is left out)
            kinds = sorted(k for k in tr["legs"] if k.startswith(f"{leg}_{d}/")
                           and tr["legs"][k]["packets"] / secs / n_cap >= 0.1)
            if kinds:
                print(f"    {leg} {d} by content: " + ", ".join(
                    f"{k.split('/')[1]} {tr['legs'][k]['bytes'] / secs / n_cap * 8 / 1000:.1f} kbit/s "
                    f"{tr['legs'][k]['packets'] / secs / n_cap:.1f}/s "
                    f"({tr['legs'][k]['bytes'] / max(1, tr['legs'][k]['packets']):.0f} B)"
                    for k in kinds))
if db_url.startswith("postgres"):
    rows = int(pg_x1) - int(pg_x0)
    done = outcomes and sum(outcomes.values()) or 1
    print(f"PostgreSQL: {pg_conns_idle} connections idle, {pg_conns} with {n_up} calls up; "
          f"{rows} call records stored for {done} calls = {rows / done:.2f} per call")
PY

# The floors: the same calls' libopus work alone (examples/opus_floor.rs: 50 encodes a second
# of the callers' speech at the call's settings, and the agent's packets at the rate the pacer
# played them, narrow band), and their packets' system calls alone (examples/packet_floor.rs:
# the same packets read and sent over loopback UDP, in a tight loop), timed right after, on the
# same machine; and the ratios.
if [ "$TRANSPORT" = webrtc ] && [ "${FLOOR:-1}" = 1 ]; then
  if [ -z "${OPUS_FLOOR_BIN:-}" ]; then
    cargo build --release --quiet --example opus_floor
    OPUS_FLOOR_BIN=target/release/examples/opus_floor
  fi
  if [ -z "${PACKET_FLOOR_BIN:-}" ]; then
    cargo build --release --quiet --example packet_floor
    PACKET_FLOOR_BIN=target/release/examples/packet_floor
  fi
  FPS=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["agent_fps"])' "$OUT/summary.json")
  # as many seconds as one play of the callers' pcap, so that the floor codes their pauses too
  FLOOR_S=$(( PLAY_CS / 100 > 10 ? PLAY_CS / 100 : 10 ))
  "$OPUS_FLOOR_BIN" --calls "$CALLS" --seconds "$FLOOR_S" --decode-per-second "$FPS" --pcap "$CALLER_PCAP" >"$OUT/floor.json"
  "$PACKET_FLOOR_BIN" --calls "$CALLS" --seconds 10 --agent-per-second "$FPS" \
    --caller-ptime-ms "${CALLER_PTIME:-30}" >"$OUT/packet-floor.json"
  if [ "$INSTR" = 1 ]; then
    # one call's FLOOR_S seconds of libopus work: one call's count less the set-up's (read the
    # pcap, encode the agent's packets), which is the same in a run of 1 call and a run of 2
    for n in 1 2; do
      valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.floor.$n" "$OPUS_FLOOR_BIN" \
        --calls "$n" --seconds "$FLOOR_S" --decode-per-second "$FPS" --pcap "$CALLER_PCAP" >/dev/null 2>"$OUT/callgrind.floor.$n.log"
    done
  fi
  python3 - "$OUT" <<'PY'
import json, sys
s = json.load(open(f"{sys.argv[1]}/summary.json"))
f = json.load(open(f"{sys.argv[1]}/floor.json"))
p = json.load(open(f"{sys.argv[1]}/packet-floor.json"))
print(f"libopus floor: {f['per_call_pct']:.3f} % of one core per call (encode 50/s, decode "
      f"{s['agent_fps']:.1f}/s, narrow band) -> relay / floor = {s['per_call_pct'] / f['per_call_pct']:.2f}; "
      f"the relay's user space / floor = {s['per_call_user_pct'] / f['per_call_pct']:.2f}")
both = f['per_call_pct'] + p['per_call_pct']
print(f"packet floor: {p['per_call_pct']:.3f} % per call (the same packets' system calls, "
      f"{(p['received'] + p['sent']) / (p['calls'] * p['seconds']):.0f}/s) -> relay / (libopus + packets) "
      f"= {s['per_call_pct'] / both:.2f}; (libopus + packets) / libopus = {both / f['per_call_pct']:.2f}")
PY
fi

# The relay's instructions per call and second in user space (INSTRUCTIONS=1): the count over
# the window with every call up, less the idle window's rate, over the calls up; against one
# call's libopus work counted the same way.
if [ "$INSTR" = 1 ]; then
  python3 - "$OUT" "$CALLS" "$CI0" "$CI1" "$CW0" "$CW1" <<'PY'
import glob, json, os, re, subprocess, sys
out, calls, ci0, ci1, cw0, cw1 = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:])
def totals(path):
    """The dump's events, its totals (one per event), and its trigger."""
    text = open(path).read()
    events = re.search(r"^events: (.*)$", text, re.M).group(1).split()
    total = [int(x) for x in re.search(r"^totals: (.*)$", text, re.M).group(1).split()]
    trigger = re.search(r"^desc: Trigger: (.*)$", text, re.M)
    return events, total, trigger.group(1) if trigger else ""
dumps, calls_dump = {}, None
for path in glob.glob(f"{out}/callgrind.out.*"):
    events_here, total_here, trigger = totals(path)
    for hint in ("idle", "calls"):
        if re.search(rf"\b{hint}\b", trigger):
            dumps[hint] = total_here[0]
            if hint == "calls":
                calls_dump, events, total = path, events_here, total_here
s = json.load(open(f"{out}/summary.json"))
up = max(1, s["calls_up"])
idle = dumps["idle"] / (ci1 - ci0)
per = (dumps["calls"] / (cw1 - cw0) - idle) / up
print(f"relay instructions in user space: {per / 1e6:.2f} M per call and second "
      f"({dumps['calls']:,} over {cw1 - cw0:.1f} s with {up} calls up, idle {idle / 1e6:.2f} M/s "
      f"subtracted; {out}/callgrind.out.*)")
# the relay's own libopus work: what libopus's opus_encode and opus_decode cost, callees
# included
tree = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--auto=no", "--threshold=100",
                       calls_dump], capture_output=True, text=True).stdout
# libopus's opus_encode and opus_decode lines: one column per event ("N (x%)", "0" or ".")
own = [0] * len(events)
for line in re.findall(r"^.*\?\?\?:opus_(?:encode|decode) \[.*$", tree, re.M):
    cols = re.findall(r"([\d,]+) \(\s*[\d.]+%\)|(?<!\S)(\d+|\.)(?=\s)", line)[:len(events)]
    own = [o + int((c[0] or c[1]).replace(",", "").replace(".", "0")) for o, c in zip(own, cols)]
if own[0]:
    print(f"  of which libopus (opus_encode and opus_decode, callees included): "
          f"{own[0] / total[0] * 100:.1f} % -> relay / its own libopus work = {total[0] / own[0]:.3f}")
# with CALLGRIND_ARGS="--cache-sim=yes --branch-sim=yes": the simulated caches' misses and the
# mispredicted branches per thousand instructions, inside libopus and outside it
if own[0] and "D1mr" in events and "Bcm" in events:
    def per_k(v):
        e = dict(zip(events, v))
        return (f"L1 misses {e['I1mr'] / e['Ir'] * 1000:.1f} for code and "
                f"{(e['D1mr'] + e['D1mw']) / e['Ir'] * 1000:.1f} for data, last level "
                f"{(e['ILmr'] + e['DLmr'] + e['DLmw']) / e['Ir'] * 1000:.3f}, mispredicted branches "
                f"{(e['Bcm'] + e.get('Bim', 0)) / e['Ir'] * 1000:.1f}")
    print(f"  per thousand instructions, inside libopus: {per_k(own)}; outside it: "
          f"{per_k([t - o for t, o in zip(total, own)])}")
if os.path.exists(f"{out}/callgrind.floor.2"):
    floor_s = json.load(open(f"{out}/floor.json"))["seconds"]
    floor = (totals(f"{out}/callgrind.floor.2")[1][0] - totals(f"{out}/callgrind.floor.1")[1][0]) / floor_s
    print(f"libopus floor: {floor / 1e6:.2f} M instructions per call and second (encode 50/s, decode "
          f"{s['agent_fps']:.1f}/s) -> relay / floor = {per / floor:.3f} by instructions")
PY
fi
