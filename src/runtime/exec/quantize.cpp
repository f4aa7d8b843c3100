// prunus quantize: a Prunus model file → the same graph with INT8 bitmask weights.
#include <filesystem>
#include <cmath>
#include <map>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "prunus/io.h"
#include "prunus/kernels.h"
#include "prunus/runtime.h"
#include "prunus/safetensors.h"

namespace prunus::runtime {
namespace {

// `prunus quantize --keep-fp32 NAME`: a weight whose name contains NAME stays fp32.
bool kept_fp32(const std::string& name, const std::vector<std::string>& keep_fp32) {
  for (const auto& k : keep_fp32)
    if (!k.empty() && name.find(k) != std::string::npos) return true;
  return false;
}

}  // namespace

std::map<std::string, float> calibrated_act_scales(Model& m, const float* x, std::int64_t batch,
                                                   const std::string& method,
                                                   const std::vector<std::string>& keep_fp32) {
  const auto s = m.calibrate_int8(x, batch, method);
  std::map<std::string, float> out;
  for (std::size_t l = 0; l < s.size(); ++l) {
    const auto name = m.layers()[l].name + ".weight";
    if (s[l] > 0 && !kept_fp32(name, keep_fp32)) out[name] = s[l];
  }
  return out;
}

QuantizeReport quantize_file(const std::string& in, const std::string& out, const std::vector<std::string>& keep_fp32,
                             const std::map<std::string, float>& act_scales) {
  // Loading validates the graph against the tensors (and that every weight is finite).
  const auto file = safetensors::File::open(in);
  LoadOptions validate_only;
  validate_only.dense = true;
  (void)Model::from_file(file, validate_only);
  nlohmann::json graph = nlohmann::json::parse(file.metadata().at("prunus.graph"));
  auto kept = [&](const std::string& name) { return kept_fp32(name, keep_fp32); };
  QuantizeReport rep;
  rep.bytes_in = std::filesystem::file_size(in);
  // Tensors made here (folded weights and biases, INT8 codes), owned until the write.
  std::map<std::string, std::vector<float>> f32;
  std::map<std::string, std::vector<std::int64_t>> i64;
  std::map<std::string, std::vector<std::uint8_t>> u8;
  std::map<std::string, std::vector<std::int8_t>> i8;
  std::vector<safetensors::TensorToWrite> outs;
  std::set<std::string> written;
  auto keep_tensor = [&](const std::string& name) {  // an input tensor, unchanged
    if (!written.insert(name).second) return;
    const auto& t = file.at(name);
    outs.push_back({t.name, t.dtype, t.shape, t.data});
  };
  for (auto& o : graph.at("ops")) {
    if (!o.contains("weight")) continue;
    const auto name = o.at("weight").get<std::string>();
    const auto* t = file.find(name);
    if (!t) fail(in, fmt::format("'{}' is already quantized (INT8 files are not quantized again)", name));
    const std::int64_t rows = t->shape[0], cols = t->numel() / rows;
    auto w = t->to_f32();
    // BatchNorm folded into the weight rows and a bias, as the runtime does at load: the
    // deployed file carries no BatchNorm tensors.
    if (o.contains("bn")) {
      const auto& bn = o.at("bn");
      auto vec = [&](const char* key) { return file.at(bn.at(key).get<std::string>()).to_f32(); };
      const auto gamma = vec("weight"), beta = vec("bias"), mean = vec("running_mean"), var = vec("running_var");
      const double eps = bn.value("eps", 1e-5);
      std::vector<float> bias(static_cast<std::size_t>(rows), 0.0f);
      if (o.contains("bias")) bias = file.at(o.at("bias").get<std::string>()).to_f32();
      for (std::int64_t r = 0; r < rows; ++r) {  // the same arithmetic as Model::from_file's folding
        const double sc = double(gamma[r]) / std::sqrt(double(var[r]) + eps);
        const float scf = static_cast<float>(sc);
        for (std::int64_t c = 0; c < cols; ++c) w[r * cols + c] = w[r * cols + c] * scf;
        bias[r] = static_cast<float>((double(bias[r]) - mean[r]) * sc + beta[r]);
      }
      const std::string bname = name + ".folded_bias";
      f32[bname] = std::move(bias);
      outs.push_back({bname, safetensors::DType::F32, {rows}, f32[bname].data()});
      o["bias"] = bname;
      o.erase("bn");
    } else if (o.contains("bias")) {
      keep_tensor(o.at("bias").get<std::string>());
    }
    if (kept(name)) {
      rep.kept.push_back(name);
      f32[name] = std::move(w);
      outs.push_back({name, safetensors::DType::F32, t->shape, f32[name].data()});
      continue;
    }
    const std::int64_t row_bytes = (cols + 7) / 8;
    const auto k = kernels::quantize_bitmask(w.data(), rows, cols);
    auto& bits = u8[name];
    bits.assign(static_cast<std::size_t>(rows * row_bytes), 0);
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t c = 0; c < cols; ++c)
        if (k.bits[r * k.words_per_row + c / 64] >> (c % 64) & 1) bits[r * row_bytes + c / 8] |= 1u << (c % 8);
    i64[name] = t->shape;
    i8[name].assign(k.values.begin(), k.values.begin() + k.nnz());
    f32[name + ".q8.scale"] = k.scale;
    outs.push_back({name + ".q8.shape", safetensors::DType::I64, {static_cast<std::int64_t>(t->shape.size())}, i64[name].data()});
    outs.push_back({name + ".q8.bitmask", safetensors::DType::U8, {rows, row_bytes}, bits.data()});
    outs.push_back({name + ".q8.values", safetensors::DType::I8, {k.nnz()}, i8[name].data()});
    outs.push_back({name + ".q8.scale", safetensors::DType::F32, {rows}, f32[name + ".q8.scale"].data()});
    rep.quantized.push_back(name);
  }
  auto meta = file.metadata();
  meta["prunus.graph"] = graph.dump();
  if (!act_scales.empty()) {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& [name, sc] : act_scales) j[name] = sc;
    meta["prunus.act_scales"] = j.dump();
  }
  meta["prunus.quant"] = meta.count("prunus.act_scales")
                             ? "int8 weights per output channel, bitmask of non-zeros (name.q8.*); static int8 "
                               "activation scales per layer input (prunus.act_scales)"
                             : "int8 weights per output channel, bitmask of non-zeros (name.q8.*); activations "
                               "quantized at run time";
  safetensors::write(out, outs, meta);
  rep.bytes_out = std::filesystem::exists(out) ? std::filesystem::file_size(out) : 0;
  return rep;
}

}  // namespace prunus::runtime
