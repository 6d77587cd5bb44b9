#!/usr/bin/env bash
# CI's CUDA build: compiles `--features cuda` on a machine with no GPU and no driver (and
# lints it), then smoke-tests that binary: --help, `predict --device cpu` gives the CPU build's output,
# `--device cuda` ends in one clear line, and the self-check passes on the CPU.
#
#   scripts/ci-cuda.sh            # after `cargo build --release` (the CPU build to compare with)
#
# The toolchain is nvcc 13.0 and the CUDA headers from PyPI wheels plus link-time stubs
# (../shared/cuda/setup-cuda.sh, into $CUDA_BUILD_PREFIX). The build goes to target/cuda so
# it leaves the CPU build's artifacts alone. With an installed CUDA toolkit instead, see the
# README ("GPU").
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d ../shared ]; then
    # Like the tests: skipped in a user's clone, a failure in CI.
    echo "ci-cuda: ../shared is absent (toolchain script, sample photo): CUDA build not tested" >&2
    [ "${CI:-}" = true ] && exit 1
    exit 0
fi
prefix=${CUDA_BUILD_PREFIX:-$HOME/.cache/cuda13-build}
if [ ! -f "$prefix/env.sh" ]; then
    cargo fetch --quiet # setup-cuda.sh reads cudarc's sources for its stub symbols
    # --target keeps the wheels out of any Python environment (Debian marks its own
    # environment externally managed).
    PIP_BREAK_SYSTEM_PACKAGES=1 bash ../shared/cuda/setup-cuda.sh "$prefix"
fi
(
    # shellcheck source=/dev/null
    source "$prefix/env.sh"
    cargo build --release --features cuda --target-dir target/cuda --bin affectcam
    # The CUDA-only code is clippy-clean too (the README's clippy sees the CPU build).
    cargo clippy --release --features cuda --target-dir target/cuda --all-targets -- -D warnings
)
cuda_bin=target/cuda/release/affectcam
cpu_bin=target/release/affectcam
[ -x "$cpu_bin" ] || cargo build --release --bin affectcam
# The stubs stand in for the driver and cuBLAS/cuRAND: every call fails, so CUDA is absent.
export LD_LIBRARY_PATH=$prefix/run-nogpu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
photo=../shared/samples/grace_hopper.jpg

"$cuda_bin" --help > /dev/null
cpu=$("$cpu_bin" predict --device cpu --json "$photo")
cuda=$("$cuda_bin" predict --device cpu --json "$photo")
if [ "$cpu" != "$cuda" ]; then
    printf 'the CUDA build predicts differently on the CPU:\n  cpu build:  %s\n  cuda build: %s\n' "$cpu" "$cuda" >&2
    exit 1
fi
auto=$("$cuda_bin" predict --device auto --json "$photo")
[ "$auto" = "$cpu" ] || { echo "--device auto did not fall back to the CPU" >&2; exit 1; }
if err=$("$cuda_bin" predict --device cuda --json "$photo" 2>&1); then
    echo "--device cuda succeeded on a machine without a GPU" >&2
    exit 1
fi
if [ "$(printf '%s\n' "$err" | wc -l)" -ne 1 ]; then
    printf -- '--device cuda without a GPU should end in one line, got:\n%s\n' "$err" >&2
    exit 1
fi
"$cuda_bin" selftest --device cpu --reps 1 --batches 1 --train-batches 0 > /dev/null
echo "cuda build: ok (no GPU here: '$err')"
