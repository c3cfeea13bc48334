// CUDA sigmoid focal loss: grid-stride element-wise kernels over [N, C] that use the
// per-element math shared with the CPU kernel (sigmoid_focal_loss.h).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>
#include <algorithm>
#include "sigmoid_focal_loss.h"

namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void focal_forward_kernel(int64_t numel, int64_t num_classes, const T* logits,
                                     const int64_t* targets, T gamma, T alpha, T* losses) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < numel;
       i += int64_t(blockDim.x) * gridDim.x) {
    losses[i] = focal_loss_value(logits[i], targets[i / num_classes], i % num_classes, gamma, alpha);
  }
}

template <typename T>
__global__ void focal_backward_kernel(int64_t numel, int64_t num_classes, const T* logits,
                                      const int64_t* targets, const T* d_losses, T gamma, T alpha,
                                      T* d_logits) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < numel;
       i += int64_t(blockDim.x) * gridDim.x) {
    d_logits[i] = d_losses[i] *
                  focal_loss_grad(logits[i], targets[i / num_classes], i % num_classes, gamma, alpha);
  }
}

int64_t num_blocks(int64_t numel) {
  return std::min<int64_t>((numel + kThreads - 1) / kThreads, 4096);
}

at::Tensor sigmoid_focal_loss_forward_cuda(const at::Tensor& logits, const at::Tensor& targets,
                                           double gamma, double alpha) {
  const at::Tensor labels = check_focal_inputs(logits, targets);
  const int64_t num_classes = logits.size(1);
  c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor x = logits.contiguous();
  at::Tensor losses = at::empty_like(x);
  if (x.numel() == 0) return losses;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sigmoid_focal_loss_forward_cuda", [&] {
    focal_forward_kernel<scalar_t><<<num_blocks(x.numel()), kThreads, 0, stream>>>(
        x.numel(), num_classes, x.data_ptr<scalar_t>(), labels.data_ptr<int64_t>(),
        static_cast<scalar_t>(gamma), static_cast<scalar_t>(alpha), losses.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return losses;
}

at::Tensor sigmoid_focal_loss_backward_cuda(const at::Tensor& logits, const at::Tensor& targets,
                                            const at::Tensor& d_losses, double gamma,
                                            double alpha) {
  const at::Tensor labels = check_focal_inputs(logits, targets);
  check_focal_grad(d_losses, logits);
  const int64_t num_classes = logits.size(1);
  c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor x = logits.contiguous();
  const at::Tensor dl = d_losses.to(x.scalar_type()).contiguous();
  at::Tensor d_logits = at::empty_like(x);
  if (x.numel() == 0) return d_logits;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sigmoid_focal_loss_backward_cuda", [&] {
    focal_backward_kernel<scalar_t><<<num_blocks(x.numel()), kThreads, 0, stream>>>(
        x.numel(), num_classes, x.data_ptr<scalar_t>(), labels.data_ptr<int64_t>(),
        dl.data_ptr<scalar_t>(), static_cast<scalar_t>(gamma), static_cast<scalar_t>(alpha),
        d_logits.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return d_logits;
}

}  // namespace

TORCH_LIBRARY_IMPL(paa_core, CUDA, m) {
  m.impl("sigmoid_focal_loss_forward", &sigmoid_focal_loss_forward_cuda);
  m.impl("sigmoid_focal_loss_backward", &sigmoid_focal_loss_backward_cuda);
}
