"""Backbone builders: ResNet body + RetinaNet-style FPN giving P3..P7 (PAA), or + the
Faster R-CNN FPN giving P2..P6."""

from collections import OrderedDict

from torch import nn

from paa_core.modeling import registry
from paa_core.modeling.make_layers import conv_with_kaiming_uniform, group_norm

from . import fpn as fpn_module
from . import resnet, resnet_light


def with_fpn_p3p7(cfg, body: nn.Module) -> nn.Sequential:
    """`Sequential(body=body, fpn=FPN)` giving P3..P7; the body returns C3..C5 with
    2, 4 and 8 times RES2_OUT_CHANNELS channels."""
    res2_out = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS
    out_channels = cfg.MODEL.RESNETS.BACKBONE_OUT_CHANNELS
    use_c5 = cfg.MODEL.RETINANET.USE_C5
    gn = cfg.MODEL.GROUP_NORM
    fpn = fpn_module.FPN(
        in_channels_list=[res2_out * 2, res2_out * 4, res2_out * 8],
        out_channels=out_channels,
        conv_block=conv_with_kaiming_uniform(
            cfg.MODEL.FPN.USE_GN,
            cfg.MODEL.FPN.USE_RELU,
            dict(dim_per_group=gn.DIM_PER_GP, num_groups=gn.NUM_GROUPS, eps=gn.EPSILON),
            winograd=cfg.MODEL.WINOGRAD,
        ),
        top_blocks=fpn_module.LastLevelP6P7(
            res2_out * 8 if use_c5 else out_channels, out_channels, use_p5=not use_c5
        ),
    )
    model = nn.Sequential(OrderedDict([("body", body), ("fpn", fpn)]))
    model.out_channels = out_channels
    return model


@registry.BACKBONES.register("R-50-FPN-RETINANET")
@registry.BACKBONES.register("R-101-FPN-RETINANET")
@registry.BACKBONES.register("R-152-FPN-RETINANET")
def build_resnet_fpn_p3p7_backbone(cfg) -> nn.Sequential:
    """ResNet/ResNeXt body (ResNeXt uses the same names with groups) + FPN."""
    return with_fpn_p3p7(cfg, resnet.build_resnet(cfg))


@registry.BACKBONES.register("R-18-GN-FPN-RETINANET")
def build_resnet18_gn_fpn_p3p7_backbone(cfg) -> nn.Sequential:
    """GroupNorm ResNet-18 body for training from scratch (the CPU quick start) + FPN."""
    return with_fpn_p3p7(cfg, resnet_light.build_resnet18_gn(cfg))


def with_fpn_p2p6(cfg, body: nn.Module) -> nn.Sequential:
    """`Sequential(body=body, fpn=FPN)` giving P2..P6 (P6 = max-pool of P5); the body
    returns C2..C5 with 1, 2, 4 and 8 times RES2_OUT_CHANNELS channels. The FPN convs
    have biases unless MODEL.FPN.USE_BIAS is False."""
    res2_out = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS
    out_channels = cfg.MODEL.RESNETS.BACKBONE_OUT_CHANNELS
    fpn = fpn_module.FPN(
        in_channels_list=[res2_out, res2_out * 2, res2_out * 4, res2_out * 8],
        out_channels=out_channels,
        conv_block=conv_with_kaiming_uniform(
            use_bias=cfg.MODEL.FPN.USE_BIAS, winograd=cfg.MODEL.WINOGRAD
        ),
        top_blocks=fpn_module.LastLevelMaxPool(),
        first_index=1,
    )
    model = nn.Sequential(OrderedDict([("body", body), ("fpn", fpn)]))
    model.out_channels = out_channels
    return model


@registry.BACKBONES.register("R-50-FPN")
@registry.BACKBONES.register("R-101-FPN")
def build_resnet_fpn_p2p6_backbone(cfg) -> nn.Sequential:
    """ResNet body + the Faster R-CNN FPN (maskrcnn-benchmark's names fpn_inner1..4)."""
    return with_fpn_p2p6(cfg, resnet.build_resnet(cfg))


@registry.BACKBONES.register("R-18-GN-FPN")
def build_resnet18_gn_fpn_p2p6_backbone(cfg) -> nn.Sequential:
    """GroupNorm ResNet-18 body + the Faster R-CNN FPN (the CPU quick start's two-stage model)."""
    return with_fpn_p2p6(cfg, resnet_light.build_resnet18_gn(cfg, return_c2=True))


def backbone_problems(cfg) -> list[str]:
    """The keys of a registered body's backbone that its builder cannot use, one line each."""
    problems = resnet.resnet_problems(cfg)
    # MODEL.FPN.USE_GN applies to the P3-P7 FPN, whose bodies are the *-RETINANET ones.
    if cfg.MODEL.FPN.USE_GN and cfg.MODEL.BACKBONE.CONV_BODY.endswith("-RETINANET"):
        gn = cfg.MODEL.GROUP_NORM
        channels = cfg.MODEL.RESNETS.BACKBONE_OUT_CHANNELS
        try:
            group_norm(channels, gn.DIM_PER_GP, gn.NUM_GROUPS, gn.EPSILON)
        except ValueError as e:
            problems.append(
                f"MODEL.GROUP_NORM (DIM_PER_GP {gn.DIM_PER_GP}, NUM_GROUPS {gn.NUM_GROUPS}) "
                f"for the FPN's MODEL.RESNETS.BACKBONE_OUT_CHANNELS={channels}: {e}"
            )
    return problems


def build_backbone(cfg) -> nn.Sequential:
    """The body and FPN that MODEL.BACKBONE.CONV_BODY names; `out_channels` is the
    FPN's width."""
    return registry.BACKBONES[cfg.MODEL.BACKBONE.CONV_BODY](cfg)
