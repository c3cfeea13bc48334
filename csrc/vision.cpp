// Python bindings of the compiled ops (module paa_core._C).
#include <torch/extension.h>

#include "nms.h"
#include "sigmoid_focal_loss.h"
#include "deform_conv.h"
#include "gmm.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("nms", &nms, "greedy NMS (widths x2 - x1 + offset); returns kept indices");
  m.def("ml_nms", &ml_nms, "label-aware greedy NMS (widths x2 - x1 + offset); returns kept indices");
  m.def("sigmoid_focalloss_forward", &sigmoid_focalloss_forward, "sigmoid focal loss forward");
  m.def("sigmoid_focalloss_backward", &sigmoid_focalloss_backward, "sigmoid focal loss backward");
  m.def("deform_conv_forward", &deform_conv_forward, "(modulated) deformable conv forward");
  m.def("deform_conv_backward", &deform_conv_backward, "(modulated) deformable conv backward");
  m.def("gmm2_fit", &gmm2_fit,
        "EM fit of a two-component 1-D Gaussian mixture per row of x [B, L] over its mask; returns "
        "(components, log_likelihood, means, variances, weights, n_iter)");
}
