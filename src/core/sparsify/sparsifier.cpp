#include <fnmatch.h>

#include <fmt/format.h>

#include "prunus/io.h"
#include "prunus/sparsify.h"

namespace prunus {

Sparsifier::Sparsifier(std::vector<PrunedParam> params, std::unique_ptr<Criterion> criterion,
                       std::unique_ptr<Pattern> pattern, std::unique_ptr<Scope> scope,
                       std::unique_ptr<Schedule> schedule)
    : params_(std::move(params)),
      criterion_(std::move(criterion)),
      pattern_(std::move(pattern)),
      scope_(std::move(scope)),
      schedule_(std::move(schedule)) {
  for (const auto& p : params_) masks_.push_back(torch::ones_like(p.weight, torch::kFloat32));
}

std::unique_ptr<Sparsifier> Sparsifier::from_config(std::vector<PrunedParam> params, const PruneConfig& cfg,
                                                    std::int64_t steps_per_epoch, std::uint64_t seed) {
  auto sp = std::make_unique<Sparsifier>(std::move(params), make_criterion(cfg.criterion, seed),
                                         make_pattern(cfg.pattern), make_scope(cfg.scope),
                                         make_schedule(cfg, steps_per_epoch));
  if (!cfg.layers.empty()) sp->set_layer_overrides(cfg.layers, cfg.sparsity);
  if (cfg.srste_decay > 0) sp->enable_srste(cfg.srste_decay);
  return sp;
}

bool Sparsifier::step(std::int64_t step) {
  const bool scheduled = schedule_->updates_at(step);
  if (srste_decay_ > 0 && !dense_.empty()) {
    // SR-STE: the mask follows the dense weights every step.
    torch::NoGradGuard ng;
    for (std::size_t i = 0; i < params_.size(); ++i) params_[i].weight.copy_(dense_[i]);
    prune_to(scheduled ? schedule_->target(step) : current_target_);
    return scheduled;
  }
  if (!scheduled) return false;
  if (srste_decay_ > 0) {
    torch::NoGradGuard ng;
    dense_.clear();
    for (const auto& p : params_) dense_.push_back(p.weight.detach().clone());
  }
  prune_to(schedule_->target(step));
  return true;
}

void Sparsifier::enable_srste(double decay) {
  if (!(decay > 0 && decay <= 1)) throw std::invalid_argument("enable_srste: decay must be in (0, 1]");
  srste_decay_ = decay;
}

void Sparsifier::set_srste_dense(std::vector<torch::Tensor> dense) {
  if (!dense.empty() && dense.size() != params_.size())
    throw std::invalid_argument("set_srste_dense: wrong number of tensors");
  for (std::size_t i = 0; i < dense.size(); ++i)
    if (dense[i].sizes() != params_[i].weight.sizes())
      throw std::invalid_argument("set_srste_dense: shape differs for " + params_[i].name);
  dense_ = std::move(dense);
}

void Sparsifier::set_layer_overrides(const std::map<std::string, double>& overrides, double final_target) {
  override_.assign(params_.size(), -1.0);
  override_final_ = final_target;
  // Patterns with '*' first, exact names after: an exact name overrides a pattern it matches.
  for (const bool patterns : {true, false})
    for (const auto& [name, v] : overrides) {
      if ((name.find('*') != std::string::npos) != patterns) continue;
      bool matched = false;
      for (std::size_t i = 0; i < params_.size(); ++i)
        if (patterns ? fnmatch(name.c_str(), params_[i].name.c_str(), 0) == 0 : params_[i].name == name) {
          override_[i] = v;
          matched = true;
        }
      if (!matched) {
        std::string known;
        for (const auto& p : params_) known += (known.empty() ? "" : ", ") + p.name;
        fail("prune.layers." + name,
             fmt::format("{} no prunable parameter (prunable: {})", patterns ? "matches" : "is", known));
      }
    }
}

void Sparsifier::prune_to(double target) {
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> scores;
  for (const auto& p : params_) scores.push_back(criterion_->score(p));
  std::vector<std::int64_t> counts;
  if (override_.empty()) {
    counts = scope_->allocate(scores, target);
  } else {
    // Overridden layers take their own share; the scope spreads the rest of round(t·N).
    const double scale = override_final_ > 0 ? target / override_final_ : 0.0;
    std::int64_t total = 0, fixed = 0, free_n = 0;
    std::vector<torch::Tensor> free_scores;
    counts.assign(params_.size(), 0);
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const auto n = params_[i].weight.numel();
      total += n;
      if (override_[i] >= 0) {
        counts[i] = std::min<std::int64_t>(n, std::llround(override_[i] * scale * double(n)));
        fixed += counts[i];
      } else {
        free_scores.push_back(scores[i]);
        free_n += n;
      }
    }
    if (free_n > 0) {
      const std::int64_t want = std::max<std::int64_t>(0, std::llround(target * double(total)) - fixed);
      const auto rest = scope_->allocate(free_scores, std::min(1.0, double(want) / double(free_n)));
      for (std::size_t i = 0, j = 0; i < params_.size(); ++i)
        if (override_[i] < 0) counts[i] = rest[j++];
    }
  }
  for (std::size_t i = 0; i < params_.size(); ++i) masks_[i] = pattern_->mask(scores[i], counts[i]);
  current_target_ = target;
  apply_masks();
}

void Sparsifier::masks_from_zeros() {
  for (std::size_t i = 0; i < params_.size(); ++i) masks_[i] = (params_[i].weight.detach() != 0).to(torch::kFloat32);
}

void Sparsifier::set_masks(std::vector<torch::Tensor> masks) {
  if (masks.size() != params_.size()) throw std::invalid_argument("set_masks: wrong number of masks");
  for (std::size_t i = 0; i < masks.size(); ++i)
    if (masks[i].sizes() != params_[i].weight.sizes())
      throw std::invalid_argument("set_masks: mask shape differs for " + params_[i].name);
  masks_ = std::move(masks);
}

void Sparsifier::accumulate_gradients() {
  torch::NoGradGuard ng;
  for (const auto& p : params_)
    if (p.weight.grad().defined()) criterion_->accumulate(p);
}

void Sparsifier::apply_masks() {
  torch::NoGradGuard ng;
  // masked_fill, not mul: w·0 is -0.0 for negative w, and the zeros must be +0.0 bytes.
  for (std::size_t i = 0; i < params_.size(); ++i) params_[i].weight.masked_fill_(masks_[i] == 0, 0.0);
}

void Sparsifier::mask_gradients() {
  torch::NoGradGuard ng;
  const bool srste = srste_decay_ > 0 && !dense_.empty();
  for (std::size_t i = 0; i < params_.size(); ++i) {
    auto& g = params_[i].weight.mutable_grad();
    if (srste) {
      // The straight-through gradient reaches every weight; the pruned ones also decay.
      if (g.defined()) g.add_((1.0 - masks_[i]) * dense_[i], srste_decay_);
      params_[i].weight.copy_(dense_[i]);
    } else if (g.defined()) {
      g.mul_(masks_[i]);
    }
  }
}

void Sparsifier::after_optimizer_step() {
  if (srste_decay_ > 0 && !dense_.empty()) {
    torch::NoGradGuard ng;
    for (std::size_t i = 0; i < params_.size(); ++i) dense_[i].copy_(params_[i].weight);
  }
  apply_masks();
}

void Sparsifier::squash() {
  apply_masks();
  for (auto& m : masks_) m = torch::ones_like(m);
}

std::vector<LayerSparsity> Sparsifier::stats() const {
  std::vector<LayerSparsity> out;
  for (const auto& p : params_) out.push_back(measure(p.name, p.weight));
  return out;
}

LayerSparsity measure(const std::string& name, const torch::Tensor& t) {
  LayerSparsity s;
  s.name = name;
  s.shape = t.sizes().vec();
  s.numel = t.numel();
  s.nnz = t.detach().count_nonzero().item<std::int64_t>();
  return s;
}

}  // namespace prunus
