#include <cstdio>
#include <cstring>

#include <fmt/format.h>

#include "commands.h"
#include "prunus/llama2c.h"
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

struct Row {
  std::string name, dtype;
  std::vector<std::int64_t> shape;
  std::int64_t numel = 0, nnz = 0;
  std::string pattern = "-";
  bool floating = false;
};

Row float_row(const std::string& name, const std::string& dtype, const std::vector<std::int64_t>& shape,
              const std::vector<float>& w) {
  Row r{name, dtype, shape, static_cast<std::int64_t>(w.size()), 0, "-", true};
  for (float v : w) r.nnz += v != 0.0f;
  if (r.numel > 0) {
    const std::int64_t rows = shape.size() >= 2 ? shape[0] : 1;
    r.pattern = sparse::detect_pattern(w.data(), rows, r.numel / rows);
  }
  return r;
}

int inspect(const std::string& path) {
  std::vector<Row> rows;
  std::map<std::string, std::string> meta;
  const bool llama = path.size() > 4 && path.compare(path.size() - 4, 4, ".bin") == 0;
  if (llama) {
    const auto ck = llama2c::read_checkpoint(path);
    for (const auto& [name, t] : ck.tensors) rows.push_back(float_row(name, "F32", t.shape, t.data));
    const auto& c = ck.config;
    meta["llama2c.config"] = fmt::format("dim={} hidden_dim={} n_layers={} n_heads={} n_kv_heads={} vocab_size={} "
                                         "seq_len={} classifier={}",
                                         c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size,
                                         c.seq_len, c.shared_classifier ? "shared" : "separate");
  } else {
    auto f = safetensors::File::open(path);
    for (const auto& t : f.tensors()) {
      if (is_float(t.dtype)) {
        rows.push_back(float_row(t.name, safetensors::dtype_name(t.dtype), t.shape, t.to_f32()));
      } else {
        rows.push_back({t.name, safetensors::dtype_name(t.dtype), t.shape, t.numel(), count_nonzero(t), "-", false});
      }
    }
    meta = f.metadata();
  }
  std::vector<std::vector<std::string>> table{{"tensor", "shape", "dtype", "nnz", "sparsity", "pattern"}};
  std::int64_t numel = 0, nnz = 0;
  for (const auto& r : rows) {
    if (r.floating) {
      numel += r.numel;
      nnz += r.nnz;
    }
    table.push_back({r.name, "[" + fmt::format("{}", fmt::join(r.shape, ", ")) + "]", r.dtype, std::to_string(r.nnz),
                     r.numel ? fmt::format("{:.2f}%", 100.0 * (1.0 - double(r.nnz) / double(r.numel))) : "-",
                     r.pattern});
  }
  std::printf("%s", report::text_table(table).c_str());
  for (const auto& [k, v] : meta) std::printf("metadata %s = %s\n", k.c_str(), v.c_str());
  std::printf("%zu tensors, %lld floating-point values, %lld non-zero (%.2f%% sparse)\n", rows.size(),
              static_cast<long long>(numel), static_cast<long long>(nnz),
              numel ? 100.0 * (1.0 - double(nnz) / double(numel)) : 0.0);
  return 0;
}

}  // namespace

void add_inspect(CLI::App& app, Action& action) {
  auto path = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("inspect",
                                 "Validate a model file (safetensors, or llama2.c .bin) and list each tensor: shape, "
                                 "dtype, nnz, sparsity, detected pattern");
  cmd->add_option("file", *path, "safetensors or llama2.c checkpoint (.bin)")->required();
  cmd->callback([&action, path] { action = [path] { return inspect(*path); }; });
}

}  // namespace prunus::cli
