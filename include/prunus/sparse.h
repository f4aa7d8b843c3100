// prunus/sparse.h — sparse storage formats of the runtime.
// Part of prunus_runtime: no libtorch. (Kernels over these formats come with the CPU
// kernels work; for now the runtime knows their exact byte sizes.)
#pragma once

#include <cstdint>
#include <string>

namespace prunus::sparse {

// Bytes a rows × cols fp32 matrix with `nnz` non-zeros takes in each format.
//  dense:   rows·cols·4
//  csr:     nnz·4 values + nnz·(2 if cols ≤ 65536 else 4) column indices + (rows+1)·4 row offsets
//  bitmask: rows·⌈cols/8⌉ mask bytes + nnz·4 values
std::uint64_t dense_bytes(std::int64_t rows, std::int64_t cols);
std::uint64_t csr_bytes(std::int64_t rows, std::int64_t cols, std::int64_t nnz);
std::uint64_t bitmask_bytes(std::int64_t rows, std::int64_t cols, std::int64_t nnz);

struct Encoding {
  std::string format;  // "dense", "csr" or "bitmask"
  std::uint64_t bytes;
};
// The smallest of the three (dense wins ties: it needs no index work).
Encoding smallest_encoding(std::int64_t rows, std::int64_t cols, std::int64_t nnz);

}  // namespace prunus::sparse

namespace prunus::sparse {

// Names the structure of the zeros in a row-major rows × cols fp32 matrix (conv weights
// flattened per output channel): "dense", "N:M" (along a row, groups of M = 4 or 8 with
// at most N non-zeros and ≥ 90% of groups exactly N), "RxC blocks" (every block all-zero
// or all-non-zero), "rows" / "columns" (zeros only as whole rows / columns),
// "unstructured", or "all zero".
std::string detect_pattern(const float* w, std::int64_t rows, std::int64_t cols);

}  // namespace prunus::sparse
