// Hugging Face LLaMA folders: config.json + model.safetensors (or sharded with
// model.safetensors.index.json). HF stores q/k projections with RoPE on rotated halves;
// Prunus (like llama2.c and Meta) uses interleaved pairs, so q/k rows are permuted on the
// way in and out, as llama2.c's export.py and transformers' conversion script do.
#include <cmath>
#include <type_traits>
#include <limits>
#include <filesystem>
#include <fstream>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "prunus/hf.h"
#include "prunus/io.h"
#include "prunus/llm.h"
#include "prunus/safetensors.h"

namespace prunus::llm {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Interleaved (llama2.c) → HF halves: view(heads, dim1/heads/2, 2, dim2).transpose(1, 2).
torch::Tensor to_hf_rope(const torch::Tensor& w, std::int64_t heads) {
  const auto d1 = w.size(0), d2 = w.size(1);
  return w.view({heads, d1 / heads / 2, 2, d2}).transpose(1, 2).reshape({d1, d2}).contiguous();
}
// HF halves → interleaved: view(heads, 2, dim1/heads/2, dim2).transpose(1, 2).
torch::Tensor from_hf_rope(const torch::Tensor& w, std::int64_t heads) {
  const auto d1 = w.size(0), d2 = w.size(1);
  return w.view({heads, 2, d1 / heads / 2, d2}).transpose(1, 2).reshape({d1, d2}).contiguous();
}

}  // namespace

bool is_hf_folder(const std::string& path) { return fs::is_directory(path); }

Model load_hf(const std::string& dir) {
  const std::string cfg_path = (fs::path(dir) / "config.json").string();
  const std::string cfg_text = read_text_file(cfg_path);
  if (const auto j = json::parse(cfg_text, nullptr, false); j.is_object() && j.contains("quantization_config"))
    fail(cfg_path, "has a quantization_config (a quantized folder, e.g. compressed-tensors): Prunus reads fp32/fp16/bf16 "
                   "folders; use the model it was made from");
  const auto hc = hf::parse_config(cfg_text, cfg_path);
  Model m;
  auto& c = m.config;
  c.dim = hc.dim;
  c.hidden_dim = hc.hidden_dim;
  c.n_layers = hc.n_layers;
  c.n_heads = hc.n_heads;
  c.n_kv_heads = hc.n_kv_heads;
  c.vocab_size = hc.vocab_size;
  c.seq_len = hc.seq_len;
  c.norm_eps = hc.norm_eps;
  c.rope_theta = hc.rope_theta;
  c.shared_classifier = hc.tie_word_embeddings;

  // Which file holds each tensor: a single model.safetensors, or a sharded index whose shard
  // names parse_index has confined to this folder.
  std::map<std::string, std::string> where;
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(index))
    for (const auto& [name, file] : hf::parse_index(read_text_file(index.string()), index.string()))
      where[name] = (fs::path(dir) / file).string();
  std::map<std::string, safetensors::File> files;
  auto file_for = [&](const std::string& name) -> const safetensors::File& {
    std::string path = where.count(name) ? where[name] : (fs::path(dir) / "model.safetensors").string();
    if (!where.empty() && !where.count(name)) fail(index.string(), fmt::format("no shard listed for tensor {}", name));
    if (!fs::exists(path)) fail(path, "model file not found");
    auto it = files.find(path);
    if (it == files.end()) it = files.emplace(path, safetensors::File::open(path)).first;
    return it->second;
  };
  std::vector<std::string> names = {"model.embed_tokens.weight", "model.norm.weight"};
  if (!c.shared_classifier) names.push_back("lm_head.weight");
  for (int l = 0; l < c.n_layers; ++l) {
    for (const auto& n : llama2c::layer_linear_names(l)) names.push_back(n);
    names.push_back(fmt::format("model.layers.{}.input_layernorm.weight", l));
    names.push_back(fmt::format("model.layers.{}.post_attention_layernorm.weight", l));
  }
  const std::int64_t kv = c.head_size() * c.n_kv_heads;
  auto expect_shape = [&](const std::string& n) -> std::vector<std::int64_t> {
    if (n == "model.embed_tokens.weight" || n == "lm_head.weight") return {c.vocab_size, c.dim};
    if (n.find("layernorm") != std::string::npos || n == "model.norm.weight") return {c.dim};
    if (n.find("q_proj") != std::string::npos || n.find("o_proj") != std::string::npos) return {c.dim, c.dim};
    if (n.find("k_proj") != std::string::npos || n.find("v_proj") != std::string::npos) return {kv, c.dim};
    if (n.find("down_proj") != std::string::npos) return {c.dim, c.hidden_dim};
    return {c.hidden_dim, c.dim};
  };
  for (const auto& n : names) {
    const auto& f = file_for(n);
    const auto& v = f.at(n);
    if (v.shape != expect_shape(n))
      fail(f.path(), fmt::format("tensor {} has shape [{}], config.json implies [{}]", n, fmt::join(v.shape, ","),
                                 fmt::join(expect_shape(n), ",")));
    auto data = v.to_f32();
    auto t = torch::from_blob(data.data(), v.shape, torch::kFloat32).clone();
    if (!torch::isfinite(t).all().item<bool>()) fail(f.path(), fmt::format("tensor {} contains NaN or Inf", n));
    if (n.find("q_proj") != std::string::npos) t = from_hf_rope(t, c.n_heads);
    if (n.find("k_proj") != std::string::npos) t = from_hf_rope(t, c.n_kv_heads);
    m.weights[n] = t;
  }
  return m;
}

namespace {

json hf_config(const Config& c) {
  return {{"architectures", {"LlamaForCausalLM"}},
              {"model_type", "llama"},
              {"hidden_size", c.dim},
              {"intermediate_size", c.hidden_dim},
              {"num_hidden_layers", c.n_layers},
              {"num_attention_heads", c.n_heads},
              {"num_key_value_heads", c.n_kv_heads},
              {"vocab_size", c.vocab_size},
              {"max_position_embeddings", c.seq_len},
              {"rms_norm_eps", c.norm_eps},
              {"rope_theta", c.rope_theta},
              {"tie_word_embeddings", c.shared_classifier},
              {"hidden_act", "silu"},
              {"bos_token_id", 1},
              {"eos_token_id", 2},
              {"torch_dtype", "float32"}};
}

bool is_decoder_linear(const std::string& name) {
  return name.rfind("model.layers.", 0) == 0 && name.ends_with("_proj.weight");
}

}  // namespace

void save_hf(const std::string& dir, const Model& m) {
  const auto& c = m.config;
  fs::create_directories(dir);
  const json cfg = hf_config(c);
  std::vector<torch::Tensor> keep;
  std::vector<safetensors::TensorToWrite> out;
  for (const auto& [name, w] : m.weights) {
    auto t = w.detach().to(torch::kFloat32).contiguous();
    if (name.find("q_proj") != std::string::npos) t = to_hf_rope(t, c.n_heads);
    if (name.find("k_proj") != std::string::npos) t = to_hf_rope(t, c.n_kv_heads);
    t = t.masked_fill(t == 0, 0.0);  // pruned weights as +0.0
    keep.push_back(t);
    out.push_back({name, safetensors::DType::F32, t.sizes().vec(), keep.back().data_ptr()});
  }
  // Tensors first, config last: a folder with a config always has its weights.
  safetensors::write((fs::path(dir) / "model.safetensors").string(), out, {{"format", "pt"}});
  atomic_write((fs::path(dir) / "config.json").string(), cfg.dump(2) + "\n");
}

CompressedTensorsReport save_hf_compressed_int8(const std::string& dir, const Model& m, bool sparse_bitmask) {
  const auto& c = m.config;
  fs::create_directories(dir);
  json cfg = hf_config(c);
  CompressedTensorsReport rep;
  std::vector<torch::Tensor> keep;
  std::vector<safetensors::TensorToWrite> out;
  auto add = [&](const std::string& name, torch::Tensor t, safetensors::DType dt) {
    keep.push_back(t.contiguous());
    out.push_back({name, dt, keep.back().sizes().vec(), keep.back().data_ptr()});
  };
  bool two_four = true;
  std::int64_t zeros = 0, total = 0;
  for (const auto& [name, w] : m.weights) {
    auto t = w.detach().to(torch::kFloat32).contiguous();
    if (name.find("q_proj") != std::string::npos) t = to_hf_rope(t, c.n_heads);
    if (name.find("k_proj") != std::string::npos) t = to_hf_rope(t, c.n_kv_heads);
    if (!is_decoder_linear(name)) {  // embeddings, norms, lm_head: fp32 as in save_hf
      add(name, t.masked_fill(t == 0, 0.0), safetensors::DType::F32);
      continue;
    }
    // int-quantized: symmetric per output channel, codes round-half-even in [-127, 127] (the
    // runtime's INT8 weights), scale [rows, 1] in the model's dtype, no zero point.
    const std::int64_t rows = t.size(0), cols = t.size(1);
    auto amax = t.abs().amax(1, /*keepdim=*/true);
    auto scale = torch::where(amax > 0, amax / 127.0f, torch::ones_like(amax));
    auto q = torch::round(t / scale).clamp(-127, 127).to(torch::kInt8);
    auto nz = q != 0;
    const auto counts = nz.sum(1);
    const std::string prefix = name.substr(0, name.size() - std::string(".weight").size());
    if (cols % 4 != 0 || (nz.view({rows, cols / 4, 4}).sum(2) > 2).any().item<bool>()) two_four = false;
    zeros += rows * cols - counts.sum().item<std::int64_t>();
    total += rows * cols;
    add(prefix + ".weight_scale", scale, safetensors::DType::F32);
    ++rep.layers;
    if (!sparse_bitmask) {  // the codes as a dense int8 weight
      add(name, q, safetensors::DType::I8);
      continue;
    }
    // sparse-bitmask over the quantized weight (as ModelCompressor stacked them): under the
    // module's name, the non-zero codes row by row, a little-endian bitmask of rows × ⌈cols/8⌉
    // bytes, each row's offset, the dense shape.
    auto packed = torch::zeros({rows, (cols + 7) / 8}, torch::kUInt8);
    {
      auto bits = torch::zeros({rows, (cols + 7) / 8 * 8}, torch::kUInt8);
      bits.narrow(1, 0, cols).copy_(nz.to(torch::kUInt8));
      auto b = bits.view({rows, -1, 8});
      for (int k = 0; k < 8; ++k) packed.bitwise_or_(b.select(2, k).bitwise_left_shift(k));
    }
    add(prefix + ".shape", torch::tensor({rows, cols}, torch::kInt64), safetensors::DType::I64);
    add(prefix + ".compressed", q.masked_select(nz), safetensors::DType::I8);
    add(prefix + ".bitmask", packed, safetensors::DType::U8);
    add(prefix + ".row_offsets", (counts.cumsum(0) - counts).to(torch::kInt64), safetensors::DType::I64);
  }
  rep.sparsity = total ? double(zeros) / double(total) : 0.0;
  rep.structure = two_four && rep.sparsity > 0 ? "2:4" : "unstructured";
  const json args_w = {{"num_bits", 8}, {"type", "int"}, {"symmetric", true}, {"strategy", "channel"},
                       {"dynamic", false}, {"group_size", nullptr}, {"block_structure", nullptr},
                       {"actorder", nullptr}, {"observer", "minmax"}, {"observer_kwargs", json::object()}};
  const json args_a = {{"num_bits", 8}, {"type", "int"}, {"symmetric", true}, {"strategy", "token"},
                       {"dynamic", true}, {"group_size", nullptr}, {"block_structure", nullptr},
                       {"actorder", nullptr}, {"observer", nullptr}, {"observer_kwargs", json::object()}};
  cfg["quantization_config"] = {
      {"quant_method", "compressed-tensors"},
      {"format", "int-quantized"},
      {"quantization_status", "compressed"},
      // The compressed-tensors release the layout was checked with (sparse-bitmask was dropped
      // after 0.14; int-quantized is read by current releases and transformers).
      {"version", sparse_bitmask ? "0.13.0" : "0.20.0"},
      {"global_compression_ratio", nullptr},
      {"kv_cache_scheme", nullptr},
      {"ignore", {"lm_head"}},
      {"config_groups",
       {{"group_0",
         {{"targets", {"Linear"}}, {"weights", args_w}, {"input_activations", args_a}, {"output_activations", nullptr},
          {"format", "int-quantized"}}}}},
      {"sparsity_config", json::object()}};
  if (sparse_bitmask)
    cfg["quantization_config"]["sparsity_config"] = {{"format", "sparse-bitmask"},
                                                     {"targets", {"Linear"}},
                                                     {"ignore", {"lm_head"}},
                                                     {"global_sparsity", rep.sparsity},
                                                     {"sparsity_structure", rep.structure}};
  cfg["torch_dtype"] = "float32";
  // Tensors first, config last: a folder with a config always has its weights.
  safetensors::write((fs::path(dir) / "model.safetensors").string(), out, {{"format", "pt"}});
  atomic_write((fs::path(dir) / "config.json").string(), cfg.dump(2) + "\n");
  return rep;
}

}  // namespace prunus::llm
