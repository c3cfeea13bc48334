#!/usr/bin/env bash
# Compiles paa_core._C with its CUDA sources (sm_80) into a throw-away directory, so the
# in-place CPU build stays untouched, then loads the result to catch unresolved symbols.
# Works without a GPU. Usage: [PYTHON=/path/to/python] tools/check_cuda_build.sh
set -euo pipefail

PYTHON="${PYTHON:-python}"
export FORCE_CUDA=1
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0}"
export MAX_JOBS="${MAX_JOBS:-2}"

for sub in include lib64 bin/nvcc; do
  if [ ! -e "$CUDA_HOME/$sub" ]; then
    echo "check_cuda_build: $CUDA_HOME/$sub not found; set CUDA_HOME to a CUDA toolkit" >&2
    exit 1
  fi
done

# ATen's CUDA headers include cuSPARSE/cuBLAS headers. A minimal toolkit (nvcc + cudart)
# lacks them, but torch's NVIDIA wheels ship the same-version headers: use those then.
if [ ! -e "$CUDA_HOME/include/cusparse.h" ]; then
  wheel_includes="$("$PYTHON" -c 'import glob, os, nvidia; print(":".join(sorted(p for d in nvidia.__path__ for p in glob.glob(os.path.join(d, "*", "include")))))' 2>/dev/null || true)"
  if [ -n "$wheel_includes" ]; then
    echo "check_cuda_build: $CUDA_HOME has no cusparse.h; adding NVIDIA wheel headers $wheel_includes"
    export CPATH="$wheel_includes${CPATH:+:$CPATH}"
  fi
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
