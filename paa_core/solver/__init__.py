from .build import make_amp_dtype, make_grad_scaler, make_lr_scheduler, make_optimizer
from .lr_scheduler import WarmupMultiStepLR

__all__ = [
    "WarmupMultiStepLR",
    "make_amp_dtype",
    "make_grad_scaler",
    "make_lr_scheduler",
    "make_optimizer",
]
