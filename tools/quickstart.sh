#!/usr/bin/env bash
# The main job end to end on the bundled dataset, on a CPU:
#   set up .venv (tools/setup_env.sh, with the plotting library), generate
#   datasets/shapes, train PAA from scratch with configs/paa/paa_quick_shapes.yaml,
#   evaluate on shapes_val (COCO AP table, per-category AP, PR curves, false positives)
#   and draw the detections on a few validation images, the training curves and the
#   anchor assignment on two training images before and after training.
#
#   bash tools/quickstart.sh [CONFIG.KEY VALUE ...]
# Extra arguments override config keys for training and evaluation. OUT=<dir> moves the
# output (default output/paa_quick_shapes); PAA_DATA_DIR moves the dataset.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/setup_env.sh --viz
py=.venv/bin/python
config=configs/paa/paa_quick_shapes.yaml
out="${OUT:-output/paa_quick_shapes}"
data="${PAA_DATA_DIR:-datasets}/shapes"

start=$SECONDS
stage() { echo; echo "== [$((SECONDS - start)) s] $*"; }

stage "generating the shapes dataset in $data"
"$py" tools/make_shapes_dataset.py --output "$data"

stage "training (log: $out/log.txt)"
"$py" tools/train_net.py --config-file "$config" --skip-test OUTPUT_DIR "$out" "$@"

stage "evaluating on shapes_val"
"$py" tools/test_net.py --config-file "$config" MODEL.WEIGHT "$out/model_final.pth" OUTPUT_DIR "$out" "$@"

stage "drawing detections on validation images"
"$py" demo/paa_demo.py --config-file "$config" --weights "$out/model_final.pth" \
  --input "$data"/val/00000{1,2,3,4}.jpg --output "$out/demo" "$@"

stage "drawing the training curves"
"$py" tools/plot_training.py "$out"

stage "drawing the anchor assignment at iteration 0 and after training"
"$py" tools/visualize_assignment.py --config-file "$config" --images 1,2 --output "$out/assignment/iteration_0" \
  "$@" MODEL.WEIGHT ""
"$py" tools/visualize_assignment.py --config-file "$config" --images 1,2 --output "$out/assignment/final" \
  "$@" MODEL.WEIGHT "$out/model_final.pth"

stage "done: detections in $out/inference/shapes_val/bbox.json, pictures in $out/demo/, $out/assignment/,
  $out/training_curves.png and $out/inference/shapes_val/ (pr_curves.png, false_positives.png)"
