"""FrozenBatchNorm2d, a conv with it folded in, and Scale."""

import pytest
import torch
from torch import nn

from paa_core.layers import FrozenBatchNorm2d, Scale, conv_frozen_bn


def test_frozen_batch_norm_matches_eval_batch_norm_without_eps():
    gen = torch.Generator().manual_seed(0)
    n = 6
    stats = {
        "weight": torch.randn(n, generator=gen, dtype=torch.float64),
        "bias": torch.randn(n, generator=gen, dtype=torch.float64),
        "running_mean": torch.randn(n, generator=gen, dtype=torch.float64),
        "running_var": torch.rand(n, generator=gen, dtype=torch.float64) + 0.05,
    }
    frozen = FrozenBatchNorm2d(n).double()
    frozen.load_state_dict(stats)
    # BatchNorm's eps must be positive in some torch versions (2.11 refuses 0); in float64
    # the smallest normal number leaves every variance here unchanged.
    bn = nn.BatchNorm2d(n, eps=torch.finfo(torch.float64).tiny).double().eval()
    bn.load_state_dict(stats, strict=False)
    x = torch.randn(2, n, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(frozen(x), bn(x), rtol=1e-12, atol=1e-12)
    # The result is float32 for float32 input even with float64 buffers.
    assert frozen(x.detach().float()).dtype == torch.float32


def test_frozen_batch_norm_has_only_the_reference_buffers():
    frozen = FrozenBatchNorm2d(3)
    assert list(frozen.state_dict()) == ["weight", "bias", "running_mean", "running_var"]
    assert list(frozen.parameters()) == []
    x = torch.randn(1, 3, 2, 2, requires_grad=True)
    torch.testing.assert_close(frozen(x), x)  # identity at init
    frozen(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def random_frozen_bn(n, gen):
    frozen = FrozenBatchNorm2d(n)
    frozen.weight.copy_(torch.randn(n, generator=gen))
    frozen.bias.copy_(torch.randn(n, generator=gen))
    frozen.running_mean.copy_(torch.randn(n, generator=gen))
    frozen.running_var.copy_(torch.rand(n, generator=gen) + 0.05)
    return frozen


@pytest.mark.parametrize(
    "kernel, stride, groups, bias", [(1, 1, 1, False), (3, 2, 1, False), (3, 1, 4, True)]
)
def test_folded_conv_equals_conv_then_frozen_bn_with_gradients(kernel, stride, groups, bias):
    gen = torch.Generator().manual_seed(kernel + stride + groups)
    conv = nn.Conv2d(8, 16, kernel, stride, kernel // 2, groups=groups, bias=bias)
    frozen = random_frozen_bn(16, gen)
    x = torch.randn(2, 8, 11, 9, generator=gen)
    grad = torch.randn(2, 16, *conv(x).shape[-2:], generator=gen)
    results = []
    for run in (lambda x: frozen(conv(x)), lambda x: conv_frozen_bn(conv, frozen, x)):
        conv.zero_grad()
        x_in = x.clone().requires_grad_()
        y = run(x_in)
        y.backward(grad)
        grads = [x_in.grad, conv.weight.grad] + ([conv.bias.grad] if bias else [])
        results.append([y.detach(), *grads])
    for ours, reference in zip(*results):
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    assert list(frozen.parameters()) == []  # the shift stays a constant
    # One convolution: its result comes straight from the conv, not from the norm's add.
    assert type(conv_frozen_bn(conv, frozen, x).grad_fn).__name__ == "ConvolutionBackward0"


def test_folded_conv_leaves_other_pairs_as_they_are():
    """Another norm after the conv, or a conv that F.conv2d cannot stand for, runs as
    norm(conv(x)), bit for bit."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 6, 6, generator=gen)
    conv, gn = nn.Conv2d(4, 8, 3, padding=1), nn.GroupNorm(2, 8)
    assert torch.equal(conv_frozen_bn(conv, gn, x), gn(conv(x)))
    reflect = nn.Conv2d(4, 8, 3, padding=1, padding_mode="reflect")
    frozen = random_frozen_bn(8, gen)
    assert torch.equal(conv_frozen_bn(reflect, frozen, x), frozen(reflect(x)))


def test_folded_conv_takes_float64_buffers_for_a_float32_conv():
    gen = torch.Generator().manual_seed(2)
    conv, frozen = nn.Conv2d(3, 5, 1, bias=False), random_frozen_bn(5, gen).double()
    x = torch.randn(1, 3, 4, 4, generator=gen)
    y = conv_frozen_bn(conv, frozen, x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, frozen(conv(x)), rtol=1e-5, atol=1e-5)


def test_scale():
    default, custom = Scale(), Scale(init_value=2.5)
    assert [name for name, _ in default.named_parameters()] == ["scale"]
    assert default.scale.shape == (1,) and default.scale.item() == 1.0
    x = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    torch.testing.assert_close(custom(x), 2.5 * x)
    custom(x).sum().backward()
    torch.testing.assert_close(custom.scale.grad, x.sum().reshape(1))
