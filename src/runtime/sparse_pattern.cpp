#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "prunus/sparse.h"

namespace prunus::sparse {
namespace {

std::string nm_pattern(const float* w, std::int64_t rows, std::int64_t cols) {
  for (std::int64_t m : {4, 8}) {
    if (cols % m != 0) continue;
    std::int64_t max_nnz = 0;
    std::vector<std::int64_t> hist(m + 1, 0);
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t g = 0; g < cols; g += m) {
        std::int64_t nnz = 0;
        for (std::int64_t j = 0; j < m; ++j) nnz += w[r * cols + g + j] != 0.0f;
        max_nnz = std::max(max_nnz, nnz);
        ++hist[nnz];
      }
    const std::int64_t groups = rows * cols / m;
    if (max_nnz <= m / 2 && max_nnz > 0 && hist[max_nnz] * 10 >= groups * 9) return fmt::format("{}:{}", max_nnz, m);
  }
  return "";
}

std::string block_pattern(const float* w, std::int64_t rows, std::int64_t cols) {
  const std::pair<std::int64_t, std::int64_t> shapes[] = {{8, 8}, {4, 4}, {2, 2}, {1, 8}, {8, 1}, {1, 4}, {4, 1}};
  for (auto [br, bc] : shapes) {
    if (rows % br || cols % bc || (br == 1 && bc == 1)) continue;
    bool ok = true, any_zero_block = false;
    for (std::int64_t r = 0; ok && r < rows; r += br)
      for (std::int64_t c = 0; ok && c < cols; c += bc) {
        std::int64_t nnz = 0;
        for (std::int64_t i = 0; i < br; ++i)
          for (std::int64_t j = 0; j < bc; ++j) nnz += w[(r + i) * cols + c + j] != 0.0f;
        if (nnz == 0) any_zero_block = true;
        else if (nnz != br * bc) ok = false;
      }
    if (ok && any_zero_block) return fmt::format("{}x{} blocks", br, bc);
  }
  return "";
}

}  // namespace

std::string detect_pattern(const float* w, std::int64_t rows, std::int64_t cols) {
  const std::int64_t n = rows * cols;
  std::int64_t nnz = 0;
  for (std::int64_t i = 0; i < n; ++i) nnz += w[i] != 0.0f;
  if (nnz == n) return "dense";
  if (nnz == 0) return "all zero";
  std::int64_t zero_rows = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    bool all = true;
    for (std::int64_t c = 0; all && c < cols; ++c) all = w[r * cols + c] == 0.0f;
    zero_rows += all;
  }
  if (zero_rows * cols == n - nnz) return fmt::format("rows ({} of {} zero)", zero_rows, rows);
  std::int64_t zero_cols = 0;
  for (std::int64_t c = 0; c < cols; ++c) {
    bool all = true;
    for (std::int64_t r = 0; all && r < rows; ++r) all = w[r * cols + c] == 0.0f;
    zero_cols += all;
  }
  if (zero_cols * rows == n - nnz) return fmt::format("columns ({} of {} zero)", zero_cols, cols);
  if (auto nm = nm_pattern(w, rows, cols); !nm.empty()) return nm;
  if (auto b = block_pattern(w, rows, cols); !b.empty()) return b;
  // Every row holding the same number of non-zeros (±1): what `--pattern row-balanced` makes.
  if (rows > 1) {
    std::int64_t lo = cols, hi = 0;
    for (std::int64_t r = 0; r < rows; ++r) {
      std::int64_t k = 0;
      for (std::int64_t c = 0; c < cols; ++c) k += w[r * cols + c] != 0.0f;
      lo = std::min(lo, k), hi = std::max(hi, k);
    }
    if (hi - lo <= 1) return "row-balanced";
  }
  return "unstructured";
}

}  // namespace prunus::sparse
