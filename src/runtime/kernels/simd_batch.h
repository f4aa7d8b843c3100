// Internal: the batch > 1 path shared by the SIMD families. One weight at a time is
// broadcast and multiplied into a run of the batch read from xt ([cols × batch]), so the
// sparse structure is walked once per 64 batch columns, not once per batch column.
#pragma once

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "panels.h"

namespace prunus::kernels::detail {

// Large batches walk the columns in panels. X^T is cols × batch floats: once it outgrows L2
// (4096 columns at batch 256 is 4 MiB) every non-zero's run of the batch came from L3, and the
// products ran at L3 bandwidth (4096², 90%, batch 256: 61 GB/s of X^T for 15 G multiply-adds/s).
// A panel's slice of X^T (panel_bytes() of it) stays in L2 while every row of the range walks
// its non-zeros in those columns; each row's partial sums live in a row-major scratch buffer
// between panels (budget: g_panel_bytes, kernels_internal.h).
inline std::int64_t panel_bytes() { return g_panel_bytes; }

// Columns per panel (a multiple of 64), or cols when one panel holds them all. Panels start
// only when X^T is over four budgets (2 MiB): below that most of it stays in L2 anyway and
// the scratch passes cost more than they save (4096², 90%, batch 64, two 2048-column panels:
// 6.1 -> 6.7 ms). Past it they measured 1.09–1.40× faster (batch 256 on every shape, 50–95%).
inline std::int64_t panel_cols(std::int64_t batch, std::int64_t cols) {
  if (panel_bytes() <= 0 || cols * batch * 4 <= 4 * panel_bytes()) return cols;
  const std::int64_t fit = panel_bytes() / (4 * batch) / 64 * 64;
  const std::int64_t p = std::max<std::int64_t>(64, fit);
  return p >= cols ? cols : p;
}

// N whole vectors of the batch for one run of non-zeros: acc[k] += Σ v · xt[c, b0 + k·lanes…].
// The fold keeps every accumulator index a constant, so they stay in registers.
template <class Vec, int N, class EachNz, std::size_t... K>
[[gnu::always_inline]] inline void full_walk(const float* xt, std::int64_t stride, typename Vec::Reg (&acc)[N],
                                             EachNz& each_nz, std::index_sequence<K...>) {
  each_nz([&](std::int64_t c, float v) {
    const auto vv = Vec::set1(v);
    const float* p = xt + c * stride;
    ((acc[K] = Vec::fma(vv, Vec::load(p + std::int64_t(K) * Vec::kLanes), acc[K])), ...);
  });
}

// One chunk (≤ 4 vectors) of the batch for one run of non-zeros: acc += Σ v · xt[c, b0…].
// Always inlined: as a call, acc[] went through memory and every FMA waited on a store-forward
// (4096² 2:4 at batch 4: 3.5× slower; the partial-chunk note below is the same effect).
template <class Vec, class EachNz>
[[gnu::always_inline]] inline void chunk_walk(const float* xt, std::int64_t stride, std::int64_t nb, typename Vec::Reg (&acc)[4],
                       EachNz each_nz) {
  if (nb == 4 * Vec::kLanes) return full_walk<Vec, 4>(xt, stride, acc, each_nz, std::make_index_sequence<4>{});
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

// One row's run of non-zeros across the whole batch: out[0, batch) = (init ? init : 0) + Σ v ·
// X^T[c, ·]. Eight vectors at a time where the batch allows (each stored value and index read
// once per 8 multiply-adds: 8–15% faster at batch 256), then chunks of up to four. init and
// out hold whole chunks of four vectors (the scratch rows are padded so).
template <class Vec, class EachNz>
[[gnu::always_inline]] inline void row_walk(const Args& a, const EachNz& each_nz, const float* init, float* out) {
  constexpr std::int64_t kChunk = 4 * Vec::kLanes;
  std::int64_t b0 = 0;
  for (; b0 + 2 * kChunk <= a.batch; b0 += 2 * kChunk) {
    typename Vec::Reg acc[8];
    for (int k = 0; k < 8; ++k) acc[k] = init ? Vec::load(init + b0 + k * Vec::kLanes) : Vec::zero();
    full_walk<Vec, 8>(a.xt + b0, a.batch, acc, each_nz, std::make_index_sequence<8>{});  // eight vectors: 128 columns on AVX-512
    for (int k = 0; k < 8; ++k) Vec::store(out + b0 + k * Vec::kLanes, acc[k]);
  }
  for (; b0 < a.batch; b0 += kChunk) {
    typename Vec::Reg acc[4];
    for (int k = 0; k < 4; ++k) acc[k] = init ? Vec::load(init + b0 + k * Vec::kLanes) : Vec::zero();
    chunk_walk<Vec>(a.xt + b0, a.batch, std::min(kChunk, a.batch - b0), acc, each_nz);
    for (int k = 0; k < 4; ++k) Vec::store(out + b0 + k * Vec::kLanes, acc[k]);
  }
}

// Rows that share their columns. In a block pattern (4×4 blocks kept or dropped whole) four
// neighbouring rows hold their non-zeros in the same columns. Walked one row at a time, every
// multiply-add loaded its own run of X^T, from L2 once X^T outgrows L1, and L2 was the bound:
// 768×3072 4×4-block 90% at batch 256, 3.2 ms for 60 M multiply-adds, a third of the FMA
// rate. Walked four rows at a time, each load of X^T feeds four rows' accumulators.
inline constexpr int kGroupRows = 4;

// Vectors of the batch per group walk: 4 rows × V accumulators, plus the four broadcast
// weights and one X^T vector, must stay in registers (32 zmm; 16 ymm on AVX2).
template <class Vec>
constexpr int group_vectors() {
  return Vec::kLanes >= 16 ? 4 : 2;
}

// Vector K of four rows' accumulators: acc[g][K] += w_g · xt[K·lanes…] (masked to `last`
// lanes when Masked).
template <class Vec, int V, int K, bool Masked>
[[gnu::always_inline]] inline void group_fma(typename Vec::Reg (&acc)[kGroupRows][V], const float* p, std::int64_t last,
                                             typename Vec::Reg w0, typename Vec::Reg w1, typename Vec::Reg w2,
                                             typename Vec::Reg w3) {
  const auto x = Masked ? Vec::load_n(p + K * Vec::kLanes, last) : Vec::load(p + K * Vec::kLanes);
  acc[0][K] = Vec::fma(w0, x, acc[0][K]);
  acc[1][K] = Vec::fma(w1, x, acc[1][K]);
  acc[2][K] = Vec::fma(w2, x, acc[2][K]);
  acc[3][K] = Vec::fma(w3, x, acc[3][K]);
}

// NV vectors (the last one `last` lanes wide when Partial) of four rows' accumulators over one
// run of non-zeros: acc[g][k] += v[g·gs] · xt[c, k·lanes…] for each (c, v) the walk gives.
// Every accumulator index is a constant (folds, no loops), so the 16 stay in registers: with
// loops over them GCC kept the array in memory and stored each sum (slower than one row).
template <class Vec, int V, bool Partial, class EachNz, int... K>
[[gnu::always_inline]] inline void group_walk(const float* xt, std::int64_t stride, std::int64_t gs, std::int64_t last,
                                              typename Vec::Reg (&acc)[kGroupRows][V], const EachNz& each_nz,
                                              std::integer_sequence<int, K...>) {
  constexpr int NV = sizeof...(K);
  each_nz([&](std::int64_t c, const float* v) __attribute__((always_inline)) {
    const auto w0 = Vec::set1(v[0]), w1 = Vec::set1(v[gs]), w2 = Vec::set1(v[2 * gs]), w3 = Vec::set1(v[3 * gs]);
    const float* p = xt + c * stride;
    (group_fma<Vec, V, K, Partial && K + 1 == NV>(acc, p, last, w0, w1, w2, w3), ...);
  });
}

// acc[g][k] = init row g's vector k (or zero), and back: folds, for the reason above.
template <class Vec, int V, int... I>
[[gnu::always_inline]] inline void group_load(typename Vec::Reg (&acc)[kGroupRows][V], const float* init,
                                              std::int64_t stride, std::integer_sequence<int, I...>) {
  ((acc[I / V][I % V] = init ? Vec::load(init + (I / V) * stride + (I % V) * Vec::kLanes) : Vec::zero()), ...);
}
template <class Vec, int V, int... I>
[[gnu::always_inline]] inline void group_store(typename Vec::Reg (&acc)[kGroupRows][V], float* out, std::int64_t stride,
                                               std::integer_sequence<int, I...>) {
  (Vec::store(out + (I / V) * stride + (I % V) * Vec::kLanes, acc[I / V][I % V]), ...);
}

// Four rows' run of non-zeros across the whole batch: out row g (out + g·out_stride) =
// (init ? init row g : 0) + Σ v[g·gs] · X^T[c, ·]. init and out rows hold whole chunks of four
// vectors (the scratch rows are padded so).
template <class Vec, class EachNz>
[[gnu::always_inline]] inline void group_row_walk(const Args& a, const EachNz& each_nz, std::int64_t gs,
                                                  const float* init, float* out, std::int64_t out_stride) {
  constexpr int V = group_vectors<Vec>();
  static_assert(V >= 2 && V <= 4, "the partial-chunk switch below covers 1..4 vectors");
  constexpr std::int64_t kChunk = V * Vec::kLanes;
  constexpr auto kAll = std::make_integer_sequence<int, kGroupRows * V>{};
  for (std::int64_t b0 = 0; b0 < a.batch; b0 += kChunk) {
    typename Vec::Reg acc[kGroupRows][V];
    group_load<Vec, V>(acc, init ? init + b0 : nullptr, out_stride, kAll);
    const std::int64_t nb = std::min(kChunk, a.batch - b0);
    const std::int64_t nv = (nb + Vec::kLanes - 1) / Vec::kLanes, last = nb - (nv - 1) * Vec::kLanes;
    const float* xt = a.xt + b0;
    if (nb == kChunk) {
      group_walk<Vec, V, false>(xt, a.batch, gs, last, acc, each_nz, std::make_integer_sequence<int, V>{});
    } else {
      // A partial chunk (a small batch, or the tail): 1…V vectors, the last one masked.
      switch (nv) {
        case 1: group_walk<Vec, V, true>(xt, a.batch, gs, last, acc, each_nz, std::make_integer_sequence<int, 1>{}); break;
        case 2: group_walk<Vec, V, true>(xt, a.batch, gs, last, acc, each_nz, std::make_integer_sequence<int, 2>{}); break;
        case 3:
          if constexpr (V > 2) group_walk<Vec, V, true>(xt, a.batch, gs, last, acc, each_nz, std::make_integer_sequence<int, 3>{});
          break;
        default:
          if constexpr (V > 3) group_walk<Vec, V, true>(xt, a.batch, gs, last, acc, each_nz, std::make_integer_sequence<int, 4>{});
          break;
      }
    }
    group_store<Vec, V>(acc, out + b0, out_stride, kAll);
  }
}

// A format without row groups (N:M: a row's kept columns are its own).
struct NoRowGroups {};

// Rows [r0, r1) of Y = W·X for batch > 1. `segment(r, c0, c1, state)` returns the walker of
// row r's non-zeros in columns [c0, c1); a row's segments are asked for in column order, and
// `state` (0 before its first) is the row's cursor between them. `groups` (or NoRowGroups)
// says which rows r..r+3 share their columns (`shares(r)`), and walks such a group's
// non-zeros (`segment`, values v[0], v[gs(r)], v[2·gs(r)], v[3·gs(r)]) with the cursor of r.
template <class Vec, class Segment, class Groups = NoRowGroups>
void batch_rows(const Args& a, std::int64_t rows, std::int64_t cols, std::int64_t r0, std::int64_t r1,
                Segment segment, const Groups& groups = {}) {
  constexpr bool kGroups = !std::is_same_v<Groups, NoRowGroups>;
  constexpr std::int64_t kChunk = 4 * Vec::kLanes;
  // Row buffers padded to whole chunks, so full-vector loads and stores stay inside.
  const std::int64_t stride = (a.batch + kChunk - 1) / kChunk * kChunk;
  thread_local AlignedVector<float> scratch;  // rows start on cache lines (stride is whole chunks)
  // Rows [r, r + 4) as a group, when they share columns and lie inside [r, end).
  auto group_at = [&](std::int64_t r, std::int64_t end) {
    if constexpr (kGroups) return g_row_groups && r + kGroupRows <= end && groups.shares(r);
    else return false;
  };
  // Scratch rows [rb, re) out to Y: rows of Yᵀ as they are; into a batch-major Y 16 rows at a
  // time, so each store run is 64 contiguous bytes.
  auto write_rows = [&](std::int64_t rb, std::int64_t re) {
    if (a.y_feature_major) {
      for (std::int64_t r = rb; r < re; ++r)
        std::memcpy(a.y + r * a.batch, &scratch[(r - rb) * stride], static_cast<std::size_t>(a.batch) * sizeof(float));
      return;
    }
    for (std::int64_t rt = rb; rt < re; rt += 16) {
      const std::int64_t rt_end = std::min(re, rt + 16);
      for (std::int64_t b = 0; b < a.batch; ++b)
        for (std::int64_t r = rt; r < rt_end; ++r) a.y[b * rows + r] = scratch[(r - rb) * stride + b];
    }
  };
  const std::int64_t kp = panel_cols(a.batch, cols);
  if (kp >= cols) {
    scratch.resize(static_cast<std::size_t>(kGroupRows * stride));
    for (std::int64_t r = r0; r < r1;) {
      std::uint32_t state = 0;
      if (group_at(r, r1)) {
        if constexpr (kGroups)
          group_row_walk<Vec>(a, groups.segment(r, 0, cols, state), groups.gs(r), nullptr, scratch.data(), stride);
        write_rows(r, r + kGroupRows);
        r += kGroupRows;
      } else {
        row_walk<Vec>(a, segment(r, 0, cols, state), nullptr, scratch.data());
        write_rows(r, r + 1);
        ++r;
      }
    }
    return;
  }
  // Rows go in blocks whose scratch (half the panel budget: 256 KiB) stays in L2 beside the
  // panel: with all 11008 rows of 11008×4096 at batch 256 it was 11 MiB, re-read from L3
  // every panel, and 95% ran 0.74× the unpaneled time.
  const std::int64_t block = std::max<std::int64_t>(16, panel_bytes() / 2 / (stride * 4));
  thread_local std::vector<std::uint32_t> cursor;
  thread_local std::vector<std::uint8_t> group_start;  // which rows of the block start a group
  scratch.resize(static_cast<std::size_t>(std::min(block, r1 - r0) * stride));
  for (std::int64_t rb = r0; rb < r1; rb += block) {
    const std::int64_t re = std::min(r1, rb + block);
    cursor.assign(static_cast<std::size_t>(re - rb), 0);
    group_start.assign(static_cast<std::size_t>(re - rb), 0);
    for (std::int64_t r = rb; r < re;)
      if (group_at(r, re)) group_start[r - rb] = 1, r += kGroupRows;
      else ++r;
    for (std::int64_t c0 = 0; c0 < cols; c0 += kp) {
      const std::int64_t c1 = std::min(cols, c0 + kp);
      for (std::int64_t r = rb; r < re;) {
        float* yr = scratch.data() + (r - rb) * stride;
        if (group_start[r - rb]) {
          if constexpr (kGroups)
            group_row_walk<Vec>(a, groups.segment(r, c0, c1, cursor[r - rb]), groups.gs(r), c0 == 0 ? nullptr : yr, yr,
                                stride);
          r += kGroupRows;
        } else {
          row_walk<Vec>(a, segment(r, c0, c1, cursor[r - rb]), c0 == 0 ? nullptr : yr, yr);
          ++r;
        }
      }
    }
    write_rows(rb, re);
  }
}

// The batch > 1 kernels of each format, shared by the SIMD families (each instantiates them
// with its own vector traits, compiled for its own ISA).
// Row r's stored values from `begin` to the end of its run in columns [.., c1), walked as
// (column, pointer to the value): the row-group walk reads the other rows' values beside it.
template <class Fn>
[[gnu::always_inline]] inline void csr_each(const Csr& w, std::uint32_t begin, std::uint32_t end, Fn&& fn) {
  if (w.narrow())
    for (std::uint32_t i = begin; i < end; ++i) fn(w.col16[i], &w.values[i]);
  else
    for (std::uint32_t i = begin; i < end; ++i) fn(w.col32[i], &w.values[i]);
}

// (The group walkers below are always inlined: as calls, the partial-chunk walk kept its
// accumulators in memory and batch 4 ran slower grouped than row by row.)

// CSR rows r..r+3 share their columns when their lengths and column indices are equal; their
// values then sit one row length apart.
struct CsrRowGroups {
  const Csr& w;
  bool shares(std::int64_t r) const {
    const std::uint32_t b = w.row_ptr[r], n = w.row_ptr[r + 1] - b;
    const std::size_t bytes = std::size_t(n) * (w.narrow() ? 2 : 4);
    const char* cols = w.narrow() ? reinterpret_cast<const char*>(w.col16.data()) : reinterpret_cast<const char*>(w.col32.data());
    const std::size_t elem = w.narrow() ? 2 : 4;
    for (int g = 1; g < kGroupRows; ++g)
      if (w.row_ptr[r + g + 1] - w.row_ptr[r + g] != n ||
          std::memcmp(cols + std::size_t(w.row_ptr[r + g]) * elem, cols + std::size_t(b) * elem, bytes) != 0)
        return false;
    return true;
  }
  std::int64_t gs(std::int64_t r) const { return w.row_ptr[r + 1] - w.row_ptr[r]; }
  auto segment(std::int64_t r, std::int64_t c0, std::int64_t c1, std::uint32_t& state) const {
    const std::uint32_t begin = c0 == 0 ? w.row_ptr[r] : state;
    const std::uint32_t end = csr_run_end(w, r, begin, c1);
    state = end;
    return [this, begin, end](auto&& fn) __attribute__((always_inline)) { csr_each(w, begin, end, fn); };
  }
};

template <class Vec>
void csr_batch(const Csr& w, const Args& a, std::int64_t r0, std::int64_t r1) {
  batch_rows<Vec>(
      a, w.rows, w.cols, r0, r1,
      [&](std::int64_t r, std::int64_t c0, std::int64_t c1, std::uint32_t& state) {
        const std::uint32_t begin = c0 == 0 ? w.row_ptr[r] : state;
        const std::uint32_t end = csr_run_end(w, r, begin, c1);
        state = end;
        return [&w, begin, end](auto&& fn) {
          if (w.narrow())
            for (std::uint32_t i = begin; i < end; ++i) fn(w.col16[i], w.values[i]);
          else
            for (std::uint32_t i = begin; i < end; ++i) fn(w.col32[i], w.values[i]);
        };
      },
      CsrRowGroups{w});
}

// Bitmask rows r..r+3 share their columns when their bit rows are equal; their values then
// sit one row length apart.
struct BitmaskRowGroups {
  const Bitmask& w;
  bool shares(std::int64_t r) const {
    const std::uint64_t* bits = &w.bits[r * w.words_per_row];
    const std::size_t bytes = std::size_t(w.words_per_row) * 8;
    for (int g = 1; g < kGroupRows; ++g)
      if (std::memcmp(bits + g * w.words_per_row, bits, bytes) != 0) return false;
    return true;
  }
  std::int64_t gs(std::int64_t r) const { return w.row_ptr[r + 1] - w.row_ptr[r]; }
  auto segment(std::int64_t r, std::int64_t c0, std::int64_t c1, std::uint32_t& state) const {
    const std::uint64_t* bits = &w.bits[r * w.words_per_row];
    const std::int64_t w0 = c0 / 64, w1 = (c1 + 63) / 64;
    const std::uint32_t begin = c0 == 0 ? w.row_ptr[r] : state;
    if (c1 < w.cols) state = bitmask_run_end(w, r, begin, w0, w1);
    return [this, bits, w0, w1, begin](auto&& fn) __attribute__((always_inline)) {
      std::uint32_t i = begin;
      for (std::int64_t wd = w0; wd < w1; ++wd)
        for (std::uint64_t word = bits[wd]; word; word &= word - 1) fn(wd * 64 + __builtin_ctzll(word), &w.values[i++]);
    };
  }
};

template <class Vec>
void bitmask_batch(const Bitmask& w, const Args& a, std::int64_t r0, std::int64_t r1) {
  batch_rows<Vec>(
      a, w.rows, w.cols, r0, r1,
      [&](std::int64_t r, std::int64_t c0, std::int64_t c1, std::uint32_t& state) {
        // Panels are whole 64-column words (panel_cols is a multiple of 64).
        const std::uint64_t* bits = &w.bits[r * w.words_per_row];
        const std::int64_t w0 = c0 / 64, w1 = (c1 + 63) / 64;
        const std::uint32_t begin = c0 == 0 ? w.row_ptr[r] : state;
        if (c1 < w.cols) state = bitmask_run_end(w, r, begin, w0, w1);  // the next panel's start
        return [&w, bits, w0, w1, begin](auto&& fn) {
          std::uint32_t i = begin;
          for (std::int64_t wd = w0; wd < w1; ++wd)
            for (std::uint64_t word = bits[wd]; word; word &= word - 1) fn(wd * 64 + __builtin_ctzll(word), w.values[i++]);
        };
      },
      BitmaskRowGroups{w});
}

template <class Vec>
void nm_batch(const NM& w, const Args& a, std::int64_t r0, std::int64_t r1) {
  const std::int64_t n = w.n, m = w.m, spr = w.slots_per_row, wpr = w.words_per_row();
  batch_rows<Vec>(a, w.rows, w.cols, r0, r1, [&](std::int64_t r, std::int64_t c0, std::int64_t c1, std::uint32_t&) {
    // A group belongs to the panel holding its first column.
    const std::int64_t s0 = (c0 + m - 1) / m * n, s1 = std::min(spr, (c1 + m - 1) / m * n);
    const float* vals = &w.values[r * spr];
    const std::uint64_t* idx = &w.index[r * wpr];
    return [=](auto&& fn) {
      // Slot s is the (s mod n)-th kept weight of group s / n, at column group·m + its 4-bit
      // index: walked with counters, since once the accumulators stay in registers the
      // divisions by the run-time n are the bottleneck (2:4 at batch 4: 16.5 -> 10.6 ms).
      std::int64_t s = s0, in_group = 0, group_col = s0 / n * m;
      while (s < s1) {
        std::uint64_t word = idx[s / 16] >> (4 * (s % 16));
        for (const std::int64_t end = std::min<std::int64_t>(s1, (s / 16 + 1) * 16); s < end; ++s, word >>= 4) {
          const float v = vals[s];
          if (v != 0.0f) fn(group_col + std::int64_t(word & 15), v);
          if (++in_group == n) in_group = 0, group_col += m;
        }
      }
    };
  });
}

// BSR as rows of (column, value) runs through batch_rows: where X^T needs column panels, each
// row walks its blocks' columns like CSR (zeros inside a block skipped), so the panel's slice
// of X^T stays in L2. A block belongs to the panel holding its first column; panels are
// multiples of 64 columns, so with bc dividing 64 no block straddles one.
// BSR rows i..i+3 of a block row (i a multiple of 4, br too) share the block columns; a
// group walks every column of its blocks (zeros inside a block included), values bc apart.
struct BsrRowGroups {
  const Bsr& w;
  bool shares(std::int64_t r) const { return w.br % kGroupRows == 0 && r % kGroupRows == 0; }
  std::int64_t gs(std::int64_t) const { return w.bc; }
  auto segment(std::int64_t r, std::int64_t c0, std::int64_t c1, std::uint32_t& state) const {
    const std::int64_t R = r / w.br, i = r % w.br;
    const std::uint32_t begin = c0 == 0 ? w.block_ptr[R] : state;
    const std::uint32_t end = bsr_run_end(w, R, begin, c1);
    state = end;
    return [this, begin, end, i](auto&& fn) __attribute__((always_inline)) {
      const std::int64_t bc = w.bc, bsz = w.br * w.bc;
      for (std::uint32_t k = begin; k < end; ++k) {
        const std::int64_t col0 = std::int64_t(w.block_col[k]) * bc;
        const float* v = &w.values[k * bsz + i * bc];
        for (std::int64_t j = 0; j < bc && col0 + j < w.cols; ++j) fn(col0 + j, v + j);
      }
    };
  }
};

template <class Vec>
void bsr_rows_batch(const Bsr& w, const Args& a, std::int64_t r0, std::int64_t r1) {
  const std::int64_t br = w.br, bc = w.bc, bsz = br * bc;
  batch_rows<Vec>(
      a, w.rows, w.cols, r0, r1,
      [&](std::int64_t r, std::int64_t c0, std::int64_t c1, std::uint32_t& state) {
        const std::int64_t R = r / br, i = r % br;
        const std::uint32_t begin = c0 == 0 ? w.block_ptr[R] : state;
        const std::uint32_t end = bsr_run_end(w, R, begin, c1);
        state = end;
        return [&w, begin, end, i, bc, bsz](auto&& fn) {
          for (std::uint32_t k = begin; k < end; ++k) {
            const std::int64_t col0 = std::int64_t(w.block_col[k]) * bc;
            const float* v = &w.values[k * bsz + i * bc];
            for (std::int64_t j = 0; j < bc && col0 + j < w.cols; ++j)
              if (v[j] != 0.0f) fn(col0 + j, v[j]);
          }
        };
      },
      BsrRowGroups{w});
}

// BSR: one register of batch columns per block row (br ≤ 16 accumulators).
template <class Vec>
void bsr_batch(const Bsr& w, const Args& a, std::int64_t R0, std::int64_t R1) {
  const std::int64_t br = w.br, bc = w.bc, bsz = br * bc;
  // Where X^T outgrows L2 (panels, batch 256 on 4096 columns) the per-block walk re-read X^T
  // from L3 for every 16 batch columns: 4096² 4×4 90% at batch 256 took 48 ms against CSR's 27.
  // Block rows of a multiple of four rows go as row groups (bsr_rows_batch) at every batch:
  // each X^T load feeds four rows' accumulators of four vectors, against one here (768×3072
  // 4×4 90%, batch 64: 1.26 -> 0.53 ms; batch 4: 0.29 -> 0.18 ms).
  const bool panels = panel_cols(a.batch, w.cols) < w.cols;
  if ((panels && 64 % bc == 0) || (!panels && g_row_groups && br % kGroupRows == 0))
    return bsr_rows_batch<Vec>(w, a, R0 * br, std::min(w.rows, R1 * br));
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
        float* y = a.y_feature_major ? a.y + (R * br + i) * a.batch + b0 : a.y + b0 * w.rows + R * br + i;
        const std::int64_t step = a.y_feature_major ? 1 : w.rows;
        for (std::int64_t b = 0; b < nb; ++b) y[b * step] = out[b];
      }
    }
}

}  // namespace prunus::kernels::detail
