// Internal: libtorch tensors ↔ the runtime's safetensors reader/writer.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "prunus/safetensors.h"

namespace prunus {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

safetensors::DType to_safetensors_dtype(torch::ScalarType t);
// Copies the view's bytes into a new contiguous tensor of the matching dtype.
torch::Tensor to_tensor(const safetensors::TensorView& v);
// Writes tensors atomically (made contiguous on the CPU first).
void write_tensors(const std::string& path, const NamedTensors& tensors,
                   const std::map<std::string, std::string>& metadata);

}  // namespace prunus
