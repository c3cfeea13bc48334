"""MODEL.META_ARCHITECTURE -> detector class."""
from .generalized_rcnn import GeneralizedRCNN

_DETECTION_META_ARCHITECTURES = {"GeneralizedRCNN": GeneralizedRCNN}


def build_detection_model(cfg):
    name = cfg.MODEL.META_ARCHITECTURE
    if name not in _DETECTION_META_ARCHITECTURES:
        raise KeyError(
            f"MODEL.META_ARCHITECTURE '{name}' is unknown; known: "
            f"{', '.join(sorted(_DETECTION_META_ARCHITECTURES))}"
        )
    return _DETECTION_META_ARCHITECTURES[name](cfg)
