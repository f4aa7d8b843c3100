// Internal: the batch > 1 path shared by the SIMD families. One weight at a time is
// broadcast and multiplied into a run of the batch read from xt ([cols × batch]), so the
// sparse structure is walked once per 64 batch columns, not once per batch column.
#pragma once

#include <algorithm>
#include <type_traits>

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
      // A partial chunk (batch 2…63, or the tail): 1–4 vectors, each index a constant. Indexed
      // with a run-time k, acc[] lived in memory and every FMA waited on a store-forward:
      // 4096² 2:4 at batch 4 ran 3.5× slower than at batch 64 (measured, Zen 4).
      std::int64_t count[4];
      for (int k = 0; k < 4; ++k) count[k] = std::clamp<std::int64_t>(nb - k * Vec::kLanes, 0, Vec::kLanes);
      auto partial = [&](auto vectors) {
        constexpr int kVectors = decltype(vectors)::value;
        each_nz([&](std::int64_t c, float v) {
          const auto vv = Vec::set1(v);
          const float* p = xt + c * stride;
          acc[0] = Vec::fma(vv, Vec::load_n(p, count[0]), acc[0]);
          if constexpr (kVectors > 1) acc[1] = Vec::fma(vv, Vec::load_n(p + Vec::kLanes, count[1]), acc[1]);
          if constexpr (kVectors > 2) acc[2] = Vec::fma(vv, Vec::load_n(p + 2 * Vec::kLanes, count[2]), acc[2]);
          if constexpr (kVectors > 3) acc[3] = Vec::fma(vv, Vec::load_n(p + 3 * Vec::kLanes, count[3]), acc[3]);
        });
      };
      switch ((nb + Vec::kLanes - 1) / Vec::kLanes) {
        case 1: partial(std::integral_constant<int, 1>{}); break;
        case 2: partial(std::integral_constant<int, 2>{}); break;
        case 3: partial(std::integral_constant<int, 3>{}); break;
        default: partial(std::integral_constant<int, 4>{}); break;
      }
    }
    for (int k = 0; k < 4; ++k) Vec::store(out + k * Vec::kLanes, acc[k]);
    for (std::int64_t b = 0; b < nb; ++b) a.y[(b0 + b) * rows + r] = out[b];
  }
}

// The batch > 1 kernels of each format, shared by the SIMD families (each instantiates them
// with its own vector traits, compiled for its own ISA).
template <class Vec>
void csr_batch(const Csr& w, const Args& a, std::int64_t r0, std::int64_t r1) {
  for (std::int64_t r = r0; r < r1; ++r)
    batch_row<Vec>(a, w.rows, r, [&](auto&& fn) {
      for (std::uint32_t i = w.row_ptr[r]; i < w.row_ptr[r + 1]; ++i) fn(w.narrow() ? w.col16[i] : w.col32[i], w.values[i]);
    });
}

template <class Vec>
void bitmask_batch(const Bitmask& w, const Args& a, std::int64_t r0, std::int64_t r1) {
  for (std::int64_t r = r0; r < r1; ++r)
    batch_row<Vec>(a, w.rows, r, [&](auto&& fn) {
      const std::uint64_t* bits = &w.bits[r * w.words_per_row];
      std::uint32_t i = w.row_ptr[r];
      for (std::int64_t wd = 0; wd < w.words_per_row; ++wd)
        for (std::uint64_t word = bits[wd]; word; word &= word - 1) fn(wd * 64 + __builtin_ctzll(word), w.values[i++]);
    });
}

template <class Vec>
void nm_batch(const NM& w, const Args& a, std::int64_t r0, std::int64_t r1) {
  const std::int64_t n = w.n, m = w.m, spr = w.slots_per_row, wpr = w.words_per_row();
  for (std::int64_t r = r0; r < r1; ++r)
    batch_row<Vec>(a, w.rows, r, [&](auto&& fn) {
      const float* vals = &w.values[r * spr];
      const std::uint64_t* idx = &w.index[r * wpr];
      // Slot s is the (s mod n)-th kept weight of group s / n, at column group·m + its 4-bit
      // index: walked with counters, since once the accumulators stay in registers the
      // divisions by the run-time n are the bottleneck (2:4 at batch 4: 16.5 -> 10.6 ms).
      std::int64_t s = 0, in_group = 0, group_col = 0;
      for (std::int64_t wd = 0; wd < wpr; ++wd) {
        std::uint64_t word = idx[wd];
        for (const std::int64_t end = std::min<std::int64_t>(spr, s + 16); s < end; ++s, word >>= 4) {
          const float v = vals[s];
          if (v != 0.0f) fn(group_col + std::int64_t(word & 15), v);
          if (++in_group == n) in_group = 0, group_col += m;
        }
      }
    });
}

// BSR: one register of batch columns per block row (br ≤ 16 accumulators).
template <class Vec>
void bsr_batch(const Bsr& w, const Args& a, std::int64_t R0, std::int64_t R1) {
  const std::int64_t br = w.br, bc = w.bc, bsz = br * bc;
  alignas(64) float out[Vec::kLanes];
  for (std::int64_t R = R0; R < R1; ++R)
    for (std::int64_t b0 = 0; b0 < a.batch; b0 += Vec::kLanes) {
      const std::int64_t nb = std::min<std::int64_t>(Vec::kLanes, a.batch - b0);
      typename Vec::Reg acc[16];
      for (std::int64_t i = 0; i < br; ++i) acc[i] = Vec::zero();
      for (std::uint32_t k = w.block_ptr[R]; k < w.block_ptr[R + 1]; ++k) {
        const std::int64_t c0 = std::int64_t(w.block_col[k]) * bc;
        const float* blk = &w.values[k * bsz];
        for (std::int64_t j = 0; j < bc && c0 + j < w.cols; ++j) {
          const auto xv = Vec::load_n(a.xt + (c0 + j) * a.batch + b0, nb);
          for (std::int64_t i = 0; i < br; ++i) acc[i] = Vec::fma(Vec::set1(blk[i * bc + j]), xv, acc[i]);
        }
      }
      for (std::int64_t i = 0; i < br && R * br + i < w.rows; ++i) {
        Vec::store(out, acc[i]);
        for (std::int64_t b = 0; b < nb; ++b) a.y[(b0 + b) * w.rows + R * br + i] = out[b];
      }
    }
}

}  // namespace prunus::kernels::detail
