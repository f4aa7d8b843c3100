// AVX-512 + VBMI2 kernels (Ice Lake, Zen 4 and later). A file of its own so its flags
// never leak into the plain AVX-512 family; called only when CPUID has VBMI2.
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "kernels_internal.h"

namespace prunus::kernels::avx512 {
namespace {
inline __mmask16 first_n(std::int64_t n) { return __mmask16((1u << n) - 1); }
}  // namespace

// Bitmask GEMV without expand: VBMI2's byte compress turns a 64-bit mask into the positions
// of its set bits, and two-register permutes fetch x at those positions, so each group of
// 16 non-zeros costs a few register operations and no gather. The first G groups of a word
// run unconditionally (G from the matrix's density), so the loop does not branch on the
// per-word count; words alternate between two accumulator sets to hide FMA latency.
namespace {
template <int G>
void bitmask_gemv_vbmi2_g(const Bitmask& w, const Args& a,
                                                                             std::int64_t r0, std::int64_t r1) {
  alignas(64) static const std::uint8_t iota[64] = {
      0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
      22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43,
      44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63};
  const __m512i positions = _mm512_load_si512(iota);
  const __m512i bit5 = _mm512_set1_epi32(32);
  const std::int64_t full_words = w.cols / 64;
  for (std::int64_t r = r0; r < r1; ++r) {
    const std::uint64_t* bits = &w.bits[r * w.words_per_row];
    const float* v = &w.values[w.row_ptr[r]];
    // Named accumulators (even/odd word × group 0/1): arrays of vectors indexed in a lambda
    // ended up in memory, putting a store-forward on every FMA's dependency chain.
    __m512 e0 = _mm512_setzero_ps(), e1 = _mm512_setzero_ps(), o0 = _mm512_setzero_ps(), o1 = _mm512_setzero_ps();
    __m512 extra = _mm512_setzero_ps();
    auto word_step = [&](std::int64_t wd, __m512& acc0, __m512& acc1) {
      const std::uint64_t word = bits[wd];
      const float* x = a.x + wd * 64;
      __m512 x0, x1, x2, x3;
      if (wd < full_words) [[likely]] {
        x0 = _mm512_loadu_ps(x);
        x1 = _mm512_loadu_ps(x + 16);
        x2 = _mm512_loadu_ps(x + 32);
        x3 = _mm512_loadu_ps(x + 48);
      } else {  // the row's last, partial word: never read past x
        const std::int64_t n = w.cols - wd * 64;
        x0 = _mm512_maskz_loadu_ps(first_n(std::min<std::int64_t>(16, n)), x);
        x1 = _mm512_maskz_loadu_ps(first_n(std::clamp<std::int64_t>(n - 16, 0, 16)), x + 16);
        x2 = _mm512_maskz_loadu_ps(first_n(std::clamp<std::int64_t>(n - 32, 0, 16)), x + 32);
        x3 = _mm512_maskz_loadu_ps(first_n(std::clamp<std::int64_t>(n - 48, 0, 16)), x + 48);
      }
      const __m512i idx8 = _mm512_maskz_compress_epi8(word, positions);
      const int cnt = __builtin_popcountll(word);
      auto group = [&](__m128i part, int g, __m512& acc_g) {
        const __m512i idx = _mm512_cvtepu8_epi32(part);
        const __m512 lo = _mm512_permutex2var_ps(x0, idx, x1);
        const __m512 hi = _mm512_permutex2var_ps(x2, idx, x3);
        const __m512 xs = _mm512_mask_blend_ps(_mm512_test_epi32_mask(idx, bit5), lo, hi);
        const __m512 vals = _mm512_maskz_loadu_ps(first_n(std::clamp(cnt - 16 * g, 0, 16)), v + 16 * g);
        acc_g = _mm512_fmadd_ps(vals, xs, acc_g);
      };
      group(_mm512_castsi512_si128(idx8), 0, acc0);
      if constexpr (G >= 2) group(_mm512_extracti32x4_epi32(idx8, 1), 1, acc1);
      if (cnt > 16 * G) [[unlikely]] {
        if constexpr (G < 2) group(_mm512_extracti32x4_epi32(idx8, 1), 1, extra);
        if (cnt > 32) group(_mm512_extracti32x4_epi32(idx8, 2), 2, extra);
        if (cnt > 48) group(_mm512_extracti32x4_epi32(idx8, 3), 3, extra);
      }
      v += cnt;
    };
    std::int64_t wd = 0;
    for (; wd + 2 <= w.words_per_row; wd += 2) {
      word_step(wd, e0, e1);
      word_step(wd + 1, o0, o1);
    }
    if (wd < w.words_per_row) word_step(wd, e0, e1);
    const __m512 sum = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(e0, e1), _mm512_add_ps(o0, o1)), extra);
    a.y[r] = _mm512_reduce_add_ps(sum);
  }
}

}  // namespace

void bitmask_gemv_vbmi2(const Bitmask& w, const Args& a, std::int64_t r0, std::int64_t r1) {
  // Groups of 16 that always run: as many as a word holds on average (1 or 2); further
  // groups run behind a branch.
  const double density = w.rows * w.cols ? double(w.nnz()) / double(w.rows * w.cols) : 0.0;
  const int groups = std::clamp(static_cast<int>(std::lround(64 * density / 16.0)), 1, 4);
  switch (groups) {
    case 1: return bitmask_gemv_vbmi2_g<1>(w, a, r0, r1);
    default: return bitmask_gemv_vbmi2_g<2>(w, a, r0, r1);
  }
}

}  // namespace prunus::kernels::avx512
