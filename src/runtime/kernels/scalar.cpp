// The scalar reference of every kernel family: plain loops, the definition the SIMD
// variants are tested against. Accumulates in the order of the stored non-zeros.
#include <algorithm>

#include "kernels_internal.h"

namespace prunus::kernels::scalar {

void csr(const Csr& w, const Args& a, std::int64_t r0, std::int64_t r1) {
  for (std::int64_t b = 0; b < a.batch; ++b) {
    const float* x = a.x + b * w.cols;
    for (std::int64_t r = r0; r < r1; ++r) {
      float acc = 0.0f;
      for (std::uint32_t i = w.row_ptr[r]; i < w.row_ptr[r + 1]; ++i)
        acc += w.values[i] * x[w.narrow() ? w.col16[i] : w.col32[i]];
      a.y[b * w.rows + r] = acc;
    }
  }
}

void bitmask(const Bitmask& w, const Args& a, std::int64_t r0, std::int64_t r1) {
  for (std::int64_t b = 0; b < a.batch; ++b) {
    const float* x = a.x + b * w.cols;
    for (std::int64_t r = r0; r < r1; ++r) {
      float acc = 0.0f;
      std::uint32_t i = w.row_ptr[r];
      for (std::int64_t c = 0; c < w.cols; ++c)
        if (w.bits[r * w.words_per_row + c / 64] >> (c % 64) & 1) acc += w.values[i++] * x[c];
      a.y[b * w.rows + r] = acc;
    }
  }
}

void bsr(const Bsr& w, const Args& a, std::int64_t R0, std::int64_t R1) {
  for (std::int64_t b = 0; b < a.batch; ++b) {
    const float* x = a.x + b * w.cols;
    for (std::int64_t R = R0; R < R1; ++R)
      for (std::int64_t i = 0; i < w.br; ++i) {
        const std::int64_t r = R * w.br + i;
        if (r >= w.rows) break;
        float acc = 0.0f;
        for (std::uint32_t k = w.block_ptr[R]; k < w.block_ptr[R + 1]; ++k) {
          const float* blk = &w.values[k * w.br * w.bc + i * w.bc];
          const std::int64_t c0 = std::int64_t(w.block_col[k]) * w.bc;
          for (std::int64_t j = 0; j < w.bc && c0 + j < w.cols; ++j) acc += blk[j] * x[c0 + j];
        }
        a.y[b * w.rows + r] = acc;
      }
  }
}

void nm(const NM& w, const Args& a, std::int64_t r0, std::int64_t r1) {
  for (std::int64_t b = 0; b < a.batch; ++b) {
    const float* x = a.x + b * w.cols;
    for (std::int64_t r = r0; r < r1; ++r) {
      float acc = 0.0f;
      for (std::int64_t s = 0; s < w.slots_per_row; ++s) {
        const std::int64_t j = w.index[r * w.words_per_row() + s / 16] >> (4 * (s % 16)) & 15;
        acc += w.values[r * w.slots_per_row + s] * x[(s / w.n) * w.m + j];
      }
      a.y[b * w.rows + r] = acc;
    }
  }
}

// Lane by lane, step by step: each row's non-zeros in window order.
void sell(const Sell& w, const Args& a, std::int64_t s0, std::int64_t s1) {
  constexpr std::int64_t L = Sell::kLanes;
  for (std::int64_t b = 0; b < a.batch; ++b) {
    const float* x = a.x + b * w.cols;
    for (std::int64_t s = s0; s < s1; ++s)
      for (std::int64_t l = 0; l < std::min(L, w.rows - s * L); ++l) {
        float acc = 0.0f;
        std::size_t step = w.slice_step[s];
        for (std::uint32_t wi = w.slice_window[s]; wi < w.slice_window[s + 1]; ++wi) {
          const float* xw = x + std::int64_t(w.windows[wi].index) * Sell::kWindow;
          for (std::int64_t k = 0; k < w.windows[wi].steps; ++k, ++step)
            acc += w.values[step * L + l] * xw[w.pos[step * L + l]];
        }
        a.y[b * w.rows + w.row_of_lane[s * L + l]] = acc;
      }
  }
}

}  // namespace prunus::kernels::scalar
