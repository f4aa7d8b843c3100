// prunus export: model files for other tools.
#include <cstdio>

#include "commands.h"
#include "prunus/export.h"
#include "prunus/io.h"
#include "prunus/report.h"
#include "prunus/runtime.h"

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

void add_quantize(CLI::App& app, Action& action) {
  struct O {
    std::string model, out;
    std::vector<std::string> keep;
    std::string calibrate, data = "/usr/share/datasets/fashion-mnist";
    std::int64_t calib_samples = 256;
  };
  auto o = std::make_shared<O>();
  auto* cmd = app.add_subcommand(
      "quantize",
      "Write a model with INT8 weights (symmetric per output channel; zeros stay zero) stored as a bitmask of the "
      "non-zeros plus their codes: a 90%-sparse model in ~6% of its fp32 bytes. Runs in the runtime (prunus infer / "
      "run, with --int8 for INT8 arithmetic; activations are quantized per token at run time unless the file carries "
      "static scales: from quantization-aware training, or --calibrate here)");
  cmd->add_option("model", o->model, "Model file written by prunus (fp32)")->required();
  cmd->add_option("-o,--out", o->out, "INT8 model file to write (.safetensors)")->required();
  cmd->add_option("--keep-fp32", o->keep, "Keep layers whose weight name contains this in fp32 (repeatable), e.g. fc3");
  cmd->add_option("--calibrate", o->calibrate,
                  "Store static per-tensor activation scales calibrated on training images: minmax | percentile | mse");
  cmd->add_option("--data", o->data, "Dataset directory (for --calibrate)")->capture_default_str();
  cmd->add_option("--calib-samples", o->calib_samples, "Training images for --calibrate")->capture_default_str();
  cmd->callback([&action, o] {
    action = [o] {
      if (o->out == o->model) fail(o->out, "the output must not overwrite the input");
      std::map<std::string, float> scales;
      if (!o->calibrate.empty()) {
        // Calibrated on the model with INT8 weights, as the runtime will run it.
        runtime::LoadOptions lo;
        lo.int8 = true;
        lo.stored_act_scales = false;
        auto model = runtime::Model::load(o->model, lo);
        const auto x = calibration_images(o->data, o->calib_samples, model.input_size());
        scales = runtime::calibrated_act_scales(model, x.data(), static_cast<std::int64_t>(x.size()) / model.input_size(),
                                                o->calibrate, o->keep);
      }
      const auto r = runtime::quantize_file(o->model, o->out, o->keep, scales);
      std::printf("%zu layers INT8, %zu kept fp32; %s -> %s (%.1fx smaller): wrote %s\n", r.quantized.size(),
                  r.kept.size(), report::human_bytes(r.bytes_in).c_str(), report::human_bytes(r.bytes_out).c_str(),
                  double(r.bytes_in) / double(r.bytes_out), o->out.c_str());
      if (!scales.empty())
        std::printf("static activation scales (%s) stored for %zu layers\n", o->calibrate.c_str(), scales.size());
      return 0;
    };
  });
}

}  // namespace prunus::cli
