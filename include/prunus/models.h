// prunus/models.h — the model zoo (torch::nn) and model files.
//
// A model file is safetensors: every parameter and buffer under its torch name, and
// __metadata__ {"prunus.arch": <name>, "prunus.format": "1", ...}, so a saved model reloads
// without flags.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

namespace prunus {

// Output channels per layer (torch name without ".weight"), for models whose layers were
// shrunk by structured pruning; a layer not listed keeps the architecture's default.
using Widths = std::map<std::string, std::int64_t>;

// Every Prunus model: a torch::nn::Module with a forward and its architecture name.
class Net : public torch::nn::Module {
 public:
  explicit Net(std::string arch, Widths widths = {}) : arch_(std::move(arch)), widths_(std::move(widths)) {}
  virtual torch::Tensor forward(torch::Tensor x) = 0;  // [N,1,28,28] → logits [N,10]
  const std::string& arch() const { return arch_; }
  const Widths& widths() const { return widths_; }
  // The graph the libtorch-free runtime executes (prunus/runtime.h), as JSON over raw
  // inputs (pixel / 255); empty when the runtime cannot run this architecture yet.
  virtual std::string runtime_graph() const { return ""; }

  // Sees (and may replace) the input of every Linear/Conv layer, named as in prunable_weights
  // without ".weight": quantization-aware training fake-quantizes activations here. Empty: none.
  using InputHook = std::function<torch::Tensor(const std::string& layer, const torch::Tensor& x)>;
  void set_input_hook(InputHook hook) { input_hook_ = std::move(hook); }
  torch::Tensor layer_input(const std::string& layer, const torch::Tensor& x) const {
    return input_hook_ ? input_hook_(layer, x) : x;
  }

 protected:
  std::int64_t width(const std::string& layer, std::int64_t fallback) const {
    auto it = widths_.find(layer);
    return it == widths_.end() ? fallback : it->second;
  }

 private:
  std::string arch_;
  Widths widths_;
  InputHook input_hook_;
};

// "lenet300" (LeNet-300-100), "lenet5", "resnet" (a small residual CNN with BatchNorm),
// "inception" (a small GoogLeNet: Inception modules whose branches are concatenated).
// `widths` overrides layer sizes (load_model reads them from a shrunk model's tensors).
std::shared_ptr<Net> make_model(const std::string& arch, const Widths& widths = {});

// The weights a sparsifier prunes: every Linear/Conv weight (dim ≥ 2), in module order.
std::vector<std::pair<std::string, torch::Tensor>> prunable_weights(Net& net);

// Writes parameters and buffers atomically; `extra` is added to __metadata__.
void save_model(const std::string& path, Net& net, const std::map<std::string, std::string>& extra = {});
// Reads and validates a model file: architecture known, every tensor present with the
// right shape and dtype, no extra tensors, all values finite. InputError naming the file.
std::shared_ptr<Net> load_model(const std::string& path);

// Copies tensors (parameters and buffers) from `src` into `dst` (same arch).
void copy_state(Net& dst, Net& src);

}  // namespace prunus
