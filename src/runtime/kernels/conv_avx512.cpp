// Direct convolution, AVX-512: 16 output channels a vector, 4 positions share a weight load
// (Zen 4 issues one 512-bit FMA a cycle, so four accumulators cover its latency). Layers of
// at most 8 channels take the 8-lane path: a 16-lane vector would be half empty.
#include "conv_simd.h"

namespace prunus::kernels::avx512 {
void conv_direct(const DirectConv& c, const float* x, float* y, std::int64_t r0, std::int64_t r1) {
  if (conv_simd::conv_planar(c, x, y, r0, r1) || conv_simd::conv_flat<conv_simd::Zmm>(c, x, y, r0, r1)) return;
  if (c.rows <= 8) return conv_simd::conv_rows<conv_simd::Ymm, 8>(c, x, y, r0, r1);
  conv_simd::conv_rows<conv_simd::Zmm, 4>(c, x, y, r0, r1);
}
}  // namespace prunus::kernels::avx512
