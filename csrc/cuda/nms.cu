// CUDA greedy NMS, the classic bitmask scheme: boxes are sorted by score, one thread
// per box marks in 64-bit words which later boxes it overlaps (> threshold, same label
// for ml_nms), and the sequential greedy pass over those words runs on the host.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>
#include <vector>
#include "nms.h"

namespace {

constexpr int kBoxesPerWord = 64;

// Round-to-nearest products so nvcc cannot fuse them into an FMA: the IoU must round
// exactly like the CPU kernel's.
__device__ inline float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ inline double mul_rn(double a, double b) { return __dmul_rn(a, b); }

template <typename T>
__device__ inline T min_of(T a, T b) { return b < a ? b : a; }
template <typename T>
__device__ inline T max_of(T a, T b) { return a < b ? b : a; }

template <typename T>
__device__ inline bool iou_above(const T* a, const T* b, T threshold, T off) {
  const T w = max_of(min_of(a[2], b[2]) - max_of(a[0], b[0]) + off, T(0));
  const T h = max_of(min_of(a[3], b[3]) - max_of(a[1], b[1]) + off, T(0));
  const T inter = mul_rn(w, h);
  const T area_a = mul_rn(a[2] - a[0] + off, a[3] - a[1] + off);
  const T area_b = mul_rn(b[2] - b[0] + off, b[3] - b[1] + off);
  return inter / (area_a + area_b - inter) > threshold;
}

// Grid (words, words): block (row, col) compares the 64 boxes of row block `row` with
// those of column block `col`; only col >= row is needed by the greedy pass.
template <typename T>
__global__ void nms_mask_kernel(int64_t n, const T* boxes, const int64_t* labels, T threshold,
                                T off, uint64_t* mask) {
  const int64_t row = blockIdx.y, col = blockIdx.x;
  if (col < row) return;
  const int row_size = static_cast<int>(min(n - row * kBoxesPerWord, int64_t(kBoxesPerWord)));
  const int col_size = static_cast<int>(min(n - col * kBoxesPerWord, int64_t(kBoxesPerWord)));

  __shared__ T col_boxes[kBoxesPerWord * 4];
  __shared__ int64_t col_labels[kBoxesPerWord];
  if (threadIdx.x < col_size) {
    const int64_t j = col * kBoxesPerWord + threadIdx.x;
    for (int c = 0; c < 4; ++c) col_boxes[threadIdx.x * 4 + c] = boxes[j * 4 + c];
    if (labels != nullptr) col_labels[threadIdx.x] = labels[j];
  }
  __syncthreads();
  if (threadIdx.x >= row_size) return;

  const int64_t i = row * kBoxesPerWord + threadIdx.x;
  const T* box = boxes + i * 4;
  uint64_t bits = 0;
  for (int k = (row == col) ? threadIdx.x + 1 : 0; k < col_size; ++k) {
    if (labels != nullptr && labels[i] != col_labels[k]) continue;
    if (iou_above(box, col_boxes + k * 4, threshold, off)) bits |= 1ULL << k;
  }
  mask[i * gridDim.x + col] = bits;
}

at::Tensor nms_cuda_impl(const at::Tensor& dets, const at::Tensor& scores, const at::Tensor& labels,
                         double threshold, double offset) {
  check_nms_inputs(dets, scores, labels);
  const int64_t n = dets.size(0);
  if (n == 0) return at::empty({0}, dets.options().dtype(at::kLong));
  TORCH_CHECK(n <= int64_t(65535) * kBoxesPerWord, "nms: too many boxes for one launch (", n, ")");
  c10::cuda::CUDAGuard guard(dets.device());

  const at::Tensor order = std::get<1>(scores.sort(/*stable=*/true, 0, /*descending=*/true));
  const at::Tensor boxes = nms_kernel_boxes(dets).index_select(0, order).contiguous();
  const at::Tensor sorted_labels =
      labels.defined() ? labels.to(at::kLong).index_select(0, order).contiguous() : at::Tensor();
  const int64_t words = (n + kBoxesPerWord - 1) / kBoxesPerWord;
  at::Tensor mask = at::empty({n, words}, dets.options().dtype(at::kLong));

  const dim3 grid(words, words);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "nms_cuda", [&] {
    nms_mask_kernel<scalar_t><<<grid, kBoxesPerWord, 0, stream>>>(
        n, boxes.data_ptr<scalar_t>(),
        sorted_labels.defined() ? sorted_labels.data_ptr<int64_t>() : nullptr,
        static_cast<scalar_t>(threshold), static_cast<scalar_t>(offset),
        reinterpret_cast<uint64_t*>(mask.data_ptr<int64_t>()));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  // Greedy pass: walk boxes in score order, keep one unless a kept box removed it.
  const at::Tensor mask_cpu = mask.cpu();
  const uint64_t* m = reinterpret_cast<const uint64_t*>(mask_cpu.data_ptr<int64_t>());
  std::vector<uint64_t> removed(words, 0);
  at::Tensor keep = at::empty({n}, at::TensorOptions().dtype(at::kLong));
  int64_t* kept = keep.data_ptr<int64_t>();
  int64_t num_kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t word = i / kBoxesPerWord;
    if (removed[word] & (1ULL << (i % kBoxesPerWord))) continue;
    kept[num_kept++] = i;
    const uint64_t* row = m + i * words;
    for (int64_t w = word; w < words; ++w) removed[w] |= row[w];
  }
  return order.index_select(0, keep.narrow(0, 0, num_kept).to(order.device()));
}

at::Tensor nms_cuda(const at::Tensor& dets, const at::Tensor& scores, double threshold,
                    double offset) {
  return nms_cuda_impl(dets, scores, at::Tensor(), threshold, offset);
}

at::Tensor ml_nms_cuda(const at::Tensor& dets, const at::Tensor& scores, const at::Tensor& labels,
                       double threshold, double offset) {
  return nms_cuda_impl(dets, scores, labels, threshold, offset);
}

}  // namespace

TORCH_LIBRARY_IMPL(paa_core, CUDA, m) {
  m.impl("nms", &nms_cuda);
  m.impl("ml_nms", &ml_nms_cuda);
}
