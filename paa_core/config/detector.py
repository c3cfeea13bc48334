"""Which detector a config builds and which key counts its classes: the one place that
reads MODEL.PAA_ON and MODEL.RPN_ONLY for the rest of paa_core."""

from typing import NamedTuple

# The three models a config can build.
PAA = "paa"  # the one-stage PAA detector (MODEL.PAA_ON)
FASTER_RCNN = "faster_rcnn"  # RPN + ROI box head
PROPOSALS_ONLY = "rpn"  # the Faster R-CNN's RPN alone (MODEL.RPN_ONLY)


class ClassCount(NamedTuple):
    """The key that counts a detector's classes (background included) and its value."""

    key: str
    num_classes: int


def unbuildable_kind(cfg) -> str | None:
    """Why the switches ask for a detector paa_core does not have, or None."""
    if cfg.MODEL.PAA_ON and not cfg.MODEL.RPN_ONLY:
        return (
            "MODEL.RPN_ONLY False with MODEL.PAA_ON True asks for ROI heads after "
            "the one-stage PAA detector, which paa_core does not have (set RPN_ONLY "
            "True, or PAA_ON False for Faster R-CNN)"
        )
    return None


def detector_kind(cfg) -> str:
    """PAA, FASTER_RCNN or PROPOSALS_ONLY (`unbuildable_kind` refuses the fourth
    combination of the switches, with `check_reference_switches`)."""
    if cfg.MODEL.PAA_ON:
        return PAA
    return PROPOSALS_ONLY if cfg.MODEL.RPN_ONLY else FASTER_RCNN


def class_count(cfg) -> ClassCount | None:
    """MODEL.PAA.NUM_CLASSES for PAA, MODEL.ROI_BOX_HEAD.NUM_CLASSES for Faster R-CNN,
    None for a proposal-only model (it has no classes)."""
    kind = detector_kind(cfg)
    if kind == PAA:
        return ClassCount("MODEL.PAA.NUM_CLASSES", cfg.MODEL.PAA.NUM_CLASSES)
    if kind == FASTER_RCNN:
        return ClassCount("MODEL.ROI_BOX_HEAD.NUM_CLASSES", cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES)
    return None
