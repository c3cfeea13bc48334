#!/usr/bin/env bash
# The main job end to end on the bundled dataset, on a CPU:
#   set up .venv (tools/setup_env.sh), generate datasets/shapes, train PAA from scratch
#   with configs/paa/paa_quick_shapes.yaml, evaluate on shapes_val (COCO AP table) and
#   draw the detections on a few validation images.
#
#   bash tools/quickstart.sh [CONFIG.KEY VALUE ...]
# Extra arguments override config keys for training and evaluation. OUT=<dir> moves the
# output (default output/paa_quick_shapes); PAA_DATA_DIR moves the dataset.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/setup_env.sh
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

stage "done: detections in $out/inference/shapes_val/bbox.json, pictures in $out/demo/"
