"""A config value the builders cannot use is refused before anything is built, loaded or
written: one InputError line naming every key at fault (tools/*: test_faults.py)."""

import os
import re

import pytest
import torch
from helpers import CONFIGS, FIXTURES

from paa_core.checkpoint.checkpoint import DetectronCheckpointer, catalog_url
from paa_core.config import get_cfg
from paa_core.data.transforms import build_transforms
from paa_core.engine.cli import check_config
from paa_core.modeling.detector import build_detection_model
from paa_core.utils.errors import InputError

BASES = {
    "paa": (os.path.join(FIXTURES, "tiny_paa.yaml"), []),
    "rpn": (os.path.join(FIXTURES, "tiny_rpn.yaml"), []),
    "faster_rcnn": (
        os.path.join(FIXTURES, "tiny_rpn.yaml"),
        ["MODEL.RPN_ONLY", False, "MODEL.ROI_BOX_HEAD.NUM_CLASSES", 3],
    ),
    "r50": (os.path.join(CONFIGS, "paa_R_50_FPN_1x.yaml"), []),
}
R50_DCN = ["MODEL.RESNETS.STAGE_WITH_DCN", (False, True, True, True)]
FPN_LEVELS = "has {} entries but the FPN has 5 levels, one entry each"


def make_cfg(base, *opts):
    path, base_opts = BASES[base]
    cfg = get_cfg()
    cfg.merge_from_file(path)
    cfg.merge_from_list(base_opts + list(opts))
    cfg.MODEL.DEVICE = "cpu"
    return cfg


MODEL_CASES = [
    (
        "paa",
        ["MODEL.PAA.NUM_CLASSES", 1],
        "MODEL.PAA.NUM_CLASSES=1: must count the background plus at least one class",
    ),
    (
        "faster_rcnn",
        ["MODEL.ROI_BOX_HEAD.NUM_CLASSES", 1],
        "MODEL.ROI_BOX_HEAD.NUM_CLASSES=1: must count the background plus at least one class",
    ),
    (
        "paa",
        ["MODEL.PAA.ANCHOR_STRIDES", (8, 16, 32, 64)],
        "MODEL.PAA.ANCHOR_STRIDES " + FPN_LEVELS.format(4),
    ),
    (
        "rpn",
        ["MODEL.RPN.ANCHOR_SIZES", (32,), "MODEL.RPN.ANCHOR_STRIDE", (4, 8, 16, 32, 64, 128)],
        f"MODEL.RPN.ANCHOR_SIZES {FPN_LEVELS.format(1)}; "
        f"MODEL.RPN.ANCHOR_STRIDE {FPN_LEVELS.format(6)}",
    ),
    (
        "paa",
        ["MODEL.PAA.ASPECT_RATIOS", (), "MODEL.PAA.SCALES_PER_OCTAVE", 0],
        "MODEL.PAA.ASPECT_RATIOS is empty: give at least one ratio; "
        "MODEL.PAA.SCALES_PER_OCTAVE=0: must be >= 1",
    ),
    (
        "paa",
        ["MODEL.PAA.GMM_INIT_VARIANCE", "sample"],
        "MODEL.PAA.GMM_INIT_VARIANCE: unknown value 'sample', expected unit or spread",
    ),
    (
        "paa",
        ["MODEL.PAA.BBOX_REG_WEIGHTS", (10.0, 10.0, 5.0)],
        "MODEL.PAA.BBOX_REG_WEIGHTS=(10.0, 10.0, 5.0): must be 4 numbers",
    ),
    (
        "rpn",
        ["MODEL.RPN.FG_IOU_THRESHOLD", 0.3, "MODEL.RPN.BG_IOU_THRESHOLD", 0.4],
        "MODEL.RPN.BG_IOU_THRESHOLD=0.4 exceeds MODEL.RPN.FG_IOU_THRESHOLD=0.3",
    ),
    (
        "faster_rcnn",
        ["MODEL.ROI_HEADS.BG_IOU_THRESHOLD", 0.6, "MODEL.ROI_HEADS.BBOX_REG_WEIGHTS", (1.0,)],
        "MODEL.ROI_HEADS.BG_IOU_THRESHOLD=0.6 exceeds MODEL.ROI_HEADS.FG_IOU_THRESHOLD=0.5; "
        "MODEL.ROI_HEADS.BBOX_REG_WEIGHTS=(1.0,): must be 4 numbers",
    ),
    (
        "faster_rcnn",
        ["MODEL.RPN.RPN_HEAD", "TwoConvRPNHead", "MODEL.ROI_BOX_HEAD.PREDICTOR", "C4Predictor"],
        "MODEL.RPN.RPN_HEAD 'TwoConvRPNHead' is unknown (paa_core has SingleConvRPNHead); "
        "MODEL.ROI_BOX_HEAD.PREDICTOR 'C4Predictor' is unknown (paa_core has FPNPredictor)",
    ),
    (
        "paa",
        ["MODEL.FPN.USE_GN", True, "MODEL.GROUP_NORM.NUM_GROUPS", 24],
        "MODEL.GROUP_NORM (DIM_PER_GP -1, NUM_GROUPS 24) for the FPN's "
        "MODEL.RESNETS.BACKBONE_OUT_CHANNELS=64: 64 channels do not split into equal groups",
    ),
    (
        "r50",
        ["MODEL.RESNETS.STAGE_WITH_DCN", (False, True, True)],
        "MODEL.RESNETS.STAGE_WITH_DCN has 3 flags for the 4 stages res2..res5",
    ),
    (
        "r50",
        R50_DCN + ["MODEL.RESNETS.DEFORMABLE_GROUPS", 3],
        "MODEL.RESNETS.DEFORMABLE_GROUPS=3 does not divide the 128 channels of the first "
        "deformable stage (MODEL.RESNETS.STAGE_WITH_DCN)",
    ),
]


@pytest.mark.parametrize("base, opts, message", MODEL_CASES)
def test_model_keys_are_refused_before_anything_is_built(base, opts, message):
    cfg = make_cfg(base, *opts)
    with pytest.raises(InputError, match="^" + re.escape(message) + "$"):
        build_detection_model(cfg)
    with pytest.raises(InputError, match="^" + re.escape(message) + "$"):
        check_config(cfg, ())


def test_the_values_next_to_the_refused_ones_build():
    """4 deformable groups divide res3's 128 channels (3 did not); 8 groups split the
    FPN's 64 (24 did not); a lower RPN threshold may equal the higher one."""
    cfg = make_cfg("r50", *R50_DCN, "MODEL.RESNETS.DEFORMABLE_GROUPS", 4)
    with torch.device("meta"):
        conv2 = build_detection_model(cfg).backbone.body.layer2[0].conv2
    assert (conv2.conv.in_channels, conv2.conv.deformable_groups) == (128, 4)
    assert conv2.offset.out_channels == 4 * 9 * 2  # (x, y) offsets per group and tap

    cfg = make_cfg("paa", "MODEL.FPN.USE_GN", True, "MODEL.GROUP_NORM.NUM_GROUPS", 8)
    gn = build_detection_model(cfg).backbone.fpn.fpn_inner2[1]
    assert (gn.num_groups, gn.num_channels) == (8, 64)

    cfg = make_cfg("rpn", "MODEL.RPN.FG_IOU_THRESHOLD", 0.4, "MODEL.RPN.BG_IOU_THRESHOLD", 0.4)
    matcher = build_detection_model(cfg).rpn.loss_evaluator.proposal_matcher
    assert matcher.low_threshold == matcher.high_threshold == 0.4


def test_each_run_checks_the_keys_it_reads():
    """Evaluation does not read the solver or the training sizes; training (--skip-test)
    does not read test-time augmentation."""
    solver = ["SOLVER.OPTIMIZER", "Adam", "INPUT.MIN_SIZE_TRAIN", ()]
    cfg = make_cfg("paa", "DATASETS.TRAIN", ("shapes_train",), "DATASETS.TEST", (), *solver)
    check_config(cfg, ())
    message = "SOLVER.OPTIMIZER: unknown optimizer 'Adam', expected one of AdamW, SGD"
    with pytest.raises(InputError, match="^" + re.escape(message) + "$"):
        check_config(cfg, ("TRAIN",))
    with pytest.raises(InputError, match="^DATASETS.TEST is empty: name at least one dataset$"):
        check_config(cfg, ("TEST",))
    cfg.SOLVER.OPTIMIZER = "SGD"
    with pytest.raises(InputError, match="^INPUT.MIN_SIZE_TRAIN is empty: give at least one size$"):
        check_config(cfg, ("TRAIN",))
    with pytest.raises(InputError, match="^INPUT.MIN_SIZE_TRAIN is empty"):
        build_transforms(cfg, is_train=True)
    assert build_transforms(cfg, is_train=False).transforms[0].min_size == (64,)

    tta = ["TEST.BBOX_AUG.ENABLED", True, "TEST.BBOX_AUG.MERGE_TYPE", "max"]
    cfg = make_cfg(
        "paa", "DATASETS.TRAIN", ("shapes_train",), "DATASETS.TEST", ("shapes_val",), *tta
    )
    check_config(cfg, ("TRAIN",))
    with pytest.raises(
        InputError,
        match=r"^TEST.BBOX_AUG.MERGE_TYPE must be one of \('vote', 'soft-vote'\), got 'max'$",
    ):
        check_config(cfg, ("TEST",))


def test_an_unknown_catalog_weight_names_where_it_was_given():
    cfg = make_cfg("paa", "MODEL.WEIGHT", "catalog://ImageNetPretrained/MSRA/R-77")
    known = "known: ImageNetPretrained/FAIR/20171220/X-101-32x8d, "
    with pytest.raises(
        InputError,
        match="^MODEL.WEIGHT catalog://ImageNetPretrained/MSRA/R-77: model "
        f"'ImageNetPretrained/MSRA/R-77' is not in the catalog; {known}",
    ):
        check_config(cfg, ())
    assert catalog_url(cfg, "catalog://ImageNetPretrained/MSRA/R-50").endswith("MSRA/R-50.pkl")
    # The same name given as a weight file (--ckpt, --weights): named as given.
    model = torch.nn.Linear(1, 1)
    with pytest.raises(
        InputError, match="^catalog://ImageNetPretrained/MSRA/R-77: model 'ImageNetPretrained"
    ):
        DetectronCheckpointer(cfg, model).load(cfg.MODEL.WEIGHT, use_latest=False)
