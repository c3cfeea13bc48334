// Meta kernels: output shapes of the ops whose shapes do not depend on the data, after the
// same argument checks as the real kernels. torch.compile and torch.export trace with them
// (fake tensors fall back to an op's Meta kernel), so bad shapes fail while tracing too.
#include <torch/library.h>

#include "deform_conv.h"
#include "gmm.h"
#include "sigmoid_focal_loss.h"
#include "winograd.h"

namespace {

at::Tensor focal_loss_forward_meta(const at::Tensor& logits, const at::Tensor& targets,
                                   double /*gamma*/, double /*alpha*/) {
  check_focal_inputs(logits, targets);
  return at::empty(logits.sizes(), logits.options());
}

at::Tensor focal_loss_backward_meta(const at::Tensor& logits, const at::Tensor& targets,
                                    const at::Tensor& d_losses, double /*gamma*/,
                                    double /*alpha*/) {
  check_focal_inputs(logits, targets);
  check_focal_grad(d_losses, logits);
  return at::empty(logits.sizes(), logits.options());
}

at::Tensor deform_conv_forward_meta(const at::Tensor& input, const at::Tensor& weight,
                                    const at::Tensor& offset,
                                    const std::optional<at::Tensor>& mask,
                                    const std::optional<at::Tensor>& bias, int64_t stride_h,
                                    int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                                    int64_t dil_w, int64_t groups, int64_t deformable_groups) {
  const auto out_hw = check_deform_conv_inputs(input, weight, offset, mask, bias, stride_h,
                                               stride_w, pad_h, pad_w, dil_h, dil_w, groups,
                                               deformable_groups);
  return at::empty({input.size(0), weight.size(0), out_hw[0], out_hw[1]}, input.options());
}

DeformConvGrads deform_conv_backward_meta(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& offset, const std::optional<at::Tensor>& mask,
    const std::optional<at::Tensor>& bias, int64_t stride_h, int64_t stride_w, int64_t pad_h,
    int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups, int64_t deformable_groups) {
  check_deform_conv_backward_inputs(grad_output, input, weight, offset, mask, bias, stride_h,
                                    stride_w, pad_h, pad_w, dil_h, dil_w, groups,
                                    deformable_groups);
  const auto like = [](const at::Tensor& t) { return at::empty(t.sizes(), t.options()); };
  return {like(input), like(weight), like(offset), mask ? like(*mask) : absent_grad(input),
          bias ? like(*bias) : absent_grad(input)};
}

Gmm2Outputs gmm2_fit_meta(const at::Tensor& x, const at::Tensor& mask, double /*tol*/,
                          double /*reg_covar*/, int64_t max_iter) {
  check_gmm2_inputs(x, mask, max_iter);
  return gmm2_empty_outputs(x);
}

at::Tensor winograd_tiles_meta(at::TensorList images, const char* name) {
  const int64_t tiles = winograd_total_tiles(images, name);
  return at::empty({tiles, 36, images[0].size(1)}, images[0].options());
}

at::Tensor winograd_input_transform_meta(at::TensorList inputs) {
  return winograd_tiles_meta(inputs, "inputs");
}

at::Tensor winograd_input_transform_backward_meta(const at::Tensor& grad_tiles, int64_t batch,
                                                  int64_t height, int64_t width) {
  check_winograd_tiles(grad_tiles, "grad_tiles", winograd_tiles(batch, height, width));
  return winograd_image_like(grad_tiles, batch, grad_tiles.size(2), height, width);
}

at::Tensor winograd_output_transform_meta(const at::Tensor& tiles,
                                          const std::optional<at::Tensor>& /*bias*/,
                                          int64_t batch, int64_t height, int64_t width) {
  check_winograd_tiles(tiles, "tiles", winograd_tiles(batch, height, width));
  return winograd_image_like(tiles, batch, tiles.size(2), height, width);
}

at::Tensor winograd_output_transform_backward_meta(at::TensorList grad_outputs) {
  return winograd_tiles_meta(grad_outputs, "grad_outputs");
}

}  // namespace

TORCH_LIBRARY_IMPL(paa_core, Meta, m) {
  m.impl("winograd_input_transform", &winograd_input_transform_meta);
  m.impl("winograd_input_transform_backward", &winograd_input_transform_backward_meta);
  m.impl("winograd_output_transform", &winograd_output_transform_meta);
  m.impl("winograd_output_transform_backward", &winograd_output_transform_backward_meta);
  m.impl("sigmoid_focal_loss_forward", &focal_loss_forward_meta);
  m.impl("sigmoid_focal_loss_backward", &focal_loss_backward_meta);
  m.impl("deform_conv_forward", &deform_conv_forward_meta);
  m.impl("deform_conv_backward", &deform_conv_backward_meta);
  m.impl("gmm2_fit", &gmm2_fit_meta);
}
