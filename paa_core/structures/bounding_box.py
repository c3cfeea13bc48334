"""`BoxList`: the boxes of one image, their image size and per-box fields.

Coordinates follow the legacy "+1" pixel convention of the reference: a box
`[x1, y1, x2, y2]` covers pixels x1..x2 inclusive, so its width is `x2 - x1 + 1`
and the last valid coordinate of an image of width `w` is `w - 1`.
"""

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .box_ops import PLUS_ONE_OFFSET, box_area, clip_boxes

# Transpose methods (the values of PIL's Image.FLIP_LEFT_RIGHT / FLIP_TOP_BOTTOM).
FLIP_LEFT_RIGHT = 0
FLIP_TOP_BOTTOM = 1

_MODES = ("xyxy", "xywh")


class BoxList:
    """`bbox` is a float tensor [N, 4]; `size` is `(width, height)`.

    `extra_fields` holds per-box data (labels, scores, ...) with N rows; it is
    indexed along with the boxes and carried unchanged through geometric
    transforms, which only move coordinates.
    """

    def __init__(self, bbox: Tensor | Sequence, image_size: Sequence[int], mode: str = "xyxy"):
        device = bbox.device if isinstance(bbox, torch.Tensor) else torch.device("cpu")
        bbox = torch.as_tensor(bbox, dtype=torch.float32, device=device)
        if bbox.dim() != 2 or bbox.size(-1) != 4:
            raise ValueError(f"BoxList expects boxes of shape [N, 4], got {tuple(bbox.shape)}")
        if mode not in _MODES:
            raise ValueError(f"BoxList mode must be 'xyxy' or 'xywh', got {mode!r}")
        if len(image_size) != 2:
            raise ValueError(f"BoxList image_size must be (width, height), got {image_size!r}")
        self.bbox = bbox
        self.size = tuple(image_size)
        self.mode = mode
        self.extra_fields: dict[str, Any] = {}

    # ------------------------------------------------------------------ fields
    def add_field(self, field: str, field_data: Any) -> None:
        self.extra_fields[field] = field_data

    def get_field(self, field: str) -> Any:
        if field not in self.extra_fields:
            raise KeyError(f"BoxList has no field {field!r} (fields: {self.fields()})")
        return self.extra_fields[field]

    def has_field(self, field: str) -> bool:
        return field in self.extra_fields

    def fields(self) -> list[str]:
        return list(self.extra_fields.keys())

    def _copy_extra_fields(self, other):
        for k, v in other.extra_fields.items():
            self.extra_fields[k] = v

    def copy_with_fields(
        self, fields: str | Sequence[str], skip_missing: bool = False
    ) -> "BoxList":
        """A new BoxList with the same boxes and only the named fields."""
        bbox = BoxList(self.bbox, self.size, self.mode)
        if not isinstance(fields, (list, tuple)):
            fields = [fields]
        for field in fields:
            if self.has_field(field):
                bbox.add_field(field, self.get_field(field))
            elif not skip_missing:
                raise KeyError(f"BoxList has no field {field!r} (fields: {self.fields()})")
        return bbox

    # ------------------------------------------------------------- geometry
    def _split_into_xyxy(self):
        if self.mode == "xyxy":
            return self.bbox.split(1, dim=-1)
        xmin, ymin, w, h = self.bbox.split(1, dim=-1)
        return (
            xmin,
            ymin,
            xmin + (w - PLUS_ONE_OFFSET).clamp(min=0),
            ymin + (h - PLUS_ONE_OFFSET).clamp(min=0),
        )

    def _from_xyxy(self, xmin, ymin, xmax, ymax, size):
        """A BoxList in this list's mode, built from xyxy columns, fields kept."""
        out = BoxList(torch.cat((xmin, ymin, xmax, ymax), dim=-1), size, mode="xyxy")
        out._copy_extra_fields(self)
        return out.convert(self.mode)

    def convert(self, mode: str) -> "BoxList":
        if mode not in _MODES:
            raise ValueError(f"BoxList mode must be 'xyxy' or 'xywh', got {mode!r}")
        if mode == self.mode:
            return self
        xmin, ymin, xmax, ymax = self._split_into_xyxy()
        if mode == "xyxy":
            bbox = torch.cat((xmin, ymin, xmax, ymax), dim=-1)
        else:
            bbox = torch.cat(
                (xmin, ymin, xmax - xmin + PLUS_ONE_OFFSET, ymax - ymin + PLUS_ONE_OFFSET), dim=-1
            )
        out = BoxList(bbox, self.size, mode=mode)
        out._copy_extra_fields(self)
        return out

    def resize(self, size: tuple[float, float], *args, **kwargs) -> "BoxList":
        """Scale the boxes for an image resized from `self.size` to `size` (w, h)."""
        ratio_w, ratio_h = (float(s) / float(s_orig) for s, s_orig in zip(size, self.size))
        if ratio_w == ratio_h:
            out = BoxList(self.bbox * ratio_w, size, mode=self.mode)
            out._copy_extra_fields(self)
            return out
        xmin, ymin, xmax, ymax = self._split_into_xyxy()
        return self._from_xyxy(xmin * ratio_w, ymin * ratio_h, xmax * ratio_w, ymax * ratio_h, size)

    def transpose(self, method: int) -> "BoxList":
        """Flip the boxes with the image: x' = w - x - 1 (or y' = h - y - 1)."""
        if method not in (FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM):
            raise ValueError(
                "transpose method must be FLIP_LEFT_RIGHT (0) or FLIP_TOP_BOTTOM (1), "
                f"got {method!r}"
            )
        image_width, image_height = self.size
        xmin, ymin, xmax, ymax = self._split_into_xyxy()
        if method == FLIP_LEFT_RIGHT:
            xmin, xmax = image_width - xmax - PLUS_ONE_OFFSET, image_width - xmin - PLUS_ONE_OFFSET
        else:
            ymin, ymax = (
                image_height - ymax - PLUS_ONE_OFFSET,
                image_height - ymin - PLUS_ONE_OFFSET,
            )
        return self._from_xyxy(xmin, ymin, xmax, ymax, self.size)

    def clip_to_image(self, remove_empty: bool = True) -> "BoxList":
        """Clamp to [0, w-1] x [0, h-1]; optionally drop boxes left with x2<=x1 or y2<=y1."""
        clipped = BoxList(
            clip_boxes(self.convert("xyxy").bbox, self.size, offset=PLUS_ONE_OFFSET),
            self.size,
            mode="xyxy",
        )
        clipped._copy_extra_fields(self)
        if remove_empty:
            box = clipped.bbox
            keep = (box[:, 3] > box[:, 1]) & (box[:, 2] > box[:, 0])
            clipped = clipped[keep]
        return clipped.convert(self.mode)

    def area(self) -> Tensor:
        box = self.bbox
        if self.mode == "xyxy":
            return box_area(box, offset=PLUS_ONE_OFFSET)
        return box[:, 2] * box[:, 3]

    # -------------------------------------------------------------- container
    def to(self, device: str | torch.device) -> "BoxList":
        out = BoxList(self.bbox.to(device), self.size, self.mode)
        for k, v in self.extra_fields.items():
            out.add_field(k, v.to(device) if hasattr(v, "to") else v)
        return out

    def __getitem__(self, item: int | slice | Tensor) -> "BoxList":
        if isinstance(item, int):
            item = slice(item, item + 1) if item != -1 else slice(-1, None)
        out = BoxList(self.bbox[item], self.size, self.mode)
        for k, v in self.extra_fields.items():
            out.add_field(k, v[item])
        return out

    def __len__(self) -> int:
        return self.bbox.shape[0]

    def __repr__(self):
        return f"{self.__class__.__name__}(num_boxes={len(self)}, image_width={self.size[0]}, image_height={self.size[1]}, mode={self.mode})"
