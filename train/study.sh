#!/usr/bin/env bash
# The transfer-learning study behind train/README.md's table: the same data and seed, one
# thing changed per run. Each run writes its own folder under runs/study/; the summary table
# is printed at the end (FER+ Test with Train duplicates removed; DiffusionFER held-out test).
# Usage: train/study.sh [variant ...]   (default: all; "shipped" reproduces weights/)
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared}
bin=./target/release/affectcam
cargo build --release --quiet
data=(--data "$shared/data/ferplus" --data "$shared/data/diffusionfer")
ours=(--label-mode probability --class-weights sqrt)

run() {
    local name=$1; shift
    echo "== $name: $*" >&2
    local start=$SECONDS
    "$bin" train "${data[@]}" --out "runs/study/$name" "$@" 2> "runs/study/$name.log" >/dev/null \
        || { echo "$name failed, see runs/study/$name.log" >&2; return 1; }
    echo $((SECONDS - start)) > "runs/study/$name/wall_seconds"
    "$bin" eval --weights "runs/study/$name/weights.safetensors" --data "$shared/data/ferplus" \
        --train-data "$shared/data/ferplus" --json "runs/study/$name/eval_ferplus.json" >/dev/null
    "$bin" eval --weights "runs/study/$name/weights.safetensors" --data "$shared/data/diffusionfer" \
        --json "runs/study/$name/eval_diffusionfer.json" >/dev/null
}

mkdir -p runs/study
variants=("$@")
[ ${#variants[@]} -eq 0 ] && variants=(study frozen last4 shipped scratch)
for v in "${variants[@]}"; do
    case $v in
        # The course study's recipe: frozen ImageNet trunk, balanced class weights, 12 epochs.
        study) run study --finetune-blocks 0 --class-weights balanced --epochs 12 ;;
        frozen) run frozen --finetune-blocks 0 "${ours[@]}" --epochs 12 ;;
        last4) run last4 --finetune-blocks 4 "${ours[@]}" --epochs 5 ;;
        shipped) run shipped --finetune-blocks all "${ours[@]}" --epochs 5 ;;
        scratch) run scratch --finetune-blocks all "${ours[@]}" --epochs 2 --init none ;;
        *) echo "unknown variant $v" >&2; exit 2 ;;
    esac
done

python3 - <<'PY'
import json, os, csv
print("| run | FER+ acc | FER+ macro-F1 | FER+ κ | FER+ AUC | valence CCC | arousal CCC | best epoch | train wall time |")
print("|---|---|---|---|---|---|---|---|---|")
for name in ["study", "frozen", "last4", "shipped", "scratch"]:
    d = f"runs/study/{name}"
    if not os.path.exists(f"{d}/eval_ferplus.json"):
        continue
    fer = json.load(open(f"{d}/eval_ferplus.json"))["leakage"]["without_duplicates"]["classification"]
    dif = json.load(open(f"{d}/eval_diffusionfer.json"))
    hist = list(csv.DictReader(open(f"{d}/history.csv")))
    best = min(hist, key=lambda r: float(r["val_loss"]))["epoch"]
    minutes = int(open(f"{d}/wall_seconds").read()) / 60  # whole train command, caching included
    f = lambda x: "n/a" if x is None else f"{x:.3f}"
    print(f"| {name} | {f(fer['accuracy'])} | {f(fer['f1_macro'])} | {f(fer['cohen_kappa'])} | {f(fer['auc_ovr'])} "
          f"| {f(dif['valence']['ccc'])} | {f(dif['arousal']['ccc'])} | {best} | {minutes:.0f} min |")
PY
