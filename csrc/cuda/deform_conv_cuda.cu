// CUDA (modulated) deformable convolution: the CPU algorithm with one thread per
// column entry (im2col, col2im with atomicAdd) or per (deformable group, tap, position)
// (col2im-coord), and one GEMM per group through ATen.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

#include "deform_conv.h"
#include <torch/library.h>

namespace {

// Columns buffer budget (elements) per chunk of output positions.
constexpr int64_t kColumnsBudget = int64_t(1) << 24;
constexpr int kThreads = 256;

struct Geometry {
  int64_t channels, height, width, kh, kw, out_h, out_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, dgroups;
  __host__ __device__ int64_t taps() const { return kh * kw; }
  __host__ __device__ int64_t plane() const { return height * width; }
  __host__ __device__ int64_t out_plane() const { return out_h * out_w; }
  __host__ __device__ int64_t group_channels() const { return channels / dgroups; }
};

int blocks_for(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(1) << 30));
}

#define GRID_STRIDE_LOOP(i, n)                                                         \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n);            \
       i += int64_t(blockDim.x) * gridDim.x)

// Sampling position of tap k of deformable group d at output position q.
template <typename scalar_t>
__device__ void sample_position(const Geometry& g, const scalar_t* offset, int64_t d, int64_t k,
                                int64_t q, scalar_t& y, scalar_t& x) {
  const int64_t oy = q / g.out_w, ox = q % g.out_w;
  const scalar_t* off = offset + (d * 2 * g.taps() + 2 * k) * g.out_plane() + q;
  y = oy * g.stride_h - g.pad_h + (k / g.kw) * g.dil_h + off[0];
  x = ox * g.stride_w - g.pad_w + (k % g.kw) * g.dil_w + off[g.out_plane()];
}

// The four bilinear corners (zero outside the image) and the fractional position.
template <typename scalar_t>
struct Corners {
  scalar_t v00, v01, v10, v11, ly, lx;
  int64_t y0, x0;
  bool inside;

  __device__ Corners(const scalar_t* plane, const Geometry& g, scalar_t y, scalar_t x)
      : v00(0), v01(0), v10(0), v11(0), ly(0), lx(0), y0(0), x0(0) {
    inside = y > -1 && y < g.height && x > -1 && x < g.width;
    if (!inside) return;
    y0 = static_cast<int64_t>(floor(y));
    x0 = static_cast<int64_t>(floor(x));
    ly = y - y0;
    lx = x - x0;
    if (plane == nullptr) return;
    const bool top = y0 >= 0, bottom = y0 + 1 < g.height, left = x0 >= 0, right = x0 + 1 < g.width;
    const scalar_t* p = plane + y0 * g.width + x0;
    if (top && left) v00 = p[0];
    if (top && right) v01 = p[1];
    if (bottom && left) v10 = p[g.width];
    if (bottom && right) v11 = p[g.width + 1];
  }

  __device__ scalar_t value() const {
    const scalar_t top = v00 + lx * (v01 - v00), bot = v10 + lx * (v11 - v10);
    return top + ly * (bot - top);
  }
};

// columns [C*K, count] = mask * bilinear(input[c]) for positions [first, first+count).
template <typename scalar_t>
__global__ void im2col_kernel(Geometry g, const scalar_t* input, const scalar_t* offset,
                              const scalar_t* mask, int64_t first, int64_t count,
                              scalar_t* columns) {
  const int64_t taps = g.taps();
  GRID_STRIDE_LOOP(i, g.channels * taps * count) {
    const int64_t p = i % count, ck = i / count, k = ck % taps, c = ck / taps;
    const int64_t d = c / g.group_channels(), q = first + p;
    scalar_t y, x;
    sample_position(g, offset, d, k, q, y, x);
    const Corners<scalar_t> s(input + c * g.plane(), g, y, x);
    const scalar_t m = mask ? mask[(d * taps + k) * g.out_plane() + q] : scalar_t(1);
    columns[i] = m * s.value();
  }
}

// grad_input[c] += transposed bilinear sampling of mask * grad_columns.
template <typename scalar_t>
__global__ void col2im_kernel(Geometry g, const scalar_t* grad_columns, const scalar_t* offset,
                              const scalar_t* mask, int64_t first, int64_t count,
                              scalar_t* grad_input) {
  const int64_t taps = g.taps();
  GRID_STRIDE_LOOP(i, g.channels * taps * count) {
    const int64_t p = i % count, ck = i / count, k = ck % taps, c = ck / taps;
    const int64_t d = c / g.group_channels(), q = first + p;
    scalar_t y, x;
    sample_position(g, offset, d, k, q, y, x);
    const Corners<scalar_t> s(nullptr, g, y, x);
    if (!s.inside) continue;
    const scalar_t m = mask ? mask[(d * taps + k) * g.out_plane() + q] : scalar_t(1);
    const scalar_t grad = m * grad_columns[i];
    scalar_t* plane = grad_input + c * g.plane();
    const bool top = s.y0 >= 0, bottom = s.y0 + 1 < g.height;
    const bool left = s.x0 >= 0, right = s.x0 + 1 < g.width;
    const int64_t base = s.y0 * g.width + s.x0;
    if (top && left) atomicAdd(plane + base, grad * (1 - s.ly) * (1 - s.lx));
    if (top && right) atomicAdd(plane + base + 1, grad * (1 - s.ly) * s.lx);
    if (bottom && left) atomicAdd(plane + base + g.width, grad * s.ly * (1 - s.lx));
    if (bottom && right) atomicAdd(plane + base + g.width + 1, grad * s.ly * s.lx);
  }
}

// grad offset (and grad mask when non-null) at positions [first, first+count): one
// thread per (deformable group, tap, position) sums over the group's channels.
template <typename scalar_t>
__global__ void col2im_coord_kernel(Geometry g, const scalar_t* input,
                                    const scalar_t* grad_columns, const scalar_t* offset,
                                    const scalar_t* mask, int64_t first, int64_t count,
                                    scalar_t* grad_offset, scalar_t* grad_mask) {
  const int64_t taps = g.taps(), cg = g.group_channels(), out_plane = g.out_plane();
  GRID_STRIDE_LOOP(i, g.dgroups * taps * count) {
    const int64_t p = i % count, dk = i / count, k = dk % taps, d = dk / taps, q = first + p;
    scalar_t y, x;
    sample_position(g, offset, d, k, q, y, x);
    scalar_t gy = 0, gx = 0, gm = 0;
    for (int64_t c = d * cg; c < (d + 1) * cg; ++c) {
      const Corners<scalar_t> s(input + c * g.plane(), g, y, x);
      const scalar_t grad = grad_columns[(c * taps + k) * count + p];
      const scalar_t top = s.v00 + s.lx * (s.v01 - s.v00), bot = s.v10 + s.lx * (s.v11 - s.v10);
      gm += grad * (top + s.ly * (bot - top));
      gy += grad * (bot - top);
      gx += grad * ((s.v01 - s.v00) + s.ly * ((s.v11 - s.v10) - (s.v01 - s.v00)));
    }
    const scalar_t m = mask ? mask[dk * out_plane + q] : scalar_t(1);
    grad_offset[(d * 2 * taps + 2 * k) * out_plane + q] = m * gy;
    grad_offset[(d * 2 * taps + 2 * k + 1) * out_plane + q] = m * gx;
    if (grad_mask) grad_mask[dk * out_plane + q] = gm;
  }
}

Geometry make_geometry(const at::Tensor& input, const at::Tensor& weight, int64_t stride_h,
                       int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                       int64_t dil_w, int64_t dgroups) {
  Geometry g{input.size(1), input.size(2), input.size(3), weight.size(2), weight.size(3), 0, 0,
             stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, dgroups};
  g.out_h = (g.height + 2 * pad_h - dil_h * (g.kh - 1) - 1) / stride_h + 1;
  g.out_w = (g.width + 2 * pad_w - dil_w * (g.kw - 1) - 1) / stride_w + 1;
  return g;
}

int64_t chunk_size(const Geometry& g) {
  return std::min(g.out_plane(), std::max<int64_t>(1, kColumnsBudget / (g.channels * g.taps())));
}

template <typename scalar_t>
const scalar_t* data_or_null(const at::Tensor& t, int64_t n) {
  return t.defined() ? t[n].data_ptr<scalar_t>() : nullptr;
}

}  // namespace

at::Tensor deform_conv_forward_cuda(const at::Tensor& input_, const at::Tensor& weight_,
                                    const at::Tensor& offset_, const std::optional<at::Tensor>& mask_,
                                    const std::optional<at::Tensor>& bias, int64_t stride_h,
                                    int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                                    int64_t dil_w, int64_t groups, int64_t deformable_groups) {
  check_deform_conv_inputs(input_, weight_, offset_, mask_, bias, stride_h, stride_w, pad_h, pad_w,
                           dil_h, dil_w, groups, deformable_groups);
  const c10::cuda::CUDAGuard device_guard(input_.device());
  const Geometry g = make_geometry(input_, weight_, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                                   deformable_groups);
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous();
  const at::Tensor mask = mask_.has_value() ? mask_->contiguous() : at::Tensor();
  const int64_t batch = input.size(0), out_channels = weight_.size(0);
  const int64_t rows_per_group = g.channels / groups * g.taps();
  const at::Tensor weight = weight_.reshape({groups, out_channels / groups, rows_per_group});
  at::Tensor output = at::empty({batch, out_channels, g.out_h, g.out_w}, input.options());
  const int64_t chunk = chunk_size(g);
  at::Tensor columns = at::empty({g.channels * g.taps() * chunk}, input.options());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv_forward_cuda", [&] {
    for (int64_t n = 0; n < batch; ++n) {
      const at::Tensor out_n = output[n].view({groups, out_channels / groups, g.out_plane()});
      for (int64_t first = 0; first < g.out_plane(); first += chunk) {
        const int64_t count = std::min(chunk, g.out_plane() - first);
        const int64_t entries = g.channels * g.taps() * count;
        im2col_kernel<scalar_t><<<blocks_for(entries), kThreads, 0, stream>>>(
            g, input[n].data_ptr<scalar_t>(), offset[n].data_ptr<scalar_t>(),
            data_or_null<scalar_t>(mask, n), first, count, columns.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        const at::Tensor cols = columns.narrow(0, 0, entries).view({groups, rows_per_group, count});
        for (int64_t grp = 0; grp < groups; ++grp) {
          at::Tensor out_slice = out_n[grp].narrow(1, first, count);
          at::mm_out(out_slice, weight[grp], cols[grp]);
        }
      }
    }
  });
  if (bias.has_value()) output.add_(bias->reshape({1, out_channels, 1, 1}));
  return output;
}

DeformConvGrads deform_conv_backward_cuda(
    const at::Tensor& grad_output_, const at::Tensor& input_, const at::Tensor& weight_,
    const at::Tensor& offset_, const std::optional<at::Tensor>& mask_,
    const std::optional<at::Tensor>& bias, int64_t stride_h, int64_t stride_w, int64_t pad_h,
    int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups, int64_t deformable_groups) {
  check_deform_conv_backward_inputs(grad_output_, input_, weight_, offset_, mask_, bias, stride_h,
                                    stride_w, pad_h, pad_w, dil_h, dil_w, groups,
                                    deformable_groups);
  const c10::cuda::CUDAGuard device_guard(input_.device());
  const Geometry g = make_geometry(input_, weight_, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                                   deformable_groups);
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous();
  const at::Tensor mask = mask_.has_value() ? mask_->contiguous() : at::Tensor();
  const at::Tensor grad_output = grad_output_.contiguous();
  const int64_t batch = input.size(0), out_channels = weight_.size(0);
  const int64_t rows_per_group = g.channels / groups * g.taps();
  const at::Tensor weight = weight_.reshape({groups, out_channels / groups, rows_per_group});

  at::Tensor grad_input = at::zeros_like(input);
  at::Tensor grad_weight = at::zeros({groups, out_channels / groups, rows_per_group}, input.options());
  at::Tensor grad_offset = at::empty_like(offset);
  at::Tensor grad_mask = mask.defined() ? at::empty_like(mask) : absent_grad(input);
  const int64_t chunk = chunk_size(g);
  at::Tensor columns = at::empty({g.channels * g.taps() * chunk}, input.options());
  at::Tensor grad_columns = at::empty_like(columns);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv_backward_cuda", [&] {
    for (int64_t n = 0; n < batch; ++n) {
      const at::Tensor gout_n = grad_output[n].view({groups, out_channels / groups, g.out_plane()});
      const scalar_t* in_n = input[n].data_ptr<scalar_t>();
      const scalar_t* off_n = offset[n].data_ptr<scalar_t>();
      const scalar_t* mask_n = data_or_null<scalar_t>(mask, n);
      for (int64_t first = 0; first < g.out_plane(); first += chunk) {
        const int64_t count = std::min(chunk, g.out_plane() - first);
        const int64_t entries = g.channels * g.taps() * count;
        const at::Tensor cols = columns.narrow(0, 0, entries).view({groups, rows_per_group, count});
        const at::Tensor gcols =
            grad_columns.narrow(0, 0, entries).view({groups, rows_per_group, count});
        for (int64_t grp = 0; grp < groups; ++grp) {
          at::Tensor gcol_g = gcols[grp];
          at::mm_out(gcol_g, weight[grp].t(), gout_n[grp].narrow(1, first, count));
        }
        col2im_coord_kernel<scalar_t><<<blocks_for(g.dgroups * g.taps() * count), kThreads, 0,
                                        stream>>>(
            g, in_n, grad_columns.data_ptr<scalar_t>(), off_n, mask_n, first, count,
            grad_offset[n].data_ptr<scalar_t>(),
            mask.defined() ? grad_mask[n].data_ptr<scalar_t>() : nullptr);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        col2im_kernel<scalar_t><<<blocks_for(entries), kThreads, 0, stream>>>(
            g, grad_columns.data_ptr<scalar_t>(), off_n, mask_n, first, count,
            grad_input[n].data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        im2col_kernel<scalar_t><<<blocks_for(entries), kThreads, 0, stream>>>(
            g, in_n, off_n, mask_n, first, count, columns.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        for (int64_t grp = 0; grp < groups; ++grp) {
          grad_weight[grp].addmm_(gout_n[grp].narrow(1, first, count), cols[grp].t());
        }
      }
    }
  });
  at::Tensor grad_bias =
      bias.has_value() ? grad_output.sum(at::IntArrayRef{0, 2, 3}) : absent_grad(input);
  return {grad_input, grad_weight.view(weight_.sizes()), grad_offset, grad_mask, grad_bias};
}

TORCH_LIBRARY_IMPL(paa_core, CUDA, m) {
  m.impl("deform_conv_forward", &deform_conv_forward_cuda);
  m.impl("deform_conv_backward", &deform_conv_backward_cuda);
}
