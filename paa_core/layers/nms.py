"""Greedy NMS backed by the compiled `paa_core._C` ops, for either box convention."""
import torch

from paa_core import _C


def _check(boxes, scores, labels=None):
    """Raise a one-line error unless the inputs are what the compiled op expects."""
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"nms: boxes must be a [N, 4] tensor, got {getattr(boxes, 'shape', type(boxes))}")
    if not boxes.is_floating_point():
        raise TypeError(f"nms: boxes must be floating point, got {boxes.dtype}")
    tensors = {"scores": scores} if labels is None else {"scores": scores, "labels": labels}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.shape[0] != boxes.shape[0]:
            raise ValueError(
                f"nms: {name} must be a [N] tensor with N={boxes.shape[0]}, got {getattr(t, 'shape', type(t))}"
            )
        if t.device != boxes.device:
            raise ValueError(f"nms: {name} are on {t.device} but boxes on {boxes.device}")


def _as_kernel_dtype(boxes):
    # The kernels run in float32/float64; half precision boxes are widened.
    return boxes if boxes.dtype in (torch.float32, torch.float64) else boxes.float()


def nms(boxes, scores, iou_threshold, offset=1):
    """Indices (int64) of the boxes kept by greedy NMS, by descending score.

    boxes [N, 4] xyxy, scores [N]. A box is dropped when its IoU, computed with
    widths x2 - x1 + offset (1: the PAA reference, 0: detectron2; see
    `structures.box_ops`), with a kept higher-scoring box exceeds `iou_threshold`.
    """
    _check(boxes, scores)
    return _C.nms(_as_kernel_dtype(boxes), scores, float(iou_threshold), float(offset))


def ml_nms(boxes, scores, labels, iou_threshold, offset=1):
    """Like `nms`, but a box only suppresses boxes that carry the same label (integer [N])."""
    _check(boxes, scores, labels)
    if labels.is_floating_point():
        # The reference passed labels as floats; accept them when they are whole numbers.
        if not torch.equal(labels, labels.round()):
            raise ValueError("ml_nms: floating point labels must hold whole numbers")
        labels = labels.long()
    elif labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"ml_nms: labels must be an integer tensor, got {labels.dtype}")
    return _C.ml_nms(_as_kernel_dtype(boxes), scores, labels, float(iou_threshold), float(offset))
