#!/usr/bin/env bash
# The device check: proves paa_core's GPU path on a machine with one NVIDIA GPU and measures
# it, inside a fixed time budget, for a machine that is lent for minutes and has no network.
#
#   PAA_COMMIT=<sha> PYTHON=python3 bash dev/check_gpu.sh  # on the GPU machine, with gpu_carry/
#   bash dev/check_gpu.sh --smoke        # on any CPU machine: the same steps at tiny sizes (CI)
#   bash dev/check_gpu.sh --list-tests   # the test files it runs
#
# dev/prepare_gpu_run.sh makes gpu_carry/ beforehand and prints the call. The budget is
# BUDGET_S seconds (default 420) for the whole script: each step has its own limit, cut to
# what is left, and a step that no longer has its minimum is skipped with a line in the
# report. The steps:
#   1. preflight (dev/gpu_preflight.py): GPU, driver, torch/CUDA, nvcc, ninja, compiler,
#      Python headers, the carried library, the commit (git's, else PAA_COMMIT);
#   2. packages the interpreter lacks, installed without network from gpu_carry/wheels into
#      build/gpu_check/site, which goes first on PYTHONPATH;
#   3. the library: gpu_carry's prebuilt paa_core._C, copied in place when
#      `dev/cuda_lib.py verify` accepts it (same sources, Python and torch, machine code for
#      this GPU, a CUDA NMS that runs); else built for the GPU's compute capability
#      (build.log), and a failed build ends the check. --smoke keeps the CPU build;
#   4. the tests: the device-parametrised test files below, by name, `-k cuda` (PYTEST_ARGS
#      replaces that selection), with a per-test limit when pytest-timeout is there;
#   5. the benchmarks (argument lists below); each prints its targets as lines
#      `TARGET <what> | <target> | <measured> | <yes|no>`, which dev/gpu_check_targets.py
#      gathers into the report's table.
# Every step's output streams into gpu_check.log as it runs, so a step killed at its limit
# leaves what it printed. What comes back lies in $OUT (else output/): gpu_check.md (the
# report), gpu_check.log, tests.xml (JUnit) and build.log (when it built). Exit status 0 when
# every step ran and passed.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo" || exit 1

# The test files whose cases take the `device` fixture of tests/conftest.py (or skip by its
# rule). By name, so a module elsewhere that fails to import cancels nothing here;
# tests/test_gpu_check.py checks this list against tests/.
gpu_test_files=(
  tests/test_nms.py
  tests/test_deform_conv.py
  tests/test_detectors_on_device.py
  tests/test_focal_loss.py
  tests/test_gmm.py
  tests/test_model_forward.py
  tests/test_paa_inference.py
  tests/test_paa_loss.py
)

smoke=0
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=1 ;;
    --list-tests) printf '%s\n' "${gpu_test_files[@]}"; exit 0 ;;
    *) echo "check_gpu.sh: unknown argument '$arg' (expected --smoke or --list-tests)" >&2; exit 2 ;;
  esac
done

# The benchmarks, in order, with their arguments, each step's time limit and the least time
# worth starting it with (seconds). Full mode: the GPU at the issue's sizes; --smoke: tiny.
benchmarks=(ops.py assign.py train.py detector.py faster_rcnn.py)
declare -A limit=([ops.py]=45 [assign.py]=30 [train.py]=80 [detector.py]=40 [faster_rcnn.py]=60)
declare -A least=([ops.py]=15 [assign.py]=10 [train.py]=30 [detector.py]=15 [faster_rcnn.py]=20)
# shellcheck disable=SC2034  # the *_args arrays are read through "${!args_of}" below
if [ "$smoke" = 1 ]; then
  ops_args=(--device cpu --threads 1 --boxes 100 300 1000 --dcn-channels 8 --dcn-size 12 16 --anchors 2000 --winograd-size 128 --repeats 3)
  assign_args=(--device cpu --threads 1 --size 128 160 --max-gts 2 --repeats 1)
  # 64x96, not 64x64: at 64x64 under CPU bf16, oneDNN can return NaN gradients for RetinaNet's P7 conv.
  train_args=(--device cpu --threads 1 --size 64 96 --images 1 --amp bf16 --warmup 0 --repeats 1)
  detector_args=(--device cpu --threads 1 --size 64 96 --repeats 1)
  faster_rcnn_args=(--device cpu --threads 1 --size 64 96 --images 1 --warmup 0 --repeats 1)
else
  ops_args=(--device cuda --repeats 21)
  assign_args=(--device cuda --repeats 7)
  train_args=(--device cuda --size 800 1333 --images 4 --amp auto --warmup 2 --repeats 5)
  detector_args=(--device cuda --size 800 1333 --images 1 --repeats 11)
  faster_rcnn_args=(--device cuda --size 800 1333 --images 2 --warmup 2 --repeats 5)
fi

PYTHON="${PYTHON:-python3}"
budget="${BUDGET_S:-420}"
deadline=$((SECONDS + budget - 5))  # 5 s kept for the closing tables
out_dir="${OUT:-$repo/output}"
mkdir -p "$out_dir"
report="$out_dir/gpu_check.md"
log="$out_dir/gpu_check.log"
: > "$log"
rm -f "$out_dir/build.log" "$out_dir/tests.xml"
export PYTHONUNBUFFERED=1
site="$repo/build/gpu_check/site"
export PYTHONPATH="$site:$repo${PYTHONPATH:+:$PYTHONPATH}"
mode="full"
[ "$smoke" = 1 ] && mode="smoke (CPU, tiny sizes)"
step_rows=()
not_passed=()

say() { echo "$*" | tee -a "$log"; }

# run_step NAME LIMIT LEAST COMMAND...: runs COMMAND for at most LIMIT seconds, or what is
# left of the budget when that is less, its output streaming to the console and the log
# between marker lines (dev/gpu_check_targets.py reads them); skipped when fewer than LEAST
# seconds are left. Sets step_status (0 passed, 124 stopped at its limit, -1 skipped).
run_step() {
  local name="$1" cap="$2" need="$3" left=$((deadline - SECONDS)) result
  shift 3
  if [ "$left" -lt "$need" ]; then
    result="skipped, needs ${need} s and $((left > 0 ? left : 0)) s are left of the ${budget} s budget"
    say "== step $name: $result"
    step_status=-1
    step_seconds=0
  else
    [ "$left" -lt "$cap" ] && cap="$left"
    say "== step $name: started, limit ${cap} s"
    local start=$SECONDS
    timeout --kill-after=5 "$cap" "$@" 2>&1 | tee -a "$log"
    step_status=${PIPESTATUS[0]}
    step_seconds=$((SECONDS - start))
    case "$step_status" in
      0) result="passed" ;;
      124 | 137) step_status=124; result="stopped at its ${cap} s limit" ;;
      *) result="failed (exit $step_status)" ;;
    esac
    say "== step $name: $result in ${step_seconds} s"
  fi
  step_result="$result"
  step_rows+=("| $name | $result | ${step_seconds} s |")
  [ "$step_status" -eq 0 ] || not_passed+=("$name")
  return 0
}

# section TITLE TEXT STEP [TAIL]: a report section on the step just run: the title, a line,
# and STEP's output (its last TAIL lines when given; the log keeps all) as a code block.
# shellcheck disable=SC2016  # the backticks are markdown
section() {
  if [ "$step_status" -eq -1 ]; then
    printf '\n## %s\n\n%s\n\n**Not run:** %s.\n' "$1" "$2" "$step_result" >> "$report"
    return
  fi
  local output
  output="$("$PYTHON" dev/gpu_check_targets.py "$log" --section "$3" --tail "${4:-0}" 2>/dev/null)"
  printf '\n## %s\n\n%s (%s in %s s)\n\n```\n%s\n```\n' "$1" "$2" "$step_result" "$step_seconds" \
    "${output:-(no output)}" >> "$report"
}

# The closing tables: every step's outcome, the targets, the verdict; then the exit status.
finish() {
  {
    printf '\n## Steps\n\nBudget %s s; the script ran %s s.\n\n| step | result | time |\n|---|---|---|\n' \
      "$budget" "$SECONDS"
    printf '%s\n' "${step_rows[@]}"
    echo
    "$PYTHON" dev/gpu_check_targets.py "$log" --expect "${benchmarks[@]/#/benchmark }"
    if [ "${#not_passed[@]}" -gt 0 ]; then
      printf '\n**Not passed:** %s (output in gpu_check.log)\n' "$(IFS=,; echo "${not_passed[*]}")"
    else
      printf '\nAll steps passed.\n'
    fi
  } >> "$report"
  if [ "${#not_passed[@]}" -gt 0 ]; then
    echo "check_gpu.sh: not passed: ${not_passed[*]}; report: $report" >&2
    exit 1
  fi
  echo "check_gpu.sh: all steps passed; report: $report"
  exit 0
}

# ---------------------------------------------------------------- 1. preflight
printf '# paa_core GPU check: %s\n\n' "$mode" > "$report"
run_step preflight 30 5 "$PYTHON" dev/gpu_preflight.py --mode "$mode"
if [ "$step_status" -eq 0 ]; then
  "$PYTHON" dev/gpu_check_targets.py "$log" --section preflight | grep '^|' >> "$report"
else  # the steps after it say more about what is wrong
  section "Preflight" "\`dev/gpu_preflight.py\` did not finish: can $PYTHON import torch and torchvision?" preflight
fi

# ---------------------------------------------------------------- 2. packages
# import name=distribution (a wheel's file name starts with it); pytest_timeout may be absent.
needs="yacs=yacs yaml=PyYAML pycocotools=pycocotools cv2=opencv_python_headless tqdm=tqdm
       sklearn=scikit_learn scipy=scipy pytest=pytest numpy=numpy pytest_timeout=pytest_timeout"
# shellcheck disable=SC2317  # runs through bash -c, under the step's time limit
install_missing() {
  local pair module wheels=() installed=() found
  shopt -s nocaseglob nullglob  # PyYAML-... or pyyaml-...
  for pair in $needs; do
    module="${pair%%=*}"
    "$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$module') is None)" && continue
    found=(gpu_carry/wheels/"${pair#*=}"-*.whl)
    if [ "${#found[@]}" -eq 0 ]; then
      [ "$module" = pytest_timeout ] && { echo "pytest_timeout absent: tests run without a per-test limit"; continue; }
      echo "'$module' is missing and gpu_carry/wheels has no ${pair#*=} wheel (dev/fetch_gpu_wheels.sh adds one)"
      return 1
    fi
    wheels+=("${found[@]}")
    installed+=("$module")
  done
  if [ "${#wheels[@]}" -eq 0 ]; then
    echo "all needed packages are importable"
    return 0
  fi
  mkdir -p "$site"
  "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "${wheels[@]}" || return 1
  "$PYTHON" -c 'import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]' "${installed[@]}" \
    || return 1
  echo "installed into $site: ${wheels[*]##*/}"
}
export -f install_missing
export PYTHON site needs
run_step packages 60 10 bash -c install_missing
section "Packages" "Importable, or installed from gpu_carry/wheels into build/gpu_check/site" packages

# ---------------------------------------------------------------- 3. the library
ext="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
if [ "$smoke" = 1 ]; then
  device=cpu
  if "$PYTHON" -c "import paa_core._C" 2>/dev/null; then
    say "paa_core._C (CPU) is built"
  else
    run_step "library (CPU build)" 300 60 "$PYTHON" setup.py build_ext --inplace
    section "Library" "Smoke mode: the CPU build of paa_core._C, no CUDA compile" "library (CPU build)" 20
    [ "$step_status" -eq 0 ] || finish
  fi
else
  device=cuda
  arch="$("$PYTHON" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability(0))' 2>/dev/null)"
  if [ -z "$arch" ]; then
    say "check_gpu.sh: no GPU visible to $PYTHON's torch (torch.cuda.is_available() is False)"
    step_rows+=("| library | no GPU visible | 0 s |")
    not_passed+=("library")
    finish
  fi
  # shellcheck disable=SC2317  # runs through bash -c, under the step's time limit
  library() {
    if "$PYTHON" dev/cuda_lib.py verify gpu_carry; then
      echo "copying the carried library in place: paa_core/_C$ext"
      cp "gpu_carry/_C$ext" "paa_core/_C$ext"
    else
      echo "building paa_core._C for sm_${arch/./} instead (log: build.log)"
      export FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS="${MAX_JOBS:-$(nproc)}"
      source dev/cuda_env.sh
      if ! "$PYTHON" setup.py build_ext --inplace > "$out_dir/build.log" 2>&1; then
        echo "BUILD FAILED; its last lines:"
        tail -n 40 "$out_dir/build.log"
        return 1
      fi
      echo "built with CUDA_HOME=$CUDA_HOME, $MAX_JOBS jobs"
    fi
    "$PYTHON" dev/cuda_lib.py ops "paa_core/_C$ext" --run
  }
  export -f library
  export arch ext out_dir
  run_step library 240 60 bash -c library
  section "Library" "paa_core._C with CUDA for compute capability $arch: carried or built (build.log), then run" library 60
  if [ "$step_status" -ne 0 ]; then
    printf '\n**The library could not be had: the check stops here.** See build.log and gpu_check.log.\n' >> "$report"
    finish
  fi
fi

# ---------------------------------------------------------------- 4. tests
read -r -a pytest_args <<< "${PYTEST_ARGS:--k cuda}"
per_test=()
if "$PYTHON" -c "import pytest_timeout" 2>/dev/null; then
  per_test=(--timeout "${PYTEST_TIMEOUT:-90}")
fi
run_step tests 150 30 "$PYTHON" -m pytest "${gpu_test_files[@]}" -q -rs -p no:cacheprovider \
  --continue-on-collection-errors --junitxml "$out_dir/tests.xml" "${per_test[@]}" "${pytest_args[@]}"
summary="$("$PYTHON" dev/gpu_check_targets.py "$log" --section tests 2>/dev/null \
  | grep -E '(passed|failed|skipped|error|deselected)' | tail -n 1)"
shown=("${gpu_test_files[@]##*/}" "${per_test[@]}" "${pytest_args[@]}")
section "Tests on $device" "\`pytest ${shown[*]}\`: **${summary:-no summary}**. Without a usable GPU every CUDA case is reported skipped." tests 60

# ---------------------------------------------------------------- 5. benchmarks
for bench in "${benchmarks[@]}"; do
  args_of="${bench%.py}_args[@]"
  bench_args=("${!args_of}")
  run_step "benchmark $bench" "${limit[$bench]}" "${least[$bench]}" \
    "$PYTHON" "tools/benchmarks/$bench" "${bench_args[@]}"
  section "Benchmark $bench" "\`$bench ${bench_args[*]}\`" "benchmark $bench"
done

finish
