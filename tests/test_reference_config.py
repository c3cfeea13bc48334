"""Config files written for the reference implementation load as they are.

`fixtures/reference_config_defaults.yml` holds every key of the reference's tree at its
default. A reference run's `config.yml` is that tree with the keys of its
`configs/paa/*.yaml` set; both forms of each seed-table row must load and build the
reference's model (the state-dict manifests), and a file that switches on a part paa_core
leaves out is refused in one line naming the key.
"""

import json
import os
import re

import pytest
import torch
import yaml
from helpers import MANIFESTS, REFERENCE_TOTALS, manifest_numbers
from torch import nn

from paa_core.config import get_cfg
from paa_core.config.loading import load_config
from paa_core.config.reference import check_reference_switches
from paa_core.modeling.backbone import build_backbone
from paa_core.modeling.detector import build_detection_model
from paa_core.modeling.detector.detectors import check_buildable
from paa_core.modeling.registry import BACKBONES
from paa_core.utils.errors import InputError

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULTS_FILE = os.path.join(HERE, "fixtures", "reference_config_defaults.yml")

# What the reference's PAA configs set, with its key names and values.
_COMMON = {
    "MODEL.META_ARCHITECTURE": "GeneralizedRCNN",
    "MODEL.RPN_ONLY": True,
    "MODEL.PAA_ON": True,
    "MODEL.RESNETS.BACKBONE_OUT_CHANNELS": 256,
    "MODEL.RETINANET.USE_C5": False,
    "MODEL.PAA.ANCHOR_SIZES": [64, 128, 256, 512, 1024],
    "MODEL.PAA.ASPECT_RATIOS": [1.0],
    "MODEL.PAA.SCALES_PER_OCTAVE": 1,
    "MODEL.PAA.USE_DCN_IN_TOWER": False,
    "MODEL.PAA.TOPK": 9,
    "MODEL.PAA.IOU_THRESHOLD": 0.1,
    "MODEL.PAA.REG_LOSS_WEIGHT": 1.3,
    "MODEL.PAA.USE_IOU_PRED": True,
    "MODEL.PAA.IOU_LOSS_WEIGHT": 0.5,
    "MODEL.PAA.INFERENCE_SCORE_VOTING": True,
    "DATASETS.TRAIN": ["coco_2017_train"],
    "DATASETS.TEST": ["coco_2017_val"],
    "DATALOADER.SIZE_DIVISIBILITY": 32,
    "INPUT.MIN_SIZE_TRAIN": [800],
    "INPUT.MAX_SIZE_TRAIN": 1333,
    "INPUT.MIN_SIZE_TEST": 800,
    "INPUT.MAX_SIZE_TEST": 1333,
    "SOLVER.BASE_LR": 0.01,
    "SOLVER.WEIGHT_DECAY": 0.0001,
    "SOLVER.IMS_PER_BATCH": 16,
    "SOLVER.WARMUP_METHOD": "constant",
}
_2X_MS = {
    "SOLVER.STEPS": [120000, 160000],
    "SOLVER.MAX_ITER": 180000,
    "INPUT.MIN_SIZE_RANGE_TRAIN": [640, 800],
}
_DCN = {
    "MODEL.RESNETS.WITH_MODULATED_DCN": True,
    "MODEL.RESNETS.DEFORMABLE_GROUPS": 1,
    "MODEL.PAA.USE_DCN_IN_TOWER": True,
}
_RESNEXT_DCN = dict(
    _DCN,
    **{
        "MODEL.RESNETS.STAGE_WITH_DCN": [False, False, True, True],
        "MODEL.RESNETS.STRIDE_IN_1X1": False,
    },
)
_MS_TEST = {
    "TEST.BBOX_AUG.ENABLED": False,
    "TEST.BBOX_AUG.H_FLIP": True,
    "TEST.BBOX_AUG.SCALES": [400, 500, 600, 640, 700, 900, 1000, 1100, 1200, 1300, 1400, 1800],
    "TEST.BBOX_AUG.SCALE_RANGES": [
        [96, 10000],
        [96, 10000],
        [64, 10000],
        [64, 10000],
        [64, 10000],
        [0, 10000],
        [0, 10000],
        [0, 256],
        [0, 256],
        [0, 192],
        [0, 192],
        [0, 96],
    ],
    "TEST.BBOX_AUG.MAX_SIZE": 3000,
    "TEST.BBOX_AUG.SCALE_H_FLIP": True,
    "TEST.BBOX_AUG.VOTE": True,
    "TEST.BBOX_AUG.VOTE_TH": 0.66,
    "TEST.BBOX_AUG.MERGE_TYPE": "soft-vote",
}


def _row(body, weight, *parts):
    row = dict(
        _COMMON,
        **{
            "MODEL.BACKBONE.CONV_BODY": body,
            "MODEL.WEIGHT": "catalog://ImageNetPretrained/" + weight,
        },
    )
    for part in parts:
        row.update(part)
    return row


def _resnext(groups, width):
    return {
        "MODEL.RESNETS.STRIDE_IN_1X1": False,
        "MODEL.RESNETS.NUM_GROUPS": groups,
        "MODEL.RESNETS.WIDTH_PER_GROUP": width,
    }


ROWS = {
    "paa_R_50_FPN_1x": _row(
        "R-50-FPN-RETINANET",
        "MSRA/R-50",
        {"SOLVER.STEPS": [60000, 80000], "SOLVER.MAX_ITER": 90000},
    ),
    "paa_R_50_FPN_1.5x": _row(
        "R-50-FPN-RETINANET",
        "MSRA/R-50",
        {"SOLVER.STEPS": [90000, 120000], "SOLVER.MAX_ITER": 135000},
    ),
    "paa_R_101_FPN_2x": _row("R-101-FPN-RETINANET", "MSRA/R-101", _2X_MS),
    "paa_X_101_FPN_2x": _row(
        "R-101-FPN-RETINANET", "FAIR/20171220/X-101-64x4d", _2X_MS, _resnext(64, 4)
    ),
    "paa_dcnv2_R_101_FPN_2x": _row(
        "R-101-FPN-RETINANET",
        "MSRA/R-101",
        _2X_MS,
        _DCN,
        {"MODEL.RESNETS.STAGE_WITH_DCN": [False, True, True, True]},
    ),
    "paa_dcnv2_X_101_32x8d_FPN_2x": _row(
        "R-101-FPN-RETINANET",
        "FAIR/20171220/X-101-32x8d",
        _2X_MS,
        _resnext(32, 8),
        _RESNEXT_DCN,
        _MS_TEST,
    ),
    "paa_dcnv2_X_101_64x4d_FPN_2x": _row(
        "R-101-FPN-RETINANET",
        "FAIR/20171220/X-101-64x4d",
        _2X_MS,
        _resnext(64, 4),
        _RESNEXT_DCN,
        _MS_TEST,
    ),
    "paa_dcnv2_X_152_32x8d_FPN_2x": _row(
        "R-152-FPN-RETINANET",
        "FAIR/X-152-32x8d-IN5k",
        _resnext(32, 8),
        _RESNEXT_DCN,
        _MS_TEST,
        {
            "SOLVER.STEPS": [240000, 320000],
            "SOLVER.MAX_ITER": 360000,
            "SOLVER.BASE_LR": 0.005,
            "SOLVER.IMS_PER_BATCH": 8,
            "INPUT.MIN_SIZE_RANGE_TRAIN": [640, 864],
            "INPUT.MAX_SIZE_TRAIN": 1440,
            "INPUT.MIN_SIZE_TEST": 864,
            "INPUT.MAX_SIZE_TEST": 1440,
        },
    ),
}


def _reference_defaults():
    with open(DEFAULTS_FILE) as f:
        return yaml.safe_load(f)


def _flatten(tree, prefix=""):
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, prefix + key + "."))
        else:
            flat[prefix + key] = value
    return flat


def _nest(flat, tree=None):
    tree = {} if tree is None else tree
    for key, value in flat.items():
        *path, name = key.split(".")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[name] = value
    return tree


def _as_tuple_text(value):
    """A sequence written the way the reference's configs/paa files write it: "(1, 2)"."""
    if isinstance(value, list) and not any(isinstance(v, list) for v in value):
        return "(" + ", ".join(repr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return value


def _write(tmp_path, name, flat, form):
    """`form` "configs": only the keys set (a configs/paa file); "config.yml": every key
    of the reference's tree, as a reference run saved it."""
    if form == "configs":
        tree = _nest({k: _as_tuple_text(v) for k, v in flat.items()})
    else:
        tree = _nest(flat, _reference_defaults())
    path = tmp_path / f"{name}.{form}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return str(path)


def _get(cfg, key):
    for name in key.split("."):
        cfg = cfg[name]
    return cfg


def _plain(value):
    """yacs keeps sequences as tuples or lists: compare them as nested lists."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def _load(path, opts=()):
    """As the tools load a config: parsed, then checked against what paa_core builds."""
    cfg = get_cfg()
    load_config(cfg, path, list(opts))
    check_buildable(cfg)
    return cfg


def _build_on_meta(cfg):
    """The model on the meta device: its names and shapes, without allocating weights."""
    cfg.MODEL.DEVICE = "cpu"
    with torch.device("meta"):
        return build_detection_model(cfg)


# ----------------------------------------------------------------------------- loading
def test_every_reference_key_at_its_default_loads():
    defaults = _flatten(_reference_defaults())
    assert len(defaults) == 228  # as many as the reference tree has
    cfg = get_cfg()
    # The reference's bare defaults describe a Faster R-CNN R-50-C4: every key loads (its
    # whole-number WEIGHT_DECAY_BIAS 0 too), then the C4 body is refused in one line.
    load_config(cfg, DEFAULTS_FILE, [])
    assert {k: _plain(_get(cfg, k)) for k in defaults} == defaults
    with pytest.raises(InputError) as e:
        check_buildable(cfg)
    message = str(e.value)
    assert "\n" not in message
    assert message == (
        "MODEL.BACKBONE.CONV_BODY 'R-50-C4' is a body paa_core does not have "
        f"(it has {', '.join(sorted(BACKBONES))})"
    )
    cfg.MODEL.PAA_ON = True
    with pytest.raises(
        InputError, match="^MODEL.RPN_ONLY False with MODEL.PAA_ON True asks for ROI heads"
    ):
        check_reference_switches(cfg)


def test_our_defaults_differ_from_the_reference_only_where_its_configs_set_the_key():
    """So a file written for the reference means the same here, key for key. The one
    exception: the Faster R-CNN's keys default to its R-50-FPN model (the reference's to a
    C4 one), and they are inert in every PAA model."""
    set_by_configs = set().union(*ROWS.values())
    defaults = _flatten(_reference_defaults())
    assert set_by_configs <= set(defaults)
    differ = {k for k, v in defaults.items() if _plain(_get(get_cfg(), k)) != v}
    faster_rcnn = {k for k in differ if k.split(".")[1] in ("RPN", "ROI_HEADS", "ROI_BOX_HEAD")}
    assert differ - faster_rcnn <= set_by_configs
    assert {"MODEL.RPN.ANCHOR_STRIDE", "MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR"} <= faster_rcnn
    assert {"MODEL.PAA_ON", "MODEL.RPN_ONLY", "MODEL.RETINANET.USE_C5"} <= differ


@pytest.mark.parametrize("form", ["configs", "config.yml"])
@pytest.mark.parametrize("name", sorted(ROWS))
def test_reference_files_of_each_row_build_the_reference_model(tmp_path, name, form):
    cfg = _load(_write(tmp_path, name, ROWS[name], form))
    # Every key the file sets took effect ...
    assert {k: _plain(_get(cfg, k)) for k in ROWS[name]} == ROWS[name]
    # ... and the model is the reference's, key for key and shape for shape.
    with open(os.path.join(MANIFESTS, name + ".json")) as f:
        manifest = json.load(f)
    state = _build_on_meta(cfg).state_dict()
    assert {k: list(v.shape) for k, v in state.items()} == manifest
    assert (len(state), manifest_numbers(manifest)) == REFERENCE_TOTALS[name]


def test_inert_keys_change_nothing(tmp_path):
    """Keys of parts paa_core leaves out load with any value while their part is off."""
    inert = {
        "MODEL.RPN.ANCHOR_SIZES": [16, 32],
        "MODEL.RPN.NMS_THRESH": 0.5,
        "MODEL.ROI_HEADS.NMS": 0.3,
        "MODEL.ROI_BOX_HEAD.NUM_CLASSES": 5,
        "MODEL.ROI_MASK_HEAD.RESOLUTION": 28,
        "MODEL.ROI_KEYPOINT_HEAD.NUM_CLASSES": 5,
        "MODEL.FCOS.NUM_CONVS": 2,
        "MODEL.ATSS.TOPK": 5,
        "MODEL.RETINANET.NUM_CONVS": 2,
        "MODEL.RETINANET.SCALES_PER_OCTAVE": 1,
        "MODEL.FBNET.ARCH": "cham_v1a",
        "MODEL.CLS_AGNOSTIC_BBOX_REG": True,
        "MODEL.USE_SYNCBN": True,
    }
    plain = _build_on_meta(_load(_write(tmp_path, "plain", ROWS["paa_R_50_FPN_1x"], "config.yml")))
    cfg = _load(_write(tmp_path, "inert", dict(ROWS["paa_R_50_FPN_1x"], **inert), "config.yml"))
    model = _build_on_meta(cfg)
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in plain.state_dict().items()
    }
    assert repr(model) == repr(plain)
    # USE_SYNCBN converts BatchNorm layers: paa_core's models have none.
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


# ----------------------------------------------------------------------------- refusing
def _refused(key, value, part, accepted):
    """(key, value, the whole one-line message that refuses it, as a regex)."""
    return (
        key,
        value,
        re.escape(
            f"{key} {value} asks for {part}, which paa_core does not have (it accepts {accepted})"
        ),
    )


SWITCHED_ON = [
    _refused("MODEL.MASK_ON", "True", "mask heads", "False"),
    _refused("MODEL.KEYPOINT_ON", "True", "keypoint heads", "False"),
    _refused("MODEL.RETINANET_ON", "True", "the RetinaNet detector", "False"),
    _refused("MODEL.FCOS_ON", "True", "the FCOS detector", "False"),
    _refused("MODEL.ATSS_ON", "True", "the ATSS detector", "False"),
    (
        "MODEL.RPN_ONLY",
        "False",
        re.escape(
            "MODEL.RPN_ONLY False with MODEL.PAA_ON True asks for ROI heads after the one-stage PAA "
            "detector, which paa_core does not have (set RPN_ONLY True, or PAA_ON False for Faster R-CNN)"
        ),
    ),
    _refused("MODEL.BACKBONE.USE_GN", "True", "a GroupNorm ResNet body", "False"),
    _refused(
        "MODEL.PAA.REG_LOSS_TYPE", "'smoothl1'", "a box loss other than GIoU", "'iou' or 'giou'"
    ),
    (
        "MODEL.BACKBONE.CONV_BODY",
        "FBNet",
        re.escape(
            "MODEL.BACKBONE.CONV_BODY 'FBNet' is a body paa_core does not have (it has R-101-FPN, "
            "R-101-FPN-RETINANET, R-152-FPN-RETINANET, R-18-GN-FPN, R-18-GN-FPN-RETINANET, R-50-FPN, "
            "R-50-FPN-RETINANET)"
        ),
    ),
]


@pytest.mark.parametrize("where", ["file", "command line"])
@pytest.mark.parametrize("key, value, message", SWITCHED_ON, ids=[k for k, _, _ in SWITCHED_ON])
def test_switching_on_a_missing_part_is_refused_in_one_line(tmp_path, key, value, message, where):
    row = ROWS["paa_R_50_FPN_1x"]
    if where == "file":
        path, opts = (
            _write(tmp_path, "row", dict(row, **{key: yaml.safe_load(value)}), "configs"),
            [],
        )
    else:
        path, opts = _write(tmp_path, "row", row, "configs"), [key, value]
    with pytest.raises(InputError) as e:
        _load(path, opts)
    assert re.fullmatch(message, str(e.value))
    # The library path refuses the same config when it builds the model.
    cfg = get_cfg()
    cfg.merge_from_file(path)
    cfg.merge_from_list(opts)
    with pytest.raises(InputError, match="^" + message + "$"):
        build_detection_model(cfg)


def test_both_giou_names_are_accepted(tmp_path):
    path = _write(tmp_path, "row", ROWS["paa_R_50_FPN_1x"], "config.yml")
    for name in ("iou", "giou"):
        assert _load(path, ["MODEL.PAA.REG_LOSS_TYPE", name]).MODEL.PAA.REG_LOSS_TYPE == name


# ----------------------------------------------------------------------------- FPN keys
def test_fpn_group_norm_and_relu_keys_take_effect():
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs", "paa", "paa_quick_shapes.yaml"))
    cfg.merge_from_list(
        [
            "MODEL.BACKBONE.CONV_BODY",  # the P3-P7 FPN, the one these keys apply to
            "R-18-GN-FPN-RETINANET",
            "MODEL.FPN.USE_GN",
            True,
            "MODEL.FPN.USE_RELU",
            True,
            "MODEL.GROUP_NORM.DIM_PER_GP",
            16,
            "MODEL.GROUP_NORM.NUM_GROUPS",
            -1,
            "MODEL.GROUP_NORM.EPSILON",
            1e-3,
        ]
    )
    fpn = build_backbone(cfg).fpn
    conv, gn, relu = fpn.fpn_inner2
    assert conv.bias is None and isinstance(relu, nn.ReLU)
    assert (gn.num_groups, gn.num_channels, gn.eps) == (4, 64, 1e-3)  # 64 channels / 16
    keys = set(fpn.state_dict())
    assert {"fpn_layer4.0.weight", "fpn_layer4.1.weight", "fpn_layer4.1.bias"} <= keys
    assert "fpn_layer4.0.bias" not in keys and "top_blocks.p6.bias" in keys
    # Conv, GroupNorm, ReLU in that order, on a real input.
    x = torch.randn(1, conv.in_channels, 5, 7)
    expected = torch.relu(torch.nn.functional.group_norm(conv(x), 4, gn.weight, gn.bias, 1e-3))
    assert torch.allclose(fpn.fpn_inner2(x), expected)

    cfg.MODEL.GROUP_NORM.NUM_GROUPS = 32
    with pytest.raises(
        InputError,
        match=r"^MODEL.GROUP_NORM \(DIM_PER_GP 16, NUM_GROUPS 32\) for the FPN's "
        r"MODEL.RESNETS.BACKBONE_OUT_CHANNELS=64: set one of the group size and the number",
    ):
        check_buildable(cfg)
