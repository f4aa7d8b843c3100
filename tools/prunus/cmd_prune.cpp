#include <fmt/format.h>

#include "commands.h"

namespace prunus::cli {

void add_prune(CLI::App& app, Action& action) {
  auto job = std::make_shared<PruneJob>();
  auto common = std::make_shared<Common>();
  job->prune.schedule.kind = "oneshot";
  job->finetune = default_recipe().finetune;
  job->finetune.epochs = 10;
  job->prune.schedule.end_epoch = 5;
  auto* cmd = app.add_subcommand(
      "prune",
      "Prune a model: one-shot (no data) or gradual (cubic schedule while fine-tuning). Pruned weights are exactly "
      "zero; a target s on n weights zeroes exactly round(s*n).");
  cmd->add_option("model", job->input, "Model file (safetensors)")->required();
  cmd->add_option("-o,--out", job->out, "Model file to write")->required();
  cmd->add_option("--sparsity", job->prune.sparsity, "Target sparsity in [0, 1)")->capture_default_str();
  cmd->add_option("--criterion", job->prune.criterion, fmt::format("{}", fmt::join(criterion_names(), " | ")))
      ->capture_default_str();
  cmd->add_option("--pattern", job->prune.pattern, fmt::format("{}", fmt::join(pattern_names(), " | ")))
      ->capture_default_str();
  cmd->add_option("--scope", job->prune.scope, "global (one ranking over all layers) | layer (each layer alike)")
      ->capture_default_str();
  cmd->add_option("--schedule", job->prune.schedule.kind, "oneshot | gradual")->capture_default_str();
  cmd->add_option("--begin-epoch", job->prune.schedule.begin_epoch, "gradual: ramp start (epochs)")->capture_default_str();
  cmd->add_option("--end-epoch", job->prune.schedule.end_epoch, "gradual: ramp end (epochs)")->capture_default_str();
  cmd->add_option("--frequency", job->prune.schedule.frequency, "gradual: steps between mask updates")
      ->capture_default_str();
  cmd->add_option("--calib-batches", job->prune.calibration_batches,
                  "taylor | snip | movement | activation: training batches (of --batch-size) seen before pruning")
      ->capture_default_str();
  add_common(cmd, *common, true);
  add_train_options(cmd, job->finetune);
  cmd->callback([&action, job, common, cmd] {
    // N:M fixes the sparsity: without --sparsity, take it.
    if (const double fixed = pattern_fixed_sparsity(job->prune.pattern); fixed >= 0 && cmd->count("--sparsity") == 0)
      job->prune.sparsity = fixed;
    action = [job, common] {
      common->fill(*job);
      return prune_job(*job, common->job());
    };
  });
}

void add_sensitivity(CLI::App& app, Action& action) {
  auto job = std::make_shared<SensitivityJob>();
  auto common = std::make_shared<Common>();
  auto* cmd = app.add_subcommand(
      "sensitivity",
      "Prune each layer alone at a grid of levels (no fine-tuning), measure the accuracy drop on held-out training "
      "samples, write a CSV; with --target, print per-layer sparsities (a recipe's prune.layers) that reach it with "
      "the least summed drop");
  cmd->add_option("model", job->input, "Model file (safetensors)")->required();
  cmd->add_option("-o,--out", job->out, "CSV to write (layer, numel, sparsity, holdout_accuracy, drop_points)")->required();
  cmd->add_option("--levels", job->levels, "Sparsity levels in (0, 1)")->delimiter(',');
  cmd->add_option("--criterion", job->criterion, "magnitude | l2 | lamp | random")->capture_default_str();
  cmd->add_option("--pattern", job->pattern, "unstructured | block:RxC")->capture_default_str();
  cmd->add_option("--target", job->target, "Overall sparsity to allocate (0: none)");
  cmd->add_option("--holdout", job->holdout, "Held-out samples: the last N of the training set")->capture_default_str();
  add_common(cmd, *common, false);
  cmd->add_option("--seed", common->seed, "Seed (the random criterion)")->capture_default_str();
  cmd->add_flag("--no-progress", common->no_progress, "No progress bar");
  cmd->callback([&action, job, common] {
    action = [job, common] {
      job->seed = common->seed;
      job->threads = common->threads;
      job->data = common->data;
      return sensitivity_job(*job, common->job());
    };
  });
}

void add_shrink(CLI::App& app, Action& action) {
  auto j = std::make_shared<ShrinkJob>();
  auto* cmd = app.add_subcommand(
      "shrink",
      "Structured pruning that physically removes channels/neurons: traces the model's graph (residual adds pruned "
      "together, BatchNorm with its conv, flatten-aware), keeps the strongest channels of each group and writes a "
      "smaller model for the runtime (prunus infer / bench / run). A language model (llama2.c .bin or Hugging Face "
      "folder) loses whole MLP neurons in every block: its hidden_dim shrinks");
  cmd->add_option("model", j->input,
                  "Model file written by prunus (with its runtime graph), or a llama2.c .bin / Hugging Face folder")
      ->required();
  cmd->add_option("-o,--out", j->out, "Smaller model to write")->required();
  cmd->add_option("--sparsity", j->sparsity, "Fraction of each group's channels (language model: MLP neurons) removed")
      ->capture_default_str();
  cmd->add_option("--criterion", j->criterion,
                  "l1 | l2 (group norm, BatchNorm scale applied) | bn (|gamma|, network slimming) | activation (mean "
                  "|output| on calibration images) | thinet (greedy output reconstruction of the consumers, on "
                  "calibration images) | random")
      ->capture_default_str();
  cmd->add_option("--calib-data", j->calib_data, "activation, thinet: directory with train-images-idx3-ubyte[.gz]");
  cmd->add_option("--calib-samples", j->calib_samples, "activation, thinet: calibration images")->capture_default_str();
  cmd->add_option("--round-to", j->round_to, "Keep a multiple of this many channels per group (e.g. 8)")->capture_default_str();
  cmd->add_option("--seed", j->seed, "Seed for --criterion random")->capture_default_str();
  cmd->add_option("--masked", j->masked, "Also write the same-shape model with the removed channels zeroed");
  cmd->add_option("--calib", j->calib_text,
                  "Language model, --criterion activation: calibration text (one document a line)");
  cmd->add_option("--heads", j->heads,
                  "Language model: fraction of each block's KV head groups removed (a KV head with the query heads "
                  "that read it; without GQA one head); needs a Hugging Face folder output")
      ->capture_default_str();
  cmd->add_flag("--reconstruct", j->reconstruct,
               "Language model: refit o_proj and down_proj by least squares on the calibration text so each block's "
               "output stays close to the dense block's (needs --calib)");
  cmd->add_option("--tokenizer", j->text.tokenizer, "Language model: tokenizer (default: beside the model)");
  cmd->add_option("--nsamples", j->nsamples, "Language model: calibration windows")->capture_default_str();
  cmd->add_option("--seqlen", j->seqlen, "Language model: tokens a window (0: the model's context)")->capture_default_str();
  cmd->add_option("--threads", j->text.threads, "Language model: intra-op threads");
  cmd->callback([&action, j] { action = [j] { return shrink_job(*j); }; });
}

}  // namespace prunus::cli
