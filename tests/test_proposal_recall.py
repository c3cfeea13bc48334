"""Proposal recall (AR@k by object size) on a hand-computed case, and end to end for an
RPN-only model through tools/train_net.py and tools/test_net.py."""

import subprocess
import sys

import pytest
import torch
from helpers import TEST_NET, TOOL_ENV, TRAIN_NET, write_split, write_tiny_config
from pycocotools.coco import COCO

from paa_core.config import get_cfg
from paa_core.data.datasets.evaluation.coco.coco_eval import (
    evaluate_box_proposals,
    proposal_recall_results,
)
from paa_core.modeling.detector import build_detection_model
from paa_core.structures.bounding_box import BoxList


class _Dataset:
    """The three things the evaluation reads from a COCODataset."""

    def __init__(self, annotations):
        self.coco = COCO()
        self.coco.dataset = {
            "images": [{"id": 7, "width": 200, "height": 100}],
            "annotations": annotations,
            "categories": [{"id": 1, "name": "a"}],
        }
        self.coco.createIndex()
        self.id_to_img_map = {0: 7}

    def get_img_info(self, idx):
        return {"width": 200, "height": 100}


def _ann(i, x, y, w, h, crowd=0):
    return {
        "id": i,
        "image_id": 7,
        "category_id": 1,
        "bbox": [x, y, w, h],
        "area": w * h,
        "iscrowd": crowd,
    }


def test_recall_hand_computed():
    # GT a (20 x 20, small) covered exactly; GT b (100 x 50, medium) covered at IoU 0.62 by
    # the best proposal; a crowd box never counts. Boxes in the datasets' +1 convention.
    dataset = _Dataset(
        [_ann(1, 10, 10, 20, 20), _ann(2, 50, 20, 100, 50), _ann(3, 0, 0, 5, 5, crowd=1)]
    )
    boxes = torch.tensor(
        [[10, 10, 29, 29], [50, 20, 149 - 38, 69], [0, 0, 199, 99]], dtype=torch.float32
    )
    proposals = BoxList(boxes, (200, 100))
    proposals.add_field("objectness", torch.tensor([3.0, 2.0, 1.0]))
    # IoU of b with its proposal: width 62 of 100 -> 0.62: counts at 0.50, 0.55, 0.60.
    result = evaluate_box_proposals([proposals], dataset, "all", 100)
    assert result["num_pos"] == 2
    assert result["ar"] == pytest.approx((10 + 3) / 20)
    assert evaluate_box_proposals([proposals], dataset, "small", 100)["ar"] == pytest.approx(1.0)
    assert evaluate_box_proposals([proposals], dataset, "medium", 100)["ar"] == pytest.approx(0.3)
    assert evaluate_box_proposals([proposals], dataset, "large", 100)["num_pos"] == 0
    # With only the best proposal, b is not covered.
    assert evaluate_box_proposals([proposals], dataset, "all", 1)["ar"] == pytest.approx(0.5)
    results = proposal_recall_results([proposals], dataset)
    assert (
        list(results)[:4] == ["AR@100", "ARs@100", "ARm@100", "ARl@100"] and "ARl@1000" in results
    )


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_rpn_only_config_trains_and_reports_recall(tmp_path):
    train = write_split(str(tmp_path), "train", 4, 0)
    val = write_split(str(tmp_path), "val", 2, 1)
    config = write_tiny_config(str(tmp_path / "rpn.yaml"), train, val, "tiny_rpn.yaml")
    out = str(tmp_path / "out")
    run = subprocess.run(
        [sys.executable, TRAIN_NET, "--config-file", config, "--skip-test", "OUTPUT_DIR", out],
        env=TOOL_ENV,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    run = subprocess.run(
        [sys.executable, TEST_NET, "--config-file", config, "OUTPUT_DIR", out],
        env=TOOL_ENV,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    for key in ("AR@100", "ARs@100", "ARm@100", "ARl@100", "AR@1000"):
        assert f"{key:>8}: " in run.stderr + run.stdout


def _rpn_only_run(tmp_path):
    """(config file, env) of the tiny RPN config on a train and a val split in `tmp_path`."""
    train = write_split(str(tmp_path), "train", 4, 0)
    val = write_split(str(tmp_path), "val", 2, 1)
    return write_tiny_config(str(tmp_path / "rpn.yaml"), train, val, "tiny_rpn.yaml"), TOOL_ENV


@pytest.mark.usefixtures("one_thread")
def test_recall_of_a_whole_faster_rcnn_checkpoint_leaves_its_roi_heads_unused(tmp_path):
    """The RPN-only model takes backbone and RPN from a full Faster R-CNN's checkpoint and says
    in one line what it leaves unused; a key that belongs to no part of the model is still
    refused."""
    config, env = _rpn_only_run(tmp_path)
    cfg = get_cfg()
    cfg.merge_from_file(config)
    cfg.merge_from_list(["MODEL.RPN_ONLY", False, "MODEL.ROI_BOX_HEAD.NUM_CLASSES", 3])
    cfg.merge_from_list(["MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM", 16])
    state = build_detection_model(cfg).state_dict()
    n_roi = sum(k.startswith("roi_heads.") for k in state)
    full = tmp_path / "faster_rcnn.pth"
    torch.save({"model": state, "iteration": 7}, full)
    argv = [sys.executable, TEST_NET, "--config-file", config, "MODEL.WEIGHT", str(full)]
    run = subprocess.run(
        argv + ["OUTPUT_DIR", str(tmp_path / "a")], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    log = run.stdout + run.stderr
    unused = [line for line in log.splitlines() if "leaving unused" in line]
    assert len(unused) == 1 and unused[0].endswith(
        f"{full}: leaving unused its roi_heads ({n_roi} tensors): this model has no such part"
    ), log[-2000:]
    assert f"Loaded {len(state) - n_roi} of {len(state) - n_roi} model tensors" in log
    for key in ("AR@100", "ARs@100", "ARm@100", "ARl@100", "AR@1000", "ARl@1000"):
        assert f"{key:>8}: " in log

    state["rpn.head.extra.weight"] = torch.zeros(2)
    torch.save({"model": state}, full)
    run = subprocess.run(
        argv + ["OUTPUT_DIR", str(tmp_path / "b")], env=env, capture_output=True, text=True
    )
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        f"error: {full}: 1 keys fit no model key: rpn.head.extra.weight"
    )
