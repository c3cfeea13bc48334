"""Whole-detector forward/backward on tiny inputs (R-50 and a dcnv2 R-50 with DCN in the
towers) on every device (the `device` fixture); on CUDA the losses also match the CPU's."""

import pytest
import torch
from helpers import R50_NUM_CLASSES, r50_batch, r50_cfg

from paa_core.layers.iou_loss import giou_loss
from paa_core.modeling.backbone import build_backbone, resnet
from paa_core.modeling.detector import build_detection_model
from paa_core.modeling.head_outputs import concat_box_prediction_layers
from paa_core.structures.box_ops import paired_iou
from paa_core.structures.image_list import to_image_list

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(dcn, device="cpu"):
    torch.manual_seed(0)
    model = build_detection_model(r50_cfg(dcn=dcn, device=device))
    if dcn:
        # Without ImageNet statistics in the FrozenBN layers, a random body's activations
        # reach the thousands, so randomly initialised offsets would sample every tap
        # outside the 3x4 res5 map. Zero offsets keep the path alive (their gradient
        # stays non-zero, checked below).
        with torch.no_grad():
            for name, module in model.backbone.body.named_modules():
                if name.endswith("conv2.offset"):
                    module.weight.zero_()
    return model.to(device)


@pytest.mark.parametrize("dcn", [False, True], ids=["R-50", "dcnv2-R-50"])
def test_train_backward_and_eval(dcn, device):
    model = _model(dcn, device)
    images, targets = r50_batch(device)

    # Head outputs line up with the anchors: A=1 per location, P3..P7 of a 96x128 pad.
    image_list = to_image_list(images, 32)
    assert image_list.tensors.shape == (2, 3, 96, 128)
    features = model.backbone(image_list.tensors)
    sizes = [tuple(f.shape[-2:]) for f in features]
    assert sizes == [(12, 16), (6, 8), (3, 4), (2, 2), (1, 1)]
    logits, deltas, ious = model.rpn.head(features)
    assert [tuple(t.shape) for t in logits] == [(2, R50_NUM_CLASSES - 1) + s for s in sizes]
    assert [tuple(t.shape) for t in deltas] == [(2, 4) + s for s in sizes]
    assert [tuple(t.shape) for t in ious] == [(2, 1) + s for s in sizes]

    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_cls", "loss_reg", "loss_iou_pred"}
    for name, value in losses.items():
        assert value.dim() == 0 and torch.isfinite(value), name
        assert value.device.type == device.type, name
    assert float(losses["loss_reg"].detach()) > 0 and float(losses["loss_cls"].detach()) > 0
    if device.type != "cpu":
        # The same weights and batch on the CPU: float32 convolutions summed in another
        # order, the same assignment, so the losses agree closely.
        cpu_model = _model(dcn)
        cpu_model.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
        cpu_model.train()
        cpu_losses = cpu_model(*r50_batch())
        for name, value in losses.items():
            assert value.item() == pytest.approx(cpu_losses[name].item(), rel=1e-3), name
    sum(losses.values()).backward()

    named = dict(model.named_parameters())
    must_have_grad = [
        "rpn.head.cls_logits.weight",
        "rpn.head.bbox_pred.weight",
        "rpn.head.iou_pred.weight",
        "rpn.head.cls_tower.0.weight",
        "rpn.head.scales.0.scale",
        "backbone.fpn.fpn_inner2.weight",
        "backbone.fpn.top_blocks.p7.weight",
        "backbone.body.layer2.0.conv1.weight",
        "backbone.body.layer4.2.conv3.weight",
    ]
    if dcn:
        must_have_grad += [
            "rpn.head.bbox_tower.9.offset.weight",
            "rpn.head.bbox_tower.9.conv.weight",
            "backbone.body.layer3.0.conv2.offset.weight",
            "backbone.body.layer3.0.conv2.conv.weight",
        ]
    for name in must_have_grad:
        grad = named[name].grad
        assert grad is not None and bool(torch.isfinite(grad).all()), name
        assert float(grad.abs().sum()) > 0, name
    for name, p in named.items():
        if p.requires_grad and p.grad is not None:
            assert bool(torch.isfinite(p.grad).all()), name
    assert named["backbone.body.stem.conv1.weight"].grad is None
    assert named["backbone.body.layer1.0.conv1.weight"].grad is None

    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2
    for boxlist, (h, w) in zip(detections, [(96, 128), (80, 112)]):
        assert boxlist.size == (w, h)
        scores, labels = boxlist.get_field("scores"), boxlist.get_field("labels")
        assert 0 < len(boxlist) <= 100 and len(scores) == len(labels) == len(boxlist)
        assert bool(((labels >= 1) & (labels < R50_NUM_CLASSES)).all())
        assert bool(((scores > 0) & (scores <= 1)).all())
        b = boxlist.bbox
        assert bool((b[:, 0] >= 0).all() and (b[:, 1] >= 0).all())
        # Clipped to [0, w-1] x [0, h-1]; score voting's weighted mean may add float noise.
        assert bool((b[:, 2] <= w - 1 + 1e-3).all() and (b[:, 3] <= h - 1 + 1e-3).all())


def test_training_without_targets_fails_clearly():
    model = build_detection_model(r50_cfg())
    model.train()
    with pytest.raises(ValueError, match="targets"):
        model([torch.zeros(3, 64, 64)])


def test_resnext_body_strides_and_res5_dilation():
    # A small ResNeXt (4 groups x 4) with the FAIR stride placement and a dilated res5.
    cfg = r50_cfg(NUM_GROUPS=4, WIDTH_PER_GROUP=4, STRIDE_IN_1X1=False, RES5_DILATION=2)
    backbone = build_backbone(cfg)
    body = backbone.body
    assert body.layer4[0].conv2.dilation == (2, 2) and body.layer4[0].conv2.stride == (1, 1)
    assert body.layer4[0].downsample[0].stride == (1, 1)
    c3, c4, c5 = body(torch.zeros(1, 3, 64, 96))
    assert c3.shape == (1, 512, 8, 12) and c4.shape == (1, 1024, 4, 6)
    assert c5.shape == (1, 2048, 4, 6)  # dilation keeps res4's resolution
    # FPN upsamples to the lateral's size, P6/P7 halve P5 (ceil with padding 1).
    p = backbone.fpn([c3, c4, c5])
    assert [tuple(t.shape[-2:]) for t in p] == [(8, 12), (4, 6), (4, 6), (2, 3), (1, 2)]


def test_body_runs_channels_last_on_the_cpu_with_the_same_features(monkeypatch):
    """The CPU body computes in channels_last memory: its features and a trained weight's
    gradient are those of the same body in contiguous memory, within float32 rounding."""
    torch.manual_seed(0)
    body = build_backbone(r50_cfg()).body
    x = torch.randn(1, 3, 64, 96)
    runs = []
    for memory in ("channels_last", "contiguous"):
        if memory == "contiguous":
            monkeypatch.setattr(resnet, "cpu_channels_last", lambda x: x)
        body.zero_grad()
        features = body(x)
        sum(f.square().mean() for f in features).backward()
        runs.append([*(f.detach() for f in features), body.layer3[0].conv2.weight.grad])
    assert all(f.is_contiguous(memory_format=torch.channels_last) for f in runs[0][:3])
    assert all(f.is_contiguous() for f in runs[1][:3])
    for got, want in zip(*runs):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def test_fpn_odd_sizes_and_p6_from_c5():
    cfg = r50_cfg()
    cfg.MODEL.RETINANET.USE_C5 = True
    fpn = build_backbone(cfg).fpn
    assert fpn.top_blocks.p6.in_channels == 2048
    c3, c4, c5 = torch.rand(1, 512, 13, 9), torch.rand(1, 1024, 7, 5), torch.rand(1, 2048, 4, 3)
    outs = fpn([c3, c4, c5])
    assert [tuple(t.shape[-2:]) for t in outs] == [(13, 9), (7, 5), (4, 3), (2, 2), (1, 1)]
    assert all(t.shape[1] == 256 for t in outs)


def test_iou_branch_ablation_on_the_same_weights():
    """USE_IOU_PRED False against True on the same weights: the same positives and
    classification loss; a plain GIoU mean over the positives instead of the IoU-weighted
    one; no IoU loss; the plain class probability as the detection score."""
    torch.manual_seed(0)
    with_iou = build_detection_model(r50_cfg())
    cfg = r50_cfg()
    cfg.MODEL.PAA.USE_IOU_PRED = False
    without = build_detection_model(cfg)
    state = with_iou.state_dict()
    without.load_state_dict({k: v for k, v in state.items() if ".iou_pred." not in k}, strict=True)
    assert {k for k in state if ".iou_pred." in k} == {
        "rpn.head.iou_pred.weight",
        "rpn.head.iou_pred.bias",
    }

    captured = {}
    with_iou.rpn.head.register_forward_hook(
        lambda m, inputs, outputs: captured.update(outputs=outputs)
    )
    images, targets = r50_batch()
    losses = with_iou(images, targets)
    ablated = without(images, targets)
    assert set(ablated) == {"loss_cls", "loss_reg"}
    assert ablated["loss_cls"].item() == losses["loss_cls"].item()

    # Per-positive GIoU losses and IoU targets, from the same head outputs.
    box_cls, box_reg, iou_pred = captured["outputs"]
    features = [torch.zeros(2, 1, *c.shape[-2:]) for c in box_cls]
    anchors = with_iou.rpn.anchor_generator(features)
    evaluator = with_iou.rpn.loss_evaluator
    cls_flat, reg_flat, _ = concat_box_prediction_layers(box_cls, box_reg, iou_pred)
    _, pos_idx, pos_anchors, reg_targets = evaluator.compute_targets(
        cls_flat.reshape(-1, R50_NUM_CLASSES - 1).detach(),
        reg_flat.reshape(-1, 4).detach(),
        targets,
        anchors,
    )
    pred = evaluator.box_coder.decode(reg_flat.reshape(-1, 4)[pos_idx].detach(), pos_anchors)
    g, u = giou_loss(pred, reg_targets), paired_iou(pred, reg_targets, offset=1)
    assert len(pos_idx) > 2
    assert losses["loss_reg"].item() == pytest.approx(
        1.3 * ((u * g).sum() / u.sum()).item(), rel=1e-5
    )
    assert ablated["loss_reg"].item() == pytest.approx(
        1.3 * (g.sum() / len(pos_idx)).item(), rel=1e-5
    )
    assert (
        abs(ablated["loss_reg"].item() - losses["loss_reg"].item())
        > 1e-3 * losses["loss_reg"].item()
    )

    without.eval()
    captured.clear()
    without.rpn.head.register_forward_hook(
        lambda m, inputs, outputs: captured.update(outputs=outputs)
    )
    with torch.no_grad():
        detections = without(images)
    cls_logits, _, iou_logits = captured["outputs"]
    assert iou_logits is None
    # The best detection of each image scores the best class probability of its anchors
    # (score voting moves boxes, not scores).
    for i, result in enumerate(detections):
        best = max(level[i].sigmoid().max().item() for level in cls_logits)
        assert result.get_field("scores").max().item() == pytest.approx(best, rel=1e-6)
