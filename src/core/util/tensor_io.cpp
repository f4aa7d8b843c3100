// libtorch tensors <-> the runtime's safetensors reader and writer.
#include "util/tensor_io.h"

#include <cstring>

#include <fmt/format.h>

#include "prunus/io.h"

namespace prunus {
namespace st = safetensors;

safetensors::DType to_safetensors_dtype(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32: return st::DType::F32;
    case torch::kFloat64: return st::DType::F64;
    case torch::kFloat16: return st::DType::F16;
    case torch::kBFloat16: return st::DType::BF16;
    case torch::kInt64: return st::DType::I64;
    case torch::kInt32: return st::DType::I32;
    case torch::kInt16: return st::DType::I16;
    case torch::kInt8: return st::DType::I8;
    case torch::kUInt8: return st::DType::U8;
    case torch::kBool: return st::DType::BOOL;
    default: throw std::invalid_argument(fmt::format("no safetensors dtype for {}", c10::toString(t)));
  }
}

torch::Tensor to_tensor(const st::TensorView& v) {
  torch::ScalarType t;
  switch (v.dtype) {
    case st::DType::F32: t = torch::kFloat32; break;
    case st::DType::F64: t = torch::kFloat64; break;
    case st::DType::F16: t = torch::kFloat16; break;
    case st::DType::BF16: t = torch::kBFloat16; break;
    case st::DType::I64: t = torch::kInt64; break;
    case st::DType::I32: t = torch::kInt32; break;
    case st::DType::I16: t = torch::kInt16; break;
    case st::DType::I8: t = torch::kInt8; break;
    case st::DType::U8: t = torch::kUInt8; break;
    case st::DType::BOOL: t = torch::kBool; break;
    default: fail(v.name, fmt::format("dtype {} is not supported here", st::dtype_name(v.dtype)));
  }
  auto out = torch::empty(v.shape, torch::TensorOptions().dtype(t));
  if (v.nbytes) std::memcpy(out.data_ptr(), v.data, v.nbytes);
  return out;
}

void write_tensors(const std::string& path, const NamedTensors& tensors,
                   const std::map<std::string, std::string>& metadata) {
  std::vector<torch::Tensor> keep;  // contiguous copies must outlive the write
  std::vector<st::TensorToWrite> out;
  for (const auto& [name, t] : tensors) {
    keep.push_back(t.detach().to(torch::kCPU).contiguous());
    const auto& c = keep.back();
    out.push_back({name, to_safetensors_dtype(c.scalar_type()), c.sizes().vec(), c.data_ptr()});
  }
  st::write(path, out, metadata);
}

}  // namespace prunus
