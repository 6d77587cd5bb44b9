#!/usr/bin/env bash
# Prepares the GPU check for a machine with an NVIDIA GPU but no Rust toolchain: builds the
# CUDA binary (scripts/ci-cuda.sh's toolchain), strips and compresses it, and packs FER+ Test
# and Valid from ../shared, into gpu-check/ (ignored by git; 42 MB). Carry gpu-check/
# to the GPU machine's copy of this repository and run scripts/gpu-check.sh there.
#
#   scripts/gpu-pack.sh [CUDA_COMPUTE_CAP]    # default 90 (H100/H200); a laptop GPU: its own, e.g. 86
set -euo pipefail
cd "$(dirname "$0")/.."
export CUDA_COMPUTE_CAP=${1:-${CUDA_COMPUTE_CAP:-90}}
prefix=${CUDA_BUILD_PREFIX:-$HOME/.cache/cuda13-build}
if [ ! -f "$prefix/env.sh" ]; then
    cargo fetch --quiet
    PIP_BREAK_SYSTEM_PACKAGES=1 bash ../shared/cuda/setup-cuda.sh "$prefix"
fi
(
    # shellcheck source=/dev/null
    source "$prefix/env.sh"
    cargo build --release --features cuda --target-dir target/cuda --bin affectcam
)
mkdir -p gpu-check
strip -o gpu-check/affectcam.cuda target/cuda/release/affectcam
xz -T2 -6 -f gpu-check/affectcam.cuda
tar -C ../shared/data -cf gpu-check/ferplus-test-valid.tar \
    ferplus/FER2013Test ferplus/FER2013Valid ferplus/LICENSE-FERPlus-labels.md
du -sh gpu-check/*
