"""Winograd F(4x4, 3x3) 3x3 convolutions on the CPU (paa_core/layers/winograd.py, csrc
winograd ops): forward and all three gradients against torch's convolution as the oracle,
the C++ transforms against their adjoints, shape and dtype checks, and when the FPN and
head take the Winograd path."""

import pytest
import torch
import torch.nn.functional as F
from helpers import r50_cfg

from paa_core._ops import ops
from paa_core.layers import WinogradConv2d, winograd_conv3x3
from paa_core.modeling.detector import build_detection_model
from paa_core.modeling.paa.paa import PAAHead

pytestmark = pytest.mark.usefixtures("one_thread")


def _rand(*shape, seed=0, channels_last=False):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _assert_close_to(actual, expected, rel=2e-5):
    """Equal up to float32 rounding, relative to the tensor's largest magnitude."""
    actual, expected = actual.detach(), expected.detach()
    error = float((actual - expected).abs().max())
    assert error <= rel * float(expected.abs().max()), error


@pytest.mark.parametrize(
    "sizes, in_channels, out_channels, bias",
    [
        ([(2, 16, 16)], 24, 40, True),  # whole tiles
        ([(1, 13, 7)], 20, 12, True),  # partial tiles at the border, channels off the SIMD width
        ([(1, 1, 1)], 8, 8, False),  # a single pixel: the padding only
        ([(2, 12, 20), (2, 6, 10), (2, 3, 5)], 32, 16, True),  # levels sharing the weight
    ],
    ids=["whole-tiles", "partial-tiles", "one-pixel", "three-levels"],
)
def test_forward_and_gradients_match_torch_convolution(sizes, in_channels, out_channels, bias):
    xs = [
        _rand(n, in_channels, h, w, seed=i, channels_last=i % 2 == 0).requires_grad_()
        for i, (n, h, w) in enumerate(sizes)
    ]
    weight = (_rand(out_channels, in_channels, 3, 3, seed=10) * 0.1).requires_grad_()
    b = _rand(out_channels, seed=11).requires_grad_() if bias else None
    expected = [F.conv2d(x, weight, b, padding=1) for x in xs]
    actual = winograd_conv3x3(xs, weight, b)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape and a.is_contiguous(memory_format=torch.channels_last)
        _assert_close_to(a, e)
    grads_out = [_rand(*e.shape, seed=20 + i) for i, e in enumerate(expected)]
    inputs = xs + [weight] + ([b] if bias else [])
    expected_grads = torch.autograd.grad(expected, inputs, grads_out)
    actual_grads = torch.autograd.grad(actual, inputs, grads_out)
    for a, e in zip(actual_grads, expected_grads):
        _assert_close_to(a, e)


def test_gradient_with_an_unused_level_and_a_frozen_weight():
    """A level whose output takes no part in the loss gets a zero gradient; a weight that
    needs no gradient gets none, the input still does."""
    xs = [_rand(1, 8, 8, 8, seed=1).requires_grad_(), _rand(1, 8, 4, 4, seed=2).requires_grad_()]
    weight = _rand(8, 8, 3, 3, seed=3) * 0.1
    top, _ = winograd_conv3x3(xs, weight)
    (grad_top, grad_unused) = torch.autograd.grad(top.sum(), xs)
    assert float(grad_unused.abs().max()) == 0.0
    _assert_close_to(
        grad_top, torch.autograd.grad(F.conv2d(xs[0], weight, padding=1).sum(), xs[0])[0]
    )


def _dot(a, b):
    return float((a.double() * b.double()).sum())


@pytest.mark.parametrize("height, width", [(8, 8), (9, 6)])
def test_transforms_and_their_adjoints(height, width):
    """<T x, v> = <x, T* v> for the input and the output transforms: the backward kernels
    are the forward kernels' exact adjoints (overlapping windows and borders included)."""
    x = _rand(2, 5, height, width, seed=1, channels_last=True)
    tiles = ops.winograd_input_transform([x])
    assert tiles.shape == (2 * ((height + 3) // 4) * ((width + 3) // 4), 36, 5)
    v = _rand(*tiles.shape, seed=2)
    back = ops.winograd_input_transform_backward(v, 2, height, width)
    assert _dot(tiles, v) == pytest.approx(_dot(x, back), rel=1e-5)

    y = _rand(2, 3, height, width, seed=3)
    grad_tiles = ops.winograd_output_transform_backward([y])
    m = _rand(tiles.shape[0], 36, 3, seed=4)
    out = ops.winograd_output_transform(m, None, 2, height, width)
    assert _dot(grad_tiles, m) == pytest.approx(_dot(y, out), rel=1e-5)


def test_ops_check_their_arguments_and_have_meta_kernels():
    with pytest.raises(RuntimeError, match="inputs must be float32"):
        ops.winograd_input_transform([torch.zeros(1, 2, 4, 4, dtype=torch.float64)])
    with pytest.raises(RuntimeError, match="one channel count, got 2 and 3"):
        ops.winograd_input_transform([torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, 4)])
    with pytest.raises(RuntimeError, match=r"tiles must be \[2, 36, channels\]"):
        ops.winograd_output_transform(torch.zeros(3, 36, 4), None, 2, 4, 4)
    with pytest.raises(RuntimeError, match="bias must be float32"):
        ops.winograd_output_transform(torch.zeros(2, 36, 4), torch.zeros(3), 2, 4, 4)
    meta = torch.empty(2, 6, 10, 7, device="meta")
    assert ops.winograd_input_transform([meta, meta[:1, :, :4]]).shape == (12 + 2, 36, 6)
    assert ops.winograd_output_transform_backward([meta]).shape == (12, 36, 6)
    tiles = torch.empty(12, 36, 6, device="meta")
    assert ops.winograd_output_transform(tiles, None, 2, 10, 7).shape == (2, 6, 10, 7)
    assert ops.winograd_input_transform_backward(tiles, 2, 10, 7).shape == (2, 6, 10, 7)


def _winograd_calls(fn):
    """How many Winograd convolutions (input transforms, one per call) fn runs."""
    with torch.profiler.profile() as prof:
        fn()
    return sum(
        e.count for e in prof.key_averages() if e.key == "paa_core::winograd_input_transform"
    )


def test_module_takes_the_winograd_path_only_where_it_pays():
    conv = WinogradConv2d(128, 128, 3, padding=1)
    assert conv.state_dict().keys() == {"weight", "bias"}
    big = _rand(1, 128, 64, 64, seed=1)  # 256 tiles
    small = _rand(1, 128, 60, 60, seed=1)  # 225 tiles
    with torch.no_grad():
        assert _winograd_calls(lambda: conv(big)) == 1
        _assert_close_to(conv(big), F.conv2d(big, conv.weight, conv.bias, padding=1))
        assert _winograd_calls(lambda: conv(small)) == 0
        # levels count together: 225 + 64 tiles
        assert _winograd_calls(lambda: conv.forward_levels([small, small[:, :, :30, :30]])) == 1
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert _winograd_calls(lambda: conv(big)) == 0
        double = WinogradConv2d(128, 128, 3, padding=1).double()
        assert _winograd_calls(lambda: double(big.double())) == 0
    strided = WinogradConv2d(128, 128, 3, stride=2, padding=1)
    assert _winograd_calls(lambda: strided(big)) == 0
    narrow = WinogradConv2d(64, 128, 3, padding=1)
    assert _winograd_calls(lambda: narrow(_rand(1, 64, 64, 64))) == 0


def _head_outputs_and_grads(winograd, dtype):
    torch.manual_seed(0)
    head = PAAHead(128, 3, 1, num_convs=2, winograd=winograd).to(dtype)
    feats = [_rand(1, 128, s, s, seed=s).to(dtype).requires_grad_() for s in (64, 32, 16, 8, 4)]
    with torch.profiler.profile() as prof:
        outputs = [o for part in head(feats) for o in part]
    calls = sum(
        e.count for e in prof.key_averages() if e.key == "paa_core::winograd_input_transform"
    )
    loss = sum((o * o).sum() for o in outputs)
    grads = torch.autograd.grad(loss, feats + list(head.parameters()))
    return calls, [t.detach().double() for t in outputs + list(grads)]


def test_head_with_winograd_is_as_accurate_as_without():
    """The PAA head over five levels whose P3 has 256 tiles, in float32 with and without
    Winograd towers, against the same head in float64. The outputs stay within float32
    rounding; the gradients (of features and parameters) pass through GroupNorm, which
    magnifies rounding: without Winograd they are off by up to ~1e-3 of their magnitude on
    this machine's AVX-512 kernels, with it by up to ~3e-3. A wrong gradient is off by ~1."""
    calls, winograd = _head_outputs_and_grads(True, torch.float32)
    # 2 towers x 2 convs, each one Winograd call over the five levels
    assert calls == 4
    calls, plain = _head_outputs_and_grads(False, torch.float32)
    assert calls == 0
    _, truth = _head_outputs_and_grads(False, torch.float64)
    num_outputs = 15  # 5 levels x (logits, boxes, IoU)
    for i, (w, p, t) in enumerate(zip(winograd, plain, truth)):
        scale = float(t.abs().max())
        error_w, error_p = (float((x - t).abs().max()) / scale for x in (w, p))
        limit = 2e-5 if i < num_outputs else 5e-3
        assert error_w <= limit and error_p <= limit, (i, error_w, error_p)


def test_model_winograd_switch():
    cfg = r50_cfg()
    assert cfg.MODEL.WINOGRAD
    model = build_detection_model(cfg)
    assert isinstance(model.rpn.head.cls_tower[0], WinogradConv2d)
    assert isinstance(model.backbone.fpn.fpn_layer2, WinogradConv2d)
    assert type(model.backbone.fpn.fpn_inner2) is torch.nn.Conv2d  # 1x1 laterals stay
    cfg.defrost()
    cfg.MODEL.WINOGRAD = False
    plain = build_detection_model(cfg)
    assert not any(isinstance(m, WinogradConv2d) for m in plain.modules())
    assert plain.state_dict().keys() == model.state_dict().keys()
