// CPU Winograd F(4x4, 3x3) tile transforms (layouts in winograd.h). Each op is one 2-D
// transform per window (transform_2d: two passes of a 1-D one) on blocks of kBlock channels,
// between a grid of tile rows and a grid of image pixels; the 1-D transforms run on vectors
// of 8 channels. Pixels outside the image read from a zero row and write to a scratch row.
#include "winograd.h"
#include "cpu/simd.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t kBlock = 64;
constexpr int64_t kGrain = 8;  // windows per parallel chunk

// The 1-D transforms on values of T (a float, or a vector of floats: GCC's vector extension
// lets the same arithmetic run on both), output k = sum over r of matrix[k][r] * input r:
// B^T (6x6) for the input, A^T (4x6) for the output, and their transposes for the adjoints.
// Points 0, 1, -1, 2, -2 and infinity.
struct InputTransform {
  static constexpr int kIn = 6, kOut = 6;
  template <typename T>
  static void apply(const T d[6], T o[6]) {
    o[0] = 4.f * d[0] - 5.f * d[2] + d[4];
    o[1] = -4.f * (d[1] + d[2]) + d[3] + d[4];
    o[2] = 4.f * (d[1] - d[2]) - d[3] + d[4];
    o[3] = 2.f * (d[3] - d[1]) - d[2] + d[4];
    o[4] = 2.f * (d[1] - d[3]) - d[2] + d[4];
    o[5] = 4.f * d[1] - 5.f * d[3] + d[5];
  }
};

// o[r] = sum over k of B^T[k][r] * v[k]: the input transform's adjoint.
struct InputAdjoint {
  static constexpr int kIn = 6, kOut = 6;
  template <typename T>
  static void apply(const T v[6], T o[6]) {
    o[0] = 4.f * v[0];
    o[1] = 4.f * (v[2] - v[1] + v[5]) + 2.f * (v[4] - v[3]);
    o[2] = -5.f * v[0] - 4.f * (v[1] + v[2]) - v[3] - v[4];
    o[3] = v[1] - v[2] + 2.f * (v[3] - v[4]) - 5.f * v[5];
    o[4] = v[0] + v[1] + v[2] + v[3] + v[4];
    o[5] = v[5];
  }
};

struct OutputTransform {
  static constexpr int kIn = 6, kOut = 4;
  template <typename T>
  static void apply(const T m[6], T o[4]) {
    const T s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
    o[0] = m[0] + s12 + s34;
    o[1] = d12 + 2.f * d34;
    o[2] = s12 + 4.f * s34;
    o[3] = d12 + 8.f * d34 + m[5];
  }
};

// o[a] = sum over p of A^T[p][a] * g[p]: the output transform's adjoint.
struct OutputAdjoint {
  static constexpr int kIn = 4, kOut = 6;
  template <typename T>
  static void apply(const T g[4], T o[6]) {
    const T s02 = g[0] + g[2], s13 = g[1] + g[3];
    o[0] = g[0];
    o[1] = s02 + s13;
    o[2] = s02 - s13;
    o[3] = g[0] + 2.f * g[1] + 4.f * g[2] + 8.f * g[3];
    o[4] = g[0] - 2.f * g[1] + 4.f * g[2] - 8.f * g[3];
    o[5] = g[3];
  }
};

using Vec = float __attribute__((vector_size(32)));
constexpr int64_t kLanes = sizeof(Vec) / sizeof(float);

// out[k][c] = (out[k][c] if kAccumulate) + Transform(in[.][c])[k] (+ add[c]) for c < n. The
// rows are distinct buffers, except that rows outside the image may share one scratch row.
template <typename Transform, bool kAccumulate = false>
__attribute__((always_inline)) inline void transform_rows(const float* const in[],
                                                          float* const out[], int64_t n,
                                                          const float* add = nullptr) {
  constexpr int kIn = Transform::kIn, kOut = Transform::kOut;
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes) {
    Vec x[kIn], y[kOut], offset = {};
    for (int r = 0; r < kIn; ++r) std::memcpy(&x[r], in[r] + c, sizeof(Vec));
    if (add != nullptr) std::memcpy(&offset, add + c, sizeof(Vec));
    Transform::apply(x, y);
    for (int k = 0; k < kOut; ++k) {
      Vec v = y[k] + offset;
      if (kAccumulate) {
        Vec old;
        std::memcpy(&old, out[k] + c, sizeof(Vec));
        v += old;
      }
      std::memcpy(out[k] + c, &v, sizeof(Vec));
    }
  }
  for (; c < n; ++c) {
    float x[kIn], y[kOut];
    for (int r = 0; r < kIn; ++r) x[r] = in[r][c];
    Transform::apply(x, y);
    for (int k = 0; k < kOut; ++k) {
      out[k][c] = (kAccumulate ? out[k][c] : 0.f) + y[k] + (add != nullptr ? add[c] : 0.f);
    }
  }
}

// Where window t sits: image n, first input row/column (may be -1) of its 6x6 window.
struct Window {
  int64_t n, row, col;
};

struct Grid {
  int64_t batch, height, width, tiles_h, tiles_w;
  Grid(int64_t n, int64_t h, int64_t w) : batch(n), height(h), width(w) {
    tiles_h = (h + 3) / 4;
    tiles_w = (w + 3) / 4;
  }
  int64_t tiles() const { return batch * tiles_h * tiles_w; }
  Window window(int64_t t) const {
    const int64_t per_image = tiles_h * tiles_w, r = t % per_image;
    return {t / per_image, 4 * (r / tiles_w) - 1, 4 * (r % tiles_w) - 1};
  }
  bool inside(int64_t row, int64_t col) const {
    return row >= 0 && row < height && col >= 0 && col < width;
  }
  // Offset of pixel (n, row, col) in an NHWC tensor with `channels` channels.
  int64_t pixel(int64_t n, int64_t row, int64_t col, int64_t channels) const {
    return ((n * height + row) * width + col) * channels;
  }
};

// Y = M X M^T on one window and one block of n channels, M the Transform's matrix: X is a
// grid of kIn x kIn rows of channels, Y of kOut x kOut; first down X's columns, then along
// the rows of the result.
template <typename Transform, bool kAccumulate = false>
__attribute__((always_inline)) inline void transform_2d(
    const float* const (&in)[Transform::kIn][Transform::kIn],
    float* const (&out)[Transform::kOut][Transform::kOut], int64_t n, const float* add = nullptr) {
  constexpr int kIn = Transform::kIn, kOut = Transform::kOut;
  float column[kOut * kIn * kBlock];  // [k][s][block]
  for (int s = 0; s < kIn; ++s) {
    const float* down[kIn];
    float* to[kOut];
    for (int r = 0; r < kIn; ++r) down[r] = in[r][s];
    for (int k = 0; k < kOut; ++k) to[k] = column + (k * kIn + s) * kBlock;
    transform_rows<Transform>(down, to, n);
  }
  for (int k = 0; k < kOut; ++k) {
    const float* along[kIn];
    for (int s = 0; s < kIn; ++s) along[s] = column + (k * kIn + s) * kBlock;
    transform_rows<Transform, kAccumulate>(along, out[k], n, add);
  }
}

// Rows outside the image read zeros and write to a scratch row.
alignas(64) const float kZeros[kBlock] = {};

// The per-window ops, on all channels in blocks of kBlock. `offset` is where the image-side
// grid starts in the window: 0 for its 6x6 input pixels, 1 for its 4x4 output pixels. Always
// inlined, so that each SIMD level's copy below compiles its own.
template <typename T, int kSide>
__attribute__((always_inline)) inline void image_grid(const Grid& g, const Window& w, int offset,
                                                      T* image, int64_t channels, int64_t c0,
                                                      T* outside, T* (&grid)[kSide][kSide]) {
  for (int r = 0; r < kSide; ++r) {
    for (int s = 0; s < kSide; ++s) {
      const int64_t row = w.row + offset + r, col = w.col + offset + s;
      grid[r][s] = g.inside(row, col) ? image + g.pixel(w.n, row, col, channels) + c0 : outside;
    }
  }
}

template <typename T>
__attribute__((always_inline)) inline void tile_grid(T* tiles, int64_t t, int64_t channels,
                                                     int64_t c0, T* (&grid)[6][6]) {
  for (int a = 0; a < 6; ++a) {
    for (int b = 0; b < 6; ++b) grid[a][b] = tiles + (t * 36 + a * 6 + b) * channels + c0;
  }
}

__attribute__((always_inline)) inline void input_window(const Grid& g, int64_t t, const float* x,
                                                        float* tiles, int64_t channels) {
  const Window w = g.window(t);
  for (int64_t c0 = 0; c0 < channels; c0 += kBlock) {
    const float* in[6][6];
    float* out[6][6];
    image_grid<const float, 6>(g, w, 0, x, channels, c0, kZeros, in);
    tile_grid(tiles, t, channels, c0, out);
    transform_2d<InputTransform>(in, out, std::min(kBlock, channels - c0));
  }
}

// Adds window t's share of the input gradient into grad.
__attribute__((always_inline)) inline void input_adjoint_window(const Grid& g, int64_t t,
                                                                const float* tiles, float* grad,
                                                                int64_t channels) {
  const Window w = g.window(t);
  float scratch[kBlock];
  for (int64_t c0 = 0; c0 < channels; c0 += kBlock) {
    const float* in[6][6];
    float* out[6][6];
    tile_grid(tiles, t, channels, c0, in);
    image_grid<float, 6>(g, w, 0, grad, channels, c0, scratch, out);
    transform_2d<InputAdjoint, true>(in, out, std::min(kBlock, channels - c0));
  }
}

__attribute__((always_inline)) inline void output_window(const Grid& g, int64_t t,
                                                         const float* tiles, const float* bias,
                                                         float* y, int64_t channels) {
  const Window w = g.window(t);
  float scratch[kBlock];
  for (int64_t c0 = 0; c0 < channels; c0 += kBlock) {
    const float* in[6][6];
    float* out[4][4];
    tile_grid(tiles, t, channels, c0, in);
    image_grid<float, 4>(g, w, 1, y, channels, c0, scratch, out);
    transform_2d<OutputTransform>(in, out, std::min(kBlock, channels - c0), bias + c0);
  }
}

__attribute__((always_inline)) inline void output_adjoint_window(const Grid& g, int64_t t,
                                                                 const float* grad_y,
                                                                 float* grad_tiles,
                                                                 int64_t channels) {
  const Window w = g.window(t);
  for (int64_t c0 = 0; c0 < channels; c0 += kBlock) {
    const float* in[4][4];
    float* out[6][6];
    image_grid<const float, 4>(g, w, 1, grad_y, channels, c0, kZeros, in);
    tile_grid(grad_tiles, t, channels, c0, out);
    transform_2d<OutputAdjoint>(in, out, std::min(kBlock, channels - c0));
  }
}

using WindowKernel = void (*)(const Grid&, int64_t, const float*, float*, int64_t);
using OutputKernel = void (*)(const Grid&, int64_t, const float*, const float*, float*, int64_t);

struct WindowKernels {
  WindowKernel input, input_adjoint, output_adjoint;
  OutputKernel output;
};

// The four window kernels compiled for one SIMD level.
#define PAA_WINDOW_KERNELS(level, attribute)                                                  \
  attribute void input_##level(const Grid& g, int64_t t, const float* x, float* out,          \
                               int64_t c) {                                                   \
    input_window(g, t, x, out, c);                                                            \
  }                                                                                           \
  attribute void input_adjoint_##level(const Grid& g, int64_t t, const float* x, float* out, \
                                       int64_t c) {                                           \
    input_adjoint_window(g, t, x, out, c);                                                    \
  }                                                                                           \
  attribute void output_##level(const Grid& g, int64_t t, const float* x, const float* bias,  \
                                float* out, int64_t c) {                                      \
    output_window(g, t, x, bias, out, c);                                                     \
  }                                                                                           \
  attribute void output_adjoint_##level(const Grid& g, int64_t t, const float* x, float* out, \
                                        int64_t c) {                                          \
    output_adjoint_window(g, t, x, out, c);                                                   \
  }                                                                                           \
  const WindowKernels kKernels_##level = {&input_##level, &input_adjoint_##level,             \
                                          &output_adjoint_##level, &output_##level};

PAA_WINDOW_KERNELS(base, )
#ifdef PAA_X86_SIMD
PAA_WINDOW_KERNELS(avx2, PAA_TARGET_AVX2)
PAA_WINDOW_KERNELS(avx512, PAA_TARGET_AVX512)
#endif

// The copies for simd_level() (cpu/simd.h): twice the base build's speed with AVX2.
const WindowKernels& kernels() {
#ifdef PAA_X86_SIMD
  switch (simd_level()) {
    case SimdLevel::kAvx512:
      return kKernels_avx512;
    case SimdLevel::kAvx2:
      return kKernels_avx2;
    case SimdLevel::kBase:
      break;
  }
#endif
  return kKernels_base;
}

// Runs `kernel` on every window of each image (channels_last float32, one channel count),
// into one [windows of all images, 36, channels] tensor, image after image.
at::Tensor transform_images(at::TensorList images, const char* name, WindowKernel kernel) {
  const int64_t total = winograd_total_tiles(images, name);
  std::vector<at::Tensor> xs;
  for (const auto& image : images) xs.push_back(image.contiguous(at::MemoryFormat::ChannelsLast));
  const int64_t channels = images[0].size(1);
  auto tiles = at::empty({total, 36, channels}, images[0].options());
  float* dst = tiles.data_ptr<float>();
  for (const auto& x : xs) {
    const Grid g(x.size(0), x.size(2), x.size(3));
    const float* src = x.data_ptr<float>();
    at::parallel_for(0, g.tiles(), kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) kernel(g, t, src, dst, channels);
    });
    dst += g.tiles() * 36 * channels;
  }
  return tiles;
}

at::Tensor input_transform_cpu(at::TensorList inputs) {
  return transform_images(inputs, "inputs", kernels().input);
}

at::Tensor input_transform_backward_cpu(const at::Tensor& grad_tiles, int64_t batch,
                                        int64_t height, int64_t width) {
  check_winograd_tiles(grad_tiles, "grad_tiles", winograd_tiles(batch, height, width));
  const auto dv = grad_tiles.contiguous();
  const int64_t channels = dv.size(2);
  const Grid g(batch, height, width);
  auto grad = winograd_image_like(dv, batch, channels, height, width).zero_();
  const float* src = dv.data_ptr<float>();
  float* dst = grad.data_ptr<float>();
  const WindowKernel kernel = kernels().input_adjoint;
  // Windows overlap by two pixels: a row of windows is one thread's, and rows of one parity
  // (even, then odd) never touch the same pixels.
  for (int64_t parity = 0; parity < 2; ++parity) {
    const int64_t rows_per_image = (g.tiles_h - parity + 1) / 2;
    at::parallel_for(0, batch * rows_per_image, 1, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        const int64_t n = k / rows_per_image, i = 2 * (k % rows_per_image) + parity;
        const int64_t first = (n * g.tiles_h + i) * g.tiles_w;
        for (int64_t t = first; t < first + g.tiles_w; ++t) kernel(g, t, src, dst, channels);
      }
    });
  }
  return grad;
}

at::Tensor output_transform_cpu(const at::Tensor& tiles, const std::optional<at::Tensor>& bias,
                                int64_t batch, int64_t height, int64_t width) {
  check_winograd_tiles(tiles, "tiles", winograd_tiles(batch, height, width));
  const auto m = tiles.contiguous();
  const int64_t channels = m.size(2);
  std::vector<float> bias_values(channels, 0.f);
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == channels && bias->scalar_type() == at::kFloat,
                "winograd: bias must be float32 [", channels, "], got ", bias->sizes());
    const auto b = bias->contiguous();
    std::copy(b.data_ptr<float>(), b.data_ptr<float>() + channels, bias_values.begin());
  }
  const Grid g(batch, height, width);
  auto output = winograd_image_like(m, batch, channels, height, width);
  const float* src = m.data_ptr<float>();
  float* dst = output.data_ptr<float>();
  const OutputKernel kernel = kernels().output;
  at::parallel_for(0, g.tiles(), kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) kernel(g, t, src, bias_values.data(), dst, channels);
  });
  return output;
}

at::Tensor output_transform_backward_cpu(at::TensorList grad_outputs) {
  return transform_images(grad_outputs, "grad_outputs", kernels().output_adjoint);
}

}  // namespace

TORCH_LIBRARY_IMPL(paa_core, CPU, m) {
  m.impl("winograd_input_transform", &input_transform_cpu);
  m.impl("winograd_input_transform_backward", &input_transform_backward_cpu);
  m.impl("winograd_output_transform", &output_transform_cpu);
  m.impl("winograd_output_transform_backward", &output_transform_backward_cpu);
}
