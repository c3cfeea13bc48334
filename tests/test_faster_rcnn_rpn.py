"""Faster R-CNN RPN: anchors, IoU and PAA labels, the three losses and the proposals,
against plain per-anchor / per-GT / per-level loops (scikit-learn for the mixtures)."""

import math

import numpy as np
import pytest
import torch
from oracles import d2_decode, d2_deltas, iou_continuous, iou_plus1, sklearn_cuts

from paa_core.config import cfg
from paa_core.modeling.anchor_generator import make_anchor_generator_rpn
from paa_core.modeling.balanced_positive_negative_sampler import BalancedPositiveNegativeSampler
from paa_core.modeling.box_coder import BoxCoder
from paa_core.modeling.head_outputs import flatten_rpn_outputs
from paa_core.modeling.matcher import Matcher
from paa_core.modeling.paa_assigner import ProbabilisticAnchorAssigner
from paa_core.modeling.rpn.inference import RPNPostProcessor
from paa_core.modeling.rpn.loss import RPNLossComputation
from paa_core.structures.bounding_box import BoxList

CODER = BoxCoder((1.0, 1.0, 1.0, 1.0), offset=0)
# Feature-map sizes of a 96 x 128 padded batch at strides 4..64 (P6 = max-pool of P5).
GRID = [(24, 32), (12, 16), (6, 8), (3, 4), (2, 2)]


def _anchors():
    return make_anchor_generator_rpn(cfg).grid_anchors(GRID)


def _target(boxes, size=(128, 96)):
    t = BoxList(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), size)
    t.add_field("labels", torch.ones(len(t), dtype=torch.long))
    return t


def _evaluator(use_paa, fg=0.1, bg=0.1, batch=10**7, fraction=1.0):
    """Samples every anchor by default, so the losses are deterministic."""
    return RPNLossComputation(
        Matcher(fg, bg, True),
        BalancedPositiveNegativeSampler(batch, fraction),
        CODER,
        paa_assigner=ProbabilisticAnchorAssigner(9) if use_paa else None,
        box_offset=0,
    )


def _softplus(x):
    return max(x, 0) + math.log1p(math.exp(-abs(x)))


def _bce(x, y):
    return max(x, 0) - x * y + math.log1p(math.exp(-abs(x)))


def test_anchors_follow_the_detectron2_layout():
    anchors = _anchors()
    assert [len(a) for a in anchors] == [h * w * 3 for h, w in GRID]
    for level, (stride, size) in enumerate(zip((4, 8, 16, 32, 64), (32, 64, 128, 256, 512))):
        h, w = GRID[level]
        expected = []
        for y in range(h):
            for x in range(w):
                for ratio in (0.5, 1.0, 2.0):
                    aw = math.sqrt(size * size / ratio)
                    ah = ratio * aw
                    cx, cy = x * stride, y * stride
                    expected.append([cx - aw / 2, cy - ah / 2, cx + aw / 2, cy + ah / 2])
        torch.testing.assert_close(anchors[level], torch.tensor(expected, dtype=torch.float32))


def test_box_coder_without_offset_hand_computed():
    anchor = torch.tensor([[0.0, 0.0, 16.0, 8.0]])  # w 16, h 8, centre (8, 4)
    gt = torch.tensor([[4.0, 2.0, 36.0, 10.0]])  # w 32, h 8, centre (20, 6)
    codes = CODER.encode(gt, anchor)
    torch.testing.assert_close(codes, torch.tensor([[12 / 16, 2 / 8, math.log(2.0), 0.0]]))
    torch.testing.assert_close(CODER.decode(codes, anchor), gt)


def test_standard_rpn_labels_hand_computed():
    """0.3 / 0.7 thresholds: IoU 0.8 positive, 0.5 ignored, 0.1 negative; a GT whose best
    anchor only reaches 0.5 still makes that anchor positive."""
    anchors = [torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 20], [0, 0, 10, 100], [50, 50, 60, 60]])]
    gt_a = [0.0, 0, 10, 8]  # IoU 0.8 / 0.4 / 0.08 with anchors 0..2
    gt_b = [50.0, 50, 60, 55]  # IoU 0.5 with anchor 3 only
    ev = _evaluator(False, fg=0.7, bg=0.3)
    labels, matched, _ = ev.prepare_targets(
        anchors, torch.zeros(1, 4), torch.zeros(1, 4, 4), [_target([gt_a, gt_b])]
    )
    assert labels.tolist() == [[1, -1, 0, 1]]
    torch.testing.assert_close(matched[0, 3], torch.tensor(gt_b))


def _oracle(anchors, obj, reg, iou, gts, batch_per_image, ours):
    """The PAA RPN written as loops: per image, per anchor, per GT, per level. Where the
    mixture ties (`sklearn_cuts` with a tolerance: two samples symmetric around the mean tie
    only up to rounding), the cut that agrees with `ours` (per image sets of
    positive anchors) is taken."""
    levels = [lvl for lvl, a in enumerate(anchors) for _ in range(len(a))]
    anchors = torch.cat(anchors).tolist()
    num_images = len(gts)
    loss_obj = loss_loc = loss_iou = 0.0
    num_pos = 0
    all_labels = []
    for i, gt in enumerate(gts):
        o, d, q = obj[i].tolist(), reg[i].tolist(), iou[i].tolist()
        ious = [[iou_continuous(g, a) for a in anchors] for g in gt]
        idx, label = [], []
        for a in range(len(anchors)):
            best = max(range(len(gt)), key=lambda j: ious[j][a]) if gt else 0
            idx.append(best)
            label.append(1 if gt and ious[best][a] >= 0.1 else 0)
        for j in range(len(gt)):
            top = max(ious[j])
            for a in range(len(anchors)):
                if ious[j][a] == top:
                    label[a] = 1
        score = {}
        for a in range(len(anchors)):
            if label[a] == 1:
                target = d2_deltas(anchors[a], gt[idx[a]])
                score[a] = _softplus(-o[a]) + sum(abs(p - t) for p, t in zip(d[a], target))
        positive = set()
        for j in range(len(gt)):
            cands = []
            for lvl in range(5):
                pool = [a for a in score if idx[a] == j and levels[a] == lvl]
                cands += sorted(pool, key=lambda a: score[a])[:9]
            cands.sort(key=lambda a: score[a])
            if len(cands) == 1:
                positive.update(cands)
            elif len(cands) >= 2:
                counts = sorted(
                    sklearn_cuts([score[a] for a in cands], tie_rtol=1e-6, dtype=np.float32)
                )
                agree = [
                    k for k in counts if set(cands[:k]) <= ours[i] and not set(cands[k:]) & ours[i]
                ]
                positive.update(cands[: (agree or counts)[0]])
        all_labels.append(sorted(positive))
        for a in range(len(anchors)):
            y = 1.0 if a in positive else 0.0
            loss_obj += _bce(o[a], y)
            if a in positive:
                g = gt[idx[a]]
                u = iou_plus1(d2_decode(anchors[a], d[a]), g)
                loss_loc += u * sum(abs(p - t) for p, t in zip(d[a], d2_deltas(anchors[a], g)))
                loss_iou += _bce(q[a], u)
                num_pos += 1
    normalizer = batch_per_image * num_images
    return all_labels, {
        "loss_objectness": loss_obj / normalizer,
        "loss_rpn_box_reg": loss_loc / normalizer,
        "loss_rpn_iou": loss_iou / max(num_pos, 1),
    }


GTS = [
    [[10.0, 12.0, 50.0, 70.0], [40.0, 30.0, 120.0, 90.0], [70.0, 8.0, 86.0, 20.0]],
    [[5.0, 5.0, 100.0, 60.0], [60.0, 40.0, 75.0, 52.0]],
]


@pytest.mark.parametrize("gts", [GTS, [GTS[0], []]], ids=["two-images", "one-image-without-gt"])
def test_paa_labels_and_losses_match_per_gt_loop(gts):
    anchors = _anchors()
    total = sum(len(a) for a in anchors)
    g = torch.Generator().manual_seed(3)
    obj = torch.randn(2, total, generator=g) * 2
    reg = torch.randn(2, total, 4, generator=g) * 0.3
    iou = torch.randn(2, total, generator=g)
    targets = [_target(b) for b in gts]
    ev = _evaluator(True)
    labels, _, _ = ev.prepare_targets(anchors, obj, reg, targets)
    ours = [torch.nonzero(lab).squeeze(1).tolist() for lab in labels]
    expected_labels, expected_losses = _oracle(
        anchors, obj, reg, iou, gts, 10**7, [set(p) for p in ours]
    )
    assert ours == expected_labels
    assert (
        sum(map(len, expected_labels)) >= 5 * sum(map(len, gts)) // 2
    )  # the split kept a few per GT
    losses = ev(anchors, obj.requires_grad_(), reg.requires_grad_(), iou.requires_grad_(), targets)
    assert set(losses) == set(expected_losses)
    for name, value in expected_losses.items():
        assert losses[name].item() == pytest.approx(value, rel=1e-5, abs=1e-9), name
    sum(losses.values()).backward()
    assert obj.grad.abs().sum() > 0 and reg.grad.abs().sum() > 0 and iou.grad.abs().sum() > 0


def test_batch_without_gt_trains_all_negative():
    anchors = _anchors()
    total = sum(len(a) for a in anchors)
    obj = torch.randn(2, total, requires_grad=True)
    reg = torch.randn(2, total, 4, requires_grad=True)
    iou = torch.randn(2, total, requires_grad=True)
    losses = _evaluator(True, batch=256, fraction=0.5)(
        anchors, obj, reg, iou, [_target([]), _target([])]
    )
    assert losses["loss_rpn_box_reg"].item() == 0 and losses["loss_rpn_iou"].item() == 0
    assert losses["loss_objectness"].item() > 0
    sum(losses.values()).backward()
    # 256 sampled negatives per image get a gradient, nothing else.
    assert int((obj.grad != 0).sum()) == 512


def test_sampler_keeps_at_most_half_positives():
    torch.manual_seed(0)
    labels = torch.cat([torch.ones(300), torch.zeros(1000), -torch.ones(50)]).long()
    pos, neg = BalancedPositiveNegativeSampler(256, 0.5)([labels, labels[200:]])
    assert [int(p.sum()) for p in pos] == [128, 100] and [int(n.sum()) for n in neg] == [128, 156]
    assert bool((labels[pos[0]] == 1).all()) and bool((labels[neg[0]] == 0).all())


# ----------------------------------------------------------------------------- proposals
def _greedy_nms(boxes, scores, thresh):
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        if all(iou_continuous(boxes[i], boxes[k]) <= thresh for k in keep):
            keep.append(i)
    return keep


def _direct_proposals(anchors, obj, reg, iou, image_size, pre, post, nms):
    """find_top_rpn_proposals for one image, spelled out."""
    h, w = image_size
    candidates = []
    start = 0
    for _level, a in enumerate(anchors):
        n = len(a)
        scores = []
        for t in range(start, start + n):
            p = math.sqrt(1 / (1 + math.exp(-obj[t])) / (1 + math.exp(-iou[t])))
            scores.append((math.log(p / (1 - p)), t))
        top = sorted(scores, reverse=True)[:pre]
        boxes, kept_scores = [], []
        for s, t in top:
            x1, y1, x2, y2 = d2_decode(a[t - start].tolist(), reg[t].tolist())
            box = [min(max(x1, 0), w), min(max(y1, 0), h), min(max(x2, 0), w), min(max(y2, 0), h)]
            if box[2] - box[0] > 0 and box[3] - box[1] > 0:
                boxes.append(box)
                kept_scores.append(s)
        candidates += [(kept_scores[k], boxes[k]) for k in _greedy_nms(boxes, kept_scores, nms)]
        start += n
    candidates.sort(key=lambda c: -c[0])
    return candidates[:post]


def test_proposals_match_direct_implementation():
    anchors = _anchors()
    g = torch.Generator().manual_seed(5)
    heads = []
    for h, w in GRID:
        heads.append(
            (
                torch.randn(2, 3, h, w, generator=g) * 2,
                torch.randn(2, 12, h, w, generator=g) * 0.5,
                torch.randn(2, 3, h, w, generator=g),
            )
        )
    objectness, deltas, ious = (list(x) for x in zip(*heads))
    sizes = [(96, 128), (80, 100)]
    post = RPNPostProcessor(
        pre_nms_top_n=40, fpn_post_nms_top_n=60, nms_thresh=0.7, min_size=0, box_coder=CODER
    )
    proposals = post(anchors, objectness, deltas, ious, sizes)
    obj, reg, iou = flatten_rpn_outputs(objectness, deltas, ious)
    for i, proposal in enumerate(proposals):
        expected = _direct_proposals(
            anchors, obj[i].tolist(), reg[i], iou[i].tolist(), sizes[i], 40, 60, 0.7
        )
        assert len(proposal) == len(expected) == 60
        assert proposal.size == (sizes[i][1], sizes[i][0])
        torch.testing.assert_close(
            proposal.get_field("objectness"), torch.tensor([s for s, _ in expected])
        )
        torch.testing.assert_close(
            proposal.bbox, torch.tensor([b for _, b in expected]), atol=1e-4, rtol=1e-5
        )
