"""Turns the SOLVER config into an optimizer and a learning-rate schedule."""

import torch

from paa_core.utils.errors import InputError

from .lr_scheduler import WARMUP_METHODS, WarmupMultiStepLR

# SOLVER.OPTIMIZER -> how to build it from the parameter groups and the config.
OPTIMIZERS = {
    "SGD": lambda params, solver: torch.optim.SGD(
        params, lr=solver.BASE_LR, momentum=solver.MOMENTUM
    ),
    # Decoupled weight decay; trains the quick start's from-scratch model far faster than SGD.
    # Fused: one kernel per parameter instead of a dozen small ops (the groups hold one
    # tensor each), 5x less time in the quick start's step: 40 ms less CPU per iteration.
    "AdamW": lambda params, solver: torch.optim.AdamW(
        params, lr=solver.BASE_LR, betas=solver.BETAS, fused=True
    ),
}
AMP_MODES = ("off", "bf16", "fp16", "auto")


def check_solver(cfg):
    """Raise a one-line InputError naming every SOLVER key that no optimizer, autocast
    mode or schedule here takes; the make_* functions below run it first."""
    s = cfg.SOLVER
    problems = []
    if s.OPTIMIZER not in OPTIMIZERS:
        problems.append(
            f"SOLVER.OPTIMIZER: unknown optimizer {s.OPTIMIZER!r}, expected one of "
            + ", ".join(sorted(OPTIMIZERS))
        )
    if s.AMP not in AMP_MODES:
        problems.append(f"SOLVER.AMP: unknown value {s.AMP!r}, expected off, bf16, fp16 or auto")
    if s.WARMUP_METHOD not in WARMUP_METHODS:
        problems.append(
            f"SOLVER.WARMUP_METHOD: unknown method {s.WARMUP_METHOD!r}, expected "
            + " or ".join(WARMUP_METHODS)
        )
    if list(s.STEPS) != sorted(s.STEPS):
        problems.append(f"SOLVER.STEPS={tuple(s.STEPS)}: must be in increasing order")
    if problems:
        raise InputError("; ".join(problems))


def make_optimizer(cfg, model):
    """`SOLVER.OPTIMIZER` (SGD with momentum for the paper configs) with one parameter
    group per trainable tensor.

    Biases get `BIAS_LR_FACTOR` times the base lr and `WEIGHT_DECAY_BIAS` (the
    Detectron recipe); the offset convs of deformable convs `DCONV_OFFSETS_LR_FACTOR`
    times that; frozen parameters are left out.
    """
    check_solver(cfg)
    params = []
    for key, value in model.named_parameters():
        if not value.requires_grad:
            continue
        lr, weight_decay = cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY
        if key.endswith("bias"):
            lr = cfg.SOLVER.BASE_LR * cfg.SOLVER.BIAS_LR_FACTOR
            weight_decay = cfg.SOLVER.WEIGHT_DECAY_BIAS
        if key.endswith((".offset.weight", ".offset.bias")):
            lr *= cfg.SOLVER.DCONV_OFFSETS_LR_FACTOR
        params.append({"params": [value], "lr": lr, "weight_decay": weight_decay})
    return OPTIMIZERS[cfg.SOLVER.OPTIMIZER](params, cfg.SOLVER)


def native_bf16(device):
    """True when `device` computes bfloat16 natively (so autocast speeds it up)."""
    if device.type == "cuda":
        # Pre-Ampere GPUs (V100, T4) only emulate bf16, slower than float32.
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and (
        torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    )


def make_amp_dtype(cfg, device):
    """`SOLVER.AMP` -> the autocast dtype of the training forward, or None for float32.

    "auto": bfloat16 where the device computes it natively; on a GPU without it float16
    (with a gradient scaler, see `make_grad_scaler`); float32 on other CPUs.
    """
    check_solver(cfg)
    amp = cfg.SOLVER.AMP
    if amp == "bf16" or (amp == "auto" and native_bf16(device)):
        return torch.bfloat16
    if amp == "fp16" or (amp == "auto" and device.type == "cuda"):
        return torch.float16
    return None


def make_grad_scaler(amp_dtype, device):
    """A loss scaler for float16 training (its gradients underflow without one), else None.
    bfloat16 has float32's exponent range and needs none."""
    if amp_dtype != torch.float16:
        return None
    return torch.amp.GradScaler(device.type)


def make_lr_scheduler(cfg, optimizer):
    check_solver(cfg)
    return WarmupMultiStepLR(
        optimizer,
        cfg.SOLVER.STEPS,
        cfg.SOLVER.GAMMA,
        warmup_factor=cfg.SOLVER.WARMUP_FACTOR,
        warmup_iters=cfg.SOLVER.WARMUP_ITERS,
        warmup_method=cfg.SOLVER.WARMUP_METHOD,
    )
