import math

import pytest
import torch

from paa_core.modeling.box_coder import BoxCoder

WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def test_encode_hand_computed():
    coder = BoxCoder(WEIGHTS)
    anchor = torch.tensor([[0.0, 0.0, 15.0, 15.0]])  # w = h = 16, centre (7.5, 7.5)
    gt = torch.tensor([[4.0, 2.0, 35.0, 17.0]])  # w = 32, h = 16, centre (19.5, 9.5)
    codes = coder.encode(gt, anchor)
    expected = torch.tensor([[10 * 12 / 16, 10 * 2 / 16, 5 * math.log(2.0), 0.0]])
    torch.testing.assert_close(codes, expected)


def test_decode_hand_computed_uses_plus_one_widths():
    coder = BoxCoder(WEIGHTS)
    anchor = torch.tensor([[0.0, 0.0, 15.0, 15.0]])
    # dx = 10 / 10 -> shift by one width (16); dw = 5 log(2) / 5 -> double the width.
    codes = torch.tensor([[10.0, 0.0, 5 * math.log(2.0), 0.0]])
    box = coder.decode(codes, anchor)
    # centre x = 7.5 + 16 = 23.5, width 32 -> 23.5 +- 15.5; y unchanged.
    torch.testing.assert_close(box, torch.tensor([[8.0, 0.0, 39.0, 15.0]]))


def test_zero_codes_return_the_anchor():
    coder = BoxCoder(WEIGHTS)
    anchors = torch.tensor([[-28.0, -28.0, 35.0, 35.0], [3.0, 7.0, 10.0, 50.0]])
    torch.testing.assert_close(coder.decode(torch.zeros(2, 4), anchors), anchors)


def test_round_trip_random_boxes():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 500
    anchors = torch.cat([xy, xy + 1 + torch.rand(200, 2, generator=g) * 300], dim=1)
    xy = torch.rand(200, 2, generator=g) * 500
    gts = torch.cat([xy, xy + 1 + torch.rand(200, 2, generator=g) * 300], dim=1)
    coder = BoxCoder(WEIGHTS)
    decoded = coder.decode(coder.encode(gts, anchors), anchors)
    torch.testing.assert_close(decoded, gts, atol=1e-3, rtol=1e-5)


def test_decode_multiple_boxes_per_row():
    g = torch.Generator().manual_seed(1)
    anchors = torch.tensor([[0.0, 0.0, 31.0, 15.0], [10.0, 20.0, 40.0, 90.0], [5.0, 5.0, 5.0, 5.0]])
    codes = torch.randn(3, 12, generator=g)
    coder = BoxCoder(WEIGHTS)
    out = coder.decode(codes, anchors)
    assert out.shape == (3, 12)
    for k in range(3):
        torch.testing.assert_close(
            out[:, 4 * k : 4 * k + 4], coder.decode(codes[:, 4 * k : 4 * k + 4], anchors)
        )


def test_dw_dh_clamped_before_exp():
    coder = BoxCoder(WEIGHTS)
    anchor = torch.tensor([[0.0, 0.0, 15.0, 15.0]])
    box = coder.decode(torch.tensor([[0.0, 0.0, 1000.0, 1000.0]]), anchor)
    assert torch.isfinite(box).all()
    # width is capped at exp(log(1000/16)) * 16 = 1000 pixels (+1 convention).
    torch.testing.assert_close(box[0, 2] - box[0, 0] + 1, torch.tensor(1000.0))
    torch.testing.assert_close(box[0, 3] - box[0, 1] + 1, torch.tensor(1000.0))
    # a custom clip value is honoured
    small = BoxCoder(WEIGHTS, bbox_xform_clip=math.log(2.0))
    box = small.decode(torch.tensor([[0.0, 0.0, 1000.0, -5.0]]), anchor)
    torch.testing.assert_close(box[0, 2] - box[0, 0] + 1, torch.tensor(32.0))
    torch.testing.assert_close(box[0, 3] - box[0, 1] + 1, torch.tensor(16.0 * math.exp(-1.0)))


def test_decode_follows_code_dtype():
    coder = BoxCoder(WEIGHTS)
    out = coder.decode(torch.zeros(1, 4, dtype=torch.float64), torch.tensor([[0.0, 0.0, 9.0, 9.0]]))
    assert out.dtype == torch.float64


def test_bad_weights():
    with pytest.raises(ValueError, match="weights"):
        BoxCoder((1.0, 1.0))
