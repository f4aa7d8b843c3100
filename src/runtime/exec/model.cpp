#include <cmath>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "prunus/io.h"
#include "prunus/runtime.h"
#include "prunus/safetensors.h"

namespace prunus::runtime {
using nlohmann::json;

Model Model::load(const std::string& path, const LoadOptions& opt) {
  auto file = safetensors::File::open(path);
  auto g = file.metadata().find("prunus.graph");
  if (g == file.metadata().end())
    fail(path, "no 'prunus.graph' in __metadata__: this model cannot run in the runtime (export it with Prunus)");
  Model m;
  if (auto a = file.metadata().find("prunus.arch"); a != file.metadata().end()) m.arch_ = a->second;
  json graph;
  try {
    graph = json::parse(g->second);
    if (!graph.is_object() || !graph.contains("input") || !graph.contains("ops") || !graph["ops"].is_array())
      fail(path, "prunus.graph must be an object with 'input' and 'ops'");
    std::int64_t size = 1;
    for (const auto& d : graph.at("input")) {
      const auto v = d.get<std::int64_t>();
      if (v <= 0 || v > (1 << 24)) fail(path, "prunus.graph: bad input dimension");
      size *= v;
    }
    m.input_size_ = size;
    std::int64_t width = size;  // features flowing between ops
    for (const auto& o : graph["ops"]) {
      const std::string kind = o.at("op").get<std::string>();
      Op op{};
      if (kind == "normalize") {
        op.kind = Op::Normalize;
        op.mean = o.at("mean").get<float>();
        const float sd = o.at("std").get<float>();
        if (!(sd > 0) || !std::isfinite(op.mean)) fail(path, "prunus.graph: normalize needs a finite mean and std > 0");
        op.inv_std = 1.0f / sd;
      } else if (kind == "flatten") {
        op.kind = Op::Flatten;
      } else if (kind == "relu") {
        op.kind = Op::Relu;
      } else if (kind == "linear") {
        op.kind = Op::Linear;
        const auto wname = o.at("weight").get<std::string>();
        const auto& wv = file.at(wname);
        if (wv.shape.size() != 2) fail(path, fmt::format("linear weight '{}' must be 2-D", wname));
        const std::int64_t rows = wv.shape[0], cols = wv.shape[1];
        if (cols != width)
          fail(path, fmt::format("linear weight '{}' expects {} inputs but the graph gives {}", wname, cols, width));
        const auto w = wv.to_f32();
        for (float v : w)
          if (!std::isfinite(v)) fail(path, fmt::format("tensor '{}' contains NaN or Inf", wname));
        std::vector<float> bias(static_cast<std::size_t>(rows), 0.0f);
        if (o.contains("bias")) {
          const auto bname = o.at("bias").get<std::string>();
          const auto& bv = file.at(bname);
          if (bv.numel() != rows) fail(path, fmt::format("bias '{}' has {} values, expected {}", bname, bv.numel(), rows));
          bias = bv.to_f32();
          for (float v : bias)
            if (!std::isfinite(v)) fail(path, fmt::format("tensor '{}' contains NaN or Inf", bname));
        }
        kernels::SparseLinear lin = opt.dense ? kernels::SparseLinear::dense(w.data(), rows, cols, opt.kernel)
                        : kernels::SparseLinear::build(w.data(), rows, cols, opt.batch_hint, opt.kernel);
        LayerInfo info;
        info.name = wname.substr(0, wname.rfind(".weight"));
        info.format = kernels::SparseLinear::format_name(lin.format());
        info.rows = rows;
        info.cols = cols;
        info.nnz = lin.nnz();
        info.bytes = lin.bytes();
        info.dense_bytes = lin.dense_bytes();
        info.seconds = lin.measured_seconds();
        info.dense_seconds = lin.measured_dense_seconds();
        op.linear = m.linears_.size();
        m.linears_.push_back(std::move(lin));
        m.biases_.push_back(std::move(bias));
        m.infos_.push_back(info);
        width = rows;
      } else {
        fail(path, fmt::format("prunus.graph: unknown op '{}'", kind));
      }
      m.ops_.push_back(op);
    }
    m.output_size_ = width;
  } catch (const json::exception& e) {
    fail(path, std::string("prunus.graph is malformed: ") + e.what());
  }
  if (m.linears_.empty()) fail(path, "prunus.graph has no layers");
  return m;
}

std::vector<float> Model::forward(const float* x, std::int64_t batch) const {
  std::vector<float> cur(x, x + batch * input_size_), next;
  std::int64_t width = input_size_;
  for (const auto& op : ops_) {
    switch (op.kind) {
      case Op::Normalize:
        for (auto& v : cur) v = (v - op.mean) * op.inv_std;
        break;
      case Op::Flatten:
        break;
      case Op::Relu:
        for (auto& v : cur) v = v > 0.0f ? v : 0.0f;
        break;
      case Op::Linear: {
        const auto& lin = linears_[op.linear];
        const auto& bias = biases_[op.linear];
        next.resize(static_cast<std::size_t>(batch * lin.rows()));
        lin.forward(cur.data(), batch, next.data());
        for (std::int64_t b = 0; b < batch; ++b)
          for (std::int64_t r = 0; r < lin.rows(); ++r) next[b * lin.rows() + r] += bias[r];
        cur.swap(next);
        width = lin.rows();
        break;
      }
    }
  }
  (void)width;
  return cur;
}

}  // namespace prunus::runtime
