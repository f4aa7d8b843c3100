// LLaMA forward on the GPU: the runtime's decoder (src/runtime/exec/llama.cpp is the fp32
// reference it follows) with 16-bit weights and activations, fp32 residual stream, norms,
// softmax and logits. Linear layers go through cuda::Linear (dense cuBLAS, 2:4 cuSPARSELt or
// auto); attention through cuBLAS batched GEMMs over a KV cache. One sequence at a time.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "prunus/cuda.h"

namespace prunus::cuda {
namespace {

void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}
void ck(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) throw std::runtime_error(std::string(what) + ": cuBLAS status " + std::to_string(int(s)));
}

std::int64_t round_up(std::int64_t v, std::int64_t m) { return (v + m - 1) / m * m; }

template <class T>
__device__ float ld(const T* p, std::int64_t i) {
  return float(p[i]);
}
template <class T>
__device__ T cvt(float v);
template <>
__device__ __half cvt<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __nv_bfloat16 cvt<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

__device__ float block_sum(float v, float* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = threadIdx.x < blockDim.x / 32 ? shared[threadIdx.x] : 0.0f;
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x == 0) shared[0] = v;
  __syncthreads();
  v = shared[0];
  __syncthreads();
  return v;
}
__device__ float block_max(float v, float* shared) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = threadIdx.x < blockDim.x / 32 ? shared[threadIdx.x] : -INFINITY;
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (threadIdx.x == 0) shared[0] = v;
  __syncthreads();
  v = shared[0];
  __syncthreads();
  return v;
}

// x[t, :] = embedding[tokens[t], :]
template <class T>
__global__ void embed_kernel(const T* table, const std::int32_t* tokens, float* x, std::int64_t dim) {
  const std::int64_t t = blockIdx.x;
  const T* row = table + std::int64_t(tokens[t]) * dim;
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) x[t * dim + i] = ld(row, i);
}

// out[t, :] = x[t, :] / sqrt(mean(x²) + eps) · w
template <class T>
__global__ void rmsnorm_kernel(const float* x, const float* w, T* out, std::int64_t dim, float eps) {
  __shared__ float sh[32];
  const float* r = x + blockIdx.x * dim;
  float ss = 0;
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += r[i] * r[i];
  ss = block_sum(ss, sh);
  const float inv = rsqrtf(ss / float(dim) + eps);
  for (std::int64_t i = threadIdx.x; i < dim; i += blockDim.x) out[blockIdx.x * dim + i] = cvt<T>(r[i] * inv * w[i]);
}

// RoPE on interleaved pairs of q and k inside the fused qkv rows, then k and v into the cache
// ([kv head][position][head size]).
template <class T>
__global__ void rope_cache_kernel(T* qkv, std::int64_t stride, std::int64_t dim, std::int64_t kv_dim, std::int64_t hs,
                                  std::int64_t pos, const float* cos, const float* sin, T* kc, T* vc,
                                  std::int64_t seq) {
  const std::int64_t t = blockIdx.x, p = pos + t;
  T* row = qkv + t * stride;
  const float* c = cos + p * (hs / 2);
  const float* s = sin + p * (hs / 2);
  for (std::int64_t i = 2 * threadIdx.x; i < dim + kv_dim; i += 2 * blockDim.x) {
    const std::int64_t j = (i % hs) / 2;
    const float a = float(row[i]), b = float(row[i + 1]);
    const T ra = cvt<T>(a * c[j] - b * s[j]), rb = cvt<T>(a * s[j] + b * c[j]);
    row[i] = ra;
    row[i + 1] = rb;
    if (i >= dim) {
      const std::int64_t e = i - dim, h = e / hs, d = e % hs;
      kc[(h * seq + p) * hs + d] = ra;
      kc[(h * seq + p) * hs + d + 1] = rb;
    }
  }
  for (std::int64_t e = threadIdx.x; e < kv_dim; e += blockDim.x) {
    const std::int64_t h = e / hs, d = e % hs;
    vc[(h * seq + p) * hs + d] = row[dim + kv_dim + e];
  }
}

// Causal softmax of the scores of query row i (position pos + i) over keys 0..keys-1;
// probabilities of later keys are written as 0 so that P·V can sum over all keys.
template <class T>
__global__ void softmax_kernel(const float* scores, T* probs, std::int64_t head_rows, std::int64_t keys,
                               std::int64_t ld, std::int64_t pos) {
  __shared__ float sh[32];
  const std::int64_t h = blockIdx.y, i = blockIdx.x;
  const float* s = scores + (h * head_rows + i) * ld;
  T* p = probs + (h * head_rows + i) * ld;
  const std::int64_t last = pos + i;  // inclusive
  float mx = -INFINITY;
  for (std::int64_t j = threadIdx.x; j <= last; j += blockDim.x) mx = fmaxf(mx, s[j]);
  mx = block_max(mx, sh);
  float sum = 0;
  for (std::int64_t j = threadIdx.x; j <= last; j += blockDim.x) sum += __expf(s[j] - mx);
  sum = block_sum(sum, sh);
  const float inv = 1.0f / sum;
  for (std::int64_t j = threadIdx.x; j < keys; j += blockDim.x) p[j] = cvt<T>(j <= last ? __expf(s[j] - mx) * inv : 0.0f);
}

// g[t, j] = silu(h[t, j]) · h[t, F + j] for the fused gate/up output.
template <class T>
__global__ void swiglu_kernel(const T* h, T* g, std::int64_t n, std::int64_t f) {
  const std::int64_t total = n * f;
  for (std::int64_t e = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; e < total;
       e += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t t = e / f, j = e % f;
    const float a = float(h[t * 2 * f + j]), b = float(h[t * 2 * f + f + j]);
    g[e] = cvt<T>(a / (1.0f + __expf(-a)) * b);
  }
}

template <class T>
__global__ void residual_kernel(float* x, const T* y, std::int64_t total) {
  for (std::int64_t e = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; e < total;
       e += std::int64_t(gridDim.x) * blockDim.x)
    x[e] += float(y[e]);
}

// nll[i] = logsumexp(logits[i]) - logits[i][target[i]]
__global__ void nll_kernel(const float* logits, const std::int32_t* targets, float* nll, std::int64_t vocab) {
  __shared__ float sh[32];
  const float* r = logits + blockIdx.x * vocab;
  float mx = -INFINITY;
  for (std::int64_t j = threadIdx.x; j < vocab; j += blockDim.x) mx = fmaxf(mx, r[j]);
  mx = block_max(mx, sh);
  float sum = 0;
  for (std::int64_t j = threadIdx.x; j < vocab; j += blockDim.x) sum += expf(r[j] - mx);
  sum = block_sum(sum, sh);
  if (threadIdx.x == 0) nll[blockIdx.x] = logf(sum) + mx - r[targets[blockIdx.x]];
}

int grid_for(std::int64_t total) { return static_cast<int>(std::min<std::int64_t>((total + 255) / 256, 65535)); }

}  // namespace

struct LlamaGpu::Impl {
  llama2c::Config cfg;
  LlamaGpuOptions opt;
  float eps = 1e-5f;
  // Q: n_heads · head size (less than dim once heads are pruned); Qp: Q padded to 32, the
  // attention output's row (o_proj reads zero columns past Q, which keeps it 2:4-capable).
  std::int64_t F = 0, Fp = 0, T = 0, Tp = 0, qkv_n = 0, Q = 0, Qp = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  std::vector<Linear> linears;  // per layer: qkv, o, gate_up, down
  std::vector<float*> attn_norm, ffn_norm;
  float* final_norm = nullptr;
  std::unique_ptr<DenseLinear> classifier;
  void* embedding = nullptr;  // 16-bit [vocab × dim] (the classifier's weight when shared)
  float *cos = nullptr, *sin = nullptr;
  // Activations (rows padded to Tp).
  float *x = nullptr, *scores = nullptr, *logits = nullptr, *nll = nullptr;
  void *xb = nullptr, *qkv = nullptr, *att = nullptr, *y = nullptr, *h13 = nullptr, *g = nullptr, *probs = nullptr;
  void *kcache = nullptr, *vcache = nullptr;
  std::int32_t *tokens = nullptr, *targets = nullptr;
  std::vector<void*> allocations;
  // Batched-GEMM pointer arrays per layer (device): K, Q, S | P, V, O.
  std::vector<const void**> ptrs;
  std::int64_t last_n = 0;

  template <class P>
  P* alloc(std::size_t bytes) {
    void* p = nullptr;
    ck(cudaMalloc(&p, std::max<std::size_t>(bytes, 16)), "cudaMalloc");
    allocations.push_back(p);
    return static_cast<P*>(p);
  }
  float* upload_f32(const std::vector<float>& v) {
    float* d = alloc<float>(v.size() * 4);
    ck(cudaMemcpy(d, v.data(), v.size() * 4, cudaMemcpyHostToDevice), "upload");
    return d;
  }

  template <class Tt>
  void run(const std::int32_t* host_tokens, std::int64_t n, std::int64_t pos);
};

LlamaGpu::LlamaGpu(const llama2c::Checkpoint& ck_in, const LlamaGpuOptions& opt, float norm_eps, float rope_theta)
    : impl_(std::make_unique<Impl>()) {
  auto& I = *impl_;
  I.cfg = ck_in.config;
  I.opt = opt;
  I.eps = norm_eps;
  const auto& c = I.cfg;
  const std::int64_t D = c.dim, KV = c.kv_dim(), hs = c.head_size(), V = c.vocab_size, L = c.n_layers;
  if (D <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 || hs <= 0 || c.n_heads % c.n_kv_heads || hs % 2 ||
      (!c.head_dim && D % c.n_heads))
    throw std::invalid_argument("llama: inconsistent model configuration");
  I.Q = c.q_dim();
  I.Qp = round_up(I.Q, 32);
  I.F = c.hidden_dim;
  I.Fp = round_up(I.F, 32);
  I.T = opt.max_tokens > 0 ? std::min<std::int64_t>(opt.max_tokens, c.seq_len) : c.seq_len;
  I.Tp = round_up(I.T, 16);
  I.qkv_n = I.Q + 2 * KV;
  ck(cudaStreamCreateWithFlags(&I.stream, cudaStreamNonBlocking), "stream");
  ck(cublasCreate(&I.blas), "cublasCreate");
  ck(cublasSetStream(I.blas, I.stream), "cublasSetStream");
  const DType dt = opt.dtype;
  auto tensor = [&](const std::string& name, std::vector<std::int64_t> shape) -> const std::vector<float>& {
    auto it = ck_in.tensors.find(name);
    if (it == ck_in.tensors.end()) throw std::invalid_argument("llama: model has no tensor '" + name + "'");
    if (it->second.shape != shape) throw std::invalid_argument("llama: tensor '" + name + "' has an unexpected shape");
    return it->second.data;
  };
  // Rows of several (out × in) weights stacked into one 16-bit matrix; `rows_pad` pads each
  // part with zero rows, `cols_pad` pads the columns with zeros.
  auto stack = [&](const std::vector<std::pair<const std::vector<float>*, std::int64_t>>& parts, std::int64_t cols,
                   std::int64_t rows_pad, std::int64_t cols_pad) {
    std::vector<std::uint16_t> w;
    const std::uint16_t zero = to_bits(0.0f, dt);
    for (auto [data, rows] : parts) {
      const std::int64_t rp = rows_pad ? rows_pad : rows;
      for (std::int64_t r = 0; r < rp; ++r)
        for (std::int64_t j = 0; j < cols_pad; ++j)
          w.push_back(r < rows && j < cols ? to_bits((*data)[r * cols + j], dt) : zero);
    }
    return w;
  };
  for (std::int64_t l = 0; l < L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const auto& wq = tensor(p + "self_attn.q_proj.weight", {I.Q, D});
    const auto& wk = tensor(p + "self_attn.k_proj.weight", {KV, D});
    const auto& wv = tensor(p + "self_attn.v_proj.weight", {KV, D});
    const auto& wo = tensor(p + "self_attn.o_proj.weight", {D, I.Q});
    const auto& w1 = tensor(p + "mlp.gate_proj.weight", {I.F, D});
    const auto& w2 = tensor(p + "mlp.down_proj.weight", {D, I.F});
    const auto& w3 = tensor(p + "mlp.up_proj.weight", {I.F, D});
    auto qkv = stack({{&wq, I.Q}, {&wk, KV}, {&wv, KV}}, D, 0, D);
    I.linears.emplace_back(p + "self_attn.qkv_proj", qkv.data(), I.qkv_n, D, dt, opt.mode);
    auto o = stack({{&wo, D}}, I.Q, 0, I.Qp);
    I.linears.emplace_back(p + "self_attn.o_proj", o.data(), D, I.Qp, dt, opt.mode);
    auto gu = stack({{&w1, I.F}, {&w3, I.F}}, D, I.Fp, D);
    I.linears.emplace_back(p + "mlp.gate_up_proj", gu.data(), 2 * I.Fp, D, dt, opt.mode);
    auto down = stack({{&w2, D}}, I.F, 0, I.Fp);
    I.linears.emplace_back(p + "mlp.down_proj", down.data(), D, I.Fp, dt, opt.mode);
    I.attn_norm.push_back(I.upload_f32(tensor(p + "input_layernorm.weight", {D})));
    I.ffn_norm.push_back(I.upload_f32(tensor(p + "post_attention_layernorm.weight", {D})));
  }
  I.final_norm = I.upload_f32(tensor("model.norm.weight", {D}));
  const auto& emb = tensor("model.embed_tokens.weight", {V, D});
  {
    auto e16 = stack({{&emb, V}}, D, 0, D);
    if (c.shared_classifier) {
      I.classifier = std::make_unique<DenseLinear>(e16.data(), V, D, dt);
      I.embedding = const_cast<void*>(I.classifier->device_weight());
    } else {
      auto cls = stack({{&tensor("lm_head.weight", {V, D}), V}}, D, 0, D);
      I.classifier = std::make_unique<DenseLinear>(cls.data(), V, D, dt);
      I.embedding = I.alloc<void>(e16.size() * 2);
      ck(cudaMemcpy(I.embedding, e16.data(), e16.size() * 2, cudaMemcpyHostToDevice), "upload");
    }
  }
  // RoPE tables in double, as the CPU runtime computes them.
  std::vector<float> cs(c.seq_len * hs / 2), sn(c.seq_len * hs / 2);
  for (std::int64_t t = 0; t < c.seq_len; ++t)
    for (std::int64_t i = 0; i < hs / 2; ++i) {
      const double ang = double(t) * std::pow(double(rope_theta), -double(2 * i) / double(hs));
      cs[t * hs / 2 + i] = static_cast<float>(std::cos(ang));
      sn[t * hs / 2 + i] = static_cast<float>(std::sin(ang));
    }
  I.cos = I.upload_f32(cs);
  I.sin = I.upload_f32(sn);
  const std::int64_t S = c.seq_len, H = c.n_heads;
  I.x = I.alloc<float>(I.Tp * D * 4);
  I.xb = I.alloc<void>(I.Tp * D * 2);
  I.qkv = I.alloc<void>(I.Tp * I.qkv_n * 2);
  I.att = I.alloc<void>(I.Tp * I.Qp * 2);
  I.y = I.alloc<void>(I.Tp * D * 2);
  I.h13 = I.alloc<void>(I.Tp * 2 * I.Fp * 2);
  I.g = I.alloc<void>(I.Tp * I.Fp * 2);
  I.scores = I.alloc<float>(H * I.Tp * S * 4);
  I.probs = I.alloc<void>(H * I.Tp * S * 2);
  I.kcache = I.alloc<void>(L * KV * S * 2);
  I.vcache = I.alloc<void>(L * KV * S * 2);
  I.logits = I.alloc<float>(I.Tp * V * 4);
  I.nll = I.alloc<float>(I.Tp * 4);
  I.tokens = I.alloc<std::int32_t>(I.Tp * 4);
  I.targets = I.alloc<std::int32_t>(I.Tp * 4);
  ck(cudaMemset(I.xb, 0, I.Tp * D * 2), "memset");
  ck(cudaMemset(I.att, 0, I.Tp * I.Qp * 2), "memset");  // columns past Q stay zero
  ck(cudaMemset(I.g, 0, I.Tp * I.Fp * 2), "memset");
  // Pointer arrays of the attention GEMMs: head h reads kv head h / group.
  const std::int64_t group = H / c.n_kv_heads;
  for (std::int64_t l = 0; l < L; ++l) {
    std::vector<const void*> h(6 * H);
    for (std::int64_t hh = 0; hh < H; ++hh) {
      const std::int64_t kvh = hh / group;
      const std::int64_t cache_off = ((l * c.n_kv_heads + kvh) * S) * hs * 2;
      h[0 * H + hh] = static_cast<char*>(I.kcache) + cache_off;
      h[1 * H + hh] = static_cast<char*>(I.qkv) + hh * hs * 2;
      h[2 * H + hh] = reinterpret_cast<char*>(I.scores) + hh * I.Tp * S * 4;
      h[3 * H + hh] = static_cast<char*>(I.probs) + hh * I.Tp * S * 2;
      h[4 * H + hh] = static_cast<char*>(I.vcache) + cache_off;
      h[5 * H + hh] = static_cast<char*>(I.att) + hh * hs * 2;
    }
    auto* d = I.alloc<const void*>(h.size() * sizeof(void*));
    ck(cudaMemcpy(d, h.data(), h.size() * sizeof(void*), cudaMemcpyHostToDevice), "upload");
    I.ptrs.push_back(d);
  }
  ck(cudaDeviceSynchronize(), "model upload");
}

LlamaGpu::~LlamaGpu() {
  auto& I = *impl_;
  cudaStreamSynchronize(I.stream);
  I.linears.clear();
  I.classifier.reset();
  for (void* p : I.allocations) cudaFree(p);
  if (I.blas) cublasDestroy(I.blas);
  if (I.stream) cudaStreamDestroy(I.stream);
}

template <class Tt>
void LlamaGpu::Impl::run(const std::int32_t* host_tokens, std::int64_t n, std::int64_t pos) {
  const auto& c = cfg;
  const std::int64_t D = c.dim, KV = c.kv_dim(), hs = c.head_size(), H = c.n_heads, S = c.seq_len;
  const std::int64_t keys = pos + n;
  ck(cudaMemcpyAsync(tokens, host_tokens, n * 4, cudaMemcpyHostToDevice, stream), "tokens");
  embed_kernel<<<n, 256, 0, stream>>>(static_cast<const Tt*>(embedding), tokens, x, D);
  const cudaDataType t16 = opt.dtype == DType::F16 ? CUDA_R_16F : CUDA_R_16BF;
  const float scale = 1.0f / std::sqrt(float(hs)), one = 1.0f, zero = 0.0f;
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    Linear* lin = &linears[l * 4];
    rmsnorm_kernel<<<n, 256, 0, stream>>>(x, attn_norm[l], static_cast<Tt*>(xb), D, eps);
    lin[0].forward(xb, n, qkv, stream);
    Tt* kc = static_cast<Tt*>(kcache) + l * KV * S;
    Tt* vc = static_cast<Tt*>(vcache) + l * KV * S;
    rope_cache_kernel<<<n, 128, 0, stream>>>(static_cast<Tt*>(qkv), qkv_n, Q, KV, hs, pos, cos, sin, kc, vc, S);
    const void** P = ptrs[l];
    // Scores: Sᵀ_h (keys × n, ld S) = K_h (hs × keys, column-major)ᵀ · Qᵀ_h (hs × n, ld qkv_n).
    ck(cublasGemmBatchedEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, int(keys), int(n), int(hs), &scale, P + 0 * H, t16, int(hs),
                           P + 1 * H, t16, int(qkv_n), &zero, const_cast<void**>(P + 2 * H), CUDA_R_32F, int(S), int(H),
                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
       "attention scores");
    softmax_kernel<<<dim3(unsigned(n), unsigned(H)), 256, 0, stream>>>(scores, static_cast<Tt*>(probs), Tp, keys, S, pos);
    // Oᵀ_h (hs × n, ld Qp) = V_hᵀ (hs × keys) · P_hᵀ (keys × n, ld S).
    ck(cublasGemmBatchedEx(blas, CUBLAS_OP_N, CUBLAS_OP_N, int(hs), int(n), int(keys), &one, P + 4 * H, t16, int(hs),
                           P + 3 * H, t16, int(S), &zero, const_cast<void**>(P + 5 * H), t16, int(Qp), int(H),
                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
       "attention values");
    lin[1].forward(att, n, y, stream);
    residual_kernel<<<grid_for(n * D), 256, 0, stream>>>(x, static_cast<const Tt*>(y), n * D);
    rmsnorm_kernel<<<n, 256, 0, stream>>>(x, ffn_norm[l], static_cast<Tt*>(xb), D, eps);
    lin[2].forward(xb, n, h13, stream);
    swiglu_kernel<<<grid_for(n * Fp), 256, 0, stream>>>(static_cast<const Tt*>(h13), static_cast<Tt*>(g), n, Fp);
    lin[3].forward(g, n, y, stream);
    residual_kernel<<<grid_for(n * D), 256, 0, stream>>>(x, static_cast<const Tt*>(y), n * D);
  }
  rmsnorm_kernel<<<n, 256, 0, stream>>>(x, final_norm, static_cast<Tt*>(xb), D, eps);
  classifier->forward_f32(xb, n, logits, stream);
  ck(cudaGetLastError(), "forward");
}

void LlamaGpu::forward(const std::int32_t* tokens, std::int64_t n, std::int64_t pos) {
  auto& I = *impl_;
  if (n <= 0 || n > I.T) throw std::invalid_argument("llama: " + std::to_string(n) + " tokens; 1.." + std::to_string(I.T) + " per call");
  if (pos < 0 || pos + n > I.cfg.seq_len) throw std::invalid_argument("llama: positions past the context");
  for (std::int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= I.cfg.vocab_size) throw std::invalid_argument("llama: token outside the vocabulary");
  if (I.opt.dtype == DType::F16) I.run<__half>(tokens, n, pos);
  else I.run<__nv_bfloat16>(tokens, n, pos);
  I.last_n = n;
}

double LlamaGpu::nll(const std::int32_t* targets, std::int64_t n) {
  auto& I = *impl_;
  if (n > I.last_n) throw std::invalid_argument("llama: more targets than positions");
  ck(cudaMemcpyAsync(I.targets, targets, n * 4, cudaMemcpyHostToDevice, I.stream), "targets");
  nll_kernel<<<n, 256, 0, I.stream>>>(I.logits, I.targets, I.nll, I.cfg.vocab_size);
  std::vector<float> h(n);
  ck(cudaMemcpyAsync(h.data(), I.nll, n * 4, cudaMemcpyDeviceToHost, I.stream), "nll");
  ck(cudaStreamSynchronize(I.stream), "nll");
  double s = 0;
  for (float v : h) s += v;
  return s;
}

std::vector<float> LlamaGpu::logits(std::int64_t i) {
  auto& I = *impl_;
  std::vector<float> out(I.cfg.vocab_size);
  ck(cudaMemcpyAsync(out.data(), I.logits + i * I.cfg.vocab_size, out.size() * 4, cudaMemcpyDeviceToHost, I.stream),
     "logits");
  ck(cudaStreamSynchronize(I.stream), "logits");
  return out;
}

void LlamaGpu::synchronize() { ck(cudaStreamSynchronize(impl_->stream), "sync"); }
const llama2c::Config& LlamaGpu::config() const { return impl_->cfg; }
const std::vector<Linear>& LlamaGpu::linears() const { return impl_->linears; }
std::size_t LlamaGpu::weight_bytes() const {
  const auto& I = *impl_;
  std::size_t b = 0;
  for (const auto& l : I.linears) b += l.device_bytes();
  b += std::size_t(I.cfg.vocab_size) * I.cfg.dim * 2 * (I.cfg.shared_classifier ? 1 : 2);
  b += std::size_t(I.cfg.dim) * 4 * (2 * I.cfg.n_layers + 1);
  return b;
}

}  // namespace prunus::cuda
