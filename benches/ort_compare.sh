#!/usr/bin/env bash
# Side-by-side speed check: onnxruntime (../shared/bench/ort_mobilenetv2.py, same architecture,
# f32) and `affectcam bench` on the shipped weights (calibrated, so int8 pays for its smoothing as
# it does in use) in f32, bf16 (where the CPU has AVX512-BF16) and int8 (where it has
# AVX512-VNNI), back to back, RUNS times; 2 threads. A precision the CPU lacks runs f32 and is
# left out. Prints each run's per-image ratios and their medians, and writes every figure to
# OUT (JSON).
# Usage: benches/ort_compare.sh [OUT.json] [RUNS]   (needs the onnxruntime venv of
# ../shared/README.md, ~/.cache/ortvenv, or ORT_PYTHON)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${ORT_PYTHON:-$HOME/.cache/ortvenv/bin/python}
out=${1:-bench.json}
runs=${2:-3}
cargo build --release --quiet
bin=./target/release/affectcam
weights=weights/affectcam-mobilenetv2.safetensors
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for run in $(seq "$runs"); do
    "$py" ../shared/bench/ort_mobilenetv2.py 2 | grep RESULT > "$tmp/ort-$run.txt"
    "$bin" bench --weights "$weights" --threads 1,2 --precision f32 --json "$tmp/f32-$run.json" >&2
    for precision in bf16 int8; do
        "$bin" bench --weights "$weights" --threads 2 --no-train --precision $precision \
            --json "$tmp/$precision-$run.json" >&2
    done
done
python3 - "$tmp" "$runs" "$out" "$(lscpu | sed -n 's/^Model name: *//p')" <<'PY'
import json, re, statistics, sys
tmp, runs, out, cpu = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
result = {"cpu": cpu, "runs": []}
ratios = {}
for run in range(1, runs + 1):
    text = open(f"{tmp}/ort-{run}.txt").read()
    ort = {int(b): float(ms) for b, ms in re.findall(r"b=(\d+) median_ms=[\d.]+ per_img_ms=([\d.]+)", text)}
    f32 = json.load(open(f"{tmp}/f32-{run}.json"))
    bf16 = json.load(open(f"{tmp}/bf16-{run}.json"))
    int8 = json.load(open(f"{tmp}/int8-{run}.json"))
    result["runs"].append({"onnxruntime_per_image_ms": ort, "f32": f32, "bf16": bf16, "int8": int8})
    reduced = [r for r in bf16 + int8 if r["precision"] != "f32"]
    for report in [r for r in f32 if r["threads"] == 2] + reduced:
        for b, mine in [(1, report["batch1"]["median_ms"]), (32, report["batch32_per_image_ms"])]:
            ratio = mine / ort[b]
            ratios.setdefault((report["precision"], b), []).append(ratio)
            print(f"run {run} {report['precision']:4} batch {b:2}: affectcam {mine:.2f} ms/image, "
                  f"onnxruntime {ort[b]:.2f} ms/image, ratio {ratio:.2f}x")
for (precision, b), rs in sorted(ratios.items()):
    print(f"median ratio {precision:4} batch {b:2}: {statistics.median(rs):.2f}x over {len(rs)} run(s)")
json.dump(result, open(out, "w"), indent=1)
PY
