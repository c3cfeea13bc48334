from .build import check_solver, make_amp_dtype, make_grad_scaler, make_lr_scheduler, make_optimizer
from .lr_scheduler import WarmupMultiStepLR

__all__ = [
    "WarmupMultiStepLR",
    "check_solver",
    "make_amp_dtype",
    "make_grad_scaler",
    "make_lr_scheduler",
    "make_optimizer",
]
