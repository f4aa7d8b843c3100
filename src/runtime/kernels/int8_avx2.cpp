// INT8 kernels, AVX2: weights expanded to 16 dense bytes per step (pshufb from a table of
// the 256 byte masks), widened to 16 bits and multiplied with vpmaddwd (exact: no
// saturation, unlike vpmaddubsw on u8 × s8).
#include <immintrin.h>

#include <array>
#include <bit>

#include "kernels_internal.h"

namespace prunus::kernels::avx2 {
namespace {

// For an 8-bit mask, the pshufb control that moves packed values 0, 1, ... to the set
// positions and writes 0 elsewhere (0x80).
const std::array<std::uint64_t, 256>& expand_table() {
  static const auto table = [] {
    std::array<std::uint64_t, 256> t{};
    for (int m = 0; m < 256; ++m) {
      std::uint64_t ctrl = 0;
      int k = 0;
      for (int j = 0; j < 8; ++j) {
        const std::uint64_t byte = (m >> j & 1) ? static_cast<std::uint64_t>(k++) : 0x80;
        ctrl |= byte << (8 * j);
      }
      t[m] = ctrl;
    }
    return t;
  }();
  return table;
}

inline std::int32_t hsum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

}  // namespace

void int8_bitmask(const Int8Bitmask& w, const Int8Args& a, std::int64_t r0, std::int64_t r1) {
  const auto& lut = expand_table();
  for (std::int64_t b = 0; b < a.batch; ++b) {
    const std::uint8_t* x = a.xq + b * a.x_stride;
    for (std::int64_t r = r0; r < r1; ++r) {
      const std::int8_t* v = w.values.data() + w.row_ptr[r];
      __m256i acc = _mm256_setzero_si256();
      for (std::int64_t word = 0; word < w.words_per_row; ++word) {
        const std::uint64_t bits = w.bits[r * w.words_per_row + word];
        if (!bits) continue;
        for (int q = 0; q < 4; ++q) {
          const unsigned m16 = static_cast<unsigned>(bits >> (16 * q)) & 0xffff;
          if (!m16) continue;
          const unsigned lo = m16 & 0xff, hi = m16 >> 8;
          const __m128i wlo = _mm_shuffle_epi8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(v)),
                                               _mm_cvtsi64_si128(static_cast<long long>(lut[lo])));
          v += std::popcount(lo);
          const __m128i whi = _mm_shuffle_epi8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(v)),
                                               _mm_cvtsi64_si128(static_cast<long long>(lut[hi])));
          v += std::popcount(hi);
          const __m128i w16 = _mm_unpacklo_epi64(wlo, whi);
          const __m128i x16 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x + word * 64 + 16 * q));
          acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_cvtepu8_epi16(x16), _mm256_cvtepi8_epi16(w16)));
        }
      }
      a.y[b * w.rows + r] = int8_dequant(hsum(acc) - 128 * w.row_sum[r], a.x_scale[b], w.scale[r]);
    }
  }
}

void int8_nm(const Int8NM& w, const Int8Args& a, std::int64_t r0, std::int64_t r1) {
  const std::int64_t per_row = w.windows_per_row * 64;
  alignas(32) std::uint8_t sel[64];
  for (std::int64_t b = 0; b < a.batch; ++b) {
    const std::uint8_t* x = a.xq + b * a.x_stride;
    for (std::int64_t r = r0; r < r1; ++r) {
      __m256i acc = _mm256_setzero_si256();
      for (std::int64_t win = 0; win < w.windows_per_row; ++win) {
        const std::uint8_t* p = w.pos.data() + r * per_row + win * 64;
        const std::int8_t* v = w.values.data() + r * per_row + win * 64;
        const std::uint8_t* xw = x + win * w.window;
        for (int j = 0; j < 64; ++j) sel[j] = xw[p[j]];  // AVX2 has no byte permute across 128 bytes
        for (int j = 0; j < 64; j += 16) {
          const __m128i xs = _mm_load_si128(reinterpret_cast<const __m128i*>(sel + j));
          const __m128i ws = _mm_loadu_si128(reinterpret_cast<const __m128i*>(v + j));
          acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_cvtepu8_epi16(xs), _mm256_cvtepi8_epi16(ws)));
        }
      }
      a.y[b * w.rows + r] = int8_dequant(hsum(acc) - 128 * w.row_sum[r], a.x_scale[b], w.scale[r]);
    }
  }
}

}  // namespace prunus::kernels::avx2
