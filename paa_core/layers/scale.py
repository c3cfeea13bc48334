"""Learnable scalar multiplier (one per FPN level on the box regression output)."""

import torch
from torch import nn


class Scale(nn.Module):
    def __init__(self, init_value=1.0):
        super().__init__()
        # Shape [1] matches the reference state dict (`...scales.<i>.scale`).
        self.scale = nn.Parameter(torch.tensor([float(init_value)]))

    def forward(self, x):
        return x * self.scale
