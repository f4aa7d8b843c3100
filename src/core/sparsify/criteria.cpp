// Criteria: how important each weight is. Add one: a class and a line in make_criterion.
#include <limits>
#include <map>
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

// Gradient-based scores, summed over the batches seen (calibration batches before pruning,
// then every training step while masks are updated):
//   taylor   Σ |w·g|  — first-order Taylor estimate of the loss change from removing w
//   snip     Σ |w·g|  on the calibration batches at initialization (Lee et al. 2019; its
//            normalisation by the global sum does not change the ranking)
//   movement Σ −w·g   — weights moving away from zero score high (Sanh et al. 2020); weights
//            already pruned score −∞ so that they stay pruned and the count stays exact.
//   synflow  |θ·∂R/∂θ| of the linearised network (R = Σ f(1) with |θ|), replaced, not summed,
//            on each of synflow_prune's rounds (Tanaka et al. 2020); data-free.
class GradientCriterion : public Criterion {
 public:
  enum Kind { Taylor, Snip, Movement, SynFlow };
  explicit GradientCriterion(Kind k) : kind_(k) {}
  std::string name() const override {
    return kind_ == Taylor ? "taylor" : kind_ == Snip ? "snip" : kind_ == Movement ? "movement" : "synflow";
  }
  // SynFlow's scores come from synflow_prune, not from the training loss.
  bool needs_gradients() const override { return kind_ != SynFlow; }
  void accumulate(const PrunedParam& p) override {
    auto wg = (p.weight.detach() * p.weight.grad()).to(torch::kFloat64);
    auto add = kind_ == Movement ? -wg : wg.abs();
    auto it = acc_.find(p.name);
    if (it == acc_.end() || kind_ == SynFlow) acc_[p.name] = add.clone();
    else it->second.add_(add);
  }
  torch::Tensor score(const PrunedParam& p) const override {
    require_finite(p);
    auto it = acc_.find(p.name);
    if (it == acc_.end())
      fail("criterion '" + name() + "'", fmt::format("no gradients were accumulated for '{}' (it needs calibration "
                                                     "batches, training steps or synflow_prune before pruning)", p.name));
    auto s = it->second.clone();
    if (kind_ == Movement) s.masked_fill_(p.weight.detach() == 0, -std::numeric_limits<double>::infinity());
    return s;
  }
  std::map<std::string, torch::Tensor> state() const override { return acc_; }
  void set_state(std::map<std::string, torch::Tensor> state) override { acc_ = std::move(state); }

 private:
  Kind kind_;
  std::map<std::string, torch::Tensor> acc_;
};

// Activation-weighted magnitude (Wanda, Sun et al. 2023, for the CNNs and MLPs):
// score = |w_ij|·‖x_j‖ with ‖x_j‖ the root mean square of the input that column j multiplies,
// over calibration samples (and, for a conv, every output position: the im2col row). w_ij²·‖x_j‖²
// is exactly the mean squared change of output i when w_ij alone is removed, so this is also the
// output-reconstruction error of each weight. The statistics come from the model the criterion
// was calibrated on; a gradual schedule re-ranks with the current weights and those statistics.
class ActivationCriterion : public Criterion {
 public:
  std::string name() const override { return "activation"; }
  bool needs_activations() const override { return true; }
  void accumulate_activations(const std::string& param, const torch::Tensor& sum_sq, std::int64_t count) override {
    auto add = sum_sq.detach().to(torch::kFloat64);
    auto it = sum_.find(param);
    if (it == sum_.end()) {
      sum_[param] = add.clone();
      count_[param] = count;
    } else {
      if (it->second.sizes() != add.sizes())
        fail("criterion 'activation'", fmt::format("input statistics of '{}' changed shape", param));
      it->second.add_(add);
      count_[param] += count;
    }
  }
  torch::Tensor score(const PrunedParam& p) const override {
    require_finite(p);
    auto it = sum_.find(p.name);
    if (it == sum_.end() || count_.at(p.name) < 1)
      fail("criterion 'activation'", fmt::format("no calibration activations were seen for '{}' (it needs "
                                                 "calibration batches before pruning)", p.name));
    const auto w = p.weight.detach().to(torch::kFloat64);
    if (w.dim() < 2 || it->second.sizes() != w.sizes().slice(1))
      fail("criterion 'activation'", fmt::format("input statistics of '{}' do not match its weight {}", p.name,
                                                 fmt::join(w.sizes(), "x")));
    const auto rms = (it->second / double(count_.at(p.name))).sqrt();
    return w.abs() * rms.unsqueeze(0);
  }
  // Checkpoints keep the mean squares (one tensor a parameter); restored with a count of 1,
  // they give the same scores bit for bit.
  std::map<std::string, torch::Tensor> state() const override {
    std::map<std::string, torch::Tensor> out;
    for (const auto& [name, sum] : sum_) out[name] = sum / double(count_.at(name));
    return out;
  }
  void set_state(std::map<std::string, torch::Tensor> state) override {
    sum_ = std::move(state);
    count_.clear();
    for (const auto& [name, t] : sum_) count_[name] = 1;
  }

 private:
  std::map<std::string, torch::Tensor> sum_;
  std::map<std::string, std::int64_t> count_;
};

}  // namespace

std::unique_ptr<Criterion> make_criterion(const std::string& name, std::uint64_t seed) {
  if (name == "magnitude" || name == "l1") return std::make_unique<MagnitudeCriterion>();
  if (name == "l2") return std::make_unique<L2Criterion>();
  if (name == "random") return std::make_unique<RandomCriterion>(seed);
  if (name == "lamp") return std::make_unique<LampCriterion>();
  if (name == "activation" || name == "wanda") return std::make_unique<ActivationCriterion>();
  if (name == "taylor") return std::make_unique<GradientCriterion>(GradientCriterion::Taylor);
  if (name == "snip") return std::make_unique<GradientCriterion>(GradientCriterion::Snip);
  if (name == "movement") return std::make_unique<GradientCriterion>(GradientCriterion::Movement);
  if (name == "synflow") return std::make_unique<GradientCriterion>(GradientCriterion::SynFlow);
  fail("criterion '" + name + "'", fmt::format("unknown (known: {})", fmt::join(criterion_names(), ", ")));
}

}  // namespace prunus
