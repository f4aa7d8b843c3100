// Hugging Face config.json and sharded-index parsing (torch-free, fuzzed by tests/fuzz/fuzz_hf).
#include "prunus/hf.h"

#include <cmath>
#include <filesystem>
#include <cstring>
#include <limits>
#include <type_traits>

#include <fmt/format.h>
#include <algorithm>
#include <nlohmann/json.hpp>

#include "prunus/io.h"

namespace prunus::hf {
using nlohmann::json;

namespace {

json parse_object(const std::string& text, const std::string& path, const char* what) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail(path, fmt::format("{} is not valid JSON: {}", what, e.what()));
  }
  if (!j.is_object()) fail(path, fmt::format("{} is not a JSON object", what));
  return j;
}

template <class T>
T field(const json& cfg, const char* key, const std::string& path) {
  if (!cfg.contains(key)) fail(path, fmt::format("config.json has no '{}'", key));
  const auto& v = cfg.at(key);
  // Checked before converting: nlohmann's get<int64_t>() of 1e69 is undefined behaviour.
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) fail(path, fmt::format("config.json field '{}' must be true or false", key));
  } else if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<std::uint64_t>() > std::uint64_t(INT64_MAX)) ||
        v.get<std::int64_t>() < std::int64_t(std::numeric_limits<T>::min()) ||
        v.get<std::int64_t>() > std::int64_t(std::numeric_limits<T>::max()))
      fail(path, fmt::format("config.json field '{}' must be an integer in range", key));
  } else {
    if (!v.is_number() || !std::isfinite(v.get<double>()))
      fail(path, fmt::format("config.json field '{}' must be a finite number", key));
  }
  return v.get<T>();
}

}  // namespace

LlamaConfig parse_config(const std::string& text, const std::string& path) {
  const json cfg = parse_object(text, path, "config.json");
  LlamaConfig c;
  c.dim = field<std::int64_t>(cfg, "hidden_size", path);
  c.hidden_dim = field<std::int64_t>(cfg, "intermediate_size", path);
  c.n_layers = field<std::int64_t>(cfg, "num_hidden_layers", path);
  c.n_heads = field<std::int64_t>(cfg, "num_attention_heads", path);
  c.n_kv_heads = cfg.contains("num_key_value_heads") ? field<std::int64_t>(cfg, "num_key_value_heads", path) : c.n_heads;
  c.vocab_size = field<std::int64_t>(cfg, "vocab_size", path);
  c.seq_len = field<std::int64_t>(cfg, "max_position_embeddings", path);
  c.norm_eps = cfg.contains("rms_norm_eps") ? field<double>(cfg, "rms_norm_eps", path) : 1e-5;
  c.rope_theta = cfg.contains("rope_theta") ? field<double>(cfg, "rope_theta", path) : 10000.0;
  c.tie_word_embeddings = cfg.contains("tie_word_embeddings") && field<bool>(cfg, "tie_word_embeddings", path);
  if (c.dim <= 0 || c.hidden_dim <= 0 || c.n_layers <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 || c.vocab_size <= 0 ||
      c.seq_len <= 0)
    fail(path, "config.json sizes must be positive");
  if (cfg.contains("head_dim") && !cfg.at("head_dim").is_null()) {
    const auto hd = field<std::int64_t>(cfg, "head_dim", path);
    if (hd <= 0 || hd > c.dim || c.n_heads > c.dim / hd)
      fail(path, "config.json head_dim must be positive with num_attention_heads · head_dim <= hidden_size");
    if (hd * c.n_heads != c.dim) c.head_dim = hd;  // else the derived size: keep 0
  }
  if ((!c.head_dim && c.dim % c.n_heads) || c.n_heads % c.n_kv_heads || c.head_size() % 2)
    fail(path, "config.json sizes are inconsistent (heads must divide hidden_size, kv heads the heads, head size even)");
  // Every tensor must be addressable: the largest is vocab × dim or hidden × dim elements,
  // and the model has n_layers of them. 2^40 elements (4 TiB of fp32) is far beyond any model.
  constexpr std::int64_t kMaxElements = std::int64_t(1) << 40;
  auto too_big = [&](std::int64_t a, std::int64_t b) { return a > kMaxElements / b; };
  if (too_big(c.vocab_size, c.dim) || too_big(c.hidden_dim, c.dim) || too_big(c.dim, c.dim) ||
      too_big(c.n_layers, c.dim * std::max(c.dim, c.hidden_dim)) || c.seq_len > (std::int64_t(1) << 31))
    fail(path, "config.json sizes describe a model too large to address");
  return c;
}

std::map<std::string, std::string> parse_index(const std::string& text, const std::string& path) {
  const json idx = parse_object(text, path, "index");
  if (!idx.contains("weight_map") || !idx.at("weight_map").is_object())
    fail(path, "index has no weight_map object");
  std::map<std::string, std::string> where;
  for (auto it = idx.at("weight_map").begin(); it != idx.at("weight_map").end(); ++it) {
    if (!it.value().is_string()) fail(path, fmt::format("weight_map entry for '{}' is not a file name", it.key()));
    const auto file = it.value().get<std::string>();
    // Shards live in this folder: no paths, no "..".
    if (file.empty() || file.find('/') != std::string::npos || file.find('\\') != std::string::npos || file == ".." ||
        file == "." || file.find('\0') != std::string::npos)
      fail(path, fmt::format("shard '{}' for {} is outside the model folder", file, it.key()));
    where[it.key()] = file;
  }
  if (where.empty()) fail(path, "index weight_map is empty");
  return where;
}

SparseLayout parse_sparse_layout(const std::string& config_text, const std::string& path) {
  const json cfg = parse_object(config_text, path, "config.json");
  if (!cfg.contains("quantization_config")) return SparseLayout::None;
  const auto& q = cfg.at("quantization_config");
  if (!q.is_object()) fail(path, "quantization_config is not an object");
  if (q.contains("config_groups") && !q.at("config_groups").is_null() &&
      !(q.at("config_groups").is_object() && q.at("config_groups").empty()))
    fail(path, "has a quantized quantization_config (config_groups: int8, fp8, ...): Prunus reads fp32/fp16/bf16 "
               "and sparse-bitmask / sparse-24-bitmask folders; use the model it was made from");
  if (q.value("quant_method", std::string()) != "compressed-tensors")
    fail(path, "quantization_config.quant_method is not 'compressed-tensors'");
  if (!q.contains("sparsity_config") || q.at("sparsity_config").is_null() ||
      (q.at("sparsity_config").is_object() && q.at("sparsity_config").empty()))
    return SparseLayout::Dense;
  const auto& sc = q.at("sparsity_config");
  if (!sc.is_object() || !sc.contains("format") || !sc.at("format").is_string())
    fail(path, "quantization_config.sparsity_config has no format");
  static const std::pair<const char*, SparseLayout> known[] = {
      {"dense", SparseLayout::Dense}, {"sparse-bitmask", SparseLayout::Bitmask}, {"sparse-24-bitmask", SparseLayout::Bitmask24}};
  const auto f = sc.at("format").get<std::string>();
  for (const auto& [name, layout] : known)
    if (f == name) return layout;
  fail(path, fmt::format("sparsity format '{}' is not one Prunus reads (dense, sparse-bitmask, sparse-24-bitmask)", f));
}

const char* sparse_layout_name(SparseLayout layout) {
  switch (layout) {
    case SparseLayout::None: return "none";
    case SparseLayout::Dense: return "dense";
    case SparseLayout::Bitmask: return "sparse-bitmask";
    case SparseLayout::Bitmask24: return "sparse-24-bitmask";
  }
  return "?";
}

namespace {
// An I64 or I32 tensor's values (checked by the caller's dtype test).
std::vector<std::int64_t> integers(const safetensors::TensorView& t) {
  std::vector<std::int64_t> out(static_cast<std::size_t>(t.numel()));
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (t.dtype == safetensors::DType::I64) {
      std::memcpy(&out[i], t.data + 8 * i, 8);
    } else {
      std::int32_t v;
      std::memcpy(&v, t.data + 4 * i, 4);
      out[i] = v;
    }
  }
  return out;
}
}  // namespace

bool decompress_weight(const TensorLookup& find, const std::string& module, SparseLayout layout, std::int64_t rows,
                       std::int64_t cols, std::vector<float>& out, const std::string& path) {
  if (layout != SparseLayout::Bitmask && layout != SparseLayout::Bitmask24) return false;
  std::string prefix = module;  // current names; older releases kept ".weight" in them
  if (!find(prefix + ".bitmask")) prefix = module + ".weight";
  const auto* bitmask = find(prefix + ".bitmask");
  if (!bitmask) return false;
  auto need = [&](const char* part) -> const safetensors::TensorView& {
    const auto* t = find(prefix + "." + part);
    if (!t) fail(path, fmt::format("{}.bitmask has no {}.{} beside it", prefix, prefix, part));
    return *t;
  };
  const auto& shape = need("shape");
  const auto& values = need("compressed");
  if ((shape.dtype != safetensors::DType::I64 && shape.dtype != safetensors::DType::I32) || shape.numel() != 2)
    fail(path, fmt::format("{}.shape must hold two integers", prefix));
  const auto dims = integers(shape);
  if (dims[0] != rows || dims[1] != cols)
    fail(path, fmt::format("{}.shape is [{}, {}], config.json implies [{}, {}]", prefix, dims[0], dims[1], rows, cols));
  const std::int64_t row_bytes = (cols + 7) / 8;
  if (bitmask->dtype != safetensors::DType::U8 || bitmask->shape != std::vector<std::int64_t>{rows, row_bytes})
    fail(path, fmt::format("{}.bitmask must be U8 [{}, {}]", prefix, rows, row_bytes));
  if (values.dtype != safetensors::DType::F32 && values.dtype != safetensors::DType::F16 &&
      values.dtype != safetensors::DType::BF16)
    fail(path, fmt::format("{}.compressed must be F32, F16 or BF16 (quantized values are not read)", prefix));
  const auto v = values.to_f32();
  const std::uint8_t* bits = bitmask->data;
  std::int64_t set = 0;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t b = 0; b < row_bytes; ++b) {
      const std::uint8_t byte = bits[r * row_bytes + b];
      if (b == row_bytes - 1 && cols % 8 && (byte >> (cols % 8)))
        fail(path, fmt::format("{}.bitmask row {} has bits past column {}", prefix, r, cols));
      set += __builtin_popcount(byte);
    }
  if (std::int64_t(v.size()) != set)
    fail(path, fmt::format("{}.compressed has {} values, the bitmask {} set bits", prefix, v.size(), set));
  if (layout == SparseLayout::Bitmask24 && (cols % 4 || set * 2 != rows * cols))
    fail(path, fmt::format("{}: sparse-24-bitmask needs two values in every group of four columns", prefix));
  if (layout == SparseLayout::Bitmask) {
    const auto& off = need("row_offsets");
    if ((off.dtype != safetensors::DType::I64 && off.dtype != safetensors::DType::I32) || off.numel() != rows)
      fail(path, fmt::format("{}.row_offsets must hold {} integers", prefix, rows));
    const auto o = integers(off);
    std::int64_t at = 0;
    for (std::int64_t r = 0; r < rows; ++r) {
      if (o[static_cast<std::size_t>(r)] != at)
        fail(path, fmt::format("{}.row_offsets[{}] is {}, the bitmask says {}", prefix, r, o[static_cast<std::size_t>(r)], at));
      for (std::int64_t b = 0; b < row_bytes; ++b) at += __builtin_popcount(bits[r * row_bytes + b]);
    }
  }
  out.assign(static_cast<std::size_t>(rows * cols), 0.0f);
  std::size_t k = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    std::int64_t in_group = 0;
    for (std::int64_t c = 0; c < cols; ++c) {
      if (layout == SparseLayout::Bitmask24 && c % 4 == 0) {
        if (c > 0 && in_group != 2)
          fail(path, fmt::format("{}: row {} columns {}-{} hold {} values (sparse-24-bitmask keeps two of four)", prefix,
                                 r, c - 4, c - 1, in_group));
        in_group = 0;
      }
      if (!(bits[r * row_bytes + c / 8] >> (c % 8) & 1)) continue;
      const float x = v[k++];
      if (!std::isfinite(x)) fail(path, fmt::format("{}.compressed holds NaN or Inf", prefix));
      out[static_cast<std::size_t>(r * cols + c)] = x;
      ++in_group;
    }
    if (layout == SparseLayout::Bitmask24 && in_group != 2)
      fail(path, fmt::format("{}: row {} ends with a group of {} values (sparse-24-bitmask keeps two of four)", prefix, r,
                             in_group));
  }
  return true;
}

struct LlamaFolderReader::Impl {
  std::string dir, single;
  LlamaConfig config;
  SparseLayout layout = SparseLayout::None;
  std::string index_path;
  std::map<std::string, std::string> where;  // tensor → shard path (sharded folders)
  mutable std::map<std::string, safetensors::File> files;

  const safetensors::File& open(const std::string& path) const {
    if (!std::filesystem::exists(path)) fail(path, "model file not found");
    auto it = files.find(path);
    if (it == files.end()) it = files.emplace(path, safetensors::File::open(path)).first;
    return it->second;
  }
  const safetensors::File& file_for(const std::string& name) const {
    if (!where.empty() && !where.count(name)) fail(index_path, fmt::format("no shard listed for tensor {}", name));
    return open(where.empty() ? single : where.at(name));
  }
  // A tensor by name, or nullptr when the folder has none (for the compressed forms).
  const safetensors::TensorView* lookup(const std::string& name) const {
    if (!where.empty() && !where.count(name)) return nullptr;
    return open(where.empty() ? single : where.at(name)).find(name);
  }
  std::vector<std::int64_t> expect_shape(const std::string& n) const {
    const auto& c = config;
    const std::int64_t kv = c.head_size() * c.n_kv_heads, q = c.head_size() * c.n_heads;
    if (n == "model.embed_tokens.weight" || n == "lm_head.weight") return {c.vocab_size, c.dim};
    if (n.find("layernorm") != std::string::npos || n == "model.norm.weight") return {c.dim};
    if (n.find("q_proj") != std::string::npos) return {q, c.dim};
    if (n.find("o_proj") != std::string::npos) return {c.dim, q};
    if (n.find("k_proj") != std::string::npos || n.find("v_proj") != std::string::npos) return {kv, c.dim};
    if (n.find("down_proj") != std::string::npos) return {c.dim, c.hidden_dim};
    return {c.hidden_dim, c.dim};
  }
};

LlamaFolderReader::LlamaFolderReader(const std::string& dir) : impl_(std::make_shared<Impl>()) {
  namespace fs = std::filesystem;
  auto& I = *impl_;
  I.dir = dir;
  const std::string cfg_path = (fs::path(dir) / "config.json").string();
  if (!fs::exists(cfg_path)) fail(cfg_path, "not found (a Hugging Face model folder has a config.json)");
  const std::string cfg_text = read_text_file(cfg_path);
  // compressed-tensors: sparse layouts are decompressed by tensor(); quantized folders are refused.
  I.layout = parse_sparse_layout(cfg_text, cfg_path);
  I.config = parse_config(cfg_text, cfg_path);
  // Which file holds each tensor: a single model.safetensors, or a sharded index whose shard
  // names parse_index has confined to this folder.
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  I.index_path = index.string();
  if (fs::exists(index))
    for (const auto& [name, file] : parse_index(read_text_file(index.string()), index.string()))
      I.where[name] = (fs::path(dir) / file).string();
  I.single = (fs::path(dir) / "model.safetensors").string();
}

const LlamaConfig& LlamaFolderReader::config() const { return impl_->config; }
SparseLayout LlamaFolderReader::layout() const { return impl_->layout; }

std::vector<std::string> LlamaFolderReader::tensor_names() const {
  const auto& c = impl_->config;
  std::vector<std::string> names = {"model.embed_tokens.weight", "model.norm.weight"};
  if (!c.tie_word_embeddings) names.push_back("lm_head.weight");
  for (int l = 0; l < c.n_layers; ++l) {
    for (const auto& n : llama2c::layer_linear_names(l)) names.push_back(n);
    names.push_back(fmt::format("model.layers.{}.input_layernorm.weight", l));
    names.push_back(fmt::format("model.layers.{}.post_attention_layernorm.weight", l));
  }
  return names;
}

std::vector<std::int64_t> LlamaFolderReader::shape(const std::string& name) const { return impl_->expect_shape(name); }

llama2c::Tensor LlamaFolderReader::tensor(const std::string& n) const {
  const auto& I = *impl_;
  const auto& c = I.config;
  // Hugging Face keeps each head's q/k rows as two halves (rotate-half RoPE); llama2.c pairs
  // them: out row h·d + 2j + k = in row h·d + k·d/2 + j (d rows a head).
  auto interleave = [](std::vector<float>& w, std::int64_t rows, std::int64_t cols, std::int64_t heads) {
    const std::int64_t d = rows / heads, half = d / 2;
    std::vector<float> out(w.size());
    for (std::int64_t h = 0; h < heads; ++h)
      for (std::int64_t j = 0; j < half; ++j)
        for (std::int64_t k = 0; k < 2; ++k)
          std::copy_n(w.begin() + (h * d + k * half + j) * cols, cols, out.begin() + (h * d + 2 * j + k) * cols);
    w.swap(out);
  };
  const auto shape = I.expect_shape(n);
  const std::string module = n.substr(0, n.size() - std::string(".weight").size());
  llama2c::Tensor t{shape, {}};
  // Messages name the file holding the compressed tensors.
  std::string holder = I.single;
  for (const auto& cand : {module + ".bitmask", module + ".weight.bitmask"})
    if (I.where.count(cand)) holder = I.where.at(cand);
  auto lookup = [&](const std::string& name) { return I.lookup(name); };
  if (!(shape.size() == 2 && !I.lookup(n) &&
        decompress_weight(lookup, module, I.layout, shape[0], shape[1], t.data, holder))) {
    const auto& f = I.file_for(n);
    const auto& v = f.at(n);
    if (v.shape != shape)
      fail(f.path(), fmt::format("tensor {} has shape [{}], config.json implies [{}]", n, fmt::join(v.shape, ","),
                                 fmt::join(shape, ",")));
    t.data = v.to_f32();
    MappedFile::release(v.data, v.nbytes);  // read once: keep the mapped pages out of the resident set
    for (float x : t.data)
      if (!std::isfinite(x)) fail(f.path(), fmt::format("tensor {} contains NaN or Inf", n));
  }
  if (n.find("q_proj") != std::string::npos) interleave(t.data, shape[0], shape[1], c.n_heads);
  if (n.find("k_proj") != std::string::npos) interleave(t.data, shape[0], shape[1], c.n_kv_heads);
  return t;
}

LlamaFolder read_llama_folder(const std::string& dir) {
  LlamaFolderReader reader(dir);
  LlamaFolder out;
  out.config = reader.config();
  out.layout = reader.layout();
  for (const auto& n : reader.tensor_names()) out.tensors.emplace(n, reader.tensor(n));
  return out;
}

}  // namespace prunus::hf
