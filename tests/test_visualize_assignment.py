"""tools/visualize_assignment.py: its records are the loss evaluator's own assignment
(positives, candidate scores), its mixtures are scikit-learn's fit of those scores, and
the tool writes a picture and the numbers from random weights and from a checkpoint."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import REPO, RPN_TINY, TOOL_ENV, tiny_quick_cfg, write_split, write_tiny_config
from oracles import sklearn_gmm
from PIL import Image

from paa_core.config import get_cfg
from paa_core.modeling.detector import build_detection_model
from paa_core.modeling.head_outputs import flatten_rpn_outputs
from paa_core.modeling.paa.loss import concat_box_prediction_layers
from paa_core.structures.bounding_box import BoxList
from paa_core.structures.box_ops import CONTINUOUS_OFFSET, PLUS_ONE_OFFSET
from paa_core.structures.boxlist_ops import convert_box_offset
from paa_core.structures.image_list import to_image_list
from paa_core.visualization.assignment_view import assignment_records

pytestmark = pytest.mark.usefixtures("one_thread")
TINY_OPTS = (
    "MODEL.PAA.ANCHOR_SIZES",
    (16, 32, 64, 128, 256),
    "SOLVER.AMP",
    "off",
)


def test_records_are_the_loss_evaluators_assignment():
    torch.manual_seed(0)
    model = build_detection_model(tiny_quick_cfg(*TINY_OPTS))
    # Two images of different sizes (padded to one batch), five GTs of three classes.
    images = to_image_list([torch.randn(3, 96, 128), torch.randn(3, 80, 96)], 32)
    targets = [
        BoxList(torch.tensor([[10.0, 12, 60, 70], [40, 30, 120, 90], [5, 50, 30, 90]]), (128, 96)),
        BoxList(torch.tensor([[20.0, 10, 90, 75], [0, 0, 40, 30]]), (96, 80)),
    ]
    targets[0].add_field("labels", torch.tensor([1, 3, 5]))
    targets[1].add_field("labels", torch.tensor([2, 3]))
    records = assignment_records(model, images, targets, {1: "ellipse"})
    json.dumps(records)  # JSON-ready as it is

    # The same weights and targets straight through the loss evaluator.
    with torch.no_grad():
        features = model.backbone(images.tensors)
        box_cls, box_reg, _ = model.rpn.head(features)
        anchors = model.rpn.anchor_generator(features)
    cls_flat, reg_flat, _ = concat_box_prediction_layers(box_cls, box_reg, None)
    cls_flat, reg_flat = cls_flat.reshape(-1, cls_flat.shape[2]), reg_flat.reshape(-1, 4)
    evaluator = model.rpn.loss_evaluator
    labels, pos_idx, _, _ = evaluator.compute_targets(cls_flat, reg_flat, targets, anchors)
    per_image = sum(len(a) for a in anchors)
    all_boxes = torch.cat(anchors).repeat(len(targets), 1)

    ours = sorted(
        (i, c["anchor_index"])
        for i, r in enumerate(records)
        for g in r["gts"]
        for c in g["candidates"]
        if c["positive"]
    )
    assert ours == sorted((int(p) // per_image, int(p) % per_image) for p in pos_idx)
    assert len(ours) >= 5
    for i, r in enumerate(records):
        assert r["image_size"] == [list(images.image_sizes[i])[1], list(images.image_sizes[i])[0]]
        for g in r["gts"]:
            cands = g["candidates"]
            flat = torch.tensor([i * per_image + c["anchor_index"] for c in cands])
            # Positives carry their GT's label in the evaluator's labels.
            assert all(
                labels[i * per_image + c["anchor_index"]] == g["label"]
                for c in cands
                if c["positive"]
            )
            # Scores are the evaluator's anchor cost for this GT, in ascending order.
            gt = torch.tensor([g["box"]] * len(cands))
            box = all_boxes[flat]
            coder = evaluator.box_coder
            expected = evaluator.compute_anchor_scores(
                cls_flat[flat],
                reg_flat[flat],
                box,
                coder.decode(coder.encode(gt, box), box),
                torch.full((len(cands),), g["label"]),
            )
            scores = np.array([c["score"] for c in cands])
            np.testing.assert_allclose(scores, expected.numpy(), rtol=1e-6)
            assert list(scores) == sorted(scores)
            assert [c["box"] for c in cands] == box.tolist()
            assert sum(g["candidates_per_level"]) == g["num_candidates"] == len(cands)
            assert all(n <= 9 for n in g["candidates_per_level"])  # TOPK per level
            assert all(
                a >= b for a, b in zip(g["iou_candidates_per_level"], g["candidates_per_level"])
            )
            assert sum(g["positives_per_level"]) == g["num_positives"] >= 1
            assert [c["positive"] for c in cands] == [
                k < g["num_positives"] for k in range(len(cands))
            ]
            assert g["cut"] == cands[g["num_positives"] - 1]["score"]
            # The mixture is scikit-learn's fit of exactly these scores.
            ref = sklearn_gmm(scores)
            np.testing.assert_allclose(g["gmm"]["means"], ref.means_.ravel(), rtol=1e-4, atol=1e-9)
            np.testing.assert_allclose(
                g["gmm"]["variances"], ref.covariances_.ravel(), rtol=1e-4, atol=1e-12
            )
            np.testing.assert_allclose(g["gmm"]["weights"], ref.weights_, rtol=1e-4, atol=1e-9)
            assert g["gmm"]["iterations"] == ref.n_iter_
    assert (
        records[0]["gts"][0]["category"] == "ellipse" and records[0]["gts"][1]["category"] is None
    )


@pytest.mark.slow
def test_tool_from_random_weights_and_from_a_checkpoint(tmp_path):
    pytest.importorskip("matplotlib")
    root = str(tmp_path)
    train = write_split(root, "train", 3, 0)
    config = write_tiny_config(os.path.join(root, "tiny.yaml"), train, train)
    tool = [
        sys.executable,
        os.path.join(REPO, "tools", "visualize_assignment.py"),
        "--config-file",
        config,
    ]

    def run(output, *extra):
        result = subprocess.run(
            tool + ["--output", output, *extra],
            env=TOOL_ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        with open(os.path.join(output, "001.json")) as f:
            record = json.load(f)
        with Image.open(os.path.join(output, "001.png")) as png:
            assert png.size[0] > 600 and png.size[1] > 400
        return record

    # 001.png is image id 2; ids and file names both pick images.
    random = run(os.path.join(root, "random"), "--images", "000.png,2")
    assert sorted(os.listdir(os.path.join(root, "random"))) == [
        "000.json",
        "000.png",
        "001.json",
        "001.png",
    ]
    assert random["image_id"] == 2 and random["weights"] is None
    assert random["image_size"] == [64, 64] and random["num_levels"] == 5 and random["gts"]

    # A checkpoint with other weights gives other scores for the same candidates.
    cfg = get_cfg()
    cfg.merge_from_file(config)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu"])
    torch.manual_seed(1)
    weights = os.path.join(root, "other.pth")
    torch.save({"model": build_detection_model(cfg).state_dict()}, weights)
    loaded = run(os.path.join(root, "ckpt"), "--images", "001.png", "MODEL.WEIGHT", weights)
    assert loaded["weights"] == weights
    assert [g["box"] for g in loaded["gts"]] == [g["box"] for g in random["gts"]]
    scores = lambda r: [c["score"] for g in r["gts"] for c in g["candidates"]]  # noqa: E731
    assert scores(loaded) != scores(random)

    bad = subprocess.run(
        tool + ["--output", root, "--images", "nope.png"],
        env=TOOL_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith(
        "error: --images: nope.png"
    )


def test_paa_rpn_records_are_the_rpn_losss_positives(tmp_path):
    """For a Faster R-CNN with PAA in its RPN, the records hold the RPN's own assignment:
    the positive candidates of each image are the anchors its loss labels positive."""
    config = tmp_path / "rpn.yaml"
    config.write_text(RPN_TINY)
    cfg = get_cfg()
    cfg.merge_from_file(str(config))
    torch.manual_seed(0)
    model = build_detection_model(cfg)
    g = torch.Generator().manual_seed(0)
    images = to_image_list([torch.randn(3, 64, 64, generator=g) for _ in range(2)], 32)
    targets = []
    for boxes in ([[4.0, 6.0, 30.0, 40.0], [20.0, 20.0, 60.0, 50.0]], [[10.0, 8.0, 50.0, 58.0]]):
        t = BoxList(torch.tensor(boxes), (64, 64), mode="xyxy")
        t.add_field("labels", torch.ones(len(boxes), dtype=torch.long))
        targets.append(t)
    records = assignment_records(model, images, targets)

    with torch.no_grad():
        features = model.backbone(images.tensors)
        head = model.rpn.head(features)
        anchors = model.rpn.anchor_generator(features)
        objectness, deltas, _ = flatten_rpn_outputs(*head)
        rpn_targets = [convert_box_offset(t, PLUS_ONE_OFFSET, CONTINUOUS_OFFSET) for t in targets]
        labels = model.rpn.loss_evaluator.prepare_targets(
            anchors, objectness, deltas, rpn_targets
        ).labels
    assert [r["score_name"] for r in records] == ["objectness BCE + L1 of the deltas"] * 2
    for image, record in enumerate(records):
        positives = sorted(
            c["anchor_index"] for gt in record["gts"] for c in gt["candidates"] if c["positive"]
        )
        assert positives == torch.nonzero(labels[image] == 1).flatten().tolist()
        assert all(gt["num_positives"] >= 1 and gt["gmm"] for gt in record["gts"])


def test_tool_draws_the_paa_rpn_of_a_faster_rcnn(tmp_path):
    pytest.importorskip("matplotlib")
    root = str(tmp_path)
    train = write_split(root, "train", 3, 0)
    config = os.path.join(root, "rpn.yaml")
    with open(config, "w") as f:
        f.write(RPN_TINY + f'DATASETS:\n  TRAIN: ("{train}",)\n  TEST: ("{train}",)\n')
    output = os.path.join(root, "out")
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "visualize_assignment.py"),
            "--config-file",
            config,
            "--output",
            output,
            "--images",
            "1",
            "3",  # space-separated as well as comma-separated
            "SEED",
            "3",
        ],
        env=TOOL_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(output)) == ["000.json", "000.png", "002.json", "002.png"]
    with open(os.path.join(output, "002.json")) as f:
        record = json.load(f)
    assert record["image_id"] == 3 and record["score_name"] == "objectness BCE + L1 of the deltas"
    assert all(gt["num_positives"] >= 1 for gt in record["gts"]) and record["gts"]
