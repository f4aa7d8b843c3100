// The LLaMA decoder without libtorch: llama2.c's forward, one token at a time with a KV
// cache; the decoder linears are kernels::SparseLinear, so pruned layers run sparse where
// that measured faster than dense.
#include <algorithm>
#include <cmath>
#include <filesystem>

#include <fmt/format.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "prunus/hf.h"
#include "prunus/io.h"
#include "prunus/runtime.h"
#include "layer_build.h"

namespace prunus::runtime {
namespace {

void rmsnorm(float* out, const float* x, const float* w, std::int64_t n, float eps) {
  double ss = 0;  // double: the sum of 4096 squares in float drifts from the reference
  for (std::int64_t i = 0; i < n; ++i) ss += double(x[i]) * x[i];
  const float scale = static_cast<float>(1.0 / std::sqrt(ss / double(n) + eps));
  for (std::int64_t i = 0; i < n; ++i) out[i] = x[i] * scale * w[i];
}

float dot(const float* a, const float* b, std::int64_t n) {
  float s = 0;
  for (std::int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

Llama Llama::load(const std::string& path, const LoadOptions& opt) {
  if (std::filesystem::is_directory(path)) {  // a Hugging Face folder (compressed-tensors sparse layouts too)
    auto f = hf::read_llama_folder(path);
    const auto& c = f.config;
    llama2c::Checkpoint ck;
    ck.config = {static_cast<std::int32_t>(c.dim),        static_cast<std::int32_t>(c.hidden_dim),
                 static_cast<std::int32_t>(c.n_layers),   static_cast<std::int32_t>(c.n_heads),
                 static_cast<std::int32_t>(c.n_kv_heads), static_cast<std::int32_t>(c.vocab_size),
                 static_cast<std::int32_t>(c.seq_len),    c.tie_word_embeddings,
                 static_cast<std::int32_t>(c.head_dim)};
    ck.tensors = std::move(f.tensors);
    auto m = from_checkpoint(std::move(ck), opt, static_cast<float>(c.norm_eps), static_cast<float>(c.rope_theta));
    if (opt.map_embedding && !m.cfg_.shared_classifier) m.map_embedding(path);
    return m;
  }
  auto m = from_checkpoint(llama2c::read_checkpoint(path), opt);
  if (opt.map_embedding && !m.cfg_.shared_classifier) m.map_embedding(path);
  return m;
}

// Points the embedding table at its bytes in the model file (already validated by the reader
// that built the model) and drops the copy. A Hugging Face folder: the shard the index names
// (or model.safetensors), if the tensor is F32/F16/BF16 of the model's shape; a llama2.c file:
// fp32 right after its 28-byte header. Anything else keeps the copy.
void Llama::map_embedding(const std::string& path) {
  const std::string name = "model.embed_tokens.weight";
  const std::vector<std::int64_t> shape = {cfg_.vocab_size, cfg_.dim};
  if (std::filesystem::is_directory(path)) {
    const auto dir = std::filesystem::path(path);
    std::string shard = (dir / "model.safetensors").string();
    if (const auto index = dir / "model.safetensors.index.json"; std::filesystem::exists(index)) {
      const auto where = hf::parse_index(read_text_file(index.string()), index.string());
      const auto it = where.find(name);
      if (it == where.end()) return;
      shard = (dir / it->second).string();
    }
    auto file = std::make_shared<safetensors::File>(safetensors::File::open(shard));
    const auto* t = file->find(name);
    if (!t || t->shape != shape ||
        (t->dtype != safetensors::DType::F32 && t->dtype != safetensors::DType::F16 && t->dtype != safetensors::DType::BF16))
      return;
    embedding_file_ = *t;
    embedding_map_ = std::move(file);
  } else {
    auto file = std::make_shared<MappedFile>(path);
    const std::uint64_t bytes = std::uint64_t(cfg_.vocab_size) * std::uint64_t(cfg_.dim) * 4;
    if (file->size() < 28 + bytes) return;
    embedding_file_ = {name, safetensors::DType::F32, shape, file->data() + 28, bytes, 0};
    embedding_map_ = std::move(file);
  }
  std::vector<float>().swap(embedding_);
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

Llama Llama::from_checkpoint(llama2c::Checkpoint ck, const LoadOptions& opt, float norm_eps, float rope_theta) {
  Llama m;
  const auto& c = ck.config;
  m.cfg_ = {c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.seq_len, c.shared_classifier,
            norm_eps, rope_theta, c.head_dim};
  const auto& cfg = m.cfg_;
  if (cfg.dim <= 0 || cfg.n_heads <= 0 || cfg.n_kv_heads <= 0 || (!cfg.head_dim && cfg.dim % cfg.n_heads) ||
      cfg.head_dim < 0 || cfg.n_heads % cfg.n_kv_heads ||
      cfg.head_size() % 2 || cfg.hidden_dim <= 0 || cfg.vocab_size <= 0 || cfg.seq_len <= 0 || cfg.n_layers <= 0)
    fail("llama", "inconsistent model configuration");
  auto take = [&](const std::string& name, std::vector<std::int64_t> shape) {
    auto it = ck.tensors.find(name);
    if (it == ck.tensors.end()) fail("llama", fmt::format("model has no tensor '{}'", name));
    if (it->second.shape != shape)
      fail("llama", fmt::format("tensor '{}' has shape [{}], expected [{}]", name, fmt::join(it->second.shape, ", "),
                                fmt::join(shape, ", ")));
    std::vector<float> data = std::move(it->second.data);
    ck.tensors.erase(it);
    return data;
  };
  auto linear = [&](const std::string& name, std::int64_t rows, std::int64_t cols) {
    auto w = take(name + ".weight", {rows, cols});
    auto [lin, info] = build_layer(name, w, rows, cols, opt.batch_hint, opt);
    m.infos_.push_back(std::move(info));
    return std::move(lin);  // a structured binding is not moved implicitly
  };
  const std::int64_t D = cfg.dim, F = cfg.hidden_dim, KV = cfg.kv_dim(), Q = cfg.q_dim(), V = cfg.vocab_size;
  for (std::int64_t l = 0; l < cfg.n_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    Block b;
    b.attn_norm = take(p + "input_layernorm.weight", {D});
    b.ffn_norm = take(p + "post_attention_layernorm.weight", {D});
    b.wq = linear(p + "self_attn.q_proj", Q, D);
    b.wk = linear(p + "self_attn.k_proj", KV, D);
    b.wv = linear(p + "self_attn.v_proj", KV, D);
    b.wo = linear(p + "self_attn.o_proj", D, Q);
    b.w1 = linear(p + "mlp.gate_proj", F, D);
    b.w2 = linear(p + "mlp.down_proj", D, F);
    b.w3 = linear(p + "mlp.up_proj", F, D);
    m.blocks_.push_back(std::move(b));
  }
  m.final_norm_ = take("model.norm.weight", {D});
  auto emb = take("model.embed_tokens.weight", {V, D});
  if (cfg.shared_classifier) {
    m.classifier_ = kernels::SparseLinear::dense(emb.data(), V, D, opt.kernel);  // also the embedding table
  } else {
    auto cls = take("lm_head.weight", {V, D});
    // A pruned classifier (at least 10% zeros) gets its format by measurement like the other
    // linears, in fp32: with a 32,000-token vocabulary it is the largest matrix a token reads.
    // An unpruned one stays dense without the probe. (A shared one stays dense: it is also the
    // embedding table, read by rows.)
    const auto zeros = std::count(cls.begin(), cls.end(), 0.0f);
    if (!opt.dense && zeros * 10 >= std::int64_t(cls.size())) {
      LoadOptions fp32 = opt;
      fp32.int8 = false;
      auto [lin, info] = build_layer("lm_head", cls, V, D, opt.batch_hint, fp32);
      m.classifier_ = std::move(lin);
      m.infos_.push_back(std::move(info));
    } else {
      m.classifier_ = kernels::SparseLinear::dense(cls.data(), V, D, opt.kernel);
    }
    m.embedding_ = std::move(emb);
  }
  emb = {};
  // Buffers and the RoPE tables (angles in double, as the libtorch forward computes them).
  const std::int64_t hs = cfg.head_size(), T = cfg.seq_len;
  m.x_.resize(D);
  m.xb_.resize(std::max(D, Q));  // the normed input, then the heads' outputs
  m.q_.resize(std::max(D, Q));   // the queries, then the attention projection
  m.k_.resize(KV);
  m.v_.resize(KV);
  m.att_.resize(T);
  m.hb_.resize(F);
  m.hb2_.resize(F);
  m.logits_.resize(V);
  m.cos_.resize(T * hs / 2);
  m.sin_.resize(T * hs / 2);
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t i = 0; i < hs / 2; ++i) {
      const double ang = double(t) * std::pow(double(cfg.rope_theta), -double(2 * i) / double(hs));
      m.cos_[t * hs / 2 + i] = static_cast<float>(std::cos(ang));
      m.sin_[t * hs / 2 + i] = static_cast<float>(std::sin(ang));
    }
  m.key_cache_.assign(cfg.n_layers, std::vector<float>(T * KV));
  m.value_cache_.assign(cfg.n_layers, std::vector<float>(T * KV));
  ck.tensors.clear();
#if defined(__GLIBC__)
  malloc_trim(0);  // hand the freed dense tensors back to the system
#endif
  return m;
}

void Llama::embed(std::int32_t token, float* out) const {
  const std::int64_t D = cfg_.dim;
  if (embedding_file_.data) return embedding_file_.to_f32(std::int64_t(token) * D, D, out);
  const float* table = cfg_.shared_classifier ? classifier_.dense_data() : embedding_.data();
  std::copy_n(table + std::int64_t(token) * D, D, out);
}

std::uint64_t Llama::weight_bytes() const {
  // A mapped embedding table counts at its bytes in the file, resident or not.
  std::uint64_t total = classifier_.bytes() + embedding_.size() * 4 + embedding_file_.nbytes + final_norm_.size() * 4;
  for (const auto& b : blocks_)
    total += (b.attn_norm.size() + b.ffn_norm.size()) * 4 + b.wq.bytes() + b.wk.bytes() + b.wv.bytes() +
             b.wo.bytes() + b.w1.bytes() + b.w2.bytes() + b.w3.bytes();
  return total;
}

const std::vector<float>& Llama::step(std::int32_t token, std::int64_t pos) {
  const auto& c = cfg_;
  if (token < 0 || token >= c.vocab_size) fail("llama", fmt::format("token {} outside the vocabulary", token));
  if (pos < 0 || pos >= c.seq_len) fail("llama", fmt::format("position {} outside the context of {}", pos, c.seq_len));
  const std::int64_t D = c.dim, KV = c.kv_dim(), Q = c.q_dim(), hs = c.head_size(), F = c.hidden_dim;
  const std::int64_t group = c.n_heads / c.n_kv_heads;
  const float* cos = &cos_[pos * hs / 2];
  const float* sin = &sin_[pos * hs / 2];
  auto rope = [&](float* v, std::int64_t n) {
    for (std::int64_t i = 0; i < n; i += 2) {
      const std::int64_t j = (i % hs) / 2;
      const float a = v[i], b = v[i + 1];
      v[i] = a * cos[j] - b * sin[j];
      v[i + 1] = a * sin[j] + b * cos[j];
    }
  };
  embed(token, x_.data());
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  for (std::size_t l = 0; l < blocks_.size(); ++l) {
    auto& b = blocks_[l];
    rmsnorm(xb_.data(), x_.data(), b.attn_norm.data(), D, c.norm_eps);
    b.wq.forward(xb_.data(), 1, q_.data());
    b.wk.forward(xb_.data(), 1, k_.data());
    b.wv.forward(xb_.data(), 1, v_.data());
    rope(q_.data(), Q);
    rope(k_.data(), KV);
    std::copy(k_.begin(), k_.end(), key_cache_[l].begin() + pos * KV);
    std::copy(v_.begin(), v_.end(), value_cache_[l].begin() + pos * KV);
    for (std::int64_t h = 0; h < c.n_heads; ++h) {
      const float* q = &q_[h * hs];
      const std::int64_t kv_off = (h / group) * hs;
      float mx = -INFINITY;
      for (std::int64_t t = 0; t <= pos; ++t) {
        att_[t] = dot(q, &key_cache_[l][t * KV + kv_off], hs) * scale;
        mx = std::max(mx, att_[t]);
      }
      float sum = 0;
      for (std::int64_t t = 0; t <= pos; ++t) sum += att_[t] = std::exp(att_[t] - mx);
      float* out = &xb_[h * hs];
      std::fill_n(out, hs, 0.0f);
      for (std::int64_t t = 0; t <= pos; ++t) {
        const float a = att_[t] / sum;
        const float* v = &value_cache_[l][t * KV + kv_off];
        for (std::int64_t i = 0; i < hs; ++i) out[i] += a * v[i];
      }
    }
    b.wo.forward(xb_.data(), 1, q_.data());
    for (std::int64_t i = 0; i < D; ++i) x_[i] += q_[i];
    rmsnorm(xb_.data(), x_.data(), b.ffn_norm.data(), D, c.norm_eps);
    b.w1.forward(xb_.data(), 1, hb_.data());
    b.w3.forward(xb_.data(), 1, hb2_.data());
    for (std::int64_t i = 0; i < F; ++i) hb_[i] = hb_[i] / (1.0f + std::exp(-hb_[i])) * hb2_[i];
    b.w2.forward(hb_.data(), 1, xb_.data());
    for (std::int64_t i = 0; i < D; ++i) x_[i] += xb_[i];
  }
  rmsnorm(xb_.data(), x_.data(), final_norm_.data(), D, c.norm_eps);
  classifier_.forward(xb_.data(), 1, logits_.data());
  return logits_;
}

std::vector<std::int32_t> Llama::generate_greedy(std::int64_t steps, const std::function<void(std::int32_t)>& on_token) {
  std::vector<std::int32_t> out = {llama2c::Tokenizer::kBos};
  for (std::int64_t s = 0; s < steps && std::int64_t(out.size()) < cfg_.seq_len; ++s) {
    const auto& logits = step(out.back(), std::int64_t(out.size()) - 1);
    const auto next = static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    if (next == llama2c::Tokenizer::kBos) break;
    out.push_back(next);
    if (on_token) on_token(next);
  }
  return out;
}

}  // namespace prunus::runtime
