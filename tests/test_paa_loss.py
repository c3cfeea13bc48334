"""PAA targets and losses against an independent per-GT loop with scikit-learn, on every
device (the `device` fixture); on CUDA also float32 against the same evaluator on the CPU."""

import math

import numpy as np
import pytest
import torch
from helpers import real_anchors
from oracles import iou_plus1, sklearn_num_pos

from paa_core.config import get_cfg
from paa_core.layers.iou_loss import giou_loss
from paa_core.modeling.box_coder import BoxCoder
from paa_core.modeling.head_outputs import concat_box_prediction_layers
from paa_core.modeling.matcher import Matcher
from paa_core.modeling.paa.loss import PAALossComputation, make_paa_loss_evaluator
from paa_core.modeling.paa_assigner import ProbabilisticAnchorAssigner, make_paa_assigner
from paa_core.structures.bounding_box import BoxList
from paa_core.structures.boxlist_ops import boxlist_iou

NUM_CLASSES = 3  # foreground classes
CODER = BoxCoder((10.0, 10.0, 5.0, 5.0))


def _evaluator(topk=9):
    return PAALossComputation(
        iou_threshold=0.1,
        assigner=ProbabilisticAnchorAssigner(topk),
        gamma=2.0,
        alpha=0.25,
        reg_loss_weight=1.3,
        iou_loss_weight=0.5,
        box_coder=CODER,
    )


# ----------------------------------------------------------------------------- oracle
def _focal(logits, label, gamma=2.0, alpha=0.25):
    """Plain-torch sigmoid focal loss [N, C] for int labels (0 = background)."""
    p = logits.sigmoid()
    onehot = torch.zeros_like(logits)
    fg = label > 0
    onehot[fg, label[fg] - 1] = 1
    pos = -alpha * (1 - p) ** gamma * torch.nn.functional.logsigmoid(logits)
    neg = -(1 - alpha) * p**gamma * torch.nn.functional.logsigmoid(-logits)
    return onehot * pos + (1 - onehot) * neg


def _giou_loss(p, t):
    """GIoU loss of one box pair, written out element by element (docs/DESIGN.md §1)."""
    px1, py1, px2, py2 = p
    tx1, ty1, tx2, ty2 = t
    px2, py2 = max(px1, px2), max(py1, py2)
    iw, ih = min(px2, tx2) - max(px1, tx1), min(py2, ty2) - max(py1, ty1)
    inter = iw * ih if (iw > 0 and ih > 0) else 0.0
    union = (px2 - px1) * (py2 - py1) + (tx2 - tx1) * (ty2 - ty1) - inter + 1e-7
    enclose = (max(px2, tx2) - min(px1, tx1)) * (max(py2, ty2) - min(py1, ty1)) + 1e-7
    return 1 - (inter / union - (enclose - union) / enclose)


def _oracle(box_cls, box_regression, iou_pred, targets, anchors, topk=9):
    """The reference algorithm written as loops: per image, per GT, per level.

    Without the IoU branch (iou_pred None) the GIoU losses are summed unweighted over
    the positives and divided by their number, and there is no IoU loss (None)."""
    cls_all, reg_all, iou_all = concat_box_prediction_layers(box_cls, box_regression, iou_pred)
    cls_all, reg_all = cls_all.detach(), reg_all.detach()
    matcher = Matcher(0.1, 0.1, True)
    labels_all, focal_sum, reg_terms, iou_bce, ious_all = [], 0.0, [], 0.0, []
    level_sizes = [len(a) for a in anchors]
    abox = torch.cat(anchors).to(reg_all.dtype)
    for b, tgt in enumerate(targets):
        labels = torch.zeros(len(abox), dtype=torch.long)
        if len(tgt) > 0:
            matched = matcher(boxlist_iou(tgt, BoxList(abox, tgt.size)))
            for g in range(len(tgt)):
                gt = tgt.bbox[g].to(reg_all.dtype)
                cands = []
                start = 0
                for size in level_sizes:
                    idx = [i for i in range(start, start + size) if matched[i] == g]
                    scored = []
                    for i in idx:
                        a = abox[i : i + 1]
                        tbox = CODER.decode(CODER.encode(gt[None], a), a)[0]
                        pbox = CODER.decode(reg_all[b, i : i + 1], a)[0]
                        lab = tgt.get_field("labels")[g : g + 1]
                        s = _focal(cls_all[b, i : i + 1], lab).sum().item()
                        s += _giou_loss(pbox.tolist(), tbox.tolist())
                        scored.append((s, i))
                    scored.sort()
                    cands += scored[:topk]
                    start += size
                if not cands:
                    continue
                cands.sort()
                npos = 1 if len(cands) == 1 else sklearn_num_pos([s for s, _ in cands])
                for _, i in cands[:npos]:
                    labels[i] = tgt.get_field("labels")[g]
                    a = abox[i : i + 1]
                    tbox = CODER.decode(CODER.encode(gt[None], a), a)[0].tolist()
                    pbox = CODER.decode(reg_all[b, i : i + 1], a)[0].tolist()
                    iou = iou_plus1(pbox, tbox)
                    ious_all.append(iou)
                    reg_terms.append((iou, _giou_loss(pbox, tbox)))
                    if iou_all is not None:
                        iou_bce += torch.nn.functional.binary_cross_entropy_with_logits(
                            iou_all[b, i].detach(), torch.tensor(iou, dtype=iou_all.dtype)
                        ).item()
        focal_sum += _focal(cls_all[b], labels).sum().item()
        labels_all.append(labels)
    num_pos = max(len(ious_all), 1)
    if iou_pred is None:
        loss_reg = sum(g for _, g in reg_terms) / num_pos * 1.3
        return torch.cat(labels_all), (focal_sum / num_pos, loss_reg, None)
    sum_iou = sum(ious_all)
    loss_reg = sum(u * g for u, g in reg_terms) / sum_iou * 1.3 if reg_terms else 0.0
    return torch.cat(labels_all), (focal_sum / num_pos, loss_reg, iou_bce / num_pos * 0.5)


# ----------------------------------------------------------------------------- inputs
def _anchors_and_outputs(image_sizes, seed, dtype=torch.float64, scale=1.0):
    """Real anchors (config defaults) for a padded batch and random head outputs."""
    torch.manual_seed(seed)
    anchors, shapes = real_anchors(image_sizes)
    n = len(image_sizes)
    box_cls = [
        (torch.randn(n, NUM_CLASSES, h, w, dtype=dtype) * scale - 2).requires_grad_()
        for h, w in shapes
    ]
    box_reg = [
        (torch.randn(n, 4, h, w, dtype=dtype) * 0.3 * scale).requires_grad_() for h, w in shapes
    ]
    iou_pred = [torch.randn(n, 1, h, w, dtype=dtype).requires_grad_() for h, w in shapes]
    return anchors, box_cls, box_reg, iou_pred


def _targets(boxes, labels, size):
    t = BoxList(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), size)
    t.add_field("labels", torch.tensor(labels, dtype=torch.int64))
    return t


def _random_targets(rng, num, w, h):
    boxes, labels = [], []
    for _ in range(num):
        bw, bh = rng.uniform(8, w * 0.8), rng.uniform(8, h * 0.8)
        x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        boxes.append([x1, y1, x1 + bw - 1, y1 + bh - 1])
        labels.append(int(rng.integers(1, NUM_CLASSES + 1)))
    return _targets(boxes, labels, (w, h))


def _on(device, targets, outputs):
    """targets and (anchors, box_cls, box_reg, iou_pred) moved to `device`, the head outputs
    as new leaves there."""
    anchors, *heads = outputs
    anchors = [a.to(device) for a in anchors]
    heads = [
        None if level is None else [t.detach().to(device).requires_grad_() for t in level]
        for level in heads
    ]
    return [t.to(device) for t in targets], (anchors, *heads)


def _check_against_oracle(targets, outputs, topk=9, device=torch.device("cpu")):
    """Our evaluator on `device` against the oracle loop on the CPU."""
    ref_labels, ref_losses = _oracle(*outputs[1:], targets, outputs[0], topk)
    targets, (anchors, box_cls, box_reg, iou_pred) = _on(device, targets, outputs)
    evaluator = _evaluator(topk)
    losses = evaluator(box_cls, box_reg, iou_pred, targets, anchors)
    cls_flat, reg_flat, _ = concat_box_prediction_layers(box_cls, box_reg, iou_pred)
    labels, _, _, _ = evaluator.compute_targets(
        cls_flat.reshape(-1, NUM_CLASSES), reg_flat.reshape(-1, 4), targets, anchors
    )
    assert labels.device.type == device.type
    labels = labels.cpu()
    assert torch.equal(labels, ref_labels)
    assert (losses[2] is None) == (ref_losses[2] is None) == (iou_pred is None)
    computed = [loss for loss in losses if loss is not None]
    for ours, ref in zip(computed, ref_losses):
        assert torch.isfinite(ours)
        assert ours.item() == pytest.approx(ref, rel=1e-6, abs=1e-9)
    sum(computed).backward()
    for t in box_cls + box_reg + (iou_pred or []):
        assert t.grad is not None and torch.isfinite(t.grad).all()
    return labels, losses


# ----------------------------------------------------------------------------- tests
def test_hand_made_scores_known_assignment():
    ev = _evaluator(topk=3)
    # GT 0: level 0 keeps its 3 lowest (0.10, 0.15, 0.20; 4.0 and 5.0 drop out),
    # level 1 both (0.12, 3.0). Sorted: 0.10 0.12 0.15 0.20 3.0; the low mode's
    # mean is 0.1425, so its most likely sample is 0.15 -> 3 positives.
    # GT 1: a single candidate -> positive. GT 2: no candidate.
    cand_gt = torch.tensor([0, 0, 0, 0, 0, 0, 0, 1])
    cand_level = torch.tensor([0, 0, 0, 0, 0, 1, 1, 2])
    cand_score = torch.tensor([0.10, 5.0, 0.20, 0.15, 4.0, 0.12, 3.0, 7.0])
    pos = ev.assigner(cand_gt, cand_level, cand_score, num_gt=3, num_levels=3)
    assert sorted(pos.tolist()) == [0, 3, 5, 7]
    assert (
        ev.assigner(
            torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0), 2, 5
        ).numel()
        == 0
    )


def test_hand_made_all_in_one_mode():
    # Evenly spread scores: at the end of EM both components sit in the middle and
    # the tie-breaking rules decide; the answer equals scikit-learn's loop.
    ev = _evaluator(topk=9)
    scores = torch.tensor([0.5, 0.6, 0.7, 0.8, 0.9, 1.0], dtype=torch.float64)
    pos = ev.assigner(
        torch.zeros(6, dtype=torch.long), torch.zeros(6, dtype=torch.long), scores, 1, 1
    )
    assert sorted(pos.tolist()) == list(range(sklearn_num_pos(scores.tolist())))


def test_end_to_end_matches_per_gt_loop(device):
    rng = np.random.default_rng(0)
    sizes = [(120, 150), (128, 100)]  # (h, w); padded to 128 x 160
    targets = [_random_targets(rng, 4, 150, 120), _random_targets(rng, 3, 100, 128)]
    labels, _ = _check_against_oracle(targets, _anchors_and_outputs(sizes, seed=0), device=device)
    assert (labels > 0).sum() > len(targets[0]) + len(targets[1])


def test_without_iou_branch_matches_per_gt_loop():
    """USE_IOU_PRED False (the paper's ablation): same positives, plain GIoU mean, no IoU loss."""
    rng = np.random.default_rng(4)
    targets = [_random_targets(rng, 3, 128, 96)]
    anchors, box_cls, box_reg, iou_pred = _anchors_and_outputs([(96, 128)], seed=4)
    labels, (loss_cls, loss_reg, _) = _check_against_oracle(
        targets, (anchors, box_cls, box_reg, None)
    )
    assert (labels > 0).sum() > 3
    # The classification loss does not depend on the IoU branch; the regression loss
    # does (IoU-weighted mean with it, plain mean without).
    with_iou = _evaluator()(box_cls, box_reg, iou_pred, targets, anchors)
    assert loss_cls.item() == with_iou[0].item()
    assert abs(loss_reg.item() - with_iou[1].item()) > 1e-3 * loss_reg.item()


@pytest.mark.parametrize("device", ["cuda"], indirect=True, scope="session")
def test_cuda_float32_matches_cpu(device):
    """The training dtype: same labels, losses within 1e-4 relative, gradients close."""
    rng = np.random.default_rng(4)
    sizes = [(256, 320), (240, 300)]
    targets = [_random_targets(rng, 12, 320, 256), _random_targets(rng, 7, 300, 240)]
    outputs = _anchors_and_outputs(sizes, seed=4, dtype=torch.float32)
    results = []
    for dev in (torch.device("cpu"), device):
        t, (anchors, box_cls, box_reg, iou_pred) = _on(dev, targets, outputs)
        ev = _evaluator()
        losses = ev(box_cls, box_reg, iou_pred, t, anchors)
        cls_flat, reg_flat, _ = concat_box_prediction_layers(box_cls, box_reg, iou_pred)
        labels = ev.compute_targets(
            cls_flat.detach().reshape(-1, NUM_CLASSES), reg_flat.detach().reshape(-1, 4), t, anchors
        )[0]
        grads = torch.autograd.grad(sum(losses), box_cls + box_reg + iou_pred)
        results.append((labels.cpu(), [x.item() for x in losses], [g.cpu() for g in grads]))
    (cpu_labels, cpu_losses, cpu_grads), (labels, losses, grads) = results
    assert (cpu_labels > 0).sum() > 19
    assert torch.equal(labels, cpu_labels)
    assert losses == pytest.approx(cpu_losses, rel=1e-4)
    for g, ref in zip(grads, cpu_grads):
        torch.testing.assert_close(g, ref, rtol=1e-4, atol=1e-6)


def test_edge_cases_match_per_gt_loop(device):
    sizes = [(96, 128)] * 3
    w, h = 128, 96
    targets = [
        _targets(
            [
                [0, 0, w - 1, h - 1],  # the whole image, touching every border
                [40, 40, 42, 42],  # 3x3 inside it: its best anchors prefer the big GT
            ],
            [1, 3],
            (w, h),
        ),
        _targets(
            [
                [w - 20, h - 30, w - 1, h - 1],  # in the bottom-right corner
                [40, 40, 42, 42],  # 3x3, far smaller than any anchor (64)
            ],
            [2, 3],
            (w, h),
        ),
        _targets([], [], (w, h)),  # an image without GT in the batch
    ]
    labels, _ = _check_against_oracle(targets, _anchors_and_outputs(sizes, seed=1), device=device)
    per_image = labels.reshape(3, -1)
    # A GT whose every anchor goes to another GT has no candidate and no positive.
    assert set(per_image[0][per_image[0] > 0].tolist()) == {1}
    assert set(per_image[1][per_image[1] > 0].tolist()) == {2, 3}
    assert (per_image[2] == 0).all()


def test_batch_without_gt_is_finite_and_connected():
    sizes = [(64, 64), (64, 64)]
    anchors, box_cls, box_reg, iou_pred = _anchors_and_outputs(sizes, seed=2, dtype=torch.float32)
    targets = [_targets([], [], (64, 64)), _targets([], [], (64, 64))]
    loss_cls, loss_reg, loss_iou = _evaluator()(box_cls, box_reg, iou_pred, targets, anchors)
    # No positive: N = max(0, 1) = 1 and every anchor is background.
    cls_flat, _, _ = concat_box_prediction_layers(box_cls, box_reg, iou_pred)
    expected = _focal(
        cls_flat.detach().reshape(-1, NUM_CLASSES).double(),
        torch.zeros(cls_flat.shape[0] * cls_flat.shape[1], dtype=torch.long),
    ).sum()
    assert loss_cls.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss_reg.item() == 0 and loss_iou.item() == 0
    (loss_cls + loss_reg + loss_iou).backward()
    for t in box_reg + iou_pred:
        assert t.grad is not None and (t.grad == 0).all()


def test_single_candidate_gt_with_hand_placed_anchors():
    # Two levels of hand-placed anchors: the GT overlaps only anchor 0 (IoU 1), so it
    # has one candidate, which must be positive.
    size = (100, 100)
    anchors = [torch.tensor([[0.0, 0, 9, 9], [50, 50, 59, 59]]), torch.tensor([[60.0, 0, 99, 39]])]
    box_cls = [
        torch.zeros(1, NUM_CLASSES, 1, 2, requires_grad=True),
        torch.zeros(1, NUM_CLASSES, 1, 1, requires_grad=True),
    ]
    box_reg = [
        torch.zeros(1, 4, 1, 2, requires_grad=True),
        torch.zeros(1, 4, 1, 1, requires_grad=True),
    ]
    iou_pred = [
        torch.zeros(1, 1, 1, 2, requires_grad=True),
        torch.zeros(1, 1, 1, 1, requires_grad=True),
    ]
    targets = [_targets([[0, 0, 9, 9]], [2], size)]
    ev = _evaluator()
    labels, pos_idx, _, _ = ev.compute_targets(
        torch.zeros(3, NUM_CLASSES), torch.zeros(3, 4), targets, anchors
    )
    assert labels.tolist() == [2, 0, 0] and pos_idx.tolist() == [0]
    loss_cls, loss_reg, loss_iou = ev(box_cls, box_reg, iou_pred, targets, anchors)
    # Zero deltas decode to the anchor itself = the GT: IoU target 1, GIoU loss ~0.
    assert loss_reg.item() == pytest.approx(0.0, abs=1e-6)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(torch.zeros(1), torch.ones(1))
    assert loss_iou.item() == pytest.approx(0.5 * bce.item(), rel=1e-6)
    # N = 1 positive; logits 0 give p = 0.5 everywhere.
    fg = 0.25 * 0.25 * math.log(2)
    bg = 0.75 * 0.25 * math.log(2)
    assert loss_cls.item() == pytest.approx(fg + (3 * NUM_CLASSES - 1) * bg, rel=1e-6)


def test_normalisation_constants():
    sizes = [(96, 96)]
    outputs = _anchors_and_outputs(sizes, seed=3, dtype=torch.float64)
    anchors, box_cls, box_reg, iou_pred = outputs
    targets = [_targets([[10, 10, 60, 70], [30, 5, 90, 50]], [1, 3], (96, 96))]
    ev = _evaluator()
    loss_cls, loss_reg, loss_iou = ev(box_cls, box_reg, iou_pred, targets, anchors)
    cls_flat, reg_flat, iou_flat = concat_box_prediction_layers(box_cls, box_reg, iou_pred)
    cls_flat, reg_flat = (
        cls_flat.detach().reshape(-1, NUM_CLASSES),
        reg_flat.detach().reshape(-1, 4),
    )
    labels, pos_idx, pos_anchors, reg_targets = ev.compute_targets(
        cls_flat, reg_flat, targets, anchors
    )
    n = pos_idx.numel()
    assert n > 1
    pred = CODER.decode(reg_flat[pos_idx], pos_anchors)
    ious = torch.tensor(
        [iou_plus1(p, t) for p, t in zip(pred.tolist(), reg_targets.tolist())], dtype=torch.float64
    )
    assert loss_cls.item() == pytest.approx(_focal(cls_flat, labels).sum().item() / n, rel=1e-9)
    weighted = (ious * giou_loss(pred, reg_targets)).sum() / ious.sum()
    assert loss_reg.item() == pytest.approx(1.3 * weighted.item(), rel=1e-9)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        iou_flat.detach().reshape(-1)[pos_idx], ious, reduction="sum"
    )
    assert loss_iou.item() == pytest.approx(0.5 * bce.item() / n, rel=1e-9)


def test_make_from_config_and_giou_definition():
    ev = make_paa_loss_evaluator(get_cfg(), CODER, make_paa_assigner(get_cfg()))
    assert (ev.assigner.topk, ev.reg_loss_weight, ev.iou_loss_weight, ev.gamma, ev.alpha) == (
        9,
        1.3,
        0.5,
        2.0,
        0.25,
    )
    assert ev.matcher.high_threshold == ev.matcher.low_threshold == 0.1
    # GIoU without +1: [0,0,2,2] vs [1,1,3,3]: inter 1, union 7, enclosing 9.
    got = giou_loss(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 1, 3, 3]]))
    assert got.item() == pytest.approx(1 - (1 / 7 - 2 / 9), rel=1e-6)
    # A prediction with x2 < x1 becomes an empty box at x1 (no intersection).
    got = giou_loss(torch.tensor([[5.0, 0, 1, 2]]), torch.tensor([[0.0, 0, 2, 2]]))
    assert got.item() == pytest.approx(_giou_loss([5.0, 0, 1, 2], [0.0, 0, 2, 2]), rel=1e-6)
