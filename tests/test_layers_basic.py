"""FrozenBatchNorm2d and Scale."""

import torch
from torch import nn

from paa_core.layers import FrozenBatchNorm2d, Scale


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


def test_scale():
    default, custom = Scale(), Scale(init_value=2.5)
    assert [name for name, _ in default.named_parameters()] == ["scale"]
    assert default.scale.shape == (1,) and default.scale.item() == 1.0
    x = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    torch.testing.assert_close(custom(x), 2.5 * x)
    custom(x).sum().backward()
    torch.testing.assert_close(custom.scale.grad, x.sum().reshape(1))
