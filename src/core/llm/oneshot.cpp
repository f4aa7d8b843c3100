// One-shot pruning of LLaMA linears: magnitude, Wanda (Sun et al. 2023) and SparseGPT
// (Frantar & Alistarh 2023), unstructured or N:M, calibrated block by block.
#include <chrono>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "prunus/distributed.h"
#include "prunus/io.h"
#include "prunus/llm.h"
#include "prunus/safetensors.h"
#include "util/interrupt.h"
#include "util/tensor_io.h"

namespace prunus::llm {
namespace fs = std::filesystem;

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
  auto mask = torch::zeros(score.sizes(), score.options().dtype(torch::kBool));
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
  return torch::zeros(g.sizes(), g.options().dtype(torch::kBool)).scatter_(2, order, true).reshape({rows, cols});
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
    // Each cols² intermediate is dropped as soon as the next exists: for down_proj of a
    // 7B-shaped model one of them is 485 MB.
    torch::Tensor L;
    {
      auto Hd = H.clone();
      Hd.diagonal().add_(damp * H.diagonal().mean().item<double>());
      auto [l, info] = torch::linalg_cholesky_ex(Hd);
      if (info.item<int>() == 0) L = l;
    }
    if (L.defined()) {
      auto inv = torch::cholesky_inverse(L);
      L = torch::Tensor();
      Hinv = torch::linalg_cholesky(inv, /*upper=*/true);
      if (torch::isfinite(Hinv).all().item<bool>()) break;
    }
    if (attempt == 6) fail(name, fmt::format("SparseGPT: the Hessian is not positive definite even with dampening {}", damp));
    std::fprintf(stderr, "\nSparseGPT: Cholesky failed for %s with dampening %g; retrying with %g\n", name.c_str(), damp,
                 damp * 10);
    damp *= 10;
  }
  H = torch::Tensor();  // only H⁻¹'s factor is needed from here on (cols² floats for down_proj)
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
      mask1 = torch::zeros({score.numel()}, W.options().dtype(torch::kBool));
      if (k > 0) mask1.index_fill_(0, std::get<1>(torch::sort(score.reshape({-1}), true, 0, false)).narrow(0, 0, k), true);
      mask1 = mask1.reshape(W1.sizes());
    } else {
      mask1 = torch::zeros(W1.sizes(), W.options().dtype(torch::kBool));
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
      auto q = w.masked_fill(mask1.select(1, i), 0.0);
      Q1.select(1, i).copy_(q);
      auto err = (w - q) / d[i];  // a tensor, not .item(): no device sync per column
      W1.narrow(1, i, count - i).sub_(torch::outer(err, Hinv1.select(0, i).narrow(0, i, count - i)));
      Err1.select(1, i).copy_(err);
    }
    W.narrow(1, i1, count).copy_(Q1);
    if (i2 < cols) W.narrow(1, i2, cols - i2).sub_(torch::matmul(Err1, Hinv.narrow(0, i1, count).narrow(1, i2, cols - i2)));
  }
  (void)rows;
  return damp;
}

std::vector<double> owl_allocation(const std::vector<double>& d, double target, double lambda) {
  const auto [lo, hi] = std::minmax_element(d.begin(), d.end());
  std::vector<double> keep(d.size());
  double mean = 0;
  for (std::size_t i = 0; i < d.size(); ++i) {
    keep[i] = *hi > *lo ? (d[i] - *lo) / (*hi - *lo) * lambda * 2 : 0.0;
    mean += keep[i] / double(d.size());
  }
  std::vector<double> s(d.size());
  for (std::size_t i = 0; i < d.size(); ++i) s[i] = 1.0 - (keep[i] - mean + (1.0 - target));
  return s;
}

torch::Tensor calibration_windows(const std::vector<std::int32_t>& tokens, std::int64_t nsamples, std::int64_t seqlen,
                                  std::uint64_t seed);

namespace {

torch::Tensor calibration_batch(const std::vector<std::int32_t>& tokens, std::int64_t nsamples, std::int64_t seqlen,
                                std::uint64_t seed) {
  const auto n_tok = static_cast<std::int64_t>(tokens.size());
  if (n_tok <= seqlen) fail("calibration text", fmt::format("{} tokens, need more than --seqlen {}", n_tok, seqlen));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int64_t> start(0, n_tok - seqlen - 1);
  auto batch = torch::empty({nsamples, seqlen}, torch::kInt64);
  auto acc = batch.accessor<std::int64_t, 2>();
  for (std::int64_t s = 0; s < nsamples; ++s) {
    const std::int64_t at = start(rng);
    for (std::int64_t j = 0; j < seqlen; ++j) acc[s][j] = tokens[at + j];
  }
  return batch;
}

// Calibration windows per forward chunk. A distributed run splits the windows on chunk
// boundaries, so every chunk's statistics are computed exactly as in one process.
constexpr std::int64_t kChunk = 8;

// Runs block l over x in chunks; `observe` sees each linear's input.
torch::Tensor run_block(const Model& m, int l, const torch::Tensor& x, const Model::Observer& observe) {
  std::vector<torch::Tensor> outs;
  for (std::int64_t s = 0; s < x.size(0); s += kChunk)
    outs.push_back(m.block(l, x.narrow(0, s, std::min<std::int64_t>(kChunk, x.size(0) - s)), observe));
  return outs.empty() ? x : torch::cat(outs);
}

// Statistics are summed in float64 (per chunk, then over the ranks): the sum then hardly
// depends on its order, so one process and N ranks give the same float32 statistics.
void accumulate(std::map<std::string, torch::Tensor>& acc, const std::string& name, const torch::Tensor& add) {
  auto& a = acc[name];
  a = a.defined() ? a.add_(add.to(torch::kFloat64)) : add.to(torch::kFloat64);
}

// Sums every rank's statistics (a fixed order of names on every rank) and row counts.
void all_reduce_stats(std::map<std::string, torch::Tensor>& stats, std::int64_t& rows, const std::vector<std::string>& names) {
  auto& g = dist::world();
  if (!g.active()) return;
  for (const auto& name : names) g.all_reduce_sum(stats.at(name), "the calibration statistics all-reduce");
  auto r = torch::tensor({double(rows)}, torch::kFloat64);
  g.all_reduce_sum(r, "the calibration row count");
  rows = static_cast<std::int64_t>(r.item<double>());
}

// OWL's first pass: the dense model's outlier ratio per block.
std::vector<double> owl_outlier_ratios(Model& m, torch::Tensor x, const OneShotConfig& cfg) {
  std::vector<double> ratios;
  for (int l = 0; l < m.config.n_layers; ++l) {
    if (cfg.io) cfg.io->load(m, l);
    std::map<std::string, torch::Tensor> sq;
    std::int64_t rows = 0;
    x = run_block(m, l, x, [&](const std::string& name, const torch::Tensor& in) {
      accumulate(sq, name, in.pow(2).sum(0));
      if (name.find("q_proj") != std::string::npos) rows += in.size(0);
    });
    if (sq.empty())  // this rank has no calibration windows: zeros of the right shapes
      for (const auto& name : m.linear_names(l)) sq[name] = torch::zeros({m.w(name).size(1)}, m.w(name).options().dtype(torch::kFloat64));
    all_reduce_stats(sq, rows, m.linear_names(l));
    std::vector<torch::Tensor> metrics;
    for (const auto& name : m.linear_names(l))
      metrics.push_back((m.w(name).abs() * (sq.at(name) / double(rows)).to(torch::kFloat32).sqrt().unsqueeze(0)).reshape({-1}));
    auto all = torch::cat(metrics);
    ratios.push_back((all > all.mean() * cfg.owl_m).sum().item<double>() / double(all.numel()));
    if (cfg.io) cfg.io->release(m, l);
  }
  return ratios;
}

// What a checkpoint must agree on to be resumed: every option that changes the result, the
// model's sizes and a checksum of its embeddings, and the calibration tokens.
std::string fingerprint(const Model& m, const std::vector<std::int32_t>& tokens, const OneShotConfig& cfg) {
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a over the tokens
  for (auto t : tokens)
    for (int b = 0; b < 4; ++b) h = (h ^ ((static_cast<std::uint32_t>(t) >> (8 * b)) & 0xff)) * 1099511628211ull;
  const auto& c = m.config;
  return fmt::format("{}{}|{}|{}:{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}x{}x{}x{}x{}x{}|{:a}|{:x}", cfg.io ? "stream|" : "", cfg.method, cfg.sparsity, cfg.n,
                     cfg.m, cfg.magnitude_scope, cfg.nsamples, cfg.seqlen, cfg.seed, cfg.damp, cfg.blocksize,
                     cfg.owl_lambda, cfg.owl_m, fmt::join(cfg.skip, ","), c.dim, c.hidden_dim, c.n_layers, c.n_heads,
                     c.n_kv_heads, c.vocab_size, m.w("model.embed_tokens.weight").sum().item<double>(), h);
}

// In memory: the finished blocks' weights. Streaming (`activations` defined): the calibration
// activations entering block next_block — the finished blocks are in the kept output.
void save_oneshot_checkpoint(const Model& m, int next_block, const OneShotResult& res, const std::string& fp,
                             const std::string& path, const torch::Tensor& activations = {}) {
  NamedTensors t;
  if (activations.defined()) {
    if (activations.numel() > 0) t.emplace_back("calibration.activations", activations.contiguous());
  } else {
    for (int l = 0; l < next_block; ++l)
      for (const auto& name : m.linear_names(l)) t.emplace_back(name, m.w(name));
  }
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& r : res.layers)
    layers.push_back({{"name", r.name}, {"numel", r.numel}, {"zeros", r.zeros}, {"seconds", r.seconds}, {"damp", r.damp}});
  const nlohmann::json state = {{"fingerprint", fp}, {"next_block", next_block}, {"layers", layers},
                                {"seconds", res.seconds}, {"calib_seconds", res.calib_seconds}};
  write_tensors(path, t, {{"prunus.oneshot", state.dump()}});
}

// Loads the finished blocks into m (streaming: the activations into *activations) and returns
// the first block left to prune.
int load_oneshot_checkpoint(Model& m, OneShotResult& res, const std::string& fp, const std::string& path,
                            torch::Tensor* activations = nullptr) {
  auto f = safetensors::File::open(path);
  auto it = f.metadata().find("prunus.oneshot");
  if (it == f.metadata().end()) fail(path, "not a Prunus one-shot checkpoint");
  int next = 0;
  try {
    const auto state = nlohmann::json::parse(it->second);
    if (state.at("fingerprint").get<std::string>() != fp)
      fail(path, "checkpoint is from a different model, calibration text or options (run without --resume)");
    next = state.at("next_block").get<int>();
    if (next < 0 || next > m.config.n_layers) fail(path, "checkpoint block index out of range");
    for (const auto& r : state.at("layers"))
      res.layers.push_back({r.at("name").get<std::string>(), r.at("numel").get<std::int64_t>(),
                            r.at("zeros").get<std::int64_t>(), r.at("seconds").get<double>(), r.at("damp").get<double>()});
    res.seconds = state.at("seconds").get<double>();
    res.calib_seconds = state.at("calib_seconds").get<double>();
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("corrupt checkpoint state: ") + e.what());
  }
  if (activations) {
    if (const auto* a = f.find("calibration.activations")) *activations = to_tensor(*a);
    return next;
  }
  for (int l = 0; l < next; ++l)
    for (const auto& name : m.linear_names(l)) {
      auto& dst = m.weights.at(name);
      auto v = to_tensor(f.at(name));
      if (v.sizes() != dst.sizes() || v.scalar_type() != dst.scalar_type())
        fail(path, fmt::format("checkpoint tensor '{}' has the wrong shape or type", name));
      dst.copy_(v);
    }
  return next;
}

}  // namespace

torch::Tensor calibration_windows(const std::vector<std::int32_t>& tokens, std::int64_t nsamples, std::int64_t seqlen,
                                  std::uint64_t seed) {
  return calibration_batch(tokens, nsamples, seqlen, seed);
}

OneShotResult oneshot(Model& m, const std::vector<std::int32_t>& calib_tokens, const OneShotConfig& cfg) {
  torch::NoGradGuard ng;
  if (cfg.method != "magnitude" && cfg.method != "wanda" && cfg.method != "sparsegpt" && cfg.method != "owl")
    fail("--method " + cfg.method, "unknown (known: magnitude, wanda, sparsegpt, owl)");
  if (cfg.method == "owl" && cfg.m > 0) fail("--method owl", "OWL allocates unstructured sparsity; it does not take --nm");
  if (cfg.m > 0 && !(cfg.n > 0 && cfg.n < cfg.m)) fail("N:M", fmt::format("{}:{} needs 0 < N < M", cfg.n, cfg.m));
  if (cfg.m == 0 && !(cfg.sparsity >= 0 && cfg.sparsity < 1))
    fail("--sparsity", fmt::format("{} is outside [0, 1)", cfg.sparsity));
  auto skipped = [&](const std::string& name) {
    for (const auto& pat : cfg.skip)
      if (!pat.empty() && name.find(pat) != std::string::npos) return true;
    return false;
  };
  // Input sizes from the configuration: with streaming (cfg.io) the blocks are not loaded yet.
  auto in_features = [&](const std::string& name) {
    if (m.weights.count(name)) return m.w(name).size(1);
    return name.find("down_proj") != std::string::npos ? m.config.hidden_dim : m.config.dim;
  };
  if (cfg.m > 0)
    for (int l = 0; l < m.config.n_layers; ++l)
      for (const auto& name : m.linear_names(l))
        if (!skipped(name) && in_features(name) % cfg.m != 0)
          fail(name, fmt::format("input size {} is not a multiple of M = {}; keep it dense with --skip {}",
                                 in_features(name), cfg.m, name.substr(name.rfind('.', name.size() - 8) + 1,
                                                                       name.size() - 7 - name.rfind('.', name.size() - 8) - 1)));
  if (cfg.io && (cfg.device != "cpu" || dist::world().active()))
    fail("--stream", "streaming runs in one process on the CPU");
  const auto t_start = std::chrono::steady_clock::now();
  OneShotResult res;
  const std::int64_t seqlen = cfg.seqlen > 0 ? cfg.seqlen : m.config.seq_len;
  const bool needs_data = cfg.method != "magnitude";
  auto& g = dist::world();
  const torch::Device device(cfg.device);
  if (device != torch::Device(torch::kCPU))
    for (auto& [name, w] : m.weights) w = w.to(device);
  torch::Tensor x;  // calibration activations entering the current block [N, T, D]
  if (needs_data) {
    // The same seeded windows on every rank; each rank calibrates on its share of them.
    auto windows = calibration_batch(calib_tokens, cfg.nsamples, seqlen, cfg.seed);
    const auto [lo, hi] = dist::shard(cfg.nsamples, kChunk);
    x = m.embed(windows.narrow(0, lo, hi - lo).to(device));
  }
  std::vector<double> block_sparsity(static_cast<std::size_t>(m.config.n_layers), cfg.sparsity);
  if (cfg.method == "owl") {
    res.block_outlier_ratio = owl_outlier_ratios(m, x, cfg);
    block_sparsity = owl_allocation(res.block_outlier_ratio, cfg.sparsity, cfg.owl_lambda);
  }
  res.block_sparsity = block_sparsity;
  int first = 0;
  const std::string fp = cfg.checkpoint.empty() ? "" : fingerprint(m, calib_tokens, cfg);
  if (cfg.resume && !cfg.checkpoint.empty() && fs::exists(cfg.checkpoint)) {
    if (cfg.io) {
      // Streaming: the activations the interrupted run had computed through its pruned blocks.
      torch::Tensor saved;
      first = load_oneshot_checkpoint(m, res, fp, cfg.checkpoint, &saved);
      if (needs_data) {
        if (!saved.defined() || saved.sizes() != x.sizes())
          fail(cfg.checkpoint, "checkpoint lacks the calibration activations this run needs");
        x = saved;
      }
    } else {
      first = load_oneshot_checkpoint(m, res, fp, cfg.checkpoint);
      // The activations entering block `first`: the same forward through the pruned blocks that
      // the interrupted run did, so every later statistic is bit-identical.
      if (needs_data)
        for (int l = 0; l < first; ++l) x = run_block(m, l, x, nullptr);
    }
    if (cfg.progress) std::fprintf(stderr, "resuming %s at block %d/%lld from %s\n", cfg.method.c_str(), first + 1,
                                   static_cast<long long>(m.config.n_layers), cfg.checkpoint.c_str());
  } else if (cfg.resume) {
    std::fprintf(stderr, "--resume: no checkpoint %s, starting afresh\n", cfg.checkpoint.c_str());
  }
  res.resumed_from_block = first;
  if (cfg.io && cfg.io->start) cfg.io->start(first);
  const double seconds_before = res.seconds;
  for (int l = first; l < m.config.n_layers; ++l) {
    try {
      const auto block_start = std::chrono::steady_clock::now();
      if (cfg.io) cfg.io->load(m, l);
      // Statistics of each linear's input over all calibration tokens.
      std::map<std::string, torch::Tensor> stats;  // wanda: Σx² per column; sparsegpt: Σxxᵀ
      std::int64_t rows_seen = 0;
      const bool hessian = cfg.method == "sparsegpt";
      if (needs_data) {
        const auto t0 = std::chrono::steady_clock::now();
        // q/k/v read the same input, as do gate/up: accumulate once, share the statistics.
        auto shares_input = [](const std::string& name) {
          return name.find("k_proj") != std::string::npos || name.find("v_proj") != std::string::npos ||
                 name.find("up_proj") != std::string::npos;
        };
        run_block(m, l, x, [&](const std::string& name, const torch::Tensor& in) {
          if (shares_input(name)) return;
          accumulate(stats, name, hessian ? torch::matmul(in.t(), in) : in.pow(2).sum(0));
          if (name.find("q_proj") != std::string::npos) rows_seen += in.size(0);
        });
        std::vector<std::string> own_inputs;
        for (const auto& name : m.linear_names(l))
          if (!shares_input(name)) {
            own_inputs.push_back(name);
            if (!stats.count(name)) {  // a rank without windows contributes zeros
              const auto cols = m.w(name).size(1);
              stats[name] = hessian ? torch::zeros({cols, cols}, m.w(name).options().dtype(torch::kFloat64))
                                    : torch::zeros({cols}, m.w(name).options().dtype(torch::kFloat64));
            }
          }
        all_reduce_stats(stats, rows_seen, own_inputs);
        const std::string p = fmt::format("model.layers.{}.", l);
        stats[p + "self_attn.k_proj.weight"] = stats[p + "self_attn.v_proj.weight"] = stats.at(p + "self_attn.q_proj.weight");
        stats[p + "mlp.up_proj.weight"] = stats.at(p + "mlp.gate_proj.weight");
        if (device.is_cuda()) torch::cuda::synchronize(device.index());
        res.calib_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }
      OneShotConfig layer_cfg = cfg;
      layer_cfg.sparsity = block_sparsity[static_cast<std::size_t>(l)];
      const auto names = m.linear_names(l);
      // SparseGPT's solves are the expensive part: each linear is solved by one rank (balanced
      // by cost) and its result broadcast. The cheap criteria run on every rank alike.
      std::vector<int> owner(names.size(), g.rank());
      if (cfg.method == "sparsegpt" && g.active()) {
        std::vector<double> cost;
        for (const auto& name : names)
          cost.push_back(skipped(name) ? 0.0 : double(m.w(name).size(1)) * double(m.w(name).size(0) + m.w(name).size(1)));
        owner = dist::assign_owners(cost);
      }
      // Each rank prunes what it owns without waiting for the others; then every SparseGPT
      // result travels from its owner. (damp, seconds) travel with it.
      std::vector<torch::Tensor> info(names.size());
      const auto solve_start = std::chrono::steady_clock::now();
      for (std::size_t i = 0; i < names.size(); ++i) {
        const auto& name = names[i];
        info[i] = torch::zeros({2}, torch::kFloat64);
        if (owner[i] != g.rank()) continue;
        const auto t0 = std::chrono::steady_clock::now();
        auto& W = m.weights.at(name);
        double damp = 0;
        if (skipped(name)) {
          // stays dense
        } else if (cfg.method == "magnitude") {
          W.masked_fill_(magnitude_mask(W, layer_cfg), 0.0);
        } else if (cfg.method == "wanda" || cfg.method == "owl") {
          W.masked_fill_(wanda_mask(W, (stats.at(name) / double(rows_seen)).to(torch::kFloat32), layer_cfg), 0.0);
        } else {
          auto pruned = W.clone();
          // A statement of its own: the float64 product is freed before the solve, and the
          // float32 Hessian is handed over (moved), so the solve holds one copy of it.
          auto h = (stats.at(name) * (2.0 / double(rows_seen))).to(torch::kFloat32);
          stats.erase(name);  // the float64 sum goes before the solve (with its last name)
          damp = sparsegpt_prune(pruned, std::move(h), layer_cfg, name);
          W.copy_(pruned);
        }
        stats.erase(name);  // q/k/v and gate/up share one tensor: freed with its last name
        if (device.is_cuda()) torch::cuda::synchronize(device.index());
        info[i][0] = damp;
        info[i][1] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }
      res.solve_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - solve_start).count();
      for (std::size_t i = 0; i < names.size(); ++i) {
        auto& W = m.weights.at(names[i]);
        if (cfg.method == "sparsegpt" && g.active()) {
          g.broadcast(W, owner[i], "the broadcast of a pruned weight");
          g.broadcast(info[i], owner[i], "the broadcast of a pruned weight");
        }
        LayerResult lr;
        lr.name = names[i];
        lr.damp = info[i][0].item<double>();
        lr.seconds = info[i][1].item<double>();
        lr.numel = W.numel();
        lr.zeros = W.numel() - W.count_nonzero().item<std::int64_t>();
        res.layers.push_back(lr);
      }
      if (g.active()) {
        std::vector<torch::Tensor> ws;
        for (const auto& name : names) ws.push_back(m.w(name));
        g.check_same(ws, fmt::format("pruned weights of block {}", l));
      }
      // The next block sees this block's output with its pruned weights.
      if (needs_data) x = run_block(m, l, x, nullptr);
      if (cfg.io) cfg.io->store(m, l);
      if (device.is_cuda()) torch::cuda::synchronize(device.index());
      res.block_seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - block_start).count());
      const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
      if (cfg.progress)
        std::fprintf(stderr, "%s: block %d/%lld pruned (%.1f s, ETA %.1f s)\n", cfg.method.c_str(), l + 1,
                     static_cast<long long>(m.config.n_layers), el,
                     el / (l + 1 - first) * double(m.config.n_layers - l - 1));
      // Every rank stops after the same block.
      const bool stop = g.any(interrupt_requested() || l == cfg.stop_after_block, "the interrupt check");
      if (cfg.io && l + 1 < m.config.n_layers && stop) {
        // Streaming: the output so far is kept beside the checkpoint, which holds the
        // activations entering the next block (the pruned blocks are no longer in memory).
        res.seconds = seconds_before + el;
        res.interrupted = true;
        res.peak_rss_bytes = peak_rss_bytes();
        if (cfg.checkpoint.empty() || !cfg.io->keep) {
          std::fprintf(stderr, "interrupted after block %d: no output written\n", l + 1);
          return res;
        }
        save_oneshot_checkpoint(m, l + 1, res, fp, cfg.checkpoint, needs_data ? x : torch::empty({0}));
        cfg.io->keep();
        std::fprintf(stderr, "interrupted: blocks 1-%d written to %s.partial, state in %s (continue with --resume)\n",
                     l + 1, cfg.checkpoint.c_str(), cfg.checkpoint.c_str());
        return res;
      }
      if (!cfg.checkpoint.empty() && l + 1 < m.config.n_layers && stop) {
        res.seconds = seconds_before + el;
        save_oneshot_checkpoint(m, l + 1, res, fp, cfg.checkpoint);
        std::fprintf(stderr, "interrupted: blocks 1-%d saved to %s (continue with --resume)\n", l + 1,
                     cfg.checkpoint.c_str());
        res.interrupted = true;
        res.peak_rss_bytes = peak_rss_bytes();
        for (auto& [name, w] : m.weights) w = w.to(torch::kCPU);
        return res;
      }
    } catch (const dist::PeerFailure& e) {
      // A rank was lost: rank 0 keeps the blocks that every rank finished.
      if (g.is_main() && !cfg.checkpoint.empty() && l > first) {
        res.layers.resize(static_cast<std::size_t>(l) * m.linear_names(0).size());
        save_oneshot_checkpoint(m, l, res, fp, cfg.checkpoint);
        throw dist::PeerFailure(fmt::format("{}; blocks 1-{} saved to {} (continue with --resume)", e.what(), l,
                                            cfg.checkpoint));
      }
      throw;
    }
  }
  res.seconds = seconds_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  res.peak_rss_bytes = peak_rss_bytes();
  for (auto& [name, w] : m.weights) w = w.to(torch::kCPU);
  return res;
}

}  // namespace prunus::llm
