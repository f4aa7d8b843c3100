// Internal: the batch > 1 path shared by the SIMD families. One weight at a time is
// broadcast and multiplied into a run of the batch read from xt ([cols × batch]), so the
// sparse structure is walked once per 64 batch columns, not once per batch column.
#pragma once

#include <algorithm>

#include "kernels_internal.h"

namespace prunus::kernels::detail {

// `each_nz(fn)` calls fn(col, value) for every stored non-zero of one row; `Vec` is the
// SIMD traits type (load/fma/store over `Vec::kLanes` floats with a tail count).
template <class Vec, class EachNz>
inline void batch_row(const Args& a, std::int64_t rows, std::int64_t r, EachNz each_nz) {
  constexpr std::int64_t kChunk = 4 * Vec::kLanes;
  alignas(64) float out[kChunk];
  for (std::int64_t b0 = 0; b0 < a.batch; b0 += kChunk) {
    const std::int64_t nb = std::min(kChunk, a.batch - b0);
    typename Vec::Reg acc[4] = {Vec::zero(), Vec::zero(), Vec::zero(), Vec::zero()};
    const float* xt = a.xt + b0;
    const std::int64_t stride = a.batch;
    if (nb == kChunk) {
      each_nz([&](std::int64_t c, float v) {
        const auto vv = Vec::set1(v);
        const float* p = xt + c * stride;
        acc[0] = Vec::fma(vv, Vec::load(p), acc[0]);
        acc[1] = Vec::fma(vv, Vec::load(p + Vec::kLanes), acc[1]);
        acc[2] = Vec::fma(vv, Vec::load(p + 2 * Vec::kLanes), acc[2]);
        acc[3] = Vec::fma(vv, Vec::load(p + 3 * Vec::kLanes), acc[3]);
      });
    } else {
      const std::int64_t nv = (nb + Vec::kLanes - 1) / Vec::kLanes;
      each_nz([&](std::int64_t c, float v) {
        const auto vv = Vec::set1(v);
        const float* p = xt + c * stride;
        for (std::int64_t k = 0; k < nv; ++k)
          acc[k] = Vec::fma(vv, Vec::load_n(p + k * Vec::kLanes, std::min<std::int64_t>(Vec::kLanes, nb - k * Vec::kLanes)), acc[k]);
      });
    }
    for (int k = 0; k < 4; ++k) Vec::store(out + k * Vec::kLanes, acc[k]);
    for (std::int64_t b = 0; b < nb; ++b) a.y[(b0 + b) * rows + r] = out[b];
  }
}

}  // namespace prunus::kernels::detail
