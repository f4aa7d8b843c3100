// The CLI's verbs: each file adds one subcommand and parses into the library's job
// structs; the work is in the library. No libtorch here.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "prunus/recipe.h"

namespace prunus::cli {

using Action = std::function<int()>;

// Options every training-like verb shares.
struct Common {
  std::uint64_t seed = 0;
  int threads = 0;
  bool no_progress = false;
  bool resume = false;
  std::string report;
  DataConfig data;
  JobOptions job() const { return {!no_progress, resume, report}; }
  // Copies the shared options into a job struct (TrainJob, PruneJob, FinetuneJob).
  template <class Job>
  void fill(Job& j) const {
    j.seed = seed;
    j.threads = threads;
    j.data = data;
  }
};
void add_common(CLI::App* cmd, Common& c, bool training);
void add_train_options(CLI::App* cmd, TrainConfig& t);

void add_train(CLI::App& app, Action& action);
void add_prune(CLI::App& app, Action& action);
void add_sensitivity(CLI::App& app, Action& action);
void add_finetune(CLI::App& app, Action& action);
void add_eval(CLI::App& app, Action& action);
void add_inspect(CLI::App& app, Action& action);
void add_run(CLI::App& app, Action& action);
void add_infer(CLI::App& app, Action& action);
void add_llm(CLI::App& app, Action& action);
void add_report(CLI::App& app, Action& action);
void add_bench(CLI::App& app, Action& action);
void add_shrink(CLI::App& app, Action& action);
void add_export(CLI::App& app, Action& action);
void add_launch(CLI::App& app, Action& action);
void add_quantize(CLI::App& app, Action& action);
// `prunus run MODEL.safetensors INPUT`: the runtime on an IDX image file (cmd_infer.cpp).
struct RunModelOptions {
  std::string model, input, labels;
  std::int64_t batch = 1;
  int threads = 1;
  bool logits = false;  // print each sample's logits instead of its class
  bool int8 = false;    // INT8 weights and activations
};
int run_model(const RunModelOptions& o);
// The first n Fashion-MNIST training images of `dir` as raw inputs (pixel / 255), for
// calibrating static INT8 activation scales (cmd_infer.cpp).
std::vector<float> calibration_images(const std::string& dir, std::int64_t n, std::int64_t input_size);

}  // namespace prunus::cli
