// Greedy non-maximum suppression. Widths are x2 - x1 + offset: offset 1 is the legacy
// "+1" convention of the PAA reference, 0 the continuous one of detectron2/torchvision.
// Both ops return the int64 indices of the kept boxes, ordered by descending score
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
    TORCH_CHECK(!at::isFloatingType(labels.scalar_type()),
                "ml_nms: labels must be an integer tensor, got ", labels.scalar_type());
    TORCH_CHECK(labels.device() == dets.device(), "ml_nms: labels are on ", labels.device(),
                ", dets on ", dets.device());
  }
}

at::Tensor nms_cpu(const at::Tensor& dets, const at::Tensor& scores, double threshold, double offset);
at::Tensor ml_nms_cpu(const at::Tensor& dets, const at::Tensor& scores,
                      const at::Tensor& labels, double threshold, double offset);
#ifdef WITH_CUDA
at::Tensor nms_cuda(const at::Tensor& dets, const at::Tensor& scores, double threshold, double offset);
at::Tensor ml_nms_cuda(const at::Tensor& dets, const at::Tensor& scores,
                       const at::Tensor& labels, double threshold, double offset);
#endif

// dets [N, 4] xyxy, scores [N].
inline at::Tensor nms(const at::Tensor& dets, const at::Tensor& scores, double threshold, double offset) {
  if (dets.is_cuda()) {
#ifdef WITH_CUDA
    return nms_cuda(dets, scores, threshold, offset);
#else
    TORCH_CHECK(false, "nms: paa_core._C was built without CUDA support");
#endif
  }
  return nms_cpu(dets, scores, threshold, offset);
}

// Label-aware NMS: a box only suppresses boxes with the same label. labels [N] integer.
inline at::Tensor ml_nms(const at::Tensor& dets, const at::Tensor& scores,
                         const at::Tensor& labels, double threshold, double offset) {
  if (dets.is_cuda()) {
#ifdef WITH_CUDA
    return ml_nms_cuda(dets, scores, labels, threshold, offset);
#else
    TORCH_CHECK(false, "ml_nms: paa_core._C was built without CUDA support");
#endif
  }
  return ml_nms_cpu(dets, scores, labels, threshold, offset);
}
