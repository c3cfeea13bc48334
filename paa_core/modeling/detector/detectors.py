"""cfg -> the detector."""

from paa_core.config.reference import check_reference_switches

from .generalized_rcnn import GeneralizedRCNN


def build_detection_model(cfg):
    """MODEL.META_ARCHITECTURE names the one detector class there is (the reference's name)."""
    check_reference_switches(cfg)
    name = cfg.MODEL.META_ARCHITECTURE
    if name != GeneralizedRCNN.__name__:
        raise KeyError(
            f"MODEL.META_ARCHITECTURE '{name}' is unknown; known: {GeneralizedRCNN.__name__}"
        )
    return GeneralizedRCNN(cfg)
