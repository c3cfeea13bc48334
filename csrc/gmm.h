// Batched EM fit of a two-component 1-D Gaussian mixture, one independent mixture per row.
//
// gmm2_fit(x [B, L] float64, mask [B, L] bool, tol, reg_covar, max_iter) fits the valid
// entries of each row step for step as sklearn.mixture.GaussianMixture(n_components=2,
// covariance_type="full") does from means (min, max) of the row, variances 1 and weights 0.5:
// every iteration is an E-step with the current parameters (its mean log-likelihood is the
// lower bound), then an M-step; the fit stops after the first iteration whose bound moved by
// less than tol, or after max_iter iterations.
// Returns (components [B, L] int64, log_likelihood [B, L], means [B, 2], variances [B, 2],
// weights [B, 2], n_iter [B] int64): components is the argmax of the weighted log
// probabilities (first index on ties, scikit-learn's predict), log_likelihood their logsumexp
// (score_samples). Padded entries get the same formulas applied to whatever x holds there,
// so they are meaningless. Every row needs at least 2 valid entries (checked: RuntimeError).
//
// A row is one sequential loop (PAA's rows hold ~100 entries at most), shared below by the
// CPU backend (rows in parallel) and the CUDA backend (one thread per row). Formulas and
// operation order follow the eager torch code this op replaced (log N through the precision
// Cholesky factor 1 / sqrt(var), responsibilities as a softmax, counts + 10 eps), which it
// matches to ~1e-13; CUDA may fuse multiply-adds, which changes the last bits only.
#pragma once
#include <ATen/ATen.h>
#include <cfloat>
#include <cmath>
#include <tuple>
#include "host_device.h"

// Raw views of one call's tensors. resp is scratch [B, L, 2] for the responsibilities.
struct Gmm2Rows {
  const double* x;
  const bool* mask;
  int64_t length;
  double tol, reg_covar;
  int64_t max_iter;
  double* resp;
  int64_t* components;
  double* log_likelihood;
  double* means;
  double* variances;
  double* weights;
  int64_t* n_iter;
};

// Per-component constants of log(w_k) + log N(x | mu_k, var_k), through the precision
// Cholesky factor 1 / sqrt(var) as scikit-learn computes it.
struct Gmm2Terms {
  double mean[2], prec[2], log_const[2];
  PAA_HOST_DEVICE Gmm2Terms(const double* means, const double* variances, const double* weights) {
    constexpr double kHalfLog2Pi = 0.9189385332046727;  // 0.5 * log(2 pi)
    for (int k = 0; k < 2; ++k) {
      mean[k] = means[k];
      prec[k] = 1.0 / std::sqrt(variances[k]);
      log_const[k] = std::log(weights[k] * prec[k]) - kHalfLog2Pi;
    }
  }
  // Weighted log probability of sample v under component k.
  PAA_HOST_DEVICE double weighted(double v, int k) const {
    const double y = (v - mean[k]) * prec[k];
    return log_const[k] - 0.5 * y * y;
  }
};

// log(exp(a) + exp(b)) through e = exp(min - max); also hands back e (the softmax needs it).
PAA_HOST_DEVICE inline double gmm2_logaddexp(double a, double b, double* e) {
  const double hi = a > b ? a : b;
  const double lo = a > b ? b : a;
  *e = std::exp(lo - hi);
  if (std::isinf(hi) && hi == lo) return hi;  // both -inf (or +inf): no inf - inf
  return std::log1p(*e) + hi;
}

// Fits row `row` of `a` and writes its outputs.
PAA_HOST_DEVICE inline void gmm2_fit_row(const Gmm2Rows& a, int64_t row) {
  const int64_t len = a.length;
  const double* x = a.x + row * len;
  const bool* mask = a.mask + row * len;
  double* resp = a.resp + row * len * 2;
  double* means = a.means + row * 2;
  double* variances = a.variances + row * 2;
  double* weights = a.weights + row * 2;

  double lo = INFINITY, hi = -INFINITY;
  int64_t count = 0;
  for (int64_t i = 0; i < len; ++i) {
    if (!mask[i]) continue;
    lo = x[i] < lo ? x[i] : lo;
    hi = x[i] > hi ? x[i] : hi;
    ++count;
  }
  means[0] = lo;
  means[1] = hi;
  for (int k = 0; k < 2; ++k) {
    variances[k] = 1.0;
    weights[k] = 0.5;
  }

  int64_t iter = 0;
  double bound = -INFINITY;
  while (iter < a.max_iter) {
    // E-step with the current parameters: responsibilities are the softmax of the weighted
    // log probabilities, the lower bound is the mean of their logsumexp.
    const Gmm2Terms terms(means, variances, weights);
    double sum_log_norm = 0.0, nk[2] = {0.0, 0.0}, sum_x[2] = {0.0, 0.0};
    for (int64_t i = 0; i < len; ++i) {
      if (!mask[i]) continue;
      const double w0 = terms.weighted(x[i], 0), w1 = terms.weighted(x[i], 1);
      double e;
      sum_log_norm += gmm2_logaddexp(w0, w1, &e);
      const double inv = 1.0 / (1.0 + e);
      resp[2 * i] = w0 >= w1 ? inv : e * inv;
      resp[2 * i + 1] = w0 >= w1 ? e * inv : inv;
      for (int k = 0; k < 2; ++k) {
        nk[k] += resp[2 * i + k];
        sum_x[k] += x[i] * resp[2 * i + k];
      }
    }
    // M-step (scikit-learn's _estimate_gaussian_parameters in 1-D); the 10 eps keep
    // every component non-empty.
    double sum_sq[2] = {0.0, 0.0};
    for (int k = 0; k < 2; ++k) {
      nk[k] += 10 * DBL_EPSILON;
      means[k] = sum_x[k] / nk[k];
    }
    for (int64_t i = 0; i < len; ++i) {
      if (!mask[i]) continue;
      for (int k = 0; k < 2; ++k) {
        const double diff = x[i] - means[k];
        sum_sq[k] += resp[2 * i + k] * diff * diff;
      }
    }
    for (int k = 0; k < 2; ++k) {
      variances[k] = sum_sq[k] / nk[k] + a.reg_covar;
      weights[k] = nk[k] / (nk[0] + nk[1]);
    }
    ++iter;
    const double previous = bound;
    bound = sum_log_norm / static_cast<double>(count);
    if (std::fabs(bound - previous) < a.tol) break;
  }
  a.n_iter[row] = iter;

  const Gmm2Terms terms(means, variances, weights);
  for (int64_t i = 0; i < len; ++i) {
    const double w0 = terms.weighted(x[i], 0), w1 = terms.weighted(x[i], 1);
    double e;
    a.log_likelihood[row * len + i] = gmm2_logaddexp(w0, w1, &e);
    a.components[row * len + i] = w1 > w0 ? 1 : 0;
  }
}

using Gmm2Outputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Argument checks of paa_core::gmm2_fit that need no data (the Meta kernel runs them too).
inline void check_gmm2_inputs(const at::Tensor& x, const at::Tensor& mask, int64_t max_iter) {
  TORCH_CHECK(x.dim() == 2, "gmm2_fit: x must be [B, L], got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kDouble, "gmm2_fit: x must be float64, got ", x.scalar_type());
  TORCH_CHECK(mask.sizes() == x.sizes(), "gmm2_fit: mask must have x's shape ", x.sizes(), ", got ",
              mask.sizes());
  TORCH_CHECK(mask.scalar_type() == at::kBool, "gmm2_fit: mask must be bool, got ", mask.scalar_type());
  TORCH_CHECK(mask.device() == x.device(), "gmm2_fit: mask is on ", mask.device(), ", x on ", x.device());
  TORCH_CHECK(max_iter >= 0, "gmm2_fit: max_iter must be >= 0, got ", max_iter);
}

// Uninitialised outputs for x [B, L].
inline Gmm2Outputs gmm2_empty_outputs(const at::Tensor& x) {
  const int64_t batch = x.size(0), length = x.size(1);
  const auto ints = x.options().dtype(at::kLong);
  return {at::empty({batch, length}, ints), at::empty({batch, length}, x.options()),
          at::empty({batch, 2}, x.options()), at::empty({batch, 2}, x.options()),
          at::empty({batch, 2}, x.options()), at::empty({batch}, ints)};
}

// Checks the arguments, allocates the outputs and fits every row with `fit_rows(rows, B)`,
// the CPU or CUDA backend.
template <typename FitRows>
Gmm2Outputs gmm2_fit_with(const at::Tensor& x, const at::Tensor& mask, double tol,
                          double reg_covar, int64_t max_iter, const FitRows& fit_rows) {
  check_gmm2_inputs(x, mask, max_iter);
  const at::Tensor xc = x.contiguous(), mc = mask.contiguous();
  const int64_t batch = x.size(0), length = x.size(1);
  TORCH_CHECK(batch == 0 || (length >= 2 && mc.sum(1).min().item<int64_t>() >= 2),
              "gmm2_fit: every row needs at least 2 valid samples (got a row with fewer)");
  Gmm2Outputs out = gmm2_empty_outputs(x);
  auto& [components, log_likelihood, means, variances, weights, n_iter] = out;
  at::Tensor resp = at::empty({batch, length, 2}, x.options());
  const Gmm2Rows rows{xc.data_ptr<double>(), mc.data_ptr<bool>(), length, tol, reg_covar, max_iter,
                      resp.data_ptr<double>(), components.data_ptr<int64_t>(),
                      log_likelihood.data_ptr<double>(), means.data_ptr<double>(),
                      variances.data_ptr<double>(), weights.data_ptr<double>(),
                      n_iter.data_ptr<int64_t>()};
  if (batch > 0) fit_rows(rows, batch);
  return out;
}
