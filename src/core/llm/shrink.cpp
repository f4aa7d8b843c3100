// Structured pruning of LLaMA blocks: whole SwiGLU neurons and whole KV head groups out.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include <fmt/format.h>

#include "prunus/io.h"
#include "prunus/llm.h"

namespace prunus::llm {

namespace {

std::string lin(int l, const char* proj) {
  const bool attn = proj[0] == 'q' || proj[0] == 'k' || proj[0] == 'v' || proj[0] == 'o';
  return fmt::format("model.layers.{}.{}.{}.weight", l, attn ? "self_attn" : "mlp", proj);
}

// Per block, Σ over calibration tokens of each down_proj and o_proj input column squared
// (float64), from one pass of the dense model in chunks of 8 windows.
struct InputEnergy {
  std::vector<torch::Tensor> down, o;
  std::int64_t tokens = 0;
};
InputEnergy input_energy(const Model& m, const std::vector<std::int32_t>& calib_tokens, const LlmShrinkConfig& cfg) {
  const std::int64_t seqlen = cfg.seqlen > 0 ? cfg.seqlen : m.config.seq_len;
  if (seqlen > m.config.seq_len)
    fail("--seqlen", fmt::format("{} exceeds the model's context of {}", seqlen, m.config.seq_len));
  const auto windows = calibration_windows(calib_tokens, cfg.nsamples, seqlen, cfg.seed);
  InputEnergy e;
  for (int l = 0; l < m.config.n_layers; ++l) {
    e.down.push_back(torch::zeros({m.config.hidden_dim}, torch::kFloat64));
    e.o.push_back(torch::zeros({m.config.head_size() * m.config.n_heads}, torch::kFloat64));
  }
  torch::NoGradGuard ng;
  for (std::int64_t s = 0; s < cfg.nsamples; s += 8) {
    auto x = m.embed(windows.narrow(0, s, std::min<std::int64_t>(8, cfg.nsamples - s)));
    for (int l = 0; l < m.config.n_layers; ++l) {
      const std::string down = lin(l, "down_proj"), o = lin(l, "o_proj");
      x = m.block(l, x, [&](const std::string& w, const torch::Tensor& in) {
        if (w == down) e.down[l] += in.to(torch::kFloat64).square().sum(0);
        if (w == o) e.o[l] += in.to(torch::kFloat64).square().sum(0);
      });
    }
    e.tokens += x.size(0) * x.size(1);
  }
  return e;
}

// Indices of the `keep` highest scores, ascending; ties go to the lower index.
std::vector<std::int64_t> top(const torch::Tensor& score, std::int64_t keep, const std::string& where) {
  if (!torch::isfinite(score).all().item<bool>())
    fail(where, "non-finite scores (NaN or Inf weights or activations)");
  const auto sc = score.contiguous();
  const auto* s = sc.data_ptr<double>();
  std::vector<std::int64_t> order(static_cast<std::size_t>(sc.numel()));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) { return s[a] > s[b]; });
  order.resize(static_cast<std::size_t>(keep));
  std::sort(order.begin(), order.end());
  return order;
}

torch::Tensor sq_rows(const torch::Tensor& w) { return w.to(torch::kFloat64).square().sum(1); }
torch::Tensor sq_cols(const torch::Tensor& w) { return w.to(torch::kFloat64).square().sum(0); }
// Sums consecutive runs of `n` entries: per-column or per-row energies → per head or group.
torch::Tensor per(const torch::Tensor& v, std::int64_t n) { return v.view({-1, n}).sum(1); }

torch::Tensor random_scores(std::int64_t n, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  auto s = torch::empty({n}, torch::kFloat64);
  for (std::int64_t j = 0; j < n; ++j) s[j] = u(rng);
  return s;
}

// The kept heads' rows of q/k/v (hs each) of the kept groups — also their o_proj columns.
std::vector<std::int64_t> head_indices(const std::vector<std::int64_t>& groups, std::int64_t heads_per_group,
                                       std::int64_t hs) {
  std::vector<std::int64_t> rows;
  for (auto g : groups)
    for (std::int64_t h = g * heads_per_group; h < (g + 1) * heads_per_group; ++h)
      for (std::int64_t i = 0; i < hs; ++i) rows.push_back(h * hs + i);
  return rows;
}
torch::Tensor head_rows(const std::vector<std::int64_t>& groups, std::int64_t heads_per_group, std::int64_t hs) {
  return torch::tensor(head_indices(groups, heads_per_group, hs), torch::kInt64);
}

void check_plan(const Model& m, const LlmShrinkPlan& plan, const char* who) {
  if (std::int64_t(plan.kept.size()) != m.config.n_layers || plan.hidden_before != m.config.hidden_dim ||
      std::int64_t(plan.kept_groups.size()) != m.config.n_layers || plan.kv_before != m.config.n_kv_heads)
    throw std::invalid_argument(std::string(who) + ": the plan is for another model");
}

}  // namespace

LlmShrinkPlan plan_llm_shrink(const Model& m, const std::vector<std::int32_t>& calib_tokens, const LlmShrinkConfig& cfg) {
  const auto& c = m.config;
  const std::int64_t F = c.hidden_dim, KV = c.n_kv_heads, group = c.n_heads / c.n_kv_heads, hs = c.head_size();
  if (!(cfg.mlp_fraction >= 0 && cfg.mlp_fraction < 1))
    fail("--sparsity", fmt::format("{} is outside [0, 1)", cfg.mlp_fraction));
  if (!(cfg.head_fraction >= 0 && cfg.head_fraction < 1))
    fail("--heads", fmt::format("{} is outside [0, 1)", cfg.head_fraction));
  if (cfg.round_to < 1) fail("--round-to", "must be at least 1");
  if (cfg.criterion != "activation" && cfg.criterion != "l2" && cfg.criterion != "random")
    fail("--criterion " + cfg.criterion, "unknown for a language model (known: activation, l2, random)");
  if (cfg.criterion == "activation" && calib_tokens.empty())
    fail("--calib", "--criterion activation needs calibration text");
  if (cfg.criterion == "activation" && cfg.nsamples < 1) fail("--nsamples", "must be at least 1");
  LlmShrinkPlan r;
  r.hidden_before = F;
  std::int64_t keep = F - std::llround(cfg.mlp_fraction * double(F));
  r.hidden_after = std::min(F, (std::max<std::int64_t>(keep, 1) + cfg.round_to - 1) / cfg.round_to * cfg.round_to);
  r.kv_before = KV;
  r.kv_after = std::max<std::int64_t>(1, KV - std::llround(cfg.head_fraction * double(KV)));
  InputEnergy e;
  if (cfg.criterion == "activation") e = input_energy(m, calib_tokens, cfg);
  std::mt19937_64 rng(cfg.seed);
  torch::NoGradGuard ng;
  for (int l = 0; l < c.n_layers; ++l) {
    const auto down = m.w(lin(l, "down_proj")), o = m.w(lin(l, "o_proj"));
    torch::Tensor neuron, head_group;
    if (cfg.criterion == "activation") {
      const double n = double(e.tokens);
      neuron = (sq_cols(down) * e.down[l] / n).sqrt();
      head_group = per(sq_cols(o) * e.o[l] / n, hs * group).sqrt();
    } else if (cfg.criterion == "l2") {
      neuron = (sq_rows(m.w(lin(l, "gate_proj"))) + sq_rows(m.w(lin(l, "up_proj"))) + sq_cols(down)).sqrt();
      head_group = (per(sq_rows(m.w(lin(l, "q_proj"))) + sq_cols(o), hs * group) + per(sq_rows(m.w(lin(l, "k_proj"))), hs) +
                    per(sq_rows(m.w(lin(l, "v_proj"))), hs))
                       .sqrt();
    } else {
      neuron = random_scores(F, rng);
      head_group = random_scores(KV, rng);
    }
    r.kept.push_back(top(neuron, r.hidden_after, lin(l, "down_proj")));
    r.kept_groups.push_back(top(head_group, r.kv_after, lin(l, "o_proj")));
  }
  return r;
}

void apply_llm_shrink(Model& m, const LlmShrinkPlan& plan) {
  check_plan(m, plan, "apply_llm_shrink");
  auto& c = m.config;
  const std::int64_t group = c.n_heads / c.n_kv_heads, hs = c.head_size();
  for (int l = 0; l < c.n_layers; ++l) {
    const auto idx = torch::tensor(plan.kept[l], torch::kInt64);
    for (const char* p : {"gate_proj", "up_proj"}) m.weights[lin(l, p)] = m.w(lin(l, p)).index_select(0, idx).contiguous();
    m.weights[lin(l, "down_proj")] = m.w(lin(l, "down_proj")).index_select(1, idx).contiguous();
    const auto q_rows = head_rows(plan.kept_groups[l], group, hs), kv_rows = head_rows(plan.kept_groups[l], 1, hs);
    m.weights[lin(l, "q_proj")] = m.w(lin(l, "q_proj")).index_select(0, q_rows).contiguous();
    for (const char* p : {"k_proj", "v_proj"}) m.weights[lin(l, p)] = m.w(lin(l, p)).index_select(0, kv_rows).contiguous();
    m.weights[lin(l, "o_proj")] = m.w(lin(l, "o_proj")).index_select(1, q_rows).contiguous();
  }
  c.hidden_dim = plan.hidden_after;
  c.n_kv_heads = plan.kv_after;
  c.n_heads = plan.kv_after * group;
  c.head_dim = c.n_heads * hs == c.dim ? 0 : hs;
}

void mask_llm_shrink(Model& m, const LlmShrinkPlan& plan) {
  check_plan(m, plan, "mask_llm_shrink");
  const auto& c = m.config;
  const std::int64_t group = c.n_heads / c.n_kv_heads, hs = c.head_size();
  torch::NoGradGuard ng;
  auto kept = [](std::int64_t n, const torch::Tensor& idx) {
    return torch::zeros({n}, torch::kBool).index_fill_(0, idx, true);
  };
  for (int l = 0; l < c.n_layers; ++l) {
    const auto neurons = kept(c.hidden_dim, torch::tensor(plan.kept[l], torch::kInt64));
    for (const char* p : {"gate_proj", "up_proj"}) m.weights[lin(l, p)].masked_fill_(~neurons.unsqueeze(1), 0.0);
    m.weights[lin(l, "down_proj")].masked_fill_(~neurons.unsqueeze(0), 0.0);
    const auto q = kept(c.n_heads * hs, head_rows(plan.kept_groups[l], group, hs));
    const auto kv = kept(c.n_kv_heads * hs, head_rows(plan.kept_groups[l], 1, hs));
    m.weights[lin(l, "q_proj")].masked_fill_(~q.unsqueeze(1), 0.0);
    for (const char* p : {"k_proj", "v_proj"}) m.weights[lin(l, p)].masked_fill_(~kv.unsqueeze(1), 0.0);
    m.weights[lin(l, "o_proj")].masked_fill_(~q.unsqueeze(0), 0.0);
  }
}

}  // namespace prunus::llm

namespace prunus::llm {

namespace {

// W' (out × K) = W · Σ[:, K] · (Σ[K, K] + λI)⁻¹, float64; the result in W's dtype.
torch::Tensor refit(const torch::Tensor& w, const torch::Tensor& sigma, const std::vector<std::int64_t>& kept) {
  const auto k = torch::tensor(kept, torch::kInt64);
  auto a = sigma.index_select(0, k).index_select(1, k);
  const double lambda = 0.01 * a.diagonal().mean().item<double>() + 1e-12;
  a = a + lambda * torch::eye(a.size(0), torch::kFloat64);
  const auto b = torch::matmul(sigma.index_select(0, k), w.to(torch::kFloat64).t());  // K × out
  return torch::linalg_solve(a, b).t().to(w.dtype()).contiguous();
}

}  // namespace

ReconstructionError reconstruct_llm_shrink(Model& shrunk, const Model& dense, const LlmShrinkPlan& plan,
                                           const std::vector<std::int32_t>& calib_tokens, const LlmShrinkConfig& cfg) {
  const auto& c = dense.config;
  if (std::int64_t(plan.kept.size()) != c.n_layers || shrunk.config.hidden_dim != plan.hidden_after ||
      shrunk.config.n_kv_heads != plan.kv_after)
    throw std::invalid_argument("reconstruct_llm_shrink: the plan does not match the models");
  if (calib_tokens.empty()) fail("--calib", "output reconstruction needs calibration text");
  if (cfg.nsamples < 1) fail("--nsamples", "must be at least 1");
  const std::int64_t seqlen = cfg.seqlen > 0 ? cfg.seqlen : c.seq_len;
  if (seqlen > c.seq_len) fail("--seqlen", fmt::format("{} exceeds the model's context of {}", seqlen, c.seq_len));
  const auto windows = calibration_windows(calib_tokens, cfg.nsamples, seqlen, cfg.seed);
  const std::int64_t chunk = 8, group = c.n_heads / c.n_kv_heads, hs = c.head_size();
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> xs;  // hidden states entering the current block, per chunk
  for (std::int64_t s = 0; s < cfg.nsamples; s += chunk)
    xs.push_back(dense.embed(windows.narrow(0, s, std::min(chunk, cfg.nsamples - s))));
  ReconstructionError err;
  auto rel_error = [&](int l) {
    double num = 0, den = 0;
    for (const auto& x : xs) {
      const auto want = dense.block(l, x) - x, got = shrunk.block(l, x) - x;  // the block's own contribution
      num += (want - got).to(torch::kFloat64).square().sum().item<double>();
      den += want.to(torch::kFloat64).square().sum().item<double>();
    }
    return den > 0 ? num / den : 0.0;
  };
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string down = fmt::format("model.layers.{}.mlp.down_proj.weight", l);
    const std::string o = fmt::format("model.layers.{}.self_attn.o_proj.weight", l);
    auto sig_down = torch::zeros({c.hidden_dim, c.hidden_dim}, torch::kFloat64);
    auto sig_o = torch::zeros({hs * c.n_heads, hs * c.n_heads}, torch::kFloat64);
    // Σ of the dense layer's inputs on the shrunk model's hidden states: removing a neuron or a
    // head leaves the others' outputs unchanged, so the kept part of Σ is the shrunk layer's.
    for (const auto& x : xs)
      dense.block(l, x, [&](const std::string& w, const torch::Tensor& in) {
        const auto d = in.to(torch::kFloat64);
        if (w == down) sig_down += torch::matmul(d.t(), d);
        if (w == o) sig_o += torch::matmul(d.t(), d);
      });
    err.before.push_back(rel_error(l));
    shrunk.weights[o] = refit(dense.w(o), sig_o, head_indices(plan.kept_groups[l], group, hs));
    shrunk.weights[down] = refit(dense.w(down), sig_down, plan.kept[l]);
    err.after.push_back(rel_error(l));
    for (auto& x : xs) x = shrunk.block(l, x);
  }
  return err;
}

}  // namespace prunus::llm
