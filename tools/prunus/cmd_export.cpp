// prunus export: model files for other tools.
#include <cstdio>

#include "commands.h"
#include "prunus/export.h"
#include "prunus/io.h"

namespace prunus::cli {

void add_export(CLI::App& app, Action& action) {
  auto io = std::make_shared<std::pair<std::string, std::string>>();
  auto* cmd = app.add_subcommand(
      "export",
      "Write a model (dense, pruned or shrunk; any file the runtime runs) as ONNX (opset 13): input 'pixels' "
      "[N,1,28,28] in [0,1], output 'logits'; weights inside the file, pruned zeros kept");
  cmd->add_option("model", io->first, "Model file written by prunus")->required();
  cmd->add_option("-o,--out", io->second, "ONNX file to write (.onnx)")->required();
  cmd->callback([&action, io] {
    action = [io] {
      if (!io->second.ends_with(".onnx")) fail(io->second, "the output must end in .onnx");
      exporter::write_onnx(io->first, io->second);
      std::printf("wrote %s\n", io->second.c_str());
      return 0;
    };
  });
}

}  // namespace prunus::cli
