#include "prunus/report.h"

#include <algorithm>

#include <fmt/format.h>

#include "prunus/sparse.h"

namespace prunus::report {

LayerRow make_row(const std::string& name, const std::vector<std::int64_t>& shape, std::int64_t nnz) {
  LayerRow r;
  r.name = name;
  r.shape = shape;
  r.numel = 1;
  for (auto d : shape) r.numel *= d;
  r.nnz = nnz;
  r.sparsity = r.numel ? 1.0 - double(nnz) / double(r.numel) : 0.0;
  const std::int64_t rows = shape.size() >= 2 ? shape[0] : 1;
  const std::int64_t cols = rows ? r.numel / std::max<std::int64_t>(rows, 1) : 0;
  r.dense_bytes = sparse::dense_bytes(rows, cols);
  const auto enc = sparse::smallest_encoding(rows, cols, nnz);
  r.encoding = enc.format;
  r.encoded_bytes = enc.bytes;
  return r;
}

nlohmann::json to_json(const LayerRow& r) {
  return {{"name", r.name},         {"shape", r.shape},
          {"numel", r.numel},       {"nnz", r.nnz},
          {"sparsity", r.sparsity}, {"dense_bytes", r.dense_bytes},
          {"encoding", r.encoding}, {"encoded_bytes", r.encoded_bytes}};
}

Totals totals(const std::vector<LayerRow>& rows) {
  Totals t;
  for (const auto& r : rows) {
    t.numel += r.numel;
    t.nnz += r.nnz;
    t.dense_bytes += r.dense_bytes;
    t.encoded_bytes += r.encoded_bytes;
  }
  return t;
}

std::string text_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  for (const auto& row : rows)
    for (std::size_t i = 0; i < row.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], row[i].size());
    }
  std::string out;
  for (std::size_t r = 0; r < rows.size(); ++r) {
    for (std::size_t i = 0; i < rows[r].size(); ++i) {
      if (i) out += "  ";
      out += i == 0 ? fmt::format("{:<{}}", rows[r][i], width[i]) : fmt::format("{:>{}}", rows[r][i], width[i]);
    }
    out += '\n';
    if (r == 0) {
      std::size_t total = 0;
      for (auto w : width) total += w + 2;
      out += std::string(total - 2, '-') + '\n';
    }
  }
  return out;
}

std::string human_bytes(std::uint64_t b) {
  if (b < 10 * 1024) return fmt::format("{} B", b);
  if (b < 10 * 1024 * 1024) return fmt::format("{:.1f} KiB", double(b) / 1024.0);
  return fmt::format("{:.1f} MiB", double(b) / (1024.0 * 1024.0));
}

}  // namespace prunus::report
