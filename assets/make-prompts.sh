#!/bin/sh
# Regenerates the simulator's spoken prompts: espeak-ng speech, resampled to 8 kHz mono G.711
# mu-law WAV (8 KB per second). Needs espeak-ng and sox. Run from this folder: ./make-prompts.sh
set -eu
cd "$(dirname "$0")/prompts"
say() {
    name=$1; shift
    espeak-ng -v en-us -s 165 -w "/tmp/prompt-$name.wav" "$*"
    sox "/tmp/prompt-$name.wav" -r 8000 -c 1 -e mu-law -b 8 "$name.wav" norm -3
    rm -f "/tmp/prompt-$name.wav"
}
say greeting "Hello, you have reached the clinic. How can I help you today?"
say offer "I have a free slot on Tuesday at ten in the morning. Shall I book it for you?"
say confirmed "You are booked in. I have sent the confirmation. Goodbye."
say anything_else "Is there anything else I can help you with?"
say goodbye "No problem. Goodbye."
say echo_ready "Echo test. Speak, and I will repeat what you say."
say still_there "Are you still there?"
# The relay's own prompts, played to the caller without the model:
say apology "I am sorry, our assistant is not available right now. Please call again later. Goodbye."
say time_limit "We have reached the time limit for this call. Thank you for calling. Goodbye."
say recording_notice "This call is recorded."
