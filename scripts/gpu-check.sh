#!/usr/bin/env bash
# The GPU check, run from this repository's root on a machine with an NVIDIA GPU and its
# driver, CUDA 13 runtime libraries (libcudart.so.13, libcublas.so.13, libcublasLt.so.13,
# libcurand.so.10) and no Rust toolchain, with gpu-check/ from scripts/gpu-pack.sh:
#
#   scripts/gpu-check.sh [OUT_DIR]        # default: $OUT, else gpu-check/out
#
# 1. `selftest --device cuda`: every custom op against the CPU reference, inference at batch
#    1/32/256, a full training step at batch 32/256, peak GPU memory;
# 2. `eval` of the shipped weights on FER+ Test on the GPU and on the CPU in f32 (same metrics?);
# 3. one `train --device cuda` epoch over FER+ Valid's 3.5k images as training data, timed.
# Writes OUT_DIR/gpu-check.json (and each step's own output beside it). About 3 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu-check/out}}
work=gpu-check/run
mkdir -p "$out" "$work"
log() { echo "== $*" >&2; }
now() { date +%s.%N; }

bin=$work/affectcam
xz -dc gpu-check/affectcam.cuda.xz > "$bin" && chmod +x "$bin" || { echo "no gpu-check/affectcam.cuda.xz: run scripts/gpu-pack.sh first" >&2; exit 1; }
tar -C "$work" -xf gpu-check/ferplus-test-valid.tar
data=$work/ferplus
rm -rf "$data/FER2013Train" && cp -r "$data/FER2013Valid" "$data/FER2013Train"
(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true) > "$out/gpu.txt" 2>&1
ldd "$bin" > "$out/ldd.txt" 2>&1

step() { # NAME TIMEOUT COMMAND...: runs it, keeps its output and rc and time
    local name=$1 limit=$2; shift 2
    log "$name"
    local t0; t0=$(now)
    timeout "$limit" "$@" > "$out/$name.txt" 2>&1
    local rc=$?
    echo "$rc $(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')" > "$out/$name.rc"
    tail -n 40 "$out/$name.txt" >&2
}
step selftest 240 "$bin" selftest --device cuda --json "$out/selftest.json"
step eval_cuda 120 "$bin" eval --device cuda --data "$data" --split test --json "$out/eval_cuda.json" --out "$work/eval_cuda"
step eval_cpu 240 "$bin" eval --device cpu --precision f32 --data "$data" --split test --json "$out/eval_cpu.json" --out "$work/eval_cpu"
step eval_auto 120 "$bin" eval --device auto --data "$data" --split test --json "$out/eval_auto.json" --out "$work/eval_auto"
step train_epoch 240 "$bin" train --device cuda --data "$data" --label-mode probability --init none \
    --epochs 1 --batch-size 128 --no-logit-adjust --out "$work/train" --cache-dir "$work/cache"

python3 - "$out" <<'PY' || echo "python3 missing: the results are in $out/*.json and *.rc" >&2
import json, os, sys
out = sys.argv[1]
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
def rc(name):
    try:
        code, secs = open(os.path.join(out, name + ".rc")).read().split()
        return {"rc": int(code), "seconds": float(secs)}
    except (OSError, ValueError):
        return None
def numbers(report, prefix=""):
    """Every numeric leaf of a JSON report, by dotted path (lists by index)."""
    flat = {}
    items = report.items() if isinstance(report, dict) else enumerate(report or [])
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            flat[key] = v
        elif isinstance(v, (dict, list)):
            flat.update(numbers(v, key + "."))
    return flat
cuda, cpu = load("eval_cuda.json"), load("eval_cpu.json")
differ = None
if cuda and cpu:
    a, b = numbers(cuda.get("metrics", cuda)), numbers(cpu.get("metrics", cpu))
    differ = {k: [a[k], b.get(k)] for k in a if k in b and round(a[k], 3) != round(b[k], 3)}
result = {
    "gpu": open(os.path.join(out, "gpu.txt")).read().strip(),
    "steps": {s: rc(s) for s in ["selftest", "eval_cuda", "eval_cpu", "eval_auto", "train_epoch"]},
    "selftest": load("selftest.json"),
    "eval_metrics_differing_at_3_decimals": differ,
    "auto_picked_the_gpu": "model on cuda" in open(os.path.join(out, "eval_auto.txt")).read(),
    "eval_cuda": cuda,
    "train_epoch_log_tail": open(os.path.join(out, "train_epoch.txt")).read()[-3000:],
}
with open(os.path.join(out, "gpu-check.json"), "w") as f:
    json.dump(result, f, indent=1)
print(json.dumps({k: result[k] for k in ["gpu", "steps", "eval_metrics_differing_at_3_decimals", "auto_picked_the_gpu"]}, indent=1))
PY
