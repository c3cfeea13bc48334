"""MODEL.META_ARCHITECTURE -> detector class."""
from paa_core.config.reference import check_reference_switches

from .generalized_rcnn import GeneralizedRCNN

_DETECTION_META_ARCHITECTURES = {"GeneralizedRCNN": GeneralizedRCNN}


def build_detection_model(cfg):
    check_reference_switches(cfg)
    name = cfg.MODEL.META_ARCHITECTURE
    if name not in _DETECTION_META_ARCHITECTURES:
        raise KeyError(
            f"MODEL.META_ARCHITECTURE '{name}' is unknown; known: "
            f"{', '.join(sorted(_DETECTION_META_ARCHITECTURES))}"
        )
    return _DETECTION_META_ARCHITECTURES[name](cfg)
