#!/usr/bin/env bash
# Does PAA's RPN help? Trains the two quick Faster R-CNN configs, the standard RPN
# (configs/faster_rcnn/faster_rcnn_quick_shapes.yaml) and the PAA RPN
# (configs/faster_rcnn/faster_rcnn_paa_quick_shapes.yaml), with their full quick schedule,
# the same seed and data, then evaluates each final model twice: box AP on shapes_val and,
# with MODEL.RPN_ONLY True on the same checkpoint, the RPN's proposal recall. Prints one
# table: AP, AP50, AR@100 and AR@1000 (all, small, medium, large) and each training's wall
# time.
#
#   bash tools/benchmarks/rpn_compare.sh [CONFIG.KEY VALUE ...]
#
# Extra arguments override config keys of both runs (e.g. SOLVER.MAX_ITER 400 for a short
# look). OUT=<dir> (default output/rpn_compare) holds both runs; a run whose
# model_final.pth exists is not trained again, so a killed comparison resumes where it
# stopped. PARALLEL=1 trains both at once with THREADS (default 1) threads each, instead of
# one after the other with all cores. Needs datasets/shapes (tools/quickstart.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/../.."

py="${PYTHON:-.venv/bin/python}"
out="${OUT:-output/rpn_compare}"
names=(standard paa)
configs=(configs/faster_rcnn/faster_rcnn_quick_shapes.yaml configs/faster_rcnn/faster_rcnn_paa_quick_shapes.yaml)
mkdir -p "$out"

# Trains run $1 with config $2 unless its final model exists; records the wall time.
train() {
  local run="$out/$1" config="$2"
  shift 2
  if [ -f "$run/model_final.pth" ]; then
    echo "== $run/model_final.pth exists: not training it again"
    return 0
  fi
  local start=$SECONDS
  "$py" tools/train_net.py --config-file "$config" --skip-test OUTPUT_DIR "$run" SEED 0 "$@" \
    > "$run.train.log" 2>&1
  echo $((SECONDS - start)) > "$run/train_seconds"
}

for i in 0 1; do mkdir -p "$out/${names[$i]}"; done
if [ "${PARALLEL:-0}" = 1 ]; then
  export OMP_NUM_THREADS="${THREADS:-1}"
  echo "== training both at once, $OMP_NUM_THREADS thread(s) each (logs: $out/*.train.log)"
  train "${names[0]}" "${configs[0]}" "$@" &
  first=$!
  train "${names[1]}" "${configs[1]}" "$@" &
  second=$!
  wait "$first"
  wait "$second"
else
  for i in 0 1; do
    echo "== training ${names[$i]} (${configs[$i]}; log: $out/${names[$i]}.train.log)"
    train "${names[$i]}" "${configs[$i]}" "$@"
  done
fi

for i in 0 1; do
  run="$out/${names[$i]}"
  echo "== evaluating $run: detections, then proposals (MODEL.RPN_ONLY True)"
  "$py" tools/test_net.py --config-file "${configs[$i]}" MODEL.WEIGHT "$run/model_final.pth" \
    OUTPUT_DIR "$run/eval_detections" "$@" > "$run.test.log" 2>&1
  "$py" tools/test_net.py --config-file "${configs[$i]}" MODEL.WEIGHT "$run/model_final.pth" \
    OUTPUT_DIR "$run/eval_proposals" MODEL.RPN_ONLY True "$@" >> "$run.test.log" 2>&1
done

"$py" - "$out" "${names[@]}" <<'PY'
import json
import os
import sys

out, names = sys.argv[1], sys.argv[2:]
columns = ["AP", "AP50", "AR@100", "ARs@100", "ARm@100", "ARl@100",
           "AR@1000", "ARs@1000", "ARm@1000", "ARl@1000"]


def last_evaluation(folder):
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()][-1]


print("| RPN | " + " | ".join(columns) + " | training wall time |")
print("|---" * (len(columns) + 2) + "|")
for name in names:
    run = os.path.join(out, name)
    numbers = {**last_evaluation(os.path.join(run, "eval_detections")),
               **last_evaluation(os.path.join(run, "eval_proposals"))}
    seconds_file = os.path.join(run, "train_seconds")
    seconds = int(open(seconds_file).read()) if os.path.isfile(seconds_file) else None
    wall = f"{seconds // 60} min {seconds % 60} s" if seconds is not None else "?"
    cells = [f"{100 * numbers[c]:.1f}" for c in columns]
    print(f"| {name} | " + " | ".join(cells) + f" | {wall} |")
PY
