"""Multi-scale and flip test-time augmentation (SPEC section 5).

The test loader yields untransformed PIL images here; each augmentation resizes them
itself, runs the detector and maps the boxes back to the frame of the identity size
(`MIN_SIZE_TEST`, `MAX_SIZE_TEST`), where all detections are merged.
"""
import functools

import numpy as np
import torch

from paa_core.data import transforms as T
from paa_core.structures.bounding_box import FLIP_LEFT_RIGHT, TO_REMOVE, BoxList
from paa_core.structures.box_ops import box_area, box_iou
from paa_core.structures.boxlist_ops import boxlist_ml_nms, cat_boxlist
from paa_core.structures.image_list import to_image_list

MERGE_TYPES = ("vote", "soft-vote")


class ImagePreparer:
    """Resize (and optionally flip) PIL images, normalise and batch them as the test loader does."""

    def __init__(self, pixel_mean, pixel_std, to_bgr255, size_divisible):
        self.normalize = T.Normalize(pixel_mean, pixel_std, to_bgr255)
        self.size_divisible = size_divisible

    def __call__(self, images, min_size, max_size, hflip):
        steps = [T.Resize(min_size, max_size)]
        if hflip:
            steps.append(T.RandomHorizontalFlip(1.0))
        transform = T.Compose(steps + [T.ToTensor(), self.normalize])
        return to_image_list([transform(image)[0] for image in images], self.size_divisible)


def im_detect_bbox(model, images, prepare, min_size, max_size, device, hflip=False):
    """Detections at one size, in the frame of the resized (unflipped) image."""
    boxlists = model(prepare(images, min_size, max_size, hflip).to(device))
    if hflip:
        boxlists = [boxlist.transpose(FLIP_LEFT_RIGHT) for boxlist in boxlists]
    return boxlists


def filter_by_scale_range(boxlist, min_side, max_side):
    """Keep boxes whose area (+1 widths) lies strictly between min_side^2 and max_side^2."""
    area = box_area(boxlist.convert("xyxy").bbox, offset=TO_REMOVE)
    keep = (area > min_side * min_side) & (area < max_side * max_side)
    return boxlist[keep.nonzero().squeeze(1)]


def vote_clusters(boxes, scores, labels, vote_th):
    """Greedy clustering in descending score order: the best unclustered box takes every
    unclustered box of its label with IoU >= vote_th to it.

    Returns (order, leader, iou_to_leader): boxes sorted by descending score, and for each
    sorted box the sorted position of its cluster's leader and its IoU with the leader.
    The greedy pass is sequential over clusters (as in NMS); each step is vectorised.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    boxes, labels = boxes[order], labels[order]
    iou = box_iou(boxes, boxes, offset=TO_REMOVE)
    joins = (iou >= vote_th) & (labels[:, None] == labels[None, :])
    # The greedy pass visits only cluster leaders; each visit is one vectorised row.
    joins = joins.numpy()
    n = boxes.shape[0]
    leader = np.zeros(n, dtype=np.int64)
    unassigned = np.ones(n, dtype=bool)
    i = 0
    while True:
        members = joins[i] & unassigned
        members[i] = True
        leader[members] = i
        unassigned &= ~members
        rest = np.flatnonzero(unassigned[i + 1:])
        if rest.size == 0:
            break
        i += 1 + int(rest[0])
    leader = torch.from_numpy(leader)
    iou_to_leader = iou[leader, torch.arange(n)]
    return order, leader, iou_to_leader


def merge_boxes_by_vote(boxes, scores, labels, vote_th, merge_type="vote", soft_vote_th=0.05):
    """Merge one image's detections (boxes [N, 4] xyxy, scores [N], labels [N]).

    Each cluster becomes one box: the score-weighted mean of its members, with the
    cluster's highest score; a cluster of one box keeps it unchanged. "soft-vote" also
    keeps each member of a larger cluster whose score * (1 - IoU with the leader) is
    >= soft_vote_th, with that reduced score. Returns (boxes, scores, labels).
    """
    if merge_type not in MERGE_TYPES:
        raise ValueError(f"merge_type must be one of {MERGE_TYPES}, got {merge_type!r}")
    if boxes.shape[0] == 0:
        return boxes, scores, labels
    device = boxes.device
    boxes, scores, labels = boxes.cpu(), scores.cpu(), labels.cpu()
    order, leader, iou_to_leader = vote_clusters(boxes, scores, labels, vote_th)
    boxes, scores, labels = boxes[order], scores[order], labels[order]
    n = boxes.shape[0]

    size = torch.zeros(n, dtype=torch.int64).index_add_(0, leader, torch.ones(n, dtype=torch.int64))
    weighted = torch.zeros_like(boxes).index_add_(0, leader, boxes * scores[:, None])
    weight = torch.zeros_like(scores).index_add_(0, leader, scores)
    leaders = (size > 0).nonzero().squeeze(1)
    merged = torch.where((size[leaders] > 1)[:, None],
                         weighted[leaders] / weight[leaders, None], boxes[leaders])
    out_boxes, out_scores, out_labels = [merged], [scores[leaders]], [labels[leaders]]

    if merge_type == "soft-vote":
        soft_scores = scores * (1 - iou_to_leader)
        keep = (size[leader] > 1) & (soft_scores >= soft_vote_th)
        out_boxes.append(boxes[keep])
        out_scores.append(soft_scores[keep])
        out_labels.append(labels[keep])
    return (torch.cat(out_boxes).to(device), torch.cat(out_scores).to(device),
            torch.cat(out_labels).to(device))


def keep_top_scores(boxlist, max_detections):
    """Keep the boxes scoring at least the `max_detections`-th best score (ties kept)."""
    scores = boxlist.get_field("scores")
    if max_detections <= 0 or len(boxlist) <= max_detections:
        return boxlist
    threshold, _ = torch.kthvalue(scores.cpu(), len(boxlist) - max_detections + 1)
    return boxlist[(scores >= threshold.item()).nonzero().squeeze(1)]


def im_detect_bbox_aug(model, images, device, prepare, test_min_size, test_max_size, h_flip=False,
                       scales=(), scale_max_size=4000, scale_ranges=(), scale_h_flip=False, vote=False,
                       merge_type="vote", vote_th=0.66, soft_vote_th=0.05, max_vote_detections=1000,
                       nms_th=0.6, detections_per_img=100):
    """Detections of `images` (PIL) under every augmentation, merged per image.

    Below 800 a scale's longer side is capped at `test_max_size`, otherwise at
    `scale_max_size`. With `vote`, boxes are merged by `merge_boxes_by_vote` and at most
    `max_vote_detections` kept; without it, class-wise NMS at `nms_th` and the best
    `detections_per_img` are kept.
    """
    runs = [(test_min_size, test_max_size, False, None)]
    if h_flip:
        runs.append((test_min_size, test_max_size, True, None))
    for i, scale in enumerate(scales):
        max_size = test_max_size if scale < 800 else scale_max_size
        scale_range = scale_ranges[i] if scale_ranges else None
        runs.append((scale, max_size, False, scale_range))
        if scale_h_flip:
            runs.append((scale, max_size, True, scale_range))

    per_image = [[] for _ in images]
    for min_size, max_size, hflip, scale_range in runs:
        boxlists = im_detect_bbox(model, images, prepare, min_size, max_size, device, hflip)
        for dets, boxlist in zip(per_image, boxlists):
            if scale_range is not None:
                boxlist = filter_by_scale_range(boxlist, *scale_range)
            # The first run is the identity size: every other run is mapped to its frame.
            dets.append(boxlist.resize(dets[0].size) if dets else boxlist)

    results = []
    for dets in per_image:
        boxlist = cat_boxlist([d.convert("xyxy").copy_with_fields(["scores", "labels"]) for d in dets])
        if vote:
            boxes, scores, labels = merge_boxes_by_vote(
                boxlist.bbox, boxlist.get_field("scores"), boxlist.get_field("labels"),
                vote_th, merge_type, soft_vote_th)
            boxlist = BoxList(boxes, boxlist.size, mode="xyxy")
            boxlist.add_field("scores", scores)
            boxlist.add_field("labels", labels)
            results.append(keep_top_scores(boxlist, max_vote_detections))
        else:
            results.append(keep_top_scores(boxlist_ml_nms(boxlist, nms_th), detections_per_img))
    return results


def make_bbox_aug(cfg):
    """`TEST.BBOX_AUG` as a callable `(model, images, device) -> [BoxList]` for `inference`."""
    aug = cfg.TEST.BBOX_AUG
    if aug.SCALE_RANGES and len(aug.SCALE_RANGES) != len(aug.SCALES):
        raise ValueError(f"TEST.BBOX_AUG.SCALE_RANGES needs one (min, max) per scale: "
                         f"{len(aug.SCALE_RANGES)} ranges for {len(aug.SCALES)} SCALES")
    if aug.MERGE_TYPE not in MERGE_TYPES:
        raise ValueError(f"TEST.BBOX_AUG.MERGE_TYPE must be one of {MERGE_TYPES}, got {aug.MERGE_TYPE!r}")
    prepare = ImagePreparer(cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD, cfg.INPUT.TO_BGR255,
                            cfg.DATALOADER.SIZE_DIVISIBILITY)
    return functools.partial(
        im_detect_bbox_aug,
        prepare=prepare,
        test_min_size=cfg.INPUT.MIN_SIZE_TEST,
        test_max_size=cfg.INPUT.MAX_SIZE_TEST,
        h_flip=aug.H_FLIP,
        scales=tuple(aug.SCALES),
        scale_max_size=aug.MAX_SIZE,
        scale_ranges=tuple(tuple(r) for r in aug.SCALE_RANGES),
        scale_h_flip=aug.SCALE_H_FLIP,
        vote=aug.VOTE,
        merge_type=aug.MERGE_TYPE,
        vote_th=aug.VOTE_TH,
        soft_vote_th=cfg.MODEL.PAA.INFERENCE_TH,
        max_vote_detections=cfg.MODEL.PAA.PRE_NMS_TOP_N,
        nms_th=cfg.MODEL.PAA.NMS_TH,
        detections_per_img=cfg.TEST.DETECTIONS_PER_IMG,
    )
