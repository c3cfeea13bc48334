// Sigmoid focal loss (Lin et al., RetinaNet) on per-class logits.
// logits [N, C]; targets [N] integer with 0 = background and 1..C = class, so logit
// column c belongs to label c + 1; rows with a negative target are ignored.
// Forward returns the per-element loss [N, C]; backward returns d_losses * dloss/dlogits.
// The per-element math below is shared by the CPU and CUDA kernels.
#pragma once
#include <ATen/ATen.h>
#include <cmath>
#include "host_device.h"

// Everything is written around e = exp(-|x|) and soft = log1p(e): they give sigmoid(x),
// 1 - sigmoid(x) and both logs without overflow or log(0) for large |x|. from_logit gets
// them from libm; the CPU float kernel passes in its own vectorisable approximations.
template <typename T>
struct FocalTerms {
  T p, q, log_p, log_q;  // sigmoid(x), 1 - sigmoid(x) and their logs
  PAA_HOST_DEVICE FocalTerms(T x, T e, T soft) {
    const T inv = T(1) / (T(1) + e);
    const T e_inv = e * inv;
    // Ternaries rather than fmin/fmax: they compile to branch-free selects in SIMD loops.
    p = x >= T(0) ? inv : e_inv;
    q = x >= T(0) ? e_inv : inv;
    log_p = (x < T(0) ? x : T(0)) - soft;
    log_q = -(x > T(0) ? x : T(0)) - soft;
  }
  PAA_HOST_DEVICE static FocalTerms from_logit(T x) {
    const T e = std::exp(-std::fabs(x));
    return FocalTerms(x, e, std::log1p(e));
  }
};

// base^gamma with a multiply for the usual gamma = 2 (std::pow is the slowest step).
template <typename T>
PAA_HOST_DEVICE inline T focal_pow(T base, T gamma) {
  return gamma == T(2) ? base * base : std::pow(base, gamma);
}

// The two per-element cases: `positive` for the labelled class, `negative` for every other
// column of a non-ignored row. `weight` is q^gamma (positive) or p^gamma (negative), passed
// in so that callers can specialise gamma = 2.
template <typename T>
PAA_HOST_DEVICE inline T focal_positive_loss(const FocalTerms<T>& t, T weight, T alpha) {
  return -alpha * weight * t.log_p;
}

template <typename T>
PAA_HOST_DEVICE inline T focal_negative_loss(const FocalTerms<T>& t, T weight, T alpha) {
  return -(T(1) - alpha) * weight * t.log_q;
}

// d loss / d x of the two cases.
template <typename T>
PAA_HOST_DEVICE inline T focal_positive_grad(const FocalTerms<T>& t, T weight, T gamma, T alpha) {
  return -alpha * weight * (t.q - gamma * t.p * t.log_p);
}

template <typename T>
PAA_HOST_DEVICE inline T focal_negative_grad(const FocalTerms<T>& t, T weight, T gamma, T alpha) {
  return -(T(1) - alpha) * weight * (gamma * t.q * t.log_q - t.p);
}

// Loss of logit column `c` for a row whose label is `target`.
template <typename T>
PAA_HOST_DEVICE inline T focal_loss_value(T x, int64_t target, int64_t c, T gamma, T alpha) {
  const FocalTerms<T> t = FocalTerms<T>::from_logit(x);
  if (target == c + 1) return focal_positive_loss(t, focal_pow(t.q, gamma), alpha);
  if (target >= 0) return focal_negative_loss(t, focal_pow(t.p, gamma), alpha);
  return T(0);
}

// d loss / d x for the same element.
template <typename T>
PAA_HOST_DEVICE inline T focal_loss_grad(T x, int64_t target, int64_t c, T gamma, T alpha) {
  const FocalTerms<T> t = FocalTerms<T>::from_logit(x);
  if (target == c + 1) return focal_positive_grad(t, focal_pow(t.q, gamma), gamma, alpha);
  if (target >= 0) return focal_negative_grad(t, focal_pow(t.p, gamma), gamma, alpha);
  return T(0);
}

// Checks shared by both backends of paa_core::sigmoid_focal_loss_forward/_backward; returns
// targets as contiguous int64. Lower-precision logits reach the kernels only outside autocast
// (its rule casts them to float32), so they are rejected here rather than silently widened.
inline at::Tensor check_focal_inputs(const at::Tensor& logits, const at::Tensor& targets) {
  TORCH_CHECK(logits.dim() == 2, "sigmoid_focal_loss: logits must be [N, C], got ", logits.sizes());
  TORCH_CHECK(logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kDouble,
              "sigmoid_focal_loss: logits must be float32 or float64, got ", logits.scalar_type());
  TORCH_CHECK(targets.dim() == 1 && targets.size(0) == logits.size(0),
              "sigmoid_focal_loss: targets must be [N] with N=", logits.size(0), ", got ",
              targets.sizes());
  TORCH_CHECK(at::isIntegralType(targets.scalar_type(), /*includeBool=*/false),
              "sigmoid_focal_loss: targets must be an integer tensor, got ", targets.scalar_type());
  TORCH_CHECK(targets.device() == logits.device(),
              "sigmoid_focal_loss: targets are on ", targets.device(), ", logits on ", logits.device());
  return targets.to(at::kLong).contiguous();
}

inline void check_focal_grad(const at::Tensor& d_losses, const at::Tensor& logits) {
  TORCH_CHECK(d_losses.sizes() == logits.sizes(), "sigmoid_focal_loss_backward: d_losses ",
              d_losses.sizes(), " do not match logits ", logits.sizes());
}
