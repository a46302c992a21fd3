#!/usr/bin/env bash
# Opus settings by measured quality: a speech corpus through the call's real audio chain
# (examples/opus_quality.rs) at a grid of encoder settings and loss rates, scored by PESQ
# (ITU-T P.862, narrowband, MOS-LQO by P.862.1), summarised by bench/opus_quality.py.
#
#   bash bench/opus-quality.sh            # full grid: complexity 0-10, FEC off/on,
#                                         # 12/16/20/24/32 kbit/s, 0 % and 5 % loss
#   COMPLEXITIES=0,5,10 BITRATES=16000,24000 bash bench/opus-quality.sh   # a smaller grid
#
# Needs espeak-ng, sox and python3 (with venv and a C compiler for `pesq`). No network once
# the venv exists (set VENV to reuse one that has numpy and pesq). Output in
# bench/out/opus-quality/: runs.jsonl (the chain's figures), scores.jsonl (PESQ per clip),
# summary.md (the tables), summary.json. The degraded WAVs are deleted once scored unless
# KEEP_WAVS=1. Bounded: about 5 minutes on 2 cores for the full grid.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-bench/out/opus-quality}
VENV=${VENV:-bench/out/venv-pesq}
COMPLEXITIES=${COMPLEXITIES:-0,1,2,3,4,5,6,7,8,9,10}
BITRATES=${BITRATES:-12000,16000,20000,24000,32000}
LOSSES=${LOSSES:-0,5}
SEED=${SEED:-17}
JOBS=${JOBS:-$(nproc)}

for tool in espeak-ng sox python3; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import pesq, numpy' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q numpy pesq==0.0.4
fi

rm -rf "$OUT"
mkdir -p "$OUT/corpus" "$OUT/raw"

# The corpus: what a booking call says (dates, times, names, numbers), several voices
# (male, female, British, American, two other languages) at two speaking rates (words per
# minute). sox runs with -R so its dither is the same every run (the corpus is reproducible).
# Levels: peak at -6 dBFS before band-limiting; the 8 kHz reference is cut to the
# telephone band (300-3400 Hz) as a phone line does; the 48 kHz copy (the agent's side) is not.
EN=(
  "Your table for four is booked for Friday the twenty third of May at seven thirty in the evening."
  "Could I have your name and number, please? That is oh seven seven, nine four two, eight one five six."
  "Doctor Martinez can see you on Tuesday at ten fifteen, or on Thursday at a quarter past two."
)
DE="Ihr Termin ist am Mittwoch, dem zwölften März, um vierzehn Uhr dreißig. Bis dann, Frau Schneider."
FR="Votre rendez-vous est confirmé pour jeudi vingt-sept juin à neuf heures quarante-cinq, monsieur Dubois."

clip() { # name voice rate text
  local raw="$OUT/raw/$1.wav"
  espeak-ng -v "$2" -s "$3" -w "$raw" "$4"
  sox -R "$raw" "$OUT/raw/$1.norm.wav" norm -6
  sox -R "$OUT/raw/$1.norm.wav" -b 16 "$OUT/corpus/$1.wav" sinc 300-3400 rate -v 8000
  sox -R "$OUT/raw/$1.norm.wav" -b 16 "$OUT/corpus/$1.48k.wav" rate -v 48000
}
for rate in 130 175; do
  for voice in en-us en-gb en-us+f3; do
    for i in 0 1 2; do
      clip "${voice/+/_}-s$i-r$rate" "$voice" "$rate" "${EN[$i]}"
    done
  done
  clip "de-s0-r$rate" de "$rate" "$DE"
  clip "fr_f2-s0-r$rate" fr+f2 "$rate" "$FR"
done
rm -rf "$OUT/raw"
echo "corpus: $(ls "$OUT/corpus" | grep -vc 48k) clips, $(soxi -D "$OUT"/corpus/*.48k.wav | awk '{s+=$1} END {printf "%.0f", s}') s" >&2

# The chain (the relay's own media code), one process, before any scoring so its timings
# do not compete with PESQ for the cores.
cargo build -q --release --example opus_quality
BIN=$(cargo metadata -q --format-version 1 --no-deps | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/examples/opus_quality
"$BIN" --corpus "$OUT/corpus" --out "$OUT/runs" --complexities "$COMPLEXITIES" \
  --bitrates "$BITRATES" --losses "$LOSSES" --seed "$SEED" --agent > "$OUT/runs.jsonl"

"$VENV/bin/python" bench/opus_quality.py --out "$OUT" --jobs "$JOBS" ${KEEP_WAVS:+--keep}
cat "$OUT/summary.md"
