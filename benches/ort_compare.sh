#!/usr/bin/env bash
# Side-by-side speed check: onnxruntime (../shared/bench/ort_mobilenetv2.py, same architecture)
# and `affectcam bench`, back to back on this machine, 2 threads; prints the per-image ratios.
# Needs the onnxruntime venv from ../shared/README.md (~/.cache/ortvenv).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${ORT_PYTHON:-$HOME/.cache/ortvenv/bin/python}
out=${1:-bench.json}
cargo build --release --quiet
ort=$("$py" ../shared/bench/ort_mobilenetv2.py 2 | grep RESULT)
./target/release/affectcam bench --threads 1,2 --json "$out" >&2
echo "$ort"
python3 - "$out" "$ort" <<'PY'
import json, re, sys
reports = {r["threads"]: r for r in json.load(open(sys.argv[1]))}
ort = {int(b): float(ms) for b, ms in re.findall(r"b=(\d+) median_ms=[\d.]+ per_img_ms=([\d.]+)", sys.argv[2])}
ours = reports[2]
for b, mine in [(1, ours["batch1"]["median_ms"]), (32, ours["batch32_per_image_ms"])]:
    print(f"batch {b:2}: affectcam {mine:.2f} ms/image, onnxruntime {ort[b]:.2f} ms/image, ratio {mine / ort[b]:.2f}x")
PY
