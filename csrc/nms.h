// Greedy non-maximum suppression. Widths are x2 - x1 + offset: offset 1 is the legacy
// "+1" convention of the PAA reference, 0 the continuous one of detectron2/torchvision.
// Both ops (paa_core::nms and paa_core::ml_nms, whose labels [N] restrict suppression to
// boxes of the same label) return the int64 indices of the kept boxes, ordered by descending score
// (ties keep the lower index first). A box is suppressed when its IoU with a kept,
// higher-scoring box is strictly greater than `threshold`.
#pragma once
#include <ATen/ATen.h>

// Shape/device checks shared by both backends. `labels` may be undefined (plain NMS).
inline void check_nms_inputs(const at::Tensor& dets, const at::Tensor& scores,
                             const at::Tensor& labels) {
  TORCH_CHECK(dets.dim() == 2 && dets.size(1) == 4, "nms: dets must be [N, 4], got ", dets.sizes());
  TORCH_CHECK(at::isFloatingType(dets.scalar_type()), "nms: dets must be floating point, got ",
              dets.scalar_type());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == dets.size(0), "nms: scores must be [N] with N=",
              dets.size(0), ", got ", scores.sizes());
  TORCH_CHECK(scores.device() == dets.device(), "nms: scores are on ", scores.device(),
              ", dets on ", dets.device());
  if (labels.defined()) {
    TORCH_CHECK(labels.dim() == 1 && labels.size(0) == dets.size(0),
                "ml_nms: labels must be [N] with N=", dets.size(0), ", got ", labels.sizes());
    TORCH_CHECK(at::isIntegralType(labels.scalar_type(), /*includeBool=*/false),
                "ml_nms: labels must be an integer tensor, got ", labels.scalar_type());
    TORCH_CHECK(labels.device() == dets.device(), "ml_nms: labels are on ", labels.device(),
                ", dets on ", dets.device());
  }
}

// The kernels compute in float32 or float64: half and bfloat16 boxes are widened (the result
// is indices, so there is nothing to cast back and no autocast rule is needed).
inline at::Tensor nms_kernel_boxes(const at::Tensor& dets) {
  const bool reduced = dets.scalar_type() == at::kHalf || dets.scalar_type() == at::kBFloat16;
  return (reduced ? dets.to(at::kFloat) : dets).contiguous();
}

