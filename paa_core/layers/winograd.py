"""3x3 convolutions (stride 1, padding 1) by Winograd's F(4x4, 3x3) on the CPU.

The detector's head and FPN spend most of a CPU training step in 3x3 convolutions, already
near the machine's float32 peak in oneDNN's direct algorithm. F(4x4, 3x3) computes each 4x4
output tile from a 6x6 input window with 36 multiplications per channel pair instead of 144:
the input windows and the weights are transformed (csrc/winograd.h: the tile transforms and
their adjoints), 36 matrix products over channels follow (oneDNN grouped 1x1 convolutions and
MKL batched products), and an output transform gives the tiles back. The same arithmetic
as the convolution; the float32 rounding differs by about 1e-5 of the output's magnitude.

Training and inference both use it: the backward is the exact gradient of the transformed
computation (input transform adjoint, transposed products, output transform adjoint). It
keeps the inputs, which autograd holds anyway, and transforms them again rather than keeping
their tiles (2.25x the input's size): the transform is a small part of the backward, and
fresh memory of that size costs more to touch than to fill.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from paa_core._ops import ops

# The transform matrices for the interpolation points 0, 1, -1, 2, -2 and infinity: G maps
# a 3-tap filter to its 6 Winograd coefficients (the input's B^T and output's A^T live in
# the C++ kernels).
_G = torch.tensor(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ],
    dtype=torch.float64,
)


def _kron_g(dtype: torch.dtype) -> Tensor:
    """[36, 9]: (G w G^T)[a, b] = sum over i, j of G[a, i] G[b, j] w[i, j] as one matrix."""
    return torch.kron(_G, _G).to(dtype)


def transform_weight(weight: Tensor) -> Tensor:
    """weight [O, C, 3, 3] -> U [36, O, C], U[a * 6 + b] = (G w G^T)[a, b] per channel pair."""
    out_channels, in_channels = weight.shape[:2]
    flat = weight.reshape(out_channels * in_channels, 9)
    return (_kron_g(weight.dtype) @ flat.t()).reshape(36, out_channels, in_channels)


def transform_weight_adjoint(grad_u: Tensor) -> Tensor:
    """The weight transform's adjoint: dU [36, O, C] -> dW [O, C, 3, 3]."""
    out_channels, in_channels = grad_u.shape[1:]
    flat = _kron_g(grad_u.dtype).t() @ grad_u.reshape(36, out_channels * in_channels)
    return flat.t().reshape(out_channels, in_channels, 3, 3)


def tile_products(tiles: Tensor, u: Tensor) -> Tensor:
    """tiles [T, 36, C] x U [36, O, C] -> [T, 36, O]: out[t, k] = U[k] @ tiles[t, k].

    One grouped 1x1 convolution (36 groups) with the tiles as a channels_last image of T
    pixels: oneDNN runs these products about twice as fast as MKL's batched ones here."""
    num_tiles, _, in_channels = tiles.shape
    out_channels = u.shape[1]
    image = tiles.as_strided(
        (1, 36 * in_channels, num_tiles, 1),
        (tiles.numel(), 1, 36 * in_channels, 36 * in_channels),
    )
    out = F.conv2d(image, u.reshape(36 * out_channels, in_channels, 1, 1), groups=36)
    return out.permute(0, 2, 3, 1).reshape(num_tiles, 36, out_channels)


def _num_tiles(x: Tensor) -> int:
    """4x4 output tiles of x [N, C, H, W]."""
    return x.shape[0] * ((x.shape[2] + 3) // 4) * ((x.shape[3] + 3) // 4)


class _WinogradConv3x3(torch.autograd.Function):
    """One weight over several images of any sizes (a head's pyramid levels): their tiles
    share one set of products, and the weight one transform."""

    @staticmethod
    def forward(ctx, weight: Tensor, bias: Tensor | None, *xs: Tensor) -> tuple[Tensor, ...]:
        tiles = ops.winograd_input_transform(xs)  # [T, 36, C], level after level
        ctx.sizes = [(x.shape[0], x.shape[2], x.shape[3]) for x in xs]
        ctx.counts = [_num_tiles(x) for x in xs]
        u = transform_weight(weight)
        products = tile_products(tiles, u).split(ctx.counts)
        ctx.save_for_backward(u, *xs)
        ctx.has_bias = bias is not None
        return tuple(
            ops.winograd_output_transform(m, bias, *size) for m, size in zip(products, ctx.sizes)
        )

    @staticmethod
    @once_differentiable
    def backward(ctx, *grad_outs: Tensor):
        u, *xs = ctx.saved_tensors
        tiles = ops.winograd_input_transform(xs)
        grads = [
            g if g is not None else tiles.new_zeros(n, u.shape[1], h, w)
            for g, (n, h, w) in zip(grad_outs, ctx.sizes)
        ]
        grad_m = ops.winograd_output_transform_backward(grads)  # [T, 36, O]
        grad_w = grad_b = None
        grad_xs = [None] * len(grad_outs)
        if any(ctx.needs_input_grad[2:]):
            grad_tiles = tile_products(grad_m, u.transpose(1, 2).contiguous())
            grad_xs = [
                ops.winograd_input_transform_backward(g, *size)
                for g, size in zip(grad_tiles.split(ctx.counts), ctx.sizes)
            ]
        if ctx.needs_input_grad[0]:
            # dU[k] = grad_m[:, k]^T @ tiles[:, k], over all tiles.
            grad_u = torch.bmm(grad_m.permute(1, 2, 0), tiles.transpose(0, 1))
            grad_w = transform_weight_adjoint(grad_u)
        if ctx.has_bias and ctx.needs_input_grad[1]:
            grad_b = sum(g.sum((0, 2, 3)) for g in grad_outs if g is not None)
        return grad_w, grad_b, *grad_xs


def winograd_applies(x: Tensor, conv: nn.Conv2d) -> bool:
    """The eager CPU float32 case of a 3x3 / stride 1 / padding 1 convolution; tracing,
    compiling, exporting and autocast keep the framework's convolution."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 4
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and not torch.is_autocast_enabled("cpu")
        and not torch.jit.is_tracing()
        and not torch.jit.is_scripting()
        and not torch.compiler.is_compiling()
        and not torch.onnx.is_in_onnx_export()
    )


def winograd_conv3x3(xs: list[Tensor], weight: Tensor, bias: Tensor | None = None) -> list[Tensor]:
    """[conv2d(x, weight, bias, padding=1) for x in xs] for a 3x3 weight by F(4x4, 3x3), on
    the CPU in float32; the outputs are channels_last."""
    return list(_WinogradConv3x3.apply(weight, bias, *xs))


class WinogradConv2d(nn.Conv2d):
    """nn.Conv2d (same parameters and state dict) that runs by F(4x4, 3x3) where
    `winograd_applies` and its channels and tiles make the transforms pay, and as
    nn.Conv2d elsewhere. `forward_levels` convolves a list of inputs (pyramid levels)
    in one Winograd call."""

    # Below this many input and output channels, or 4x4 output tiles, the transforms and
    # the weights' reordering cost more than the fewer multiplications save.
    MIN_CHANNELS = 128
    MIN_TILES = 256

    def _use_winograd(self, xs: list[Tensor]) -> bool:
        return (
            min(self.in_channels, self.out_channels) >= self.MIN_CHANNELS
            and all(winograd_applies(x, self) for x in xs)
            and sum(_num_tiles(x) for x in xs) >= self.MIN_TILES
        )

    def forward(self, x: Tensor) -> Tensor:
        if self._use_winograd([x]):
            return winograd_conv3x3([x], self.weight, self.bias)[0]
        return super().forward(x)

    def forward_levels(self, xs: list[Tensor]) -> list[Tensor]:
        if self._use_winograd(xs):
            return winograd_conv3x3(xs, self.weight, self.bias)
        return [super(WinogradConv2d, self).forward(x) for x in xs]
