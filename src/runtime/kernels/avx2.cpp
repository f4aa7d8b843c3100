// AVX2 + FMA kernels. Compiled with those flags; called only when CPUID has them.
#include <immintrin.h>

#include <array>
#include <cstring>

#include "kernels_internal.h"
#include "simd_batch.h"

namespace prunus::kernels::avx2 {
namespace {

struct V8 {
  using Reg = __m256;
  static constexpr std::int64_t kLanes = 8;
  static Reg zero() { return _mm256_setzero_ps(); }
  static Reg set1(float v) { return _mm256_set1_ps(v); }
  static Reg load(const float* p) { return _mm256_loadu_ps(p); }
  static Reg load_n(const float* p, std::int64_t n) { return _mm256_maskload_ps(p, lane_mask(n)); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  static void store(float* p, Reg v) { _mm256_storeu_ps(p, v); }
  static __m256i lane_mask(std::int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
};

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// For an 8-bit mask: where each set lane's value sits among the compacted values, and the
// lane mask itself (AVX2 has no expand instruction).
struct ExpandTable {
  alignas(32) std::array<std::array<std::int32_t, 8>, 256> perm{};
  alignas(32) std::array<std::array<std::int32_t, 8>, 256> mask{};
  ExpandTable() {
    for (int m = 0; m < 256; ++m) {
      int k = 0;
      for (int l = 0; l < 8; ++l) {
        const bool set = m >> l & 1;
        perm[m][l] = set ? k++ : 0;
        mask[m][l] = set ? -1 : 0;
      }
    }
  }
};
const ExpandTable kExpand;

template <bool kNarrow>
float csr_dot(const Csr& w, const float* x, std::uint32_t begin, std::uint32_t end) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  auto idx8 = [&](std::uint32_t i) {
    if constexpr (kNarrow) return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(&w.col16[i])));
    else return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(&w.col32[i]));
  };
  std::uint32_t i = begin;
  for (; i + 16 <= end; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(&w.values[i]), _mm256_i32gather_ps(x, idx8(i), 4), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(&w.values[i + 8]), _mm256_i32gather_ps(x, idx8(i + 8), 4), acc1);
  }
  for (; i + 8 <= end; i += 8)
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(&w.values[i]), _mm256_i32gather_ps(x, idx8(i), 4), acc0);
  float tail = 0.0f;
  for (; i < end; ++i) tail += w.values[i] * x[kNarrow ? w.col16[i] : w.col32[i]];
  return hsum(_mm256_add_ps(acc0, acc1)) + tail;
}

}  // namespace

void csr(const Csr& w, const Args& a, std::int64_t r0, std::int64_t r1) {
  if (a.batch == 1) {
    for (std::int64_t r = r0; r < r1; ++r)
      a.y[r] = w.narrow() ? csr_dot<true>(w, a.x, w.row_ptr[r], w.row_ptr[r + 1])
                          : csr_dot<false>(w, a.x, w.row_ptr[r], w.row_ptr[r + 1]);
    return;
  }
  detail::csr_batch<V8>(w, a, r0, r1);
}

void bitmask(const Bitmask& w, const Args& a, std::int64_t r0, std::int64_t r1) {
  if (a.batch == 1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const std::uint64_t* bits = &w.bits[r * w.words_per_row];
      const float* v = &w.values[w.row_ptr[r]];
      __m256 acc = _mm256_setzero_ps();
      for (std::int64_t wd = 0; wd < w.words_per_row; ++wd) {
        std::uint64_t word = bits[wd];
        const float* x = a.x + wd * 64;
        while (word) {
          const int q = __builtin_ctzll(word) / 8;
          const unsigned m = static_cast<unsigned>(word >> (8 * q)) & 0xff;
          word &= ~(std::uint64_t{0xff} << (8 * q));
          const __m256i lanes = _mm256_load_si256(reinterpret_cast<const __m256i*>(kExpand.mask[m].data()));
          const __m256i perm = _mm256_load_si256(reinterpret_cast<const __m256i*>(kExpand.perm[m].data()));
          // values are padded, so an 8-float load never leaves the array.
          const __m256 vals = _mm256_and_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(v), perm), _mm256_castsi256_ps(lanes));
          acc = _mm256_fmadd_ps(vals, _mm256_maskload_ps(x + 8 * q, lanes), acc);
          v += __builtin_popcount(m);
        }
      }
      a.y[r] = hsum(acc);
    }
    return;
  }
  detail::bitmask_batch<V8>(w, a, r0, r1);
}

void bsr(const Bsr& w, const Args& a, std::int64_t R0, std::int64_t R1) {
  const std::int64_t br = w.br, bc = w.bc, bsz = br * bc;
  if (a.batch == 1 && (bc == 4 || bc == 8) && bsz % 8 == 0 && bsz <= 128) {
    const std::int64_t nvec = bsz / 8;
    alignas(32) float tmp[128];
    alignas(32) float xpad[8];
    for (std::int64_t R = R0; R < R1; ++R) {
      __m256 acc[16];
      for (std::int64_t v = 0; v < nvec; ++v) acc[v] = _mm256_setzero_ps();
      for (std::uint32_t k = w.block_ptr[R]; k < w.block_ptr[R + 1]; ++k) {
        const std::int64_t c0 = std::int64_t(w.block_col[k]) * bc;
        const float* xp = a.x + c0;
        if (c0 + bc > w.cols) {  // ragged last block column: never read past x
          std::memset(xpad, 0, sizeof xpad);
          std::memcpy(xpad, xp, sizeof(float) * static_cast<std::size_t>(w.cols - c0));
          xp = xpad;
        }
        const __m256 xb = bc == 4 ? _mm256_broadcast_ps(reinterpret_cast<const __m128*>(xp)) : _mm256_loadu_ps(xp);
        const float* blk = &w.values[k * bsz];
        for (std::int64_t v = 0; v < nvec; ++v) acc[v] = _mm256_fmadd_ps(_mm256_loadu_ps(blk + 8 * v), xb, acc[v]);
      }
      for (std::int64_t v = 0; v < nvec; ++v) _mm256_store_ps(tmp + 8 * v, acc[v]);
      for (std::int64_t i = 0; i < br && R * br + i < w.rows; ++i) {
        float s = 0.0f;
        for (std::int64_t j = 0; j < bc; ++j) s += tmp[i * bc + j];
        a.y[R * br + i] = s;
      }
    }
    return;
  }
  if (a.batch == 1 || br > 16) return scalar::bsr(w, a, R0, R1);
  detail::bsr_batch<V8>(w, a, R0, R1);
}

void nm(const NM& w, const Args& a, std::int64_t r0, std::int64_t r1) {
  const std::int64_t n = w.n, m = w.m, spr = w.slots_per_row, wpr = w.words_per_row();
  if (a.batch == 1 && m == 2 * n && 8 % n == 0) {
    // 8 slots cover 16 columns: two in-lane permutes and a blend pick them.
    alignas(32) std::int32_t base_arr[8], shift_arr[8];
    for (int j = 0; j < 8; ++j) {
      base_arr[j] = static_cast<std::int32_t>((j / n) * m);
      shift_arr[j] = 4 * j;
    }
    const __m256i base = _mm256_load_si256(reinterpret_cast<const __m256i*>(base_arr));
    const __m256i shift = _mm256_load_si256(reinterpret_cast<const __m256i*>(shift_arr));
    const __m256i nib = _mm256_set1_epi32(15), seven = _mm256_set1_epi32(7);
    for (std::int64_t r = r0; r < r1; ++r) {
      const float* vals = &w.values[r * spr];
      const std::uint64_t* idx = &w.index[r * wpr];
      __m256 acc = _mm256_setzero_ps();
      const std::int64_t windows = (spr + 7) / 8;
      for (std::int64_t wi = 0; wi < windows; ++wi) {
        const std::int64_t slots = std::min<std::int64_t>(8, spr - wi * 8);
        const std::int64_t cols = slots / n * m;
        const float* x = a.x + wi * 16;
        const std::uint32_t half = static_cast<std::uint32_t>(idx[wi / 2] >> (32 * (wi % 2)));
        const __m256i pos = _mm256_add_epi32(_mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(half)), shift), nib), base);
        __m256 xlo, xhi, v;
        if (slots == 8) {
          xlo = _mm256_loadu_ps(x);
          xhi = _mm256_loadu_ps(x + 8);
          v = _mm256_loadu_ps(vals + wi * 8);
        } else {
          xlo = _mm256_maskload_ps(x, V8::lane_mask(std::min<std::int64_t>(8, cols)));
          xhi = _mm256_maskload_ps(x + 8, V8::lane_mask(std::max<std::int64_t>(0, cols - 8)));
          v = _mm256_maskload_ps(vals + wi * 8, V8::lane_mask(slots));
        }
        const __m256 pick = _mm256_blendv_ps(_mm256_permutevar8x32_ps(xlo, pos), _mm256_permutevar8x32_ps(xhi, pos),
                                             _mm256_castsi256_ps(_mm256_cmpgt_epi32(pos, seven)));
        acc = _mm256_fmadd_ps(v, pick, acc);
      }
      a.y[r] = hsum(acc);
    }
    return;
  }
  if (a.batch == 1) return scalar::nm(w, a, r0, r1);
  detail::nm_batch<V8>(w, a, r0, r1);
}

// A slice's 16 lanes as two 8-lane halves; x values by gathers from the window (AVX2 has no
// two-register permute). The positions point only at real columns, so no gather reads past x.
void sell(const Sell& w, const Args& a, std::int64_t s0, std::int64_t s1) {
  constexpr std::int64_t L = Sell::kLanes;
  for (std::int64_t b = 0; b < a.batch; ++b) {
    const float* x = a.x + b * w.cols;
    float* y = a.y + b * w.rows;
    for (std::int64_t s = s0; s < s1; ++s) {
      const float* v = w.values.data() + std::size_t(w.slice_step[s]) * L;
      const std::uint8_t* p = w.pos.data() + std::size_t(w.slice_step[s]) * L;
      __m256 lo0 = _mm256_setzero_ps(), hi0 = _mm256_setzero_ps(), lo1 = _mm256_setzero_ps(), hi1 = _mm256_setzero_ps();
      for (std::uint32_t wi = w.slice_window[s]; wi < w.slice_window[s + 1]; ++wi) {
        const float* xw = x + std::int64_t(w.windows[wi].index) * Sell::kWindow;
        auto gather = [&](const std::uint8_t* pk) {
          return _mm256_i32gather_ps(xw, _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(pk))), 4);
        };
        std::int64_t n = w.windows[wi].steps;
        for (; n >= 2; n -= 2, v += 2 * L, p += 2 * L) {
          lo0 = _mm256_fmadd_ps(_mm256_loadu_ps(v), gather(p), lo0);
          hi0 = _mm256_fmadd_ps(_mm256_loadu_ps(v + 8), gather(p + 8), hi0);
          lo1 = _mm256_fmadd_ps(_mm256_loadu_ps(v + L), gather(p + L), lo1);
          hi1 = _mm256_fmadd_ps(_mm256_loadu_ps(v + L + 8), gather(p + L + 8), hi1);
        }
        if (n > 0) {
          lo0 = _mm256_fmadd_ps(_mm256_loadu_ps(v), gather(p), lo0);
          hi0 = _mm256_fmadd_ps(_mm256_loadu_ps(v + 8), gather(p + 8), hi0);
          v += L;
          p += L;
        }
      }
      alignas(32) float out[L];
      _mm256_store_ps(out, _mm256_add_ps(lo0, lo1));
      _mm256_store_ps(out + 8, _mm256_add_ps(hi0, hi1));
      for (std::int64_t l = 0; l < std::min(L, w.rows - s * L); ++l) y[w.row_of_lane[s * L + l]] = out[l];
    }
  }
}

}  // namespace prunus::kernels::avx2
