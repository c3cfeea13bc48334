#!/usr/bin/env bash
# Downloads the wheels dev/check_gpu.sh installs on the GPU machine, which has no network:
# those of paa_core's needs its image lacks (yacs, pycocotools) and pytest-timeout (there
# too today, and 14 kB: check_gpu.sh's per-test limit must not hang on an image without it),
# for CPython 3.12 on x86-64, into gpu_carry/wheels (DEST moves it). dev/prepare_gpu_run.sh
# calls it; run it alone where pip reaches PyPI to add a package:
#   bash dev/fetch_gpu_wheels.sh                         # the default set
#   bash dev/fetch_gpu_wheels.sh yacs==0.1.8 tqdm        # these instead
# Each wheel comes without its dependencies (--no-deps, as check_gpu.sh installs them): name
# the missing ones too, and keep one version of each package in the folder.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
PY_VERSION="${PY_VERSION:-3.12}"
DEST="${DEST:-gpu_carry/wheels}"
packages=("$@")
[ "${#packages[@]}" -eq 0 ] && packages=(yacs==0.1.8 pycocotools==2.0.11 pytest-timeout==2.4.0)

mkdir -p "$DEST"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$DEST" \
  --python-version "$PY_VERSION" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  "${packages[@]}"
ls -l "$DEST"
