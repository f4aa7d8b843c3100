// prunus/cuda.h — GPU GEMM backends (built with -DPRUNUS_CUDA=ON): dense through cuBLAS and
// 2:4 sparse through cuSPARSELt on sparse tensor cores. No CUDA headers here.
//
// Convention as everywhere in Prunus: Y[M×N] = X[M×K] · Wᵀ, W is [N×K] (out × in) row-major
// with the 2:4 pattern along K; X and Y are row-major device buffers of `dtype`.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace prunus::cuda {

enum class DType { F16, BF16 };
const char* dtype_name(DType d);

// A weight on the GPU, pruned 2:4 and compressed once at construction; a cuSPARSELt plan
// and the fastest algorithm id × split-K (timed on first use) are cached per batch size M,
// so a call does no allocation, no descriptor set-up and no synchronisation.
class Sparse24Linear {
 public:
  // host_w: N×K row-major values of `dtype` (uint16 bits); throws std::invalid_argument if
  // a group of 4 along K has more than 2 non-zeros.
  Sparse24Linear(const std::uint16_t* host_w, std::int64_t n, std::int64_t k, DType dtype);
  ~Sparse24Linear();
  Sparse24Linear(const Sparse24Linear&) = delete;
  Sparse24Linear& operator=(const Sparse24Linear&) = delete;

  // M must be a multiple of 16 (pad the batch); stream is a cudaStream_t. Writes Yᵀ, i.e.
  // row-major [N×M] (feature-major activations, the orientation PyTorch's cuSPARSELt path
  // uses and the fastest measured); PRUNUS_CSLT_LAYOUT=0 writes row-major Y instead.
  void forward(const void* d_x, std::int64_t m, void* d_y, void* stream);
  int algorithm(std::int64_t m) const;  // chosen by the search, -1 before the first call
  int split_k(std::int64_t m) const;
  std::size_t compressed_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Dense baseline with the same convention (cublasGemmEx, fp32 accumulation, tensor cores).
class DenseLinear {
 public:
  DenseLinear(const std::uint16_t* host_w, std::int64_t n, std::int64_t k, DType dtype);
  ~DenseLinear();
  DenseLinear(const DenseLinear&) = delete;
  DenseLinear& operator=(const DenseLinear&) = delete;
  void forward(const void* d_x, std::int64_t m, void* d_y, void* stream);
  const void* device_weight() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace prunus::cuda
