#include <cstdio>
#include <cstring>

#include <fmt/format.h>

#include "commands.h"
#include "prunus/report.h"
#include "prunus/safetensors.h"
#include "prunus/sparse.h"

namespace prunus::cli {
namespace {

bool is_float(safetensors::DType d) {
  using safetensors::DType;
  return d == DType::F32 || d == DType::F16 || d == DType::BF16 || d == DType::F64;
}

// Non-zeros of a tensor of any dtype (floats by value, so -0.0 is zero; others by bytes).
std::int64_t count_nonzero(const safetensors::TensorView& t) {
  if (is_float(t.dtype)) {
    std::int64_t nnz = 0;
    for (float v : t.to_f32()) nnz += v != 0.0f;
    return nnz;
  }
  const std::size_t es = safetensors::dtype_size(t.dtype);
  std::int64_t nnz = 0;
  for (std::size_t i = 0; i < t.nbytes; i += es) {
    bool zero = true;
    for (std::size_t b = 0; b < es && zero; ++b) zero = t.data[i + b] == 0;
    nnz += !zero;
  }
  return nnz;
}

int inspect(const std::string& path) {
  auto f = safetensors::File::open(path);
  std::vector<std::vector<std::string>> table{{"tensor", "shape", "dtype", "nnz", "sparsity", "pattern"}};
  std::int64_t numel = 0, nnz = 0;
  for (const auto& t : f.tensors()) {
    const std::int64_t n = t.numel();
    const std::int64_t z = count_nonzero(t);
    std::string pattern = "-";
    const bool floating = is_float(t.dtype);
    if (floating && n > 0) {
      auto w = t.to_f32();
      const std::int64_t rows = t.shape.size() >= 2 ? t.shape[0] : 1;
      pattern = sparse::detect_pattern(w.data(), rows, n / rows);
    }
    if (floating) {
      numel += n;
      nnz += z;
    }
    table.push_back({t.name, "[" + fmt::format("{}", fmt::join(t.shape, ", ")) + "]",
                     safetensors::dtype_name(t.dtype), std::to_string(z),
                     n ? fmt::format("{:.2f}%", 100.0 * (1.0 - double(z) / double(n))) : "-", pattern});
  }
  std::printf("%s", report::text_table(table).c_str());
  for (const auto& [k, v] : f.metadata()) std::printf("metadata %s = %s\n", k.c_str(), v.c_str());
  std::printf("%zu tensors, %lld floating-point values, %lld non-zero (%.2f%% sparse)\n", f.tensors().size(),
              static_cast<long long>(numel), static_cast<long long>(nnz),
              numel ? 100.0 * (1.0 - double(nnz) / double(numel)) : 0.0);
  return 0;
}

}  // namespace

void add_inspect(CLI::App& app, Action& action) {
  auto path = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand(
      "inspect", "Validate a safetensors file and list each tensor: shape, dtype, nnz, sparsity, detected pattern");
  cmd->add_option("file", *path, "safetensors file")->required();
  cmd->callback([&action, path] { action = [path] { return inspect(*path); }; });
}

}  // namespace prunus::cli
