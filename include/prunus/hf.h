// prunus/hf.h — the JSON files of a Hugging Face LLaMA folder: config.json and
// model.safetensors.index.json. Part of prunus_runtime: no libtorch.
//
// Both come from strangers, so every field is type- and range-checked before conversion, and
// an index may only name shard files inside the model folder (no '/', '\\', "." or "..").
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace prunus::hf {

struct LlamaConfig {
  std::int64_t dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0, seq_len = 0;
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;
};

// config.json text → sizes. InputError naming `path` for invalid JSON, missing or mistyped
// fields, non-positive sizes, heads that do not divide hidden_size, kv heads that do not
// divide the heads, an odd head size, and sizes whose tensors could not be addressed.
LlamaConfig parse_config(const std::string& text, const std::string& path);

// model.safetensors.index.json text → tensor name → shard file name (a bare file name inside
// the folder). InputError naming `path` for invalid JSON, a missing weight_map, non-string
// entries, and shard names that leave the folder.
std::map<std::string, std::string> parse_index(const std::string& text, const std::string& path);

}  // namespace prunus::hf
