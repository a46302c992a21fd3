#!/usr/bin/env bash
# Soak and load of the realtime leg against the simulator, on loopback, in two processes:
#   bench/openai-soak.sh [webrtc|websocket]
# Prints JSON lines: RSS and open fds after 100 and 500 connect/2 s audio/close cycles, then
# CPU and RSS per live session at 50 and 200 live sessions, with connect times, failures by
# kind and the simulator's CPU. Bounded: every phase stops itself.
set -euo pipefail
cd "$(dirname "$0")/.."
TRANSPORT="${1:-webrtc}"
cargo build --release --bench openai_soak >/dev/null 2>&1 || cargo build --release --bench openai_soak
BIN=$(ls -t target/release/deps/openai_soak-* | grep -v '\.d$' | head -1)
PORT=$((40000 + RANDOM % 10000))
"$BIN" sim --listen "127.0.0.1:$PORT" >/dev/null &
SIM=$!
trap 'kill $SIM 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
BASE="http://127.0.0.1:$PORT"
if [ "$TRANSPORT" = webrtc ]; then
  echo "# connect steps (webrtc, medians of 20)"
  "$BIN" connect --base-url "$BASE" --count 20
fi
echo "# cycles ($TRANSPORT)"
"$BIN" cycles --base-url "$BASE" --transport "$TRANSPORT" --cycles "${CYCLES:-500}" --concurrency "${CONCURRENCY:-20}"
for n in 50 200; do
  echo "# live $n ($TRANSPORT)"
  "$BIN" live --base-url "$BASE" --transport "$TRANSPORT" --sessions "$n" --seconds "${SECONDS_LIVE:-10}" \
    --pace-ms "${PACE_MS:-10}" --sim-pid "$SIM"
done
