// prunus/data.h — datasets as tensors (libtorch). Files are read by the runtime's IDX reader.
#pragma once

#include <string>

#include <torch/types.h>

#include "prunus/recipe.h"

namespace prunus::data {

// Where Debian's dataset-fashion-mnist package puts the files.
inline constexpr const char* kDefaultFashionMnistDir = "/usr/share/datasets/fashion-mnist";
// Per-pixel mean and std of the Fashion-MNIST training set (inputs are pixel / 255).
inline constexpr float kPixelMean = 0.2860f;
inline constexpr float kPixelStd = 0.3530f;

struct Dataset {
  torch::Tensor images;  // [N, 1, 28, 28] float32, normalised
  torch::Tensor labels;  // [N] int64 in 0..9
  std::int64_t size() const { return labels.size(0); }
};

// Loads split "train" or "test" ({train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]) from
// cfg.dir (MNIST uses the same names). Validates that images are N×28×28, that label
// and image counts agree and labels are < 10. Honors train_limit / test_limit.
Dataset load_split(const DataConfig& cfg, const std::string& split);

// Checks that both splits' files exist, without reading them (jobs call this before
// writing anything).
void check_available(const DataConfig& cfg);

// A deterministic epoch order: a permutation of [0, n) from (seed, epoch).
torch::Tensor epoch_order(std::int64_t n, std::uint64_t seed, std::int64_t epoch);

// Random ±2 px shifts and horizontal flips, drawn from `gen` (deterministic).
torch::Tensor augment(const torch::Tensor& batch, at::Generator& gen);

}  // namespace prunus::data
