// Patterns: which shapes of zeros are allowed. Add one: a class and a line in make_pattern.
#include <fmt/format.h>

#include "prunus/io.h"
#include "prunus/sparsify.h"

namespace prunus {
namespace {

// Any weight may go: zero the `zeros` lowest scores, ties to the lower flat index.
class UnstructuredPattern : public Pattern {
 public:
  std::string name() const override { return "unstructured"; }
  torch::Tensor mask(const torch::Tensor& scores, std::int64_t zeros) const override {
    auto flat = scores.detach().reshape({-1}).to(torch::kFloat64);
    auto mask = torch::ones({flat.numel()}, torch::kFloat32);
    if (zeros > 0) {
      auto order = std::get<1>(torch::sort(flat, /*stable=*/true, /*dim=*/0, /*descending=*/false));
      mask.index_fill_(0, order.narrow(0, 0, zeros), 0.0f);
    }
    return mask.reshape(scores.sizes());
  }
  bool check(const torch::Tensor& mask) const override {
    return ((mask == 0) | (mask == 1)).all().item<bool>();
  }
};

}  // namespace

std::vector<std::string> pattern_names() { return {"unstructured"}; }

std::unique_ptr<Pattern> make_pattern(const std::string& name) {
  if (name == "unstructured") return std::make_unique<UnstructuredPattern>();
  fail("pattern '" + name + "'", fmt::format("unknown (known: {})", fmt::join(pattern_names(), ", ")));
}

}  // namespace prunus
