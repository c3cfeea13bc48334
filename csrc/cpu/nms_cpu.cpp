// CPU greedy NMS. Boxes are copied once into processing order as separate coordinate
// arrays, so the inner loop reads memory sequentially and has no branches (the
// compiler vectorises it); only boxes that survive become the reference box. With labels
// the boxes of each label form one run, in score order within it, and each run is a
// separate greedy pass: a box only meets the boxes of its label (80 classes: about 80x
// fewer IoUs than one pass over all), and the survivors are the same.
#include "nms.h"
#include <torch/library.h>
#include <algorithm>
#include <vector>

namespace {

template <typename T>
struct OrderedBoxes {
  std::vector<T> x1, y1, x2, y2, area;

  OrderedBoxes(const T* d, const int64_t* order, int64_t n, T off)
      : x1(n), y1(n), x2(n), y2(n), area(n) {
    for (int64_t k = 0; k < n; ++k) {
      const T* b = d + 4 * order[k];
      x1[k] = b[0];
      y1[k] = b[1];
      x2[k] = b[2];
      y2[k] = b[3];
      area[k] = (b[2] - b[0] + off) * (b[3] - b[1] + off);
    }
  }
};

// One greedy pass over the boxes [begin, end) of `b`, in order: marks the suppressed ones.
template <typename T>
void greedy_run(const OrderedBoxes<T>& b, int64_t begin, int64_t end, T thr, T off,
                uint8_t* suppressed) {
  for (int64_t i = begin; i < end; ++i) {
    if (suppressed[i]) continue;
    const T ix1 = b.x1[i], iy1 = b.y1[i], ix2 = b.x2[i], iy2 = b.y2[i], iarea = b.area[i];
    for (int64_t j = i + 1; j < end; ++j) {
      const T w = std::max(std::min(ix2, b.x2[j]) - std::max(ix1, b.x1[j]) + off, T(0));
      const T h = std::max(std::min(iy2, b.y2[j]) - std::max(iy1, b.y1[j]) + off, T(0));
      const T inter = w * h;
      suppressed[j] |= static_cast<uint8_t>(inter / (iarea + b.area[j] - inter) > thr);
    }
  }
}

template <typename T, bool kWithLabels>
at::Tensor greedy_nms(const at::Tensor& dets, const at::Tensor& scores, const at::Tensor& labels,
                      double threshold, double offset) {
  const int64_t n = dets.size(0);
  const at::Tensor by_score = std::get<1>(scores.sort(/*stable=*/true, 0, /*descending=*/true));
  // rank[k]: the score rank of the k-th box processed; with labels, runs of one label.
  at::Tensor rank = at::arange(n, by_score.options());
  if (kWithLabels) {
    rank = std::get<1>(labels.index_select(0, by_score).sort(/*stable=*/true, 0, false));
  }
  const at::Tensor order = by_score.index_select(0, rank).contiguous();
  const int64_t* ord = order.data_ptr<int64_t>();
  const int64_t* rk = rank.data_ptr<int64_t>();
  const T off = static_cast<T>(offset);
  const OrderedBoxes<T> boxes(dets.data_ptr<T>(), ord, n, off);

  // The reference compares IoU and threshold in the box precision.
  const T thr = static_cast<T>(threshold);
  std::vector<uint8_t> suppressed(n, 0);
  const int64_t* lab = kWithLabels ? labels.data_ptr<int64_t>() : nullptr;
  for (int64_t begin = 0, end = 0; begin < n; begin = end) {
    end = kWithLabels ? begin + 1 : n;
    while (kWithLabels && end < n && lab[ord[end]] == lab[ord[begin]]) ++end;
    greedy_run(boxes, begin, end, thr, off, suppressed.data());
  }

  // The survivors by descending score.
  std::vector<uint8_t> kept_rank(n, 0);
  for (int64_t k = 0; k < n; ++k) kept_rank[rk[k]] = !suppressed[k];
  const int64_t* by = by_score.data_ptr<int64_t>();
  at::Tensor keep = at::empty({n}, dets.options().dtype(at::kLong));
  int64_t* kept = keep.data_ptr<int64_t>();
  int64_t num_kept = 0;
  for (int64_t r = 0; r < n; ++r) {
    if (kept_rank[r]) kept[num_kept++] = by[r];
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
