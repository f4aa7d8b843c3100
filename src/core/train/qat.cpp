#include "train/qat.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "prunus/io.h"
#include "prunus/train.h"

namespace prunus::qat {

torch::Tensor fake_quant_weight(const torch::Tensor& w) {
  torch::NoGradGuard ng;
  const auto rows = w.flatten(1);
  auto amax = rows.abs().amax(1, /*keepdim=*/true);
  // The runtime's quantize_bitmask: scale = max/127 (1 for an all-zero row), nearbyint, ±127.
  auto scale = torch::where(amax > 0, amax / 127.0f, torch::ones_like(amax));
  return (torch::round(rows / scale).clamp(-127, 127) * scale).view_as(w);
}

torch::Tensor fake_quant_activation(const torch::Tensor& x, double scale) {
  torch::Tensor q;
  {
    torch::NoGradGuard ng;
    // The runtime's (and ONNX QuantizeLinear's) codes: x / scale, half to even, [-128, 127].
    // A full tensor of divisors: PyTorch divides by a scalar as a multiply by its reciprocal,
    // which moves codes at rounding boundaries.
    q = torch::round(x / torch::full_like(x, scale)).clamp(-128, 127) * scale;
  }
  return x + (q - x).detach();
}

FakeQuant::FakeQuant(Net& net) : net_(net) {
  for (auto& [name, w] : prunable_weights(net)) {
    const auto layer = name.substr(0, name.size() - std::string(".weight").size());
    index_[layer] = layers_.size();
    layers_.push_back(layer);
    weights_.push_back(w);
  }
  const auto L = static_cast<std::int64_t>(layers_.size());
  range_ = torch::zeros({L}, torch::kFloat64);
  step_max_ = torch::zeros({L}, torch::kFloat64);
  net_.set_input_hook([this](const std::string& layer, const torch::Tensor& x) -> torch::Tensor {
    const auto it = index_.find(layer);
    if (it == index_.end()) return x;
    const auto i = static_cast<std::int64_t>(it->second);
    if (net_.is_training() || observing_ranges_) {
      const double m = x.detach().abs().max().item<double>();
      step_max_[i] = std::max(step_max_[i].item<double>(), m);
    }
    if (observing_ranges_) return x;
    const double r = range_[i].item<double>();
    return r > 0 ? fake_quant_activation(x, r / 127.0) : x;
  });
}

FakeQuant::~FakeQuant() { net_.set_input_hook(nullptr); }

void FakeQuant::init_ranges(const torch::Tensor& x) {
  torch::NoGradGuard ng;
  const bool was_training = net_.is_training();
  net_.eval();
  step_max_.zero_();
  observing_ranges_ = true;
  net_.forward(x);
  observing_ranges_ = false;
  range_.copy_(step_max_);
  step_max_.zero_();
  net_.train(was_training);
}

void FakeQuant::update_ranges(dist::Group& g) {
  if (g.active()) {
    g.all_reduce_sum(step_max_, "QAT activation ranges");
    step_max_ /= double(g.size());
  }
  // PyTorch's MovingAverageMinMaxObserver default (averaging constant 0.01).
  range_ += 0.01 * (step_max_ - range_);
  step_max_.zero_();
}

FakeQuant::QuantizedWeights::QuantizedWeights(FakeQuant* fq) : fq_(fq) {
  torch::NoGradGuard ng;
  for (auto& w : fq_->weights_) {
    masters_.push_back(w.detach().clone());
    w.copy_(fake_quant_weight(w));
  }
}

FakeQuant::QuantizedWeights::~QuantizedWeights() {
  torch::NoGradGuard ng;
  for (std::size_t i = 0; i < masters_.size(); ++i) fq_->weights_[i].copy_(masters_[i]);
}

std::map<std::string, float> FakeQuant::act_scales() const {
  std::map<std::string, float> out;
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    const double r = range_[static_cast<std::int64_t>(i)].item<double>();
    out[layers_[i] + ".weight"] = r > 0 ? static_cast<float>(r / 127.0) : 1.0f;
  }
  return out;
}

}  // namespace prunus::qat

namespace prunus {

std::string act_scales_json(const std::map<std::string, float>& scales) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [name, s] : scales) j[name] = s;
  return j.dump();
}

}  // namespace prunus
