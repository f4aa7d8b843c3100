// 2:4 sparse (cuSPARSELt, compressed once, plan + algorithm search cached per M) against dense
// cuBLAS on the same pruned weights, fp16 and bf16, one JSON line per case.
//   build-cuda/bench/prunus_cuda_bench [--quick]
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <random>
#include <vector>

#include "prunus/cuda.h"

using prunus::cuda::DType;

namespace {

void ck(cudaError_t e) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "CUDA error: %s\n", cudaGetErrorString(e));
    std::exit(1);
  }
}

std::uint16_t to_bits(float v, DType d) {
  std::uint16_t b;
  if (d == DType::F16) {
    __half h = __float2half(v);
    std::memcpy(&b, &h, 2);
  } else {
    __nv_bfloat16 h = __float2bfloat16(v);
    std::memcpy(&b, &h, 2);
  }
  return b;
}

float from_bits(std::uint16_t b, DType d) {
  if (d == DType::F16) {
    __half h;
    std::memcpy(&h, &b, 2);
    return __half2float(h);
  }
  __nv_bfloat16 h;
  std::memcpy(&h, &b, 2);
  return __bfloat162float(h);
}

template <class F>
double time_us(F&& f, cudaStream_t s) {
  for (int i = 0; i < 3; ++i) f();
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  int iters = 10;
  float ms = 0;
  for (;;) {  // grow until a run takes ≥ 50 ms
    cudaEventRecord(a, s);
    for (int i = 0; i < iters; ++i) f();
    cudaEventRecord(b, s);
    cudaEventSynchronize(b);
    cudaEventElapsedTime(&ms, a, b);
    if (ms >= 50 || iters >= 20000) break;
    iters *= 4;
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return 1000.0 * ms / iters;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const bool probe = argc > 1 && std::strcmp(argv[1], "--probe") == 0;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  cudaDeviceProp prop;
  ck(cudaGetDeviceProperties(&prop, 0));
  std::printf("{\"device\": \"%s\", \"sm\": %d%d}\n", prop.name, prop.major, prop.minor);
  struct Shape {
    std::int64_t k, n;
  };
  const std::vector<Shape> shapes = {{4096, 4096}, {11008, 4096}, {4096, 11008}};
  std::vector<std::int64_t> ms = {1, 16, 64, 256, 1024, 4096, 16384};
  if (quick || probe) ms = {16, 4096};
  cudaStream_t s;
  ck(cudaStreamCreate(&s));
  int failures = 0;
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0, 1);
  for (DType dt : {DType::F16, DType::BF16})
    for (auto sh : shapes) {
      // Random weights, 2 of every 4 along K kept (the larger two), as a 2:4 pruner leaves them.
      std::vector<std::uint16_t> w(sh.n * sh.k);
      for (std::int64_t r = 0; r < sh.n; ++r)
        for (std::int64_t g = 0; g < sh.k; g += 4) {
          float v[4];
          for (auto& x : v) x = nd(rng) * 0.02f;
          int lo1 = 0, lo2 = 1;
          if (std::fabs(v[lo2]) < std::fabs(v[lo1])) std::swap(lo1, lo2);
          for (int j = 2; j < 4; ++j) {
            if (std::fabs(v[j]) < std::fabs(v[lo1])) {
              lo2 = lo1;
              lo1 = j;
            } else if (std::fabs(v[j]) < std::fabs(v[lo2])) {
              lo2 = j;
            }
          }
          v[lo1] = v[lo2] = 0.0f;
          for (int j = 0; j < 4; ++j) w[r * sh.k + g + j] = to_bits(v[j], dt);
        }
      prunus::cuda::DenseLinear dense(w.data(), sh.n, sh.k, dt);
      prunus::cuda::Sparse24Linear sparse(w.data(), sh.n, sh.k, dt);
      for (std::int64_t m : ms) {
        const std::int64_t mp = (m + 15) / 16 * 16;  // cuSPARSELt wants M in multiples of 16
        std::vector<std::uint16_t> x(mp * sh.k, to_bits(0.0f, dt));
        for (std::int64_t i = 0; i < m * sh.k; ++i) x[i] = to_bits(nd(rng), dt);
        void *dx, *dyd, *dys;
        ck(cudaMalloc(&dx, x.size() * 2));
        ck(cudaMalloc(&dyd, mp * sh.n * 2));
        ck(cudaMalloc(&dys, mp * sh.n * 2));
        ck(cudaMemcpy(dx, x.data(), x.size() * 2, cudaMemcpyHostToDevice));
        const double td = time_us([&] { dense.forward(dx, m, dyd, s); }, s);
        try {
          sparse.forward(dx, mp, dys, s);  // first call: plan + algorithm search (not timed)
        } catch (const std::exception& e) {
          std::printf("{\"dtype\": \"%s\", \"k\": %lld, \"n\": %lld, \"m\": %lld, \"error\": \"%s\"}\n",
                      prunus::cuda::dtype_name(dt), (long long)sh.k, (long long)sh.n, (long long)m, e.what());
          std::fflush(stdout);
          cudaFree(dx);
          cudaFree(dyd);
          cudaFree(dys);
          if (probe) return 3;
          continue;
        }
        const double ts = time_us([&] { sparse.forward(dx, mp, dys, s); }, s);
        ck(cudaStreamSynchronize(s));
        // Agreement on the real rows.
        std::vector<std::uint16_t> yd(m * sh.n), ys(mp * sh.n);
        ck(cudaMemcpy(yd.data(), dyd, yd.size() * 2, cudaMemcpyDeviceToHost));
        ck(cudaMemcpy(ys.data(), dys, ys.size() * 2, cudaMemcpyDeviceToHost));
        double max_ref = 0, max_err = 0;
        const char* lay = std::getenv("PRUNUS_CSLT_LAYOUT");
        const bool transposed = lay && lay[0] == '2';  // Yᵀ: compared element by element below
        for (std::size_t i = 0; i < yd.size(); ++i) {
          const std::size_t row = i / sh.n, col = i % sh.n;
          const double a = from_bits(yd[i], dt);
          const double b = from_bits(transposed ? ys[col * mp + row] : ys[i], dt);
          max_ref = std::max(max_ref, std::fabs(a));
          max_err = std::max(max_err, std::fabs(a - b));
        }
        const double flops = 2.0 * double(m) * double(sh.n) * double(sh.k);
        std::printf(
            "{\"dtype\": \"%s\", \"k\": %lld, \"n\": %lld, \"m\": %lld, \"dense_us\": %.2f, \"sparse_us\": %.2f, "
            "\"speedup\": %.3f, \"dense_tflops\": %.1f, \"sparse_tflops_equiv\": %.1f, \"alg\": %d, \"split_k\": %d, "
            "\"rel_err\": %.2e}\n",
            prunus::cuda::dtype_name(dt), (long long)sh.k, (long long)sh.n, (long long)m, td, ts, td / ts,
            flops / td / 1e6, flops / ts / 1e6, sparse.algorithm(mp), sparse.split_k(mp), max_ref > 0 ? max_err / max_ref : 0.0);
        std::fflush(stdout);
        cudaFree(dx);
        cudaFree(dyd);
        cudaFree(dys);
        if (!(max_ref > 0 && max_err / max_ref < 2e-2)) {
          std::fprintf(stderr, "sparse result disagrees with dense (rel_err %.3g)\n", max_ref > 0 ? max_err / max_ref : -1.0);
          failures++;
        }
      }
    }
  return failures ? 2 : 0;
}
