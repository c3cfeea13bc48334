// CPU greedy NMS. Boxes are copied once into score order as separate coordinate
// arrays, so the inner loop reads memory sequentially and has no branches (the
// compiler vectorises it); only boxes that survive become the reference box.
#include "nms.h"
#include <torch/library.h>
#include <algorithm>
#include <vector>

namespace {

template <typename T, bool kWithLabels>
at::Tensor greedy_nms(const at::Tensor& dets, const at::Tensor& scores, const at::Tensor& labels,
                      double threshold, double offset) {
  const int64_t n = dets.size(0);
  const at::Tensor order = std::get<1>(scores.sort(/*stable=*/true, 0, /*descending=*/true));
  const int64_t* ord = order.data_ptr<int64_t>();
  const T* d = dets.data_ptr<T>();
  const int64_t* lab = kWithLabels ? labels.data_ptr<int64_t>() : nullptr;

  const T off = static_cast<T>(offset);
  std::vector<T> x1(n), y1(n), x2(n), y2(n), area(n);
  std::vector<int64_t> cls(kWithLabels ? n : 0);
  for (int64_t k = 0; k < n; ++k) {
    const T* b = d + 4 * ord[k];
    x1[k] = b[0];
    y1[k] = b[1];
    x2[k] = b[2];
    y2[k] = b[3];
    area[k] = (b[2] - b[0] + off) * (b[3] - b[1] + off);
    if (kWithLabels) cls[k] = lab[ord[k]];
  }

  // The reference compares IoU and threshold in the box precision.
  const T thr = static_cast<T>(threshold);
  std::vector<uint8_t> suppressed(n, 0);
  at::Tensor keep = at::empty({n}, dets.options().dtype(at::kLong));
  int64_t* kept = keep.data_ptr<int64_t>();
  int64_t num_kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (suppressed[i]) continue;
    kept[num_kept++] = ord[i];
    const T ix1 = x1[i], iy1 = y1[i], ix2 = x2[i], iy2 = y2[i], iarea = area[i];
    const int64_t icls = kWithLabels ? cls[i] : 0;
    for (int64_t j = i + 1; j < n; ++j) {
      const T w = std::max(std::min(ix2, x2[j]) - std::max(ix1, x1[j]) + off, T(0));
      const T h = std::max(std::min(iy2, y2[j]) - std::max(iy1, y1[j]) + off, T(0));
      const T inter = w * h;
      bool hit = inter / (iarea + area[j] - inter) > thr;
      if (kWithLabels) hit = hit && cls[j] == icls;
      suppressed[j] |= static_cast<uint8_t>(hit);
    }
  }
  return keep.narrow(0, 0, num_kept);
}

template <bool kWithLabels>
at::Tensor nms_dispatch(const at::Tensor& dets, const at::Tensor& scores, const at::Tensor& labels,
                        double threshold, double offset) {
  check_nms_inputs(dets, scores, labels);
  if (dets.size(0) == 0) return at::empty({0}, dets.options().dtype(at::kLong));
  const at::Tensor boxes = nms_kernel_boxes(dets);
  const at::Tensor lab = kWithLabels ? labels.to(at::kLong).contiguous() : at::Tensor();
  at::Tensor keep;
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "nms_cpu", [&] {
    keep = greedy_nms<scalar_t, kWithLabels>(boxes, scores, lab, threshold, offset);
  });
  return keep;
}

at::Tensor nms_cpu(const at::Tensor& dets, const at::Tensor& scores, double threshold,
                   double offset) {
  return nms_dispatch<false>(dets, scores, at::Tensor(), threshold, offset);
}

at::Tensor ml_nms_cpu(const at::Tensor& dets, const at::Tensor& scores, const at::Tensor& labels,
                      double threshold, double offset) {
  return nms_dispatch<true>(dets, scores, labels, threshold, offset);
}

}  // namespace

TORCH_LIBRARY_IMPL(paa_core, CPU, m) {
  m.impl("nms", &nms_cpu);
  m.impl("ml_nms", &ml_nms_cpu);
}
