// Winograd F(4x4, 3x3) tile transforms of a 3x3 convolution with stride 1 and padding 1
// (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016). The input is
// cut into 6x6 windows every 4 pixels; window t of image n at tile row i, column j covers
// input rows 4i-1..4i+4 and columns 4j-1..4j+4 (zero outside the image) and gives output
// rows 4i..4i+3, columns 4j..4j+3. t = (n * tiles_h + i) * tiles_w + j, tiles_h = ceil(H / 4).
//
// In the transformed domain the convolution is 36 independent matrix products over channels,
// done outside these kernels (paa_core/layers/winograd.py); the kernels move between the
// image (channels_last) and the transformed layout [tiles, 36, channels], with position
// a * 6 + b for row a, column b of the 6x6 transform:
//   input_transform:            x [N, C, H, W]  -> V [T, 36, C],  V = B^T d B per window
//   input_transform_backward:   dV [T, 36, C]   -> dx [N, C, H, W], its adjoint (windows
//                               overlap, their contributions add up)
//   output_transform:           M [T, 36, O] (+ bias [O]) -> y [N, O, H, W], y = A^T M A
//   output_transform_backward:  dy [N, O, H, W] -> dM [T, 36, O], its adjoint
// Image tensors are float32 in channels_last memory. input_transform and
// output_transform_backward take a list of images of any sizes with one channel count (a
// pyramid's levels) and give their windows in one tensor, image after image.
#pragma once
#include <ATen/ATen.h>

#include <optional>

inline void check_winograd_image(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.dim() == 4, "winograd: ", name, " must be [N, C, H, W], got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat, "winograd: ", name, " must be float32, got ",
              x.scalar_type());
}

inline void check_winograd_tiles(const at::Tensor& t, const char* name, int64_t num_tiles) {
  TORCH_CHECK(t.dim() == 3 && t.size(0) == num_tiles && t.size(1) == 36,
              "winograd: ", name, " must be [", num_tiles, ", 36, channels], got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kFloat, "winograd: ", name, " must be float32, got ",
              t.scalar_type());
}

inline int64_t winograd_tiles(int64_t n, int64_t h, int64_t w) {
  TORCH_CHECK(n >= 0 && h >= 0 && w >= 0, "winograd: negative image size ", n, "x", h, "x", w);
  return n * ((h + 3) / 4) * ((w + 3) / 4);
}

// An uninitialised channels_last image [n, c, h, w] with `like`'s dtype and device.
inline at::Tensor winograd_image_like(const at::Tensor& like, int64_t n, int64_t c, int64_t h,
                                      int64_t w) {
  return at::empty({n, c, h, w}, like.options().memory_format(at::MemoryFormat::ChannelsLast));
}

// The windows of a list of images with one channel count, after checking them.
inline int64_t winograd_total_tiles(at::TensorList images, const char* name) {
  TORCH_CHECK(!images.empty(), "winograd: ", name, " must hold at least one image");
  int64_t total = 0;
  for (const auto& image : images) {
    check_winograd_image(image, name);
    TORCH_CHECK(image.size(1) == images[0].size(1), "winograd: the ", name,
                " must have one channel count, got ", images[0].size(1), " and ", image.size(1));
    total += winograd_tiles(image.size(0), image.size(2), image.size(3));
  }
  return total;
}
