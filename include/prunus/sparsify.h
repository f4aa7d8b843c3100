// prunus/sparsify.h — the sparsifier and its pluggable parts (libtorch).
//
// In the spirit of torch.ao.pruning: a Sparsifier owns, per pruned parameter, a mask; a
// Schedule says when masks change and to what sparsity; a Scope splits that target into
// per-layer counts of zeros; a Criterion scores weights; a Pattern turns scores and a count
// into a mask (and checks that a mask obeys it). Masks multiply weights after every
// optimiser step and gradients before it, so pruned weights stay exactly zero.
//
// Exact-k: a target s on n weights zeroes exactly round(s·n); ties in score are broken by
// position (lower layer index, then lower flat index, is pruned first).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "prunus/recipe.h"

namespace prunus {

// A parameter to prune, by name; the tensor aliases the model's parameter.
struct PrunedParam {
  std::string name;
  torch::Tensor weight;
};

// Scores each weight: lower is pruned first. Throws InputError on NaN/Inf weights.
class Criterion {
 public:
  virtual ~Criterion() = default;
  virtual std::string name() const = 0;
  virtual torch::Tensor score(const PrunedParam& p) const = 0;
  // Gradient-based criteria see every parameter after each backward pass (before the
  // gradients are masked) and score from what they accumulated.
  virtual bool needs_gradients() const { return false; }
  virtual void accumulate(const PrunedParam& p) {}
  // Activation-based criteria see each pruned layer's input on calibration batches
  // (calibrate_activations): per weight column (a linear input feature; a conv input channel ×
  // kernel tap, i.e. an im2col row), the sum of the squares of what it multiplies and how many
  // values were summed.
  virtual bool needs_activations() const { return false; }
  virtual void accumulate_activations(const std::string& param, const torch::Tensor& sum_sq, std::int64_t count) {}
  // What it accumulated (parameter name → tensor), for checkpoints: a resumed run must score
  // as the uninterrupted one would. Empty for criteria that score from the weights alone.
  virtual std::map<std::string, torch::Tensor> state() const { return {}; }
  virtual void set_state(std::map<std::string, torch::Tensor> state) {}
};

// Turns scores into a mask with exactly `zeros` zeros, and checks masks.
class Pattern {
 public:
  virtual ~Pattern() = default;
  virtual std::string name() const = 0;
  virtual torch::Tensor mask(const torch::Tensor& scores, std::int64_t zeros) const = 0;
  virtual bool check(const torch::Tensor& mask) const = 0;
};

// Splits a target sparsity into a number of zeros per parameter.
class Scope {
 public:
  virtual ~Scope() = default;
  virtual std::string name() const = 0;
  virtual std::vector<std::int64_t> allocate(const std::vector<torch::Tensor>& scores, double target) const = 0;
};

// The target sparsity at each training step and whether masks are recomputed there.
class Schedule {
 public:
  virtual ~Schedule() = default;
  virtual std::string name() const = 0;
  virtual double target(std::int64_t step) const = 0;
  virtual bool updates_at(std::int64_t step) const = 0;
  virtual std::int64_t last_update_step() const = 0;
};

// `seed` feeds the random criterion (others ignore it).
std::unique_ptr<Criterion> make_criterion(const std::string& name, std::uint64_t seed = 0);
std::unique_ptr<Pattern> make_pattern(const std::string& name);
std::unique_ptr<Scope> make_scope(const std::string& name);

// Zhu & Gupta (2017): s_t = s_f + (s_i - s_f)(1 - (t - t0)/(t1 - t0))^3 on [t0, t1],
// masks recomputed every `frequency` steps from t0 and at t1.
std::unique_ptr<Schedule> make_cubic_schedule(double initial, double final_sparsity, std::int64_t begin,
                                              std::int64_t end, std::int64_t frequency);
std::unique_ptr<Schedule> make_oneshot_schedule(double sparsity, std::int64_t at_step);
// From a recipe's schedule; epochs are converted with steps_per_epoch.
std::unique_ptr<Schedule> make_schedule(const PruneConfig& cfg, std::int64_t steps_per_epoch);

struct LayerSparsity {
  std::string name;
  std::vector<std::int64_t> shape;
  std::int64_t numel = 0;
  std::int64_t nnz = 0;
  double sparsity() const { return numel ? 1.0 - double(nnz) / double(numel) : 0.0; }
};

class Sparsifier {
 public:
  Sparsifier(std::vector<PrunedParam> params, std::unique_ptr<Criterion> criterion,
             std::unique_ptr<Pattern> pattern, std::unique_ptr<Scope> scope, std::unique_ptr<Schedule> schedule);
  // From a recipe's names.
  static std::unique_ptr<Sparsifier> from_config(std::vector<PrunedParam> params, const PruneConfig& cfg,
                                                 std::int64_t steps_per_epoch, std::uint64_t seed = 0);

  // Called before each training step: recomputes masks when the schedule says so.
  // Returns true when masks changed.
  bool step(std::int64_t step);
  // Recomputes masks for `target` now and applies them.
  void prune_to(double target);
  // Masks from the current zeros (fine-tuning a model that is already sparse).
  void masks_from_zeros();
  // Per-layer sparsities (PruneConfig::layers): layer l gets o_l·t/final at target t, and the
  // scope shares t among the other layers so the total stays round(t·N). A name with '*' is a
  // shell pattern ("conv1*", "*.bias"); an exact name wins over a pattern. A name or pattern
  // that matches no prunable parameter fails.
  void set_layer_overrides(const std::map<std::string, double>& overrides, double final_target);
  // Gradient-based criteria: feed them the current gradients (after backward).
  bool needs_gradients() const { return criterion_->needs_gradients(); }
  bool needs_activations() const { return criterion_->needs_activations(); }
  const Criterion& criterion() const { return *criterion_; }
  Criterion& criterion() { return *criterion_; }
  void accumulate_gradients();
  void apply_masks();       // weight *= mask
  // Before the optimiser step: grad *= mask (SR-STE: grad += λ·(1 − mask)·w and the dense
  // weights go back in place, so the optimiser updates all of them).
  void mask_gradients();
  // After the optimiser step: apply the masks (SR-STE: first keep the updated dense weights).
  void after_optimizer_step();

  // SR-STE (Zhou et al. 2021, "Learning N:M fine-grained structured sparse neural networks from
  // scratch"): between steps the model holds the N:M-masked weights (evaluation, checkpoints and
  // export see a valid N:M model) and the sparsifier the dense ones; each step() restores the
  // dense weights and recomputes the mask from their magnitudes.
  void enable_srste(double decay);
  double srste_decay() const { return srste_decay_; }
  // The dense weights behind the masks (empty until the first mask): checkpoints keep them.
  const std::vector<torch::Tensor>& srste_dense() const { return dense_; }
  void set_srste_dense(std::vector<torch::Tensor> dense);
  // Folds masks into weights (they already hold the zeros) and drops them.
  void squash();

  const std::vector<PrunedParam>& params() const { return params_; }
  const std::vector<torch::Tensor>& masks() const { return masks_; }
  void set_masks(std::vector<torch::Tensor> masks);
  double current_target() const { return current_target_; }
  const Schedule& schedule() const { return *schedule_; }
  std::vector<LayerSparsity> stats() const;

 private:
  std::vector<PrunedParam> params_;
  std::vector<torch::Tensor> masks_;  // float 0/1, same shape as the weight
  std::unique_ptr<Criterion> criterion_;
  std::unique_ptr<Pattern> pattern_;
  std::unique_ptr<Scope> scope_;
  std::unique_ptr<Schedule> schedule_;
  double current_target_ = 0.0;
  std::vector<double> override_;  // per param: −1 none, else its final sparsity
  double override_final_ = 0.0;
  double srste_decay_ = 0.0;
  std::vector<torch::Tensor> dense_;  // SR-STE: the dense weights, once masks exist
};

// Counts over the given tensors.
LayerSparsity measure(const std::string& name, const torch::Tensor& t);

}  // namespace prunus
