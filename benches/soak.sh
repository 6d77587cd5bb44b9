#!/usr/bin/env bash
# Soak benchmark (not a CI test): `live --headless` on an hour-long source, recording and
# logging faces, with a status line every minute (RSS, threads, open files, fps, latency);
# then the curves as PNGs. Usage:
#
#   ffmpeg -stream_loop 215 -i ../shared/clips/crying_to_laughing.mp4 -c copy /tmp/long.mp4  # 101,952 frames
#   benches/soak.sh /tmp/long.mp4 soak/
#
# Leaves soak/live.log, soak/stats.json and soak/soak_*.png (the recording and face log are
# written to soak/ too and can be deleted).
set -euo pipefail
src=${1:?usage: soak.sh LONG.mp4 OUT_DIR}
out=${2:?usage: soak.sh LONG.mp4 OUT_DIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin affectcam --example plot_soak
./target/release/affectcam live --headless --source "$src" --report-every 60 \
    --record "$out/soak.mp4" --jsonl "$out/soak.jsonl" --stats-json "$out/stats.json" \
    2> "$out/live.log"
./target/release/examples/plot_soak "$out/live.log" "$out"
grep '^status:' "$out/live.log" | sed -n '1p;$p'
