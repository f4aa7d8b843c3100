// prunus/report.h — what a job reports: per-layer sparsity and bytes, summary tables.
// No libtorch: rows are built from names, shapes and non-zero counts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace prunus::report {

struct LayerRow {
  std::string name;
  std::vector<std::int64_t> shape;
  std::int64_t numel = 0;
  std::int64_t nnz = 0;
  double sparsity = 0;
  std::uint64_t dense_bytes = 0;
  std::string encoding;          // smallest of dense / csr / bitmask
  std::uint64_t encoded_bytes = 0;
};

// Treats the tensor as a matrix [shape[0], prod(shape[1:])] (conv weights flattened per
// output channel, vectors as one row).
LayerRow make_row(const std::string& name, const std::vector<std::int64_t>& shape, std::int64_t nnz);
nlohmann::json to_json(const LayerRow& row);

struct Totals {
  std::int64_t numel = 0, nnz = 0;
  std::uint64_t dense_bytes = 0, encoded_bytes = 0;
  double sparsity() const { return numel ? 1.0 - double(nnz) / double(numel) : 0.0; }
};
Totals totals(const std::vector<LayerRow>& rows);

// A plain text table: first row is the header; columns after the first are right-aligned.
std::string text_table(const std::vector<std::vector<std::string>>& rows);
std::string human_bytes(std::uint64_t bytes);

}  // namespace prunus::report
