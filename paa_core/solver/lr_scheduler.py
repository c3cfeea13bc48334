"""Step learning-rate schedule with a warm-up ramp, stepped once per iteration."""

from bisect import bisect_right

import torch

WARMUP_METHODS = ("constant", "linear")


class WarmupMultiStepLR(torch.optim.lr_scheduler._LRScheduler):
    """lr = base_lr * warmup * gamma ** (number of milestones <= iteration).

    During the first `warmup_iters` iterations the factor `warmup` is `warmup_factor`
    ("constant") or ramps linearly from `warmup_factor` to 1 ("linear"); afterwards it is 1.
    """

    def __init__(
        self,
        optimizer,
        milestones,
        gamma=0.1,
        warmup_factor=1.0 / 3,
        warmup_iters=500,
        warmup_method="linear",
        last_epoch=-1,
    ):
        milestones = list(milestones)
        if milestones != sorted(milestones):
            raise ValueError(
                f"WarmupMultiStepLR: milestones must be increasing integers, got {milestones}"
            )
        if warmup_method not in WARMUP_METHODS:
            raise ValueError(
                f"WarmupMultiStepLR: warmup_method must be one of {WARMUP_METHODS}, "
                f"got {warmup_method!r}"
            )
        self.milestones = milestones
        self.gamma = gamma
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def _warmup(self):
        if self.last_epoch >= self.warmup_iters:
            return 1.0
        if self.warmup_method == "constant":
            return self.warmup_factor
        alpha = self.last_epoch / self.warmup_iters
        return self.warmup_factor * (1 - alpha) + alpha

    def get_lr(self):
        factor = self._warmup() * self.gamma ** bisect_right(self.milestones, self.last_epoch)
        return [base_lr * factor for base_lr in self.base_lrs]
