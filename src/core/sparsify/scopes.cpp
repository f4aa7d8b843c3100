// Scopes: how a target sparsity is shared among layers. Add one: a class and a line in make_scope.
#include <cmath>

#include <fmt/format.h>

#include "prunus/io.h"
#include "prunus/sparsify.h"

namespace prunus {
namespace {

std::int64_t exact_k(double target, std::int64_t n) {
  return std::min<std::int64_t>(n, static_cast<std::int64_t>(std::llround(target * static_cast<double>(n))));
}

// Every layer gets the target: round(s·n_i) zeros each.
class LayerScope : public Scope {
 public:
  std::string name() const override { return "layer"; }
  std::vector<std::int64_t> allocate(const std::vector<torch::Tensor>& scores, double target) const override {
    std::vector<std::int64_t> k;
    for (const auto& s : scores) k.push_back(exact_k(target, s.numel()));
    return k;
  }
};

// One ranking over all layers: the round(s·N) lowest scores anywhere are pruned. Ties go
// to the earlier layer, then the lower flat index (a stable sort of the concatenation),
// which is the order the per-layer pattern uses too, so the pattern picks the same weights.
class GlobalScope : public Scope {
 public:
  std::string name() const override { return "global"; }
  std::vector<std::int64_t> allocate(const std::vector<torch::Tensor>& scores, double target) const override {
    std::vector<torch::Tensor> flat;
    std::vector<torch::Tensor> owner;
    for (std::size_t i = 0; i < scores.size(); ++i) {
      flat.push_back(scores[i].detach().reshape({-1}).to(torch::kFloat64));
      owner.push_back(torch::full({scores[i].numel()}, static_cast<std::int64_t>(i), torch::kInt64));
    }
    auto all = torch::cat(flat);
    auto who = torch::cat(owner);
    const std::int64_t k = exact_k(target, all.numel());
    std::vector<std::int64_t> counts(scores.size(), 0);
    if (k == 0) return counts;
    auto order = std::get<1>(torch::sort(all, /*stable=*/true, 0, false)).narrow(0, 0, k);
    auto per_layer = torch::bincount(who.index_select(0, order), {}, static_cast<std::int64_t>(scores.size()));
    auto acc = per_layer.accessor<std::int64_t, 1>();
    for (std::size_t i = 0; i < scores.size(); ++i) counts[i] = acc[static_cast<std::int64_t>(i)];
    return counts;
  }
};

}  // namespace

std::unique_ptr<Scope> make_scope(const std::string& name) {
  if (name == "layer") return std::make_unique<LayerScope>();
  if (name == "global") return std::make_unique<GlobalScope>();
  fail("scope '" + name + "'", fmt::format("unknown (known: {})", fmt::join(scope_names(), ", ")));
}

}  // namespace prunus
