#include <fmt/format.h>

#include "commands.h"

namespace prunus::cli {

void add_common(CLI::App* cmd, Common& c, bool training) {
  cmd->add_option("--data", c.data.dir, "Directory with the (Fashion-)MNIST IDX files [default: /usr/share/datasets/fashion-mnist]");
  cmd->add_option("--threads", c.threads, "Intra-op threads (0: libtorch's default)");
  cmd->add_option("--test-limit", c.data.test_limit, "Use only the first N test samples");
  if (!training) return;
  cmd->add_option("--seed", c.seed, "Random seed: the same seed gives the same bytes");
  cmd->add_option("--train-limit", c.data.train_limit, "Use only the first N training samples");
  cmd->add_flag("--no-progress", c.no_progress, "No progress bar");
  cmd->add_flag("--resume", c.resume, "Continue an interrupted run from its checkpoint (OUT.ckpt)");
  cmd->add_option("--report", c.report, "Also write a report: FILE.json and FILE.html (plots) beside it");
}

void add_train_options(CLI::App* cmd, TrainConfig& t) {
  cmd->add_option("--epochs", t.epochs, "Epochs")->capture_default_str();
  cmd->add_option("--batch-size", t.batch_size, "Batch size")->capture_default_str();
  cmd->add_option("--optimizer", t.optimizer, "sgd | adam")->capture_default_str();
  cmd->add_option("--lr", t.lr, "Learning rate")->capture_default_str();
  cmd->add_option("--momentum", t.momentum, "SGD momentum")->capture_default_str();
  cmd->add_option("--weight-decay", t.weight_decay, "Weight decay")->capture_default_str();
  cmd->add_option("--lr-schedule", t.lr_schedule, "cosine | step | constant")->capture_default_str();
  cmd->add_option("--step-epochs", t.step_epochs, "step schedule: epochs between decays")->capture_default_str();
  cmd->add_option("--gamma", t.gamma, "step schedule: decay factor")->capture_default_str();
  cmd->add_option("--label-smoothing", t.label_smoothing, "Label smoothing")->capture_default_str();
  cmd->add_flag("--augment", t.augment, "Random ±2 px shifts and horizontal flips");
}

void add_train(CLI::App& app, Action& action) {
  auto job = std::make_shared<TrainJob>();
  auto common = std::make_shared<Common>();
  job->model = "lenet300";
  job->train = default_recipe().train;
  auto* cmd = app.add_subcommand("train", "Train a dense model on Fashion-MNIST and save it (safetensors)");
  cmd->add_option("--model", job->model, fmt::format("Architecture: {}", fmt::join(model_names(), ", ")))
      ->capture_default_str();
  cmd->add_option("-o,--out", job->out, "Model file to write")->required();
  add_common(cmd, *common, true);
  add_train_options(cmd, job->train);
  cmd->callback([&action, job, common] {
    action = [job, common] {
      common->fill(*job);
      return train_job(*job, common->job());
    };
  });
}

void add_finetune(CLI::App& app, Action& action) {
  auto job = std::make_shared<FinetuneJob>();
  auto common = std::make_shared<Common>();
  job->train = default_recipe().finetune;
  job->train.epochs = 5;
  job->train.lr = 0.01;
  auto* cmd = app.add_subcommand("finetune", "Fine-tune a model with its zeros held (masks from the zeros)");
  cmd->add_option("model", job->input, "Model file (safetensors)")->required();
  cmd->add_option("-o,--out", job->out, "Model file to write")->required();
  add_common(cmd, *common, true);
  add_train_options(cmd, job->train);
  cmd->add_flag("--qat", job->train.qat,
                "Quantization-aware: fake INT8 weights (per output channel) and layer inputs (per tensor) in the forward "
                "pass, straight-through gradients; the learned input ranges are saved as static activation scales that "
                "prunus quantize and the runtime's --int8 use");
  cmd->callback([&action, job, common] {
    action = [job, common] {
      common->fill(*job);
      return finetune_job(*job, common->job());
    };
  });
}

}  // namespace prunus::cli
