// INT8 kernels, AVX-512 VNNI + VBMI/VBMI2. Bitmask: per 64 columns, vpcompressb picks the
// activation bytes under the row's mask into a buffer, which then meets the packed weights
// 64 at a time in vpdpbusd (u8 × s8 → int32). N:M: per window, vpermt2b gathers the kept
// columns' activation bytes from 128 by the stored positions, then one vpdpbusd.
#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <vector>

#include "kernels_internal.h"

namespace prunus::kernels::avx512 {

namespace {

// Batch 1: per 64 columns, the row's packed weights are expanded under its mask (vpexpandb,
// register form) and meet the activation bytes in vpdpbusd; four accumulators hide the
// vpdpbusd latency. No buffer and no stores: an earlier version compressed the activations
// into a buffer (vpcompressb + a 64-byte store per 64 columns) and was bound by those
// unaligned stores (0.47 ms at 4096² 90%).
void bitmask_gemv(const Int8Bitmask& w, const Int8Args& a, std::int64_t r0, std::int64_t r1) {
  const std::uint8_t* x = a.xq;
  const std::int64_t W = w.words_per_row;
  for (std::int64_t r = r0; r < r1; ++r) {
    const std::uint64_t* bits = w.bits.data() + r * W;
    const std::int8_t* v = w.values.data() + w.row_ptr[r];
    __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512(), acc2 = _mm512_setzero_si512(),
            acc3 = _mm512_setzero_si512();
    std::int64_t word = 0;
    auto step = [&](__m512i& acc, std::int64_t k) {
      const std::uint64_t m = bits[k];
      // In place (see expand_in_place in avx512.cpp): a zeroing vpexpandb waits on its
      // destination's previous value on Zen 4, and the memory form is slower than a load.
      __m512i wv = _mm512_loadu_si512(v);
      asm("vpexpandb %0, %0%{%1%}%{z%}" : "+v"(wv) : "Yk"(__mmask64(m)));
      acc = _mm512_dpbusd_epi32(acc, _mm512_loadu_si512(x + k * 64), wv);
      v += std::popcount(m);
    };
    for (; word + 3 < W; word += 4) {
      step(acc0, word);
      step(acc1, word + 1);
      step(acc2, word + 2);
      step(acc3, word + 3);
    }
    for (; word < W; ++word) step(acc0, word);
    const __m512i acc = _mm512_add_epi32(_mm512_add_epi32(acc0, acc1), _mm512_add_epi32(acc2, acc3));
    a.y[r] = int8_dequant(_mm512_reduce_add_epi32(acc) - 128 * w.row_sum[r], a.x_scale[0], w.scale[r]);
  }
}

// Batch > 1: four rows at a time are expanded to dense bytes (vpexpandb), then every batch
// row meets them 64 columns per step, one activation load feeding four vpdpbusd; all-zero
// column words are skipped.
void bitmask_gemm(const Int8Bitmask& w, const Int8Args& a, std::int64_t r0, std::int64_t r1) {
  constexpr int kRows = 4;
  thread_local AlignedVector<std::int8_t> dense;  // 64-byte rows: every load and store whole-line
  const std::int64_t W = w.words_per_row;
  dense.resize(static_cast<std::size_t>(kRows * W * 64));
  thread_local std::vector<std::uint64_t> any;
  any.resize(static_cast<std::size_t>(W));
  for (std::int64_t r = r0; r < r1; r += kRows) {
    const int nr = static_cast<int>(std::min<std::int64_t>(kRows, r1 - r));
    for (std::int64_t word = 0; word < W; ++word) any[word] = 0;
    for (int i = 0; i < kRows; ++i) {
      std::int8_t* d = dense.data() + i * W * 64;
      if (i >= nr) {  // missing rows of the last group multiply as zeros
        for (std::int64_t word = 0; word < W; ++word) _mm512_storeu_si512(d + word * 64, _mm512_setzero_si512());
        continue;
      }
      const std::uint64_t* bits = w.bits.data() + (r + i) * W;
      const std::int8_t* v = w.values.data() + w.row_ptr[r + i];
      for (std::int64_t word = 0; word < W; ++word) {
        _mm512_storeu_si512(d + word * 64, _mm512_maskz_expandloadu_epi8(bits[word], v));
        v += std::popcount(bits[word]);
        any[word] |= bits[word];
      }
    }
    for (std::int64_t b = 0; b < a.batch; ++b) {
      const std::uint8_t* x = a.xq + b * a.x_stride;
      __m512i acc[kRows] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                            _mm512_setzero_si512()};
      for (std::int64_t word = 0; word < W; ++word) {
        if (!any[word]) continue;
        const __m512i xv = _mm512_loadu_si512(x + word * 64);
        for (int i = 0; i < kRows; ++i)
          acc[i] = _mm512_dpbusd_epi32(acc[i], xv, _mm512_loadu_si512(dense.data() + (i * W + word) * 64));
      }
      for (int i = 0; i < nr; ++i)
        a.y[b * w.rows + r + i] =
            int8_dequant(_mm512_reduce_add_epi32(acc[i]) - 128 * w.row_sum[r + i], a.x_scale[b], w.scale[r + i]);
    }
  }
}

}  // namespace

void int8_bitmask(const Int8Bitmask& w, const Int8Args& a, std::int64_t r0, std::int64_t r1) {
  if (a.batch == 1) bitmask_gemv(w, a, r0, r1);
  else bitmask_gemm(w, a, r0, r1);
}

void int8_nm(const Int8NM& w, const Int8Args& a, std::int64_t r0, std::int64_t r1) {
  const std::int64_t per_row = w.windows_per_row * 64;
  for (std::int64_t b = 0; b < a.batch; ++b) {
    const std::uint8_t* x = a.xq + b * a.x_stride;
    for (std::int64_t r = r0; r < r1; ++r) {
      const std::uint8_t* p = w.pos.data() + r * per_row;
      const std::int8_t* v = w.values.data() + r * per_row;
      __m512i acc = _mm512_setzero_si512();
      for (std::int64_t win = 0; win < w.windows_per_row; ++win) {
        const std::uint8_t* xw = x + win * w.window;
        const __m512i sel = _mm512_permutex2var_epi8(_mm512_loadu_si512(xw), _mm512_loadu_si512(p + win * 64),
                                                     _mm512_loadu_si512(xw + 64));
        acc = _mm512_dpbusd_epi32(acc, sel, _mm512_loadu_si512(v + win * 64));
      }
      a.y[b * w.rows + r] = int8_dequant(_mm512_reduce_add_epi32(acc) - 128 * w.row_sum[r], a.x_scale[b], w.scale[r]);
    }
  }
}

}  // namespace prunus::kernels::avx512
