#include "commands.h"
#include "prunus/io.h"

namespace prunus::cli {

void add_run(CLI::App& app, Action& action) {
  auto recipe_path = std::make_shared<std::string>();
  auto model_run = std::make_shared<RunModelOptions>();
  auto out = std::make_shared<std::string>();
  auto common = std::make_shared<Common>();
  auto* cmd = app.add_subcommand(
      "run",
      "Run a YAML recipe (default: the built-in main job: train LeNet-300-100 on Fashion-MNIST, prune to 90% with "
      "global magnitude pruning on a cubic schedule while fine-tuning; writes dense.safetensors, sparse.safetensors "
      "and report.json). `prunus run MODEL.safetensors INPUT` instead runs an exported model in the libtorch-free "
      "runtime on INPUT, an IDX image file (e.g. t10k-images-idx3-ubyte.gz): one predicted class per line.");
  cmd->add_option("recipe", *recipe_path, "Recipe file (YAML); omit for the built-in default; or a model file");
  cmd->add_option("input", model_run->input, "With a model file: the IDX images to classify");
  cmd->add_option("--labels", model_run->labels, "With a model file: IDX labels, to print the accuracy");
  cmd->add_flag("--logits", model_run->logits, "With a model file: print each sample's logits instead of its class");
  cmd->add_flag("--int8", model_run->int8, "With a model file: INT8 weights and per-token INT8 activations");
  cmd->add_option("--batch", model_run->batch, "With a model file: batch size (formats are chosen for it)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("-o,--out", *out, "Output directory (overrides the recipe's 'out')");
  cmd->add_option("--data", common->data.dir, "Dataset directory (overrides the recipe)");
  cmd->add_option("--threads", common->threads, "Intra-op threads (overrides the recipe)");
  auto seed = std::make_shared<std::int64_t>(-1);
  auto sets = std::make_shared<std::vector<std::string>>();
  cmd->add_option("--set", *sets, "Override a recipe key: --set prune.sparsity=0.8 (repeatable; applies to the built-in recipe too)");
  cmd->add_option("--seed", *seed, "Seed (overrides the recipe's; e.g. a second seed of a results row)");
  cmd->add_flag("--no-progress", common->no_progress, "No progress bar");
  cmd->add_flag("--resume", common->resume, "Continue an interrupted run from OUT/checkpoint.safetensors");
  cmd->callback([&action, recipe_path, out, common, model_run, seed, sets] {
    action = [recipe_path, out, common, model_run, seed, sets] {
      const auto& p = *recipe_path;
      if (p.size() > 12 && p.compare(p.size() - 12, 12, ".safetensors") == 0) {
        model_run->model = p;
        if (common->threads > 0) model_run->threads = common->threads;
        return run_model(*model_run);
      }
      if (!model_run->input.empty()) fail(p, "a second argument (INPUT) needs a model file (.safetensors) first");
      // --set on the built-in recipe: an empty recipe (every key at its default) plus the overrides.
      Recipe r = !recipe_path->empty() ? load_recipe(*recipe_path, *sets)
                 : sets->empty()       ? default_recipe()
                                       : parse_recipe("{}", default_recipe().name, *sets);
      if (!out->empty()) r.out_dir = *out;
      if (!common->data.dir.empty()) r.data.dir = common->data.dir;
      if (common->threads > 0) r.threads = common->threads;
      if (*seed >= 0) r.seed = static_cast<std::uint64_t>(*seed);
      return run_recipe(r, common->job());
    };
  });
}

}  // namespace prunus::cli
