// CUDA greedy NMS, the classic bitmask scheme: boxes are sorted by score, one thread per
// box marks in 64-bit words which later boxes it overlaps (> threshold, same label for
// ml_nms), then one thread block walks those words in score order and writes the kept
// indices. Everything stays on the device; only the number of kept boxes is read back.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>
#include <algorithm>
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

// The greedy pass, in one block. Box i (in score order) is bit i % 64 of word i / 64;
// `removed` holds the boxes suppressed by the boxes kept so far. Word by word:
//  1. one thread settles the word's 64 boxes in order: a box not yet removed is kept and
//     removes the later boxes of this word it overlaps (`diagonal`, its mask row's own
//     word, holds only bits above its own);
//  2. all threads write the kept boxes' original indices, OR the kept rows into the later
//     words of `removed` (each word by one thread) and load the next word's diagonal.
// Mask words left of the diagonal are never written by the mask kernel and never read
// here. Shared memory: the diagonal (64 words), the kept bits (1) and `removed` (words).
__global__ void nms_greedy_kernel(int64_t n, int64_t words, const uint64_t* mask,
                                  const int64_t* order, int64_t* keep, int64_t* num_kept) {
  extern __shared__ uint64_t shared[];
  uint64_t* diagonal = shared;
  uint64_t* kept_bits = shared + kBoxesPerWord;
  uint64_t* removed = shared + kBoxesPerWord + 1;

  for (int64_t w = threadIdx.x; w < words; w += blockDim.x) removed[w] = 0;
  for (int t = threadIdx.x; t < min(n, int64_t(kBoxesPerWord)); t += blockDim.x) {
    diagonal[t] = mask[t * words];
  }
  __syncthreads();

  int64_t count = 0;  // boxes kept before word b; every thread tracks it
  for (int64_t b = 0; b < words; ++b) {
    const int64_t first = b * kBoxesPerWord;
    const int size = static_cast<int>(min(n - first, int64_t(kBoxesPerWord)));
    if (threadIdx.x == 0) {
      const uint64_t valid = size == kBoxesPerWord ? ~0ULL : (1ULL << size) - 1;
      uint64_t candidates = ~removed[b] & valid;
      uint64_t kept = 0;
      // The lowest candidate is final: only kept boxes before it could still remove it.
      while (candidates != 0) {
        const int k = __ffsll(static_cast<long long>(candidates)) - 1;
        kept |= 1ULL << k;
        candidates &= ~(diagonal[k] | (1ULL << k));
      }
      *kept_bits = kept;
    }
    __syncthreads();

    const uint64_t kept = *kept_bits;
    for (int t = threadIdx.x; t < size; t += blockDim.x) {
      if (kept & (1ULL << t)) {
        keep[count + __popcll(kept & ((1ULL << t) - 1))] = order[first + t];
      }
    }
    count += __popcll(kept);
    for (int64_t w = b + 1 + threadIdx.x; w < words; w += blockDim.x) {
      const uint64_t* rows = mask + first * words + w;  // word w of the mask rows of word b
      uint64_t bits = removed[w];
#pragma unroll
      for (int k = 0; k < kBoxesPerWord; ++k) {
        if (kept & (1ULL << k)) bits |= rows[k * words];
      }
      removed[w] = bits;
    }
    const int64_t next = first + kBoxesPerWord;  // the next word's first box
    for (int t = threadIdx.x; t < min(n - next, int64_t(kBoxesPerWord)); t += blockDim.x) {
      diagonal[t] = mask[(next + t) * words + b + 1];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) *num_kept = count;
}

at::Tensor nms_cuda_impl(const at::Tensor& dets, const at::Tensor& scores, const at::Tensor& labels,
                         double threshold, double offset) {
  check_nms_inputs(dets, scores, labels);
  const int64_t n = dets.size(0);
  if (n == 0) return at::empty({0}, dets.options().dtype(at::kLong));
  TORCH_CHECK(n <= int64_t(65535) * kBoxesPerWord, "nms: too many boxes for one launch (", n, ")");
  c10::cuda::CUDAGuard guard(dets.device());
  const int64_t words = (n + kBoxesPerWord - 1) / kBoxesPerWord;
  const int64_t shared_bytes = (kBoxesPerWord + 1 + words) * int64_t(sizeof(uint64_t));
  int default_bytes = 0, max_bytes = 0;  // per block: without and with opting in
  const int device = static_cast<int>(dets.get_device());
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&default_bytes, cudaDevAttrMaxSharedMemoryPerBlock, device));
  C10_CUDA_CHECK(
      cudaDeviceGetAttribute(&max_bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  TORCH_CHECK(shared_bytes <= max_bytes, "nms: ", n, " boxes need ", shared_bytes,
              " bytes of shared memory, the device has ", max_bytes, " per block");

  const at::Tensor order = std::get<1>(scores.sort(/*stable=*/true, 0, /*descending=*/true));
  const at::Tensor boxes = nms_kernel_boxes(dets).index_select(0, order).contiguous();
  const at::Tensor sorted_labels =
      labels.defined() ? labels.to(at::kLong).index_select(0, order).contiguous() : at::Tensor();
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

  at::Tensor keep = at::empty({n}, order.options());
  at::Tensor num_kept = at::empty({1}, order.options());
  if (shared_bytes > default_bytes) {  // beyond the default a kernel must opt in
    C10_CUDA_CHECK(cudaFuncSetAttribute(nms_greedy_kernel,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(shared_bytes)));
  }
  // One thread per word of `removed` up to 1024; the loops stride, so any size is correct.
  const int threads = static_cast<int>(std::min<int64_t>(1024, std::max<int64_t>(64, words)));
  nms_greedy_kernel<<<1, threads, shared_bytes, stream>>>(
      n, words, reinterpret_cast<const uint64_t*>(mask.data_ptr<int64_t>()),
      order.data_ptr<int64_t>(), keep.data_ptr<int64_t>(), num_kept.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return keep.narrow(0, 0, num_kept.item<int64_t>());
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
