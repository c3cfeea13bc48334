#!/usr/bin/env bash
# Fills wheels/ (git-ignored) with the wheels tools/check_gpu.sh installs on a GPU machine
# that has no network: by default those of paa_core's needs that PyTorch images tend to lack
# (yacs, pycocotools). Run it where pip reaches PyPI; name more packages to add them, e.g.
#   bash tools/fetch_gpu_wheels.sh                      # yacs, pycocotools for CPython 3.12
#   PY_VERSION=3.11 bash tools/fetch_gpu_wheels.sh pytest==8.3.5 pluggy iniconfig
# Each wheel comes without its dependencies (--no-deps, as check_gpu.sh installs them): name
# the missing ones too. Keep one version of each package in wheels/.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
PY_VERSION="${PY_VERSION:-3.12}"
packages=("$@")
[ "${#packages[@]}" -eq 0 ] && packages=(yacs==0.1.8 pycocotools==2.0.11)

mkdir -p wheels
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest wheels \
  --python-version "$PY_VERSION" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  "${packages[@]}"
ls -l wheels
