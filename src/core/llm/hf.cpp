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
  const auto hc = hf::parse_config(read_text_file(cfg_path), cfg_path);
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

void save_hf(const std::string& dir, const Model& m) {
  const auto& c = m.config;
  fs::create_directories(dir);
  json cfg = {{"architectures", {"LlamaForCausalLM"}},
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

}  // namespace prunus::llm
