#!/usr/bin/env bash
# A release binary of the relay optimised with a profile of its own calls (profile-guided
# optimisation, on loopback only): build the relay instrumented, run real calls through it
# (bench/bridge-load.sh: SIPp callers -> the relay -> the simulator), merge what it counted,
# and build it again with the profile. The compiler then lays the per-packet code out by how
# often it runs, and predicts its branches from the calls; docs/performance.md,
# "Profile-guided optimisation", has what it changes.
#
# Usage: bench/pgo-build.sh
# Environment:
#   TRAIN_CALLS=N      WebRTC calls in the training run (default 20; a WebSocket run of half
#                      as many follows, so that transport is not laid out as cold code)
#   TRAIN_SECONDS=N    length of each training call (default 30)
#   PORT_BASE=N        passed to bench/bridge-load.sh
# Needs: what bench/bridge-load.sh needs (SIPp, python3), and llvm-profdata of the compiler's
# own LLVM (`rustup component add llvm-tools`). Two release builds: about twice as long as one.
#
# Prints: the optimised binary's path, target/pgo/<host triple>/release/voxrelay
# (the target is named so that the build's own scripts and macros are neither instrumented
# nor profiled), and the training calls' outcome.
set -euo pipefail
cd "$(dirname "$0")/.."

HOST=$(rustc -vV | sed -n 's/^host: //p')
PROFDATA=$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata
[ -x "$PROFDATA" ] || { echo "needs llvm-profdata: rustup component add llvm-tools" >&2; exit 1; }
command -v sipp >/dev/null || { echo "needs SIPp" >&2; exit 1; }

WORK=$PWD/target/pgo-profile
rm -rf "$WORK"; mkdir -p "$WORK/raw" "$WORK/sim"

echo "== instrumented build"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$WORK/raw" CARGO_TARGET_DIR=target/pgo-gen \
  cargo build --release --locked --quiet --bin voxrelay --target "$HOST"
GEN=$PWD/target/pgo-gen/$HOST/release/voxrelay
# the simulator runs from the same binary; its counts go elsewhere, so that the profile is
# the relay's calls alone
cat >"$WORK/sim-bin" <<EOF
#!/bin/sh
LLVM_PROFILE_FILE='$WORK/sim/%p.profraw' exec '$GEN' "\$@"
EOF
chmod +x "$WORK/sim-bin"

train() {
  local transport=$1 calls=$2 log=$WORK/train-$1.log
  echo "== training: $calls $transport calls"
  TRANSPORT=$transport VOXRELAY_BIN=$GEN SIM_BIN=$WORK/sim-bin CAPTURE_SECONDS=0 FLOOR=0 \
    bash bench/bridge-load.sh "$calls" "${TRAIN_SECONDS:-30}" >"$log" 2>&1 \
    || { tail -20 "$log" >&2; exit 1; }
  grep "^calls: " "$log"
}
CALLS=${TRAIN_CALLS:-20}
train webrtc "$CALLS"
train websocket $(((CALLS + 1) / 2))

ls "$WORK"/raw/*.profraw >/dev/null 2>&1 || { echo "the relay wrote no profile" >&2; exit 1; }
"$PROFDATA" merge -o "$WORK/relay.profdata" "$WORK"/raw/*.profraw

echo "== optimised build"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$WORK/relay.profdata" CARGO_TARGET_DIR=target/pgo \
  cargo build --release --locked --quiet --bin voxrelay --target "$HOST"
echo "target/pgo/$HOST/release/voxrelay"
