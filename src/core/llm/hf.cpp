// Hugging Face LLaMA folders: config.json + model.safetensors (or sharded with
// model.safetensors.index.json). HF stores q/k projections with RoPE on rotated halves;
// Prunus (like llama2.c and Meta) uses interleaved pairs, so q/k rows are permuted on the
// way in and out, as llama2.c's export.py and transformers' conversion script do.
#include <algorithm>
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
// (HF halves → interleaved happens on read, in hf::read_llama_folder.)

}  // namespace

bool is_hf_folder(const std::string& path) { return fs::is_directory(path); }

namespace {
void set_config(Config& c, const hf::LlamaConfig& hc) {
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
  c.head_dim = hc.head_dim;
}
}  // namespace

Model load_hf(const std::string& dir) {
  // Read and validated torch-free (prunus_runtime); q/k rows already in llama2.c's order.
  auto folder = hf::read_llama_folder(dir);
  const auto& hc = folder.config;
  Model m;
  set_config(m.config, hc);
  for (auto& [name, t] : folder.tensors) {
    m.weights[name] = torch::from_blob(t.data.data(), t.shape, torch::kFloat32).clone();
    std::vector<float>().swap(t.data);  // one copy at a time
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
              {"head_dim", c.head_size()},
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

CompressedTensorsReport save_hf_compressed(const std::string& dir, const Model& m, CtLayout layout) {
  const bool int8 = layout == CtLayout::Int8 || layout == CtLayout::Int8Bitmask;
  const bool sparse_bitmask = layout == CtLayout::Int8Bitmask || layout == CtLayout::SparseBitmask;
  const bool two_four_layout = layout == CtLayout::Sparse24Bitmask;
  const auto& c = m.config;
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
    const std::int64_t rows = t.size(0), cols = t.size(1);
    const std::string prefix = name.substr(0, name.size() - std::string(".weight").size());
    // The stored values: int8 codes (int-quantized: symmetric per output channel, round half to
    // even in [-127, 127] — the runtime's INT8 weights — scale [rows, 1], no zero point) or the
    // fp32 weights themselves.
    torch::Tensor v = t;
    auto dtype = safetensors::DType::F32;
    if (int8) {
      auto amax = t.abs().amax(1, /*keepdim=*/true);
      auto scale = torch::where(amax > 0, amax / 127.0f, torch::ones_like(amax));
      v = torch::round(t / scale).clamp(-127, 127).to(torch::kInt8);
      dtype = safetensors::DType::I8;
      add(prefix + ".weight_scale", scale, safetensors::DType::F32);
    }
    auto nz = v != 0;
    const auto counts = nz.sum(1);
    const bool row_24 = cols % 4 == 0 && !(nz.view({rows, cols / 4, 4}).sum(2) > 2).any().item<bool>();
    two_four = two_four && row_24;
    zeros += rows * cols - counts.sum().item<std::int64_t>();
    total += rows * cols;
    ++rep.layers;
    if (!sparse_bitmask && !two_four_layout) {  // dense storage (int8 codes)
      add(name, v, dtype);
      continue;
    }
    auto pack = [&](const torch::Tensor& mask) {  // rows × ⌈cols/8⌉ bytes, little-endian bits
      auto bits = torch::zeros({rows, (cols + 7) / 8 * 8}, torch::kUInt8);
      bits.narrow(1, 0, cols).copy_(mask.to(torch::kUInt8));
      auto b = bits.view({rows, -1, 8});
      auto packed = torch::zeros({rows, (cols + 7) / 8}, torch::kUInt8);
      for (int k = 0; k < 8; ++k) packed.bitwise_or_(b.select(2, k).bitwise_left_shift(k));
      return packed;
    };
    if (two_four_layout) {
      // sparse-24-bitmask: exactly two values of every four columns (a group with fewer
      // non-zeros stores its first zeros), values [rows, cols/2], bitmask, shape [2, 1].
      if (!row_24) fail(dir, fmt::format("{} is not 2:4 sparse (a group of four columns holds more than two "
                                         "non-zeros): write it as sparse-bitmask, or prune with --nm 2:4", name));
      auto g = nz.view({rows, cols / 4, 4});
      auto zero_rank = (~g).to(torch::kInt32).cumsum(2);  // 1, 2, ... over each group's zeros
      auto need = 2 - g.sum(2, /*keepdim=*/true).to(torch::kInt32);
      auto keep24 = (g | ((~g) & (zero_rank <= need))).view({rows, cols});
      add(prefix + ".shape", torch::tensor({rows, cols}, torch::kInt64).view({2, 1}), safetensors::DType::I64);
      add(prefix + ".compressed", v.masked_select(keep24).view({rows, cols / 2}), dtype);
      add(prefix + ".bitmask", pack(keep24), safetensors::DType::U8);
      continue;
    }
    // sparse-bitmask (over the codes when quantized, as ModelCompressor stacked them): under the
    // module's name, the non-zero values row by row, a little-endian bitmask of rows × ⌈cols/8⌉
    // bytes, each row's offset, the dense shape.
    add(prefix + ".shape", torch::tensor({rows, cols}, torch::kInt64), safetensors::DType::I64);
    add(prefix + ".compressed", v.masked_select(nz), dtype);
    add(prefix + ".bitmask", pack(nz), safetensors::DType::U8);
    add(prefix + ".row_offsets", (counts.cumsum(0) - counts).to(torch::kInt64), safetensors::DType::I64);
  }
  rep.sparsity = total ? double(zeros) / double(total) : 0.0;
  rep.structure = two_four && rep.sparsity > 0 ? "2:4" : "unstructured";
  const json sparsity = {{"format", two_four_layout ? "sparse-24-bitmask" : "sparse-bitmask"},
                         {"targets", {"Linear"}},
                         {"ignore", {"lm_head"}},
                         {"global_sparsity", rep.sparsity},
                         {"sparsity_structure", rep.structure}};
  // The compressed-tensors release each layout was checked with: sparse compressors were
  // dropped after 0.14; int-quantized is read by current releases and transformers.
  cfg["quantization_config"] = {{"quant_method", "compressed-tensors"},
                                {"version", layout == CtLayout::Int8 ? "0.20.0" : "0.14.0"},
                                {"sparsity_config", layout == CtLayout::Int8 ? json::object() : sparsity}};
  if (int8) {
    const json args_w = {{"num_bits", 8}, {"type", "int"}, {"symmetric", true}, {"strategy", "channel"},
                         {"dynamic", false}, {"group_size", nullptr}, {"block_structure", nullptr},
                         {"actorder", nullptr}, {"observer", "minmax"}, {"observer_kwargs", json::object()}};
    const json args_a = {{"num_bits", 8}, {"type", "int"}, {"symmetric", true}, {"strategy", "token"},
                         {"dynamic", true}, {"group_size", nullptr}, {"block_structure", nullptr},
                         {"actorder", nullptr}, {"observer", nullptr}, {"observer_kwargs", json::object()}};
    auto& q = cfg["quantization_config"];
    q["format"] = "int-quantized";
    q["quantization_status"] = "compressed";
    q["global_compression_ratio"] = nullptr;
    q["kv_cache_scheme"] = nullptr;
    q["ignore"] = {"lm_head"};
    q["config_groups"] = {{"group_0",
                           {{"targets", {"Linear"}}, {"weights", args_w}, {"input_activations", args_a},
                            {"output_activations", nullptr}, {"format", "int-quantized"}}}};
  }
  cfg["torch_dtype"] = "float32";
  // Tensors first, config last: a folder with a config always has its weights.
  fs::create_directories(dir);  // only now: a refused layout leaves nothing behind
  safetensors::write((fs::path(dir) / "model.safetensors").string(), out, {{"format", "pt"}});
  atomic_write((fs::path(dir) / "config.json").string(), cfg.dump(2) + "\n");
  return rep;
}

}  // namespace prunus::llm

namespace prunus::llm {

OneShotResult oneshot_streaming(const std::string& in_dir, const std::string& out_dir,
                                const std::vector<std::int32_t>& calib_tokens, const OneShotConfig& cfg) {
  hf::LlamaFolderReader reader(in_dir);
  Model m;
  set_config(m.config, reader.config());
  const auto& c = m.config;
  auto get = [&](const std::string& name) {  // the reader's buffer becomes the tensor (no second copy)
    auto t = reader.tensor(name);
    auto* v = new std::vector<float>(std::move(t.data));
    return torch::from_blob(v->data(), t.shape, [v](void*) { delete v; }, torch::kFloat32);
  };
  auto block_names = [](int l) {
    auto names = llama2c::layer_linear_names(l);
    names.push_back(fmt::format("model.layers.{}.input_layernorm.weight", l));
    names.push_back(fmt::format("model.layers.{}.post_attention_layernorm.weight", l));
    return names;
  };
  // Everything outside the decoder blocks stays in memory (the embeddings feed calibration).
  auto all = reader.tensor_names();
  std::sort(all.begin(), all.end());  // save_hf's order (a std::map), so the bytes are the same
  std::vector<safetensors::TensorToWrite> layout;
  for (const auto& n : all) {
    layout.push_back({n, safetensors::DType::F32, reader.shape(n), nullptr});
    if (n.rfind("model.layers.", 0) != 0) m.weights[n] = get(n);
  }
  fs::create_directories(out_dir);
  const std::string out_file = (fs::path(out_dir) / "model.safetensors").string();
  // Output so far of an interrupted run (--resume), beside its checkpoint.
  const std::string partial = cfg.checkpoint.empty() ? std::string() : cfg.checkpoint + ".partial";
  std::unique_ptr<safetensors::StreamWriter> writer;
  auto put = [&](const std::string& name, const torch::Tensor& w) {  // as save_hf stores a tensor
    auto t = w.detach().to(torch::kFloat32).contiguous();
    if (name.find("q_proj") != std::string::npos) t = to_hf_rope(t, c.n_heads);
    if (name.find("k_proj") != std::string::npos) t = to_hf_rope(t, c.n_kv_heads);
    t = t.masked_fill(t == 0, 0.0).contiguous();
    writer->put(name, t.data_ptr());
  };
  BlockIO io;
  io.load = [&](Model& mm, int l) {
    for (const auto& n : block_names(l)) mm.weights[n] = get(n);
  };
  io.store = [&](Model& mm, int l) {
    for (const auto& n : block_names(l)) {
      put(n, mm.weights.at(n));
      mm.weights.erase(n);
    }
  };
  io.release = [&](Model& mm, int l) {
    for (const auto& n : block_names(l)) mm.weights.erase(n);
  };
  io.start = [&](int first) {
    if (first == 0) {
      writer = std::make_unique<safetensors::StreamWriter>(out_file, layout, std::map<std::string, std::string>{{"format", "pt"}});
      return;
    }
    std::vector<std::string> written;
    for (int l = 0; l < first; ++l)
      for (const auto& n : block_names(l)) written.push_back(n);
    writer = std::make_unique<safetensors::StreamWriter>(out_file, layout, std::map<std::string, std::string>{{"format", "pt"}},
                                                         partial, written);
  };
  io.keep = [&] {
    if (writer && !partial.empty()) writer->keep(partial);
  };
  OneShotConfig streamed = cfg;
  streamed.io = &io;
  auto res = oneshot(m, calib_tokens, streamed);
  if (res.interrupted) return res;  // nothing appears at out_dir/model.safetensors
  for (const auto& [name, w] : m.weights) put(name, w);
  writer->commit();
  atomic_write((fs::path(out_dir) / "config.json").string(), hf_config(c).dump(2) + "\n");
  return res;
}

}  // namespace prunus::llm
