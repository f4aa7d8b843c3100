// Quantization-aware training (internal to prunus_core): fake INT8 in the forward pass,
// straight-through gradients, masks untouched.
//
// What is simulated is what `prunus quantize` + the runtime's --int8 deploy: weights symmetric
// per output channel (scale max|w_row|/127, codes round-half-even in [-127, 127], a zero stays
// zero) and each Linear/Conv input per tensor (scale = range/127; x / scale rounded half to
// even and saturated to [-128, 127], as ONNX QuantizeLinear). Per-channel codes do not change when BatchNorm is folded into a row
// (folding scales a row), so the unfolded weights are quantized here.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "prunus/distributed.h"
#include "prunus/models.h"

namespace prunus::qat {

// Fake-quantizes w per output channel (dim 0): the values the INT8 file will hold, in fp32.
torch::Tensor fake_quant_weight(const torch::Tensor& w);
// Fake-quantizes x per tensor at `scale`, with a straight-through gradient (identity).
torch::Tensor fake_quant_activation(const torch::Tensor& x, double scale);

class FakeQuant {
 public:
  explicit FakeQuant(Net& net);
  ~FakeQuant();
  FakeQuant(const FakeQuant&) = delete;
  FakeQuant& operator=(const FakeQuant&) = delete;

  // The starting input ranges: max |x| of each layer's input over `x` (eval mode, no gradients).
  void init_ranges(const torch::Tensor& x);
  // After a training step: each range moves 1% towards that step's max |x| (the mean over the
  // ranks in a distributed run, so every rank keeps the same ranges).
  void update_ranges(dist::Group& g);

  // While alive, the network's weights are their fake-quantized values; the fp32 masters
  // come back at destruction (after backward: the optimiser updates the masters with the
  // gradient taken at the quantized point — the straight-through estimator for weights).
  class QuantizedWeights {
   public:
    explicit QuantizedWeights(FakeQuant* fq);
    ~QuantizedWeights();
    QuantizedWeights(const QuantizedWeights&) = delete;
    QuantizedWeights& operator=(const QuantizedWeights&) = delete;

   private:
    FakeQuant* fq_;
    std::vector<torch::Tensor> masters_;
  };
  QuantizedWeights quantized_weights() { return QuantizedWeights(this); }

  // Input ranges (float64, one per layer in prunable_weights order) for checkpoints.
  torch::Tensor& ranges() { return range_; }
  // Per-layer activation scales (range/127) by weight name ("fc1.weight"), as the runtime reads them.
  std::map<std::string, float> act_scales() const;

 private:
  Net& net_;
  std::vector<std::string> layers_;        // "fc1", "layer1.conv1", ...
  std::vector<torch::Tensor> weights_;
  std::map<std::string, std::size_t> index_;
  torch::Tensor range_;                    // float64 [L]: the scale is range / 127
  torch::Tensor step_max_;                 // float64 [L]: max |x| seen in this step's forward
  bool observing_ranges_ = false;          // init_ranges: record only
};

}  // namespace prunus::qat
