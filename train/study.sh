#!/usr/bin/env bash
# The transfer-learning study behind train/README.md's table: the same data and seed, one
# thing changed per run. Each run writes its own folder under runs/study/; the summary table
# is printed at the end (FER+ Test with Train duplicates removed; DiffusionFER held-out test).
# Usage: train/study.sh [variant ...]   (default: all; "shipped" reproduces weights/)
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared}
# AFFECTCAM=path runs a prebuilt binary (a long study can then run beside edits and rebuilds).
if [ -n "${AFFECTCAM:-}" ]; then
    bin=$AFFECTCAM
else
    bin=./target/release/affectcam
    cargo build --release --quiet
fi
data=(--data "$shared/data/ferplus" --data "$shared/data/diffusionfer")
ours=(--label-mode probability --class-weights sqrt)
# The first study's rows predate augmentation, schedules, weak V/A and logit adjustment (now the
# defaults): these flags keep them as they were run.
before=(--no-augment --lr-schedule constant --warmup-steps 0 --label-smoothing 0 --weak-va 0 --no-logit-adjust)
# The second study adds muxspace (in-the-wild faces, other sources) to training, validation and test.
data3=("${data[@]}" --data "$shared/data/muxspace")

# run NAME EVAL_FLAGS TRAIN_FLAGS...: trains, then evaluates on each source's test split with
# EVAL_FLAGS (e.g. --detect: on crops the live detector makes, as live does).
run() {
    local name=$1 eval_flags=$2; shift 2
    echo "== $name: $*" >&2
    local start=$SECONDS
    "$bin" train --out "runs/study/$name" "$@" 2> "runs/study/$name.log" >/dev/null \
        || { echo "$name failed, see runs/study/$name.log" >&2; return 1; }
    echo $((SECONDS - start)) > "runs/study/$name/wall_seconds"
    local w="runs/study/$name/weights.safetensors"
    # shellcheck disable=SC2086 # eval_flags is a word list
    "$bin" eval --weights "$w" --data "$shared/data/ferplus" $eval_flags \
        --train-data "$shared/data/ferplus" --json "runs/study/$name/eval_ferplus.json" >/dev/null
    # shellcheck disable=SC2086
    "$bin" eval --weights "$w" --data "$shared/data/diffusionfer" $eval_flags \
        --json "runs/study/$name/eval_diffusionfer.json" >/dev/null
    # shellcheck disable=SC2086
    "$bin" eval --weights "$w" --data "$shared/data/muxspace" $eval_flags \
        --json "runs/study/$name/eval_muxspace.json" >/dev/null
}

mkdir -p runs/study
variants=("$@")
[ ${#variants[@]} -eq 0 ] && variants=(study frozen last4 shipped scratch v2 last4-box last4-aligned \
    bal-none bal-weights bal-sampling bal-logit bal-focal bal-weights-logit)
# Rare-class remedies, one at a time, at the cost of the last-4-blocks fine-tune (3 epochs,
# three sources, probability labels, the second study's defaults otherwise).
bal=("${data3[@]}" --label-mode probability --finetune-blocks 4 --epochs 3)
for v in "${variants[@]}"; do
    case $v in
        # The course study's recipe: frozen ImageNet trunk, balanced class weights, 12 epochs.
        study) run study "" "${data[@]}" "${before[@]}" --finetune-blocks 0 --class-weights balanced --epochs 12 ;;
        frozen) run frozen "" "${data[@]}" "${before[@]}" --finetune-blocks 0 "${ours[@]}" --epochs 12 ;;
        last4) run last4 "" "${data[@]}" "${before[@]}" --finetune-blocks 4 "${ours[@]}" --epochs 5 ;;
        shipped) run shipped "" "${data[@]}" "${before[@]}" --finetune-blocks all "${ours[@]}" --epochs 5 ;;
        scratch) run scratch "" "${data[@]}" "${before[@]}" --finetune-blocks all "${ours[@]}" --epochs 2 --init none ;;
        # Second study: + muxspace, augmentation, warm-up + cosine, label smoothing 0.05, weak
        # V/A 0.05, logit adjustment (the defaults).
        v2) run v2 "" "${data3[@]}" --finetune-blocks all "${ours[@]}" --epochs 6 ;;
        # Third: v2's weights (from the v2 run) trained 5 more epochs on a fresh, lower warm-up +
        # cosine (v2's validation loss was still falling when its cosine ended), weak V/A 0.15.
        v3) run v3 "" "${data3[@]}" --finetune-blocks all "${ours[@]}" --init runs/study/v2/weights.safetensors \
            --epochs 5 --lr-trunk 5e-5 --lr-head 5e-4 --warmup-steps 100 --weak-va 0.15 ;;
        # Fourth: v3's trunk frozen, the head retrained on class-balanced draws (the "classifier
        # re-training" of decoupled long-tail learning), on cached features: minutes.
        v4) run v4 "" "${data3[@]}" --finetune-blocks 0 --label-mode probability --init runs/study/v3/weights.safetensors \
            --sampling balanced --no-class-weights --epochs 4 --lr-head 1e-4 --warmup-steps 50 --weak-va 0.15 ;;
        # Fifth: v4's weights (v3's trunk) trained 5 more epochs on a third, lower warm-up +
        # cosine (v3's validation loss was still falling at its last epoch), then, sixth, the
        # head retrained on class-balanced draws as v4 was.
        v5) run v5 "" "${data3[@]}" --finetune-blocks all "${ours[@]}" --init runs/study/v4/weights.safetensors \
            --epochs 5 --lr-trunk 3e-5 --lr-head 3e-4 --warmup-steps 100 --weak-va 0.15 ;;
        v6) run v6 "" "${data3[@]}" --finetune-blocks 0 --label-mode probability --init runs/study/v5/weights.safetensors \
            --sampling balanced --no-class-weights --epochs 4 --lr-head 1e-4 --warmup-steps 50 --weak-va 0.15 ;;
        # Seventh: v6's weights (v5's trunk, the balanced head) trained 4 more epochs on a fourth,
        # lower warm-up + cosine (v5's validation loss was still falling at its last epoch; the
        # run of 2026-12-03 started from the shipped v6 file, the same weights), then, eighth,
        # the head retrained on class-balanced draws as v4 and v6 were.
        v7) run v7 "" "${data3[@]}" --finetune-blocks all "${ours[@]}" --init runs/study/v6/weights.safetensors \
            --epochs 4 --lr-trunk 2e-5 --lr-head 2e-4 --warmup-steps 100 --weak-va 0.15 ;;
        v8) run v8 "" "${data3[@]}" --finetune-blocks 0 --label-mode probability --init runs/study/v7/weights.safetensors \
            --sampling balanced --no-class-weights --epochs 4 --lr-head 1e-4 --warmup-steps 50 --weak-va 0.15 ;;
        # Ninth: v8's weights, the whole network 3 more epochs on class-balanced draws (no class
        # weights; v4, v6 and v8 balanced the head only): the shipped weights. (Run on
        # 2026-12-03 as runs/study/v8-bal-all, renamed v9.)
        v9) run v9 "" "${data3[@]}" --finetune-blocks all --label-mode probability --sampling balanced --no-class-weights \
            --init runs/study/v8/weights.safetensors --epochs 3 --lr-trunk 2e-5 --lr-head 2e-4 --warmup-steps 100 --weak-va 0.15 ;;
        # Tenth (not shipped): the same again from v9's weights.
        v10) run v10 "" "${data3[@]}" --finetune-blocks all --label-mode probability --sampling balanced --no-class-weights \
            --init runs/study/v9/weights.safetensors --epochs 3 --lr-trunk 2e-5 --lr-head 2e-4 --warmup-steps 100 --weak-va 0.15 ;;
        # Eleventh: v10's run taught by EfficientNet-Lite0 lite0-bal-all (half of each emotion target).
        v11) run v11 "" "${data3[@]}" --finetune-blocks all --label-mode probability --sampling balanced --no-class-weights \
            --init runs/study/v9/weights.safetensors --teacher runs/study/lite0-bal-all/weights.safetensors --distill 0.5 \
            --epochs 3 --lr-trunk 2e-5 --lr-head 2e-4 --warmup-steps 100 --weak-va 0.15 ;;
        # One schedule instead of v2 → v5's three: ImageNet to 12 whole-network epochs on one warm-up
        # + cosine (v3's weak V/A 0.15), then the head retrained on class-balanced draws as v4 and
        # v6 were; is v6's three-cosine chain (207 min) needed, or does one run under 3 h do?
        one) run one "" "${data3[@]}" --finetune-blocks all "${ours[@]}" --epochs 12 --weak-va 0.15 ;;
        one-bal) run one-bal "" "${data3[@]}" --finetune-blocks 0 --label-mode probability --init runs/study/one/weights.safetensors \
            --sampling balanced --no-class-weights --epochs 4 --lr-head 1e-4 --warmup-steps 50 --weak-va 0.15 ;;
        # As one, over 16 whole-network epochs (as many as v6's chain had in all): does length, not
        # the restarts, keep the crying woman sad?
        one16) run one16 "" "${data3[@]}" --finetune-blocks all "${ours[@]}" --epochs 16 --weak-va 0.15 ;;
        one16-bal) run one16-bal "" "${data3[@]}" --finetune-blocks 0 --label-mode probability --init runs/study/one16/weights.safetensors \
            --sampling balanced --no-class-weights --epochs 4 --lr-head 1e-4 --warmup-steps 50 --weak-va 0.15 ;;
        # Box against aligned crops, both made by the live detector on every image (training and
        # test), at the cost of the last-4-blocks fine-tune.
        last4-box) run last4-box --detect "${data3[@]}" --detect --finetune-blocks 4 "${ours[@]}" --epochs 3 ;;
        last4-aligned) run last4-aligned --detect "${data3[@]}" --crop aligned --finetune-blocks 4 "${ours[@]}" --epochs 3 ;;
        bal-none) run bal-none "" "${bal[@]}" --no-class-weights --no-logit-adjust ;;
        bal-weights) run bal-weights "" "${bal[@]}" --class-weights sqrt --no-logit-adjust ;;
        bal-sampling) run bal-sampling "" "${bal[@]}" --no-class-weights --sampling balanced --no-logit-adjust ;;
        bal-logit) run bal-logit "" "${bal[@]}" --no-class-weights ;;
        bal-focal) run bal-focal "" "${bal[@]}" --no-class-weights --focal-gamma 2 --no-logit-adjust ;;
        bal-weights-logit) run bal-weights-logit "" "${bal[@]}" --class-weights sqrt ;;
        # Backbones: EfficientNet-Lite0 from its ImageNet weights on bal-weights-logit's recipe.
        lite0-last4) run lite0-last4 "--precision f32" "${bal[@]}" --class-weights sqrt --arch efficientnet-lite0 ;;
        # EfficientNet-Lite0 through one's schedule (the whole network, 12 epochs from ImageNet):
        # do its stronger ImageNet features pay once every block learns?
        lite0-one) run lite0-one "--precision f32" "${data3[@]}" --arch efficientnet-lite0 --finetune-blocks all "${ours[@]}" \
            --epochs 12 --weak-va 0.15 ;;
        lite0-one-bal) run lite0-one-bal "--precision f32" "${data3[@]}" --arch efficientnet-lite0 --finetune-blocks 0 --label-mode probability \
            --init runs/study/lite0-one/weights.safetensors --sampling balanced --no-class-weights --epochs 4 --lr-head 1e-4 \
            --warmup-steps 50 --weak-va 0.15 ;;
        # Then v9's step on Lite0: the whole network 3 more epochs on class-balanced draws.
        lite0-bal-all) run lite0-bal-all "--precision f32" "${data3[@]}" --arch efficientnet-lite0 --finetune-blocks all \
            --label-mode probability --sampling balanced --no-class-weights --init runs/study/lite0-one-bal/weights.safetensors \
            --epochs 3 --lr-trunk 2e-5 --lr-head 2e-4 --warmup-steps 100 --weak-va 0.15 ;;
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

python3 - <<'PY'
import json, os
# Rare-class remedies: macro-F1 and balanced accuracy per source, and FER+'s rare-class recall.
names = ["bal-none", "bal-weights", "bal-sampling", "bal-logit", "bal-focal", "bal-weights-logit"]
rows = []
for name in names:
    d = f"runs/study/{name}"
    if not os.path.exists(f"{d}/eval_muxspace.json"):
        continue
    fer = json.load(open(f"{d}/eval_ferplus.json"))["leakage"]["without_duplicates"]["classification"]
    mux = json.load(open(f"{d}/eval_muxspace.json"))["classification"]
    dif = json.load(open(f"{d}/eval_diffusionfer.json"))["classification"]
    recall = {c["class"]: c["recall"] for c in fer["per_class"]}
    adjust = f"{d}/logit_adjustment.json"
    tau = json.load(open(adjust))["tau"] if os.path.exists(adjust) else None
    rows.append((name, fer, mux, dif, recall, tau))
if rows:
    print()
    print("| run | τ | FER+ acc | FER+ F1 | FER+ bal. acc | muxspace F1 | muxspace bal. acc | DiffusionFER F1 | mean F1 | FER+ recall disgust / fear / anger / contempt |")
    print("|---|---|---|---|---|---|---|---|---|---|")
for name, fer, mux, dif, recall, tau in rows:
    mean = (fer["f1_macro"] + mux["f1_macro"] + dif["f1_macro"]) / 3
    r = " / ".join(f"{recall.get(c, float('nan')):.2f}" for c in ["disgust", "fear", "anger", "contempt"])
    t = "–" if tau is None else f"{tau:g}"
    print(f"| {name} | {t} | {fer['accuracy']:.3f} | {fer['f1_macro']:.3f} | {fer['balanced_accuracy']:.3f} "
          f"| {mux['f1_macro']:.3f} | {mux['balanced_accuracy']:.3f} | {dif['f1_macro']:.3f} | {mean:.3f} | {r} |")
PY
