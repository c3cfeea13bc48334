// The compiled ops, registered with PyTorch's dispatcher as torch.ops.paa_core.*.
//
// This file holds the schemas and the autocast rules; the CPU and CUDA kernels register
// themselves next to their code (csrc/cpu, csrc/cuda), the shape-only Meta kernels in
// meta.cpp. Autograd formulas and the fake kernel of the two NMS ops (whose output size
// depends on the data) are registered from Python, in paa_core/_ops.py.
#include <ATen/autocast_mode.h>
#include <Python.h>
#include <torch/library.h>

#include <optional>

TORCH_LIBRARY(paa_core, m) {
  m.set_python_module("paa_core._ops");
  // Greedy NMS; widths are x2 - x1 + offset (1: the PAA reference, 0: detectron2).
  m.def("nms(Tensor dets, Tensor scores, float iou_threshold, float offset=1) -> Tensor");
  m.def("ml_nms(Tensor dets, Tensor scores, Tensor labels, float iou_threshold, float offset=1) "
        "-> Tensor");
  m.def("sigmoid_focal_loss_forward(Tensor logits, Tensor targets, float gamma, float alpha) "
        "-> Tensor");
  m.def("sigmoid_focal_loss_backward(Tensor logits, Tensor targets, Tensor d_losses, float gamma, "
        "float alpha) -> Tensor");
  // mask absent: DCN v1; present: modulated DCN v2.
  m.def("deform_conv_forward(Tensor input, Tensor weight, Tensor offset, Tensor? mask, "
        "Tensor? bias, int stride_h, int stride_w, int pad_h, int pad_w, int dil_h, int dil_w, "
        "int groups, int deformable_groups) -> Tensor");
  m.def("deform_conv_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor offset, "
        "Tensor? mask, Tensor? bias, int stride_h, int stride_w, int pad_h, int pad_w, "
        "int dil_h, int dil_w, int groups, int deformable_groups) "
        "-> (Tensor grad_input, Tensor grad_weight, Tensor grad_offset, Tensor grad_mask, "
        "Tensor grad_bias)");
  // Winograd F(4x4, 3x3) tile transforms of a 3x3 / stride 1 / padding 1 convolution and
  // their adjoints (csrc/winograd.h); the matrix products between them run in Python.
  m.def("winograd_input_transform(Tensor[] inputs) -> Tensor");
  m.def("winograd_input_transform_backward(Tensor grad_tiles, int batch, int height, int width) "
        "-> Tensor");
  m.def("winograd_output_transform(Tensor tiles, Tensor? bias, int batch, int height, int width) "
        "-> Tensor");
  m.def("winograd_output_transform_backward(Tensor[] grad_outputs) -> Tensor");
  m.def("gmm2_fit(Tensor x, Tensor mask, float tol, float reg_covar, int max_iter) "
        "-> (Tensor components, Tensor log_likelihood, Tensor means, Tensor variances, "
        "Tensor weights, Tensor n_iter)");
}

namespace {

// Autocast rules: the focal loss and DCN kernels exist in float32 and float64 only, so under
// autocast their lower-precision floating inputs are cast to float32 (float64 stays) and the
// result is float32, as torch's own autocast does for precision-sensitive ops. The two NMS
// ops need no rule: their kernels widen half boxes themselves and return indices.
template <c10::DispatchKey kKey, c10::DeviceType kDevice>
at::Tensor focal_loss_autocast(const at::Tensor& logits, const at::Tensor& targets, double gamma,
                               double alpha) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(kKey);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("paa_core::sigmoid_focal_loss_forward", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double, double)>();
  return op.call(at::autocast::cached_cast(at::kFloat, logits, kDevice), targets, gamma, alpha);
}

template <c10::DispatchKey kKey, c10::DeviceType kDevice>
at::Tensor deform_conv_autocast(const at::Tensor& input, const at::Tensor& weight,
                                const at::Tensor& offset, const std::optional<at::Tensor>& mask,
                                const std::optional<at::Tensor>& bias, int64_t stride_h,
                                int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                                int64_t dil_w, int64_t groups, int64_t deformable_groups) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(kKey);
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("paa_core::deform_conv_forward", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                            int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                            int64_t)>();
  const auto f32 = [](const auto& t) { return at::autocast::cached_cast(at::kFloat, t, kDevice); };
  return op.call(f32(input), f32(weight), f32(offset), f32(mask), f32(bias), stride_h, stride_w,
                 pad_h, pad_w, dil_h, dil_w, groups, deformable_groups);
}

}  // namespace

TORCH_LIBRARY_IMPL(paa_core, AutocastCPU, m) {
  m.impl("sigmoid_focal_loss_forward",
         &focal_loss_autocast<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>);
  m.impl("deform_conv_forward",
         &deform_conv_autocast<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(paa_core, AutocastCUDA, m) {
  m.impl("sigmoid_focal_loss_forward",
         &focal_loss_autocast<c10::DispatchKey::AutocastCUDA, c10::DeviceType::CUDA>);
  m.impl("deform_conv_forward",
         &deform_conv_autocast<c10::DispatchKey::AutocastCUDA, c10::DeviceType::CUDA>);
}

// `import paa_core._C` loads this library, which runs the registrations above; the module
// itself is empty.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
