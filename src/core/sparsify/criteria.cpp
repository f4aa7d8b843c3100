// Criteria: how important each weight is. Add one: a class and a line in make_criterion.
#include <random>

#include <fmt/format.h>

#include "prunus/io.h"
#include "prunus/sparsify.h"

namespace prunus {
namespace {

void require_finite(const PrunedParam& p) {
  if (!torch::isfinite(p.weight).all().item<bool>())
    fail("parameter '" + p.name + "'", "weights contain NaN or Inf; cannot rank them for pruning");
}

// L1 magnitude |w|. For blocks the pattern averages it: the block's mean |w| (L1 norm / size).
class MagnitudeCriterion : public Criterion {
 public:
  std::string name() const override { return "magnitude"; }
  torch::Tensor score(const PrunedParam& p) const override {
    require_finite(p);
    return p.weight.detach().abs();
  }
};

// L2: w². Ranks single weights as L1 does; blocks by their mean square (their L2 norm).
class L2Criterion : public Criterion {
 public:
  std::string name() const override { return "l2"; }
  torch::Tensor score(const PrunedParam& p) const override {
    require_finite(p);
    return p.weight.detach().to(torch::kFloat64).square();
  }
};

// The baseline every method must beat: uniform scores from a generator seeded by the run's
// seed and the parameter's name, so a run is reproducible and layers differ.
class RandomCriterion : public Criterion {
 public:
  explicit RandomCriterion(std::uint64_t seed) : seed_(seed) {}
  std::string name() const override { return "random"; }
  torch::Tensor score(const PrunedParam& p) const override {
    require_finite(p);
    std::mt19937_64 rng(seed_ ^ std::hash<std::string>{}(p.name));
    std::uniform_real_distribution<double> u(0.0, 1.0);
    auto s = torch::empty({p.weight.numel()}, torch::kFloat64);
    auto a = s.accessor<double, 1>();
    for (std::int64_t i = 0; i < s.numel(); ++i) a[i] = u(rng);
    return s.reshape(p.weight.sizes());
  }

 private:
  std::uint64_t seed_;
};

// LAMP (Lee et al. 2021): with a layer's weights sorted by |w| ascending (u = 1..n),
// score(u) = w_u² / Σ_{v ≥ u} w_v². Scores are comparable across layers, so a global scope
// gives each layer its own sparsity without ever emptying one (its largest weight scores 1).
class LampCriterion : public Criterion {
 public:
  std::string name() const override { return "lamp"; }
  torch::Tensor score(const PrunedParam& p) const override {
    require_finite(p);
    auto sq = p.weight.detach().reshape({-1}).to(torch::kFloat64).square();
    auto [sorted, order] = torch::sort(sq, /*stable=*/true, 0, false);
    auto suffix = sorted.flip(0).cumsum(0).flip(0);
    auto scores_sorted = torch::where(suffix > 0, sorted / suffix, torch::zeros_like(sorted));
    auto out = torch::empty_like(sq);
    out.index_put_({order}, scores_sorted);
    return out.reshape(p.weight.sizes());
  }
};

}  // namespace

std::vector<std::string> criterion_names() { return {"magnitude", "l2", "random", "lamp"}; }

std::unique_ptr<Criterion> make_criterion(const std::string& name, std::uint64_t seed) {
  if (name == "magnitude" || name == "l1") return std::make_unique<MagnitudeCriterion>();
  if (name == "l2") return std::make_unique<L2Criterion>();
  if (name == "random") return std::make_unique<RandomCriterion>(seed);
  if (name == "lamp") return std::make_unique<LampCriterion>();
  fail("criterion '" + name + "'", fmt::format("unknown (known: {})", fmt::join(criterion_names(), ", ")));
}

}  // namespace prunus
