"""Multi-scale and flip test-time augmentation (docs/DESIGN.md §7).

The test loader yields untransformed PIL images here; each augmentation runs the test
transforms at its own size (and mirrored), runs the detector and maps the boxes back
to the frame of the identity size (`MIN_SIZE_TEST`, `MAX_SIZE_TEST`), where all
detections are merged.
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from yacs.config import CfgNode

from paa_core.config.detector import PAA, PROPOSALS_ONLY, detector_kind
from paa_core.data.transforms import build_test_transforms
from paa_core.structures.bounding_box import FLIP_LEFT_RIGHT, BoxList
from paa_core.structures.box_ops import PLUS_ONE_OFFSET, box_area, box_iou
from paa_core.structures.boxlist_ops import boxlist_ml_nms, cat_boxlist
from paa_core.structures.image_list import to_image_list
from paa_core.utils.errors import InputError

MERGE_TYPES = ("vote", "soft-vote")


class AugRun(NamedTuple):
    """One pass of the detector: `transform` resizes (and, with `hflip`, mirrors) a raw
    image; only boxes with sides in `scale_range` = (min, max) are kept (None: all)."""

    transform: Callable
    hflip: bool
    scale_range: tuple[float, float] | None


class BBoxAugOptions(NamedTuple):
    """What `im_detect_bbox_aug` needs; `make_bbox_aug_options` builds it from the config.

    `runs[0]` is the identity size. With `vote`, detections are merged by
    `merge_boxes_by_vote(vote_th, merge_type, soft_vote_th)` and at most
    `max_vote_detections` kept; without it, class-wise NMS at `nms_th` and the best
    `detections_per_img` are kept.
    """

    runs: tuple[AugRun, ...]
    size_divisible: int
    vote: bool
    merge_type: str
    vote_th: float
    soft_vote_th: float
    max_vote_detections: int
    nms_th: float
    detections_per_img: int


class VoteClusters(NamedTuple):
    """`vote_clusters`' answer: boxes sorted by descending score (`order`), and for each sorted
    box the sorted position of its cluster's leader and its IoU with the leader."""

    order: Tensor
    leader: Tensor
    iou_to_leader: Tensor


class Detections(NamedTuple):
    """One image's detections as tensors: boxes [N, 4] xyxy, scores [N], labels [N]."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor


def im_detect_bbox(
    model: nn.Module,
    images: list[Image.Image],
    run: AugRun,
    size_divisible: int,
    device: torch.device,
) -> list[BoxList]:
    """Detections of one run, in the frame of the resized (unflipped) image.

    Args:
        model: the detector in eval mode.
        images: the untransformed test images.
        run: the transform (and mirroring) of this pass.
        size_divisible: padding of the batch, as the test loader pads.
        device: where the model runs.

    Returns:
        One BoxList per image.
    """
    batch = to_image_list([run.transform(image)[0] for image in images], size_divisible)
    boxlists = model(batch.to(device))
    if run.hflip:
        boxlists = [boxlist.transpose(FLIP_LEFT_RIGHT) for boxlist in boxlists]
    return boxlists


def filter_by_scale_range(boxlist: BoxList, min_side: float, max_side: float) -> BoxList:
    """Keep boxes whose area (+1 widths) lies strictly between min_side^2 and max_side^2."""
    area = box_area(boxlist.convert("xyxy").bbox, offset=PLUS_ONE_OFFSET)
    keep = (area > min_side * min_side) & (area < max_side * max_side)
    return boxlist[keep.nonzero().squeeze(1)]


def vote_clusters(boxes: Tensor, scores: Tensor, labels: Tensor, vote_th: float) -> VoteClusters:
    """Greedy clustering in descending score order: the best unclustered box takes every
    unclustered box of its label with IoU >= vote_th to it. The greedy pass is sequential
    over clusters (as in NMS); each step is vectorised.

    Args:
        boxes: [N, 4] xyxy on the CPU; scores: [N]; labels: [N].
        vote_th: the IoU that joins a box to a leader's cluster.

    Returns:
        The sort order, each sorted box's leader and its IoU with the leader.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    boxes, labels = boxes[order], labels[order]
    iou = box_iou(boxes, boxes, offset=PLUS_ONE_OFFSET)
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
        rest = np.flatnonzero(unassigned[i + 1 :])
        if rest.size == 0:
            break
        i += 1 + int(rest[0])
    leader = torch.from_numpy(leader)
    iou_to_leader = iou[leader, torch.arange(n)]
    return VoteClusters(order, leader, iou_to_leader)


def merge_boxes_by_vote(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    vote_th: float,
    merge_type: str = "vote",
    soft_vote_th: float = 0.05,
) -> Detections:
    """Merge one image's detections.

    Each cluster becomes one box: the score-weighted mean of its members, with the
    cluster's highest score; a cluster of one box keeps it unchanged. "soft-vote" also
    keeps each member of a larger cluster whose score * (1 - IoU with the leader) is
    >= soft_vote_th, with that reduced score.

    Args:
        boxes: [N, 4] xyxy; scores: [N]; labels: [N].
        vote_th: the IoU that joins a box to a cluster (`vote_clusters`).
        merge_type: "vote" or "soft-vote".
        soft_vote_th: the lowest reduced score a soft-voted member keeps.

    Returns:
        The merged detections, on the device of `boxes`.
    """
    if merge_type not in MERGE_TYPES:
        raise ValueError(f"merge_type must be one of {MERGE_TYPES}, got {merge_type!r}")
    if boxes.shape[0] == 0:
        return Detections(boxes, scores, labels)
    device = boxes.device
    boxes, scores, labels = boxes.cpu(), scores.cpu(), labels.cpu()
    order, leader, iou_to_leader = vote_clusters(boxes, scores, labels, vote_th)
    boxes, scores, labels = boxes[order], scores[order], labels[order]
    n = boxes.shape[0]

    size = torch.zeros(n, dtype=torch.int64).index_add_(0, leader, torch.ones(n, dtype=torch.int64))
    weighted = torch.zeros_like(boxes).index_add_(0, leader, boxes * scores[:, None])
    weight = torch.zeros_like(scores).index_add_(0, leader, scores)
    leaders = (size > 0).nonzero().squeeze(1)
    merged = torch.where(
        (size[leaders] > 1)[:, None], weighted[leaders] / weight[leaders, None], boxes[leaders]
    )
    out_boxes, out_scores, out_labels = [merged], [scores[leaders]], [labels[leaders]]

    if merge_type == "soft-vote":
        soft_scores = scores * (1 - iou_to_leader)
        keep = (size[leader] > 1) & (soft_scores >= soft_vote_th)
        out_boxes.append(boxes[keep])
        out_scores.append(soft_scores[keep])
        out_labels.append(labels[keep])
    return Detections(
        torch.cat(out_boxes).to(device),
        torch.cat(out_scores).to(device),
        torch.cat(out_labels).to(device),
    )


def keep_top_scores(boxlist: BoxList, max_detections: int) -> BoxList:
    """Keep the boxes scoring at least the `max_detections`-th best score (ties kept)."""
    scores = boxlist.get_field("scores")
    if max_detections <= 0 or len(boxlist) <= max_detections:
        return boxlist
    threshold, _ = torch.kthvalue(scores.cpu(), len(boxlist) - max_detections + 1)
    return boxlist[(scores >= threshold.item()).nonzero().squeeze(1)]


def im_detect_bbox_aug(
    model: nn.Module, images: list[Image.Image], device: torch.device, options: BBoxAugOptions
) -> list[BoxList]:
    """Detections of `images` under every run of `options`, merged per image.

    Args:
        model: the detector in eval mode.
        images: the untransformed test images (PIL).
        device: where the model runs.
        options: the runs and the merge (`make_bbox_aug_options`).

    Returns:
        One BoxList per image, in the frame of the identity size.
    """
    per_image = [[] for _ in images]
    for run in options.runs:
        boxlists = im_detect_bbox(model, images, run, options.size_divisible, device)
        for dets, boxlist in zip(per_image, boxlists):
            if run.scale_range is not None:
                boxlist = filter_by_scale_range(boxlist, *run.scale_range)
            # The first run is the identity size: every other run is mapped to its frame.
            dets.append(boxlist.resize(dets[0].size) if dets else boxlist)

    results = []
    for dets in per_image:
        boxlist = cat_boxlist(
            [d.convert("xyxy").copy_with_fields(["scores", "labels"]) for d in dets]
        )
        if options.vote:
            boxes, scores, labels = merge_boxes_by_vote(
                boxlist.bbox,
                boxlist.get_field("scores"),
                boxlist.get_field("labels"),
                options.vote_th,
                options.merge_type,
                options.soft_vote_th,
            )
            boxlist = BoxList(boxes, boxlist.size, mode="xyxy")
            boxlist.add_field("scores", scores)
            boxlist.add_field("labels", labels)
            results.append(keep_top_scores(boxlist, options.max_vote_detections))
        else:
            results.append(
                keep_top_scores(boxlist_ml_nms(boxlist, options.nms_th), options.detections_per_img)
            )
    return results


def check_bbox_aug(cfg: CfgNode) -> None:
    """Raise a one-line InputError naming every `TEST.BBOX_AUG` key that the model of
    `cfg` cannot be evaluated with (the tools run it before loading weights)."""
    aug = cfg.TEST.BBOX_AUG
    problems = []
    if detector_kind(cfg) == PROPOSALS_ONLY:
        problems.append(
            "TEST.BBOX_AUG.ENABLED: a proposal-only model (MODEL.RPN_ONLY) has no classes to "
            "merge detections by; evaluate it without test-time augmentation"
        )
    if aug.SCALE_RANGES and len(aug.SCALE_RANGES) != len(aug.SCALES):
        problems.append(
            f"TEST.BBOX_AUG.SCALE_RANGES needs one (min, max) per scale: "
            f"{len(aug.SCALE_RANGES)} ranges for {len(aug.SCALES)} SCALES"
        )
    if aug.MERGE_TYPE not in MERGE_TYPES:
        problems.append(
            f"TEST.BBOX_AUG.MERGE_TYPE must be one of {MERGE_TYPES}, got {aug.MERGE_TYPE!r}"
        )
    if problems:
        raise InputError("; ".join(problems))


def make_bbox_aug_options(cfg: CfgNode) -> BBoxAugOptions:
    """`TEST.BBOX_AUG` (with the test sizes, NMS and detection cap) as `BBoxAugOptions`.

    Runs: the identity size (and its mirror with H_FLIP), then each of SCALES (and its
    mirror with SCALE_H_FLIP); a scale below MAX_SIZE_FROM_SCALE keeps MAX_SIZE_TEST as
    the longer-side cap, the others take MAX_SIZE. The merged detections get the
    detector's own class-wise NMS and cap: MODEL.PAA's, or the ROI box head's.
    """
    check_bbox_aug(cfg)
    aug = cfg.TEST.BBOX_AUG
    kind = detector_kind(cfg)
    sizes = [(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, aug.H_FLIP, None)]
    for i, scale in enumerate(aug.SCALES):
        max_size = cfg.INPUT.MAX_SIZE_TEST if scale < aug.MAX_SIZE_FROM_SCALE else aug.MAX_SIZE
        scale_range = tuple(aug.SCALE_RANGES[i]) if aug.SCALE_RANGES else None
        sizes.append((scale, max_size, aug.SCALE_H_FLIP, scale_range))
    runs = []
    for min_size, max_size, with_flip, scale_range in sizes:
        for hflip in (False, True) if with_flip else (False,):
            runs.append(
                AugRun(build_test_transforms(cfg, min_size, max_size, hflip), hflip, scale_range)
            )
    return BBoxAugOptions(
        runs=tuple(runs),
        size_divisible=cfg.DATALOADER.SIZE_DIVISIBILITY,
        vote=aug.VOTE,
        merge_type=aug.MERGE_TYPE,
        vote_th=aug.VOTE_TH,
        soft_vote_th=aug.SOFT_VOTE_TH,
        max_vote_detections=aug.VOTE_MAX_DETECTIONS,
        nms_th=cfg.MODEL.PAA.NMS_TH if kind == PAA else cfg.MODEL.ROI_HEADS.NMS,
        detections_per_img=(
            cfg.TEST.DETECTIONS_PER_IMG if kind == PAA else cfg.MODEL.ROI_HEADS.DETECTIONS_PER_IMG
        ),
    )


def make_bbox_aug(cfg: CfgNode) -> Callable[[nn.Module, list, torch.device], list[BoxList]]:
    """`TEST.BBOX_AUG` as a callable `(model, images, device) -> [BoxList]` for `inference`."""
    return functools.partial(im_detect_bbox_aug, options=make_bbox_aug_options(cfg))
