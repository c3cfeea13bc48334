"""What the model builders need of the config's keys, checked before anything is built:
one problem per key at fault, for `check_buildable` to refuse in one line before a tool
loads weights or writes a file. The modules below the builders take plain arguments;
their own argument checks stay ValueErrors, for code that calls them wrongly."""

from paa_core.config.detector import FASTER_RCNN, PAA, class_count, detector_kind

from .backbone.backbone import backbone_problems
from .paa_assigner import assigner_problems
from .registry import ROI_BOX_FEATURE_EXTRACTORS, ROI_BOX_PREDICTOR, RPN_HEADS

# Both FPNs give five levels, each with its own anchor size and stride: P3-P7 (the COCO
# PAA configs) or P2-P6 (the Faster R-CNN and the quick PAA config).
FPN_LEVELS = 5


def _class_problems(cfg):
    classes = class_count(cfg)
    if classes is None or classes.num_classes >= 2:
        return []
    return [
        f"{classes.key}={classes.num_classes}: must count the background plus at least one class"
    ]


def _anchor_problems(prefix, node, strides_key):
    problems = [
        f"{prefix}.{key} has {len(node[key])} entries but the FPN has {FPN_LEVELS} levels, "
        "one entry each"
        for key in ("ANCHOR_SIZES", strides_key)
        if len(node[key]) != FPN_LEVELS
    ]
    if not node.ASPECT_RATIOS:
        problems.append(f"{prefix}.ASPECT_RATIOS is empty: give at least one ratio")
    return problems


def _matcher_problems(prefix, node):
    if node.BG_IOU_THRESHOLD <= node.FG_IOU_THRESHOLD:
        return []
    return [
        f"{prefix}.BG_IOU_THRESHOLD={node.BG_IOU_THRESHOLD} exceeds "
        f"{prefix}.FG_IOU_THRESHOLD={node.FG_IOU_THRESHOLD}"
    ]


def _box_coder_problems(prefix, node):
    if len(node.BBOX_REG_WEIGHTS) == 4:
        return []
    return [f"{prefix}.BBOX_REG_WEIGHTS={tuple(node.BBOX_REG_WEIGHTS)}: must be 4 numbers"]


def _registered(key, name, registry):
    if name in registry:
        return []
    return [f"{key} {name!r} is unknown (paa_core has {', '.join(sorted(registry))})"]


def _head_problems(cfg):
    """The PAA stage's keys, or the RPN's and (Faster R-CNN) the ROI box head's."""
    m = cfg.MODEL
    kind = detector_kind(cfg)
    if kind == PAA:
        problems = _anchor_problems("MODEL.PAA", m.PAA, "ANCHOR_STRIDES")
        if m.PAA.SCALES_PER_OCTAVE < 1:
            problems.append(f"MODEL.PAA.SCALES_PER_OCTAVE={m.PAA.SCALES_PER_OCTAVE}: must be >= 1")
        return problems + _box_coder_problems("MODEL.PAA", m.PAA) + assigner_problems(cfg)
    problems = _anchor_problems("MODEL.RPN", m.RPN, "ANCHOR_STRIDE")
    problems += _matcher_problems("MODEL.RPN", m.RPN)
    problems += _registered("MODEL.RPN.RPN_HEAD", m.RPN.RPN_HEAD, RPN_HEADS)
    if kind == FASTER_RCNN:
        h = m.ROI_BOX_HEAD
        problems += _matcher_problems("MODEL.ROI_HEADS", m.ROI_HEADS)
        problems += _box_coder_problems("MODEL.ROI_HEADS", m.ROI_HEADS)
        problems += _registered(
            "MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR", h.FEATURE_EXTRACTOR, ROI_BOX_FEATURE_EXTRACTORS
        )
        problems += _registered("MODEL.ROI_BOX_HEAD.PREDICTOR", h.PREDICTOR, ROI_BOX_PREDICTOR)
    return problems


def model_problems(cfg) -> list[str]:
    """One line per key of `cfg` whose value the builders of its registered body and
    heads cannot use."""
    return backbone_problems(cfg) + _class_problems(cfg) + _head_problems(cfg)
