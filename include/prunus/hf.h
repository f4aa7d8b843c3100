// prunus/hf.h — the JSON files of a Hugging Face LLaMA folder: config.json and
// model.safetensors.index.json. Part of prunus_runtime: no libtorch.
//
// Both come from strangers, so every field is type- and range-checked before conversion, and
// an index may only name shard files inside the model folder (no '/', '\\', "." or "..").
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "prunus/llama2c.h"
#include "prunus/safetensors.h"

namespace prunus::hf {

struct LlamaConfig {
  std::int64_t dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0, seq_len = 0;
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;
  std::int64_t head_dim = 0;  // config.json head_dim when it differs from hidden_size / heads (pruned heads)
  std::int64_t head_size() const { return head_dim ? head_dim : dim / n_heads; }
};

// config.json text → sizes. InputError naming `path` for invalid JSON, missing or mistyped
// fields, non-positive sizes, heads that do not divide hidden_size, kv heads that do not
// divide the heads, an odd head size, and sizes whose tensors could not be addressed.
LlamaConfig parse_config(const std::string& text, const std::string& path);

// model.safetensors.index.json text → tensor name → shard file name (a bare file name inside
// the folder). InputError naming `path` for invalid JSON, a missing weight_map, non-string
// entries, and shard names that leave the folder.
std::map<std::string, std::string> parse_index(const std::string& text, const std::string& path);

// compressed-tensors sparse layouts in a folder's config.json (quantization_config.
// sparsity_config.format), mapped through this fixed list: none (no quantization_config),
// "dense", "sparse-bitmask", "sparse-24-bitmask". A quantized folder (config_groups: int8, fp8,
// ...) and an unknown format are InputErrors naming `path`.
enum class SparseLayout { None, Dense, Bitmask, Bitmask24 };
SparseLayout parse_sparse_layout(const std::string& config_text, const std::string& path);
const char* sparse_layout_name(SparseLayout layout);

// One compressed weight of such a folder, decompressed: `module` is the weight's module name
// ("model.layers.0.mlp.down_proj"); its tensors are looked up by `find` under the current names
// (module.shape / .compressed / .bitmask [/ .row_offsets]) or the older ones (module.weight.*).
// Returns false when neither set exists (the weight is stored dense). Everything is validated
// against `rows` × `cols`: shape, dtypes, bitmask size and bits past the last column, value
// count = set bits (2:4: exactly two per group of four), row offsets, finite values.
using TensorLookup = std::function<const safetensors::TensorView*(const std::string& name)>;
bool decompress_weight(const TensorLookup& find, const std::string& module, SparseLayout layout, std::int64_t rows,
                       std::int64_t cols, std::vector<float>& out, const std::string& path);

// A Hugging Face LLaMA folder read without libtorch: config.json, model.safetensors or a
// sharded index, fp32/fp16/bf16 and the compressed-tensors sparse layouts, every tensor checked
// (names, shapes, finite values) and converted to fp32. Tensors keep their Hugging Face names;
// q_proj / k_proj rows are permuted from Hugging Face's rotate-half order to llama2.c's
// interleaved RoPE order. InputError naming the file at fault.
struct LlamaFolder {
  LlamaConfig config;
  SparseLayout layout = SparseLayout::None;
  std::map<std::string, llama2c::Tensor> tensors;
};
LlamaFolder read_llama_folder(const std::string& dir);

// The same folder read one tensor at a time (the safetensors files stay memory-mapped): for
// jobs that hold one decoder block in memory. Construction reads and checks config.json and
// the shard index; tensor() validates, converts to fp32 and reorders q/k as read_llama_folder.
class LlamaFolderReader {
 public:
  explicit LlamaFolderReader(const std::string& dir);
  const LlamaConfig& config() const;
  SparseLayout layout() const;
  std::vector<std::string> tensor_names() const;  // every tensor the model needs (HF names)
  std::vector<std::int64_t> shape(const std::string& name) const;  // as config.json implies it
  llama2c::Tensor tensor(const std::string& name) const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace prunus::hf
