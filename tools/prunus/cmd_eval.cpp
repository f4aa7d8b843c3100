#include <cstdio>

#include "commands.h"

namespace prunus::cli {

void add_eval(CLI::App& app, Action& action) {
  auto path = std::make_shared<std::string>();
  auto common = std::make_shared<Common>();
  auto* cmd = app.add_subcommand("eval", "Test accuracy of a model file on the Fashion-MNIST test set");
  cmd->add_option("model", *path, "Model file (safetensors)")->required();
  add_common(cmd, *common, false);
  cmd->callback([&action, path, common] {
    action = [path, common] {
      auto r = eval_job(*path, common->data, common->threads);
      std::printf("%s: test accuracy %.2f%% (loss %.4f, %lld samples)\n", path->c_str(), 100.0 * r.accuracy, r.loss,
                  static_cast<long long>(r.samples));
      return 0;
    };
  });
}

}  // namespace prunus::cli
