#!/bin/sh
# Sessions the realtime simulator holds in echo mode on one core, and its CPU per session.
# Usage: bench/sim-load.sh [webrtc|websocket] [SESSIONS...]
# The simulator runs pinned to CPU 0 on a single-threaded runtime; the load generator on CPU 1.
# Each session's caller talks 1 s then pauses 2 s, in a loop; the simulator echoes each turn.
set -eu
cd "$(dirname "$0")/.."
transport=${1:-webrtc}
shift || true
counts=${*:-"10 25 50 100"}
# optimised as the relay ships: the test profile leaves this crate unoptimised
bin=$(cargo test --release --bench sim_load --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="sim_load" and m.get("executable"): print(m["executable"])' | tail -1)
port=${SIM_LOAD_PORT:-18555}
for n in $counts; do
  taskset -c 0 "$bin" serve --listen "127.0.0.1:$port" --scenario echo >/dev/null &
  pid=$!
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    curl -s -o /dev/null "http://127.0.0.1:$port/sim/sessions" && break
    sleep 0.5
  done
  taskset -c 1 "$bin" load --base-url "http://127.0.0.1:$port" --pid "$pid" \
    --transport "$transport" --sessions "$n" --seconds "${SIM_LOAD_SECONDS:-15}"
  kill -INT "$pid"
  wait "$pid" || true
done
