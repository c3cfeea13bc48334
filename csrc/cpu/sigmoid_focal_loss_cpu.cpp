// CPU sigmoid focal loss. Each row is done in two steps: the background (negative) term for
// all C columns in a branch-free loop that the compiler vectorises, then the labelled column
// is overwritten with the positive term; ignored rows are zero-filled.
// float logits are computed in double with polynomial exp/log1p below: glibc's scalar
// expf/log1pf calls would stop the vectoriser, and double keeps the polynomials short while
// their ~1e-10 error stays far below float rounding. double logits use std::exp/std::log1p.
#include "sigmoid_focal_loss.h"
#include "cpu/simd.h"
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <ATen/Version.h>
#include <algorithm>
#include <cstdint>
#include <cstring>

namespace {

constexpr double kLn2 = 0x1.62e42fefa39efp-1;

// Caps for exp_neg. At 104, exp(-a) is below half the smallest float denormal, so capping
// e = exp(-|x|) there changes no float result and keeps double intermediates from turning
// denormal (slow on x86). 708 keeps exp(-a) a normal double.
constexpr double kFloatExpCap = 104.0;
constexpr double kDoubleExpCap = 708.0;

// exp(-min(a, cap)) for a >= 0 (NaN stays NaN) and cap <= 708, relative error < 3e-10.
inline double exp_neg(double a, double cap) {
  constexpr double kShift = 0x1.8p52;  // x + kShift rounds x (|x| < 2^51) to an integer
  constexpr double kLog2e = 0x1.71547652b82fep0;
  a = a > cap ? cap : a;
  const double shifted = -a * kLog2e + kShift;  // low mantissa bits now hold k = round(-a / ln2)
  const double k = shifted - kShift;
  const double r = -a - k * kLn2;  // exp(-a) = 2^k exp(r), |r| <= ln2 / 2
  double poly = 1.0 / 40320;       // Taylor series of exp(r) up to r^8
  poly = poly * r + 1.0 / 5040;
  poly = poly * r + 1.0 / 720;
  poly = poly * r + 1.0 / 120;
  poly = poly * r + 1.0 / 24;
  poly = poly * r + 1.0 / 6;
  poly = poly * r + 0.5;
  poly = poly * r + 1.0;
  poly = poly * r + 1.0;
  uint64_t bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  bits = (bits + 1023) << 52;  // the biased exponent field of 2^k
  double scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return poly * scale;
}

// log1p(e) for e in [0, 1], relative error < 1e-10. With 1 + e = 2^j (1 + f), j in {0, 1},
// |f| <= sqrt(2) - 1, and log1p(f) = 2 atanh(s) with s = f / (2 + f), |s| <= 0.172.
inline double log1p_unit(double e) {
  constexpr double kSqrt2Minus1 = 0x1.a827999fcef32p-2;
  const bool halve = e > kSqrt2Minus1;
  const double f = halve ? 0.5 * (e - 1.0) : e;
  const double s = f / (2.0 + f);
  const double s2 = s * s;
  double poly = 1.0 / 11;  // atanh(s) / s - 1 = s^2 / 3 + s^4 / 5 + ... (odd Taylor terms)
  poly = poly * s2 + 1.0 / 9;
  poly = poly * s2 + 1.0 / 7;
  poly = poly * s2 + 1.0 / 5;
  poly = poly * s2 + 1.0 / 3;
  return (halve ? kLn2 : 0.0) + (2.0 * s + 2.0 * s * s2 * poly);
}

// e = exp(-|x|), log1p(e) and base^gamma per input type (see the file comment).
template <typename scalar_t>
struct FocalMath;

template <>
struct FocalMath<float> {
  static FocalTerms<double> terms(double x) {
    const double e = exp_neg(std::fabs(x), kFloatExpCap);
    return FocalTerms<double>(x, e, log1p_unit(e));
  }
  // exp(gamma log(base)) from the log the terms already hold, so it vectorises.
  static double pow(double /*base*/, double log_base, double gamma) {
    return exp_neg(-gamma * log_base, kDoubleExpCap);
  }
};

template <>
struct FocalMath<double> {
  static FocalTerms<double> terms(double x) { return FocalTerms<double>::from_logit(x); }
  static double pow(double base, double /*log_base*/, double gamma) { return std::pow(base, gamma); }
};

// What one pass over the rows reads and writes; d_losses is null for the forward pass.
template <typename scalar_t>
struct RowArgs {
  const scalar_t* logits;
  const int64_t* targets;
  const scalar_t* d_losses;
  scalar_t* out;
  int64_t num_classes;
  double gamma, alpha;
};

// Loss (forward) or d_loss * gradient (backward) of rows [begin, end). kGammaTwo (the usual
// gamma = 2) squares instead of calling pow. Always inlined so that each dispatch wrapper
// below compiles its own copy for its instruction set.
template <typename scalar_t, bool kGammaTwo, bool kBackward>
__attribute__((always_inline)) inline void focal_rows(const RowArgs<scalar_t>& a, int64_t begin,
                                                      int64_t end) {
  using Math = FocalMath<scalar_t>;
  const int64_t num_classes = a.num_classes;
  const double gamma = a.gamma, alpha = a.alpha;
  auto weight = [gamma](double base, double log_base) {
    return kGammaTwo ? base * base : Math::pow(base, log_base, gamma);
  };
  for (int64_t r = begin; r < end; ++r) {
    const int64_t t = a.targets[r];
    const int64_t offset = r * num_classes;
    const scalar_t* x = a.logits + offset;
    const scalar_t* d = kBackward ? a.d_losses + offset : nullptr;
    scalar_t* o = a.out + offset;
    if (t < 0) {
      std::fill(o, o + num_classes, scalar_t(0));
      continue;
    }
    for (int64_t c = 0; c < num_classes; ++c) {
      const FocalTerms<double> ft = Math::terms(x[c]);
      const double w = weight(ft.p, ft.log_p);
      o[c] = static_cast<scalar_t>(kBackward ? d[c] * focal_negative_grad(ft, w, gamma, alpha)
                                             : focal_negative_loss(ft, w, alpha));
    }
    if (t >= 1 && t <= num_classes) {  // labels 0 and above C leave the row all background
      const int64_t c = t - 1;
      const FocalTerms<double> ft = Math::terms(x[c]);
      const double w = weight(ft.q, ft.log_q);
      o[c] = static_cast<scalar_t>(kBackward ? d[c] * focal_positive_grad(ft, w, gamma, alpha)
                                             : focal_positive_loss(ft, w, alpha));
    }
  }
}

#ifdef PAA_X86_SIMD
// The same rows compiled for AVX2 + FMA (4 doubles per vector instead of 2), used where
// simd_level() allows (cpu/simd.h).
template <typename scalar_t, bool kGammaTwo, bool kBackward>
PAA_TARGET_AVX2 void focal_rows_avx2(const RowArgs<scalar_t>& a, int64_t begin, int64_t end) {
  focal_rows<scalar_t, kGammaTwo, kBackward>(a, begin, end);
}
#endif

template <typename scalar_t, bool kGammaTwo, bool kBackward>
void focal_rows_dispatch(const RowArgs<scalar_t>& a, int64_t begin, int64_t end) {
#ifdef PAA_X86_SIMD
  if (simd_level() != SimdLevel::kBase) {
    return focal_rows_avx2<scalar_t, kGammaTwo, kBackward>(a, begin, end);
  }
#endif
  focal_rows<scalar_t, kGammaTwo, kBackward>(a, begin, end);
}

// Rows per parallel chunk: about 4k elements, so small inputs stay on one thread.
int64_t row_grain(int64_t num_classes) {
  return std::max<int64_t>(1, 4096 / std::max<int64_t>(1, num_classes));
}

template <bool kBackward>
void run_focal_rows(const at::Tensor& x, const at::Tensor& labels, const at::Tensor* d_losses,
                    at::Tensor& out, double gamma, double alpha) {
  const int64_t num_classes = x.size(1);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sigmoid_focal_loss_cpu", [&] {
    const RowArgs<scalar_t> a{x.data_ptr<scalar_t>(), labels.data_ptr<int64_t>(),
                              kBackward ? d_losses->data_ptr<scalar_t>() : nullptr,
                              out.data_ptr<scalar_t>(), num_classes, gamma, alpha};
    at::parallel_for(0, x.size(0), row_grain(num_classes), [&](int64_t begin, int64_t end) {
      if (gamma == 2.0) {
        focal_rows_dispatch<scalar_t, true, kBackward>(a, begin, end);
      } else {
        focal_rows_dispatch<scalar_t, false, kBackward>(a, begin, end);
      }
    });
  });
}

at::Tensor sigmoid_focal_loss_forward_cpu(const at::Tensor& logits, const at::Tensor& targets,
                                          double gamma, double alpha) {
  const at::Tensor labels = check_focal_inputs(logits, targets);
  const at::Tensor x = logits.contiguous();
  at::Tensor losses = at::empty_like(x);
  run_focal_rows<false>(x, labels, nullptr, losses, gamma, alpha);
  return losses;
}

at::Tensor sigmoid_focal_loss_backward_cpu(const at::Tensor& logits, const at::Tensor& targets,
                                           const at::Tensor& d_losses, double gamma,
                                           double alpha) {
  const at::Tensor labels = check_focal_inputs(logits, targets);
  check_focal_grad(d_losses, logits);
  const at::Tensor x = logits.contiguous();
  const at::Tensor dl = d_losses.to(x.scalar_type()).contiguous();
  at::Tensor d_logits = at::empty_like(x);
  run_focal_rows<true>(x, labels, &dl, d_logits, gamma, alpha);
  return d_logits;
}

}  // namespace

TORCH_LIBRARY_IMPL(paa_core, CPU, m) {
  m.impl("sigmoid_focal_loss_forward", &sigmoid_focal_loss_forward_cpu);
  m.impl("sigmoid_focal_loss_backward", &sigmoid_focal_loss_backward_cpu);
}
