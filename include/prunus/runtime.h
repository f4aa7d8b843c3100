// prunus/runtime.h — run a model that Prunus exported, without libtorch.
//
// A model file is safetensors whose __metadata__["prunus.graph"] is a small JSON graph:
//   {"input": [1, 28, 28], "ops": [{"op": "normalize", "mean": 0.286, "std": 0.353},
//     {"op": "flatten"}, {"op": "linear", "weight": "fc1.weight", "bias": "fc1.bias"},
//     {"op": "relu"}, ...]}
// Each linear layer's weight is held in the format that measured fastest on this machine
// (see kernels::SparseLinear), so the zeros pay or the layer stays dense.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "prunus/kernels.h"

namespace prunus::runtime {

struct LayerInfo {
  std::string name;
  std::string format;
  std::int64_t rows = 0, cols = 0, nnz = 0;
  std::uint64_t bytes = 0, dense_bytes = 0;
  double seconds = 0, dense_seconds = 0;  // per call at the batch hint, measured at load
};

struct LoadOptions {
  std::int64_t batch_hint = 1;   // the batch size to choose formats for
  bool dense = false;            // keep every layer dense (the runtime's dense path)
  kernels::Options kernel;
};

class Model {
 public:
  // Validates the graph against the tensors (names, shapes, chaining, finite values);
  // InputError naming the file otherwise.
  static Model load(const std::string& path, const LoadOptions& opt = {});

  // x: [batch × input_size] (raw inputs, before the graph's normalize op) → [batch × output_size].
  std::vector<float> forward(const float* x, std::int64_t batch) const;

  std::int64_t input_size() const { return input_size_; }
  std::int64_t output_size() const { return output_size_; }
  const std::vector<LayerInfo>& layers() const { return infos_; }
  const std::string& arch() const { return arch_; }

 private:
  struct Op {
    enum Kind { Normalize, Flatten, Linear, Relu } kind;
    float mean = 0, inv_std = 1;
    std::size_t linear = 0;  // index into linears_
  };
  std::string arch_;
  std::vector<Op> ops_;
  std::vector<kernels::SparseLinear> linears_;
  std::vector<std::vector<float>> biases_;
  std::vector<LayerInfo> infos_;
  std::int64_t input_size_ = 0, output_size_ = 0;
};

}  // namespace prunus::runtime
