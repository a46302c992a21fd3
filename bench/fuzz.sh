#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of network or model input (docs/fuzzing.md).
#
#   bash bench/fuzz.sh SECONDS                     each target for SECONDS (default 60)
#   FUZZ_RUNS=10000000 bash bench/fuzz.sh 3600     each target for 10 million executions,
#                                                  or at most 3600 s
#
# Other settings: FUZZ_BUILD_ONLY=1 (build the targets, run none), FUZZ_TARGETS="sip_message
# rtp_packet" (default: all), FUZZ_SANITIZER
# (none, the default, or address), FUZZ_OUT (default fuzz/out: one log per target and
# summary.txt, the table of docs/fuzzing.md). Inputs found are kept in fuzz/corpus/<target>
# (the committed seeds are in fuzz/seeds/<target>), crashes in fuzz/artifacts/<target>.
# One process per target, one target at a time. Exits non-zero if any target crashed.
#
# Needs only the stable toolchain: cargo-fuzz passes -Z flags to rustc, which a stable
# compiler takes with RUSTC_BOOTSTRAP=1; libfuzzer-sys builds libFuzzer with the system C++
# compiler. cargo-fuzz is installed from crates.io when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${1:-60}"
RUNS="${FUZZ_RUNS:-}"
SANITIZER="${FUZZ_SANITIZER:-none}"
OUT="${FUZZ_OUT:-$PWD/fuzz/out}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

cd fuzz
mkdir -p "$OUT"
# 16 codegen units: a build several minutes shorter for slightly slower executions.
BUILD=(--sanitizer "$SANITIZER" --codegen-units 16)
start=$(date +%s)
cargo fuzz build "${BUILD[@]}"
echo "fuzz build: $(( $(date +%s) - start )) s"
if [ -n "${FUZZ_BUILD_ONLY:-}" ]; then exit 0; fi

TARGETS="${FUZZ_TARGETS:-$(cargo fuzz list)}"
LIMIT=(-max_total_time="$SECS")
if [ -n "$RUNS" ]; then LIMIT+=(-runs="$RUNS"); fi

summary="$OUT/summary.txt"
printf '%-18s %12s %10s %8s %7s %7s %s\n' target execs exec/s seconds cov ft findings >"$summary"
failed=0
for t in $TARGETS; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="$OUT/$t.log"
  t0=$(date +%s)
  set +e
  cargo fuzz run "${BUILD[@]}" "$t" "corpus/$t" "seeds/$t" -- \
    "${LIMIT[@]}" -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" >"$log" 2>&1
  rc=$?
  set -e
  secs=$(( $(date +%s) - t0 ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  if [ "$rc" -eq 0 ]; then
    findings=none
  else
    findings="CRASH (exit $rc, see $log and fuzz/artifacts/$t/)"
    failed=1
  fi
  printf '%-18s %12s %10s %8s %7s %7s %s\n' "$t" "${execs:-?}" "${rate:-?}" "$secs" \
    "${cov:-?}" "${ft:-?}" "$findings" | tee -a "$summary"
done
echo "total: $(( $(date +%s) - start )) s"
cat "$summary"
exit "$failed"
