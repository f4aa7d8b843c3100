// The CUDA backend against plain fp32 references on the host: every GEMM path (dense cuBLAS,
// 2:4 cuSPARSELt in both output orientations after its algorithm search, auto) on random 2:4
// weights and odd batch sizes; refusals of weights that are not 2:4; the LLaMA forward
// (prefill and token-by-token decode through the KV cache, dense / 2:4 / auto, fp16 and bf16)
// against a reference forward written out below; INT8 GEMMs (dense and 2:4) against exact
// host integer sums; FP8 E4M3 GEMMs (dense cuBLASLt and 2:4) against host sums of the decoded
// codes. Without a GPU it says so and exits 77
// (ctest: skipped).
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <unistd.h>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "prunus/cuda.h"

using namespace prunus;
using cuda::DType;

namespace {

int failures = 0;
void expect(bool ok, const std::string& what) {
  if (!ok) {
    std::printf("FAIL: %s\n", what.c_str());
    ++failures;
  }
}

void ck(cudaError_t e) {
  if (e != cudaSuccess) throw std::runtime_error(cudaGetErrorString(e));
}

// Random weight, two of every four along K kept.
std::vector<float> random_24(std::int64_t n, std::int64_t k, std::mt19937& rng) {
  std::normal_distribution<float> nd(0, 0.05f);
  std::vector<float> w(n * k);
  for (auto& v : w) v = nd(rng);
  for (std::int64_t g = 0; g < n * k; g += 4) {
    const int a = int(rng() % 4), b = (a + 1 + int(rng() % 3)) % 4;
    w[g + a] = w[g + b] = 0.0f;
  }
  return w;
}

std::vector<std::uint16_t> bits(const std::vector<float>& v, DType d) {
  std::vector<std::uint16_t> b(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) b[i] = cuda::to_bits(v[i], d);
  return b;
}
std::vector<float> rounded(const std::vector<float>& v, DType d) {
  std::vector<float> r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) r[i] = cuda::from_bits(cuda::to_bits(v[i], d), d);
  return r;
}

// Y[m × n] = X[m × k] · Wᵀ (W: n × k), accumulated in double: the reference of every GEMM here.
std::vector<float> host_linear(const std::vector<float>& x, const std::vector<float>& w, std::int64_t m, std::int64_t n,
                               std::int64_t k) {
  std::vector<float> y(m * n);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t o = 0; o < n; ++o) {
      double s = 0;
      for (std::int64_t j = 0; j < k; ++j) s += double(x[i * k + j]) * w[o * k + j];
      y[i * n + o] = float(s);
    }
  return y;
}

double rel_err(const std::vector<float>& got, const std::vector<float>& want) {
  double d = 0, r = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    d = std::max(d, double(std::fabs(got[i] - want[i])));
    r = std::max(r, double(std::fabs(want[i])));
    if (!std::isfinite(got[i])) return 1e30;
  }
  return r > 0 ? d / r : d;
}

void test_gemm(DType dt) {
  std::mt19937 rng(3);
  struct Shape {
    std::int64_t n, k;
  };
  const double tol = dt == DType::F16 ? 5e-3 : 2e-2;
  for (auto sh : {Shape{64, 64}, Shape{96, 128}, Shape{256, 512}, Shape{1024, 4096}, Shape{4096, 1024}})
    for (std::int64_t m : {1, 5, 16, 48, 256}) {
      const std::int64_t mp = (m + 15) / 16 * 16;
      auto w = rounded(random_24(sh.n, sh.k, rng), dt);
      std::normal_distribution<float> nd(0, 1);
      std::vector<float> x(mp * sh.k, 0.0f);
      for (std::int64_t i = 0; i < m * sh.k; ++i) x[i] = nd(rng);
      x = rounded(x, dt);
      const auto ref = host_linear(x, w, m, sh.n, sh.k);
      auto wb = bits(w, dt), xb = bits(x, dt);
      void *dx, *dy;
      ck(cudaMalloc(&dx, xb.size() * 2));
      ck(cudaMalloc(&dy, mp * sh.n * 2));
      ck(cudaMemcpy(dx, xb.data(), xb.size() * 2, cudaMemcpyHostToDevice));
      auto fetch = [&](bool transposed) {
        std::vector<std::uint16_t> yb(mp * sh.n);
        ck(cudaDeviceSynchronize());
        ck(cudaMemcpy(yb.data(), dy, yb.size() * 2, cudaMemcpyDeviceToHost));
        std::vector<float> y(m * sh.n);
        for (std::int64_t i = 0; i < m; ++i)
          for (std::int64_t o = 0; o < sh.n; ++o)
            y[i * sh.n + o] = cuda::from_bits(transposed ? yb[o * mp + i] : yb[i * sh.n + o], dt);
        return y;
      };
      const std::string what = std::string(cuda::dtype_name(dt)) + " " + std::to_string(sh.n) + "x" +
                               std::to_string(sh.k) + " M=" + std::to_string(m);
      // The timed algorithm search on a few cases (it costs seconds a case while CUDA loads the
      // kernels it tries); cuSPARSELt's default configuration elsewhere.
      const bool search = m == 48 && (sh.n == 256 || sh.n == 1024);
      setenv("PRUNUS_CSLT_SEARCH", search ? "1" : "0", 1);
      std::printf("gemm %s%s\n", what.c_str(), search ? " (search)" : "");
      cuda::DenseLinear dense(wb.data(), sh.n, sh.k, dt);
      dense.forward(dx, m, dy, nullptr);
      expect(rel_err(fetch(false), ref) < tol, "dense " + what);
      for (auto out : {cuda::Output::RowMajor, cuda::Output::Transposed}) {
        cuda::Sparse24Linear sp(wb.data(), sh.n, sh.k, dt, out);
        sp.forward(dx, mp, dy, nullptr);  // searches
        sp.forward(dx, mp, dy, nullptr);  // cached plan
        const auto info = sp.plan_info(mp);
        const double e = rel_err(fetch(out == cuda::Output::Transposed), ref);
        expect(e < tol, "2:4 " + what + (out == cuda::Output::Transposed ? " (Yt)" : "") + " rel err " + std::to_string(e));
        expect(info.layout >= 0 && info.configs_timed >= (search ? 3 : 1), "plan recorded for " + what);
        expect(sp.compressed_bytes() > 0 && sp.compressed_bytes() < std::size_t(sh.n * sh.k * 2),
               "compressed weight smaller than dense for " + what);
      }
      cuda::Linear autol("test", wb.data(), sh.n, sh.k, dt, cuda::GemmMode::Auto);
      autol.forward(dx, m, dy, nullptr);
      expect(rel_err(fetch(false), ref) < tol, "auto (first call) " + what);
      autol.forward(dx, m, dy, nullptr);
      expect(rel_err(fetch(false), ref) < tol, "auto " + what);
      cudaFree(dx);
      cudaFree(dy);
    }
}

// m×k values of dt (normal, rounded to dt).
std::vector<float> random_batch(std::int64_t m, std::int64_t k, DType dt, std::mt19937& rng) {
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> x(m * k);
  for (auto& v : x) v = nd(rng);
  return rounded(x, dt);
}

// Runs `layer` `times` times on the host batch x (m×k values of dt) and returns Y (m×n).
std::vector<float> run_on_gpu(cuda::Sparse24Linear& layer, const std::vector<float>& x, std::int64_t m, std::int64_t n,
                              DType dt, int times = 1) {
  auto xb = bits(x, dt);
  void *dx, *dy;
  ck(cudaMalloc(&dx, xb.size() * 2));
  ck(cudaMalloc(&dy, m * n * 2));
  ck(cudaMemcpy(dx, xb.data(), xb.size() * 2, cudaMemcpyHostToDevice));
  for (int i = 0; i < times; ++i) layer.forward(dx, m, dy, nullptr);
  std::vector<std::uint16_t> yb(m * n);
  ck(cudaDeviceSynchronize());
  ck(cudaMemcpy(yb.data(), dy, yb.size() * 2, cudaMemcpyDeviceToHost));
  cudaFree(dx);
  cudaFree(dy);
  std::vector<float> y(m * n);
  for (std::int64_t i = 0; i < m * n; ++i) y[i] = cuda::from_bits(yb[i], dt);
  return y;
}

// One layer run at many batch sizes keeps one compressed weight per storage order at most (the
// copy is made once and shared by every M's plan), and every M's result is right.
// n×k weight; the batch sizes run in this order, searching every algorithm at `search_m`.
void test_one_copy_for_every_m(DType dt, std::int64_t n, std::int64_t k, std::vector<std::int64_t> ms,
                               std::int64_t search_m, int min_searched) {
  std::mt19937 rng(11);
  const double tol = dt == DType::F16 ? 5e-3 : 2e-2;
  auto w = rounded(random_24(n, k, rng), dt);
  auto wb = bits(w, dt);
  cuda::Sparse24Linear sp(wb.data(), n, k, dt, cuda::Output::RowMajor);
  const double one_copy = double(n * k * 2) * 9.0 / 16.0;  // half the values + 2 bits of metadata each
  // Each batch size's first call plans (search_m's searches every algorithm); plans run again
  // after later batch sizes' plans have rewritten the shared copy.
  for (std::int64_t m : ms) {
    setenv("PRUNUS_CSLT_SEARCH", m == search_m ? "1" : "0", 1);
    const auto x = random_batch(m, k, dt, rng);
    const auto y = run_on_gpu(sp, x, m, n, dt, 2);  // the second call runs the cached plan
    const auto ref = host_linear(x, w, m, n, k);
    const auto info = sp.plan_info(m);
    const std::string what = std::string(cuda::dtype_name(dt)) + " " + std::to_string(n) + "x" + std::to_string(k) +
                             " layer at M=" + std::to_string(m);
    std::printf("%s: layout %d alg %d, compressed bytes %zu (one copy ~%.0f)\n", what.c_str(), info.layout, info.alg,
                sp.compressed_bytes(), one_copy);
    expect(rel_err(y, ref) < tol, what + " rel err " + std::to_string(rel_err(y, ref)));
    expect(m != search_m || info.configs_timed >= min_searched,
           what + ": the search ran " + std::to_string(info.configs_timed) + " configurations");
    expect(double(sp.compressed_bytes()) <= 2.0 * one_copy * 1.02,
           what + ": " + std::to_string(sp.compressed_bytes()) + " compressed bytes, more than one copy per storage order");
  }
}

// A batch size within 2× of a searched one tries the searched winner and the defaults only;
// one 4× away, or any with PRUNUS_CSLT_SEARCH=full, searches every algorithm. Another layer of
// the same shape reuses a quick choice made in this process.
void test_quick_choice_near_a_search(DType dt) {
  std::mt19937 rng(17);
  const std::int64_t n = 256, k = 2048;
  const double tol = dt == DType::F16 ? 5e-3 : 2e-2;
  auto w = rounded(random_24(n, k, rng), dt);
  auto wb = bits(w, dt);
  cuda::Sparse24Linear sp(wb.data(), n, k, dt, cuda::Output::RowMajor);
  cuda::Sparse24Linear twin(wb.data(), n, k, dt, cuda::Output::RowMajor);  // a second block's layer
  std::vector<std::string> logged;
  cuda::set_log([&](const std::string& s) { logged.push_back(s); });
  enum Expect { Search, Quick, Reuse };
  struct Step {
    cuda::Sparse24Linear* layer;
    std::int64_t m;
    const char* mode;
    Expect expect;
  };
  for (const Step st : {Step{&sp, 64, "1", Search}, Step{&sp, 96, "1", Quick}, Step{&twin, 96, "1", Reuse},
                        Step{&sp, 48, "1", Quick}, Step{&sp, 256, "1", Search}, Step{&sp, 80, "full", Search}}) {
    setenv("PRUNUS_CSLT_SEARCH", st.mode, 1);
    logged.clear();
    const auto x = random_batch(st.m, k, dt, rng);
    const auto y = run_on_gpu(*st.layer, x, st.m, n, dt);
    const auto info = st.layer->plan_info(st.m);
    bool said_quick = false;
    for (const auto& l : logged) said_quick |= l.find("tried the winners") != std::string::npos;
    const std::string what = std::string(cuda::dtype_name(dt)) + " 256x2048 M=" + std::to_string(st.m) +
                             (st.layer == &twin ? " (second layer)" : "") + " (PRUNUS_CSLT_SEARCH=" + st.mode + ")";
    std::printf("%s: %d configurations timed, layout %d alg %d%s\n", what.c_str(), info.configs_timed, info.layout,
                info.alg, said_quick ? ", quick" : "");
    expect(rel_err(y, host_linear(x, w, st.m, n, k)) < tol, what + " result");
    expect(said_quick == (st.expect == Quick), what + (st.expect == Quick ? ": no quick choice logged" : ": chose quickly"));
    const bool counts_ok = st.expect == Search  ? info.configs_timed > 4
                           : st.expect == Quick ? info.configs_timed >= 2 && info.configs_timed <= 4
                                                : info.configs_timed == 0;
    expect(counts_ok, what + ": " + std::to_string(info.configs_timed) + " configurations timed");
  }
  cuda::set_log(nullptr);
}

// INT8 (int8 codes, int32 sums): exact, so the GPU must give the host's integers bit for bit,
// dense (cuBLAS) and 2:4 (cuSPARSELt, both orientations, after its search).
void test_int8() {
  std::mt19937 rng(21);
  std::uniform_int_distribution<int> code(-127, 127);
  for (auto shape : {std::pair<std::int64_t, std::int64_t>{256, 512}, {96, 1024}}) {
    const std::int64_t n = shape.first, k = shape.second;  // named: lambdas below capture them
    std::vector<std::int8_t> w(n * k);
    for (std::int64_t g = 0; g < n * k; g += 4) {
      const int a = int(rng() % 4), b = (a + 1 + int(rng() % 3)) % 4;
      for (int j = 0; j < 4; ++j) w[g + j] = j == a || j == b ? 0 : std::int8_t(code(rng));
    }
    expect(cuda::sparse24_unsupported(w.data(), n, k).empty(), "int8 weight is 2:4");
    cuda::DenseLinear dense(w.data(), n, k);
    cuda::Sparse24Linear row(w.data(), n, k), tr(w.data(), n, k, cuda::Output::Transposed);
    for (std::int64_t m : {16, 48, 256}) {
      std::vector<std::int8_t> x(m * k);
      for (auto& v : x) v = std::int8_t(code(rng));
      std::vector<std::int32_t> ref(m * n);
      for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t o = 0; o < n; ++o) {
          std::int64_t acc = 0;
          for (std::int64_t j = 0; j < k; ++j) acc += std::int64_t(x[i * k + j]) * w[o * k + j];
          ref[i * n + o] = std::int32_t(acc);
        }
      void *dx, *dy;
      ck(cudaMalloc(&dx, x.size()));
      ck(cudaMalloc(&dy, ref.size() * 4));
      ck(cudaMemcpy(dx, x.data(), x.size(), cudaMemcpyHostToDevice));
      const std::string what = "int8 " + std::to_string(n) + "x" + std::to_string(k) + " M=" + std::to_string(m);
      auto fetch = [&](bool transposed) {
        ck(cudaDeviceSynchronize());
        std::vector<std::int32_t> y(ref.size());
        ck(cudaMemcpy(y.data(), dy, y.size() * 4, cudaMemcpyDeviceToHost));
        if (!transposed) return y;
        std::vector<std::int32_t> t(y.size());
        for (std::int64_t i = 0; i < m; ++i)
          for (std::int64_t o = 0; o < n; ++o) t[i * n + o] = y[o * m + i];
        return t;
      };
      try {
        ck(cudaMemset(dy, 0xff, ref.size() * 4));
        dense.forward(dx, m, dy, nullptr);
        expect(fetch(false) == ref, "dense " + what + ": not the exact int32 sums");
        for (auto* sp : {&row, &tr}) {
          const bool t = sp == &tr;
          ck(cudaMemset(dy, 0xff, ref.size() * 4));
          sp->forward(dx, m, dy, nullptr);  // first call: search
          sp->forward(dx, m, dy, nullptr);  // the cached plan
          expect(fetch(t) == ref, "2:4 " + what + (t ? " (Yt)" : "") + ": not the exact int32 sums");
          // One compressed copy a storage order (row N×K, column K×N), each below the int8 bytes
          // (0.625× on 4096×11008 on H100); the search may keep both orders across M.
          const std::size_t held = sp->compressed_bytes();
          expect(held > 0 && held < std::size_t(2 * n * k), what + ": " + std::to_string(held) + " compressed bytes held");
          if (m == 16) expect(held < std::size_t(n * k), what + ": one compressed copy below the int8 bytes (" + std::to_string(held) + ")");
          const auto info = sp->plan_info(m);
          std::printf("%s%s: layout %d alg %d, %d configurations, %.1f us\n", what.c_str(), t ? " (Yt)" : "", info.layout,
                      info.alg, info.configs_timed, info.us);
        }
      } catch (const std::exception& e) {
        expect(false, what + ": " + e.what());
      }
      cudaFree(dx);
      cudaFree(dy);
    }
  }
}

// FP8 E4M3 (the issue's stretch): dense cuBLASLt and 2:4 cuSPARSELt against the host's sum of
// the decoded codes in double, to the 16-bit output's rounding; alpha scales the result; a
// group with three non-zeros (a -0 code is a zero) is refused.
void test_fp8() {
  std::mt19937 rng(31);
  std::normal_distribution<float> nd(0, 1);
  auto code = [&] { return __nv_fp8_e4m3(nd(rng)).__x; };
  auto value = [](std::uint8_t c) {
    __nv_fp8_e4m3 v;
    v.__x = c;
    return double(float(v));
  };
  for (auto shape : {std::pair<std::int64_t, std::int64_t>{256, 512}, {96, 1024}}) {
    const std::int64_t n = shape.first, k = shape.second;
    std::vector<std::uint8_t> w(n * k);
    for (std::int64_t g = 0; g < n * k; g += 4) {
      const int a = int(rng() % 4), b = (a + 1 + int(rng() % 3)) % 4;
      for (int j = 0; j < 4; ++j) w[g + j] = j == a ? 0 : j == b ? 0x80 : code();  // +0 and -0
    }
    expect(cuda::sparse24_unsupported(cuda::E4M3{w.data()}, n, k).empty(), "e4m3 weight (with -0 codes) is 2:4");
    for (DType out : {DType::BF16, DType::F16}) {
      const float alpha = out == DType::F16 ? 0.5f : 1.0f;
      cuda::DenseLinear dense(cuda::E4M3{w.data()}, n, k, out, alpha);
      cuda::Sparse24Linear sparse(cuda::E4M3{w.data()}, n, k, out, alpha);
      for (std::int64_t m : {16, 48, 256}) {
        std::vector<std::uint8_t> x(m * k);
        for (auto& v : x) v = code();
        std::vector<double> ref(m * n);
        double ss = 0;
        for (std::int64_t i = 0; i < m; ++i)
          for (std::int64_t o = 0; o < n; ++o) {
            double acc = 0;
            for (std::int64_t j = 0; j < k; ++j) acc += value(x[i * k + j]) * value(w[o * k + j]);
            ref[i * n + o] = alpha * acc;
            ss += acc * acc * alpha * alpha;
          }
        const double rms = std::sqrt(ss / double(ref.size()));
        void *dx, *dy;
        ck(cudaMalloc(&dx, x.size()));
        ck(cudaMalloc(&dy, ref.size() * 2));
        ck(cudaMemcpy(dx, x.data(), x.size(), cudaMemcpyHostToDevice));
        const std::string what = std::string("e4m3>") + cuda::dtype_name(out) + " " + std::to_string(n) + "x" +
                                 std::to_string(k) + " M=" + std::to_string(m);
        // Worst |y − ref| over max(|ref|, RMS): the 16-bit rounding is ≤ 2^-8 (bf16) of |y|.
        auto err = [&] {
          ck(cudaDeviceSynchronize());
          std::vector<std::uint16_t> y(ref.size());
          ck(cudaMemcpy(y.data(), dy, y.size() * 2, cudaMemcpyDeviceToHost));
          double e = 0;
          for (std::size_t i = 0; i < y.size(); ++i)
            e = std::max(e, std::abs(double(cuda::from_bits(y[i], out)) - ref[i]) / std::max(std::abs(ref[i]), rms));
          return e;
        };
        try {
          ck(cudaMemset(dy, 0xff, ref.size() * 2));
          dense.forward(dx, m, dy, nullptr);
          const double ed = err();
          expect(ed < 8e-3, "dense " + what + ": error " + std::to_string(ed));
          ck(cudaMemset(dy, 0xff, ref.size() * 2));
          sparse.forward(dx, m, dy, nullptr);  // first call: search
          sparse.forward(dx, m, dy, nullptr);
          const double es = err();
          expect(es < 8e-3, "2:4 " + what + ": error " + std::to_string(es));
          const auto info = sparse.plan_info(m);
          std::printf("%s: dense error %.5f, 2:4 error %.5f (layout %d alg %d, %d configurations)\n", what.c_str(), ed, es,
                      info.layout, info.alg, info.configs_timed);
        } catch (const std::exception& e) {
          expect(false, what + ": " + e.what());
        }
        cudaFree(dx);
        cudaFree(dy);
      }
    }
    w[1] = w[2] = w[3] = 0x38;  // 1.0: three non-zeros in the first group
    bool refused = false;
    try {
      cuda::Sparse24Linear bad(cuda::E4M3{w.data()}, n, k, DType::BF16);
    } catch (const std::invalid_argument& e) {
      refused = std::string(e.what()).find("row 0, columns 0..3") != std::string::npos;
    }
    expect(refused, "an e4m3 weight that is not 2:4 is refused, naming the group");
  }
}

// W8A8 on 2:4 (GemmMode::Int8Sparse24) against the same arithmetic on the host: weights per
// row, activations with one scale for the call, s = max|·| / 127, codes rounded half to even,
// exact int sums, y = Σ · (s_x · s_w) rounded to the 16-bit type.
void test_int8_linear(DType dt) {
  std::mt19937 rng(23);
  const std::int64_t n = 128, k = 256;
  const auto w = rounded(random_24(n, k, rng), dt);
  cuda::Linear lin("w8a8", bits(w, dt).data(), n, k, dt, cuda::GemmMode::Int8Sparse24);
  auto quantize_rows = [](const std::vector<float>& v, std::int64_t rows, std::int64_t cols, std::vector<int>& q,
                          std::vector<float>& sc) {
    q.assign(v.size(), 0);
    sc.assign(rows, 1.0f);
    for (std::int64_t r = 0; r < rows; ++r) {
      float amax = 0;
      for (std::int64_t j = 0; j < cols; ++j) amax = std::max(amax, std::fabs(v[r * cols + j]));
      sc[r] = amax > 0 ? amax / 127.0f : 1.0f;
      for (std::int64_t j = 0; j < cols; ++j)
        q[r * cols + j] = int(std::clamp(std::nearbyint(v[r * cols + j] / sc[r]), -127.0f, 127.0f));
    }
  };
  std::vector<int> wq, xq;
  std::vector<float> ws, xs;
  quantize_rows(w, n, k, wq, ws);
  for (std::int64_t m : {5, 16, 40, 80}) {  // 80 × 256 values: past the one-block quantizer
    const auto x = random_batch(m, k, dt, rng);
    quantize_rows(x, 1, m * k, xq, xs);  // one scale for the whole X
    std::vector<float> want(m * n);
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t o = 0; o < n; ++o) {
        std::int64_t acc = 0;
        for (std::int64_t j = 0; j < k; ++j) acc += std::int64_t(xq[i * k + j]) * wq[o * k + j];
        want[i * n + o] = cuda::from_bits(cuda::to_bits(float(acc) * (xs[0] * ws[o]), dt), dt);
      }
    const std::int64_t mp = (m + 15) / 16 * 16;
    void *dx, *dy;
    ck(cudaMalloc(&dx, mp * k * 2));
    ck(cudaMalloc(&dy, mp * n * 2));
    ck(cudaMemcpy(dx, bits(x, dt).data(), m * k * 2, cudaMemcpyHostToDevice));
    lin.forward(dx, m, dy, nullptr);
    ck(cudaDeviceSynchronize());
    std::vector<std::uint16_t> yb(m * n);
    ck(cudaMemcpy(yb.data(), dy, yb.size() * 2, cudaMemcpyDeviceToHost));
    std::vector<float> got(m * n);
    for (std::size_t i = 0; i < got.size(); ++i) got[i] = cuda::from_bits(yb[i], dt);
    const std::string what = std::string("int8-2:4 linear ") + cuda::dtype_name(dt) + " M=" + std::to_string(m);
    // Only a code that lands on a rounding tie could differ (float division on host and GPU is
    // the same IEEE operation); the output's 16-bit rounding is shared.
    expect(rel_err(got, want) < 1e-3, what + ": rel err " + std::to_string(rel_err(got, want)) + " against the host's W8A8");
    // And within quantization error of the unquantized product.
    const double eq = rel_err(got, host_linear(x, w, m, n, k));
    expect(eq < 3e-2, what + ": rel err " + std::to_string(eq) + " against the fp32 product");
    std::printf("%s: rel err %.2e against the host's W8A8, %.2e against fp32\n", what.c_str(), rel_err(got, want), eq);
    cudaFree(dx);
    cudaFree(dy);
  }
  expect(lin.sparse_at(16), "int8-2:4 runs on the sparse path");
}

// Two layers of one shape at one M, same recorded configuration, interleaved calls: each gives
// its own product. 1024×4096 fp16 at M = 32 (searched in full just before) chooses algorithm
// 36 on H100, one of the ids that fault on a compressed copy their plan did not write. Sharing
// one cuSPARSELt plan between such layers (to pay the ~0.2 s fp16 plan set-up once) was tried:
// on H100 the second layer's product came out wrong with alg 36, so every layer keeps its own plan.
void test_layers_share_plans() {
  std::mt19937 rng(29);
  const std::int64_t n = 1024, k = 4096, m = 32;
  const DType dt = DType::F16;
  const auto wa = rounded(random_24(n, k, rng), dt), wb = rounded(random_24(n, k, rng), dt);
  cuda::Sparse24Linear a(bits(wa, dt).data(), n, k, dt), b(bits(wb, dt).data(), n, k, dt);
  const auto x = random_batch(m, k, dt, rng);
  const auto ya1 = run_on_gpu(a, x, m, n, dt);
  const auto yb = run_on_gpu(b, x, m, n, dt);
  const auto ya2 = run_on_gpu(a, x, m, n, dt);
  const double tol = 1e-2;
  expect(rel_err(ya1, host_linear(x, wa, m, n, k)) < tol, "two layers of one shape: first layer");
  expect(rel_err(yb, host_linear(x, wb, m, n, k)) < tol, "two layers of one shape: second layer");
  expect(ya2 == ya1, "two layers of one shape: first layer again, after the second ran");
  const auto ia = a.plan_info(m), ib = b.plan_info(m);
  expect(ia.layout == ib.layout && ia.alg == ib.alg, "two layers of one shape: the recorded configuration for both");
  std::printf("two 1024x4096 layers at M=32: layout %d alg %d\n", ia.layout, ia.alg);
}

void test_refusals() {
  std::mt19937 rng(5);
  auto w = random_24(32, 64, rng);
  w[4 * 3 + 0] = w[4 * 3 + 1] = w[4 * 3 + 2] = 0.5f;  // row 0, columns 12..14: three non-zeros
  auto wb = bits(w, DType::F16);
  const auto why = cuda::sparse24_unsupported(wb.data(), 32, 64);
  expect(why.find("row 0, columns 12..15") != std::string::npos, "3 of 4 named: '" + why + "'");
  bool threw = false;
  try {
    cuda::Linear l("blocks.0.wq", wb.data(), 32, 64, DType::F16, cuda::GemmMode::Sparse24);
  } catch (const std::invalid_argument& e) {
    threw = std::string(e.what()).find("blocks.0.wq") != std::string::npos;
  }
  expect(threw, "2:4 mode refuses a weight that is not 2:4, naming the layer");
  std::vector<std::string> logged;
  cuda::set_log([&](const std::string& s) { logged.push_back(s); });
  cuda::Linear a("blocks.0.wk", wb.data(), 32, 64, DType::F16, cuda::GemmMode::Auto);
  cuda::set_log(nullptr);
  expect(!a.sparse_at(16) && logged.size() == 1 && logged[0].find("stays dense") != std::string::npos,
         "auto keeps a non-2:4 weight dense and says so");
  auto odd = bits(random_24(48, 64, rng), DType::F16);
  expect(cuda::sparse24_unsupported(odd.data(), 48, 64).find("multiple of 32") != std::string::npos,
         "48 rows refused");
}

// ---------------------------------------------------------------- LLaMA reference (fp32)
struct Ref {
  llama2c::Checkpoint ck;
  std::vector<float> forward(const std::vector<std::int32_t>& toks) const {  // logits [n × vocab]
    const auto& c = ck.config;
    const std::int64_t D = c.dim, KV = c.kv_dim(), hs = c.head_size(), F = c.hidden_dim, V = c.vocab_size;
    const std::int64_t Q = c.q_dim(), n = std::int64_t(toks.size()), H = c.n_heads, group = c.n_heads / c.n_kv_heads;
    auto T = [&](const std::string& s) -> const std::vector<float>& { return ck.tensors.at(s).data; };
    auto matmul = [&](const std::vector<float>& x, const std::vector<float>& w, std::int64_t out, std::int64_t in) {
      return host_linear(x, w, n, out, in);
    };
    auto norm = [&](const std::vector<float>& x, const std::vector<float>& w) {
      std::vector<float> y(x.size());
      for (std::int64_t i = 0; i < n; ++i) {
        double ss = 0;
        for (std::int64_t j = 0; j < D; ++j) ss += double(x[i * D + j]) * x[i * D + j];
        const float inv = float(1.0 / std::sqrt(ss / D + 1e-5));
        for (std::int64_t j = 0; j < D; ++j) y[i * D + j] = x[i * D + j] * inv * w[j];
      }
      return y;
    };
    auto rope = [&](std::vector<float>& v, std::int64_t width) {
      for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t e = 0; e < width; e += 2) {
          const std::int64_t j = (e % hs) / 2;
          const double ang = double(i) * std::pow(10000.0, -double(2 * j) / double(hs));
          const float co = float(std::cos(ang)), si = float(std::sin(ang));
          const float a = v[i * width + e], b = v[i * width + e + 1];
          v[i * width + e] = a * co - b * si;
          v[i * width + e + 1] = a * si + b * co;
        }
    };
    std::vector<float> x(n * D);
    for (std::int64_t i = 0; i < n; ++i)
      std::copy_n(&T("model.embed_tokens.weight")[toks[i] * D], D, &x[i * D]);
    for (std::int64_t l = 0; l < c.n_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      auto xb = norm(x, T(p + "input_layernorm.weight"));
      auto q = matmul(xb, T(p + "self_attn.q_proj.weight"), Q, D);
      auto k = matmul(xb, T(p + "self_attn.k_proj.weight"), KV, D);
      auto v = matmul(xb, T(p + "self_attn.v_proj.weight"), KV, D);
      rope(q, Q);
      rope(k, KV);
      std::vector<float> att(n * Q);
      for (std::int64_t h = 0; h < H; ++h)
        for (std::int64_t i = 0; i < n; ++i) {
          std::vector<double> s(i + 1);
          double mx = -1e300;
          for (std::int64_t j = 0; j <= i; ++j) {
            double d = 0;
            for (std::int64_t e = 0; e < hs; ++e) d += double(q[i * Q + h * hs + e]) * k[j * KV + (h / group) * hs + e];
            s[j] = d / std::sqrt(double(hs));
            mx = std::max(mx, s[j]);
          }
          double sum = 0;
          for (auto& e : s) sum += e = std::exp(e - mx);
          for (std::int64_t e = 0; e < hs; ++e) {
            double o = 0;
            for (std::int64_t j = 0; j <= i; ++j) o += s[j] / sum * v[j * KV + (h / group) * hs + e];
            att[i * Q + h * hs + e] = float(o);
          }
        }
      auto o = matmul(att, T(p + "self_attn.o_proj.weight"), D, Q);
      for (std::int64_t e = 0; e < n * D; ++e) x[e] += o[e];
      xb = norm(x, T(p + "post_attention_layernorm.weight"));
      auto g = matmul(xb, T(p + "mlp.gate_proj.weight"), F, D);
      auto u = matmul(xb, T(p + "mlp.up_proj.weight"), F, D);
      for (std::int64_t e = 0; e < n * F; ++e) g[e] = g[e] / (1.0f + std::exp(-g[e])) * u[e];
      auto dn = matmul(g, T(p + "mlp.down_proj.weight"), D, F);
      for (std::int64_t e = 0; e < n * D; ++e) x[e] += dn[e];
    }
    auto xf = norm(x, T("model.norm.weight"));
    return matmul(xf, T("model.embed_tokens.weight"), V, D);
  }
};

// stories260K's shapes: dim 64, hidden 172 (padded to 192 on the GPU), 8 heads, 4 kv heads;
// with heads_pruned, one KV group of the four removed as `prunus shrink --heads 0.25` does
// (6 heads of size 8, 3 kv heads: q 48 wide, o_proj reading 48 columns, padded to 64).
void test_llama(bool heads_pruned) {
  setenv("PRUNUS_CSLT_SEARCH", "0", 1);  // correctness here; the search is covered above
  std::mt19937 rng(11);
  Ref ref;
  auto& ck = ref.ck;
  ck.config = {64, 172, 2, 8, 4, 96, 64, true};
  if (heads_pruned) ck.config = {64, 172, 2, 6, 3, 96, 64, true, 8};
  const std::int64_t D = 64, F = 172, KV = ck.config.kv_dim(), Q = ck.config.q_dim(), V = 96;
  std::normal_distribution<float> nd(0, 0.3f);
  auto dense = [&](std::int64_t r, std::int64_t c) {
    llama2c::Tensor t{{r, c}, std::vector<float>(r * c)};
    for (auto& v : t.data) v = nd(rng);
    return t;
  };
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    auto lin = [&](std::int64_t r, std::int64_t c) {
      auto w = random_24(r, c, rng);
      for (auto& v : w) v *= 4.0f;
      return llama2c::Tensor{{r, c}, w};
    };
    ck.tensors[p + "self_attn.q_proj.weight"] = lin(Q, D);
    ck.tensors[p + "self_attn.k_proj.weight"] = lin(KV, D);
    ck.tensors[p + "self_attn.v_proj.weight"] = lin(KV, D);
    ck.tensors[p + "self_attn.o_proj.weight"] = lin(D, Q);
    ck.tensors[p + "mlp.gate_proj.weight"] = lin(F, D);
    ck.tensors[p + "mlp.down_proj.weight"] = lin(D, F);
    ck.tensors[p + "mlp.up_proj.weight"] = lin(F, D);
    auto n1 = dense(1, D), n2 = dense(1, D);
    for (auto& v : n1.data) v = 1.0f + 0.1f * v;
    for (auto& v : n2.data) v = 1.0f + 0.1f * v;
    ck.tensors[p + "input_layernorm.weight"] = {{D}, n1.data};
    ck.tensors[p + "post_attention_layernorm.weight"] = {{D}, n2.data};
  }
  ck.tensors["model.norm.weight"] = {{D}, std::vector<float>(D, 1.0f)};
  ck.tensors["model.embed_tokens.weight"] = dense(V, D);
  std::vector<std::int32_t> toks(40);
  for (auto& t : toks) t = std::int32_t(rng() % V);
  const auto want = ref.forward(toks);
  for (DType dt : {DType::F16, DType::BF16})
    for (auto mode : {cuda::GemmMode::Dense, cuda::GemmMode::Sparse24, cuda::GemmMode::Auto, cuda::GemmMode::Int8Sparse24}) {
      const std::string what = std::string(heads_pruned ? "llama (heads pruned) " : "llama ") + cuda::dtype_name(dt) +
                               " " + cuda::gemm_mode_name(mode);
      // W8A8 adds its quantization error (per-token activations, per-row weights) to the 16-bit one.
      const double tol = mode == cuda::GemmMode::Int8Sparse24 ? 1e-1 : dt == DType::F16 ? 2e-2 : 6e-2;
      std::printf("%s\n", what.c_str());
      std::fflush(stdout);
      cuda::set_log([](const std::string&) {});
      cuda::LlamaGpu gpu(ck, {dt, mode, 40});
      gpu.forward(toks.data(), 40, 0);
      std::vector<float> got;
      for (int i = 0; i < 40; ++i) {
        auto lg = gpu.logits(i);
        got.insert(got.end(), lg.begin(), lg.end());
      }
      const double e = rel_err(got, want);
      expect(e < tol, what + " prefill logits vs reference: rel err " + std::to_string(e));
      // Token by token through the KV cache.
      std::vector<float> step;
      for (int i = 0; i < 40; ++i) {
        gpu.forward(&toks[i], 1, i);
        auto lg = gpu.logits(0);
        step.insert(step.end(), lg.begin(), lg.end());
      }
      const double es = rel_err(step, want);
      expect(es < tol, what + " decode logits vs reference: rel err " + std::to_string(es));
      // NLL of the prefill agrees with the reference's.
      gpu.forward(toks.data(), 40, 0);
      const double nll = gpu.nll(toks.data() + 1, 39);
      double nll_ref = 0;
      for (int i = 0; i < 39; ++i) {
        const float* r = &want[i * V];
        const double mx = *std::max_element(r, r + V);
        double s = 0;
        for (int j = 0; j < V; ++j) s += std::exp(r[j] - mx);
        nll_ref += std::log(s) + mx - r[toks[i + 1]];
      }
      expect(std::fabs(nll - nll_ref) / nll_ref < tol, what + " nll " + std::to_string(nll) + " vs " + std::to_string(nll_ref));
      int sparse = 0;
      for (const auto& l : gpu.linears()) sparse += l.sparse_at(40);
      if (mode == cuda::GemmMode::Sparse24 || mode == cuda::GemmMode::Int8Sparse24)
        expect(sparse == 8, what + ": every decoder linear runs 2:4");
      if (mode == cuda::GemmMode::Int8Sparse24) std::printf("%s: logits rel err %.4f (prefill) %.4f (decode)\n", what.c_str(), e, es);
      if (mode == cuda::GemmMode::Dense) expect(sparse == 0, what + ": no 2:4");
      cuda::set_log(nullptr);
    }
}

}  // namespace

int main() {
  int devices = 0;
  const auto st = cudaGetDeviceCount(&devices);
  if (st != cudaSuccess || devices == 0) {
    std::printf("SKIP: no CUDA device here (%s); the CUDA backend was compiled and linked only\n",
                st != cudaSuccess ? cudaGetErrorString(st) : "0 devices");
    return 77;
  }
  // A fresh tuning record, so that the searched cases really search.
  const std::string cache = "/tmp/prunus_cuda_test_tuning_" + std::to_string(getpid()) + ".txt";
  setenv("PRUNUS_CSLT_CACHE", cache.c_str(), 1);
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s (sm %d%d)\n", prop.name, prop.major, prop.minor);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  try {
    test_fp8();
    test_int8();
    test_int8_linear(DType::F16);
    test_int8_linear(DType::BF16);
    test_refusals();
    test_one_copy_for_every_m(DType::F16, 512, 1024, {16, 48, 256, 1024, 32, 16, 48}, 48, 3);
    test_one_copy_for_every_m(DType::BF16, 512, 1024, {16, 48, 256, 1024, 32, 16, 48}, 48, 3);
    // The shape whose fp16 Hopper kernels (algorithm ids 36+) faulted on a copy their own plan
    // had not written (cuSPARSELt 0.8.0): the search runs all of them. Batch sizes test_gemm
    // does not use (a recorded search would be reused there).
    setenv("PRUNUS_CSLT_SEARCH_S", "60", 1);  // every algorithm (106), not the first 3 s of them
    test_one_copy_for_every_m(DType::F16, 1024, 4096, {64, 32, 128, 64, 32}, 32, 60);
    unsetenv("PRUNUS_CSLT_SEARCH_S");
    test_layers_share_plans();
    test_quick_choice_near_a_search(DType::F16);
    test_quick_choice_near_a_search(DType::BF16);
    test_gemm(DType::F16);
    test_gemm(DType::BF16);
    test_llama(false);
    test_llama(true);
  } catch (const std::exception& e) {
    std::printf("FAIL: exception %s\n", e.what());
    return 1;
  }
  std::remove(cache.c_str());
  std::printf(failures ? "%d failure(s)\n" : "all CUDA backend checks passed\n", failures);
  return failures ? 1 : 0;
}
