// CUDA backend of gmm2_fit: one thread runs gmm.h's sequential per-row EM for one row.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>
#include <algorithm>
#include "gmm.h"

namespace {

constexpr int kThreads = 128;

__global__ void gmm2_fit_kernel(Gmm2Rows rows, int64_t num_rows) {
  for (int64_t row = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; row < num_rows;
       row += int64_t(blockDim.x) * gridDim.x) {
    gmm2_fit_row(rows, row);
  }
}

Gmm2Outputs gmm2_fit_cuda(const at::Tensor& x, const at::Tensor& mask, double tol,
                          double reg_covar, int64_t max_iter) {
  c10::cuda::CUDAGuard guard(x.device());
  return gmm2_fit_with(x, mask, tol, reg_covar, max_iter, [](const Gmm2Rows& rows, int64_t num_rows) {
    const int64_t blocks = std::min<int64_t>((num_rows + kThreads - 1) / kThreads, 65535);
    gmm2_fit_kernel<<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(rows, num_rows);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(paa_core, CUDA, m) { m.impl("gmm2_fit", &gmm2_fit_cuda); }
