"""Fast R-CNN box head: proposal labels and sampling, losses, post-processing and the
pooler's level choice, on hand-computed cases."""

import math

import pytest
import torch
from torchvision.ops import roi_align

from paa_core.modeling.balanced_positive_negative_sampler import BalancedPositiveNegativeSampler
from paa_core.modeling.box_coder import BoxCoder
from paa_core.modeling.matcher import Matcher
from paa_core.modeling.poolers import Pooler
from paa_core.modeling.roi_heads.box_head.inference import PostProcessor
from paa_core.modeling.roi_heads.box_head.loss import GT_PROPOSAL_LOGIT, FastRCNNLossComputation
from paa_core.structures.bounding_box import BoxList

CODER = BoxCoder((10.0, 10.0, 5.0, 5.0), offset=0)


def _boxlist(boxes, size=(200, 100), **fields):
    b = BoxList(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), size)
    for k, v in fields.items():
        b.add_field(k, torch.tensor(v))
    return b


def _loss(batch=512, fraction=0.25):
    return FastRCNNLossComputation(
        Matcher(0.5, 0.5, False),
        BalancedPositiveNegativeSampler(batch, fraction),
        CODER,
        box_offset=0,
    )


def test_proposal_labels_targets_and_appended_gt():
    # GT (0,0,10,10) class 2; proposals with IoU 0.5 (fg), 0.49 (bg) and 0.
    proposals = _boxlist(
        [[0, 0, 10, 20], [0, 0, 10, 20.4], [50, 50, 60, 60]], objectness=[1.0, 2.0, 3.0]
    )
    target = _boxlist([[0, 0, 10, 10]], labels=[2])
    (sampled,) = _loss().subsample([proposals], [target])
    order = sampled.bbox[:, 3].argsort()  # the sampler shuffles; sort by y2 to compare
    assert sampled.get_field("labels")[order].tolist() == [2, 2, 0, 0]
    torch.testing.assert_close(
        sampled.get_field("objectness")[order], torch.tensor([GT_PROPOSAL_LOGIT, 1.0, 2.0, 3.0])
    )
    # Proposal (0,0,10,20): centre y 10 -> GT centre y 5, h 20 -> 10: dy = 10 * -5/20, dh = 5 log(1/2).
    fg = order[1]
    torch.testing.assert_close(
        sampled.get_field("regression_targets")[fg],
        torch.tensor([0.0, -2.5, 0.0, 5 * math.log(0.5)]),
    )
    torch.testing.assert_close(sampled.get_field("regression_targets")[order[0]], torch.zeros(4))


def test_sampling_keeps_a_quarter_foreground():
    torch.manual_seed(0)
    boxes = [[0, 0, 10, 10]] * 300 + [[100, 50, 110, 60]] * 1000
    proposals = _boxlist(boxes, objectness=[0.0] * 1300)
    target = _boxlist([[0, 0, 10, 10]], labels=[1])
    (sampled,) = _loss().subsample([proposals], [target])
    labels = sampled.get_field("labels")
    assert len(sampled) == 512 and int((labels > 0).sum()) == 128


def test_image_without_gt_samples_background_only():
    proposals = _boxlist([[0, 0, 10, 10], [20, 20, 40, 40]], objectness=[0.0, 0.0])
    (sampled,) = _loss().subsample([proposals], [_boxlist([], labels=[])])
    assert sampled.get_field("labels").tolist() == [0, 0]


def test_losses_hand_computed():
    """2 ROIs, classes {bg, 1, 2}: CE averaged over both; L1 of the GT class's deltas of
    the foreground ROI divided by the 2 sampled ROIs."""
    p1, p2 = _boxlist([[0, 0, 1, 1]]), _boxlist([[0, 0, 1, 1]])
    p1.add_field("labels", torch.tensor([2]))
    p1.add_field("regression_targets", torch.tensor([[1.0, -1.0, 0.5, 0.0]]))
    p2.add_field("labels", torch.tensor([0]))
    p2.add_field("regression_targets", torch.tensor([[9.0, 9.0, 9.0, 9.0]]))
    logits = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]], requires_grad=True)
    deltas = torch.zeros(2, 12)
    deltas[0, 8:12] = torch.tensor([0.5, 0.0, 0.5, 1.0])
    deltas[0, 4:8] = 7.0  # another class's deltas: not in the loss
    deltas.requires_grad_()
    loss_cls, loss_box = _loss()([p1, p2], logits, deltas)
    ce1 = -(2.0 - math.log(1 + math.e + math.e**2))
    ce2 = -(3.0 - math.log(math.e**3 + 2))
    assert loss_cls.item() == pytest.approx((ce1 + ce2) / 2, rel=1e-6)
    assert loss_box.item() == pytest.approx((0.5 + 1.0 + 0.0 + 1.0) / 2, rel=1e-6)
    (loss_cls + loss_box).backward()
    assert deltas.grad[0, 4:8].abs().sum() == 0 and deltas.grad[0, 8:12].abs().sum() > 0


def test_post_processing_hand_computed():
    """Zero deltas keep the proposal boxes; a box sticking out is clipped to [0, w]; class
    scores <= 0.05 are dropped; NMS acts within a class only; top-k by score."""
    proposals = _boxlist([[10, 10, 50, 50], [11, 10, 51, 50], [150, 60, 230, 120]], size=(200, 100))
    # softmax rows: ROIs 0 and 1 overlap (IoU 0.95): in class 1 ROI 0 (0.8) suppresses
    # ROI 1 (0.7), in class 2 ROI 1 (0.2) suppresses ROI 0 (0.1); ROI 2's class 1 (0.04)
    # is under the threshold, its class 2 box is clipped at x = 200, y = 100.
    logits = torch.log(torch.tensor([[0.1, 0.8, 0.1], [0.1, 0.7, 0.2], [0.5, 0.04, 0.46]]))
    post = PostProcessor(score_thresh=0.05, nms=0.5, detections_per_img=100, box_coder=CODER)
    (result,) = post(logits, torch.zeros(3, 12), [proposals])
    got = sorted(
        zip(
            result.get_field("scores").tolist(),
            result.get_field("labels").tolist(),
            result.bbox.tolist(),
        ),
        reverse=True,
    )
    expected = [
        (0.8, 1, [10, 10, 50, 50]),
        (0.46, 2, [150, 60, 200, 100]),
        (0.2, 2, [11, 10, 51, 50]),
    ]
    assert len(got) == len(expected)
    for (s, c, b), (es, ec, eb) in zip(got, expected):
        assert s == pytest.approx(es, rel=1e-5) and c == ec
        assert b == pytest.approx(eb)
    assert result.get_field("scores").tolist() == sorted(
        result.get_field("scores").tolist(), reverse=True
    )
    (top2,) = PostProcessor(0.05, 0.5, 2, CODER)(logits, torch.zeros(3, 12), [proposals])
    assert top2.get_field("scores").tolist() == pytest.approx([0.8, 0.46], rel=1e-5)


def test_pooler_levels_and_aligned_roi_align():
    """Level floor(4 + log2(sqrt(area) / 224)) clamped to P2..P5 (area without +1); each box
    pooled by aligned ROIAlign on its own level."""
    pooler = Pooler(7, (1 / 4, 1 / 8, 1 / 16, 1 / 32), sampling_ratio=0, box_offset=0)
    boxes = torch.tensor(
        [[0, 0, 224, 224], [0, 0, 111, 111], [0, 0, 112, 112], [0, 0, 20, 20], [0, 0, 500, 1000.0]]
    )
    assert pooler.map_levels(boxes).tolist() == [2, 0, 1, 0, 3]
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, 3, 256 // s, 256 // s, generator=g) for s in (4, 8, 16, 32)]
    b0 = _boxlist([[0, 0, 224, 224]], size=(256, 256))
    b1 = _boxlist([[3, 5, 40, 30], [0, 0, 250, 250]], size=(256, 256))  # levels P2 and P4
    out = pooler(feats, [b0, b1])
    assert out.shape == (3, 3, 7, 7)
    rois = torch.tensor([[0, 0, 0, 224, 224], [1, 3, 5, 40, 30], [1, 0, 0, 250, 250.0]])
    for row, level in enumerate((2, 0, 2)):
        expected = roi_align(
            feats[level],
            rois[row : row + 1],
            7,
            spatial_scale=1 / 2 ** (level + 2),
            sampling_ratio=0,
            aligned=True,
        )
        torch.testing.assert_close(out[row : row + 1], expected)
