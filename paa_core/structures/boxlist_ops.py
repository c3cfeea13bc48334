"""Operations on BoxLists: IoU, class-wise NMS, concatenation."""

from collections.abc import Sequence

import torch
from torch import Tensor

from paa_core.layers import ml_nms

from .bounding_box import BoxList
from .box_ops import PLUS_ONE_OFFSET, box_iou


def boxlist_ml_nms(
    boxlist: BoxList,
    nms_thresh: float,
    max_proposals: int = -1,
    score_field: str = "scores",
    label_field: str = "labels",
) -> BoxList:
    """NMS within each label (boxes of different labels never suppress each other)."""
    if nms_thresh <= 0:
        return boxlist
    mode = boxlist.mode
    boxlist = boxlist.convert("xyxy")
    keep = ml_nms(
        boxlist.bbox,
        boxlist.get_field(score_field),
        boxlist.get_field(label_field),
        nms_thresh,
    )
    if max_proposals > 0:
        keep = keep[:max_proposals]
    return boxlist[keep].convert(mode)


def boxlist_iou(boxlist1: BoxList, boxlist2: BoxList) -> Tensor:
    """IoU matrix [N, M] of two BoxLists of the same image (+1 areas)."""
    if boxlist1.size != boxlist2.size:
        raise RuntimeError(
            f"boxlist_iou needs BoxLists of the same image, got sizes {boxlist1.size} and {boxlist2.size}"
        )
    return box_iou(
        boxlist1.convert("xyxy").bbox, boxlist2.convert("xyxy").bbox, offset=PLUS_ONE_OFFSET
    )


def cat_boxlist(bboxes: Sequence[BoxList]) -> BoxList:
    """Concatenate BoxLists of one image (same size, mode and field names)."""
    if not isinstance(bboxes, (list, tuple)) or len(bboxes) == 0:
        raise ValueError("cat_boxlist needs a non-empty list of BoxLists")
    if not all(isinstance(b, BoxList) for b in bboxes):
        raise TypeError(f"cat_boxlist needs BoxLists, got {[type(b).__name__ for b in bboxes]}")
    first = bboxes[0]
    fields = set(first.fields())
    for b in bboxes[1:]:
        if b.size != first.size:
            raise ValueError(f"cat_boxlist: image sizes differ ({first.size} vs {b.size})")
        if b.mode != first.mode:
            raise ValueError(f"cat_boxlist: modes differ ({first.mode} vs {b.mode})")
        if set(b.fields()) != fields:
            raise ValueError(
                f"cat_boxlist: fields differ ({sorted(fields)} vs {sorted(b.fields())})"
            )
    if len(bboxes) == 1:
        return bboxes[0]
    out = BoxList(torch.cat([b.bbox for b in bboxes], dim=0), first.size, first.mode)
    for field in first.fields():
        out.add_field(field, torch.cat([b.get_field(field) for b in bboxes], dim=0))
    return out


def convert_box_offset(boxlist, from_offset, to_offset):
    """The same boxes in another pixel convention (`structures.box_ops`): x2 and y2 move by
    from_offset - to_offset (a +1 box [x1, x2] covers the continuous [x1, x2 + 1]).
    Fields are kept; the BoxList is returned unchanged when the offsets agree."""
    if from_offset == to_offset:
        return boxlist
    mode = boxlist.mode
    boxlist = boxlist.convert("xyxy")
    shift = boxlist.bbox.new_tensor([0, 0, from_offset - to_offset, from_offset - to_offset])
    out = BoxList(boxlist.bbox + shift, boxlist.size, mode="xyxy")
    out._copy_extra_fields(boxlist)
    return out.convert(mode)
