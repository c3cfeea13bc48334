"""PAA post-processing against a plain-Python implementation of docs/DESIGN.md §6, on
every device (the `device` fixture)."""

import math

import pytest
import torch
from helpers import real_anchors
from oracles import iou_plus1

from paa_core.config import get_cfg
from paa_core.modeling.box_coder import BoxCoder
from paa_core.modeling.paa.inference import PAAPostProcessor, make_paa_postprocessor
from paa_core.modeling.paa.score_voting import score_voting
from paa_core.structures.bounding_box import BoxList

C = 3  # foreground classes
CODER = BoxCoder((10.0, 10.0, 5.0, 5.0))
SIZES = ((64, 96), (60, 90))  # (h, w) of the test images


def _oracle(box_cls, box_reg, iou_pred, anchors, image_sizes, th, pre_top, nms_th, cap, voting):
    """Loops over levels, locations, classes and boxes (docs/DESIGN.md §6)."""
    results = []
    for i, (h, w) in enumerate(image_sizes):
        dets = []  # (score, label, box)
        for level, anchors_l in enumerate(anchors):
            _, _, fh, fw = box_cls[level].shape
            level_dets = []
            for y in range(fh):
                for x in range(fw):
                    loc = y * fw + x
                    for c in range(C):
                        p = torch.sigmoid(box_cls[level][i, c, y, x]).item()
                        if p <= th:
                            continue
                        s = p
                        if iou_pred is not None:
                            s = math.sqrt(p * torch.sigmoid(iou_pred[level][i, 0, y, x]).item())
                        level_dets.append((s, c + 1, loc))
            level_dets.sort(key=lambda d: -d[0])
            for s, label, loc in level_dets[:pre_top]:
                box = CODER.decode(
                    box_reg[level][i, :, loc // fw, loc % fw][None], anchors_l[loc][None]
                )[0].tolist()
                box = [
                    min(max(box[0], 0), w - 1),
                    min(max(box[1], 0), h - 1),
                    min(max(box[2], 0), w - 1),
                    min(max(box[3], 0), h - 1),
                ]
                dets.append((s, label, box))
        kept = []
        for d in sorted(dets, key=lambda d: -d[0]):
            if all(k[1] != d[1] or iou_plus1(k[2], d[2]) <= nms_th for k in kept):
                kept.append(d)
        kept = kept[:cap]
        if voting:
            voted = []
            for s, label, box in kept:
                num, den = [0.0] * 4, 0.0
                for s2, label2, box2 in dets:
                    o = iou_plus1(box, box2)
                    if label2 == label and o > 0.01:
                        wgt = math.exp(-((1 - o) ** 2) / 0.025) * s2
                        num = [n + wgt * v for n, v in zip(num, box2)]
                        den += wgt
                voted.append((s, label, [n / den for n in num]))
            kept = voted
        results.append(kept)
    return results


def _inputs(seed, image_sizes=SIZES, logit_shift=-2.0):
    torch.manual_seed(seed)
    anchors, shapes = real_anchors(image_sizes)
    n = len(image_sizes)
    box_cls = [torch.randn(n, C, h, w) * 1.5 + logit_shift for h, w in shapes]
    box_reg = [torch.randn(n, 4, h, w) * 0.5 for h, w in shapes]
    iou_pred = [torch.randn(n, 1, h, w) for h, w in shapes]
    return anchors, box_cls, box_reg, iou_pred


def _post(pre_top=20, nms_th=0.6, cap=15, voting=True):
    return PAAPostProcessor(0.05, pre_top, nms_th, cap, C, CODER, voting)


def _compare(ours, ref):
    """Same detections (labels, scores to 1e-6 relative, boxes to 1e-3 px) as the loop."""
    ours = ours.to("cpu")
    assert len(ours) == len(ref)
    order = torch.argsort(ours.get_field("scores"), descending=True, stable=True)
    ours = ours[order]
    ref = sorted(ref, key=lambda d: -d[0])
    assert ours.get_field("scores").tolist() == pytest.approx([d[0] for d in ref], rel=1e-6)
    assert ours.get_field("labels").tolist() == [d[1] for d in ref]
    torch.testing.assert_close(ours.bbox, torch.tensor([d[2] for d in ref]), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("voting", [False, True])
@pytest.mark.parametrize("with_iou", [True, False])
def test_matches_loop_implementation(voting, with_iou, device):
    anchors, box_cls, box_reg, iou_pred = _inputs(seed=0)
    iou_pred = iou_pred if with_iou else None
    refs = _oracle(box_cls, box_reg, iou_pred, anchors, SIZES, 0.05, 20, 0.6, 15, voting)
    post = _post(voting=voting)
    results = post(
        [t.to(device) for t in box_cls],
        [t.to(device) for t in box_reg],
        None if iou_pred is None else [t.to(device) for t in iou_pred],
        [a.to(device) for a in anchors],
        SIZES,
    )
    for ours, ref, (h, w) in zip(results, refs, SIZES):
        assert ours.bbox.device.type == device.type
        assert ours.size == (w, h) and ours.mode == "xyxy"
        assert ours.get_field("labels").dtype == torch.int64
        _compare(ours, ref)
    # The inputs exercise the caps: some level has more than 20 candidates, and
    # more than 15 boxes survive NMS.
    assert all(len(r) == 15 for r in results)


def test_threshold_applies_to_cls_before_the_sqrt_product():
    # One location, one class: cls prob 0.06 (> 0.05) with iou prob 0.01 gives score
    # sqrt(0.0006) ~ 0.0245 < 0.05 yet it stays; cls 0.04 is dropped whatever its iou.
    anchors = [torch.tensor([[0.0, 0, 15, 15], [16.0, 16, 31, 31]])]
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    box_cls = [torch.tensor([[logit(0.06), logit(0.04)]]).reshape(1, 1, 1, 2)]
    box_reg = [torch.zeros(1, 4, 1, 2)]
    iou_pred = [torch.tensor([logit(0.01), logit(0.99)]).reshape(1, 1, 1, 2)]
    post = PAAPostProcessor(0.05, 1000, 0.6, 100, 1, CODER, False)
    (result,) = post(box_cls, box_reg, iou_pred, anchors, [(32, 32)])
    assert len(result) == 1
    assert result.get_field("scores").item() == pytest.approx(math.sqrt(0.06 * 0.01), rel=1e-5)
    assert result.get_field("labels").tolist() == [1]
    torch.testing.assert_close(result.bbox, torch.tensor([[0.0, 0, 15, 15]]))


def test_nms_is_class_wise_and_output_clipped():
    anchors = [torch.tensor([[0.0, 0, 19, 19], [1.0, 0, 20, 19], [-5.0, -5, 45, 35]])]
    # Location 0: class 1 and class 2; location 1: class 1 (suppressed by location 0
    # class 1, IoU 0.9); location 2 (out of the image): clipped to the image.
    probs = torch.tensor([[0.9, 0.8], [0.7, 0.01], [0.01, 0.6]])  # [location, class]
    box_cls = [torch.logit(probs).t().reshape(1, 2, 1, 3)]
    box_reg = [torch.zeros(1, 4, 1, 3)]
    post = PAAPostProcessor(0.05, 1000, 0.6, 100, 2, CODER, False)
    (result,) = post(box_cls, box_reg, None, anchors, [(30, 40)])
    got = sorted(zip(result.get_field("labels").tolist(), result.get_field("scores").tolist()))
    assert got == [(1, pytest.approx(0.9)), (2, pytest.approx(0.6)), (2, pytest.approx(0.8))]
    clipped = result.bbox[result.get_field("scores").argmin()]
    assert clipped.tolist() == [0.0, 0.0, 39.0, 29.0]


def test_detections_cap_keeps_the_best():
    anchors, box_cls, box_reg, iou_pred = _inputs(seed=1)
    full = _post(pre_top=1000, nms_th=0.6, cap=0, voting=False)(
        box_cls, box_reg, iou_pred, anchors, SIZES
    )
    capped = _post(pre_top=1000, nms_th=0.6, cap=7, voting=False)(
        box_cls, box_reg, iou_pred, anchors, SIZES
    )
    for f, c in zip(full, capped):
        assert len(f) > 7 and len(c) == 7
        best = f.get_field("scores").sort(descending=True).values[:7]
        torch.testing.assert_close(c.get_field("scores").sort(descending=True).values, best)


def test_score_voting_hand_made():
    size = (100, 100)
    kept = BoxList(torch.tensor([[10.0, 10, 50, 50]]), size)
    kept.add_field("scores", torch.tensor([0.9]))
    kept.add_field("labels", torch.tensor([1]))
    cands = BoxList(
        torch.tensor(
            [[10.0, 10, 50, 50], [12.0, 10, 52, 50], [10.0, 10, 50, 50], [80.0, 80, 90, 90]]
        ),
        size,
    )
    cands.add_field("scores", torch.tensor([0.9, 0.5, 0.7, 0.8]))
    cands.add_field("labels", torch.tensor([1, 1, 2, 1]))  # other class / no overlap ignored
    out = score_voting(kept, cands)
    o = iou_plus1([10, 10, 50, 50], [12, 10, 52, 50])
    w1, w2 = 0.9, math.exp(-((1 - o) ** 2) / 0.025) * 0.5
    x1 = (w1 * 10 + w2 * 12) / (w1 + w2)
    x2 = (w1 * 50 + w2 * 52) / (w1 + w2)
    torch.testing.assert_close(out.bbox, torch.tensor([[x1, 10.0, x2, 50.0]]))
    assert out.get_field("scores").tolist() == [pytest.approx(0.9)]
    assert out.get_field("labels").tolist() == [1]


@pytest.mark.parametrize("voting", [False, True])
def test_empty_outputs(voting):
    anchors, box_cls, box_reg, iou_pred = _inputs(seed=2, logit_shift=-20.0)
    results = _post(voting=voting)(box_cls, box_reg, iou_pred, anchors, SIZES)
    for r in results:
        assert len(r) == 0 and r.bbox.shape == (0, 4)
        assert set(r.fields()) == {"scores", "labels"}


def test_make_from_config_and_bad_channels():
    post = make_paa_postprocessor(get_cfg(), CODER)
    assert (post.pre_nms_thresh, post.pre_nms_top_n, post.nms_thresh) == (0.05, 1000, 0.6)
    assert (post.detections_per_img, post.num_classes, post.score_voting) == (100, 80, True)
    anchors, box_cls, box_reg, iou_pred = _inputs(seed=3)
    with pytest.raises(ValueError, match="channels"):
        post(box_cls, box_reg, iou_pred, anchors, SIZES)
