"""Test-time augmentation: vote merging against a plain loop, scale-range filtering, and the
geometry of the resize/flip round trip with a detector that finds a bright square."""

import numpy as np
import pytest
import torch
from PIL import Image

from paa_core.config import get_cfg
from paa_core.engine.bbox_aug import (
    filter_by_scale_range,
    im_detect_bbox_aug,
    keep_top_scores,
    make_bbox_aug_options,
    merge_boxes_by_vote,
)
from paa_core.structures.bounding_box import BoxList
from paa_core.utils.errors import InputError


def loop_vote(boxes, scores, labels, th, soft, soft_th=0.05):
    """Per class: repeatedly take the best remaining box and every remaining box with IoU >= th to it."""
    out = []
    for c in np.unique(labels):
        det = np.concatenate([boxes[labels == c], scores[labels == c, None]], 1).astype(np.float64)
        det = det[np.argsort(-det[:, 4], kind="stable")]
        while len(det):
            area = (det[:, 2] - det[:, 0] + 1) * (det[:, 3] - det[:, 1] + 1)
            iw = np.maximum(
                0, np.minimum(det[0, 2], det[:, 2]) - np.maximum(det[0, 0], det[:, 0]) + 1
            )
            ih = np.maximum(
                0, np.minimum(det[0, 3], det[:, 3]) - np.maximum(det[0, 1], det[:, 1]) + 1
            )
            iou = iw * ih / (area[0] + area - iw * ih)
            idx = np.where(iou >= th)[0]
            cluster, cluster_iou = det[idx], iou[idx]
            det = np.delete(det, idx, 0)
            if len(cluster) == 1:
                out.append([*cluster[0], c])
                continue
            w = cluster[:, 4:5]
            out.append([*((cluster[:, :4] * w).sum(0) / w.sum()), cluster[:, 4].max(), c])
            if soft:
                for row, o in zip(cluster, cluster_iou):
                    if row[4] * (1 - o) >= soft_th:
                        out.append([*row[:4], row[4] * (1 - o), c])
    return np.array(out).reshape(-1, 6)


def random_detections(n_clusters=30, per_cluster=6, seed=0):
    g = np.random.RandomState(seed)
    centers = g.uniform(20, 300, (n_clusters, 2))
    sizes = g.uniform(8, 80, (n_clusters, 2))
    boxes, labels = [], []
    for c, s in zip(centers, sizes):
        jitter = g.normal(0, 0.15, (per_cluster, 4)) * np.concatenate([s, s])
        base = np.concatenate([c - s / 2, c + s / 2])
        boxes.append(base + jitter)
        labels.append(np.full(per_cluster, g.randint(1, 4)))
    boxes = np.concatenate(boxes).astype(np.float32)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    scores = g.uniform(0.05, 1, len(boxes)).astype(np.float32)
    return boxes, scores, np.concatenate(labels)


def as_sorted(rows):
    rows = np.asarray(rows, dtype=np.float64)
    return rows[np.lexsort(rows.T[::-1])]


@pytest.mark.parametrize("merge_type", ["vote", "soft-vote"])
@pytest.mark.parametrize("th", [0.3, 0.66])
def test_vote_merge_matches_loop(merge_type, th):
    boxes, scores, labels = random_detections()
    got_b, got_s, got_l = merge_boxes_by_vote(
        torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels), th, merge_type
    )
    want = loop_vote(boxes, scores, labels, th, soft=merge_type == "soft-vote")
    got = np.concatenate([got_b.numpy(), got_s.numpy()[:, None], got_l.numpy()[:, None]], 1)
    assert len(want) < len(boxes) and got.shape == want.shape
    np.testing.assert_allclose(as_sorted(got), as_sorted(want), rtol=1e-5, atol=1e-3)
    if merge_type == "soft-vote":
        assert len(want) > len(loop_vote(boxes, scores, labels, th, soft=False))


def test_vote_keeps_singletons_and_empty_input():
    boxes = torch.tensor([[0.0, 0, 9, 9], [100, 100, 120, 130]])
    b, s, _ = merge_boxes_by_vote(
        boxes, torch.tensor([0.3, 0.9]), torch.tensor([1, 1]), 0.5, "soft-vote"
    )
    assert torch.equal(b, boxes[[1, 0]]) and torch.equal(s, torch.tensor([0.9, 0.3]))
    b, s, _ = merge_boxes_by_vote(
        torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5
    )
    assert b.shape == (0, 4)
    with pytest.raises(ValueError, match="merge_type.*'nms'"):
        merge_boxes_by_vote(boxes, torch.ones(2), torch.ones(2, dtype=torch.int64), 0.5, "nms")


def test_scale_range_filter_uses_plus_one_areas_strictly():
    # Areas with +1 widths: 10*10=100, 11*11=121, 20*20=400, 21*21=441.
    boxes = torch.tensor([[0.0, 0, 9, 9], [0, 0, 10, 10], [0, 0, 19, 19], [0, 0, 20, 20]])
    bl = BoxList(boxes, (50, 50))
    bl.add_field("scores", torch.arange(4.0))
    kept = filter_by_scale_range(bl, 10, 21)
    loop = [
        i
        for i, (x1, y1, x2, y2) in enumerate(boxes.tolist())
        if 100 < (x2 - x1 + 1) * (y2 - y1 + 1) < 441
    ]
    assert kept.get_field("scores").tolist() == [float(i) for i in loop] == [1.0, 2.0]


def test_keep_top_scores_keeps_ties():
    bl = BoxList(torch.zeros(5, 4), (10, 10))
    bl.add_field("scores", torch.tensor([0.1, 0.5, 0.3, 0.3, 0.2]))
    assert keep_top_scores(bl, 1).get_field("scores").tolist() == [0.5]
    # The 2nd best score is shared by two boxes: both stay, like the reference's kthvalue cut.
    assert keep_top_scores(bl, 2).get_field("scores").tolist() == pytest.approx([0.5, 0.3, 0.3])
    assert len(keep_top_scores(bl, 10)) == 5


class SquareFinder(torch.nn.Module):
    """Detects the one bright square of each (un-padded) image: box = its pixel extent, +1 convention.

    Records the input sizes it is run at.
    """

    def __init__(self):
        super().__init__()
        self.sizes = []

    def forward(self, images):
        out = []
        for tensor, (h, w) in zip(images.tensors, images.image_sizes):
            self.sizes.append((w, h))
            bright = tensor[:, :h, :w].mean(0) > 0
            ys, xs = bright.nonzero(as_tuple=True)
            bl = BoxList(
                torch.tensor([[xs.min(), ys.min(), xs.max(), ys.max()]], dtype=torch.float32),
                (w, h),
            )
            bl.add_field("scores", torch.tensor([0.9]))
            bl.add_field("labels", torch.tensor([2]))
            out.append(bl)
        return out


def square_image():
    img = np.zeros((60, 120, 3), dtype=np.uint8)
    img[10:30, 20:50] = 255  # x 20..49, y 10..29 off-centre, so a wrong flip shows
    return Image.fromarray(img)


def tta_options(**aug):
    """Test sizes 120 / 1000 with the given TEST.BBOX_AUG keys; NMS at 1.0 suppresses nothing."""
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 120, 1000
    cfg.MODEL.PAA.NMS_TH = 1.0
    for key, value in aug.items():
        setattr(cfg.TEST.BBOX_AUG, key, value)
    return make_bbox_aug_options(cfg)


def test_tta_maps_every_run_back_to_the_identity_frame():
    model = SquareFinder()
    common = dict(H_FLIP=True, SCALES=(60, 240, 900), MAX_SIZE=2000, SCALE_H_FLIP=True)
    (result,) = im_detect_bbox_aug(
        model, [square_image()], torch.device("cpu"), tta_options(**common)
    )
    # identity: 120 x 240; scales 60 and 240 keep MAX_SIZE_TEST, 900 -> 1800 wide is allowed by MAX_SIZE 2000.
    assert model.sizes == [(240, 120)] * 2 + [(120, 60)] * 2 + [(480, 240)] * 2 + [(1800, 900)] * 2
    assert result.size == (240, 120)
    # NMS at 1.0 suppresses nothing: each run's box, mapped back, must sit on the square.
    expected = torch.tensor(
        [40.0, 20, 99, 59]
    )  # the square at identity scale 2: x 40..99, y 20..59
    assert len(result) == 8
    torch.testing.assert_close(result.bbox, expected.expand(8, 4), atol=2.0, rtol=0)

    model.sizes.clear()
    options = tta_options(
        **common,
        VOTE=True,
        MERGE_TYPE="vote",
        VOTE_TH=0.66,
        SCALE_RANGES=((0, 10000), (0, 10000), (0, 100)),
    )
    (voted,) = im_detect_bbox_aug(model, [square_image()], torch.device("cpu"), options)
    # At scale 900 the square is ~450 x 300 px, outside (0, 100): dropped; the rest vote into one box.
    assert len(voted) == 1 and voted.get_field("labels").tolist() == [2]
    torch.testing.assert_close(voted.bbox[0], expected, atol=1.0, rtol=0)
    assert voted.get_field("scores").tolist() == pytest.approx([0.9])


def test_tta_options_keep_the_merge_numbers_and_cap_large_scales_from_the_config():
    options = tta_options(SCALES=(400, 799, 800), MAX_SIZE=3000)
    assert (options.soft_vote_th, options.max_vote_detections) == (0.05, 1000)
    assert [r.transform.transforms[0].max_size for r in options.runs] == [1000, 1000, 1000, 3000]
    assert [r.hflip for r in options.runs] == [False] * 4
    options = tta_options(
        SCALES=(400, 799, 800),
        MAX_SIZE=3000,
        MAX_SIZE_FROM_SCALE=500,
        SOFT_VOTE_TH=0.2,
        VOTE_MAX_DETECTIONS=7,
    )
    assert [r.transform.transforms[0].max_size for r in options.runs] == [1000, 1000, 3000, 3000]
    assert (options.soft_vote_th, options.max_vote_detections) == (0.2, 7)
    with pytest.raises(InputError, match="^TEST.BBOX_AUG.SCALE_RANGES needs one"):
        tta_options(SCALES=(400, 800), SCALE_RANGES=((0, 1),))


def test_tta_of_faster_rcnn_uses_the_box_heads_nms_and_cap():
    cfg = get_cfg()
    cfg.MODEL.PAA_ON, cfg.MODEL.RPN_ONLY = False, False
    cfg.MODEL.ROI_HEADS.NMS, cfg.MODEL.ROI_HEADS.DETECTIONS_PER_IMG = 0.45, 77
    options = make_bbox_aug_options(cfg)
    assert (options.nms_th, options.detections_per_img) == (0.45, 77)
    paa = make_bbox_aug_options(get_cfg())
    assert (paa.nms_th, paa.detections_per_img) == (0.6, 100)
    cfg.MODEL.RPN_ONLY = True
    with pytest.raises(InputError, match="^TEST.BBOX_AUG.ENABLED: a proposal-only model"):
        make_bbox_aug_options(cfg)
