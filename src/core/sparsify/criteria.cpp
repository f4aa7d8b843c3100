// Criteria: how important each weight is. Add one: a class and a line in make_criterion.
#include <fmt/format.h>

#include "prunus/io.h"
#include "prunus/sparsify.h"

namespace prunus {
namespace {

void require_finite(const PrunedParam& p) {
  if (!torch::isfinite(p.weight).all().item<bool>())
    fail("parameter '" + p.name + "'", "weights contain NaN or Inf; cannot rank them for pruning");
}

// L1 magnitude |w| (for unstructured pruning L2 ranks identically).
class MagnitudeCriterion : public Criterion {
 public:
  std::string name() const override { return "magnitude"; }
  torch::Tensor score(const PrunedParam& p) const override {
    require_finite(p);
    return p.weight.detach().abs();
  }
};

}  // namespace

std::vector<std::string> criterion_names() { return {"magnitude"}; }

std::unique_ptr<Criterion> make_criterion(const std::string& name) {
  if (name == "magnitude" || name == "l1") return std::make_unique<MagnitudeCriterion>();
  fail("criterion '" + name + "'", fmt::format("unknown (known: {})", fmt::join(criterion_names(), ", ")));
}

}  // namespace prunus
