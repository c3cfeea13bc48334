"""Deformable convolution against torchvision.ops.deform_conv2d (the layout oracle), on every
device (the `device` fixture); on CUDA also against our CPU kernels on the same inputs."""

import json
import os

import pytest
import torch
import torch.nn.functional as F
import torchvision

from paa_core._ops import ops
from paa_core.layers.dcn import (
    DeformConv,
    DFConv2d,
    ModulatedDeformConv,
    deform_conv,
    modulated_deform_conv,
)

STATE_DICTS = "/work/shared/reference/state_dicts"

# (batch, in, out, (H, W), kernel, stride, padding, dilation, groups, deformable_groups)
CONFIGS = [
    (2, 4, 6, (7, 8), (3, 3), 1, 1, 1, 1, 1),
    (1, 6, 4, (9, 7), (3, 3), 2, 1, 1, 2, 3),
    (2, 8, 8, (8, 9), (3, 3), 1, 2, 2, 4, 2),
    (1, 4, 6, (6, 7), (3, 2), (2, 1), (0, 1), (1, 2), 2, 4),
    (1, 3, 5, (5, 5), (1, 1), 1, 0, 1, 1, 1),
]


def _pair(v):
    return v if isinstance(v, tuple) else (v, v)


def _random_inputs(cfg, modulated, dtype=torch.float32, seed=0):
    """Random non-integer offsets of up to ~4 pixels, so many taps sample (partly) outside."""
    n, cin, cout, (h, w), (kh, kw), stride, padding, dilation, groups, dg = cfg
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, h, w, generator=g, dtype=dtype)
    offset = 2.5 * torch.randn(n, 2 * dg * kh * kw, ho, wo, generator=g, dtype=dtype)
    mask = torch.rand(n, dg * kh * kw, ho, wo, generator=g, dtype=dtype) if modulated else None
    weight = torch.randn(cout, cin // groups, kh, kw, generator=g, dtype=dtype)
    bias = torch.randn(cout, generator=g, dtype=dtype)
    return x, offset, mask, weight, bias


def _ours(x, offset, mask, weight, bias, cfg):
    *_, stride, padding, dilation, groups, dg = cfg
    if mask is None:
        return deform_conv(x, offset, weight, stride, padding, dilation, groups, dg, bias=bias)
    return modulated_deform_conv(
        x, offset, mask, weight, bias, stride, padding, dilation, groups, dg
    )


def _torchvision(x, offset, mask, weight, bias, cfg):
    *_, stride, padding, dilation, _, _ = cfg
    return torchvision.ops.deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask)


def _grads(fn, tensors, cfg, grad_out_seed=1):
    leaves = [t.clone().requires_grad_() if t is not None else None for t in tensors]
    out = fn(*leaves, cfg)
    grad_out = torch.randn(
        out.shape, generator=torch.Generator().manual_seed(grad_out_seed), dtype=out.dtype
    )
    grad_out = grad_out.to(out.device)
    wanted = [t for t in leaves if t is not None]
    return out.detach(), torch.autograd.grad(out, wanted, grad_out)


@pytest.mark.parametrize("modulated", [True, False], ids=["v2", "v1"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=[f"cfg{i}" for i in range(len(CONFIGS))])
def test_matches_torchvision_forward_and_backward(cfg, modulated, device):
    cpu_tensors = _random_inputs(cfg, modulated)
    tensors = [None if t is None else t.to(device) for t in cpu_tensors]
    out, grads = _grads(_ours, tensors, cfg)
    ref_out, ref_grads = _grads(_torchvision, tensors, cfg)
    assert out.device.type == device.type
    assert out.abs().max() > 1  # a real signal, not an all-zero output
    torch.testing.assert_close(out, ref_out, atol=1e-4, rtol=1e-4)
    names = (
        ["input", "offset", "mask", "weight", "bias"]
        if modulated
        else ["input", "offset", "weight", "bias"]
    )
    for name, g, ref in zip(names, grads, ref_grads):
        assert ref.abs().max() > 0, name
        torch.testing.assert_close(
            g, ref, atol=1e-4, rtol=1e-4, msg=lambda m, name=name: f"grad {name}: {m}"
        )
    if device.type != "cpu":  # our CUDA kernels against our CPU kernels
        cpu_out, cpu_grads = _grads(_ours, cpu_tensors, cfg)
        torch.testing.assert_close(out.cpu(), cpu_out, atol=1e-4, rtol=1e-4)
        for name, g, ref in zip(names, grads, cpu_grads):
            torch.testing.assert_close(
                g.cpu(), ref, atol=1e-4, rtol=1e-4, msg=lambda m, name=name: f"grad {name}: {m}"
            )


def test_many_output_positions_are_processed_in_chunks():
    """144 column rows x 14400 positions exceeds the CPU columns budget: several chunks."""
    cfg = (1, 16, 3, (120, 120), (3, 3), 1, 1, 1, 1, 2)
    tensors = _random_inputs(cfg, modulated=True)
    out, grads = _grads(_ours, tensors, cfg)
    ref_out, ref_grads = _grads(_torchvision, tensors, cfg)
    torch.testing.assert_close(out, ref_out, atol=1e-4, rtol=1e-4)
    for g, ref in zip(grads, ref_grads):
        torch.testing.assert_close(g, ref, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "device", [pytest.param("cpu", marks=pytest.mark.slow), "cuda"], indirect=True
)
def test_columns_budget_splits_positions_into_chunks(device):
    """The CUDA kernels bound the columns buffer at 2^24 entries: 128 channels x 9 taps x
    122^2 positions = 17,146,368 entries need two chunks (14,563 and 321 positions, the
    cut inside an image row), with 2 groups and 2 deformable groups. (On the CPU, whose
    budget is smaller, torchvision's kernel takes ~15 s here: a slow case.)"""
    cfg = (1, 128, 4, (122, 122), (3, 3), 1, 1, 1, 2, 2)
    tensors = [None if t is None else t.to(device) for t in _random_inputs(cfg, modulated=True)]
    out, grads = _grads(_ours, tensors, cfg)
    ref_out, ref_grads = _grads(_torchvision, tensors, cfg)
    assert out.abs().max() > 1
    torch.testing.assert_close(out, ref_out, atol=1e-3, rtol=1e-4)
    for name, g, ref in zip(["input", "offset", "mask", "weight", "bias"], grads, ref_grads):
        assert ref.abs().max() > 0, name
        torch.testing.assert_close(
            g, ref, atol=1e-3, rtol=1e-4, msg=lambda m, name=name: f"grad {name}: {m}"
        )


def test_strided_bias(device):
    """A bias that is a strided view (every other element of a longer tensor) is taken as
    it is, forward and backward."""
    cfg = CONFIGS[0]
    x, offset, mask, weight, _ = (t.to(device) for t in _random_inputs(cfg, modulated=True))
    longer = torch.randn(2 * weight.shape[0], generator=torch.Generator().manual_seed(9))
    strided = longer.to(device)[::2].requires_grad_()
    contiguous = strided.detach().clone().requires_grad_()
    out = _ours(x, offset, mask, weight, strided, cfg)
    torch.testing.assert_close(out, _ours(x, offset, mask, weight, contiguous, cfg), rtol=0, atol=0)
    torch.testing.assert_close(
        out, _ours(x, offset, mask, weight, None, cfg) + strided[:, None, None]
    )
    out.sum().backward()
    torch.testing.assert_close(
        strided.grad, torch.full_like(strided, float(out[:, 0].numel())), rtol=0, atol=0
    )


@pytest.mark.parametrize("modulated", [True, False], ids=["v2", "v1"])
def test_gradcheck_float64(modulated, device):
    cfg = (2, 4, 2, (5, 4), (3, 3), (1, 2), 1, 1, 2, 2)
    x, offset, mask, weight, bias = _random_inputs(cfg, modulated, dtype=torch.float64, seed=3)
    # Keep sampling points away from integer coordinates, where bilinear sampling has kinks.
    offset = (
        offset.round()
        + 0.25
        + 0.5
        * torch.rand(offset.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    )
    inputs = [
        t.to(device).requires_grad_() for t in (x, offset, mask, weight, bias) if t is not None
    ]
    if modulated:
        fn = lambda x, o, m, w, b: modulated_deform_conv(x, o, m, w, b, (1, 2), 1, 1, 2, 2)  # noqa: E731
    else:
        fn = lambda x, o, w, b: deform_conv(x, o, w, (1, 2), 1, 1, 2, 2, bias=b)  # noqa: E731
    # On CUDA the input gradient is scattered with atomicAdd, whose order varies between
    # runs: two backward passes differ in the last bits, which gradcheck's reentrance check
    # rejects unless nondet_tol allows it. Float64 sums of a few dozen terms differ by
    # ~1e-15; 1e-10 is far below the atol of the numerical comparison. The CPU is exact.
    nondet_tol = 0.0 if device.type == "cpu" else 1e-10
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, nondet_tol=nondet_tol)


@pytest.mark.parametrize("stride,dilation,groups", [(1, 1, 1), (2, 2, 2)])
def test_zero_offsets_and_unit_mask_equal_plain_conv(stride, dilation, groups, device):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, 9, 8, generator=g).to(device)
    weight = torch.randn(6, 4 // groups, 3, 3, generator=g).to(device)
    bias = torch.randn(6, generator=g).to(device)
    expected = F.conv2d(x, weight, bias, stride, dilation, dilation, groups)
    ho, wo = expected.shape[-2:]
    offset = torch.zeros(2, 18, ho, wo, device=device)
    out = modulated_deform_conv(
        x,
        offset,
        torch.ones(2, 9, ho, wo, device=device),
        weight,
        bias,
        stride,
        dilation,
        dilation,
        groups,
    )
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    out_v1 = deform_conv(x, offset, weight, stride, dilation, dilation, groups, bias=bias)
    torch.testing.assert_close(out_v1, expected, atol=1e-5, rtol=1e-5)


def test_dfconv2d_with_zero_offset_conv_is_half_scaled_plain_conv_and_learns_offsets():
    """Zero offset conv: zero offsets and mask sigmoid(0) = 0.5."""
    torch.manual_seed(0)
    block = DFConv2d(4, 6, kernel_size=3, dilation=2)
    with torch.no_grad():
        block.offset.weight.zero_()
    x = torch.randn(1, 4, 7, 6)
    out = block(x)
    torch.testing.assert_close(out, 0.5 * F.conv2d(x, block.conv.weight, padding=2, dilation=2))
    out.square().sum().backward()
    assert block.offset.weight.grad.abs().sum() > 0


def _reference_shapes(config):
    with open(os.path.join(STATE_DICTS, config + ".json")) as f:
        return json.load(f)


def test_dfconv2d_state_dict_matches_reference_checkpoint():
    shapes = _reference_shapes("paa_dcnv2_X_101_32x8d_FPN_2x")
    blocks = {
        "backbone.body.layer3.0.conv2.": DFConv2d(1024, 1024, with_modulated_dcn=True, groups=32),
        "rpn.head.cls_tower.9.": DFConv2d(256, 256, with_modulated_dcn=True, bias=True),
    }
    for prefix, block in blocks.items():
        ours = {prefix + k: list(v.shape) for k, v in block.state_dict().items()}
        reference = {k: v for k, v in shapes.items() if k.startswith(prefix)}
        assert ours == reference
    assert list(blocks["backbone.body.layer3.0.conv2."].offset.weight.shape) == [27, 1024, 3, 3]


def test_dfconv2d_v1_and_init():
    block = DFConv2d(8, 4, with_modulated_dcn=False, kernel_size=3, stride=2)
    assert isinstance(block.conv, DeformConv)
    assert {k: list(v.shape) for k, v in block.state_dict().items()} == {
        "offset.weight": [18, 8, 3, 3],
        "offset.bias": [18],
        "conv.weight": [4, 8, 3, 3],
    }
    assert block.offset.bias.abs().sum() == 0
    # offset: kaiming_uniform(a=1), bound = sqrt(6 / ((1 + 1) * fan_in)) = sqrt(3 / 72)
    bound = (3 / 72) ** 0.5
    assert (
        block.offset.weight.abs().max() <= bound and block.offset.weight.abs().max() > 0.8 * bound
    )
    # conv: the deformable conv's own uniform(+-1/sqrt(fan_in)) init, fan_in = 8 * 3 * 3
    bound = 72**-0.5
    assert block.conv.weight.abs().max() <= bound and block.conv.weight.abs().max() > 0.8 * bound
    assert block(torch.randn(2, 8, 9, 9)).shape == (2, 4, 5, 5)


def test_modules_and_empty_batch():
    conv = ModulatedDeformConv(4, 6, 3, padding=1, deformable_groups=2)
    assert conv.bias is not None and conv.bias.abs().sum() == 0
    assert DeformConv(4, 6, 3).bias is None
    block = DFConv2d(4, 6, bias=True)
    x = torch.zeros(0, 4, 5, 7, requires_grad=True)
    out = block(x)
    assert out.shape == (0, 6, 5, 7)
    out.sum().backward()
    assert x.grad.shape == x.shape and block.conv.weight.grad.abs().sum() == 0


def _valid_args():
    x = torch.randn(1, 4, 6, 6)
    return dict(
        input=x,
        offset=torch.zeros(1, 36, 6, 6),
        mask=torch.ones(1, 18, 6, 6),
        weight=torch.randn(8, 2, 3, 3),
        bias=torch.zeros(8),
    )


@pytest.mark.parametrize(
    "field,bad,message",
    [
        (
            "offset",
            torch.zeros(1, 18, 6, 6),
            r"offset must have shape \[1, 36, 6, 6\].*got \[1, 18, 6, 6\]",
        ),
        (
            "offset",
            torch.zeros(1, 36, 5, 6),
            r"offset must have shape \[1, 36, 6, 6\].*got \[1, 36, 5, 6\]",
        ),
        (
            "mask",
            torch.ones(1, 9, 6, 6),
            r"mask must have shape \[1, 18, 6, 6\].*got \[1, 9, 6, 6\]",
        ),
        (
            "weight",
            torch.randn(8, 4, 3, 3),
            r"weight must have shape \[8, 2, 3, 3\].*got \[8, 4, 3, 3\]",
        ),
        ("bias", torch.zeros(4), r"bias must have shape \[8\].*got \[4\]"),
    ],
)
def test_bad_shapes_are_reported_by_the_op(field, bad, message):
    args = _valid_args()
    args[field] = bad
    with pytest.raises(RuntimeError, match=message):
        modulated_deform_conv(
            args["input"],
            args["offset"],
            args["mask"],
            args["weight"],
            args["bias"],
            padding=1,
            groups=2,
            deformable_groups=2,
        )
    with pytest.raises(RuntimeError, match=message):
        ops.deform_conv_forward(
            args["input"],
            args["weight"],
            args["offset"],
            args["mask"],
            args["bias"],
            1,
            1,
            1,
            1,
            1,
            1,
            2,
            2,
        )


@pytest.mark.parametrize("modulated", [True, False], ids=["v2", "v1"])
def test_cpu_autocast_runs_dcn_in_float32(modulated):
    # Under bf16 autocast the inputs arrive in bf16 from the convs before; DCN casts them to
    # float32 (it has no bf16 kernel) and gives exactly the float32 result of those inputs.
    x, offset, mask, weight, bias = _random_inputs(CONFIGS[1], modulated)
    x, offset = x.bfloat16(), offset.bfloat16()
    mask = mask.bfloat16() if modulated else None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _ours(x, offset, mask, weight, bias, CONFIGS[1])
    assert out.dtype == torch.float32
    expected = _ours(
        x.float(), offset.float(), None if mask is None else mask.float(), weight, bias, CONFIGS[1]
    )
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


# Relative (Frobenius) error bounds against float32, measured ~3x below: (output and the
# deformable conv's weight gradient, gradients through the low-precision offsets). The
# latter are looser: a rounded offset can move a sampling point across a pixel edge,
# where the bilinear gradient jumps.
AUTOCAST_TOLERANCES = {torch.bfloat16: (0.02, 0.12), torch.float16: (0.003, 0.03)}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("modulated", [True, False], ids=["v2", "v1"])
def test_autocast_matches_float32(modulated, dtype, device):
    """A conv then a DFConv2d under autocast, as in the network: the convs run in `dtype`,
    the deformable conv in float32 on their rounded outputs; the output and gradients
    stay within the dtype's bounds of the float32 run."""

    def run(autocast):
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(4, 8, 3, padding=1)
        block = DFConv2d(8, 6, with_modulated_dcn=modulated, bias=modulated)
        conv, block = conv.to(device), block.to(device)
        offset_dtypes = []
        block.offset.register_forward_hook(lambda m, i, o: offset_dtypes.append(o.dtype))
        g = torch.Generator().manual_seed(1)
        x = torch.randn(2, 4, 12, 10, generator=g).to(device)
        upstream = torch.randn(2, 6, 12, 10, generator=g).to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=autocast):
            y = block(conv(x))
        (y * upstream).sum().backward()
        assert offset_dtypes == [dtype if autocast else torch.float32]
        assert y.dtype == torch.float32
        return y.detach(), block.conv.weight.grad, conv.weight.grad, block.offset.weight.grad

    tight, loose = AUTOCAST_TOLERANCES[dtype]
    names = ["output", "grad dcn weight", "grad conv weight", "grad offset weight"]
    for name, low, ref, tol in zip(names, run(True), run(False), [tight, tight, loose, loose]):
        assert bool(torch.isfinite(low).all()), name
        error = float((low - ref).norm() / ref.norm())
        assert error < tol, f"{name}: relative error {error:.2e} >= {tol}"


def test_dtype_and_device_mismatch_errors():
    args = _valid_args()
    with pytest.raises(RuntimeError, match="offset has dtype Double but input has dtype Float"):
        modulated_deform_conv(
            args["input"],
            args["offset"].double(),
            args["mask"],
            args["weight"],
            padding=1,
            groups=2,
            deformable_groups=2,
        )
    with pytest.raises(RuntimeError, match="mask has dtype Double but input has dtype Float"):
        ops.deform_conv_forward(
            args["input"],
            args["weight"],
            args["offset"],
            args["mask"].double(),
            None,
            1,
            1,
            1,
            1,
            1,
            1,
            2,
            2,
        )
    with pytest.raises(RuntimeError, match="weight is on meta but input is on cpu"):
        modulated_deform_conv(
            args["input"],
            args["offset"],
            args["mask"],
            args["weight"].to("meta"),
            padding=1,
            groups=2,
            deformable_groups=2,
        )
    with pytest.raises(RuntimeError, match="input must be float32 or float64"):
        deform_conv(
            args["input"].half(),
            args["offset"].half(),
            args["weight"].half(),
            padding=1,
            groups=2,
            deformable_groups=2,
        )
