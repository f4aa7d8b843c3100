// Hugging Face config.json and sharded-index parsing (torch-free, fuzzed by tests/fuzz/fuzz_hf).
#include "prunus/hf.h"

#include <cmath>
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
  if (c.dim % c.n_heads || c.n_heads % c.n_kv_heads || (c.dim / c.n_heads) % 2)
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

}  // namespace prunus::hf
