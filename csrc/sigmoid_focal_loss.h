// Sigmoid focal loss (Lin et al., RetinaNet) on per-class logits.
// logits [N, C]; targets [N] integer with 0 = background and 1..C = class, so logit
// column c belongs to label c + 1; rows with a negative target are ignored.
// Forward returns the per-element loss [N, C]; backward returns d_losses * dloss/dlogits.
// The per-element math below is shared by the CPU and CUDA kernels.
#pragma once
#include <ATen/ATen.h>
#include <cmath>

#ifdef __CUDACC__
#define PAA_HOST_DEVICE __host__ __device__
#else
#define PAA_HOST_DEVICE
#endif

// Both log(sigmoid(x)) and log(1 - sigmoid(x)) are written around log1p(exp(-|x|)) so
// that nothing overflows or rounds to log(0) for large |x|.
template <typename T>
struct FocalTerms {
  T p, q, log_p, log_q;  // sigmoid(x), 1 - sigmoid(x) and their logs
  PAA_HOST_DEVICE explicit FocalTerms(T x) {
    const T soft = std::log1p(std::exp(-std::fabs(x)));
    log_p = std::fmin(x, T(0)) - soft;
    log_q = -std::fmax(x, T(0)) - soft;
    p = std::exp(log_p);
    q = std::exp(log_q);
  }
};

// Loss of logit column `c` for a row whose label is `target`.
template <typename T>
PAA_HOST_DEVICE inline T focal_loss_value(T x, int64_t target, int64_t c, T gamma, T alpha) {
  const FocalTerms<T> t(x);
  if (target == c + 1) return -alpha * std::pow(t.q, gamma) * t.log_p;
  if (target >= 0) return -(T(1) - alpha) * std::pow(t.p, gamma) * t.log_q;
  return T(0);
}

// d loss / d x for the same element.
template <typename T>
PAA_HOST_DEVICE inline T focal_loss_grad(T x, int64_t target, int64_t c, T gamma, T alpha) {
  const FocalTerms<T> t(x);
  if (target == c + 1) return -alpha * std::pow(t.q, gamma) * (t.q - gamma * t.p * t.log_p);
  if (target >= 0) return -(T(1) - alpha) * std::pow(t.p, gamma) * (gamma * t.q * t.log_q - t.p);
  return T(0);
}

// Shape checks shared by both backends; returns targets as contiguous int64.
inline at::Tensor check_focal_inputs(const at::Tensor& logits, const at::Tensor& targets,
                                     int64_t num_classes) {
  TORCH_CHECK(logits.dim() == 2, "sigmoid_focalloss: logits must be [N, C], got ", logits.sizes());
  TORCH_CHECK(logits.size(1) == num_classes, "sigmoid_focalloss: logits have ", logits.size(1),
              " columns but num_classes=", num_classes);
  TORCH_CHECK(targets.dim() == 1 && targets.size(0) == logits.size(0),
              "sigmoid_focalloss: targets must be [N] with N=", logits.size(0), ", got ",
              targets.sizes());
  TORCH_CHECK(!at::isFloatingType(targets.scalar_type()),
              "sigmoid_focalloss: targets must be an integer tensor, got ", targets.scalar_type());
  TORCH_CHECK(targets.device() == logits.device(),
              "sigmoid_focalloss: targets are on ", targets.device(), ", logits on ", logits.device());
  return targets.to(at::kLong).contiguous();
}

at::Tensor sigmoid_focalloss_forward_cpu(const at::Tensor& logits, const at::Tensor& targets,
                                         int64_t num_classes, double gamma, double alpha);
at::Tensor sigmoid_focalloss_backward_cpu(const at::Tensor& logits, const at::Tensor& targets,
                                          const at::Tensor& d_losses, int64_t num_classes,
                                          double gamma, double alpha);
#ifdef WITH_CUDA
at::Tensor sigmoid_focalloss_forward_cuda(const at::Tensor& logits, const at::Tensor& targets,
                                          int64_t num_classes, double gamma, double alpha);
at::Tensor sigmoid_focalloss_backward_cuda(const at::Tensor& logits, const at::Tensor& targets,
                                           const at::Tensor& d_losses, int64_t num_classes,
                                           double gamma, double alpha);
#endif

inline at::Tensor sigmoid_focalloss_forward(const at::Tensor& logits, const at::Tensor& targets,
                                            int64_t num_classes, double gamma, double alpha) {
  if (logits.is_cuda()) {
#ifdef WITH_CUDA
    return sigmoid_focalloss_forward_cuda(logits, targets, num_classes, gamma, alpha);
#else
    TORCH_CHECK(false, "sigmoid_focalloss_forward: paa_core._C was built without CUDA support");
#endif
  }
  return sigmoid_focalloss_forward_cpu(logits, targets, num_classes, gamma, alpha);
}

inline at::Tensor sigmoid_focalloss_backward(const at::Tensor& logits, const at::Tensor& targets,
                                             const at::Tensor& d_losses, int64_t num_classes,
                                             double gamma, double alpha) {
  if (logits.is_cuda()) {
#ifdef WITH_CUDA
    return sigmoid_focalloss_backward_cuda(logits, targets, d_losses, num_classes, gamma, alpha);
#else
    TORCH_CHECK(false, "sigmoid_focalloss_backward: paa_core._C was built without CUDA support");
#endif
  }
  return sigmoid_focalloss_backward_cpu(logits, targets, d_losses, num_classes, gamma, alpha);
}
