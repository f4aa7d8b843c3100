#include "prunus/sparse.h"

namespace prunus::sparse {

std::uint64_t dense_bytes(std::int64_t rows, std::int64_t cols) {
  return static_cast<std::uint64_t>(rows) * static_cast<std::uint64_t>(cols) * 4;
}

std::uint64_t csr_bytes(std::int64_t rows, std::int64_t cols, std::int64_t nnz) {
  const std::uint64_t index = cols <= 65536 ? 2 : 4;
  return static_cast<std::uint64_t>(nnz) * (4 + index) + (static_cast<std::uint64_t>(rows) + 1) * 4;
}

std::uint64_t bitmask_bytes(std::int64_t rows, std::int64_t cols, std::int64_t nnz) {
  return static_cast<std::uint64_t>(rows) * ((static_cast<std::uint64_t>(cols) + 7) / 8) +
         static_cast<std::uint64_t>(nnz) * 4;
}

Encoding smallest_encoding(std::int64_t rows, std::int64_t cols, std::int64_t nnz) {
  Encoding best{"dense", dense_bytes(rows, cols)};
  if (auto b = csr_bytes(rows, cols, nnz); b < best.bytes) best = {"csr", b};
  if (auto b = bitmask_bytes(rows, cols, nnz); b < best.bytes) best = {"bitmask", b};
  return best;
}

}  // namespace prunus::sparse
