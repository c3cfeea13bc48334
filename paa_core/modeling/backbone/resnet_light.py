"""A light ResNet-18 body with GroupNorm, for training PAA from scratch on a CPU.

The paper's backbones are ImageNet-pretrained bottleneck ResNets with FrozenBatchNorm2d,
whose frozen statistics cannot be learned from scratch. This body uses BasicBlocks
(ResNet-18 depths 2-2-2-2) with GroupNorm, which trains from random init at any batch
size. Widths come from the usual keys: the stem has `STEM_OUT_CHANNELS`, res2..res5 have
`RES2_OUT_CHANNELS` x (1, 2, 4, 8), so the FPN in-channel list is the same as for the
bottleneck ResNets. The FPN (P3-P7, "RETINANET" variant) is the paper's own.
"""

from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional as F

# Blocks per stage res2..res5 of ResNet-18.
R18_STAGE_BLOCKS = (2, 2, 2, 2)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels, so narrow layers still normalise groups."""
    return nn.GroupNorm(max(1, min(32, channels // 4)), channels)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class StemWithGN(nn.Module):
    """conv 7x7/2 + GN + ReLU + max-pool 3x3/2: the input at stride 4."""

    def __init__(self, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, out_channels, 7, stride=2, padding=3, bias=False)
        self.gn1 = group_norm(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu_(self.gn1(self.conv1(x)))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BasicBlockWithGN(nn.Module):
    """Two 3x3 convs with GN and an identity (or 1x1 projection) shortcut.

    The last GN starts at zero weight, so each block starts as the identity: the usual
    remedy that lets a deep net trained from scratch take large learning rates early.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.gn1 = group_norm(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.gn2 = group_norm(out_channels)
        nn.init.zeros_(self.gn2.weight)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                group_norm(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu_(self.gn1(self.conv1(x)))
        out = self.gn2(self.conv2(out))
        return F.relu_(out + identity)


class ResNetLight(nn.Module):
    """BasicBlock ResNet body (stem, layer1..layer4); forward returns [C3, C4, C5] at strides
    8, 16, 32, or [C2, C3, C4, C5] (strides 4..32) with `return_c2` (the Faster R-CNN FPN)."""

    def __init__(
        self,
        stage_blocks: Sequence[int],
        stem_channels: int,
        res2_channels: int,
        freeze_at: int,
        return_c2: bool = False,
    ):
        super().__init__()
        self.first_returned = 0 if return_c2 else 1
        self.stem = StemWithGN(stem_channels)
        in_channels = stem_channels
        self.stages = []
        for index, blocks in enumerate(stage_blocks):
            out_channels = res2_channels * 2**index
            first_stride = 1 if index == 0 else 2
            layer = nn.Sequential(
                *[
                    BasicBlockWithGN(
                        in_channels if i == 0 else out_channels,
                        out_channels,
                        first_stride if i == 0 else 1,
                    )
                    for i in range(blocks)
                ]
            )
            name = f"layer{index + 1}"
            self.add_module(name, layer)
            self.stages.append(name)
            in_channels = out_channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        self._freeze(freeze_at)

    def _freeze(self, freeze_at: int) -> None:
        """No gradient for the first `freeze_at` of (stem, res2, ...), as in the big ResNets (0: train all)."""
        for module in ([self.stem] + [getattr(self, name) for name in self.stages])[:freeze_at]:
            for p in module.parameters():
                p.requires_grad = False

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        outputs = []
        for name in self.stages:
            x = getattr(self, name)(x)
            outputs.append(x)
        return outputs[self.first_returned :]


def build_resnet18_gn(cfg, return_c2: bool = False) -> ResNetLight:
    """The ResNet-18-GN body with the widths of MODEL.RESNETS; returns [C3, C4, C5]
    (or [C2, ..., C5] with `return_c2`)."""
    resnets = cfg.MODEL.RESNETS
    return ResNetLight(
        R18_STAGE_BLOCKS,
        resnets.STEM_OUT_CHANNELS,
        resnets.RES2_OUT_CHANNELS,
        cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT,
        return_c2,
    )
