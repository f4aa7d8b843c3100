// prunus bench: a whole model in the libtorch-free runtime, sparse (each layer in the format
// that measured fastest) against the runtime's own dense path, in one process. Graph models
// (.safetensors with prunus.graph): latency per batch size. llama2.c checkpoints: greedy-decode
// tokens/s. Writes a report (JSON + HTML) when asked.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <random>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <torch/torch.h>

#include "prunus/data.h"
#include "prunus/io.h"
#include "prunus/models.h"
#include "prunus/recipe.h"
#include "prunus/report.h"
#include "prunus/runtime.h"
#include "util/threads.h"

namespace prunus {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Median over `rounds` of the mean time per call, each round at least `min_round` seconds.
template <class F>
double time_per_call(F&& call, double min_round, int rounds) {
  for (int i = 0; i < 3; ++i) call();  // warm-up: page in weights, size buffers
  std::vector<double> per_call;
  for (int r = 0; r < rounds; ++r) {
    int n = 0;
    const double t0 = now();
    double t = t0;
    do {
      call();
      ++n;
      t = now();
    } while (t - t0 < min_round);
    per_call.push_back((t - t0) / n);
  }
  std::sort(per_call.begin(), per_call.end());
  return per_call[per_call.size() / 2];
}

// The file as a libtorch model in eval mode, or null when libtorch cannot build it.
std::shared_ptr<Net> libtorch_model(const std::string& path) {
  if (path.empty()) return nullptr;
  try {
    auto net = load_model(path);
    net->eval();
    return net;
  } catch (const InputError&) {
    return nullptr;
  }
}

// libtorch's forward on the same raw inputs (normalised as the graph does), one call per timed
// iteration; nullopt without a libtorch model.
std::optional<double> libtorch_time(const std::shared_ptr<Net>& net, const std::vector<float>& x, std::int64_t batch,
                                    double min_round, int rounds) {
  if (!net || static_cast<std::int64_t>(x.size()) != batch * 28 * 28) return std::nullopt;
  torch::NoGradGuard ng;
  auto xt = (torch::from_blob(const_cast<float*>(x.data()), {batch, 1, 28, 28}).clone() - data::kPixelMean) / data::kPixelStd;
  return time_per_call([&] { (void)net->forward(xt); }, min_round, rounds);
}

}  // namespace

int bench_job(const BenchJob& job) {
  if (job.batches.empty()) fail("--batch", "give at least one batch size");
  for (auto b : job.batches)
    if (b < 1 || b > 4096) fail("--batch", fmt::format("{} is outside [1, 4096]", b));
  if (job.threads < 1) fail("--threads", "must be at least 1");
  if (!(job.seconds > 0)) fail("--seconds", "must be positive");
  if (!fs::exists(job.model)) fail(job.model, "not found");
  report::check_report_path(job.report);
  const int rounds = 5;
  const double min_round = job.seconds / rounds / 2;  // dense and sparse share the budget
  json rep = {{"job", "bench"}, {"model", job.model}, {"threads", job.threads}};
  if (!job.baseline.empty()) {
    if (!fs::exists(job.baseline)) fail(job.baseline, "not found");
    rep["baseline"] = job.baseline;
  }
  std::vector<std::vector<std::string>> table;
  json layers;
  if (job.model.ends_with(".bin")) {  // llama2.c checkpoint: decode speed
    runtime::LoadOptions lo;
    lo.kernel.threads = job.threads;
    auto sparse = runtime::Llama::load(job.model, lo);
    lo.dense = true;
    auto dense = runtime::Llama::load(job.model, lo);
    const std::int64_t steps = std::min<std::int64_t>(job.tokens, sparse.config().seq_len - 1);
    auto decode = [&](runtime::Llama& m) {
      std::int32_t tok = 1;
      for (std::int64_t p = 0; p < steps; ++p) {
        const auto& logits = m.step(tok, p);
        tok = static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      }
    };
    const double td = time_per_call([&] { decode(dense); }, min_round, rounds);
    const double ts = time_per_call([&] { decode(sparse); }, min_round, rounds);
    table = {{"path", "tokens/s", "weights", "speed-up"},
             {"dense", fmt::format("{:.1f}", steps / td), report::human_bytes(dense.weight_bytes()), "1.00x"},
             {"sparse", fmt::format("{:.1f}", steps / ts), report::human_bytes(sparse.weight_bytes()),
              fmt::format("{:.2f}x", td / ts)}};
    rep["decode"] = {{"tokens", steps},
                     {"dense_tokens_per_second", steps / td},
                     {"sparse_tokens_per_second", steps / ts},
                     {"dense_weight_bytes", dense.weight_bytes()},
                     {"sparse_weight_bytes", sparse.weight_bytes()}};
    layers = report::runtime_layers_json(sparse.layers());
    rep["runtime"] = {{"batch", 1}, {"threads", job.threads}, {"layers", layers}};
  } else {
    json rows = json::array();
    const auto torch_model = libtorch_model(job.model), torch_baseline = libtorch_model(job.baseline);
    table = {{"batch", "dense", "sparse", "speed-up", "samples/s (sparse)", "libtorch"}};
    if (!job.baseline.empty()) {
      table[0].insert(table[0].begin() + 1, {"baseline (dense)", "vs baseline"});
      table[0].push_back("libtorch baseline");
      table[0].push_back("libtorch vs baseline");
    }
    for (auto b : job.batches) {
      runtime::LoadOptions lo;
      lo.batch_hint = b;
      lo.kernel.threads = job.threads;
      const auto sparse = runtime::Model::load(job.model, lo);
      lo.dense = true;
      const auto dense = runtime::Model::load(job.model, lo);
      std::vector<float> x(static_cast<std::size_t>(b * sparse.input_size()));
      std::mt19937 rng(static_cast<std::uint32_t>(job.seed));
      std::uniform_real_distribution<float> u(0.0f, 1.0f);  // pixel-like inputs
      for (auto& v : x) v = u(rng);
      // The two paths must agree before their times mean anything.
      const auto yd = dense.forward(x.data(), b), ys = sparse.forward(x.data(), b);
      double err = 0, scale = 0;
      for (std::size_t i = 0; i < yd.size(); ++i) err = std::max(err, double(std::abs(yd[i] - ys[i]))), scale = std::max(scale, double(std::abs(yd[i])));
      if (err > 1e-3 * std::max(scale, 1.0))
        fail(job.model, fmt::format("sparse and dense outputs differ by {:.3g} (largest output {:.3g})", err, scale));
      const double td = time_per_call([&] { (void)dense.forward(x.data(), b); }, min_round, rounds);
      const double ts = time_per_call([&] { (void)sparse.forward(x.data(), b); }, min_round, rounds);
      table.push_back({std::to_string(b), fmt::format("{:.1f} us", td * 1e6), fmt::format("{:.1f} us", ts * 1e6),
                       fmt::format("{:.2f}x", td / ts), fmt::format("{:.0f}", double(b) / ts)});
      rows.push_back({{"batch", b}, {"dense_seconds", td}, {"sparse_seconds", ts}, {"speedup", td / ts},
                      {"max_abs_difference", err}});
      // libtorch's own forward of the same file: the other dense path a user has.
      set_compute_threads(job.threads);  // the runtime's dense path left OpenBLAS on one thread
      const auto tt = libtorch_time(torch_model, x, b, min_round, rounds);
      table.back().push_back(tt ? fmt::format("{:.1f} us", *tt * 1e6) : "-");
      if (tt) rows.back()["libtorch_seconds"] = *tt;
      if (!job.baseline.empty()) {
        // Another model with the same input (e.g. the one before `prunus shrink`), on its dense path.
        runtime::LoadOptions blo;
        blo.batch_hint = b;
        blo.kernel.threads = job.threads;
        blo.dense = true;
        const auto base = runtime::Model::load(job.baseline, blo);
        if (base.input_size() != sparse.input_size())
          fail(job.baseline, fmt::format("takes {} inputs per sample, {} takes {}", base.input_size(), job.model,
                                         sparse.input_size()));
        const double tb = time_per_call([&] { (void)base.forward(x.data(), b); }, min_round, rounds);
        const double best = std::min(td, ts);
        table.back().insert(table.back().begin() + 1,
                            {fmt::format("{:.1f} us", tb * 1e6), fmt::format("{:.2f}x", tb / best)});
        rows.back()["baseline_seconds"] = tb;
        rows.back()["speedup_vs_baseline"] = tb / best;
        const auto tbt = libtorch_time(torch_baseline, x, b, min_round, rounds);
        table.back().push_back(tbt ? fmt::format("{:.1f} us", *tbt * 1e6) : "-");
        table.back().push_back(tbt && tt ? fmt::format("{:.2f}x", *tbt / *tt) : "-");
        if (tbt) rows.back()["baseline_libtorch_seconds"] = *tbt;
      }
      if (b == job.batches.front()) {
        layers = report::runtime_layers_json(sparse.layers());
        rep["runtime"] = {{"batch", b}, {"threads", job.threads}, {"layers", layers}};
      }
    }
    rep["latency"] = rows;
  }
  std::printf("%s in prunus_runtime, %d thread(s), sparse formats chosen by measurement vs the runtime's dense path:\n%s",
              job.model.c_str(), job.threads, report::text_table(table).c_str());
  if (!job.report.empty()) {
    json rows = json::array();  // the per-layer table of the report
    for (const auto& l : layers)
      rows.push_back(report::to_json(report::make_row(l["name"].get<std::string>(),
                                                      {l["rows"].get<std::int64_t>(), l["cols"].get<std::int64_t>()},
                                                      l["nnz"].get<std::int64_t>())));
    rep["layers"] = rows;
    rep["prunus_version"] = version();
    rep["run"] = report::run_info();
    std::printf("report: %s (plots: %s)\n", job.report.c_str(), report::write_report(job.report, rep).c_str());
  }
  return 0;
}

}  // namespace prunus
