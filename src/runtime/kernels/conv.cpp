// Direct convolution: weight packing and the scalar reference (the SIMD variants are in
// conv_avx2.cpp / conv_avx512.cpp, the threaded entry point in dispatch.cpp).
#include <stdexcept>
#include <string>

#include "kernels_internal.h"

namespace prunus::kernels {

DirectConv pack_direct_conv(const float* w, const float* bias, std::int64_t rows, std::int64_t cin, std::int64_t k,
                            std::int64_t stride, std::int64_t pad, std::int64_t h, std::int64_t w_in) {
  if (rows <= 0 || cin <= 0 || k <= 0 || stride <= 0 || pad < 0 || h + 2 * pad < k || w_in + 2 * pad < k)
    throw std::invalid_argument("direct conv: kernel " + std::to_string(k) + " does not fit a " + std::to_string(h) +
                                "x" + std::to_string(w_in) + " input with padding " + std::to_string(pad));
  DirectConv c;
  c.h = h, c.w = w_in, c.cin = cin, c.rows = rows, c.k = k, c.stride = stride, c.pad = pad;
  c.oh = (h + 2 * pad - k) / stride + 1;
  c.ow = (w_in + 2 * pad - k) / stride + 1;
  c.rows_padded = (rows + 15) / 16 * 16;
  const std::int64_t taps = k * k * cin;
  c.wt.assign(static_cast<std::size_t>(taps * c.rows_padded), 0.0f);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t t = 0; t < taps; ++t) c.wt[t * c.rows_padded + r] = w[r * taps + t];
  c.bias.assign(static_cast<std::size_t>(c.rows_padded), 0.0f);
  if (bias)
    for (std::int64_t r = 0; r < rows; ++r) c.bias[r] = bias[r];
  return c;
}

namespace scalar {
// The reference: every output channel of every position, taps in (ky, kx, ci) order — the
// order the SIMD variants accumulate in.
void conv_direct(const DirectConv& c, const float* x, float* y, std::int64_t r0, std::int64_t r1) {
  for (std::int64_t row = r0; row < r1; ++row) {
    const std::int64_t n = row / c.oh, oy = row % c.oh;
    for (std::int64_t ox = 0; ox < c.ow; ++ox)
      for (std::int64_t r = 0; r < c.rows; ++r) {
        float acc = c.bias[r];
        for (std::int64_t ky = 0; ky < c.k; ++ky) {
          const std::int64_t iy = oy * c.stride - c.pad + ky;
          if (iy < 0 || iy >= c.h) continue;
          for (std::int64_t kx = 0; kx < c.k; ++kx) {
            const std::int64_t ix = ox * c.stride - c.pad + kx;
            if (ix < 0 || ix >= c.w) continue;
            for (std::int64_t ci = 0; ci < c.cin; ++ci)
              acc += x[((n * c.h + iy) * c.w + ix) * c.cin + ci] * c.wt[((ky * c.k + kx) * c.cin + ci) * c.rows_padded + r];
          }
        }
        y[(row * c.ow + ox) * c.rows + r] = acc;
      }
  }
}
}  // namespace scalar

}  // namespace prunus::kernels
