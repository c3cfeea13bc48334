"""The light GroupNorm ResNet-18 backbone and the quick-start config built on it."""

import os

import pytest
import torch
from helpers import CONFIGS, quick_cfg, tiny_quick_model_and_targets
from torch import nn

from paa_core.config import get_cfg
from paa_core.layers import FrozenBatchNorm2d
from paa_core.modeling.backbone import build_backbone
from paa_core.modeling.backbone.resnet_light import BasicBlockWithGN, ResNetLight
from paa_core.modeling.detector import build_detection_model


@pytest.mark.parametrize(
    "body, shapes",
    [
        # the quick config's P2..P6: strides 4..64, P6 a stride-2 max-pool of P5 (ceil)
        ("R-18-GN-FPN", [(24, 40), (12, 20), (6, 10), (3, 5), (2, 3)]),
        # P3..P7 at strides 8..128 (ceil for the stride-2 convs of P6, P7)
        ("R-18-GN-FPN-RETINANET", [(12, 20), (6, 10), (3, 5), (2, 3), (1, 2)]),
    ],
)
def test_backbone_levels_and_channels(body, shapes):
    torch.manual_seed(0)
    cfg = quick_cfg(
        "MODEL.BACKBONE.CONV_BODY",
        body,
        "MODEL.RESNETS.STEM_OUT_CHANNELS",
        8,
        "MODEL.RESNETS.RES2_OUT_CHANNELS",
        8,
        "MODEL.RESNETS.BACKBONE_OUT_CHANNELS",
        16,
    )
    backbone = build_backbone(cfg)
    assert backbone.out_channels == 16
    features = backbone(torch.randn(2, 3, 96, 160))
    assert [tuple(f.shape) for f in features] == [(2, 16, *hw) for hw in shapes]
    body = backbone.body
    assert [getattr(body, n)[0].conv2.out_channels for n in body.stages] == [8, 16, 32, 64]
    assert [len(getattr(body, n)) for n in body.stages] == [2, 2, 2, 2]  # ResNet-18 depths


def test_everything_trains_from_scratch():
    cfg = quick_cfg(
        "MODEL.RESNETS.STEM_OUT_CHANNELS",
        8,
        "MODEL.RESNETS.RES2_OUT_CHANNELS",
        8,
        "MODEL.RESNETS.BACKBONE_OUT_CHANNELS",
        16,
    )
    backbone = build_backbone(cfg)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in backbone.modules())
    norms = [m for m in backbone.body.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 1 + 8 * 2 + 3  # stem, two per block, three projection shortcuts
    assert all(p.requires_grad for p in backbone.parameters())
    # Blocks start as the identity (zero last-GN weight), so their inner layers get no
    # gradient at first; after one SGD step every GroupNorm affine parameter does.
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    opt = torch.optim.SGD(backbone.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        sum(f.square().mean() for f in backbone(x)).backward()
        opt.step()
    assert all(m.weight.grad.abs().sum() > 0 and m.bias.grad.abs().sum() > 0 for m in norms)


def test_freeze_at_stops_stem_and_res2():
    body = ResNetLight((2, 2, 2, 2), 8, 8, freeze_at=2)
    frozen = {n.split(".")[0] for n, p in body.named_parameters() if not p.requires_grad}
    trainable = {n.split(".")[0] for n, p in body.named_parameters() if p.requires_grad}
    assert frozen == {"stem", "layer1"} and trainable == {"layer2", "layer3", "layer4"}


def test_block_starts_as_identity():
    # The last GN of a block starts at zero weight (and bias), so a fresh block is relu(x).
    block = BasicBlockWithGN(8, 8, stride=1)
    x = torch.randn(2, 8, 10, 10)
    torch.testing.assert_close(block(x), torch.relu(x))
    # With stride 2 the shortcut is a 1x1/2 projection + GN, so the output is relu(proj(x)).
    block = BasicBlockWithGN(8, 16, stride=2)
    torch.testing.assert_close(block(x), torch.relu(block.downsample(x)))


def test_block_learns():
    # A few SGD steps fit a fixed random target: the GN body is trainable from scratch.
    torch.manual_seed(0)
    body = ResNetLight((2, 2, 2, 2), 8, 8, freeze_at=0)
    x, target = torch.randn(4, 3, 64, 64), torch.randn(4, 64, 2, 2).abs()  # C5 is post-ReLU
    opt = torch.optim.SGD(body.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = (body(x)[-1] - target).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_quick_config_keeps_the_paper_head_assigner_losses_and_inference():
    paper = get_cfg()
    paper.merge_from_file(os.path.join(CONFIGS, "paa_R_50_FPN_1x.yaml"))
    quick = quick_cfg()
    # classes, object range, FPN levels (P2-P6), head depth
    scaled = {"NUM_CLASSES", "ANCHOR_SIZES", "ANCHOR_STRIDES", "NUM_CONVS"}
    for key, value in paper.MODEL.PAA.items():
        if key not in scaled:
            assert quick.MODEL.PAA[key] == value, key
    assert quick.MODEL.FPN == paper.MODEL.FPN and quick.TEST.BBOX_AUG == paper.TEST.BBOX_AUG


def test_quick_model_trains_and_detects():
    cfg, model, targets = tiny_quick_model_and_targets()
    images = torch.randn(2, 3, 128, 128) * 50
    model.train()
    losses = model(images, targets)
    total = sum(losses.values())
    assert torch.isfinite(total) and set(losses) >= {"loss_cls", "loss_reg"}
    total.backward()
    assert model.backbone.body.stem.conv1.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2 and all(d.size == (128, 128) for d in detections)
    for d in detections:
        assert d.bbox.shape[1] == 4 and len(d) <= cfg.TEST.DETECTIONS_PER_IMG
        assert set(d.get_field("labels").tolist()) <= set(range(1, 7))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_runs_convolutions_in_half_and_losses_in_float32(dtype):
    # SOLVER.AMP: the trainer runs the forward under autocast; the PAA module hands float32
    # head outputs to the loss, so the losses are those of float32 up to bf16/fp16 rounding.
    _, model, targets = tiny_quick_model_and_targets()
    model.train()
    images = torch.rand(2, 3, 128, 128) * 255
    head_dtypes = []
    model.rpn.head.cls_logits.register_forward_hook(lambda m, i, o: head_dtypes.append(o.dtype))
    reference = model(images, targets)
    with torch.autocast("cpu", dtype=dtype):
        losses = model(images, targets)
    assert head_dtypes == [torch.float32] * 5 + [dtype] * 5  # one call per level
    for name, value in losses.items():
        assert value.dtype == torch.float32, name
        torch.testing.assert_close(value, reference[name], rtol=0.05, atol=0.01)
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    assert model.backbone.body.stem.conv1.weight.grad.abs().sum() > 0


def test_quick_model_builds_with_its_config():
    model = build_detection_model(quick_cfg())
    n_params = sum(p.numel() for p in model.parameters())
    assert 1e6 < n_params < 5e6  # small enough to train on a CPU in minutes
    head = model.rpn.head
    assert head.cls_logits.out_channels == 6 and head.cls_logits.in_channels == 64
