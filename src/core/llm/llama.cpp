// The LLaMA forward (llama2.c semantics: RMSNorm, RoPE on interleaved pairs, GQA, SwiGLU).
#include <algorithm>
#include <cmath>
#include <fstream>

#include <fmt/format.h>

#include "prunus/io.h"
#include "prunus/llm.h"

namespace prunus::llm {
namespace F = torch::nn::functional;

const torch::Tensor& Model::w(const std::string& name) const {
  auto it = weights.find(name);
  if (it == weights.end()) throw std::invalid_argument("model has no tensor " + name);
  return it->second;
}

std::vector<std::string> Model::linear_names(int layer) const { return llama2c::layer_linear_names(layer); }

namespace {

torch::Tensor rmsnorm(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  return x * torch::rsqrt(x.pow(2).mean(-1, true) + eps) * w;
}

// cos/sin tables [T, head/2] for interleaved pairs (2i, 2i+1): freq_i = theta^(-2i/head).
std::pair<torch::Tensor, torch::Tensor> rope_tables(std::int64_t t, std::int64_t head, double theta) {
  auto i = torch::arange(0, head, 2, torch::kFloat64);
  auto freq = torch::pow(theta, -i / double(head));
  auto ang = torch::outer(torch::arange(t, torch::kFloat64), freq);
  return {ang.cos().to(torch::kFloat32), ang.sin().to(torch::kFloat32)};
}

torch::Tensor rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  // x [B, T, H, head] → pairs [B, T, H, head/2, 2]
  auto p = x.unflatten(-1, {-1, 2});
  auto a = p.select(-1, 0), b = p.select(-1, 1);
  auto c = cos.unsqueeze(1), s = sin.unsqueeze(1);  // [T, 1, head/2]
  return torch::stack({a * c - b * s, a * s + b * c}, -1).flatten(-2);
}

}  // namespace

torch::Tensor Model::embed(const torch::Tensor& tokens) const {
  return torch::embedding(w("model.embed_tokens.weight"), tokens);
}

torch::Tensor Model::block(int l, const torch::Tensor& x, const Observer& observe) const {
  const auto& c = config;
  const std::int64_t B = x.size(0), T = x.size(1), H = c.n_heads, KV = c.n_kv_heads, hs = c.head_size();
  const std::string p = fmt::format("model.layers.{}.", l);
  auto lin = [&](const std::string& name, const torch::Tensor& in) {
    const std::string full = p + name + ".weight";
    if (observe) observe(full, in.reshape({-1, in.size(-1)}));
    return torch::matmul(in, w(full).t());
  };
  auto h = rmsnorm(x, w(p + "input_layernorm.weight"), c.norm_eps);
  auto [cos, sin] = rope_tables(T, hs, c.rope_theta);
  cos = cos.to(x.device());
  sin = sin.to(x.device());
  auto q = rope(lin("self_attn.q_proj", h).view({B, T, H, hs}), cos, sin).transpose(1, 2);
  auto k = rope(lin("self_attn.k_proj", h).view({B, T, KV, hs}), cos, sin).transpose(1, 2);
  auto v = lin("self_attn.v_proj", h).view({B, T, KV, hs}).transpose(1, 2);
  if (KV != H) {
    k = k.repeat_interleave(H / KV, 1);
    v = v.repeat_interleave(H / KV, 1);
  }
  auto scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(double(hs));
  auto causal = torch::ones({T, T}, torch::TensorOptions().dtype(torch::kBool).device(x.device())).triu(1);
  scores = scores.masked_fill(causal, -std::numeric_limits<float>::infinity());
  auto att = torch::matmul(torch::softmax(scores, -1), v).transpose(1, 2).reshape({B, T, H * hs});
  auto x2 = x + lin("self_attn.o_proj", att);
  auto h2 = rmsnorm(x2, w(p + "post_attention_layernorm.weight"), c.norm_eps);
  auto gated = F::silu(lin("mlp.gate_proj", h2)) * lin("mlp.up_proj", h2);
  return x2 + lin("mlp.down_proj", gated);
}

torch::Tensor Model::logits(const torch::Tensor& x) const {
  auto h = rmsnorm(x, w("model.norm.weight"), config.norm_eps);
  const auto& cls = config.shared_classifier ? w("model.embed_tokens.weight") : w("lm_head.weight");
  return torch::matmul(h, cls.t());
}

torch::Tensor Model::forward(const torch::Tensor& tokens) const {
  torch::NoGradGuard ng;
  auto x = embed(tokens);
  for (int l = 0; l < config.n_layers; ++l) x = block(l, x);
  return logits(x);
}

Model from_llama2c(const llama2c::Checkpoint& ck) {
  Model m;
  const auto& c = ck.config;
  m.config = {c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.seq_len, c.shared_classifier};
  m.config.head_dim = c.head_dim;
  for (const auto& [name, t] : ck.tensors)
    m.weights[name] = torch::from_blob(const_cast<float*>(t.data.data()), t.shape, torch::kFloat32).clone();
  return m;
}

llama2c::Checkpoint to_llama2c(const Model& m) {
  llama2c::Checkpoint ck;
  const auto& c = m.config;
  ck.config = {static_cast<std::int32_t>(c.dim),      static_cast<std::int32_t>(c.hidden_dim),
               static_cast<std::int32_t>(c.n_layers), static_cast<std::int32_t>(c.n_heads),
               static_cast<std::int32_t>(c.n_kv_heads), static_cast<std::int32_t>(c.vocab_size),
               static_cast<std::int32_t>(c.seq_len),  c.shared_classifier,
               static_cast<std::int32_t>(c.head_dim)};
  for (const auto& [name, t] : m.weights) {
    auto ct = t.detach().to(torch::kFloat32).contiguous();
    // Pruned weights are +0.0 on disk.
    ct = ct.masked_fill(ct == 0, 0.0);
    llama2c::Tensor out;
    out.shape = ct.sizes().vec();
    out.data.assign(ct.data_ptr<float>(), ct.data_ptr<float>() + ct.numel());
    ck.tensors[name] = std::move(out);
  }
  return ck;
}

Model load(const std::string& path) {
  return is_hf_folder(path) ? load_hf(path) : from_llama2c(llama2c::read_checkpoint(path));
}
void save(const std::string& path, const Model& m) {
  if (path.size() > 4 && path.compare(path.size() - 4, 4, ".bin") == 0) llama2c::write_checkpoint(path, to_llama2c(m));
  else save_hf(path, m);
}

std::vector<std::int32_t> tokenize_documents(const std::string& text_path, const llama2c::Tokenizer& tok) {
  std::ifstream in(text_path, std::ios::binary);
  if (!in) fail(text_path, "cannot open text file");
  std::vector<std::int32_t> out;
  std::string line;
  const char* ws = " \t\r\n\v\f";
  while (std::getline(in, line)) {
    // A document is the line without surrounding whitespace (as Python's str.strip()).
    const auto b = line.find_first_not_of(ws);
    if (b == std::string::npos) continue;
    line = line.substr(b, line.find_last_not_of(ws) - b + 1);
    auto t = tok.encode(line, /*bos=*/true, /*eos=*/false);
    out.insert(out.end(), t.begin(), t.end());
  }
  if (out.empty()) fail(text_path, "no non-empty lines of text");
  return out;
}

Perplexity perplexity(const Model& m, const std::vector<std::int32_t>& tokens, std::int64_t context,
                      std::int64_t batch) {
  torch::NoGradGuard ng;
  Perplexity r;
  r.tokens = static_cast<std::int64_t>(tokens.size());
  r.windows = r.tokens / context;
  if (r.windows == 0) fail("text", fmt::format("{} tokens is less than one window of {}", r.tokens, context));
  auto all = torch::from_blob(const_cast<std::int32_t*>(tokens.data()), {r.windows, context}, torch::kInt32)
                 .to(torch::kInt64);
  // Keep attention scores (batch·heads·T² floats) near 16 MB: larger blocks go through
  // mmap/munmap on every allocation and the run spends its time in page faults.
  batch = std::clamp<std::int64_t>((16 << 20) / (4 * m.config.n_heads * context * context), 1, batch);
  double nll = 0;
  for (std::int64_t i = 0; i < r.windows; i += batch) {
    auto t = all.narrow(0, i, std::min(batch, r.windows - i));
    auto lg = m.forward(t).narrow(1, 0, context - 1);
    auto target = t.narrow(1, 1, context - 1);
    nll += F::cross_entropy(lg.reshape({-1, lg.size(-1)}), target.reshape({-1}),
                            F::CrossEntropyFuncOptions().reduction(torch::kSum))
               .item<double>();
  }
  r.predicted = r.windows * (context - 1);
  r.mean_nll = nll / double(r.predicted);
  r.perplexity = std::exp(r.mean_nll);
  return r;
}

std::vector<std::int32_t> generate_greedy(const Model& m, std::int64_t steps) {
  torch::NoGradGuard ng;
  std::vector<std::int32_t> out = {llama2c::Tokenizer::kBos};
  for (std::int64_t s = 0; s < steps && std::int64_t(out.size()) < m.config.seq_len; ++s) {
    auto t = torch::from_blob(out.data(), {1, std::int64_t(out.size())}, torch::kInt32).to(torch::kInt64);
    const auto next = m.forward(t).select(1, t.size(1) - 1).argmax(-1).item<std::int64_t>();
    if (next == llama2c::Tokenizer::kBos) break;
    out.push_back(static_cast<std::int32_t>(next));
  }
  return out;
}

}  // namespace prunus::llm
