// Structured pruning of LLaMA MLPs: whole SwiGLU neurons out, hidden_dim shrinks.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include <fmt/format.h>

#include "prunus/io.h"
#include "prunus/llm.h"

namespace prunus::llm {

namespace {

std::string mlp(int l, const char* proj) { return fmt::format("model.layers.{}.mlp.{}.weight", l, proj); }

// Σ over calibration tokens of each down_proj input squared, per block (float64), from one
// pass of the dense model in chunks of 8 windows.
std::vector<torch::Tensor> neuron_sumsq(const Model& m, const std::vector<std::int32_t>& calib_tokens,
                                        const MlpShrinkConfig& cfg, std::int64_t& count) {
  const std::int64_t seqlen = cfg.seqlen > 0 ? cfg.seqlen : m.config.seq_len;
  if (seqlen > m.config.seq_len)
    fail("--seqlen", fmt::format("{} exceeds the model's context of {}", seqlen, m.config.seq_len));
  const auto windows = calibration_windows(calib_tokens, cfg.nsamples, seqlen, cfg.seed);
  std::vector<torch::Tensor> acc(m.config.n_layers);
  for (auto& a : acc) a = torch::zeros({m.config.hidden_dim}, torch::kFloat64);
  count = 0;
  torch::NoGradGuard ng;
  for (std::int64_t s = 0; s < cfg.nsamples; s += 8) {
    auto x = m.embed(windows.narrow(0, s, std::min<std::int64_t>(8, cfg.nsamples - s)));
    for (int l = 0; l < m.config.n_layers; ++l) {
      const std::string down = mlp(l, "down_proj");
      x = m.block(l, x, [&](const std::string& w, const torch::Tensor& in) {
        if (w == down) acc[l] += in.to(torch::kFloat64).square().sum(0);
      });
    }
    count += x.size(0) * x.size(1);
  }
  return acc;
}

}  // namespace

MlpShrinkResult plan_mlp_shrink(const Model& m, const std::vector<std::int32_t>& calib_tokens,
                                const MlpShrinkConfig& cfg) {
  const std::int64_t F = m.config.hidden_dim;
  if (!(cfg.fraction >= 0 && cfg.fraction < 1)) fail("--sparsity", fmt::format("{} is outside [0, 1)", cfg.fraction));
  if (cfg.round_to < 1) fail("--round-to", "must be at least 1");
  if (cfg.criterion != "activation" && cfg.criterion != "l2" && cfg.criterion != "random")
    fail("--criterion " + cfg.criterion, "unknown for a language model's MLP neurons (known: activation, l2, random)");
  if (cfg.criterion == "activation" && calib_tokens.empty())
    fail("--calib", "--criterion activation needs calibration text");
  if (cfg.criterion == "activation" && cfg.nsamples < 1) fail("--nsamples", "must be at least 1");
  MlpShrinkResult r;
  r.hidden_before = F;
  std::int64_t keep = F - std::llround(cfg.fraction * double(F));
  keep = std::min(F, (std::max<std::int64_t>(keep, 1) + cfg.round_to - 1) / cfg.round_to * cfg.round_to);
  r.hidden_after = keep;
  std::int64_t count = 0;
  std::vector<torch::Tensor> sumsq;
  if (cfg.criterion == "activation") sumsq = neuron_sumsq(m, calib_tokens, cfg, count);
  std::mt19937_64 rng(cfg.seed);
  for (int l = 0; l < m.config.n_layers; ++l) {
    torch::NoGradGuard ng;
    const auto down_norm = m.w(mlp(l, "down_proj")).to(torch::kFloat64).square().sum(0);  // per column
    torch::Tensor score;
    if (cfg.criterion == "activation") {
      score = down_norm.sqrt() * (sumsq[l] / double(count)).sqrt();
    } else if (cfg.criterion == "l2") {
      score = (m.w(mlp(l, "gate_proj")).to(torch::kFloat64).square().sum(1) +
               m.w(mlp(l, "up_proj")).to(torch::kFloat64).square().sum(1) + down_norm).sqrt();
    } else {
      std::uniform_real_distribution<double> u(0.0, 1.0);
      score = torch::empty({F}, torch::kFloat64);
      for (std::int64_t j = 0; j < F; ++j) score[j] = u(rng);
    }
    if (!torch::isfinite(score).all().item<bool>())
      fail(mlp(l, "down_proj"), "non-finite neuron scores (NaN or Inf weights or activations)");
    // Highest scores kept; ties go to the lower index (stable order).
    const auto* s = score.contiguous().data_ptr<double>();
    std::vector<std::int64_t> order(F);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) { return s[a] > s[b]; });
    order.resize(keep);
    std::sort(order.begin(), order.end());
    r.kept.push_back(std::move(order));
  }
  return r;
}

void apply_mlp_shrink(Model& m, const MlpShrinkResult& plan) {
  if (std::int64_t(plan.kept.size()) != m.config.n_layers || plan.hidden_before != m.config.hidden_dim)
    throw std::invalid_argument("apply_mlp_shrink: the plan is for another model");
  for (int l = 0; l < m.config.n_layers; ++l) {
    const auto idx = torch::tensor(plan.kept[l], torch::kInt64);
    for (const char* p : {"gate_proj", "up_proj"}) m.weights[mlp(l, p)] = m.w(mlp(l, p)).index_select(0, idx).contiguous();
    m.weights[mlp(l, "down_proj")] = m.w(mlp(l, "down_proj")).index_select(1, idx).contiguous();
  }
  m.config.hidden_dim = plan.hidden_after;
}

void mask_mlp_shrink(Model& m, const MlpShrinkResult& plan) {
  if (std::int64_t(plan.kept.size()) != m.config.n_layers || plan.hidden_before != m.config.hidden_dim)
    throw std::invalid_argument("mask_mlp_shrink: the plan is for another model");
  torch::NoGradGuard ng;
  for (int l = 0; l < m.config.n_layers; ++l) {
    auto keep = torch::zeros({m.config.hidden_dim}, torch::kBool);
    keep.index_fill_(0, torch::tensor(plan.kept[l], torch::kInt64), true);
    for (const char* p : {"gate_proj", "up_proj"}) m.weights[mlp(l, p)].masked_fill_(~keep.unsqueeze(1), 0.0);
    m.weights[mlp(l, "down_proj")].masked_fill_(~keep.unsqueeze(0), 0.0);
  }
}

}  // namespace prunus::llm
