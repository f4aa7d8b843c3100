// prunus/cuda.h — GPU backends (built with -DPRUNUS_CUDA=ON): GEMM dense through cuBLAS and
// 2:4 sparse through cuSPARSELt on sparse tensor cores, and a LLaMA forward whose linear
// layers use either. No CUDA headers here.
//
// Convention as everywhere in Prunus: Y[M×N] = X[M×K] · Wᵀ, W is [N×K] (out × in) row-major
// with the 2:4 pattern along K; X and Y are row-major device buffers of `dtype`.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "prunus/llama2c.h"

namespace prunus::cuda {

enum class DType { F16, BF16 };
const char* dtype_name(DType d);
std::uint16_t to_bits(float v, DType d);  // round to nearest even
float from_bits(std::uint16_t b, DType d);

// FP8 E4M3 codes, one byte each, as cuda_fp8.h's __nv_fp8_e4m3 stores them (Hopper's FP8
// tensor cores; the stretch). A tag, so that they are not mistaken for int8 codes.
struct E4M3 {
  const std::uint8_t* codes;
};

// Why `w` (N×K, 16-bit values) cannot go through cuSPARSELt 2:4: K or N not a multiple of 32,
// or a group of four along K with more than two non-zeros (named). Empty when it can.
std::string sparse24_unsupported(const std::uint16_t* w, std::int64_t n, std::int64_t k);
std::string sparse24_unsupported(const std::int8_t* w, std::int64_t n, std::int64_t k);
std::string sparse24_unsupported(E4M3 w, std::int64_t n, std::int64_t k);  // ±0 codes are zeros

// Where the 2:4 product is written: row-major Y[M×N] (what a model's next layer reads) or
// Yᵀ, row-major [N×M] (feature-major, PyTorch's cuSPARSELt orientation).
enum class Output { RowMajor, Transposed };

// The configuration chosen for one batch size: cuSPARSELt operand layout (0..3, see gemm.cu),
// algorithm id, split-K, its time, and how many configurations the search ran.
struct SparsePlanInfo {
  int layout = -1, alg = -1, split_k = 0, configs_timed = 0;
  double us = 0;
};

// A weight on the GPU, 2:4 along K. On the first call at a batch size M the operand layouts ×
// algorithm ids (× split-K with PRUNUS_CSLT_SPLITK=1; at most 3 s a layout, PRUNUS_CSLT_SEARCH_S)
// are timed on this GPU (each result checked against the default configuration's), and the
// fastest plan is kept. The weight is compressed once (0.5625× the dense bytes) and that copy
// serves every batch size and algorithm; each plan rewrites it once with identical bytes
// (cuSPARSELt 0.8.0's Hopper kernels fault on a copy their plan did not write). Later calls at
// that M do no allocation, no descriptor set-up and no synchronisation; the first call at a new M
// waits for the whole device before it rewrites the copy. The choice is recorded per
// GPU, shape and M in PRUNUS_CSLT_CACHE (default ~/.cache/prunus/cusparselt-tuning.txt) with
// any configuration that took its process down, which later processes skip.
// A new M within 2× of a searched one (same shape) tries only the searched winners and the
// defaults (~1 s instead of ~30 s for fp16 on H100/H200); PRUNUS_CSLT_SEARCH=full searches it in full,
// PRUNUS_CSLT_SEARCH=0 keeps cuSPARSELt's default algorithm.
class Sparse24Linear {
 public:
  // host_w: N×K row-major values of `dtype` (uint16 bits); std::invalid_argument (with
  // sparse24_unsupported's reason) when it cannot run.
  Sparse24Linear(const std::uint16_t* host_w, std::int64_t n, std::int64_t k, DType dtype,
                 Output out = Output::RowMajor);
  // INT8 (the stretch): int8 weight codes (per-row scales stay with the caller, as in
  // `prunus quantize`'s files), int8 X, exact int32 sums: Y is int32 [M×N] (or its transpose).
  // Dequantizing (y · s_x · s_w) is the caller's epilogue. Searched and recorded like fp16.
  Sparse24Linear(const std::int8_t* host_w, std::int64_t n, std::int64_t k, Output out = Output::RowMajor);
  // INT8 in, `out_dtype` out: Y[i, j] = alpha[j] · Σ x_q w_q, alpha a device vector of N floats
  // read at each call (cuSPARSELt's epilogue; the caller keeps it valid and may rewrite it
  // between calls on the stream, e.g. s_x · s_w for a per-call activation scale).
  Sparse24Linear(const std::int8_t* host_w, std::int64_t n, std::int64_t k, DType out_dtype, const float* d_alpha,
                 Output out = Output::RowMajor);
  // FP8: E4M3 weight and X, fp32 accumulation, Y in `out_dtype` (fp16/bf16) times `alpha`
  // (the product of the weight's and the activations' per-tensor scales).
  Sparse24Linear(E4M3 w, std::int64_t n, std::int64_t k, DType out_dtype, float alpha = 1.0f,
                 Output out = Output::RowMajor);
  ~Sparse24Linear();
  Sparse24Linear(const Sparse24Linear&) = delete;
  Sparse24Linear& operator=(const Sparse24Linear&) = delete;

  // M must be a multiple of 16 (pad the batch); stream is a cudaStream_t.
  void forward(const void* d_x, std::int64_t m, void* d_y, void* stream);
  SparsePlanInfo plan_info(std::int64_t m) const;  // layout -1 before the first call at m
  std::size_t compressed_bytes() const;             // of the compressed weight held (one copy)
  std::int64_t rows() const;
  std::int64_t cols() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Dense baseline with the same convention (cublasGemmEx, fp32 accumulation, tensor cores).
class DenseLinear {
 public:
  DenseLinear(const std::uint16_t* host_w, std::int64_t n, std::int64_t k, DType dtype);
  // INT8 baseline: cublasGemmEx on int8 tensor cores, int32 Y[M×N] (K a multiple of 4).
  DenseLinear(const std::int8_t* host_w, std::int64_t n, std::int64_t k);
  // FP8 baseline: cuBLASLt on FP8 tensor cores (E4M3 W and X, fp32 accumulation), Y in
  // `out_dtype` times `alpha`. `fast_accum`: cuBLASLt's fast FP8 accumulation (fewer promotions
  // of the partial sums to fp32: faster, less exact); off is the default, as in PyTorch's _scaled_mm.
  DenseLinear(E4M3 w, std::int64_t n, std::int64_t k, DType out_dtype, float alpha = 1.0f, bool fast_accum = false);
  ~DenseLinear();
  DenseLinear(const DenseLinear&) = delete;
  DenseLinear& operator=(const DenseLinear&) = delete;
  void forward(const void* d_x, std::int64_t m, void* d_y, void* stream);
  // fp32 output (logits): Y[M×N] float.
  void forward_f32(const void* d_x, std::int64_t m, float* d_y, void* stream);
  const void* device_weight() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// How a model's linear layers run: dense cuBLAS, 2:4 cuSPARSELt, or per batch size whichever
// measured faster on this GPU (auto keeps both weights; the choice is logged); int8-2:4 is
// W8A8 on 2:4: weights quantized per output row at load, activations with one scale per call
// (dynamic), the int8 2:4 GEMM writing fp16/bf16 through a per-row scale epilogue.
enum class GemmMode { Dense, Sparse24, Auto, Int8Sparse24 };
const char* gemm_mode_name(GemmMode m);
GemmMode parse_gemm_mode(const std::string& s);  // dense | 2:4 | auto | int8-2:4; std::invalid_argument

// The cuSPARSELt library loaded at run time, as cusparseLtGetVersion gives it (0.8.0 → 800):
// the one on LD_LIBRARY_PATH, which need not be the headers' version.
int cusparselt_version();

// Log sink for the backend's decisions (auto choices, searches); default (and nullptr): stderr.
void set_log(std::function<void(const std::string&)> sink);

class Linear {
 public:
  // Sparse24 with a weight that is not 2:4 → std::invalid_argument naming the layer. Auto with
  // such a weight runs dense and says so.
  Linear(std::string name, const std::uint16_t* host_w, std::int64_t n, std::int64_t k, DType dtype, GemmMode mode);
  ~Linear();
  Linear(Linear&&) noexcept;
  Linear& operator=(Linear&&) noexcept;

  // Y[m×n] = X[m×k]·Wᵀ, row-major. X and Y must have room for round_up(m, 16) rows: the 2:4
  // path computes padded rows (their values are ignored). Auto times both paths on the first
  // call at each padded m (synchronising once) and keeps 2:4 only where it is 2% faster.
  void forward(const void* d_x, std::int64_t m, void* d_y, void* stream);
  bool sparse_at(std::int64_t m) const;  // path that forward(.., m, ..) takes (after the first call)
  std::size_t device_bytes() const;      // weights held on the GPU
  const std::string& name() const;
  std::int64_t rows() const;
  std::int64_t cols() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ------------------------------------------------------------------ LLaMA on the GPU
// The runtime's LLaMA (llama2.c RoPE order, GQA, SwiGLU) in fp16/bf16 with fp32 residual
// stream, norms, softmax and logits. Q/K/V and gate/up are fused into one GEMM each; the hidden
// size is padded with zero rows/columns to a multiple of 32 (exact) so that every decoder
// linear can be 2:4. The classifier stays dense (cuBLAS, fp32 output).
struct LlamaGpuOptions {
  DType dtype = DType::F16;
  GemmMode mode = GemmMode::Dense;
  std::int64_t max_tokens = 0;  // longest prefill (0: the model's context)
};

class LlamaGpu {
 public:
  // Takes a checkpoint as llama2c::read_checkpoint / hf::read_llama_folder give it.
  LlamaGpu(const llama2c::Checkpoint& ck, const LlamaGpuOptions& opt, float norm_eps = 1e-5f,
           float rope_theta = 10000.0f);
  ~LlamaGpu();
  LlamaGpu(const LlamaGpu&) = delete;
  LlamaGpu& operator=(const LlamaGpu&) = delete;

  // Runs tokens[0..n) at positions pos..pos+n (the cache holds positions < pos) and leaves
  // the fp32 logits of every position on the device. Asynchronous on the model's stream.
  void forward(const std::int32_t* tokens, std::int64_t n, std::int64_t pos);
  // Sum of -log softmax(logits[i])[targets[i]] over i < n of the last forward (synchronises).
  double nll(const std::int32_t* targets, std::int64_t n);
  // Logits of position i of the last forward, copied to the host (synchronises).
  std::vector<float> logits(std::int64_t i);
  void synchronize();

  const llama2c::Config& config() const;
  const std::vector<Linear>& linears() const;
  std::size_t weight_bytes() const;  // on the GPU (linears + embedding + classifier + norms)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace prunus::cuda
