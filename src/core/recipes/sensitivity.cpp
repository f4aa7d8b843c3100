// prunus sensitivity: how much accuracy each layer loses when pruned alone, and a per-layer
// allocation that reaches a global target with the least predicted loss.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "prunus/data.h"
#include "prunus/distributed.h"
#include "prunus/io.h"
#include "prunus/models.h"
#include "prunus/recipe.h"
#include "prunus/report.h"
#include "prunus/sparsify.h"
#include "prunus/train.h"
#include "util/interrupt.h"
#include "util/progress.h"
#include "util/threads.h"

namespace prunus {
namespace fs = std::filesystem;

namespace {

struct Curve {
  std::string name;
  std::int64_t numel = 0;
  std::vector<double> levels, drop;  // drop in accuracy points at each level (level 0 first)
};

// Greedy allocation on the measured curves, linear between grid levels: from every layer
// dense, repeatedly advance the layer whose next grid step adds the least drop per zero
// gained; the last step stops part-way, exactly at the target.
struct Allocation {
  std::vector<double> sparsity;
  double predicted_drop = 0;
};

Allocation allocate(const std::vector<Curve>& curves, double target) {
  std::int64_t total = 0;
  for (const auto& c : curves) total += c.numel;
  const double want = target * double(total);
  std::vector<std::size_t> at(curves.size(), 0);
  Allocation a;
  a.sparsity.assign(curves.size(), 0.0);
  double zeros = 0;
  while (zeros < want) {
    double best = INFINITY;
    std::size_t pick = curves.size();
    for (std::size_t l = 0; l < curves.size(); ++l) {
      const auto& c = curves[l];
      if (at[l] + 1 >= c.levels.size()) continue;
      const double gained = (c.levels[at[l] + 1] - c.levels[at[l]]) * double(c.numel);
      const double cost = std::max(0.0, c.drop[at[l] + 1] - c.drop[at[l]]) / gained;
      if (cost < best) best = cost, pick = l;
    }
    if (pick == curves.size()) break;  // every layer at its highest level
    const auto& c = curves[pick];
    const double gained = (c.levels[at[pick] + 1] - c.levels[at[pick]]) * double(c.numel);
    if (zeros + gained >= want) {  // part of this step reaches the target
      const double f = (want - zeros) / gained;
      a.sparsity[pick] = c.levels[at[pick]] + f * (c.levels[at[pick] + 1] - c.levels[at[pick]]);
      zeros = want;
      break;
    }
    zeros += gained;
    a.sparsity[pick] = c.levels[++at[pick]];
  }
  for (std::size_t l = 0; l < curves.size(); ++l) {  // drops interpolated at the chosen levels
    const auto& c = curves[l];
    std::size_t i = 0;
    while (i + 1 < c.levels.size() && c.levels[i + 1] <= a.sparsity[l]) ++i;
    const double f = i + 1 < c.levels.size() ? (a.sparsity[l] - c.levels[i]) / (c.levels[i + 1] - c.levels[i]) : 0.0;
    a.predicted_drop += c.drop[i] + (i + 1 < c.levels.size() ? f * (c.drop[i + 1] - c.drop[i]) : 0.0);
  }
  return a;
}

}  // namespace

int sensitivity_job(const SensitivityJob& job, const JobOptions& opt) {
  if (job.out.empty()) fail("--out", "a CSV file to write is required");
  if (auto dir = fs::path(job.out).parent_path(); !dir.empty() && !fs::is_directory(dir))
    fail(job.out, "output directory does not exist");
  if (job.levels.empty()) fail("--levels", "at least one level is needed");
  for (double s : job.levels)
    if (!(s > 0 && s < 1)) fail("--levels", fmt::format("level {} is outside (0, 1)", s));
  if (!(job.target >= 0 && job.target < 1)) fail("--target", fmt::format("{} is outside [0, 1)", job.target));
  if (pattern_fixed_sparsity(job.pattern) >= 0)
    fail("--pattern", fmt::format("{} fixes the sparsity: nothing to sweep", job.pattern));
  if (auto why = pattern_error(job.pattern); !why.empty()) fail("--pattern", why);
  if (const auto crit = make_criterion(job.criterion); crit->needs_gradients() || crit->needs_activations())
    fail("--criterion", fmt::format("{} needs {}; sensitivity sweeps use weight-only criteria", job.criterion,
                                    crit->needs_gradients() ? "gradients" : "calibration activations"));
  if (job.holdout < 100) fail("--holdout", "at least 100 samples");
  data::check_available(job.data);
  set_compute_threads(job.threads);
  torch::manual_seed(job.seed);
  install_interrupt_handler();

  auto net = load_model(job.input);
  auto train = data::load_split(job.data, "train");
  const std::int64_t n = std::min(job.holdout, train.size());
  const data::Dataset holdout{train.images.narrow(0, train.size() - n, n), train.labels.narrow(0, train.size() - n, n)};
  const double base = evaluate(*net, holdout).accuracy;

  std::vector<double> levels = job.levels;
  std::sort(levels.begin(), levels.end());
  levels.erase(std::unique(levels.begin(), levels.end()), levels.end());
  const auto weights = prunable_weights(*net);
  // (layer, level) evaluations are dealt out to the ranks in turn and gathered: every rank
  // ends with the whole table (rank 0 writes it).
  auto& g = dist::world();
  const std::int64_t jobs = static_cast<std::int64_t>(weights.size() * levels.size());
  auto accuracy = torch::zeros({jobs}, torch::kFloat64);
  Progress bar("sensitivity", (jobs + g.size() - 1 - g.rank()) / g.size(), opt.progress);
  std::int64_t done = 0, k = 0;
  for (const auto& [name, w] : weights) {
    const auto original = w.detach().clone();
    for (double s : levels) {
      if (k++ % g.size() != g.rank()) continue;
      if (interrupt_requested()) fail("sensitivity", "interrupted (nothing written)");
      // This layer alone, pruned to s by the criterion and pattern; then restored.
      Sparsifier sp({{name, w}}, make_criterion(job.criterion, job.seed), make_pattern(job.pattern), make_scope("layer"),
                    make_oneshot_schedule(s, 0));
      sp.prune_to(s);
      accuracy[k - 1] = evaluate(*net, holdout).accuracy;
      {
        torch::NoGradGuard ng;
        w.copy_(original);
      }
      bar.update(++done, fmt::format("{} at {:.0f}%", name, 100 * s));
    }
  }
  g.all_reduce_sum(accuracy, "the gathering of sensitivity results");
  std::vector<Curve> curves;
  std::string csv = "layer,numel,sparsity,holdout_accuracy,drop_points\n";
  k = 0;
  for (const auto& [name, w] : weights) {
    Curve c{name, w.numel(), {0.0}, {0.0}};
    csv += fmt::format("{},{},0,{:.6f},0\n", name, w.numel(), base);
    for (double s : levels) {
      const double acc = accuracy[k++].item<double>();
      c.levels.push_back(s);
      c.drop.push_back(100.0 * (base - acc));
      csv += fmt::format("{},{},{},{:.6f},{:.4f}\n", name, w.numel(), s, acc, 100.0 * (base - acc));
    }
    curves.push_back(std::move(c));
  }
  bar.finish(fmt::format("sensitivity: {} layers x {} levels", curves.size(), levels.size()));
  atomic_write(job.out, csv);

  std::vector<std::vector<std::string>> table{{"layer", "numel"}};
  for (double s : levels) table[0].push_back(fmt::format("{:.0f}%", 100 * s));
  for (const auto& c : curves) {
    std::vector<std::string> row{c.name, std::to_string(c.numel)};
    for (std::size_t i = 1; i < c.levels.size(); ++i) row.push_back(fmt::format("{:.2f}", c.drop[i]));
    table.push_back(row);
  }
  std::printf("accuracy drop (points) on the last %lld training samples, each layer pruned alone (base %.2f%%):\n%s",
              static_cast<long long>(n), 100.0 * base, report::text_table(table).c_str());
  nlohmann::json rep = {{"prunus_version", version()}, {"run", report::run_info()}, {"model", job.input},
                        {"criterion", job.criterion}, {"pattern", job.pattern}, {"holdout", n},
                        {"base_accuracy", base}, {"curves", nlohmann::json::array()}};
  for (const auto& c : curves)
    rep["curves"].push_back({{"name", c.name}, {"numel", c.numel}, {"levels", c.levels}, {"drop", c.drop}});
  if (job.target > 0) {
    const auto a = allocate(curves, job.target);
    rep["allocation"] = {{"target", job.target}, {"predicted_drop", a.predicted_drop}, {"layers", nlohmann::json::object()}};
    for (std::size_t l = 0; l < curves.size(); ++l) rep["allocation"]["layers"][curves[l].name] = a.sparsity[l];
  }
  // Beside the CSV: sens.csv → sens.json + sens.html.
  const std::string stem = job.out.ends_with(".csv") ? job.out.substr(0, job.out.size() - 4) : job.out;
  report::write_report(stem + ".json", rep);
  std::printf("wrote %s, %s.json and %s.html (plots)\n", job.out.c_str(), stem.c_str(), stem.c_str());
  if (job.target > 0) {
    const auto a = allocate(curves, job.target);
    std::int64_t total = 0, zeros = 0;
    std::string yaml = fmt::format("prune:\n  sparsity: {}\n  layers:\n", job.target);
    for (std::size_t l = 0; l < curves.size(); ++l) {
      total += curves[l].numel;
      zeros += std::llround(a.sparsity[l] * double(curves[l].numel));
      yaml += fmt::format("    {}: {:.4f}\n", curves[l].name, a.sparsity[l]);
    }
    std::printf("allocation for %.2f%% overall (%.2f%% after rounding; predicted drop %.2f points, the sum of the "
                "per-layer drops, interpolated):\n%s",
                100 * job.target, 100.0 * double(zeros) / double(total), a.predicted_drop, yaml.c_str());
  }
  return 0;
}

}  // namespace prunus
