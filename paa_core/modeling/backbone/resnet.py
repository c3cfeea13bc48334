"""ResNet / ResNeXt bottleneck body with frozen BatchNorm (MSRA / FAIR Caffe2 layout).

Module names (`stem.conv1`, `layer2.0.conv2.offset`, `layer1.0.downsample.1`, ...)
match the reference checkpoints, so released weights load unchanged. Each plain conv and
its frozen BatchNorm run as one convolution (`conv_frozen_bn`). `build_resnet` reads the
config; the modules below only take plain arguments.
"""

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from paa_core.layers import DFConv2d, FrozenBatchNorm2d, conv_frozen_bn
from paa_core.modeling.registry import Registry


class StageSpec(NamedTuple):
    index: int  # 1..4 for res2..res5
    block_count: int
    return_features: bool  # hand this stage's output to the FPN


class DCNConfig(NamedTuple):
    """Deformable 3x3 settings for a stage (None instead of one: a plain conv)."""

    with_modulated_dcn: bool
    deformable_groups: int


def _fpn_p3p7_stages(block_counts: Sequence[int]) -> tuple[StageSpec, ...]:
    """res2..res5 with the given depths; the RetinaNet-style FPN takes C3..C5."""
    return tuple(
        StageSpec(index=i + 1, block_count=n, return_features=i > 0)
        for i, n in enumerate(block_counts)
    )


def _fpn_p2p6_stages(block_counts: Sequence[int]) -> tuple[StageSpec, ...]:
    """res2..res5 with the given depths; the Faster R-CNN FPN takes C2..C5."""
    return tuple(
        StageSpec(index=i + 1, block_count=n, return_features=True)
        for i, n in enumerate(block_counts)
    )


_STAGE_SPECS = Registry(
    "STAGE_SPECS",
    {
        "R-50-FPN": _fpn_p2p6_stages((3, 4, 6, 3)),
        "R-101-FPN": _fpn_p2p6_stages((3, 4, 23, 3)),
        "R-50-FPN-RETINANET": _fpn_p3p7_stages((3, 4, 6, 3)),
        "R-101-FPN-RETINANET": _fpn_p3p7_stages((3, 4, 23, 3)),
        "R-152-FPN-RETINANET": _fpn_p3p7_stages((3, 8, 36, 3)),
    },
)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (grouped, optionally deformable) -> 1x1 residual block.

    `stride_in_1x1` puts the stage's stride in conv1 (MSRA weights) instead of conv2
    (FAIR ResNeXt weights). With `dilation > 1` the block keeps its resolution.
    """

    def __init__(
        self,
        in_channels: int,
        bottleneck_channels: int,
        out_channels: int,
        num_groups: int,
        stride_in_1x1: bool,
        stride: int,
        dilation: int,
        norm_func: Callable[[int], nn.Module],
        dcn_config: DCNConfig | None = None,
    ):
        super().__init__()
        self.downsample = None
        if in_channels != out_channels:
            down_stride = stride if dilation == 1 else 1
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=down_stride, bias=False),
                norm_func(out_channels),
            )
            nn.init.kaiming_uniform_(self.downsample[0].weight, a=1)
        if dilation > 1:
            stride = 1
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)

        self.conv1 = nn.Conv2d(in_channels, bottleneck_channels, 1, stride=stride_1x1, bias=False)
        self.bn1 = norm_func(bottleneck_channels)
        if dcn_config is not None:
            self.conv2 = DFConv2d(
                bottleneck_channels,
                bottleneck_channels,
                with_modulated_dcn=dcn_config.with_modulated_dcn,
                kernel_size=3,
                stride=stride_3x3,
                groups=num_groups,
                dilation=dilation,
                deformable_groups=dcn_config.deformable_groups,
                bias=False,
            )
        else:
            self.conv2 = nn.Conv2d(
                bottleneck_channels,
                bottleneck_channels,
                3,
                stride=stride_3x3,
                padding=dilation,
                dilation=dilation,
                groups=num_groups,
                bias=False,
            )
            nn.init.kaiming_uniform_(self.conv2.weight, a=1)
        self.bn2 = norm_func(bottleneck_channels)
        self.conv3 = nn.Conv2d(bottleneck_channels, out_channels, 1, bias=False)
        self.bn3 = norm_func(out_channels)
        for conv in (self.conv1, self.conv3):
            nn.init.kaiming_uniform_(conv.weight, a=1)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu_(conv_frozen_bn(self.conv1, self.bn1, x))
        out = F.relu_(conv_frozen_bn(self.conv2, self.bn2, out))
        out = conv_frozen_bn(self.conv3, self.bn3, out)
        identity = x if self.downsample is None else conv_frozen_bn(*self.downsample, x)
        return F.relu_(out + identity)


class BaseStem(nn.Module):
    """conv 7x7/2 (no bias) + norm + ReLU + max-pool 3x3/2: stride 4 overall."""

    def __init__(self, out_channels: int, norm_func: Callable[[int], nn.Module]):
        super().__init__()
        self.conv1 = nn.Conv2d(3, out_channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_func(out_channels)
        nn.init.kaiming_uniform_(self.conv1.weight, a=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu_(conv_frozen_bn(self.conv1, self.bn1, x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BottleneckWithFixedBatchNorm(Bottleneck):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, norm_func=FrozenBatchNorm2d, **kwargs)


class StemWithFixedBatchNorm(BaseStem):
    def __init__(self, out_channels: int):
        super().__init__(out_channels, norm_func=FrozenBatchNorm2d)


class ResNet(nn.Module):
    """Stem + stages `layer1..layer4`; returns the outputs of the stages whose
    spec has `return_features` (C3, C4, C5 for the FPN-RETINANET bodies).

    Stage i (1-based) has `num_groups * width_per_group * 2**(i-1)` bottleneck
    channels and `res2_out_channels * 2**(i-1)` output channels; `stage_with_dcn[i-1]`
    makes its 3x3 convs deformable; `res5_dilation` trades layer4's stride for
    dilation; the stem and the first `freeze_at - 1` stages get no gradient.
    """

    def __init__(
        self,
        stem_module: Callable[[int], nn.Module],
        block_module: Callable[..., nn.Module],
        stage_specs: Sequence[StageSpec],
        num_groups: int = 1,
        width_per_group: int = 64,
        stem_out_channels: int = 64,
        res2_out_channels: int = 256,
        stride_in_1x1: bool = True,
        stage_with_dcn: Sequence[bool] = (False, False, False, False),
        with_modulated_dcn: bool = False,
        deformable_groups: int = 1,
        res5_dilation: int = 1,
        freeze_at: int = 2,
    ):
        super().__init__()
        if len(stage_with_dcn) != len(stage_specs):
            raise ValueError(
                f"stage_with_dcn has {len(stage_with_dcn)} flags for {len(stage_specs)} stages"
            )
        self.stem = stem_module(stem_out_channels)
        in_channels = stem_out_channels
        self.stages = []
        self.return_features = {}
        for spec in stage_specs:
            factor = 2 ** (spec.index - 1)
            out_channels = res2_out_channels * factor
            dcn = (
                DCNConfig(with_modulated_dcn, deformable_groups)
                if stage_with_dcn[spec.index - 1]
                else None
            )
            stage = _make_stage(
                block_module,
                in_channels,
                num_groups * width_per_group * factor,
                out_channels,
                spec.block_count,
                num_groups,
                stride_in_1x1,
                first_stride=1 if spec.index == 1 else 2,
                dilation=res5_dilation if spec.index == 4 else 1,
                dcn_config=dcn,
            )
            name = f"layer{spec.index}"
            self.add_module(name, stage)
            self.stages.append(name)
            self.return_features[name] = spec.return_features
            in_channels = out_channels
        self._freeze_backbone(freeze_at)

    def _freeze_backbone(self, freeze_at: int) -> None:
        """Stage 0 is the stem; stages 0..freeze_at-1 stop receiving gradients."""
        for stage_index in range(freeze_at):
            module = self.stem if stage_index == 0 else getattr(self, f"layer{stage_index}")
            for p in module.parameters():
                p.requires_grad = False

    def forward(self, x: Tensor) -> list[Tensor]:
        """images [N, 3, H, W] -> the returned stages' outputs, finest first."""
        outputs = []
        x = self.stem(cpu_channels_last(x))
        for name in self.stages:
            x = getattr(self, name)(x)
            if self.return_features[name]:
                outputs.append(x)
        return outputs


def cpu_channels_last(x: Tensor) -> Tensor:
    """x in channels_last memory on the CPU, as it is elsewhere. oneDNN's CPU convolutions
    then skip a reorder of their input and output, and the layers after them keep the
    format: 7-12% less CPU for an R-50-FPN inference at 512x512, 2% for a training step."""
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x


def _make_stage(
    block_module: Callable[..., nn.Module],
    in_channels: int,
    bottleneck_channels: int,
    out_channels: int,
    block_count: int,
    num_groups: int,
    stride_in_1x1: bool,
    first_stride: int,
    dilation: int,
    dcn_config: DCNConfig | None,
) -> nn.Sequential:
    """`block_count` blocks; only the first changes channels and resolution."""
    blocks = []
    stride = first_stride
    for _ in range(block_count):
        blocks.append(
            block_module(
                in_channels,
                bottleneck_channels,
                out_channels,
                num_groups,
                stride_in_1x1,
                stride,
                dilation,
                dcn_config=dcn_config,
            )
        )
        stride = 1
        in_channels = out_channels
    return nn.Sequential(*blocks)


def resnet_problems(cfg) -> list[str]:
    """The `MODEL.RESNETS` keys that `build_resnet` cannot build for a bottleneck body
    (`MODEL.BACKBONE.CONV_BODY`), one line each; none for another body."""
    if cfg.MODEL.BACKBONE.CONV_BODY not in _STAGE_SPECS:
        return []
    r = cfg.MODEL.RESNETS
    problems = [
        # The reference's keys name the one stem and block it has (frozen BatchNorm).
        f"MODEL.RESNETS.{key} '{value}' is not supported: only '{supported.__name__}'"
        for key, value, supported in (
            ("STEM_FUNC", r.STEM_FUNC, StemWithFixedBatchNorm),
            ("TRANS_FUNC", r.TRANS_FUNC, BottleneckWithFixedBatchNorm),
        )
        if value != supported.__name__
    ]
    num_stages = len(_STAGE_SPECS[cfg.MODEL.BACKBONE.CONV_BODY])
    if len(r.STAGE_WITH_DCN) != num_stages:
        problems.append(
            f"MODEL.RESNETS.STAGE_WITH_DCN has {len(r.STAGE_WITH_DCN)} flags for the "
            f"{num_stages} stages res2..res5"
        )
    elif r.DEFORMABLE_GROUPS < 1:
        problems.append(f"MODEL.RESNETS.DEFORMABLE_GROUPS={r.DEFORMABLE_GROUPS}: must be >= 1")
    else:
        # A stage's 3x3 convs have NUM_GROUPS * WIDTH_PER_GROUP * 2**(stage - 1) channels.
        widths = [
            r.NUM_GROUPS * r.WIDTH_PER_GROUP * 2**i for i, dcn in enumerate(r.STAGE_WITH_DCN) if dcn
        ]
        if widths and min(widths) % r.DEFORMABLE_GROUPS:
            problems.append(
                f"MODEL.RESNETS.DEFORMABLE_GROUPS={r.DEFORMABLE_GROUPS} does not divide the "
                f"{min(widths)} channels of the first deformable stage "
                "(MODEL.RESNETS.STAGE_WITH_DCN)"
            )
    return problems


def build_resnet(cfg) -> ResNet:
    """ResNet body for `MODEL.BACKBONE.CONV_BODY` with the `MODEL.RESNETS` settings
    (`resnet_problems` has checked them)."""
    r = cfg.MODEL.RESNETS
    return ResNet(
        stem_module=StemWithFixedBatchNorm,
        block_module=BottleneckWithFixedBatchNorm,
        stage_specs=_STAGE_SPECS[cfg.MODEL.BACKBONE.CONV_BODY],
        num_groups=r.NUM_GROUPS,
        width_per_group=r.WIDTH_PER_GROUP,
        stem_out_channels=r.STEM_OUT_CHANNELS,
        res2_out_channels=r.RES2_OUT_CHANNELS,
        stride_in_1x1=r.STRIDE_IN_1X1,
        stage_with_dcn=tuple(r.STAGE_WITH_DCN),
        with_modulated_dcn=r.WITH_MODULATED_DCN,
        deformable_groups=r.DEFORMABLE_GROUPS,
        res5_dilation=r.RES5_DILATION,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT,
    )
