// prunus/train.h — the training loop (libtorch): seeded, resumable, sparsity-aware.
#pragma once

#include <functional>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "prunus/data.h"
#include "prunus/models.h"
#include "prunus/recipe.h"
#include "prunus/sparsify.h"

namespace prunus {

struct EpochRecord {
  int epoch = 0;            // 1-based
  std::int64_t step = 0;    // global step at the end of the epoch
  double lr = 0;
  double train_loss = 0;
  double train_accuracy = 0;
  double test_accuracy = -1;  // -1: not evaluated
  double sparsity = 0;        // of the pruned parameters (0 without a sparsifier)
  double target = 0;          // the schedule's target at the end of the epoch
  double seconds = 0;
};

// Where an interrupted run leaves its state, and whether to continue from it. The
// checkpoint is one safetensors file (model, masks, optimiser state, progress), written
// atomically when SIGINT/SIGTERM arrives; a finished stage removes it.
struct CheckpointOptions {
  std::string path;          // empty: no checkpointing
  bool resume = false;
  std::string stage;         // a run resumes only the stage that wrote the checkpoint
  std::int64_t stop_at_step = -1;  // tests: act as if Ctrl-C arrived before this global step
};

struct TrainResult {
  bool interrupted = false;
  std::vector<EpochRecord> history;
  double seconds = 0;
  // With TrainConfig::qat: each Linear/Conv input's INT8 scale by weight name ("fc1.weight").
  std::map<std::string, float> act_scales;
};

// Model-file metadata key under which activation scales travel (JSON object, weight name →
// scale): written after quantization-aware training, read by `prunus quantize` and the runtime.
inline constexpr const char* kActScalesKey = "prunus.act_scales";
std::string act_scales_json(const std::map<std::string, float>& scales);

class Trainer {
 public:
  Trainer(Net& net, TrainConfig cfg, std::uint64_t seed, Sparsifier* sparsifier = nullptr);
  // Trains cfg.epochs over `train`, evaluating on `test` after each epoch when given.
  TrainResult fit(const data::Dataset& train, const data::Dataset* test, const CheckpointOptions& ckpt,
                  bool progress);
  double lr_at(std::int64_t step, std::int64_t steps_per_epoch) const;
  // Called after each finished epoch (1-based), e.g. to keep the weights of epoch K for
  // lottery-ticket rewinding.
  std::function<void(std::int64_t epoch)> on_epoch_end;
  // The teacher for cfg.distill_alpha > 0 (kept in eval mode, no gradients).
  Net* teacher = nullptr;

 private:
  Net& net_;
  TrainConfig cfg_;
  std::uint64_t seed_;
  Sparsifier* sparsifier_;
};

// Feeds a gradient-based criterion before it prunes: `batches` forward/backward passes of
// `batch_size` samples (a seeded order, no optimiser step), each followed by
// Sparsifier::accumulate_gradients. Gradients are cleared afterwards.
void calibrate_gradients(Net& net, const data::Dataset& train, Sparsifier& sparsifier, std::int64_t batches,
                         std::int64_t batch_size, std::uint64_t seed);

// Feeds an activation criterion ("activation") before it prunes: `batches` forward passes of
// `batch_size` samples (the same seeded order as calibrate_gradients, eval mode, no gradients),
// recording for every pruned Linear/Conv the sum of squares of each weight column's input (a
// conv's im2col rows, padding included). Uses the net's input hook, which must be unset (it is
// outside training) and is left unset.
void calibrate_activations(Net& net, const data::Dataset& train, Sparsifier& sparsifier, std::int64_t batches,
                           std::int64_t batch_size, std::uint64_t seed);

// Adaptive BatchNorm (Li et al. 2020, EagleEye): re-estimates every BatchNorm's running mean
// and variance as the plain average over the first `samples` training images (batches of
// `batch_size`, train-mode forwards, no gradients), so a model whose channels were removed
// normalises with statistics of its own layers; the weights and momentum are unchanged and
// the net is left in eval mode. No-op for a net without BatchNorm.
void recalibrate_batchnorm(Net& net, const data::Dataset& train, std::int64_t samples, std::int64_t batch_size = 128);

// SynFlow (Tanaka et al. 2020), data-free: with every parameter replaced by |θ| (float64, eval
// mode), `rounds` times: R = Σ f(ones), score |θ·∂R/∂θ|, prune to 1 − (1 − target)^(k/rounds)
// through `sparsifier` (criterion "synflow"); then signs and dtype are restored, masks held.
void synflow_prune(Net& net, Sparsifier& sparsifier, double target, std::int64_t rounds);

// α·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) (batch mean) + (1 − α)·hard.
torch::Tensor distillation_loss(const torch::Tensor& student, const torch::Tensor& teacher, const torch::Tensor& hard,
                                double alpha, double temperature);

struct Evaluation {
  double accuracy = 0;
  double loss = 0;
  std::int64_t samples = 0;
};
Evaluation evaluate(Net& net, const data::Dataset& d, std::int64_t batch = 1000);

// Reads which stage an existing checkpoint belongs to ("" if there is none).
std::string checkpoint_stage(const std::string& path);

}  // namespace prunus
