// Internal to runtime/exec: one weight matrix into the format the load options ask for
// (dense, or whichever measured fastest), with the LayerInfo that reports it.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "prunus/runtime.h"

namespace prunus::runtime {

inline std::pair<kernels::SparseLinear, LayerInfo> build_layer(std::string name, const std::vector<float>& w,
                                                               std::int64_t rows, std::int64_t cols,
                                                               std::int64_t batch_hint, const LoadOptions& opt) {
  auto lin = opt.dense  ? kernels::SparseLinear::dense(w.data(), rows, cols, opt.kernel)
             : opt.int8 ? kernels::SparseLinear::build_int8(w.data(), rows, cols, batch_hint, opt.kernel)
                        : kernels::SparseLinear::build(w.data(), rows, cols, batch_hint, opt.kernel);
  LayerInfo info;
  info.name = std::move(name);
  info.format = kernels::SparseLinear::format_name(lin.format());
  info.rows = rows;
  info.cols = cols;
  info.nnz = lin.nnz();
  info.bytes = lin.bytes();
  info.dense_bytes = lin.dense_bytes();
  info.seconds = lin.measured_seconds();
  info.dense_seconds = lin.measured_dense_seconds();
  return {std::move(lin), std::move(info)};
}

}  // namespace prunus::runtime
