// CPU sigmoid focal loss: an element-wise map over [N, C] using the shared math.
#include "sigmoid_focal_loss.h"
#include <ATen/Parallel.h>

at::Tensor sigmoid_focalloss_forward_cpu(const at::Tensor& logits, const at::Tensor& targets,
                                         int64_t num_classes, double gamma, double alpha) {
  const at::Tensor labels = check_focal_inputs(logits, targets, num_classes);
  const at::Tensor x = logits.contiguous();
  at::Tensor losses = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sigmoid_focalloss_forward_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const int64_t* tp = labels.data_ptr<int64_t>();
    scalar_t* out = losses.data_ptr<scalar_t>();
    const auto g = static_cast<scalar_t>(gamma), a = static_cast<scalar_t>(alpha);
    at::parallel_for(0, x.numel(), 2048, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        out[i] = focal_loss_value(xp[i], tp[i / num_classes], i % num_classes, g, a);
      }
    });
  });
  return losses;
}

at::Tensor sigmoid_focalloss_backward_cpu(const at::Tensor& logits, const at::Tensor& targets,
                                          const at::Tensor& d_losses, int64_t num_classes,
                                          double gamma, double alpha) {
  const at::Tensor labels = check_focal_inputs(logits, targets, num_classes);
  TORCH_CHECK(d_losses.sizes() == logits.sizes(), "sigmoid_focalloss_backward: d_losses ",
              d_losses.sizes(), " do not match logits ", logits.sizes());
  const at::Tensor x = logits.contiguous();
  const at::Tensor dl = d_losses.to(x.scalar_type()).contiguous();
  at::Tensor d_logits = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sigmoid_focalloss_backward_cpu", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* dp = dl.data_ptr<scalar_t>();
    const int64_t* tp = labels.data_ptr<int64_t>();
    scalar_t* out = d_logits.data_ptr<scalar_t>();
    const auto g = static_cast<scalar_t>(gamma), a = static_cast<scalar_t>(alpha);
    at::parallel_for(0, x.numel(), 2048, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        out[i] = dp[i] * focal_loss_grad(xp[i], tp[i / num_classes], i % num_classes, g, a);
      }
    });
  });
  return d_logits;
}
