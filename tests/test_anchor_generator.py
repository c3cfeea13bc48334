"""Anchors: Detectron cell anchors (hand-derived numbers), grid order, one grid per level."""

import math

import pytest
import torch

from paa_core.config import get_cfg
from paa_core.modeling.anchor_generator import (
    AnchorGenerator,
    generate_anchors,
    make_anchor_generator_paa,
)


def test_spec_example_stride8_size64():
    cell = generate_anchors(8, (64,), (1.0,))
    assert cell.dtype == torch.float32
    assert cell.tolist() == [[-28.0, -28.0, 35.0, 35.0]]


def test_ratio_outer_scale_inner_with_rounding():
    # Stride 16: base [0,0,15,15], centre 7.5. Ratio 0.5: w = round(sqrt(512)) = 23,
    # h = round(11.5) = 12 (half to even); ratio 2: w = round(sqrt(128)) = 11, h = 22.
    # Size 32 scales (w, h) by 2, size 64 by 4; box = 7.5 -+ 0.5 * (w - 1).
    cell = generate_anchors(16, (32, 64), (0.5, 1.0, 2.0))
    expected = [
        [-15, -4, 30, 19],  # r 0.5, 46 x 24
        [-38, -16, 53, 31],  # r 0.5, 92 x 48
        [-8, -8, 23, 23],  # r 1,   32 x 32
        [-24, -24, 39, 39],  # r 1,   64 x 64
        [-3, -14, 18, 29],  # r 2,   22 x 44
        [-14, -36, 29, 51],  # r 2,   44 x 88
    ]
    assert cell.tolist() == [[float(v) for v in row] for row in expected]


def test_octave_scales_from_config():
    cfg = get_cfg()
    cfg.MODEL.PAA.SCALES_PER_OCTAVE = 3
    cfg.MODEL.PAA.ASPECT_RATIOS = (1.0,)
    gen = make_anchor_generator_paa(cfg)
    assert gen.num_anchors_per_location() == [3] * 5
    # Level P4: stride 16, sizes 128 * 2**(i/3); the square box is centred on 7.5.
    for i, box in enumerate(gen.cell_anchors[1].tolist()):
        w = 128 * 2 ** (i / 3)
        assert box == pytest.approx([7.5 - 0.5 * (w - 1)] * 2 + [7.5 + 0.5 * (w - 1)] * 2, abs=1e-4)


def test_state_dict_buffers_match_reference_layout():
    gen = make_anchor_generator_paa(get_cfg())
    sd = gen.state_dict()
    assert list(sd) == [f"cell_anchors.{i}" for i in range(5)]
    for i, (stride, size) in enumerate(zip((8, 16, 32, 64, 128), (64, 128, 256, 512, 1024))):
        c = (stride - 1) / 2
        assert sd[f"cell_anchors.{i}"].tolist() == [
            [c - (size - 1) / 2] * 2 + [c + (size - 1) / 2] * 2
        ]
    assert gen.to(torch.float64).cell_anchors[0].dtype == torch.float64


def test_grid_order_counts_and_shifts():
    gen = AnchorGenerator(((32, 64), (64, 128)), (0.5, 1.0, 2.0), (8, 16))
    a = 6
    grids = [(3, 5), (2, 3)]
    levels = gen.grid_anchors(grids)
    for (h, w), stride, cell, boxes in zip(grids, (8, 16), gen.cell_anchors, levels):
        assert boxes.shape == (h * w * a, 4)
        for y in range(h):
            for x in range(w):
                k = (y * w + x) * a
                shift = torch.tensor([x * stride, y * stride] * 2, dtype=torch.float32)
                assert torch.equal(boxes[k : k + a], cell + shift)


def test_forward_is_one_grid_per_level():
    gen = AnchorGenerator(((16,), (32,)), (1.0,), (8, 16))
    feats = [torch.zeros(2, 1, 4, 6), torch.zeros(2, 1, 2, 3)]
    anchors = gen(feats)
    assert [a.shape for a in anchors] == [(24, 4), (6, 4)]
    for ours, grid in zip(anchors, gen.grid_anchors([(4, 6), (2, 3)])):
        assert torch.equal(ours, grid)


def test_mismatched_levels_fail_clearly():
    with pytest.raises(ValueError, match="^sizes has 2 levels but anchor_strides has 1$"):
        AnchorGenerator(((32,), (64,)), (1.0,), (8,))


def test_paa_default_anchor_count_matches_spec_grid():
    gen = make_anchor_generator_paa(get_cfg())
    feats = [torch.zeros(1, 1, math.ceil(96 / s), math.ceil(128 / s)) for s in (8, 16, 32, 64, 128)]
    counts = [len(b) for b in gen(feats)]
    assert counts == [12 * 16, 6 * 8, 3 * 4, 2 * 2, 1 * 1]
