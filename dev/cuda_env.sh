# shellcheck shell=bash
# Sourced by dev/check_cuda_build.sh and dev/check_gpu.sh before compiling paa_core._C
# with CUDA: picks CUDA_HOME (torch's own choice, else /usr/local/cuda), checks that it
# holds a toolkit, and where it lacks the cuSPARSE/cuBLAS headers that ATen's CUDA headers
# include (a minimal toolkit: nvcc + cudart) adds those of torch's NVIDIA wheels, which are
# the same version. Needs PYTHON set to the interpreter that holds torch.
if [ -z "${CUDA_HOME:-}" ]; then
  CUDA_HOME="$("$PYTHON" -c 'from torch.utils.cpp_extension import CUDA_HOME; print(CUDA_HOME or "")' 2>/dev/null || true)"
  CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
fi
export CUDA_HOME
for sub in include bin/nvcc; do
  if [ ! -e "$CUDA_HOME/$sub" ]; then
    echo "cuda_env: $CUDA_HOME/$sub not found; set CUDA_HOME to a CUDA toolkit" >&2
    exit 1
  fi
done
if [ ! -e "$CUDA_HOME/include/cusparse.h" ]; then
  wheel_includes="$("$PYTHON" -c 'import glob, os, nvidia; print(":".join(sorted(p for d in nvidia.__path__ for p in glob.glob(os.path.join(d, "*", "include")))))' 2>/dev/null || true)"
  if [ -n "$wheel_includes" ]; then
    echo "cuda_env: $CUDA_HOME has no cusparse.h; adding NVIDIA wheel headers $wheel_includes"
    export CPATH="$wheel_includes${CPATH:+:$CPATH}"
  fi
fi
