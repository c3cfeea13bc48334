"""Anchors per FPN level, with Detectron's `generate_anchors` conventions (docs/DESIGN.md §2)."""

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class BufferList(nn.Module):
    """A list of tensors registered as buffers `0, 1, ...` (they follow `.to()` and
    appear in the state dict as the reference's `cell_anchors.<i>`)."""

    def __init__(self, buffers=()):
        super().__init__()
        for i, buffer in enumerate(buffers):
            self.register_buffer(str(i), buffer)

    def __len__(self):
        return len(self._buffers)

    def __iter__(self):
        return iter(self._buffers.values())

    def __getitem__(self, index):
        return list(self._buffers.values())[index]


def generate_anchors(stride: int, sizes: Sequence[float], aspect_ratios: Sequence[float]) -> Tensor:
    """Cell anchors [len(aspect_ratios) * len(sizes), 4] (xyxy, +1 widths) centred on
    the first stride x stride cell. Ratios are the outer loop, sizes the inner one.

    Base box [0, 0, s-1, s-1]; for each ratio r the box keeps its area s*s with
    w = round(sqrt(s*s / r)), h = round(w * r) (round half to even, as numpy); then each
    size a scales w and h by a / s around the centre (s-1)/2.
    """
    scales = torch.as_tensor(sizes, dtype=torch.float64) / stride
    ratios = torch.as_tensor(aspect_ratios, dtype=torch.float64)
    ctr = 0.5 * (stride - 1)
    ws = torch.round(torch.sqrt(stride * stride / ratios))
    hs = torch.round(ws * ratios)
    ws = (ws[:, None] * scales[None, :]).reshape(-1)
    hs = (hs[:, None] * scales[None, :]).reshape(-1)
    anchors = torch.stack(
        [ctr - 0.5 * (ws - 1), ctr - 0.5 * (hs - 1), ctr + 0.5 * (ws - 1), ctr + 0.5 * (hs - 1)],
        dim=1,
    )
    return anchors.float()


def generate_centred_anchors(sizes, aspect_ratios):
    """Cell anchors [len(sizes) * len(aspect_ratios), 4] in detectron2's geometry (no +1,
    no rounding): for size s and ratio r (height / width), w = sqrt(s*s / r), h = r * w,
    box (-w/2, -h/2, w/2, h/2) centred on the grid point. Sizes are the outer loop."""
    sizes = torch.as_tensor(sizes, dtype=torch.float64)
    ratios = torch.as_tensor(aspect_ratios, dtype=torch.float64)
    ws = torch.sqrt(sizes[:, None] ** 2 / ratios[None, :]).reshape(-1)
    hs = (ws.view(len(sizes), -1) * ratios[None, :]).reshape(-1)
    return torch.stack([-ws / 2, -hs / 2, ws / 2, hs / 2], dim=1).float()


class AnchorGenerator(nn.Module):
    """Anchors of every feature map, shared by the images of a batch.

    `sizes[l]` are level l's anchor sizes, `anchor_strides[l]` its stride. Anchors are
    ordered row-major over (y, x) with the A anchors of one location innermost. Cell
    anchors follow Detectron (`generate_anchors`), or detectron2 with `centred`
    (`generate_centred_anchors`, the Faster R-CNN path).
    """

    def __init__(
        self,
        sizes: Sequence[Sequence[float]],
        aspect_ratios: Sequence[float],
        anchor_strides: Sequence[int],
        centred: bool = False,
    ):
        super().__init__()
        if len(sizes) != len(anchor_strides):
            raise ValueError(
                f"sizes has {len(sizes)} levels but anchor_strides has {len(anchor_strides)}"
            )
        self.strides = tuple(anchor_strides)
        self.cell_anchors = BufferList(
            generate_centred_anchors(level_sizes, aspect_ratios)
            if centred
            else generate_anchors(stride, level_sizes, aspect_ratios)
            for stride, level_sizes in zip(anchor_strides, sizes)
        )

    def num_anchors_per_location(self) -> list[int]:
        return [len(cell) for cell in self.cell_anchors]

    def grid_anchors(self, grid_sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
        """Per level [H*W*A, 4]: cell anchors shifted by (x*s, y*s)."""
        anchors = []
        for (height, width), stride, cell in zip(grid_sizes, self.strides, self.cell_anchors):
            shifts_x = torch.arange(width, dtype=cell.dtype, device=cell.device) * stride
            shifts_y = torch.arange(height, dtype=cell.dtype, device=cell.device) * stride
            shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
            shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
            anchors.append((shifts[:, None, :] + cell[None, :, :]).reshape(-1, 4))
        return anchors

    def forward(self, feature_maps: list[Tensor]) -> list[Tensor]:
        """Per level [H*W*A, 4] (xyxy) for feature maps [N, C, H, W]: one set for the
        whole batch, since images are padded to one size."""
        return self.grid_anchors([tuple(f.shape[-2:]) for f in feature_maps])


def make_anchor_generator_paa(cfg) -> AnchorGenerator:
    """Level l gets sizes ANCHOR_SIZES[l] * OCTAVE**(i / SCALES_PER_OCTAVE), i < SCALES_PER_OCTAVE."""
    p = cfg.MODEL.PAA
    scales_per_octave = p.SCALES_PER_OCTAVE
    sizes = tuple(
        tuple(size * p.OCTAVE ** (i / scales_per_octave) for i in range(scales_per_octave))
        for size in p.ANCHOR_SIZES
    )
    return AnchorGenerator(sizes, p.ASPECT_RATIOS, p.ANCHOR_STRIDES)


def make_anchor_generator_rpn(cfg) -> AnchorGenerator:
    """Faster R-CNN RPN anchors: one size per level (MODEL.RPN.ANCHOR_SIZES), detectron2 geometry."""
    r = cfg.MODEL.RPN
    return AnchorGenerator(
        tuple((s,) for s in r.ANCHOR_SIZES), r.ASPECT_RATIOS, r.ANCHOR_STRIDE, centred=True
    )
