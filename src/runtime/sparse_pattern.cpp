#include <fmt/format.h>

#include <algorithm>
#include <numeric>
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
  // Non-zeros per row, once: the totals, the zero rows and the row balance all come from it.
  std::vector<std::int64_t> row_nnz(static_cast<std::size_t>(rows), 0);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) row_nnz[static_cast<std::size_t>(r)] += w[r * cols + c] != 0.0f;
  const std::int64_t nnz = std::accumulate(row_nnz.begin(), row_nnz.end(), std::int64_t(0));
  if (nnz == n) return "dense";
  if (nnz == 0) return "all zero";
  const auto zero_rows = static_cast<std::int64_t>(std::count(row_nnz.begin(), row_nnz.end(), std::int64_t(0)));
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
  if (const auto [lo, hi] = std::minmax_element(row_nnz.begin(), row_nnz.end()); rows > 1 && *hi - *lo <= 1)
    return "row-balanced";
  return "unstructured";
}

}  // namespace prunus::sparse
