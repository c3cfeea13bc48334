#!/usr/bin/env bash
# Prepares a run of dev/check_gpu.sh on the lent GPU machine, here, where time is cheap:
#   1. a side virtual environment (.venv-device, git-ignored; VENV_DEVICE moves it) with that
#      machine's stack exactly (dev/gpu_stack.txt: Python 3.12 from pyenv, torch 2.11.0,
#      torchvision 0.26.0) plus requirements.txt and requirements-test.txt without their
#      torch pins; installed once, again only when those files change;
#   2. paa_core._C compiled with CUDA for sm_90 (H100/H200) against that torch, in a scratch
#      folder (dev/check_cuda_build.sh: the in-place CPU build stays), checked to load with
#      a CUDA kernel for every op; compiled again only when setup.py, csrc/ or torch changed;
#   3. the wheels that machine lacks (yacs, pycocotools, pytest-timeout: dev/fetch_gpu_wheels.sh);
#   4. the CPU test suite under that stack, run in a copy of the tree as it travels, with the
#      library of step 2 in place (PYTEST_ARGS: a selection, e.g. -m "not slow"; --no-tests
#      skips it, for a quick re-pack);
#   5. gpu_carry/ (git-ignored, at most 40 MiB): the library, the wheels and manifest.json
#      (commit, sha256 of the sources built, torch, arch, the suite's result); then prints
#      the device call that carries it.
#
#   bash dev/prepare_gpu_run.sh [--no-tests]
#
# PYTHON312 names the interpreter (default: pyenv's 3.12); MAX_JOBS the compile jobs (2).
# Heavy steps run at nice 5: this machine's other jobs keep their share.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

run_tests=1
for arg in "$@"; do
  case "$arg" in
    --no-tests) run_tests=0 ;;
    *) echo "prepare_gpu_run.sh: unknown argument '$arg' (expected --no-tests)" >&2; exit 2 ;;
  esac
done

stack_file=dev/gpu_stack.txt
py_version="$(sed -n 's/^python==//p' "$stack_file")"
if [ -z "$py_version" ]; then
  echo "prepare_gpu_run.sh: $stack_file has no 'python==X.Y' line" >&2
  exit 1
fi
venv="${VENV_DEVICE:-$repo/.venv-device}"
carry="$repo/gpu_carry"
arch=9.0
max_carry_mib=40
timings=()

# Seconds since $1 (a value of $SECONDS), recorded under the name $2 for the closing table.
took() { timings+=("$2: $((SECONDS - $1)) s"); }

# The interpreter for the side environment: PYTHON312, else pyenv's newest $py_version.x.
find_python() {
  if [ -n "${PYTHON312:-}" ]; then
    echo "$PYTHON312"
    return
  fi
  local found
  found="$(printf '%s\n' "$HOME"/.pyenv/versions/"$py_version".*/bin/python | grep -v '\*' | sort -V | tail -n 1)"
  if [ -z "$found" ] && command -v pyenv > /dev/null; then
    found="$(PYENV_VERSION="$(pyenv versions --bare | grep -E "^${py_version//./\\.}\.[0-9]+$" | sort -V | tail -n 1)" \
      pyenv which python 2>/dev/null || true)"
  fi
  echo "${found:-$(command -v "python$py_version" || true)}"
}

# ---------------------------------------------------------------- 1. the environment
if [ ! -x "$venv/bin/python" ]; then
  python="$(find_python)"
  if [ -z "$python" ] || ! "$python" -c "import sys; assert '%d.%d' % sys.version_info[:2] == '$py_version'" 2>/dev/null; then
    echo "prepare_gpu_run.sh: no Python $py_version found (pyenv install $py_version, or set PYTHON312)" >&2
    exit 1
  fi
  echo "== creating $venv with $python ($("$python" --version 2>&1))"
  start=$SECONDS
  "$python" -m venv "$venv"
  took "$start" "venv created"
fi
py="$venv/bin/python"

# The stack's pins, then paa_core's requirements without their torch and torchvision pins.
requirements="$venv/requirements-device.txt"
{
  grep -vE '^(#|python==|$)' "$stack_file"
  cat requirements.txt requirements-test.txt | grep -vE '^(#|$)' | grep -vE '^(torch|torchvision)([=<>!~ ]|$)'
} > "$requirements.new"
stamp="$venv/.requirements.sha256"
want="$(sha256sum < "$requirements.new" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "== installing into $venv: $(grep -vE '^#' "$requirements.new" | tr '\n' ' ')"
  start=$SECONDS
  nice -n 5 "$py" -m pip install --quiet -r "$requirements.new"
  took "$start" "packages installed"
  echo "$want" > "$stamp"
fi
mv "$requirements.new" "$requirements"
# The stack must be what was asked for, not a resolver's compromise.
"$py" - "$stack_file" <<'PY'
import sys
from importlib.metadata import version

pins = [line.strip().split("==") for line in open(sys.argv[1]) if "==" in line and not line.startswith("#")]
wrong = []
for name, wanted in pins:
    have = ".".join(map(str, sys.version_info[:2])) if name == "python" else version(name).split("+")[0]
    if have != wanted:
        wrong.append(f"{name} {have} (wanted {wanted})")
if wrong:
    sys.exit(f"prepare_gpu_run.sh: the side environment differs from {sys.argv[1]}: {', '.join(wrong)}")
print("== stack:", ", ".join(f"{n} {w}" for n, w in pins))
PY

# ---------------------------------------------------------------- 2. the CUDA library
sources="$("$py" dev/cuda_lib.py sources)"
torch_version="$("$py" -c 'import torch; print(torch.__version__)')"
lib=""
earlier_suite=""  # kept in the manifest of a re-pack with --no-tests
if [ -f "$carry/manifest.json" ]; then
  earlier_suite="$("$py" - "$carry/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
suite, marker = m.get("cpu_suite", ""), "; earlier: "
print(suite.split(marker, 1)[1] if marker in suite else f"{suite} at {m['commit'][:12]}")
PY
)"
  lib="$("$py" - "$carry" "$sources" "$torch_version" "$arch" <<'PY'
import json, os, sys
folder, sources, torch_version, arch = sys.argv[1:]
m = json.load(open(os.path.join(folder, "manifest.json")))
lib = os.path.join(folder, m["library"])
same = (m["sources_sha256"], m["torch"], m["cuda_arch"]) == (sources, torch_version, arch)
print(lib if same and os.path.exists(lib) else "")
PY
)"
fi
if [ -n "$lib" ]; then
  echo "== $lib is already built from these sources for sm_${arch/./} and torch $torch_version"
else
  staging="$(mktemp -d)"
  trap 'rm -rf "$staging"' EXIT
  echo "== compiling paa_core._C with CUDA for sm_${arch/./} (MAX_JOBS=${MAX_JOBS:-2}; minutes)"
  start=$SECONDS
  nice -n 5 env PYTHON="$py" TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS="${MAX_JOBS:-2}" LIB_DEST="$staging" \
    bash dev/check_cuda_build.sh
  took "$start" "CUDA build (sm_${arch/./})"
  rm -rf "$carry"
  mkdir -p "$carry"
  lib="$carry/$(basename "$staging"/_C*.so)"
  mv "$staging"/_C*.so "$lib"
fi

# ---------------------------------------------------------------- 3. wheels
start=$SECONDS
rm -rf "$carry/wheels"
PYTHON="$py" DEST="$carry/wheels" bash dev/fetch_gpu_wheels.sh > /dev/null
took "$start" "wheels fetched"
echo "== wheels for the GPU machine: $(cd "$carry/wheels" && echo *.whl)"

# ---------------------------------------------------------------- 4. the CPU suite
suite="not run (--no-tests)"
if [ "$run_tests" = 0 ] && [ -n "$earlier_suite" ]; then
  suite="$suite; earlier: $earlier_suite"
fi
if [ "$run_tests" = 1 ]; then
  # The tree as the GPU machine gets it: tracked files and untracked ones git does not ignore.
  tree="$(mktemp -d)"
  trap 'rm -rf "$tree" "${staging:-}"' EXIT
  git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -P -t "$tree"
  cp "$lib" "$tree/paa_core/"
  read -r -a selection <<< "${PYTEST_ARGS:-}"
  echo "== CPU test suite under the side environment (pytest tests ${selection[*]}), in $tree"
  start=$SECONDS
  set +e
  (cd "$tree" && PYTHONPATH="$tree" nice -n 5 "$py" -m pytest tests -q -p no:cacheprovider "${selection[@]}" 2>&1) \
    | tee "$venv/cpu_suite.log"
  status=${PIPESTATUS[0]}
  set -e
  took "$start" "CPU suite"
  suite="$(grep -E '^=*.*(passed|failed|error).* in [0-9.]+s' "$venv/cpu_suite.log" | tail -n 1 | tr -d '=' | xargs)"
  suite="${suite:-no summary} (pytest tests${selection[*]:+ ${selection[*]}}, torch $torch_version, Python $py_version)"
fi

# ---------------------------------------------------------------- 5. manifest, size, the call
commit="$(git rev-parse HEAD)"
dirty=()
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  dirty=(--dirty)
fi
"$py" dev/cuda_lib.py manifest "$lib" --arch "$arch" --out "$carry/manifest.json" \
  --commit "$commit" "${dirty[@]}" --wheels "$carry/wheels" --cpu-suite "$suite"
if [ "$("$py" dev/cuda_lib.py sources)" != "$sources" ]; then
  rm "$carry/manifest.json"
  echo "prepare_gpu_run.sh: setup.py or csrc/ changed while the library was built: run it again" >&2
  exit 1
fi
size_kib="$(du -sk "$carry" | cut -f1)"
if [ "$size_kib" -gt $((max_carry_mib * 1024)) ]; then
  echo "prepare_gpu_run.sh: $carry is $((size_kib / 1024)) MiB, over its ${max_carry_mib} MiB" >&2
  exit 1
fi

echo
echo "== timings: $(IFS=';'; echo "${timings[*]:-nothing to do}")"
echo "== CPU suite: $suite"
echo "== gpu_carry/: $((size_kib / 1024)).$(((size_kib % 1024) * 10 / 1024)) MiB ($(cd "$carry" && echo *))"
if [ "${status:-0}" -ne 0 ]; then
  echo "prepare_gpu_run.sh: the CPU suite failed under the device stack (log: $venv/cpu_suite.log)" >&2
  exit 1
fi
if [ "${#dirty[@]}" -gt 0 ]; then
  echo "== WARNING: the tree has uncommitted changes: commit them, then rerun with --no-tests," \
    "so that PAA_COMMIT names what runs"
fi
echo "== the device call (carry the folder; the script keeps inside its 420 s budget):"
echo "   command:   PAA_COMMIT=$commit PYTHON=python3 bash dev/check_gpu.sh"
echo '   carry:     ["gpu_carry"]'
echo "   timeout_s: 540"
