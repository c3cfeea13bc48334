// (Modulated) deformable convolution: DCN v1 (mask absent) and DCN v2 (mask present).
//
// Layout is that of torchvision.ops.deform_conv2d. With K = kh*kw taps in row-major
// order and deformable group d, offset channel d*2K + 2k is the vertical (y) and
// d*2K + 2k + 1 the horizontal (x) displacement of tap k; mask channel d*K + k scales
// the value sampled for tap k. Sampling is bilinear; a corner outside the image reads 0.
//
// Ops paa_core::deform_conv_forward and paa_core::deform_conv_backward.
// Shapes: input [N, C, H, W], weight [O, C/groups, kh, kw], offset [N, 2*dg*K, Ho, Wo],
// mask [N, dg*K, Ho, Wo], bias [O], output [N, O, Ho, Wo] with
// Ho = (H + 2*pad_h - dil_h*(kh-1) - 1) / stride_h + 1 (likewise Wo).
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <vector>

namespace deform_conv_detail {

inline void check_shape(const char* name, const at::Tensor& t, at::IntArrayRef expected,
                        const char* meaning) {
  TORCH_CHECK(t.sizes() == expected, "deform_conv: ", name, " must have shape ", expected, " ",
              meaning, ", got ", t.sizes());
}

inline void check_like(const char* name, const at::Tensor& t, const at::Tensor& input) {
  TORCH_CHECK(t.device() == input.device(), "deform_conv: ", name, " is on ", t.device(),
              " but input is on ", input.device());
  TORCH_CHECK(t.scalar_type() == input.scalar_type(), "deform_conv: ", name, " has dtype ",
              t.scalar_type(), " but input has dtype ", input.scalar_type());
}

}  // namespace deform_conv_detail

// Validates every argument; returns {Ho, Wo}.
inline std::vector<int64_t> check_deform_conv_inputs(
    const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
    const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& bias, int64_t stride_h,
    int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups,
    int64_t deformable_groups) {
  using namespace deform_conv_detail;
  TORCH_CHECK(input.dim() == 4, "deform_conv: input must be 4-D [N, C, H, W], got ", input.sizes());
  TORCH_CHECK(weight.dim() == 4, "deform_conv: weight must be 4-D [O, C/groups, kh, kw], got ",
              weight.sizes());
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
              "deform_conv: input must be float32 or float64, got ", input.scalar_type());
  TORCH_CHECK(stride_h > 0 && stride_w > 0 && dil_h > 0 && dil_w > 0 && pad_h >= 0 && pad_w >= 0,
              "deform_conv: need stride > 0, dilation > 0, padding >= 0; got stride (", stride_h,
              ", ", stride_w, "), dilation (", dil_h, ", ", dil_w, "), padding (", pad_h, ", ",
              pad_w, ")");
  const int64_t n = input.size(0), c = input.size(1), h = input.size(2), w = input.size(3);
  const int64_t o = weight.size(0), kh = weight.size(2), kw = weight.size(3);
  TORCH_CHECK(groups > 0 && c % groups == 0 && o % groups == 0, "deform_conv: groups=", groups,
              " must divide in_channels=", c, " and out_channels=", o);
  TORCH_CHECK(deformable_groups > 0 && c % deformable_groups == 0,
              "deform_conv: deformable_groups=", deformable_groups,
              " must divide in_channels=", c);
  check_shape("weight", weight, {o, c / groups, kh, kw}, "(out_channels, in_channels/groups, kh, kw)");
  const int64_t out_h = (h + 2 * pad_h - dil_h * (kh - 1) - 1) / stride_h + 1;
  const int64_t out_w = (w + 2 * pad_w - dil_w * (kw - 1) - 1) / stride_w + 1;
  TORCH_CHECK(kh > 0 && kw > 0 && out_h > 0 && out_w > 0, "deform_conv: kernel ", kh, "x", kw,
              " does not fit the padded ", h, "x", w, " input");
  const int64_t taps = kh * kw;
  check_like("weight", weight, input);
  check_like("offset", offset, input);
  check_shape("offset", offset, {n, 2 * deformable_groups * taps, out_h, out_w},
              "(N, 2*deformable_groups*kh*kw, H_out, W_out)");
  if (mask.has_value()) {
    check_like("mask", *mask, input);
    check_shape("mask", *mask, {n, deformable_groups * taps, out_h, out_w},
                "(N, deformable_groups*kh*kw, H_out, W_out)");
  }
  if (bias.has_value()) {
    check_like("bias", *bias, input);
    check_shape("bias", *bias, {o}, "(out_channels)");
  }
  return {out_h, out_w};
}

// Checks the backward's arguments too (grad_output [N, O, Ho, Wo]).
inline void check_deform_conv_backward_inputs(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& offset, const std::optional<at::Tensor>& mask,
    const std::optional<at::Tensor>& bias, int64_t stride_h, int64_t stride_w, int64_t pad_h,
    int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups, int64_t deformable_groups) {
  const auto out_hw = check_deform_conv_inputs(input, weight, offset, mask, bias, stride_h,
                                               stride_w, pad_h, pad_w, dil_h, dil_w, groups,
                                               deformable_groups);
  deform_conv_detail::check_like("grad_output", grad_output, input);
  deform_conv_detail::check_shape("grad_output", grad_output,
                                  {input.size(0), weight.size(0), out_hw[0], out_hw[1]},
                                  "(N, out_channels, H_out, W_out)");
}

// paa_core::deform_conv_backward returns (grad_input, grad_weight, grad_offset, grad_mask,
// grad_bias); the gradient of an absent mask or bias is an empty tensor (a dispatcher op
// returns a fixed number of tensors).
using DeformConvGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
inline at::Tensor absent_grad(const at::Tensor& like) { return at::empty({0}, like.options()); }
