"""Feature pyramids: C3..C5 -> P3..P7 (RetinaNet variant, PAA) and C2..C5 -> P2..P6 (Faster R-CNN)."""

from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn


class FPN(nn.Module):
    """Top-down pathway with 1x1 laterals and 3x3 output convs.

    Lateral i is `fpn_inner{first_index + i}` / `fpn_layer{first_index + i}`: with C3
    as the first input the reference names it 2 (C2 has no lateral in this variant).
    """

    def __init__(
        self,
        in_channels_list: Sequence[int],
        out_channels: int,
        conv_block: Callable[[int, int, int], nn.Module],
        top_blocks: nn.Module | None = None,
        first_index: int = 2,
    ):
        super().__init__()
        self.inner_blocks = []
        self.layer_blocks = []
        for idx, in_channels in enumerate(in_channels_list, start=first_index):
            inner_name, layer_name = f"fpn_inner{idx}", f"fpn_layer{idx}"
            self.add_module(inner_name, conv_block(in_channels, out_channels, 1))
            self.add_module(layer_name, conv_block(out_channels, out_channels, 3))
            self.inner_blocks.append(inner_name)
            self.layer_blocks.append(layer_name)
        self.top_blocks = top_blocks

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        """x: [C3, C4, C5] (or [C2, ..., C5]) -> [P3, P4, P5] (or [P2, ..., P5]), plus the
        top blocks' levels."""
        last_inner = getattr(self, self.inner_blocks[-1])(x[-1])
        results = [getattr(self, self.layer_blocks[-1])(last_inner)]
        for feature, inner_name, layer_name in zip(
            x[-2::-1], self.inner_blocks[-2::-1], self.layer_blocks[-2::-1]
        ):
            lateral = getattr(self, inner_name)(feature)
            top_down = F.interpolate(last_inner, size=lateral.shape[-2:], mode="nearest")
            last_inner = lateral + top_down
            results.insert(0, getattr(self, layer_name)(last_inner))
        if self.top_blocks is not None:
            results.extend(self.top_blocks(x[-1], results[-1]))
        return results


class LastLevelP6P7(nn.Module):
    """P6 = conv3x3/2 on P5 (or on C5 when `use_p5` is False), P7 = conv3x3/2 on relu(P6)."""

    def __init__(self, in_channels: int, out_channels: int, use_p5: bool = True):
        super().__init__()
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        for conv in (self.p6, self.p7):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.constant_(conv.bias, 0)
        self.use_p5 = use_p5

    def forward(self, c5: Tensor, p5: Tensor) -> list[Tensor]:
        p6 = self.p6(p5 if self.use_p5 else c5)
        p7 = self.p7(F.relu(p6))
        return [p6, p7]


class LastLevelMaxPool(nn.Module):
    """P6 = max_pool(kernel 1, stride 2) of P5 (the Faster R-CNN FPN's extra level)."""

    def forward(self, c5: Tensor, p5: Tensor) -> list[Tensor]:
        return [F.max_pool2d(p5, kernel_size=1, stride=2, padding=0)]
