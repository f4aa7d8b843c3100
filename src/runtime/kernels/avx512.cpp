// AVX-512 (F, BW, VL, DQ) kernels. Compiled with those flags; called only when CPUID has them.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "kernels_internal.h"
#include "simd_batch.h"

namespace prunus::kernels::avx512 {
namespace {

struct V16 {
  using Reg = __m512;
  static constexpr std::int64_t kLanes = 16;
  static Reg zero() { return _mm512_setzero_ps(); }
  static Reg set1(float v) { return _mm512_set1_ps(v); }
  static Reg load(const float* p) { return _mm512_loadu_ps(p); }
  static Reg load_n(const float* p, std::int64_t n) { return _mm512_maskz_loadu_ps(__mmask16((1u << n) - 1), p); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  static void store(float* p, Reg v) { _mm512_storeu_ps(p, v); }
};

inline __mmask16 first_n(std::int64_t n) { return __mmask16((1u << n) - 1); }

// The sum of four accumulators' lanes.
inline float sum4(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

// How far ahead of use the batch-1 kernels prefetch their (cold) weight streams
// (PRUNUS_PREFETCH bytes; 2 KiB measured best of 0/1/2/4 KiB, bitmask 70% 1.63 -> 1.39 ms).
// Prefetching past the end of an array is harmless (no fault, at most a wasted line).
const std::int64_t kPrefetchBytes = [] {
  const char* v = std::getenv("PRUNUS_PREFETCH");
  return v && *v ? std::atoll(v) : 2048;
}();
// The N:M GEMV prefetches its values into L2 (T2) this far ahead (PRUNUS_PREFETCH_L2 bytes,
// 0: off). Measured on Zen 4, 4096² 2:4 cold, one thread, alternating runs: 2.12–2.16 →
// 1.76–1.83 ms at 16 KiB; T0 at 1–8 KiB was slower than none. The bitmask GEMV uses it at
// 60–75% zeros (see there); CSR keeps its L1 prefetch (L2 was slower at every sparsity).
const std::int64_t kPrefetchL2Bytes = detail::prefetch_l2_bytes();

// Scalar loads instead of vgatherdps: Zen 4's 512-bit gather delivers ~1 element per 1.6
// cycles (measured: CSR GEMV time proportional to nnz at ~2.3 G/s from 80% to 95% sparse,
// hot or cold), three load ports deliver more. Kept out of the vectoriser, which would put the
// gather back.
__attribute__((optimize("no-tree-vectorize"))) float csr_dot_scalar_loads(const float* values, const std::uint16_t* col,
                                                                          const float* x, std::uint32_t begin,
                                                                          std::uint32_t end) {
  // Eight x values per step from scalar loads (four indices per 64-bit load), assembled into
  // one 256-bit register and multiplied with eight values by one FMA: ~1.25 loads per
  // non-zero instead of 3.
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  std::uint32_t i = begin;
  auto eight = [&](std::uint32_t j) {
    std::uint64_t c0, c1;
    std::memcpy(&c0, col + j, 8);
    std::memcpy(&c1, col + j + 4, 8);
    const __m128 lo = _mm_set_ps(x[c0 >> 48], x[(c0 >> 32) & 0xffff], x[(c0 >> 16) & 0xffff], x[c0 & 0xffff]);
    const __m128 hi = _mm_set_ps(x[c1 >> 48], x[(c1 >> 32) & 0xffff], x[(c1 >> 16) & 0xffff], x[c1 & 0xffff]);
    return _mm256_insertf128_ps(_mm256_castps128_ps256(lo), hi, 1);
  };
  for (; i + 16 <= end; i += 16) {
    _mm_prefetch(reinterpret_cast<const char*>(values + i) + kPrefetchBytes, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(col + i) + kPrefetchBytes / 2, _MM_HINT_T0);
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(values + i), eight(i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(values + i + 8), eight(i + 8), acc1);
  }
  for (; i + 8 <= end; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(values + i), eight(i), acc0);
  const __m256 acc = _mm256_add_ps(acc0, acc1);
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  float s = _mm_cvtss_f32(_mm_add_ss(s4, _mm_movehdup_ps(s4)));
  for (; i < end; ++i) s = std::fma(values[i], x[col[i]], s);
  return s;
}

template <bool kNarrow>
float csr_dot(const Csr& w, const float* x, std::uint32_t begin, std::uint32_t end) {
  if constexpr (kNarrow)
    if (g_csr_scalar_loads) return csr_dot_scalar_loads(w.values.data(), w.col16.data(), x, begin, end);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
  auto idx16 = [&](std::uint32_t i) {
    if constexpr (kNarrow) return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(&w.col16[i])));
    else return _mm512_loadu_si512(&w.col32[i]);
  };
  std::uint32_t i = begin;
  for (; i + 64 <= end; i += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(&w.values[i]) + kPrefetchBytes, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(&w.values[i]) + kPrefetchBytes + 64, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(&w.values[i]) + kPrefetchBytes + 128, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(&w.values[i]) + kPrefetchBytes + 192, _MM_HINT_T0);
    if constexpr (kNarrow) {
      _mm_prefetch(reinterpret_cast<const char*>(&w.col16[i]) + kPrefetchBytes / 2, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(&w.col16[i]) + kPrefetchBytes / 2 + 64, _MM_HINT_T0);
    }
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(&w.values[i]), _mm512_i32gather_ps(idx16(i), x, 4), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(&w.values[i + 16]), _mm512_i32gather_ps(idx16(i + 16), x, 4), acc1);
    acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(&w.values[i + 32]), _mm512_i32gather_ps(idx16(i + 32), x, 4), acc2);
    acc3 = _mm512_fmadd_ps(_mm512_loadu_ps(&w.values[i + 48]), _mm512_i32gather_ps(idx16(i + 48), x, 4), acc3);
  }
  for (; i + 32 <= end; i += 32) {
    // Cold weights: ask for the lines ~2 KiB ahead of use (values) and ~1 KiB (indices).
    _mm_prefetch(reinterpret_cast<const char*>(&w.values[i]) + kPrefetchBytes, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(&w.values[i]) + kPrefetchBytes + 64, _MM_HINT_T0);
    if constexpr (kNarrow) _mm_prefetch(reinterpret_cast<const char*>(&w.col16[i]) + kPrefetchBytes / 2, _MM_HINT_T0);
    else {
      _mm_prefetch(reinterpret_cast<const char*>(&w.col32[i]) + kPrefetchBytes, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(&w.col32[i]) + kPrefetchBytes + 64, _MM_HINT_T0);
    }
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(&w.values[i]), _mm512_i32gather_ps(idx16(i), x, 4), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(&w.values[i + 16]), _mm512_i32gather_ps(idx16(i + 16), x, 4), acc1);
  }
  for (; i + 16 <= end; i += 16)
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(&w.values[i]), _mm512_i32gather_ps(idx16(i), x, 4), acc0);
  if (i < end) {
    const __mmask16 m = first_n(end - i);
    __m512i idx;
    if constexpr (kNarrow) idx = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, &w.col16[i]));
    else idx = _mm512_maskz_loadu_epi32(m, &w.col32[i]);
    const __m512 g = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, x, 4);
    acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, &w.values[i]), g, acc0);
  }
  return sum4(acc0, acc1, acc2, acc3);
}

// ---- batch-1 bitmask GEMV (expand kernel)
// Each 64-column mask word is four 16-column chunks; a chunk's values are expanded into their
// columns and multiplied with x densely. A cold GEMV at 50% zeros is limited by how many cache
// lines one core keeps in flight, and that by how many instructions sit between the loads in
// the reorder window: the loop is kept to ~28 instructions a word (offsets by and + popcnt on
// the 64-bit word, masks by k-register shifts, pointers that advance, the prefetch mode a
// template argument; the earlier loop had ~48). With the in-place expand below, the runtime's
// 4096² cold GEMV on one thread (same weights, interleaved with sgemv in one process, library
// before/after alternating): 50% zeros 2.11–2.43 -> 1.85–1.87 ms, 70% 1.06–1.13 -> 0.96–0.99 ms;
// 11008×4096 at 50% 5.55–5.70 -> 4.90–4.94 ms; 4096×11008 at 70% 2.98–3.05 -> 2.37–2.45 ms.
enum class BitmaskPrefetch { None, L1, L2 };

template <BitmaskPrefetch P>
[[gnu::always_inline]] inline void bitmask_prefetch(const float* v, const std::uint64_t* bits) {
  if constexpr (P == BitmaskPrefetch::L1) {
    _mm_prefetch(reinterpret_cast<const char*>(v) + kPrefetchBytes, _MM_HINT_T0);
    if ((reinterpret_cast<std::uintptr_t>(bits) & 63) == 0)  // once a mask line
      _mm_prefetch(reinterpret_cast<const char*>(bits) + kPrefetchBytes / 4, _MM_HINT_T0);
  } else if constexpr (P == BitmaskPrefetch::L2) {  // a word's values span up to 256 B: two lines a word
    _mm_prefetch(reinterpret_cast<const char*>(v) + kPrefetchL2Bytes, _MM_HINT_T2);
    _mm_prefetch(reinterpret_cast<const char*>(v + 16) + kPrefetchL2Bytes, _MM_HINT_T2);
    if ((reinterpret_cast<std::uintptr_t>(bits) & 63) == 0)
      _mm_prefetch(reinterpret_cast<const char*>(bits) + kPrefetchL2Bytes / 8, _MM_HINT_T2);
  }
}

// vexpandps into the register that holds its source. On Zen 4 the zeroing expand waits for its
// destination's previous value: the compiler gave all four chunks of a word one destination
// register, which chained the expands (4096² cold at 70% zeros 1.13 -> 1.9 ms; in a harness 30%
// density 1.33 ms with distinct registers, 1.91 ms with one). Written in place, the only input
// it waits for is the load it needs anyway. The asm also keeps the load a separate instruction:
// folded into vexpandps's memory form it runs ~1.6× slower on Zen 4 (90% sparse 4096² GEMV).
[[gnu::always_inline]] inline __m512 expand_in_place(__mmask16 m, __m512 v) {
  asm("vexpandps %0, %0%{%1%}%{z%}" : "+v"(v) : "Yk"(m));
  return v;
}

// One full mask word of one row: four chunks against x0..x3 (x's 64 columns).
[[gnu::always_inline]] inline void bitmask_word(std::uint64_t word, const float*& v, __m512 x0, __m512 x1, __m512 x2,
                                                __m512 x3, __m512& c0, __m512& c1, __m512& c2, __m512& c3) {
  const __mmask64 k = _cvtu64_mask64(word);
  const __mmask16 m0 = __mmask16(k), m1 = __mmask16(_kshiftri_mask64(k, 16)), m2 = __mmask16(_kshiftri_mask64(k, 32)),
                  m3 = __mmask16(_kshiftri_mask64(k, 48));
  const std::uint64_t p0 = _mm_popcnt_u64(word & 0xffffu), p1 = _mm_popcnt_u64(word & 0xffffffffu),
                      p2 = _mm_popcnt_u64(word & 0xffffffffffffu);
  // values are padded by 16 floats, so these loads never leave the array.
  c0 = _mm512_fmadd_ps(expand_in_place(m0, _mm512_loadu_ps(v)), x0, c0);
  c1 = _mm512_fmadd_ps(expand_in_place(m1, _mm512_loadu_ps(v + p0)), x1, c1);
  c2 = _mm512_fmadd_ps(expand_in_place(m2, _mm512_loadu_ps(v + p1)), x2, c2);
  c3 = _mm512_fmadd_ps(expand_in_place(m3, _mm512_loadu_ps(v + p2)), x3, c3);
  v += _mm_popcnt_u64(word);
}

// The row's last, partial word (cols % 64 columns): masked x loads never read past x.
[[gnu::always_inline]] inline void bitmask_tail(std::uint64_t word, const float*& v, const float* x, __m512& acc) {
  for (int q = 0; q < 4; ++q, word >>= 16) {
    const __mmask16 m = __mmask16(word);
    acc = _mm512_fmadd_ps(expand_in_place(m, _mm512_loadu_ps(v)), _mm512_maskz_loadu_ps(m, x + 16 * q), acc);
    v += __builtin_popcount(m);
  }
}

template <BitmaskPrefetch P>
void bitmask_gemv(const Bitmask& w, const float* x, float* y, std::int64_t r0, std::int64_t r1) {
  const std::int64_t full_words = w.cols / 64;
  std::int64_t r = r0;
  if (w.cols > g_bitmask_pair_cols) {
    // x larger than L1 (11008 columns: 43 KiB) is read from L2 once a row, more bytes than
    // the row's weights at 50% zeros. Two rows a pass share each x load (their value streams
    // are adjacent, so the prefetcher still sees one region).
    for (; r + 2 <= r1; r += 2) {
      const std::uint64_t* bits0 = &w.bits[r * w.words_per_row];
      const std::uint64_t* bits1 = bits0 + w.words_per_row;
      const std::uint64_t* const end0 = bits0 + full_words;
      const float* v0 = &w.values[w.row_ptr[r]];
      const float* v1 = &w.values[w.row_ptr[r + 1]];
      const float* xp = x;
      __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
      for (; bits0 < end0; ++bits0, ++bits1, xp += 64) {
        bitmask_prefetch<P>(v0, bits0);
        bitmask_prefetch<P>(v1, bits1);
        __m512 x0 = _mm512_loadu_ps(xp), x1 = _mm512_loadu_ps(xp + 16), x2 = _mm512_loadu_ps(xp + 32),
               x3 = _mm512_loadu_ps(xp + 48);
        asm("" : "+v"(x0), "+v"(x1), "+v"(x2), "+v"(x3));  // loaded once for both rows, not folded twice
        bitmask_word(*bits0, v0, x0, x1, x2, x3, a0, a1, a2, a3);
        bitmask_word(*bits1, v1, x0, x1, x2, x3, b0, b1, b2, b3);
      }
      if (full_words < w.words_per_row) {
        bitmask_tail(*bits0, v0, xp, a0);
        bitmask_tail(*bits1, v1, xp, b0);
      }
      y[r] = sum4(a0, a1, a2, a3);
      y[r + 1] = sum4(b0, b1, b2, b3);
    }
  }
  for (; r < r1; ++r) {
    const std::uint64_t* bits = &w.bits[r * w.words_per_row];
    const std::uint64_t* const end = bits + full_words;
    const float* v = &w.values[w.row_ptr[r]];
    const float* xp = x;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (; bits < end; ++bits, xp += 64) {
      bitmask_prefetch<P>(v, bits);
      bitmask_word(*bits, v, _mm512_loadu_ps(xp), _mm512_loadu_ps(xp + 16), _mm512_loadu_ps(xp + 32),
                   _mm512_loadu_ps(xp + 48), a0, a1, a2, a3);
    }
    if (full_words < w.words_per_row) bitmask_tail(*bits, v, xp, a0);
    y[r] = sum4(a0, a1, a2, a3);
  }
}
}  // namespace

bool g_use_vbmi2 = __builtin_cpu_supports("avx512vbmi2") && !std::getenv("PRUNUS_NO_VBMI2");
bool g_csr_scalar_loads = [] {
  const char* v = std::getenv("PRUNUS_CSR_GATHER");
  return !(v && v[0] == '1');
}();
double g_vbmi2_max_density = 0.2;
std::int64_t g_bitmask_pair_cols = 8192;

void csr(const Csr& w, const Args& a, std::int64_t r0, std::int64_t r1) {
  if (a.batch == 1) {
    for (std::int64_t r = r0; r < r1; ++r)
      a.y[r] = w.narrow() ? csr_dot<true>(w, a.x, w.row_ptr[r], w.row_ptr[r + 1])
                          : csr_dot<false>(w, a.x, w.row_ptr[r], w.row_ptr[r + 1]);
    return;
  }
  detail::csr_batch<V16>(w, a, r0, r1);
}

void bitmask(const Bitmask& w, const Args& a, std::int64_t r0, std::int64_t r1) {
  // The VBMI2 kernel's cost grows with the non-zeros, the expand kernel's with the columns:
  // VBMI2 wins only on very sparse rows (measured crossover near 80% zeros on Zen 4).
  const double density = w.rows > 0 && w.cols > 0 ? double(w.nnz()) / double(w.rows * w.cols) : 0.0;
  if (a.batch == 1 && g_use_vbmi2 && density < g_vbmi2_max_density) return bitmask_gemv_vbmi2(w, a, r0, r1);
  if (a.batch == 1) {
    // Software prefetch, by density (cold 4096², one thread, Zen 4; an in-process harness
    // interleaving the variants, medians of 9): at 50–55% zeros none is best (the hardware
    // prefetcher keeps up; 50%: none 2.07, L1 2 KiB ahead 2.32, L2 16 KiB ahead 2.42 ms); at
    // 60–75% zeros L2 16 KiB ahead (70%: 1.21 against 1.41 for L1 and 1.58 for none); from
    // ~78% zeros L1 2 KiB ahead (80%: 1.18 against 1.33 for L2). PRUNUS_PREFETCH_L2=0 restores
    // the previous rule (L1 below 40% density).
    if (kPrefetchBytes > 0 && (kPrefetchL2Bytes > 0 ? density < 0.23 : density < 0.4))
      return bitmask_gemv<BitmaskPrefetch::L1>(w, a.x, a.y, r0, r1);
    if (kPrefetchL2Bytes > 0 && density >= 0.23 && density < 0.45)
      return bitmask_gemv<BitmaskPrefetch::L2>(w, a.x, a.y, r0, r1);
    return bitmask_gemv<BitmaskPrefetch::None>(w, a.x, a.y, r0, r1);
  }
  detail::bitmask_batch<V16>(w, a, r0, r1);
}

void bsr(const Bsr& w, const Args& a, std::int64_t R0, std::int64_t R1) {
  const std::int64_t br = w.br, bc = w.bc, bsz = br * bc;
  if (a.batch == 1 && (bc == 4 || bc == 8 || bc == 16) && bsz % 16 == 0 && bsz <= 128) {
    const std::int64_t nvec = bsz / 16;
    alignas(64) float tmp[128];
    for (std::int64_t R = R0; R < R1; ++R) {
      __m512 acc[8];
      for (std::int64_t v = 0; v < nvec; ++v) acc[v] = _mm512_setzero_ps();
      for (std::uint32_t k = w.block_ptr[R]; k < w.block_ptr[R + 1]; ++k) {
        const std::int64_t c0 = std::int64_t(w.block_col[k]) * bc;
        const float* xp = a.x + c0;
        const std::int64_t valid = std::min(bc, w.cols - c0);
        __m512 xb;
        if (bc == 4) xb = _mm512_broadcast_f32x4(_mm_maskz_loadu_ps(__mmask8((1u << valid) - 1), xp));
        else if (bc == 8) xb = _mm512_broadcast_f32x8(_mm256_maskz_loadu_ps(__mmask8((1u << valid) - 1), xp));
        else xb = _mm512_maskz_loadu_ps(first_n(valid), xp);
        const float* blk = &w.values[k * bsz];
        for (std::int64_t v = 0; v < nvec; ++v) acc[v] = _mm512_fmadd_ps(_mm512_loadu_ps(blk + 16 * v), xb, acc[v]);
      }
      for (std::int64_t v = 0; v < nvec; ++v) _mm512_store_ps(tmp + 16 * v, acc[v]);
      for (std::int64_t i = 0; i < br && R * br + i < w.rows; ++i) {
        float s = 0.0f;
        for (std::int64_t j = 0; j < bc; ++j) s += tmp[i * bc + j];
        a.y[R * br + i] = s;
      }
    }
    return;
  }
  if (a.batch == 1 || br > 16) return scalar::bsr(w, a, R0, R1);
  detail::bsr_batch<V16>(w, a, R0, R1);
}

void nm(const NM& w, const Args& a, std::int64_t r0, std::int64_t r1) {
  const std::int64_t n = w.n, m = w.m, spr = w.slots_per_row, wpr = w.words_per_row();
  if (a.batch == 1 && m == 2 * n && 16 % n == 0) {
    // 16 slots cover 32 columns: gather them from two registers with one permute.
    alignas(64) std::int32_t base_arr[16], shift_arr[16];
    for (int j = 0; j < 16; ++j) {
      base_arr[j] = static_cast<std::int32_t>((j / n) * m);
      shift_arr[j] = 4 * (j % 8);
    }
    const __m512i base = _mm512_load_si512(base_arr), shift = _mm512_load_si512(shift_arr);
    const __m512i nib = _mm512_set1_epi32(15);
    for (std::int64_t r = r0; r < r1; ++r) {
      const float* vals = &w.values[r * spr];
      const std::uint64_t* idx = &w.index[r * wpr];
      __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
      auto window = [&](std::int64_t wi, __mmask16 slot_mask, __mmask16 lo_mask, __mmask16 hi_mask, __m512& acc) {
        const float* x = a.x + wi * 32;
        const std::uint64_t word = idx[wi];
        const __m512i sel = _mm512_mask_blend_epi32(0xff00, _mm512_set1_epi32(static_cast<int>(word)),
                                                    _mm512_set1_epi32(static_cast<int>(word >> 32)));
        const __m512i pos = _mm512_add_epi32(_mm512_and_si512(_mm512_srlv_epi32(sel, shift), nib), base);
        const __m512 xs = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(lo_mask, x), pos, _mm512_maskz_loadu_ps(hi_mask, x + 16));
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(slot_mask, vals + wi * 16), xs, acc);
      };
      const std::int64_t full = spr / 16;
      std::int64_t wi = 0;
      for (; wi + 2 <= full; wi += 2) {
        if (kPrefetchL2Bytes > 0) {  // two windows: 128 B of values, 16 B of indices
          _mm_prefetch(reinterpret_cast<const char*>(vals + wi * 16) + kPrefetchL2Bytes, _MM_HINT_T2);
          _mm_prefetch(reinterpret_cast<const char*>(vals + wi * 16 + 16) + kPrefetchL2Bytes, _MM_HINT_T2);
          if (wi % 8 == 0) _mm_prefetch(reinterpret_cast<const char*>(idx + wi) + kPrefetchL2Bytes / 8, _MM_HINT_T2);
        }
        window(wi, 0xffff, 0xffff, 0xffff, acc0);
        window(wi + 1, 0xffff, 0xffff, 0xffff, acc1);
      }
      if (wi < full) window(wi++, 0xffff, 0xffff, 0xffff, acc0);
      if (const std::int64_t rest = spr - full * 16; rest > 0) {
        const std::int64_t cols_left = rest / n * m;
        window(wi, first_n(rest), first_n(std::min<std::int64_t>(16, cols_left)),
               first_n(std::max<std::int64_t>(0, cols_left - 16)), acc0);
      }
      a.y[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    }
    return;
  }
  if (a.batch == 1) return scalar::nm(w, a, r0, r1);
  detail::nm_batch<V16>(w, a, r0, r1);
}

namespace {

// The window's 32 x values as two registers; the last window never reads past x.
inline void sell_window(const float* x, std::int64_t c0, std::int64_t cols, __m512& lo, __m512& hi) {
  const std::int64_t left = cols - c0;
  if (left >= 32) {
    lo = _mm512_loadu_ps(x + c0);
    hi = _mm512_loadu_ps(x + c0 + 16);
  } else {
    lo = _mm512_maskz_loadu_ps(first_n(std::min<std::int64_t>(16, left)), x + c0);
    hi = left > 16 ? _mm512_maskz_loadu_ps(first_n(left - 16), x + c0 + 16) : _mm512_setzero_ps();
  }
}

inline __m512i sell_lanes(const std::uint8_t* p) {
  return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// One row of X. One step: 16 byte positions widened to lane indices pick 16 of the window's 32
// x values (vpermt2ps over two registers) for one FMA. Bound by the bytes it reads (storing
// the positions as 32-bit indices, which saves the widening, ran 1.35× slower), so four
// independent accumulators are enough. Measured on LeNet-300-100's first layer (300×784, 92%
// zeros, L2-hot, Zen 4): 2.7–2.9 µs against 5.6–5.9 µs for the CSR GEMV and 10.5–11 µs dense.
void sell_gemv(const Sell& w, const float* x, float* y, std::int64_t s0, std::int64_t s1) {
  constexpr std::int64_t L = Sell::kLanes;
  for (std::int64_t s = s0; s < s1; ++s) {
    const float* v = w.values.data() + std::size_t(w.slice_step[s]) * L;
    const std::uint8_t* p = w.pos.data() + std::size_t(w.slice_step[s]) * L;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps(),
           acc3 = _mm512_setzero_ps();
    for (std::uint32_t wi = w.slice_window[s]; wi < w.slice_window[s + 1]; ++wi) {
      __m512 lo, hi;
      sell_window(x, std::int64_t(w.windows[wi].index) * Sell::kWindow, w.cols, lo, hi);
      auto step = [&](const float* vk, const std::uint8_t* pk, __m512 acc) {
        return _mm512_fmadd_ps(_mm512_loadu_ps(vk), _mm512_permutex2var_ps(lo, sell_lanes(pk), hi), acc);
      };
      std::int64_t n = w.windows[wi].steps;
      for (; n >= 4; n -= 4, v += 4 * L, p += 4 * L) {
        acc0 = step(v, p, acc0);
        acc1 = step(v + L, p + L, acc1);
        acc2 = step(v + 2 * L, p + 2 * L, acc2);
        acc3 = step(v + 3 * L, p + 3 * L, acc3);
      }
      for (; n > 0; --n, v += L, p += L) acc0 = step(v, p, acc0);
    }
    alignas(64) float out[L];
    _mm512_store_ps(out, _mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
    for (std::int64_t l = 0; l < std::min(L, w.rows - s * L); ++l) y[w.row_of_lane[s * L + l]] = out[l];
  }
}

// B (2–4) rows of X at once: each step's values and positions are read once for all of them,
// then one permute and one FMA per row (B independent accumulator chains).
template <int B>
void sell_rows(const Sell& w, const float* x, float* y, std::int64_t s0, std::int64_t s1) {
  constexpr std::int64_t L = Sell::kLanes;
  for (std::int64_t s = s0; s < s1; ++s) {
    const float* v = w.values.data() + std::size_t(w.slice_step[s]) * L;
    const std::uint8_t* p = w.pos.data() + std::size_t(w.slice_step[s]) * L;
    __m512 acc[B];
#pragma GCC unroll 4
    for (int b = 0; b < B; ++b) acc[b] = _mm512_setzero_ps();
    for (std::uint32_t wi = w.slice_window[s]; wi < w.slice_window[s + 1]; ++wi) {
      const std::int64_t c0 = std::int64_t(w.windows[wi].index) * Sell::kWindow;
      __m512 lo[B], hi[B];
#pragma GCC unroll 4
      for (int b = 0; b < B; ++b) sell_window(x + b * w.cols, c0, w.cols, lo[b], hi[b]);
      for (std::int64_t n = w.windows[wi].steps; n > 0; --n, v += L, p += L) {
        const __m512 val = _mm512_loadu_ps(v);
        const __m512i idx = sell_lanes(p);
#pragma GCC unroll 4
        for (int b = 0; b < B; ++b) acc[b] = _mm512_fmadd_ps(val, _mm512_permutex2var_ps(lo[b], idx, hi[b]), acc[b]);
      }
    }
    alignas(64) float out[L];
#pragma GCC unroll 4
    for (int b = 0; b < B; ++b) {
      _mm512_store_ps(out, acc[b]);
      for (std::int64_t l = 0; l < std::min(L, w.rows - s * L); ++l) y[b * w.rows + w.row_of_lane[s * L + l]] = out[l];
    }
  }
}

}  // namespace

void sell(const Sell& w, const Args& a, std::int64_t s0, std::int64_t s1) {
  for (std::int64_t b = 0; b < a.batch; b += 4) {
    const float* x = a.x + b * w.cols;
    float* y = a.y + b * w.rows;
    switch (std::min<std::int64_t>(4, a.batch - b)) {
      case 1: sell_gemv(w, x, y, s0, s1); break;
      case 2: sell_rows<2>(w, x, y, s0, s1); break;
      case 3: sell_rows<3>(w, x, y, s0, s1); break;
      default: sell_rows<4>(w, x, y, s0, s1); break;
    }
  }
}

}  // namespace prunus::kernels::avx512
