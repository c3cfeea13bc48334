// CPU backend of gmm2_fit: the rows of gmm.h's sequential per-row EM, spread over threads.
#include "gmm.h"
#include <ATen/Parallel.h>
#include <torch/library.h>

namespace {

Gmm2Outputs gmm2_fit_cpu(const at::Tensor& x, const at::Tensor& mask, double tol,
                         double reg_covar, int64_t max_iter) {
  return gmm2_fit_with(x, mask, tol, reg_covar, max_iter, [](const Gmm2Rows& rows, int64_t num_rows) {
    // One row is already tens of microseconds of EM, so any two rows are worth a thread.
    at::parallel_for(0, num_rows, 1, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) gmm2_fit_row(rows, row);
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(paa_core, CPU, m) { m.impl("gmm2_fit", &gmm2_fit_cpu); }
