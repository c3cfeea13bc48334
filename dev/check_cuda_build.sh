#!/usr/bin/env bash
# Compiles paa_core._C with its CUDA sources (sm_80 unless TORCH_CUDA_ARCH_LIST says
# otherwise) into a throw-away directory, so the in-place CPU build stays untouched, then
# loads the result to catch unresolved symbols and checks that every op has a CUDA kernel
# (dev/cuda_lib.py ops; the CPU-only Winograd transforms aside). Works without a GPU.
# LIB_DEST=<dir> keeps the library there (dev/prepare_gpu_run.sh does, for the GPU machine).
# Usage: [PYTHON=/path/to/python] [LIB_DEST=dir] dev/check_cuda_build.sh
set -euo pipefail

PYTHON="${PYTHON:-python}"
export FORCE_CUDA=1
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0}"
export MAX_JOBS="${MAX_JOBS:-2}"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
# shellcheck source=dev/cuda_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/cuda_env.sh"
if [ ! -e "$CUDA_HOME/lib64" ]; then
  echo "check_cuda_build: $CUDA_HOME/lib64 not found; set CUDA_HOME to a CUDA toolkit" >&2
  exit 1
fi

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

cd "$repo"
echo "check_cuda_build: compiling with CUDA_HOME=$CUDA_HOME arch=$TORCH_CUDA_ARCH_LIST in $scratch"
"$PYTHON" setup.py build_ext --build-temp "$scratch/temp" --build-lib "$scratch/lib"

so="$(find "$scratch/lib" -name '_C*.so' | head -n 1)"
if [ -z "$so" ]; then
  echo "check_cuda_build: no _C*.so was produced" >&2
  exit 1
fi
"$PYTHON" dev/cuda_lib.py ops "$so"
if [ -n "${LIB_DEST:-}" ]; then
  mkdir -p "$LIB_DEST"
  cp "$so" "$LIB_DEST/"
  echo "check_cuda_build: kept $(basename "$so") in $LIB_DEST"
fi
