// cuBLAS dense and cuSPARSELt 2:4 GEMM. Layouts follow PyTorch's cuSPARSELt path: the sparse
// weight is A (row-major N×K), X is B as column-major K×M (= row-major M×K), and D is
// column-major N×M (= row-major Y[M×N]).
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusparseLt.h>

#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "prunus/cuda.h"

namespace prunus::cuda {
namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}
void check(cusparseStatus_t s, const char* what) {
  if (s != CUSPARSE_STATUS_SUCCESS) throw std::runtime_error(std::string(what) + ": " + cusparseLtGetErrorString(s));
}
void check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) throw std::runtime_error(std::string(what) + ": cuBLAS status " + std::to_string(int(s)));
}

cudaDataType cuda_type(DType d) { return d == DType::F16 ? CUDA_R_16F : CUDA_R_16BF; }

cusparseLtHandle_t* lt_handle() {
  static cusparseLtHandle_t h;
  static bool ready = [] {
    check(cusparseLtInit(&h), "cusparseLtInit");
    return true;
  }();
  (void)ready;
  return &h;
}

cublasHandle_t blas_handle() {
  static cublasHandle_t h = [] {
    cublasHandle_t x;
    check(cublasCreate(&x), "cublasCreate");
    return x;
  }();
  return h;
}

bool is_zero(std::uint16_t bits) { return (bits & 0x7fff) == 0; }

// PRUNUS_CSLT_LAYOUT: 2 (default, PyTorch's orientation, measured fastest on H100) writes
// Yᵀ row-major [N×M]; 0 and 1 write row-major Y but ran ~1.5-3× slower.
// PRUNUS_CSLT_SEARCH=1 times every algorithm id (crashed inside cuSPARSELt 0.8.0).
int layout_choice() {
  const char* v = std::getenv("PRUNUS_CSLT_LAYOUT");
  return v ? std::atoi(v) : 2;
}
bool search_enabled() {
  const char* v = std::getenv("PRUNUS_CSLT_SEARCH");
  return v && v[0] == '1';  // off by default: the timed search crashes inside cuSPARSELt 0.8.0
}

}  // namespace

const char* dtype_name(DType d) { return d == DType::F16 ? "fp16" : "bf16"; }

struct Sparse24Linear::Impl {
  std::int64_t n, k;
  DType dtype;
  cusparseLtMatDescriptor_t a;  // the structured weight
  void* d_compressed = nullptr;
  std::size_t compressed_size = 0;
  struct Plan {
    cusparseLtMatDescriptor_t b, d;
    cusparseLtMatmulDescriptor_t mm;
    cusparseLtMatmulAlgSelection_t sel;
    cusparseLtMatmulPlan_t plan;
    void* workspace = nullptr;
    int alg = -1;
    int split_k = 1;
  };
  std::map<std::int64_t, Plan> plans;

  Plan& plan_for(std::int64_t m, const void* d_x, void* d_y, cudaStream_t stream) {
    auto it = plans.find(m);
    if (it != plans.end()) return it->second;
    // Built in place: the matmul descriptor keeps pointers to the B/D descriptors, so a Plan
    // must never be copied after init (std::map nodes do not move).
    Plan& p = plans[m];
    try {
      init_plan(p, m, d_x, d_y, stream);
    } catch (...) {
      plans.erase(m);
      throw;
    }
    return p;
  }

  // Once per shape: time every algorithm id × split-K setting on this GPU and keep the
  // fastest (cusparseLtMatmulSearch returned an internal error with the cuSPARSELt 0.8.0 that
  // PyTorch 2.11 ships, so the search is done here, as PyTorch's own search does).
  void search(Plan& p, const void* d_x, void* d_y, cudaStream_t stream) {
    auto* h = lt_handle();
    int max_id = 0;
    check(cusparseLtMatmulAlgGetAttribute(h, &p.sel, CUSPARSELT_MATMUL_ALG_CONFIG_MAX_ID, &max_id, sizeof max_id),
          "max alg id");
    const float alpha = 1.0f, beta = 0.0f;
    cudaEvent_t e0, e1;
    check(cudaEventCreate(&e0), "event");
    check(cudaEventCreate(&e1), "event");
    float best = 1e30f;
    int best_id = 0, best_split = 1;
    std::size_t ws_cap = 0;
    bool plan_valid = true;  // init_plan made one
    cudaFree(p.workspace);
    p.workspace = nullptr;
    auto try_config = [&](int id, int split) -> float {
      if (cusparseLtMatmulAlgSetAttribute(h, &p.sel, CUSPARSELT_MATMUL_ALG_CONFIG_ID, &id, sizeof id) != CUSPARSE_STATUS_SUCCESS)
        return 1e30f;
      if (split != 1 &&
          cusparseLtMatmulAlgSetAttribute(h, &p.sel, CUSPARSELT_MATMUL_SPLIT_K, &split, sizeof split) != CUSPARSE_STATUS_SUCCESS)
        return 1e30f;
      if (plan_valid) cusparseLtMatmulPlanDestroy(&p.plan);
      plan_valid = cusparseLtMatmulPlanInit(h, &p.plan, &p.mm, &p.sel) == CUSPARSE_STATUS_SUCCESS;
      if (!plan_valid) return 1e30f;
      std::size_t ws = 0;
      if (cusparseLtMatmulGetWorkspace(h, &p.plan, &ws) != CUSPARSE_STATUS_SUCCESS) return 1e30f;
      if (ws > ws_cap) {
        cudaFree(p.workspace);
        if (cudaMalloc(&p.workspace, ws) != cudaSuccess) return 1e30f;
        ws_cap = ws;
      }
      for (int i = 0; i < 2; ++i)
        if (cusparseLtMatmul(h, &p.plan, &alpha, d_compressed, d_x, &beta, d_y, d_y, p.workspace, &stream, 1) !=
            CUSPARSE_STATUS_SUCCESS)
          return 1e30f;
      cudaEventRecord(e0, stream);
      for (int i = 0; i < 5; ++i)
        cusparseLtMatmul(h, &p.plan, &alpha, d_compressed, d_x, &beta, d_y, d_y, p.workspace, &stream, 1);
      cudaEventRecord(e1, stream);
      if (cudaEventSynchronize(e1) != cudaSuccess) return 1e30f;
      float ms = 0;
      cudaEventElapsedTime(&ms, e0, e1);
      return ms;
    };
    // PRUNUS_CSLT_SPLITK=0 searches algorithm ids only.
    const char* sk = std::getenv("PRUNUS_CSLT_SPLITK");
    const std::vector<int> splits = sk && sk[0] == '0' ? std::vector<int>{1} : std::vector<int>{1, 2, 4};
    for (int id = 0; id <= max_id; ++id)
      for (int split : splits) {
        const float t = try_config(id, split);
        if (t < best) {
          best = t;
          best_id = id;
          best_split = split;
        }
      }
    cudaGetLastError();  // clear errors of configurations that do not apply
    if (best >= 1e30f) throw std::runtime_error("cuSPARSELt: no algorithm runs for this shape");
    check(cusparseLtMatmulAlgSetAttribute(h, &p.sel, CUSPARSELT_MATMUL_ALG_CONFIG_ID, &best_id, sizeof best_id), "alg");
    if (best_split != 1)
      check(cusparseLtMatmulAlgSetAttribute(h, &p.sel, CUSPARSELT_MATMUL_SPLIT_K, &best_split, sizeof best_split), "split-K");
    if (plan_valid) cusparseLtMatmulPlanDestroy(&p.plan);
    check(cusparseLtMatmulPlanInit(h, &p.plan, &p.mm, &p.sel), "plan");
    std::size_t ws = 0;
    check(cusparseLtMatmulGetWorkspace(h, &p.plan, &ws), "workspace size");
    if (ws > ws_cap) {
      cudaFree(p.workspace);
      check(cudaMalloc(&p.workspace, ws), "workspace");
    }
    p.split_k = best_split;
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
  }

  void init_plan(Plan& p, std::int64_t m, const void* d_x, void* d_y, cudaStream_t stream) {
    auto* h = lt_handle();
    const auto t = cuda_type(dtype);
    // B = X as column-major K×M (= row-major X[M×K]) except in layout 1, which reads X
    // row-major M×K transposed. D: column-major N×M (= row-major Y) in layouts 0 and 1,
    // row-major N×M (= Yᵀ) in layout 2, which is what PyTorch's cuSPARSELt call does.
    const int layout = layout_choice();
    cusparseOperation_t op_b = CUSPARSE_OPERATION_NON_TRANSPOSE;
    if (layout != 1) {
      check(cusparseLtDenseDescriptorInit(h, &p.b, k, m, k, 16, t, CUSPARSE_ORDER_COL), "B descriptor");
    } else {
      check(cusparseLtDenseDescriptorInit(h, &p.b, m, k, k, 16, t, CUSPARSE_ORDER_ROW), "B descriptor");
      op_b = CUSPARSE_OPERATION_TRANSPOSE;
    }
    if (layout == 2) check(cusparseLtDenseDescriptorInit(h, &p.d, n, m, m, 16, t, CUSPARSE_ORDER_ROW), "D descriptor");
    else check(cusparseLtDenseDescriptorInit(h, &p.d, n, m, n, 16, t, CUSPARSE_ORDER_COL), "D descriptor");
    check(cusparseLtMatmulDescriptorInit(h, &p.mm, CUSPARSE_OPERATION_NON_TRANSPOSE, op_b, &a, &p.b, &p.d, &p.d,
                                         CUSPARSE_COMPUTE_32F),
          "matmul descriptor");
    check(cusparseLtMatmulAlgSelectionInit(h, &p.sel, &p.mm, CUSPARSELT_MATMUL_ALG_DEFAULT), "algorithm selection");
    check(cusparseLtMatmulPlanInit(h, &p.plan, &p.mm, &p.sel), "plan");
    std::size_t ws = 0;
    check(cusparseLtMatmulGetWorkspace(h, &p.plan, &ws), "workspace size");
    if (ws) check(cudaMalloc(&p.workspace, ws), "workspace");
    if (search_enabled()) search(p, d_x, d_y, stream);
    check(cusparseLtMatmulAlgGetAttribute(h, &p.sel, CUSPARSELT_MATMUL_ALG_CONFIG_ID, &p.alg, sizeof p.alg), "alg id");
  }
};

Sparse24Linear::Sparse24Linear(const std::uint16_t* w, std::int64_t n, std::int64_t k, DType dtype)
    : impl_(std::make_unique<Impl>()) {
  if (k % 4 != 0) throw std::invalid_argument("2:4 weights need K divisible by 4");
  for (std::int64_t r = 0; r < n; ++r)
    for (std::int64_t g = 0; g < k; g += 4) {
      int nz = 0;
      for (int j = 0; j < 4; ++j) nz += !is_zero(w[r * k + g + j]);
      if (nz > 2) throw std::invalid_argument("weight is not 2:4: row " + std::to_string(r) + ", columns " +
                                              std::to_string(g) + ".." + std::to_string(g + 3));
    }
  auto& I = *impl_;
  I.n = n;
  I.k = k;
  I.dtype = dtype;
  auto* h = lt_handle();
  check(cusparseLtStructuredDescriptorInit(h, &I.a, n, k, k, 16, cuda_type(dtype), CUSPARSE_ORDER_ROW,
                                           CUSPARSELT_SPARSITY_50_PERCENT),
        "structured descriptor");
  void* d_dense = nullptr;
  check(cudaMalloc(&d_dense, n * k * 2), "weight");
  check(cudaMemcpy(d_dense, w, n * k * 2, cudaMemcpyHostToDevice), "weight upload");
  std::size_t buf_size = 0;
  check(cusparseLtSpMMACompressedSize2(h, &I.a, &I.compressed_size, &buf_size), "compressed size");
  void* d_buf = nullptr;
  check(cudaMalloc(&I.d_compressed, I.compressed_size), "compressed weight");
  if (buf_size) check(cudaMalloc(&d_buf, buf_size), "compression buffer");
  check(cusparseLtSpMMACompress2(h, &I.a, 1, CUSPARSE_OPERATION_NON_TRANSPOSE, d_dense, I.d_compressed, d_buf, nullptr),
        "compress");
  check(cudaDeviceSynchronize(), "compress");
  cudaFree(d_buf);
  cudaFree(d_dense);  // only the compressed weight stays on the GPU
}

Sparse24Linear::~Sparse24Linear() {
  for (auto& [m, p] : impl_->plans) {
    cusparseLtMatmulPlanDestroy(&p.plan);
    cusparseLtMatDescriptorDestroy(&p.b);
    cusparseLtMatDescriptorDestroy(&p.d);
    cudaFree(p.workspace);
  }
  cusparseLtMatDescriptorDestroy(&impl_->a);
  cudaFree(impl_->d_compressed);
}

void Sparse24Linear::forward(const void* d_x, std::int64_t m, void* d_y, void* stream) {
  if (m % 16 != 0) throw std::invalid_argument("Sparse24Linear: M must be a multiple of 16 (pad the batch)");
  auto s = static_cast<cudaStream_t>(stream);
  auto& p = impl_->plan_for(m, d_x, d_y, s);
  const float alpha = 1.0f, beta = 0.0f;
  check(cusparseLtMatmul(lt_handle(), &p.plan, &alpha, impl_->d_compressed, d_x, &beta, d_y, d_y, p.workspace, &s, 1),
        "cusparseLtMatmul");
}

int Sparse24Linear::algorithm(std::int64_t m) const {
  auto it = impl_->plans.find(m);
  return it == impl_->plans.end() ? -1 : it->second.alg;
}
int Sparse24Linear::split_k(std::int64_t m) const {
  auto it = impl_->plans.find(m);
  return it == impl_->plans.end() ? -1 : it->second.split_k;
}
std::size_t Sparse24Linear::compressed_bytes() const { return impl_->compressed_size; }

struct DenseLinear::Impl {
  std::int64_t n, k;
  DType dtype;
  void* d_w = nullptr;
};

DenseLinear::DenseLinear(const std::uint16_t* w, std::int64_t n, std::int64_t k, DType dtype)
    : impl_(std::make_unique<Impl>()) {
  impl_->n = n;
  impl_->k = k;
  impl_->dtype = dtype;
  check(cudaMalloc(&impl_->d_w, n * k * 2), "weight");
  check(cudaMemcpy(impl_->d_w, w, n * k * 2, cudaMemcpyHostToDevice), "weight upload");
}
DenseLinear::~DenseLinear() { cudaFree(impl_->d_w); }
const void* DenseLinear::device_weight() const { return impl_->d_w; }

void DenseLinear::forward(const void* d_x, std::int64_t m, void* d_y, void* stream) {
  auto h = blas_handle();
  check(cublasSetStream(h, static_cast<cudaStream_t>(stream)), "cublasSetStream");
  const float alpha = 1.0f, beta = 0.0f;
  const auto t = cuda_type(impl_->dtype);
  const int n = static_cast<int>(impl_->n), k = static_cast<int>(impl_->k), mm = static_cast<int>(m);
  // Column-major view: Y^T[N×M] = W[N×K] (stored K×N col-major, so op T) · X^T[K×M].
  check(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, mm, k, &alpha, impl_->d_w, t, k, d_x, t, k, &beta, d_y, t, n,
                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "cublasGemmEx");
}

}  // namespace prunus::cuda
