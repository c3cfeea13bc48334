"""cfg -> the detector."""

from paa_core.config.reference import reference_problems
from paa_core.utils.errors import InputError

from ..registry import BACKBONES
from .generalized_rcnn import GeneralizedRCNN


def check_buildable(cfg) -> None:
    """Raise a one-line InputError naming every key of `cfg` that asks for a part paa_core
    does not have: a reference switch, or a body that no backbone builder registers."""
    problems = reference_problems(cfg)
    body = cfg.MODEL.BACKBONE.CONV_BODY
    if body not in BACKBONES:
        problems.append(
            f"MODEL.BACKBONE.CONV_BODY {body!r} is a body paa_core does not have "
            f"(it has {', '.join(sorted(BACKBONES))})"
        )
    if problems:
        raise InputError("; ".join(problems))


def build_detection_model(cfg) -> GeneralizedRCNN:
    """MODEL.META_ARCHITECTURE names the one detector class there is (the reference's name)."""
    check_buildable(cfg)
    name = cfg.MODEL.META_ARCHITECTURE
    if name != GeneralizedRCNN.__name__:
        raise KeyError(
            f"MODEL.META_ARCHITECTURE '{name}' is unknown; known: {GeneralizedRCNN.__name__}"
        )
    return GeneralizedRCNN(cfg)
