#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>

#include <fmt/format.h>

#include "commands.h"
#include "prunus/hf.h"
#include "prunus/llama2c.h"
#include "prunus/io.h"
#include "prunus/report.h"
#include "prunus/runtime.h"
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

struct InspectOptions {
  std::string path;
  std::int64_t batch = 1;
  int threads = 1;
  std::string formats = "auto";  // auto | on | off
};

// What the runtime would do with each layer: the format that measured fastest here, its
// bytes against dense, and the measured speed-up at the batch size.
void print_runtime_formats(const std::vector<runtime::LayerInfo>& layers, std::int64_t batch, int threads) {
  std::vector<std::vector<std::string>> table{{"layer", "shape", "nnz", "runtime format", "bytes", "dense bytes", "speed-up"}};
  std::uint64_t bytes = 0, dense = 0;
  for (const auto& l : layers) {
    bytes += l.bytes;
    dense += l.dense_bytes;
    table.push_back({l.name, fmt::format("{}x{}", l.rows, l.cols), std::to_string(l.nnz), l.format,
                     report::human_bytes(l.bytes), report::human_bytes(l.dense_bytes),
                     l.seconds > 0 ? fmt::format("{:.2f}x", l.dense_seconds / l.seconds) : "-"});
  }
  std::printf("\nIn the runtime on this machine (batch %lld, %d thread(s); formats chosen by measurement):\n%s",
              static_cast<long long>(batch), threads, report::text_table(table).c_str());
  std::printf("layers: %s as held vs %s dense (dense/held = %.2fx)\n", report::human_bytes(bytes).c_str(),
              report::human_bytes(dense).c_str(), bytes ? double(dense) / double(bytes) : 0.0);
}

int inspect(const InspectOptions& o) {
  const std::string& path = o.path;
  std::vector<Row> rows;
  std::map<std::string, std::string> meta;
  const bool llama = path.size() > 4 && path.compare(path.size() - 4, 4, ".bin") == 0;
  if (std::filesystem::is_directory(path)) {
    // A Hugging Face folder, compressed-tensors sparse layouts decompressed per weight.
    const auto cfg_path = (std::filesystem::path(path) / "config.json").string();
    if (!std::filesystem::exists(cfg_path)) fail(cfg_path, "not found (a Hugging Face folder has a config.json)");
    const std::string cfg = read_text_file(cfg_path);
    const auto layout = hf::parse_sparse_layout(cfg, cfg_path);
    meta["compressed-tensors"] = hf::sparse_layout_name(layout);
    std::vector<std::string> files;
    const auto index = (std::filesystem::path(path) / "model.safetensors.index.json").string();
    if (std::filesystem::exists(index)) {
      std::set<std::string> shards;
      for (const auto& [name, shard] : hf::parse_index(read_text_file(index), index)) shards.insert(shard);
      for (const auto& shard : shards) files.push_back((std::filesystem::path(path) / shard).string());
    } else {
      files.push_back((std::filesystem::path(path) / "model.safetensors").string());
    }
    std::vector<safetensors::File> opened;
    for (const auto& f : files) opened.push_back(safetensors::File::open(f));
    auto find = [&](const std::string& name) -> const safetensors::TensorView* {
      for (const auto& f : opened)
        if (const auto* t = f.find(name)) return t;
      return nullptr;
    };
    const std::set<std::string> parts = {"shape", "compressed", "bitmask", "row_offsets"};
    for (const auto& f : opened)
      for (const auto& t : f.tensors()) {
        const auto dot = t.name.rfind('.');
        const std::string part = dot == std::string::npos ? "" : t.name.substr(dot + 1);
        if (parts.count(part)) {
          if (part != "bitmask") continue;  // one row per compressed weight, at its bitmask
          std::string module = t.name.substr(0, dot);
          if (module.ends_with(".weight")) module.resize(module.size() - 7);  // the older names
          const auto* shape = find(t.name.substr(0, dot) + ".shape");
          if (!shape || shape->numel() != 2 || shape->dtype != safetensors::DType::I64)
            fail(f.path(), fmt::format("{} has no I64 shape beside it", t.name));
          std::int64_t dims[2];
          std::memcpy(dims, shape->data, 16);
          std::vector<float> w;
          hf::decompress_weight(find, module, layout, dims[0], dims[1], w, f.path());
          rows.push_back(float_row(module + ".weight", fmt::format("{} ({})", safetensors::dtype_name(find(t.name.substr(0, dot) + ".compressed")->dtype), hf::sparse_layout_name(layout)),
                                   {dims[0], dims[1]}, w));
        } else if (is_float(t.dtype)) {
          rows.push_back(float_row(t.name, safetensors::dtype_name(t.dtype), t.shape, t.to_f32()));
        } else {
          rows.push_back({t.name, safetensors::dtype_name(t.dtype), t.shape, t.numel(), count_nonzero(t), "-", false});
        }
      }
  } else if (llama) {
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
  // Formats: on by default for models the runtime runs, up to 1 GiB (loading measures every
  // layer; larger models ask for it with --formats on).
  const bool folder = std::filesystem::is_directory(path);
  const bool runnable = llama || folder || meta.count("prunus.graph");
  const bool small = numel * 4 <= (std::int64_t(1) << 30);
  if (o.formats == "on" && !runnable)
    fail(path, "the runtime cannot run this file (no prunus.graph), so it has no formats to show");
  if (runnable && (o.formats == "on" || (o.formats == "auto" && small))) {
    runtime::LoadOptions lo;
    lo.batch_hint = o.batch;
    lo.kernel.threads = o.threads;
    if (llama || folder) print_runtime_formats(runtime::Llama::load(path, lo).layers(), o.batch, o.threads);
    else print_runtime_formats(runtime::Model::load(path, lo).layers(), o.batch, o.threads);
  } else if (runnable && o.formats == "auto") {
    std::printf("(runtime formats not measured for a model over 1 GiB: pass --formats on)\n");
  }
  return 0;
}

}  // namespace

void add_inspect(CLI::App& app, Action& action) {
  auto o = std::make_shared<InspectOptions>();
  auto* cmd = app.add_subcommand("inspect",
                                 "Validate a model file (safetensors, or llama2.c .bin) and list each tensor: shape, "
                                 "dtype, nnz, sparsity, detected pattern; for models the runtime runs, also each "
                                 "layer's runtime format, bytes and measured speed-up over dense");
  cmd->add_option("file", o->path, "safetensors or llama2.c checkpoint (.bin)")->required();
  cmd->add_option("--formats", o->formats, "auto (models up to 1 GiB) | on | off")
      ->check(CLI::IsMember({"auto", "on", "off"}))
      ->capture_default_str();
  cmd->add_option("--batch", o->batch, "Batch size to choose formats for")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--threads", o->threads, "Kernel threads")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->callback([&action, o] { action = [o] { return inspect(*o); }; });
}

}  // namespace prunus::cli
