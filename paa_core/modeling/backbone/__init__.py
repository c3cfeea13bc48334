from .backbone import build_backbone
from . import resnet_light  # noqa: F401  (registers R-18-GN-FPN-RETINANET)
