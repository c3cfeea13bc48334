#!/usr/bin/env bash
# Sets up everything paa_core needs, idempotently, in <repo>/.venv:
#   1. a Python 3.11 virtual environment (reused when it exists),
#   2. the pinned packages of requirements.txt (plus requirements-test.txt with --test,
#      requirements-viz.txt, the optional plotting library, with --viz),
#   3. the compiled ops: `pip install -e . --no-build-isolation`.
# A step whose inputs have not changed since it last succeeded is skipped (hashes of the
# requirement files and of setup.py + csrc/ are kept in .venv/). CUDA ops are built when
# a GPU is visible or FORCE_CUDA=1 (see INSTALL.md).
#
#   bash tools/setup_env.sh [--test] [--viz]   PYTHON=python3.11 picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

with_test=0
with_viz=0
for arg in "$@"; do
  case "$arg" in
    --test) with_test=1 ;;
    --viz) with_viz=1 ;;
    *) echo "setup_env.sh: unknown argument '$arg' (expected --test or --viz)" >&2; exit 2 ;;
  esac
done

venv="$PWD/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
  echo "== creating .venv with $python ($("$python" --version 2>&1))"
  "$python" -m venv "$venv"
fi
py="$venv/bin/python"

# Runs "$@" unless the stamp file $1 already holds hash $2; records the hash on success.
run_once() {
  local stamp="$venv/.$1" hash="$2"
  shift 2
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ]; then
    return 0
  fi
  "$@"
  echo "$hash" > "$stamp"
}

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

install_requirements() {
  echo "== installing $*"
  local args=()
  for f in "$@"; do args+=(-r "$f"); done
  "$py" -m pip install --quiet "${args[@]}"
}

req_files=(requirements.txt)
[ "$with_test" = 1 ] && req_files+=(requirements-test.txt)
[ "$with_viz" = 1 ] && req_files+=(requirements-viz.txt)
run_once "requirements-test${with_test}-viz${with_viz}.sha256" "$(hash_of "${req_files[@]}")" install_requirements "${req_files[@]}"

build() {
  echo "== building paa_core and its ops (pip install -e . --no-build-isolation)"
  "$py" -m pip install --quiet --no-deps --no-build-isolation -e .
}
mapfile -t sources < <(find csrc -type f | sort)
sources=(setup.py "${sources[@]}")
build_hash="$(hash_of "${sources[@]}")-cuda${FORCE_CUDA:-0}"
# The stamp alone is not enough: a fresh checkout of the same sources has no paa_core/_C*.so.
if ! (cd / && "$py" -c "import paa_core._C" 2>/dev/null); then
  rm -f "$venv/.build.sha256"
fi
run_once build.sha256 "$build_hash" build
echo "== environment ready: $py ($("$py" -c 'import torch; print("torch", torch.__version__)'))"
