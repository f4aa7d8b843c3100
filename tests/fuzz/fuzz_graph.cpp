// libFuzzer target: the runtime's graph JSON (prunus.graph) against a fixed set of tensors,
// then a forward pass of whatever graph loaded. The first byte picks dense-only or measured
// formats; the rest is the JSON.
#include <cstdint>
#include <string>
#include <vector>

#include "prunus/io.h"
#include "prunus/runtime.h"
#include "prunus/safetensors.h"

namespace {

// Tensors a graph may name: a linear (w [4,4], b [4]), a conv (c [2,1,3,3]) with BatchNorm
// (g, h, m, v [2]) and a classifier over 2×2×2 features (fc [3,8]).
std::vector<float> ramp(std::size_t n, float scale) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = (static_cast<float>(i % 7) - 3.0f) * scale;
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1 || size > 4096) return 0;
  static const auto w = ramp(16, 0.5f), b = ramp(4, 0.1f), c = ramp(18, 0.3f), g = ramp(2, 0.2f), fc = ramp(24, 0.1f);
  static const std::vector<float> v = {0.5f, 2.0f}, ones = {1.0f, 1.0f};
  using prunus::safetensors::DType;
  std::vector<prunus::safetensors::TensorToWrite> tensors = {
      {"w", DType::F32, {4, 4}, w.data()},  {"b", DType::F32, {4}, b.data()},   {"c", DType::F32, {2, 1, 3, 3}, c.data()},
      {"g", DType::F32, {2}, ones.data()},  {"h", DType::F32, {2}, g.data()},   {"m", DType::F32, {2}, g.data()},
      {"v", DType::F32, {2}, v.data()},     {"fc", DType::F32, {3, 8}, fc.data()}};
  const std::string graph(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::string bytes;
  try {  // the harness's own writer: metadata must be valid UTF-8 JSON strings
    bytes = prunus::safetensors::serialize(tensors, {{"prunus.graph", graph}});
  } catch (const std::exception&) {
    return 0;
  }
  try {
    auto file = prunus::safetensors::File::parse(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(), "fuzz");
    prunus::runtime::LoadOptions lo;
    lo.dense = data[0] & 1;
    auto model = prunus::runtime::Model::from_file(file, lo);
    if (model.input_size() <= 4096) {
      std::vector<float> x(static_cast<std::size_t>(2 * model.input_size()), 0.25f);
      auto y = model.forward(x.data(), 2);
      if (y.size() != static_cast<std::size_t>(2 * model.output_size())) __builtin_trap();
    }
  } catch (const prunus::InputError&) {
  }
  return 0;
}
