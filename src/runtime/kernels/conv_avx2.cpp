// Direct convolution, AVX2+FMA: 8 output channels a vector, 8 positions share a weight load.
#include "conv_simd.h"

namespace prunus::kernels::avx2 {
void conv_direct(const DirectConv& c, const float* x, float* y, std::int64_t r0, std::int64_t r1) {
  if (conv_simd::conv_planar(c, x, y, r0, r1) || conv_simd::conv_flat<conv_simd::Ymm>(c, x, y, r0, r1)) return;
  conv_simd::conv_rows<conv_simd::Ymm, 8>(c, x, y, r0, r1);
}
}  // namespace prunus::kernels::avx2
