// CPU (modulated) deformable convolution.
//
// Per image and per chunk of output positions: a "tap table" records, for every
// (deformable group, kernel tap, output position), the four bilinear corners, the
// fractional position and the mask. The sampling passes read it:
//   forward   im2col  columns[c*K+k, p] = mask * bilinear(input[c])   then one GEMM per group
//   backward  columns_grad = W^T grad_out (GEMM), then
//             coord   grad offset / mask (and the columns again, for grad weight)
//             col2im  scatter of columns_grad into grad_input
// Planes are padded with one trailing zero so that corners outside the image point at
// it: the inner loops carry no bounds checks.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "deform_conv.h"
#include <torch/library.h>

namespace {

// Columns buffer budget (elements) per chunk of output positions.
constexpr int64_t kColumnsBudget = int64_t(1) << 21;
// Output positions handled together by one task of a sampling pass.
constexpr int64_t kTile = 256;

struct Geometry {
  int64_t channels, height, width, kh, kw, out_h, out_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, dgroups;
  int64_t taps() const { return kh * kw; }
  int64_t plane() const { return height * width; }
  int64_t padded_plane() const { return height * width + 1; }
  int64_t out_plane() const { return out_h * out_w; }
  int64_t group_channels() const { return channels / dgroups; }
};

template <typename scalar_t>
struct Tap {
  int32_t corner[4];  // padded-plane indices of (y0,x0) (y0,x1) (y1,x0) (y1,x1)
  scalar_t ly, lx, mask;
};

// Fills table[(d*K + k)*count + p] for output positions [first, first + count).
// offset / mask point at one image ([2*dg*K, Ho*Wo] and [dg*K, Ho*Wo]); mask may be null.
template <typename scalar_t>
void build_taps(const Geometry& g, const scalar_t* offset, const scalar_t* mask, int64_t first,
                int64_t count, Tap<scalar_t>* table) {
  const int64_t taps = g.taps(), out_plane = g.out_plane();
  const int32_t zero_index = static_cast<int32_t>(g.plane());
  at::parallel_for(0, g.dgroups * taps, 1, [&](int64_t begin, int64_t end) {
    for (int64_t dk = begin; dk < end; ++dk) {
      const int64_t d = dk / taps, k = dk % taps;
      const int64_t ki = k / g.kw, kj = k % g.kw;
      const scalar_t* off_y = offset + (d * 2 * taps + 2 * k) * out_plane;
      const scalar_t* off_x = off_y + out_plane;
      const scalar_t* m = mask ? mask + dk * out_plane : nullptr;
      Tap<scalar_t>* row = table + dk * count;
      for (int64_t p = 0; p < count; ++p) {
        const int64_t q = first + p;
        const int64_t oy = q / g.out_w, ox = q % g.out_w;
        const scalar_t y = oy * g.stride_h - g.pad_h + ki * g.dil_h + off_y[q];
        const scalar_t x = ox * g.stride_w - g.pad_w + kj * g.dil_w + off_x[q];
        Tap<scalar_t>& t = row[p];
        t.mask = m ? m[q] : scalar_t(1);
        // Written as a negated "inside" test so that NaN lands outside too.
        if (!(y > -1 && y < g.height && x > -1 && x < g.width)) {
          t.corner[0] = t.corner[1] = t.corner[2] = t.corner[3] = zero_index;
          t.ly = t.lx = 0;
          continue;
        }
        const int64_t y0 = static_cast<int64_t>(std::floor(y));
        const int64_t x0 = static_cast<int64_t>(std::floor(x));
        t.ly = y - y0;
        t.lx = x - x0;
        const bool top = y0 >= 0, bottom = y0 + 1 < g.height;
        const bool left = x0 >= 0, right = x0 + 1 < g.width;
        const int32_t base = static_cast<int32_t>(y0 * g.width + x0);
        t.corner[0] = top && left ? base : zero_index;
        t.corner[1] = top && right ? base + 1 : zero_index;
        t.corner[2] = bottom && left ? base + static_cast<int32_t>(g.width) : zero_index;
        t.corner[3] = bottom && right ? base + static_cast<int32_t>(g.width) + 1 : zero_index;
      }
    }
  });
}

// Runs fn(d, k, p_begin, p_end) over all (deformable group, tap, tile) in parallel.
template <typename Fn>
void for_each_tap_tile(const Geometry& g, int64_t count, const Fn& fn) {
  const int64_t tiles = (count + kTile - 1) / kTile;
  at::parallel_for(0, g.dgroups * g.taps() * tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t dk = task / tiles, tile = task % tiles;
      fn(dk / g.taps(), dk % g.taps(), tile * kTile, std::min(count, (tile + 1) * kTile));
    }
  });
}

// columns [C*K, count] = mask * bilinear sample; input is [C, H*W + 1] (padded).
template <typename scalar_t>
void im2col(const Geometry& g, const Tap<scalar_t>* table, const scalar_t* input, int64_t count,
            scalar_t* columns) {
  const int64_t taps = g.taps(), cg = g.group_channels();
  for_each_tap_tile(g, count, [&](int64_t d, int64_t k, int64_t p0, int64_t p1) {
    const Tap<scalar_t>* row = table + (d * taps + k) * count;
    for (int64_t c = d * cg; c < (d + 1) * cg; ++c) {
      const scalar_t* plane = input + c * g.padded_plane();
      scalar_t* col = columns + (c * taps + k) * count;
      for (int64_t p = p0; p < p1; ++p) {
        const Tap<scalar_t>& t = row[p];
        const scalar_t top = plane[t.corner[0]] + t.lx * (plane[t.corner[1]] - plane[t.corner[0]]);
        const scalar_t bot = plane[t.corner[2]] + t.lx * (plane[t.corner[3]] - plane[t.corner[2]]);
        col[p] = t.mask * (top + t.ly * (bot - top));
      }
    }
  });
}

// From grad_columns [C*K, count]: grad offset and (when grad_mask is non-null) grad mask
// of one image at positions [first, first+count), and the forward columns again.
template <typename scalar_t>
void col2im_coord(const Geometry& g, const Tap<scalar_t>* table, const scalar_t* input,
                  const scalar_t* grad_columns, int64_t first, int64_t count, scalar_t* columns,
                  scalar_t* grad_offset, scalar_t* grad_mask) {
  const int64_t taps = g.taps(), cg = g.group_channels(), out_plane = g.out_plane();
  for_each_tap_tile(g, count, [&](int64_t d, int64_t k, int64_t p0, int64_t p1) {
    const Tap<scalar_t>* row = table + (d * taps + k) * count;
    scalar_t gy[kTile] = {}, gx[kTile] = {}, gm[kTile] = {};
    for (int64_t c = d * cg; c < (d + 1) * cg; ++c) {
      const scalar_t* plane = input + c * g.padded_plane();
      const scalar_t* gcol = grad_columns + (c * taps + k) * count;
      scalar_t* col = columns + (c * taps + k) * count;
      for (int64_t p = p0; p < p1; ++p) {
        const Tap<scalar_t>& t = row[p];
        const scalar_t v00 = plane[t.corner[0]], v01 = plane[t.corner[1]];
        const scalar_t v10 = plane[t.corner[2]], v11 = plane[t.corner[3]];
        const scalar_t top = v00 + t.lx * (v01 - v00), bot = v10 + t.lx * (v11 - v10);
        const scalar_t value = top + t.ly * (bot - top);
        const scalar_t grad = gcol[p];
        col[p] = t.mask * value;
        gm[p - p0] += grad * value;
        gy[p - p0] += grad * (bot - top);
        gx[p - p0] += grad * ((v01 - v00) + t.ly * ((v11 - v10) - (v01 - v00)));
      }
    }
    scalar_t* out_y = grad_offset + (d * 2 * taps + 2 * k) * out_plane + first;
    scalar_t* out_x = out_y + out_plane;
    for (int64_t p = p0; p < p1; ++p) {
      out_y[p] = gy[p - p0] * row[p].mask;
      out_x[p] = gx[p - p0] * row[p].mask;
    }
    if (grad_mask) {
      scalar_t* out_m = grad_mask + (d * taps + k) * out_plane + first;
      for (int64_t p = p0; p < p1; ++p) out_m[p] = gm[p - p0];
    }
  });
}

// grad_input [C, H*W + 1] (padded) += transposed sampling of grad_columns [C*K, count].
// Parallel over channels so that no two tasks write the same plane.
template <typename scalar_t>
void col2im(const Geometry& g, const Tap<scalar_t>* table, const scalar_t* grad_columns,
            int64_t count, scalar_t* grad_input) {
  const int64_t taps = g.taps(), cg = g.group_channels();
  at::parallel_for(0, g.channels, 1, [&](int64_t c_begin, int64_t c_end) {
    for (int64_t k = 0; k < taps; ++k) {
      for (int64_t p0 = 0; p0 < count; p0 += kTile) {
        const int64_t p1 = std::min(count, p0 + kTile);
        for (int64_t c = c_begin; c < c_end; ++c) {
          const Tap<scalar_t>* row = table + ((c / cg) * taps + k) * count;
          const scalar_t* gcol = grad_columns + (c * taps + k) * count;
          scalar_t* plane = grad_input + c * g.padded_plane();
          for (int64_t p = p0; p < p1; ++p) {
            const Tap<scalar_t>& t = row[p];
            const scalar_t grad = gcol[p] * t.mask;
            const scalar_t bot = grad * t.ly, top = grad - bot;
            plane[t.corner[0]] += top - top * t.lx;
            plane[t.corner[1]] += top * t.lx;
            plane[t.corner[2]] += bot - bot * t.lx;
            plane[t.corner[3]] += bot * t.lx;
          }
        }
      }
    }
  });
}

Geometry make_geometry(const at::Tensor& input, const at::Tensor& weight, int64_t stride_h,
                       int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                       int64_t dil_w, int64_t groups, int64_t dgroups) {
  Geometry g{input.size(1), input.size(2), input.size(3), weight.size(2), weight.size(3), 0, 0,
             stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, dgroups};
  g.out_h = (g.height + 2 * pad_h - dil_h * (g.kh - 1) - 1) / stride_h + 1;
  g.out_w = (g.width + 2 * pad_w - dil_w * (g.kw - 1) - 1) / stride_w + 1;
  TORCH_CHECK(g.plane() < (int64_t(1) << 31) - 1, "deform_conv: input plane of ", g.height, "x",
              g.width, " is too large");
  return g;
}

// Output positions per chunk: bounded by the columns budget, at least one tile.
int64_t chunk_size(const Geometry& g) {
  const int64_t rows = g.channels * g.taps();
  const int64_t budget = std::max(kTile, (kColumnsBudget / rows) / kTile * kTile);
  return std::min(g.out_plane(), budget);
}

// One image's [C, H, W] planes with a trailing zero each: [C, H*W + 1].
at::Tensor padded_planes(const at::Tensor& image) {
  return at::constant_pad_nd(image.reshape({image.size(0), -1}), {0, 1}, 0);
}

// Tap table storage for `entries` taps of the given dtype.
at::Tensor tap_buffer(int64_t entries, at::ScalarType dtype) {
  const int64_t bytes = dtype == at::kDouble ? sizeof(Tap<double>) : sizeof(Tap<float>);
  return at::empty({entries * bytes}, at::TensorOptions().dtype(at::kByte));
}

}  // namespace

at::Tensor deform_conv_forward_cpu(const at::Tensor& input_, const at::Tensor& weight_,
                                   const at::Tensor& offset_, const std::optional<at::Tensor>& mask_,
                                   const std::optional<at::Tensor>& bias, int64_t stride_h,
                                   int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                                   int64_t dil_w, int64_t groups, int64_t deformable_groups) {
  check_deform_conv_inputs(input_, weight_, offset_, mask_, bias, stride_h, stride_w, pad_h, pad_w,
                           dil_h, dil_w, groups, deformable_groups);
  const Geometry g = make_geometry(input_, weight_, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                                   groups, deformable_groups);
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous();
  const at::Tensor mask = mask_.has_value() ? mask_->contiguous() : at::Tensor();
  const int64_t batch = input.size(0), out_channels = weight_.size(0);
  const int64_t rows_per_group = g.channels / groups * g.taps();
  const at::Tensor weight = weight_.reshape({groups, out_channels / groups, rows_per_group});
  at::Tensor output = at::empty({batch, out_channels, g.out_h, g.out_w}, input.options());
  const int64_t chunk = chunk_size(g);
  at::Tensor columns = at::empty({g.channels * g.taps() * chunk}, input.options());
  at::Tensor taps = tap_buffer(g.dgroups * g.taps() * chunk, input.scalar_type());

  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv_forward_cpu", [&] {
    auto* table = reinterpret_cast<Tap<scalar_t>*>(taps.data_ptr<uint8_t>());
    for (int64_t n = 0; n < batch; ++n) {
      const at::Tensor planes = padded_planes(input[n]);
      const at::Tensor out_n = output[n].view({groups, out_channels / groups, g.out_plane()});
      for (int64_t first = 0; first < g.out_plane(); first += chunk) {
        const int64_t count = std::min(chunk, g.out_plane() - first);
        build_taps(g, offset[n].data_ptr<scalar_t>(),
                   mask.defined() ? mask[n].data_ptr<scalar_t>() : nullptr, first, count, table);
        im2col(g, table, planes.data_ptr<scalar_t>(), count, columns.data_ptr<scalar_t>());
        const at::Tensor cols =
            columns.narrow(0, 0, g.channels * g.taps() * count).view({groups, rows_per_group, count});
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

DeformConvGrads deform_conv_backward_cpu(
    const at::Tensor& grad_output_, const at::Tensor& input_, const at::Tensor& weight_,
    const at::Tensor& offset_, const std::optional<at::Tensor>& mask_,
    const std::optional<at::Tensor>& bias, int64_t stride_h, int64_t stride_w, int64_t pad_h,
    int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups, int64_t deformable_groups) {
  check_deform_conv_backward_inputs(grad_output_, input_, weight_, offset_, mask_, bias, stride_h,
                                    stride_w, pad_h, pad_w, dil_h, dil_w, groups,
                                    deformable_groups);
  const Geometry g = make_geometry(input_, weight_, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                                   groups, deformable_groups);
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous();
  const at::Tensor mask = mask_.has_value() ? mask_->contiguous() : at::Tensor();
  const at::Tensor grad_output = grad_output_.contiguous();
  const int64_t batch = input.size(0), out_channels = weight_.size(0);
  const int64_t rows_per_group = g.channels / groups * g.taps();
  const at::Tensor weight = weight_.reshape({groups, out_channels / groups, rows_per_group});

  at::Tensor grad_input = at::empty_like(input);
  at::Tensor grad_weight = at::zeros({groups, out_channels / groups, rows_per_group}, input.options());
  at::Tensor grad_offset = at::empty_like(offset);
  at::Tensor grad_mask = mask.defined() ? at::empty_like(mask) : absent_grad(input);
  const int64_t chunk = chunk_size(g);
  at::Tensor columns = at::empty({g.channels * g.taps() * chunk}, input.options());
  at::Tensor grad_columns = at::empty_like(columns);
  at::Tensor taps = tap_buffer(g.dgroups * g.taps() * chunk, input.scalar_type());

  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "deform_conv_backward_cpu", [&] {
    auto* table = reinterpret_cast<Tap<scalar_t>*>(taps.data_ptr<uint8_t>());
    for (int64_t n = 0; n < batch; ++n) {
      const at::Tensor planes = padded_planes(input[n]);
      at::Tensor grad_planes = at::zeros_like(planes);
      const at::Tensor gout_n =
          grad_output[n].view({groups, out_channels / groups, g.out_plane()});
      for (int64_t first = 0; first < g.out_plane(); first += chunk) {
        const int64_t count = std::min(chunk, g.out_plane() - first);
        const int64_t rows = g.channels * g.taps() * count;
        const at::Tensor cols = columns.narrow(0, 0, rows).view({groups, rows_per_group, count});
        const at::Tensor gcols =
            grad_columns.narrow(0, 0, rows).view({groups, rows_per_group, count});
        build_taps(g, offset[n].data_ptr<scalar_t>(),
                   mask.defined() ? mask[n].data_ptr<scalar_t>() : nullptr, first, count, table);
        for (int64_t grp = 0; grp < groups; ++grp) {
          at::Tensor gcol_g = gcols[grp];
          at::mm_out(gcol_g, weight[grp].t(), gout_n[grp].narrow(1, first, count));
        }
        col2im_coord(g, table, planes.data_ptr<scalar_t>(), grad_columns.data_ptr<scalar_t>(),
                     first, count, columns.data_ptr<scalar_t>(),
                     grad_offset[n].data_ptr<scalar_t>(),
                     mask.defined() ? grad_mask[n].data_ptr<scalar_t>() : nullptr);
        col2im(g, table, grad_columns.data_ptr<scalar_t>(), count,
               grad_planes.data_ptr<scalar_t>());
        for (int64_t grp = 0; grp < groups; ++grp) {
          grad_weight[grp].addmm_(gout_n[grp].narrow(1, first, count), cols[grp].t());
        }
      }
      grad_input[n].copy_(grad_planes.narrow(1, 0, g.plane()).view({g.channels, g.height, g.width}));
    }
  });
  at::Tensor grad_bias =
      bias.has_value() ? grad_output.sum(at::IntArrayRef{0, 2, 3}) : absent_grad(input);
  return {grad_input, grad_weight.view(weight_.sizes()), grad_offset, grad_mask, grad_bias};
}

TORCH_LIBRARY_IMPL(paa_core, CPU, m) {
  m.impl("deform_conv_forward", &deform_conv_forward_cpu);
  m.impl("deform_conv_backward", &deform_conv_backward_cpu);
}
