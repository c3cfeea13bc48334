"""Score voting (docs/DESIGN.md §6.3, eq. P6): kept boxes refined by the pre-NMS boxes near them."""

import torch

from paa_core.structures.bounding_box import BoxList
from paa_core.structures.boxlist_ops import boxlist_iou


def score_voting(
    detections: BoxList, candidates: BoxList, sigma: float = 0.025, iou_floor: float = 0.01
) -> BoxList:
    """Replace every box of `detections` by the weighted mean of the same-class boxes
    of `candidates` (the pre-NMS boxes of the same image) overlapping it by IoU > iou_floor,
    with weights exp(-(1 - IoU)^2 / sigma) * score. Scores and labels are unchanged.

    Both BoxLists carry "scores" and "labels". A detection that is itself a candidate
    always votes for itself; one left without voters keeps its box.
    """
    ious = boxlist_iou(detections, candidates)  # [K, M]
    same_class = detections.get_field("labels")[:, None] == candidates.get_field("labels")[None, :]
    weights = torch.exp(-((1 - ious) ** 2) / sigma) * candidates.get_field("scores")[None, :]
    weights = torch.where(same_class & (ious > iou_floor), weights, torch.zeros_like(weights))
    total = weights.sum(dim=1, keepdim=True)
    voted = weights @ candidates.bbox / total.clamp(min=torch.finfo(total.dtype).tiny)
    boxes = detections.convert("xyxy").bbox
    out = BoxList(torch.where(total > 0, voted, boxes), detections.size, mode="xyxy")
    for field in detections.fields():
        out.add_field(field, detections.get_field(field))
    return out
