#include "commands.h"

namespace prunus::cli {

void add_run(CLI::App& app, Action& action) {
  auto recipe_path = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto common = std::make_shared<Common>();
  auto* cmd = app.add_subcommand(
      "run",
      "Run a YAML recipe (default: the built-in main job: train LeNet-300-100 on Fashion-MNIST, prune to 90% with "
      "global magnitude pruning on a cubic schedule while fine-tuning; writes dense.safetensors, sparse.safetensors "
      "and report.json)");
  cmd->add_option("recipe", *recipe_path, "Recipe file (YAML); omit for the built-in default");
  cmd->add_option("-o,--out", *out, "Output directory (overrides the recipe's 'out')");
  cmd->add_option("--data", common->data.dir, "Dataset directory (overrides the recipe)");
  cmd->add_option("--threads", common->threads, "Intra-op threads (overrides the recipe)");
  cmd->add_flag("--no-progress", common->no_progress, "No progress bar");
  cmd->add_flag("--resume", common->resume, "Continue an interrupted run from OUT/checkpoint.safetensors");
  cmd->callback([&action, recipe_path, out, common] {
    action = [recipe_path, out, common] {
      Recipe r = recipe_path->empty() ? default_recipe() : load_recipe(*recipe_path);
      if (!out->empty()) r.out_dir = *out;
      if (!common->data.dir.empty()) r.data.dir = common->data.dir;
      if (common->threads > 0) r.threads = common->threads;
      return run_recipe(r, common->job());
    };
  });
}

}  // namespace prunus::cli
