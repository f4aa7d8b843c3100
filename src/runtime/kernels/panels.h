// Internal: column panels. A batch > 1 product walks its columns in panels so that X^T's
// slice stays in L2 (simd_batch.h); a row's non-zeros inside a panel are a contiguous run of
// its stored values, found with the helpers below. Batch 1 does not use them: cutting each
// row's weight stream into panels made 4096×11008 GEMVs 1.3–3× slower (cold weights, Zen 4),
// whatever x's slice saved in L1.
#pragma once

#include <algorithm>

#include "kernels_internal.h"

namespace prunus::kernels::detail {

// Row r's stored values in columns [.., c1), from `begin` on: the end of its run (CSR).
inline std::uint32_t csr_run_end(const Csr& w, std::int64_t r, std::uint32_t begin, std::int64_t c1) {
  const std::uint32_t row_end = w.row_ptr[r + 1];
  if (c1 >= w.cols) return row_end;
  return w.narrow() ? std::uint32_t(std::lower_bound(w.col16.data() + begin, w.col16.data() + row_end, c1) - w.col16.data())
                    : std::uint32_t(std::lower_bound(w.col32.data() + begin, w.col32.data() + row_end, c1) - w.col32.data());
}

// BSR row block R's blocks starting before column c1, from block `begin` on: the end of its
// run (a block belongs to the panel holding its first column).
inline std::uint32_t bsr_run_end(const Bsr& w, std::int64_t R, std::uint32_t begin, std::int64_t c1) {
  const std::uint32_t row_end = w.block_ptr[R + 1];
  if (c1 >= w.cols) return row_end;
  const std::int64_t first_block_out = (c1 + w.bc - 1) / w.bc;  // blocks from here start at or past c1
  return std::uint32_t(std::lower_bound(w.block_col.data() + begin, w.block_col.data() + row_end, first_block_out) -
                       w.block_col.data());
}

// The bitmask's: `begin` plus the set bits of words [w0, w1).
inline std::uint32_t bitmask_run_end(const Bitmask& w, std::int64_t r, std::uint32_t begin, std::int64_t w0,
                                     std::int64_t w1) {
  const std::uint64_t* bits = &w.bits[r * w.words_per_row];
  for (std::int64_t wd = w0; wd < w1; ++wd) begin += std::uint32_t(__builtin_popcountll(bits[wd]));
  return begin;
}

}  // namespace prunus::kernels::detail
