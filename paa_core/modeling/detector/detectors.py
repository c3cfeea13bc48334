"""cfg -> the detector."""

from paa_core.config.reference import reference_problems
from paa_core.utils.errors import InputError

from ..checks import model_problems
from ..registry import BACKBONES
from .generalized_rcnn import GeneralizedRCNN


def check_buildable(cfg) -> None:
    """Raise a one-line InputError naming every key of `cfg` that asks for a part paa_core
    does not have (a reference switch, a body, a detector class) or for values its model
    builders cannot use. Nothing is built: the tools run it before they write anything."""
    problems = reference_problems(cfg)
    name = cfg.MODEL.META_ARCHITECTURE
    if name != GeneralizedRCNN.__name__:
        problems.append(
            f"MODEL.META_ARCHITECTURE {name!r} is unknown (paa_core has {GeneralizedRCNN.__name__})"
        )
    body = cfg.MODEL.BACKBONE.CONV_BODY
    if body in BACKBONES:
        # The other keys' meaning depends on the body (a C4 model's anchors are one level).
        problems += model_problems(cfg)
    else:
        problems.append(
            f"MODEL.BACKBONE.CONV_BODY {body!r} is a body paa_core does not have "
            f"(it has {', '.join(sorted(BACKBONES))})"
        )
    if problems:
        raise InputError("; ".join(problems))


def build_detection_model(cfg) -> GeneralizedRCNN:
    """MODEL.META_ARCHITECTURE names the one detector class there is (the reference's name).
    A config `check_buildable` refuses is refused here too, before anything is built."""
    check_buildable(cfg)
    return GeneralizedRCNN(cfg)
