"""Keys of the reference implementation's config tree for parts paa_core leaves out.

Files written for the reference (its `configs/paa/*.yaml`, or the merged `config.yml`
it saved beside every checkpoint, which holds every key of its tree) must load
unchanged. Keys of parts paa_core has live in `defaults.py`, under the reference's
names, and take effect. The keys below configure parts that paa_core does not have
(C4 RPN/ROI box head options, mask/keypoint heads, the RetinaNet, FCOS and ATSS detectors,
FBNet bodies): they load with the reference's defaults and stay inert while their part
is off. `check_reference_switches` refuses, in one line, a config that switches one of
those parts on, so that nothing a file asks for is ignored silently.
"""

from yacs.config import CfgNode as CN

from paa_core.utils.errors import InputError

from .detector import unbuildable_kind

_ANCHOR_STRIDES = (8, 16, 32, 64, 128)

# Inert keys with the reference's defaults, as {node path: {key: default}}.
_INERT = {
    "MODEL": {
        "MASK_ON": False,
        "KEYPOINT_ON": False,
        "RETINANET_ON": False,
        "FCOS_ON": False,
        "ATSS_ON": False,
        # Class-agnostic box regression of the ROI box head.
        "CLS_AGNOSTIC_BBOX_REG": False,
        # The reference converts BatchNorm layers to SyncBatchNorm; paa_core's models have
        # none (FrozenBatchNorm2d in the ResNets, GroupNorm elsewhere), so there, too,
        # this changes nothing.
        "USE_SYNCBN": False,
    },
    "MODEL.BACKBONE": {"USE_GN": False},
    # The rest of the RPN's and ROI heads' keys (the Faster R-CNN's own are in defaults.py):
    # C4 models and options the Faster R-CNN path does not have.
    "MODEL.RPN": {
        "USE_FPN": False,
        "STRADDLE_THRESH": 0,
        "POST_NMS_TOP_N_TRAIN": 2000,
        "POST_NMS_TOP_N_TEST": 1000,
    },
    "MODEL.ROI_HEADS": {
        "USE_FPN": False,
    },
    "MODEL.ROI_BOX_HEAD": {
        "USE_GN": False,
        "DILATION": 1,
        "CONV_HEAD_DIM": 256,
        "NUM_STACKED_CONVS": 4,
    },
    "MODEL.ROI_MASK_HEAD": {
        "FEATURE_EXTRACTOR": "ResNet50Conv5ROIFeatureExtractor",
        "PREDICTOR": "MaskRCNNC4Predictor",
        "POOLER_RESOLUTION": 14,
        "POOLER_SAMPLING_RATIO": 0,
        "POOLER_SCALES": (1.0 / 16,),
        "MLP_HEAD_DIM": 1024,
        "CONV_LAYERS": (256, 256, 256, 256),
        "RESOLUTION": 14,
        "SHARE_BOX_FEATURE_EXTRACTOR": True,
        "POSTPROCESS_MASKS": False,
        "POSTPROCESS_MASKS_THRESHOLD": 0.5,
        "DILATION": 1,
        "USE_GN": False,
    },
    "MODEL.ROI_KEYPOINT_HEAD": {
        "FEATURE_EXTRACTOR": "KeypointRCNNFeatureExtractor",
        "PREDICTOR": "KeypointRCNNPredictor",
        "POOLER_RESOLUTION": 14,
        "POOLER_SAMPLING_RATIO": 0,
        "POOLER_SCALES": (1.0 / 16,),
        "MLP_HEAD_DIM": 1024,
        "CONV_LAYERS": (512,) * 8,
        "RESOLUTION": 14,
        "NUM_CLASSES": 17,
        "SHARE_BOX_FEATURE_EXTRACTOR": True,
    },
    # The ATSS, FCOS and RetinaNet detectors (MODEL.ATSS_ON, FCOS_ON, RETINANET_ON).
    "MODEL.ATSS": {
        "NUM_CLASSES": 81,
        "ANCHOR_SIZES": (64, 128, 256, 512, 1024),
        "ASPECT_RATIOS": (1.0,),
        "ANCHOR_STRIDES": _ANCHOR_STRIDES,
        "STRADDLE_THRESH": 0,
        "OCTAVE": 2.0,
        "SCALES_PER_OCTAVE": 1,
        "NUM_CONVS": 4,
        "USE_DCN_IN_TOWER": False,
        "LOSS_ALPHA": 0.25,
        "LOSS_GAMMA": 2.0,
        "POSITIVE_TYPE": "ATSS",
        "FG_IOU_THRESHOLD": 0.5,
        "BG_IOU_THRESHOLD": 0.4,
        "TOPK": 9,
        "REGRESSION_TYPE": "BOX",
        "REG_LOSS_WEIGHT": 2.0,
        "PRIOR_PROB": 0.01,
        "INFERENCE_TH": 0.05,
        "NMS_TH": 0.6,
        "PRE_NMS_TOP_N": 1000,
    },
    "MODEL.FCOS": {
        "NUM_CLASSES": 81,
        "FPN_STRIDES": _ANCHOR_STRIDES,
        "PRIOR_PROB": 0.01,
        "INFERENCE_TH": 0.05,
        "NMS_TH": 0.6,
        "PRE_NMS_TOP_N": 1000,
        "LOSS_ALPHA": 0.25,
        "LOSS_GAMMA": 2.0,
        "NUM_CONVS": 4,
        "CENTER_SAMPLING_RADIUS": 0.0,
        "IOU_LOSS_TYPE": "iou",
        "NORM_REG_TARGETS": False,
        "CENTERNESS_ON_REG": False,
        "USE_DCN_IN_TOWER": False,
    },
    # MODEL.RETINANET.USE_C5 is an FPN switch, in defaults.py.
    "MODEL.RETINANET": {
        "NUM_CLASSES": 81,
        "ANCHOR_SIZES": (32, 64, 128, 256, 512),
        "ASPECT_RATIOS": (0.5, 1.0, 2.0),
        "ANCHOR_STRIDES": _ANCHOR_STRIDES,
        "STRADDLE_THRESH": 0,
        "OCTAVE": 2.0,
        "SCALES_PER_OCTAVE": 3,
        "NUM_CONVS": 4,
        "BBOX_REG_WEIGHT": 4.0,
        "BBOX_REG_BETA": 0.11,
        "PRE_NMS_TOP_N": 1000,
        "FG_IOU_THRESHOLD": 0.5,
        "BG_IOU_THRESHOLD": 0.4,
        "LOSS_ALPHA": 0.25,
        "LOSS_GAMMA": 2.0,
        "PRIOR_PROB": 0.01,
        "INFERENCE_TH": 0.05,
        "NMS_TH": 0.4,
    },
    # FBNet bodies (a MODEL.BACKBONE.CONV_BODY that paa_core does not register).
    "MODEL.FBNET": {
        "ARCH": "default",
        "ARCH_DEF": "",
        "BN_TYPE": "bn",
        "SCALE_FACTOR": 1.0,
        "WIDTH_DIVISOR": 1,
        "DW_CONV_SKIP_BN": True,
        "DW_CONV_SKIP_RELU": True,
        "DET_HEAD_LAST_SCALE": 1.0,
        "DET_HEAD_BLOCKS": [],
        "DET_HEAD_STRIDE": 0,
        "KPTS_HEAD_LAST_SCALE": 0.0,
        "KPTS_HEAD_BLOCKS": [],
        "KPTS_HEAD_STRIDE": 0,
        "MASK_HEAD_LAST_SCALE": 0.0,
        "MASK_HEAD_BLOCKS": [],
        "MASK_HEAD_STRIDE": 0,
        "RPN_HEAD_BLOCKS": 0,
        "RPN_BN_TYPE": "",
    },
}

# Keys whose other values switch on a part paa_core leaves out:
# key -> (the values paa_core builds, what any other value asks for).
SWITCHES = {
    "MODEL.MASK_ON": ((False,), "mask heads"),
    "MODEL.KEYPOINT_ON": ((False,), "keypoint heads"),
    "MODEL.RETINANET_ON": ((False,), "the RetinaNet detector"),
    "MODEL.FCOS_ON": ((False,), "the FCOS detector"),
    "MODEL.ATSS_ON": ((False,), "the ATSS detector"),
    "MODEL.BACKBONE.USE_GN": ((False,), "a GroupNorm ResNet body"),
    "MODEL.PAA.REG_LOSS_TYPE": (("iou", "giou"), "a box loss other than GIoU"),
}


def _node(cfg, path):
    for name in path.split("."):
        if name not in cfg:
            cfg[name] = CN()
        cfg = cfg[name]
    return cfg


def add_reference_parts(cfg):
    """Add the inert keys to the default tree `cfg` (each key has one home: none may exist)."""
    for path, keys in _INERT.items():
        node = _node(cfg, path)
        for key, value in keys.items():
            if key in node:
                raise KeyError(f"{path}.{key} is defined twice")
            node[key] = value


def _get(cfg, key):
    for name in key.split("."):
        cfg = cfg[name]
    return cfg


def reference_problems(cfg) -> list[str]:
    """One line per key of `cfg` that switches on a part paa_core leaves out."""
    kind_problem = unbuildable_kind(cfg)
    problems = [kind_problem] if kind_problem else []
    for key, (accepted, part) in SWITCHES.items():
        value = _get(cfg, key)
        if value not in accepted:
            expected = " or ".join(repr(a) if isinstance(a, str) else str(a) for a in accepted)
            problems.append(
                f"{key} {value!r} asks for {part}, which paa_core does not have "
                f"(it accepts {expected})"
            )
    return problems


def check_reference_switches(cfg):
    """Raise a one-line InputError naming every key of `cfg` that asks for a part paa_core
    leaves out. (A body no backbone builder registers is refused by the model builder.)"""
    problems = reference_problems(cfg)
    if problems:
        raise InputError("; ".join(problems))
