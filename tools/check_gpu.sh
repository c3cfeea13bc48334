#!/usr/bin/env bash
# The device check: proves paa_core's GPU path on a machine with one NVIDIA GPU and measures it.
#
#   bash tools/check_gpu.sh            # on the GPU machine (about 5-8 minutes on an H200)
#   bash tools/check_gpu.sh --smoke    # on any CPU machine: the same steps at tiny sizes (CI)
#
# Works with the machine's own PyTorch/torchvision (any recent version; PYTHON picks the
# interpreter, default python3) and needs no network:
#   1. packages paa_core needs that the interpreter lacks are installed, without network,
#      from the wheels in wheels/ (fill it on a machine with network: tools/fetch_gpu_wheels.sh)
#      into build/gpu_check/site, which goes first on PYTHONPATH;
#   2. paa_core._C is built in place with CUDA for the visible GPU's architecture
#      (TORCH_CUDA_ARCH_LIST from its compute capability; --smoke keeps the CPU build);
#   3. the tests' CUDA cases run (pytest -k cuda; PYTEST_ARGS replaces that selection);
#   4. the GPU benchmarks of tools/benchmarks run at the issue's sizes (--smoke: tiny, on the CPU);
#   5. one markdown report with the environment, the test summary and every benchmark line is
#      written to $OUT/gpu_check.md when OUT is set, else output/gpu_check.md.
# Each step has a time limit, and the report is written as the steps finish, so a step that
# fails or hangs still leaves the others' results. Exit status: 0 when every step passed.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

smoke=0
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=1 ;;
    *) echo "check_gpu.sh: unknown argument '$arg' (expected --smoke)" >&2; exit 2 ;;
  esac
done

PYTHON="${PYTHON:-python3}"
out_dir="${OUT:-$repo/output}"
mkdir -p "$out_dir"
report="$out_dir/gpu_check.md"
log="$out_dir/gpu_check.log"
: > "$log"
failed=()

# Runs the command "$@" (a shell function runs as it is; its slow commands carry their own
# limits) with a time limit of $1 seconds; its output goes to the console and the log, and
# is kept in $step_output for the report.
step_output=""
run_step() {
  local limit="$1" name="$2"
  shift 2
  echo "== $name" | tee -a "$log"
  local start=$SECONDS status
  if declare -F "$1" > /dev/null; then
    step_output="$("$@" 2>&1)"
  else
    step_output="$(timeout --kill-after=10 "$limit" "$@" 2>&1)"
  fi
  status=$?
  printf '%s\n' "$step_output" | tee -a "$log"
  if [ "$status" -ne 0 ]; then
    [ "$status" -eq 124 ] && step_output+=$'\n'"(stopped after its ${limit} s limit)"
    failed+=("$name")
    echo "== $name FAILED (exit $status)" | tee -a "$log"
  fi
  step_seconds=$((SECONDS - start))
  return "$status"
}

# Appends a report section: a heading, a line, then the step's output as a code block.
section() {
  { printf '\n## %s\n\n%s\n\n```\n%s\n```\n' "$1" "$2" "$step_output"; } >> "$report"
}

# ---------------------------------------------------------------- 1. packages
# import name -> distribution (the wheel's file name starts with it)
declare -A dist=([yacs]=yacs [yaml]=PyYAML [pycocotools]=pycocotools [cv2]=opencv_python_headless
                 [tqdm]=tqdm [sklearn]=scikit_learn [scipy]=scipy [joblib]=joblib
                 [threadpoolctl]=threadpoolctl [pytest]=pytest [numpy]=numpy)
site="$repo/build/gpu_check/site"
mkdir -p "$site"
export PYTHONPATH="$site:$repo${PYTHONPATH:+:$PYTHONPATH}"
install_missing() {
  local module missing=()
  for module in "${!dist[@]}"; do
    "$PYTHON" -c "import $module" 2>/dev/null || missing+=("$module")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    echo "all needed packages are importable"
    return 0
  fi
  echo "missing: ${missing[*]}; installing from wheels/"
  local wheels=()
  shopt -s nocaseglob  # PyYAML-… or pyyaml-…
  for module in "${missing[@]}"; do
    local found=(wheels/"${dist[$module]}"-*.whl)
    if [ ! -e "${found[0]}" ]; then
      echo "no wheel for '$module' (${dist[$module]}) in wheels/: run tools/fetch_gpu_wheels.sh where there is network" >&2
      return 1
    fi
    wheels+=("${found[@]}")
  done
  timeout 120 "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "${wheels[@]}" || return 1
  for module in "${missing[@]}"; do
    "$PYTHON" -c "import $module" || { echo "'$module' still cannot be imported" >&2; return 1; }
  done
  echo "installed: ${wheels[*]}"
}

# ---------------------------------------------------------------- report header
"$PYTHON" - > "$report" <<PY
import datetime, platform, subprocess
import torch, torchvision
mode = "smoke (CPU, tiny sizes)" if $smoke else "full"
gpu = "none"
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    gpu = f"{p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}"
try:
    driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                            capture_output=True, text=True, timeout=30).stdout.strip() or "n/a"
except (OSError, subprocess.SubprocessError):
    driver = "n/a"
try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:  # no git on the machine
    commit = ""
print(f"# paa_core GPU check ({mode})\n")
print("| | |\n|---|---|")
print(f"| date (UTC) | {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} |")
print(f"| commit | {commit or 'n/a'} |")
print(f"| GPU | {gpu} |")
print(f"| driver | {driver} |")
print(f"| Python | {platform.python_version()} |")
print(f"| torch | {torch.__version__} (CUDA {torch.version.cuda}) |")
print(f"| torchvision | {torchvision.__version__} |")
print(f"| CPU threads | {torch.get_num_threads()} |")
PY
[ $? -eq 0 ] || { echo "check_gpu.sh: $PYTHON cannot import torch and torchvision" >&2; exit 1; }

run_step 120 "packages" install_missing
section "Packages" "Importable or installed from wheels/ into build/gpu_check/site."

# ---------------------------------------------------------------- 2. build
if [ "$smoke" = 1 ]; then
  device=cpu
  if "$PYTHON" -c "import paa_core._C" 2>/dev/null; then
    step_output="paa_core._C (CPU) is built"
  else
    run_step 900 "build (CPU ops)" "$PYTHON" setup.py build_ext --inplace
  fi
  section "Build" "Smoke mode: the CPU build of paa_core._C, no CUDA compile."
else
  device=cuda
  arch="$("$PYTHON" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability(0))' 2>/dev/null)"
  if [ -z "$arch" ]; then
    echo "check_gpu.sh: no GPU visible to $PYTHON's torch (torch.cuda.is_available() is False)" >&2
    exit 1
  fi
  build() {
    export FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS="${MAX_JOBS:-$(nproc)}"
    source tools/cuda_env.sh
    echo "building paa_core._C for sm_${arch/./} with CUDA_HOME=$CUDA_HOME, $MAX_JOBS jobs"
    timeout 420 "$PYTHON" setup.py build_ext --inplace > build/gpu_check/build.log 2>&1 \
      || { tail -n 40 build/gpu_check/build.log; return 1; }
    "$PYTHON" -c "
import torch
from paa_core.layers import nms
keep = nms(torch.tensor([[0.0, 0, 9, 9], [1, 1, 9, 9]], device='cuda'), torch.tensor([0.9, 0.8], device='cuda'), 0.5)
assert keep.tolist() == [0], keep
print('paa_core._C runs on', torch.cuda.get_device_name(0))"
  }
  run_step 420 "build (CUDA ops, TORCH_CUDA_ARCH_LIST=$arch)" build
  section "Build" "paa_core._C with CUDA for compute capability $arch: ${step_seconds} s."
fi

# ---------------------------------------------------------------- 3. tests
read -r -a pytest_args <<< "${PYTEST_ARGS:--k cuda}"
run_step 300 "tests on CUDA (pytest ${pytest_args[*]})" \
  "$PYTHON" -m pytest tests -q -rs -p no:cacheprovider "${pytest_args[@]}"
summary="$(printf '%s\n' "$step_output" | grep -E '(passed|failed|skipped|error)' | tail -n 1)"
section "Tests" "\`pytest tests ${pytest_args[*]}\` in ${step_seconds} s: **${summary:-no summary}**. On a machine without a usable GPU every CUDA case is reported skipped."

# ---------------------------------------------------------------- 4. benchmarks
py=(env PYTHONUNBUFFERED=1 "$PYTHON")
if [ "$smoke" = 1 ]; then
  ops_args=(--device cpu --boxes 200 --dcn-channels 8 --dcn-size 12 16 --anchors 2000 --repeats 1)
  assign_args=(--device cpu --size 128 160 --max-gts 2 --repeats 1)
  train_args=(--device cpu --size 64 96 --images 1 --amp off --repeats 1 --threads 1)
  detector_args=(--device cpu --size 64 96 --repeats 1 --threads 1)
else
  ops_args=(--device cuda --repeats 21)
  assign_args=(--device cuda --repeats 7)
  train_args=(--device cuda --size 800 1333 --images 4 --amp auto --repeats 7)
  detector_args=(--device cuda --size 800 1333 --images 1 --repeats 11)
fi
run_step 180 "ops vs torchvision.ops" "${py[@]}" tools/benchmarks/ops.py "${ops_args[@]}"
section "Ops against torchvision.ops" "\`ops.py ${ops_args[*]}\`: median times; ratio = ours / torchvision (target <= 1.0)."
run_step 180 "loss evaluator vs per-GT sklearn loop" "${py[@]}" tools/benchmarks/assign.py "${assign_args[@]}"
section "Loss evaluator against a per-GT scikit-learn loop" "\`assign.py ${assign_args[*]}\`: best times."
run_step 300 "training iteration vs RetinaNet" "${py[@]}" tools/benchmarks/train.py "${train_args[@]}"
section "Training iteration against torchvision RetinaNet" "\`train.py ${train_args[*]}\`: median times; targets: ratio <= 1.05, assignment + GMM <= 5% of the step, mixed precision >= 1.5x float32."
run_step 180 "inference vs RetinaNet" "${py[@]}" tools/benchmarks/detector.py "${detector_args[@]}"
section "Inference against torchvision RetinaNet" "\`detector.py ${detector_args[*]}\`: median times per call."

# The issue's targets against the numbers above, read back from the log.
"$PYTHON" - "$log" >> "$report" <<'PY'
import re, sys
log = open(sys.argv[1]).read()
rows = []
for name in ("nms", "modulated deform conv", "sigmoid focal loss"):
    for m in re.finditer(rf"^({name} .*?): .*ratio ([\d.]+)$", log, re.M):
        rows.append((m.group(1), "ours / torchvision <= 1.0", m.group(2), float(m.group(2)) <= 1.0))
for m in re.finditer(r"^train iteration \S+ (.+?), .*ratio ([\d.]+); assignment \+ GMM ([\d.]+)%", log, re.M):
    rows.append((f"training iteration, {m.group(1)}", "PAA / RetinaNet <= 1.05", m.group(2), float(m.group(2)) <= 1.05))
    rows.append((f"assignment + GMM share, {m.group(1)}", "<= 5%", m.group(3) + "%", float(m.group(3)) <= 5))
for m in re.finditer(r"^mixed precision \((.+?)\) speed-up .*: ([\d.]+)x$", log, re.M):
    rows.append((f"mixed precision ({m.group(1)}) over float32", ">= 1.5x", m.group(2) + "x", float(m.group(2)) >= 1.5))
print("\n## Targets\n\n| what | target | measured | met |\n|---|---|---|---|")
for what, target, value, met in rows:
    print(f"| {what} | {target} | {value} | {'yes' if met else '**no**'} |")
PY

if [ "${#failed[@]}" -gt 0 ]; then
  printf '\n**Failed steps:** %s (see gpu_check.log)\n' "$(IFS=,; echo "${failed[*]}")" >> "$report"
  echo "check_gpu.sh: failed: ${failed[*]}; report: $report" >&2
  exit 1
fi
printf '\nAll steps passed.\n' >> "$report"
echo "check_gpu.sh: all steps passed; report: $report"
