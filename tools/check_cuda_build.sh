#!/usr/bin/env bash
# Compiles paa_core._C with its CUDA sources (sm_80) into a throw-away directory, so the
# in-place CPU build stays untouched, then loads the result to catch unresolved symbols.
# Works without a GPU. Usage: [PYTHON=/path/to/python] tools/check_cuda_build.sh
set -euo pipefail

PYTHON="${PYTHON:-python}"
export FORCE_CUDA=1
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0}"
export MAX_JOBS="${MAX_JOBS:-2}"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
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
"$PYTHON" - "$so" <<'PY'
import importlib.util
import sys

import torch  # noqa: F401  (loads libtorch before the extension)

spec = importlib.util.spec_from_file_location("paa_core._C", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
# Loading the library registered its ops; each must have a CUDA kernel.
ops = sorted(n.split("::")[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("paa_core::"))
missing = [name for name in ops
           if not torch._C._dispatch_has_kernel_for_dispatch_key(f"paa_core::{name}", "CUDA")]
if not ops or missing:
    sys.exit(f"check_cuda_build: ops without a CUDA kernel: {missing or 'no ops registered'}")
print("check_cuda_build: OK, CUDA kernels of:", ", ".join(ops))
PY
