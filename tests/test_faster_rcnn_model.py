"""Faster R-CNN as a whole: tiny models built from the shapes configs train (forward and
backward, with and without PAA, with images and batches without GT) and detect; the
COCO configs build the modules and names they promise; detectron2 weights load."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

from paa_core.checkpoint.checkpoint import DetectronCheckpointer
from paa_core.config import get_cfg
from paa_core.layers import FrozenBatchNorm2d
from paa_core.modeling.detector import build_detection_model
from paa_core.structures.bounding_box import BoxList

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs", "faster_rcnn")
TINY = [
    "MODEL.RESNETS.STEM_OUT_CHANNELS",
    8,
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    8,
    "MODEL.RESNETS.BACKBONE_OUT_CHANNELS",
    16,
    "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM",
    32,
    "MODEL.ROI_BOX_HEAD.NUM_CLASSES",
    4,
]

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(name, *opts):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(CONFIGS, name))
    cfg.merge_from_list(list(opts))
    return cfg


def _target(boxes, labels, size=(96, 64)):
    t = BoxList(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), size)
    t.add_field("labels", torch.tensor(labels, dtype=torch.long))
    return t


def _images():
    return torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0)) * 255


@pytest.mark.parametrize(
    "config,paa",
    [("faster_rcnn_quick_shapes.yaml", False), ("faster_rcnn_paa_quick_shapes.yaml", True)],
)
def test_trains_with_and_without_gt_and_detects(config, paa):
    torch.manual_seed(0)
    model = build_detection_model(_cfg(config, *TINY))
    model.train()
    keys = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    keys |= {"loss_rpn_iou"} if paa else set()
    with_gt = [_target([[5, 8, 40, 50], [50, 10, 90, 60]], [1, 3]), _target([], [])]
    without_gt = [_target([], []), _target([], [])]
    for targets in (with_gt, without_gt):
        model.zero_grad()
        losses = model(_images(), targets)
        assert set(losses) == keys
        assert all(torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()
        head = model.rpn.head
        assert head.cls_logits.weight.grad.abs().sum() > 0
        assert model.roi_heads.box.predictor.cls_score.weight.grad.abs().sum() > 0
        assert model.backbone.body.stem.conv1.weight.grad.abs().sum() > 0
    assert losses["loss_box_reg"].item() == 0 and losses["loss_rpn_box_reg"].item() == 0
    assert (head.iou_pred is not None) == paa

    model.eval()
    with torch.no_grad():
        detections = model(_images())
    assert len(detections) == 2
    for d in detections:
        assert set(d.fields()) == {"scores", "labels"} and d.size == (96, 64)
        assert len(d) <= 100 and bool((d.get_field("labels") >= 1).all())
        # Out in the datasets' +1 convention: x2 <= w - 1.
        assert bool((d.bbox[:, 2] <= 95).all()) and bool((d.bbox[:, 3] <= 63).all())


def test_rpn_only_trains_rpn_losses_and_outputs_proposals():
    model = build_detection_model(
        _cfg(
            "faster_rcnn_paa_quick_shapes.yaml",
            *TINY,
            "MODEL.RPN_ONLY",
            True,
            "MODEL.RPN.FPN_POST_NMS_TOP_N_TEST",
            50,
        )
    )
    assert model.roi_heads is None
    model.train()
    losses = model(_images(), [_target([[5, 8, 40, 50]], [2]), _target([], [])])
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_rpn_iou"}
    model.eval()
    with torch.no_grad():
        proposals = model(_images())
    assert [len(p) for p in proposals] == [50, 50]
    scores = proposals[0].get_field("objectness")
    assert torch.equal(scores, scores.sort(descending=True).values)


def test_coco_configs_build_the_promised_modules():
    names = {}
    for config in (
        "faster_rcnn_R_50_FPN_1x.yaml",
        "faster_rcnn_R_50_FPN_paa_1x.yaml",
        "rpn_R_50_FPN_paa_1x.yaml",
    ):
        cfg = _cfg(config)
        model = build_detection_model(cfg)
        names[config] = set(model.state_dict())
        assert (
            cfg.SOLVER.BASE_LR == 0.02
            and cfg.SOLVER.MAX_ITER == 90000
            and cfg.SOLVER.IMS_PER_BATCH == 16
        )
    base, paa, rpn = names.values()
    assert "backbone.fpn.fpn_inner1.bias" in base and "backbone.fpn.fpn_layer4.bias" in base
    assert base - paa == {
        f"backbone.fpn.fpn_{k}{i}.bias" for k in ("inner", "layer") for i in range(1, 5)
    }
    assert paa - base == {"rpn.head.iou_pred.weight", "rpn.head.iou_pred.bias"}
    assert not any(k.startswith("roi_heads") for k in rpn) and rpn <= paa
    assert {
        "roi_heads.box.feature_extractor.fc6.weight",
        "roi_heads.box.predictor.bbox_pred.weight",
    } <= base
    assert _cfg("faster_rcnn_R_50_FPN_paa_1x.yaml").MODEL.RPN.FPN_POST_NMS_TOP_N_TEST == 2000


def _detectron2_name(key):
    """Our key -> detectron2's, written out the other way round from the loader."""
    parts = key.split(".")
    if key.startswith("backbone.body.stem."):
        return "backbone.bottom_up.stem.conv1." + ("norm." if parts[3] == "bn1" else "") + parts[-1]
    if key.startswith("backbone.body.layer"):
        stage, block, module = int(parts[2][5:]) + 1, parts[3], parts[4]
        prefix = f"backbone.bottom_up.res{stage}.{block}."
        if module == "downsample":
            return prefix + ("shortcut." if parts[5] == "0" else "shortcut.norm.") + parts[-1]
        if module.startswith("bn"):
            return prefix + f"conv{module[2]}.norm." + parts[-1]
        return prefix + module + "." + parts[-1]
    if key.startswith("backbone.fpn."):
        kind = "lateral" if parts[2].startswith("fpn_inner") else "output"
        return f"backbone.fpn_{kind}{int(parts[2][-1]) + 1}.{parts[-1]}"
    rpn = {
        "conv": "conv",
        "cls_logits": "objectness_logits",
        "bbox_pred": "anchor_deltas",
        "iou_pred": "iou",
    }
    if key.startswith("rpn.anchor_generator."):
        return "proposal_generator." + key[len("rpn.") :]
    if key.startswith("rpn.head."):
        return f"proposal_generator.rpn_head.{rpn[parts[2]]}.{parts[-1]}"
    if key.startswith("roi_heads.box.feature_extractor."):
        return f"roi_heads.box_head.{ {'fc6': 'fc1', 'fc7': 'fc2'}[parts[3]] }.{parts[-1]}"
    return key.replace("roi_heads.box.predictor.", "roi_heads.box_predictor.")


def test_detectron2_model_zoo_weights_load_into_the_baseline(tmp_path):
    cfg = _cfg("faster_rcnn_R_50_FPN_1x.yaml", "MODEL.RESNETS.WIDTH_PER_GROUP", 2, *TINY)
    model = build_detection_model(cfg)
    g = np.random.RandomState(0)
    ours = {k: v for k, v in model.state_dict().items() if "anchor_generator" not in k}
    d2 = {_detectron2_name(k): g.randn(*v.shape).astype(np.float32) for k, v in ours.items()}
    # detectron2's predictor: background is the last class and has no box deltas.
    cls_w = d2.pop("roi_heads.box_predictor.cls_score.weight")
    cls_b = d2.pop("roi_heads.box_predictor.cls_score.bias")
    d2["roi_heads.box_predictor.cls_score.weight"] = np.roll(cls_w, -1, axis=0)
    d2["roi_heads.box_predictor.cls_score.bias"] = np.roll(cls_b, -1, axis=0)
    box_w = d2.pop("roi_heads.box_predictor.bbox_pred.weight")[4:]
    box_b = d2.pop("roi_heads.box_predictor.bbox_pred.bias")[4:]
    d2["roi_heads.box_predictor.bbox_pred.weight"], d2["roi_heads.box_predictor.bbox_pred.bias"] = (
        box_w,
        box_b,
    )
    d2["pixel_mean"] = np.zeros((3, 1, 1), np.float32)
    path = tmp_path / "model_final_d2.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": d2, "__author__": "Detectron2 Model Zoo"}, f)

    DetectronCheckpointer(cfg, model).load(str(path))
    state = model.state_dict()
    torch.testing.assert_close(
        state["roi_heads.box.predictor.cls_score.weight"], torch.from_numpy(cls_w)
    )
    torch.testing.assert_close(
        state["roi_heads.box.predictor.bbox_pred.weight"][4:], torch.from_numpy(box_w)
    )
    assert state["roi_heads.box.predictor.bbox_pred.weight"][:4].abs().sum() == 0
    for key in ours:
        if not key.startswith("roi_heads.box.predictor."):
            expected = torch.from_numpy(d2[_detectron2_name(key)])
            if key.endswith("running_var"):
                expected = expected + 1e-5  # detectron2's FrozenBatchNorm2d eps
            torch.testing.assert_close(state[key], expected, msg=key)


D2FORK_KEYS = os.path.join(REPO, "tests", "fixtures", "d2fork_faster_rcnn_R_50_FPN_iou_paa_1x.json")


def _random_d2_weights(shapes, seed=0):
    """Random weights under detectron2's names; BN variances positive, as trained ones are."""
    g = np.random.RandomState(seed)
    return {
        k: (g.uniform(0.5, 1.5, s) if k.endswith("running_var") else g.randn(*s)).astype(np.float32)
        for k, s in shapes.items()
    }


def test_the_authors_fork_checkpoint_fills_the_paa_config_with_every_key(tmp_path):
    """A `.pth` as the fork's trainer writes it (DDP's `module.`, optimizer and iteration
    beside "model") fills faster_rcnn_R_50_FPN_paa_1x.yaml: the strict load refuses a key
    left over on either side, so loading at all means every key was used."""
    with open(D2FORK_KEYS) as f:
        shapes = json.load(f)["shapes"]
    model = build_detection_model(_cfg("faster_rcnn_R_50_FPN_paa_1x.yaml"))
    assert len(shapes) == len(model.state_dict()) == 294
    d2 = _random_d2_weights(shapes)
    path = tmp_path / "model_final.pth"
    model_state = {"module." + k: torch.from_numpy(v) for k, v in d2.items()}
    torch.save({"model": model_state, "optimizer": {}, "iteration": 89999}, path)
    DetectronCheckpointer(_cfg("faster_rcnn_R_50_FPN_paa_1x.yaml"), model).load(str(path))
    state = model.state_dict()
    iou = d2["proposal_generator.rpn_head.iou.weight"]
    torch.testing.assert_close(state["rpn.head.iou_pred.weight"], torch.from_numpy(iou))
    stem_var = d2["backbone.bottom_up.stem.conv1.norm.running_var"]
    assert torch.equal(
        state["backbone.body.stem.bn1.running_var"], torch.from_numpy(stem_var) + 1e-5
    )


class _Detectron2FrozenBN(FrozenBatchNorm2d):
    """detectron2's FrozenBatchNorm2d: scale = weight * rsqrt(running_var + eps), eps 1e-5.
    Ours with the eps, so that both fold into the preceding conv alike (`conv_frozen_bn`)
    and compute in the same order: the random weights blow the features up to ~1e19,
    where any other order of float32 operations differs by far more than 1e-6."""

    def scale_and_shift(self):
        scale = self.weight * (self.running_var + 1e-5).rsqrt()
        return scale, self.bias - self.running_mean * scale


def _with_detectron2_bn(module):
    """`module` (in place) with each FrozenBatchNorm2d replaced by detectron2's."""
    for name, child in module.named_children():
        if type(child).__name__ == "FrozenBatchNorm2d":
            setattr(module, name, _Detectron2FrozenBN(child.weight.numel()))
        else:
            _with_detectron2_bn(child)
    return module


@pytest.mark.parametrize("prefix", ["", "module."])
def test_fork_weights_give_the_forks_features_after_conversion(tmp_path, prefix):
    """The same weights computed twice: by the model with detectron2's FrozenBN holding the
    checkpoint's raw values (the fork's numbers), and by ours after the loader converted
    them (.pkl and .pth); features, objectness, deltas and IoU agree."""
    cfg = _cfg("faster_rcnn_R_50_FPN_paa_1x.yaml", "MODEL.RESNETS.WIDTH_PER_GROUP", 2, *TINY)
    ours = build_detection_model(cfg).eval()
    d2 = _random_d2_weights({_detectron2_name(k): v.shape for k, v in ours.state_dict().items()})
    reference = _with_detectron2_bn(build_detection_model(cfg)).eval()
    reference.load_state_dict(
        {k: torch.from_numpy(d2[_detectron2_name(k)]) for k in reference.state_dict()}
    )
    # detectron2's predictor has the background last and no deltas for it.
    d2["roi_heads.box_predictor.cls_score.weight"] = np.roll(
        d2["roi_heads.box_predictor.cls_score.weight"], -1, axis=0
    )
    d2["roi_heads.box_predictor.bbox_pred.weight"] = d2["roi_heads.box_predictor.bbox_pred.weight"][
        4:
    ]
    d2["roi_heads.box_predictor.bbox_pred.bias"] = d2["roi_heads.box_predictor.bbox_pred.bias"][4:]
    pkl, pth = tmp_path / "fork.pkl", tmp_path / "fork.pth"
    with open(pkl, "wb") as f:
        pickle.dump({"model": {prefix + k: v for k, v in d2.items()}}, f)
    torch.save({"model": {prefix + k: torch.from_numpy(v) for k, v in d2.items()}}, pth)

    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = reference.backbone(x)
        expected_head = reference.rpn.head(expected)
        for path in (pkl, pth):
            DetectronCheckpointer(cfg, ours).load(str(path))
            features = ours.backbone(x)
            for got, want in zip(features, expected):
                torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(ours.rpn.head(features), expected_head, rtol=1e-6, atol=1e-6)
