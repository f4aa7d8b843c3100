// prunus/export.h — model files for other tools. No libtorch.
//
// ONNX: any model the runtime executes (safetensors + prunus.graph: dense, pruned, shrunk) as
// an ONNX ModelProto (opset 13). Input "pixels" [N, C, H, W] float in [0, 1] (the runtime's
// raw input; the graph's normalisation is in the file as Sub/Div), output "logits" [N, K].
// Weights are dense initializers inside the file: pruned zeros stay exact zeros, and the file
// references no external data.
#pragma once

#include <string>

namespace prunus::exporter {

// InputError naming `model_path` for a model without a graph or with an op ONNX export does not
// know. The file is written atomically.
void write_onnx(const std::string& model_path, const std::string& out_path);

}  // namespace prunus::exporter
