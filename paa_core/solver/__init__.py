from .build import make_lr_scheduler, make_optimizer
from .lr_scheduler import WarmupMultiStepLR

__all__ = ["WarmupMultiStepLR", "make_lr_scheduler", "make_optimizer"]
