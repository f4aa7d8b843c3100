// One-shot pruning of LLaMA linears: magnitude, Wanda (Sun et al. 2023) and SparseGPT
// (Frantar & Alistarh 2023), unstructured or N:M, calibrated block by block.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include <fmt/format.h>

#include "prunus/io.h"
#include "prunus/llm.h"

namespace prunus::llm {

std::int64_t peak_rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) {
      std::istringstream ss(line.substr(6));
      std::int64_t kb = 0;
      ss >> kb;
      return kb * 1024;
    }
  return 0;
}

namespace {

// A mask (true = prune) that removes exactly round(s·n) entries of `score` per row, the
// lowest first, ties to the lower column (stable sort).
torch::Tensor lowest_per_row(const torch::Tensor& score, double s) {
  const std::int64_t cols = score.size(1);
  const auto k = static_cast<std::int64_t>(std::llround(s * double(cols)));
  auto mask = torch::zeros(score.sizes(), torch::kBool);
  if (k == 0) return mask;
  auto order = std::get<1>(torch::sort(score, /*stable=*/true, 1, false)).narrow(1, 0, k);
  return mask.scatter_(1, order, true);
}

// N:M: in every group of m consecutive inputs of a row, prune the m − n lowest.
torch::Tensor lowest_per_group(const torch::Tensor& score, std::int64_t n, std::int64_t m) {
  const std::int64_t rows = score.size(0), cols = score.size(1);
  if (cols % m != 0) fail("N:M pruning", fmt::format("input size {} is not a multiple of M = {}", cols, m));
  auto g = score.reshape({rows, cols / m, m});
  auto order = std::get<1>(torch::sort(g, /*stable=*/true, 2, false)).narrow(2, 0, m - n);
  return torch::zeros(g.sizes(), torch::kBool).scatter_(2, order, true).reshape({rows, cols});
}

torch::Tensor mask_for(const torch::Tensor& score, const OneShotConfig& cfg) {
  return cfg.m > 0 ? lowest_per_group(score, cfg.n, cfg.m) : lowest_per_row(score, cfg.sparsity);
}

}  // namespace

torch::Tensor magnitude_mask(const torch::Tensor& w, const OneShotConfig& cfg) {
  auto score = w.abs();
  if (cfg.m > 0 || cfg.magnitude_scope == "row") return mask_for(score, cfg);
  // One ranking over the whole layer.
  auto flat = score.reshape({1, -1});
  return lowest_per_row(flat, cfg.sparsity).reshape(w.sizes());
}

torch::Tensor wanda_mask(const torch::Tensor& w, const torch::Tensor& col_sq_norm, const OneShotConfig& cfg) {
  // |W_ij| · ‖X_j‖₂, compared within each output row (Wanda's per-output comparison group).
  return mask_for(w.abs() * col_sq_norm.sqrt().unsqueeze(0), cfg);
}

double sparsegpt_prune(torch::Tensor& W, torch::Tensor H, const OneShotConfig& cfg, const std::string& name) {
  torch::NoGradGuard ng;
  const std::int64_t rows = W.size(0), cols = W.size(1);
  W = W.to(torch::kFloat32).clone();
  H = H.to(torch::kFloat32).clone();
  // Inputs that never fire carry no information: prune their weights, keep H invertible.
  auto dead = H.diagonal() == 0;
  H.diagonal().masked_fill_(dead, 1.0);
  W.index_put_({torch::indexing::Slice(), dead}, 0.0);
  double damp = cfg.damp;
  torch::Tensor Hinv;
  for (int attempt = 0;; ++attempt) {
    auto Hd = H.clone();
    Hd.diagonal().add_(damp * H.diagonal().mean().item<double>());
    auto [L, info] = torch::linalg_cholesky_ex(Hd);
    if (info.item<int>() == 0) {
      Hinv = torch::linalg_cholesky(torch::cholesky_inverse(L), /*upper=*/true);
      if (torch::isfinite(Hinv).all().item<bool>()) break;
    }
    if (attempt == 6) fail(name, fmt::format("SparseGPT: the Hessian is not positive definite even with dampening {}", damp));
    std::fprintf(stderr, "\nSparseGPT: Cholesky failed for %s with dampening %g; retrying with %g\n", name.c_str(), damp,
                 damp * 10);
    damp *= 10;
  }
  const std::int64_t bs = cfg.blocksize;
  for (std::int64_t i1 = 0; i1 < cols; i1 += bs) {
    const std::int64_t i2 = std::min(i1 + bs, cols), count = i2 - i1;
    auto W1 = W.narrow(1, i1, count).clone();
    auto Q1 = torch::zeros_like(W1);
    auto Err1 = torch::zeros_like(W1);
    auto Hinv1 = Hinv.narrow(0, i1, count).narrow(1, i1, count);
    auto d = Hinv1.diagonal();
    torch::Tensor mask1;
    if (cfg.m == 0) {
      // Exactly round(s · rows · count) in this block, lowest w²/[H⁻¹]²_jj first.
      auto score = (W1.pow(2) / d.pow(2).unsqueeze(0)).reshape({1, -1});
      const auto k = static_cast<std::int64_t>(std::llround(cfg.sparsity * double(score.numel())));
      mask1 = torch::zeros({score.numel()}, torch::kBool);
      if (k > 0) mask1.index_fill_(0, std::get<1>(torch::sort(score.reshape({-1}), true, 0, false)).narrow(0, 0, k), true);
      mask1 = mask1.reshape(W1.sizes());
    } else {
      mask1 = torch::zeros(W1.sizes(), torch::kBool);
    }
    for (std::int64_t i = 0; i < count; ++i) {
      if (cfg.m > 0 && i % cfg.m == 0) {
        // Choose this group's pruned inputs from the already-updated weights (as SparseGPT does).
        const std::int64_t gm = std::min(cfg.m, count - i);
        auto score = W1.narrow(1, i, gm).pow(2) / d.narrow(0, i, gm).pow(2).unsqueeze(0);
        auto order = std::get<1>(torch::sort(score, true, 1, false)).narrow(1, 0, cfg.m - cfg.n) + i;
        mask1.scatter_(1, order, true);
      }
      auto w = W1.select(1, i);
      const double di = d[i].item<double>();
      auto q = w.masked_fill(mask1.select(1, i), 0.0);
      Q1.select(1, i).copy_(q);
      auto err = (w - q) / di;
      W1.narrow(1, i, count - i).sub_(torch::outer(err, Hinv1.select(0, i).narrow(0, i, count - i)));
      Err1.select(1, i).copy_(err);
    }
    W.narrow(1, i1, count).copy_(Q1);
    if (i2 < cols) W.narrow(1, i2, cols - i2).sub_(torch::matmul(Err1, Hinv.narrow(0, i1, count).narrow(1, i2, cols - i2)));
  }
  (void)rows;
  return damp;
}

OneShotResult oneshot(Model& m, const std::vector<std::int32_t>& calib_tokens, const OneShotConfig& cfg) {
  torch::NoGradGuard ng;
  if (cfg.method != "magnitude" && cfg.method != "wanda" && cfg.method != "sparsegpt")
    fail("--method " + cfg.method, "unknown (known: magnitude, wanda, sparsegpt)");
  if (cfg.m > 0 && !(cfg.n > 0 && cfg.n < cfg.m)) fail("N:M", fmt::format("{}:{} needs 0 < N < M", cfg.n, cfg.m));
  if (cfg.m == 0 && !(cfg.sparsity >= 0 && cfg.sparsity < 1))
    fail("--sparsity", fmt::format("{} is outside [0, 1)", cfg.sparsity));
  const auto t_start = std::chrono::steady_clock::now();
  OneShotResult res;
  const std::int64_t seqlen = cfg.seqlen > 0 ? cfg.seqlen : m.config.seq_len;
  const bool needs_data = cfg.method != "magnitude";
  torch::Tensor x;  // calibration activations entering the current block [N, T, D]
  if (needs_data) {
    const auto n_tok = static_cast<std::int64_t>(calib_tokens.size());
    if (n_tok <= seqlen) fail("calibration text", fmt::format("{} tokens, need more than --seqlen {}", n_tok, seqlen));
    std::mt19937_64 rng(cfg.seed);
    std::uniform_int_distribution<std::int64_t> start(0, n_tok - seqlen - 1);
    auto batch = torch::empty({cfg.nsamples, seqlen}, torch::kInt64);
    for (std::int64_t s = 0; s < cfg.nsamples; ++s) {
      const std::int64_t at = start(rng);
      for (std::int64_t j = 0; j < seqlen; ++j) batch[s][j] = calib_tokens[at + j];
    }
    x = m.embed(batch);
  }
  const auto t_calib = std::chrono::steady_clock::now();
  for (int l = 0; l < m.config.n_layers; ++l) {
    // Statistics of each linear's input over all calibration tokens.
    std::map<std::string, torch::Tensor> stats;  // wanda: Σx² per column; sparsegpt: Σxxᵀ
    std::int64_t rows_seen = 0;
    if (needs_data) {
      const auto t0 = std::chrono::steady_clock::now();
      for (std::int64_t s = 0; s < cfg.nsamples; s += 8) {
        auto chunk = x.narrow(0, s, std::min<std::int64_t>(8, cfg.nsamples - s));
        m.block(l, chunk, [&](const std::string& name, const torch::Tensor& in) {
          auto add = cfg.method == "wanda" ? in.pow(2).sum(0) : torch::matmul(in.t(), in);
          auto& acc = stats[name];
          acc = acc.defined() ? acc + add : add;
          if (name.find("q_proj") != std::string::npos) rows_seen += in.size(0);
        });
      }
      res.calib_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    for (const auto& name : m.linear_names(l)) {
      const auto t0 = std::chrono::steady_clock::now();
      auto& W = m.weights.at(name);
      LayerResult lr;
      lr.name = name;
      if (cfg.method == "magnitude") {
        W.masked_fill_(magnitude_mask(W, cfg), 0.0);
      } else if (cfg.method == "wanda") {
        W.masked_fill_(wanda_mask(W, stats.at(name) / double(rows_seen), cfg), 0.0);
      } else {
        auto pruned = W.clone();
        lr.damp = sparsegpt_prune(pruned, stats.at(name) * (2.0 / double(rows_seen)), cfg, name);
        W.copy_(pruned);
      }
      lr.numel = W.numel();
      lr.zeros = W.numel() - W.count_nonzero().item<std::int64_t>();
      lr.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      res.layers.push_back(lr);
    }
    // The next block sees this block's output with its pruned weights.
    if (needs_data) {
      std::vector<torch::Tensor> outs;
      for (std::int64_t s = 0; s < cfg.nsamples; s += 8)
        outs.push_back(m.block(l, x.narrow(0, s, std::min<std::int64_t>(8, cfg.nsamples - s))));
      x = torch::cat(outs);
    }
    if (cfg.progress) {
      const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
      std::fprintf(stderr, "%s: block %d/%lld pruned (%.1f s, ETA %.1f s)\n", cfg.method.c_str(), l + 1,
                   static_cast<long long>(m.config.n_layers), el, el / (l + 1) * double(m.config.n_layers - l - 1));
    }
  }
  (void)t_calib;
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  res.peak_rss_bytes = peak_rss_bytes();
  return res;
}

}  // namespace prunus::llm
