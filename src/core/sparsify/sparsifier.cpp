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
  return std::make_unique<Sparsifier>(std::move(params), make_criterion(cfg.criterion, seed), make_pattern(cfg.pattern),
                                      make_scope(cfg.scope), make_schedule(cfg, steps_per_epoch));
}

bool Sparsifier::step(std::int64_t step) {
  if (!schedule_->updates_at(step)) return false;
  prune_to(schedule_->target(step));
  return true;
}

void Sparsifier::prune_to(double target) {
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> scores;
  for (const auto& p : params_) scores.push_back(criterion_->score(p));
  const auto counts = scope_->allocate(scores, target);
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
  for (std::size_t i = 0; i < params_.size(); ++i) {
    auto& g = params_[i].weight.mutable_grad();
    if (g.defined()) g.mul_(masks_[i]);
  }
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
