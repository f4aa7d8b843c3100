// Sparse kernels against the best dense paths, cold cache, in one run.
//
// Each timed call reads its weights from memory, as in a model whose layers do not stay in
// cache: the benchmark rotates through enough copies of the matrix to exceed 4× the
// last-level cache (dense and sparse alike). A shape's dense baselines run first, for every
// (batch, threads); every sparse row reports `vs_dense` = best dense time / its time.
//
//   build/bench/prunus_kernel_bench                       4096×4096, batch 1 and 64, 1 and 2 threads
//   build/bench/prunus_kernel_bench --full                all shapes and batches of the issue
//   build/bench/prunus_kernel_bench --hot                 weights stay in cache (labelled "hot")
//   build/bench/prunus_kernel_bench --lenet               LeNet-300-100's 300×784 and 100×300, hot
//   build/bench/prunus_kernel_bench --benchmark_filter='openblas|int8|prunus_(bitmask|nm|csr)/(90|2:4)'
//                                                          the INT8 rows with their fp32 and dense baselines
//   (any Google Benchmark flag works too, e.g. --benchmark_format=json)
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <Eigen/SparseCore>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>

#include "prunus/kernels.h"
#include "torch_pch.h"

namespace k = prunus::kernels;

namespace {

constexpr std::size_t kColdBytes = 128ull << 20;  // > 4 × the 32 MiB L3 of the development machine
bool g_hot = false;

struct Problem {
  std::int64_t rows, cols;
  std::vector<float> dense;  // the pruned matrix
  std::string pattern;       // "50%", "2:4", "4x4 80%"
};

// Random weights pruned to the pattern (magnitude-free: position is random, values uniform).
Problem make_problem(std::int64_t rows, std::int64_t cols, const std::string& kind, double sparsity, int a, int b) {
  Problem p{rows, cols, std::vector<float>(static_cast<std::size_t>(rows * cols)), ""};
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> val(-1, 1);
  for (auto& v : p.dense) v = val(rng);
  if (kind == "unstructured") {
    std::bernoulli_distribution drop(sparsity);
    for (auto& v : p.dense)
      if (drop(rng)) v = 0.0f;
    p.pattern = std::to_string(int(sparsity * 100 + 0.5)) + "%";
  } else if (kind == "nm") {
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t g = 0; g < cols; g += b) {
        std::vector<int> order(b);
        for (int j = 0; j < b; ++j) order[j] = j;
        std::shuffle(order.begin(), order.end(), rng);
        for (int j = a; j < b; ++j) p.dense[r * cols + g + order[j]] = 0.0f;
      }
    p.pattern = std::to_string(a) + ":" + std::to_string(b);
  } else if (kind == "block") {
    std::bernoulli_distribution drop(sparsity);
    for (std::int64_t R = 0; R < rows; R += a)
      for (std::int64_t C = 0; C < cols; C += b)
        if (drop(rng))
          for (std::int64_t i = R; i < std::min(rows, R + a); ++i)
            for (std::int64_t j = C; j < std::min(cols, C + b); ++j) p.dense[i * cols + j] = 0.0f;
    p.pattern = std::to_string(a) + "x" + std::to_string(b) + " " + std::to_string(int(sparsity * 100 + 0.5)) + "%";
  }
  return p;
}

template <class T>
std::size_t copies_for(std::size_t bytes) {
  if (g_hot) return 1;
  return std::max<std::size_t>(1, (kColdBytes + bytes - 1) / std::max<std::size_t>(bytes, 1));
}

// Best dense time per (shape, batch, threads), filled by the baselines that run first.
std::map<std::string, double> g_best_dense;

std::string key(std::int64_t rows, std::int64_t cols, std::int64_t batch, int threads) {
  return std::to_string(rows) + "x" + std::to_string(cols) + "/b" + std::to_string(batch) + "/t" + std::to_string(threads);
}

// Bandwidth from the weight bytes each call reads; FLOP/s counts the stored non-zeros only.
void finish(benchmark::State& state, double weight_bytes, std::int64_t nnz, std::int64_t batch) {
  state.SetBytesProcessed(static_cast<std::int64_t>(weight_bytes) * state.iterations());
  state.counters["FLOP/s"] =
      benchmark::Counter(2.0 * double(nnz) * double(batch), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["MB"] = weight_bytes / 1e6;
}

using Timed = std::function<void(std::size_t copy)>;

// Runs `call` over rotating copies, records time per call; for dense baselines keeps the best.
void run_timed(benchmark::State& state, std::size_t copies, const Timed& call, const std::string& k_, bool dense,
               double weight_bytes, std::int64_t nnz, std::int64_t batch) {
  std::size_t i = 0;
  call(0);  // warm-up (first-touch, thread pools)
  const auto start = std::chrono::steady_clock::now();
  std::int64_t calls = 0;
  for (auto _ : state) {
    call(i);
    i = (i + 1) % copies;
    ++calls;
  }
  const double per_call = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / double(calls);
  if (dense) {
    auto it = g_best_dense.find(k_);
    if (it == g_best_dense.end() || per_call < it->second) g_best_dense[k_] = per_call;
  } else if (auto it = g_best_dense.find(k_); it != g_best_dense.end()) {
    state.counters["vs_dense"] = it->second / per_call;
  }
  finish(state, weight_bytes, nnz, batch);
}

// One slot of built weights (the rotating copies of one shape, pattern and format): the
// benchmarks of a (pattern, format) run one after another across batches and threads and
// share it; the next one frees it before building its own.
struct Slot {
  std::string key;
  std::shared_ptr<void> data;
};
Slot g_slot;

template <class T, class Make>
std::shared_ptr<T> cached(const std::string& key, Make make) {
  if (g_slot.key == key) return std::static_pointer_cast<T>(g_slot.data);
  g_slot = {};
  auto built = std::make_shared<T>(make());
  g_slot = {key, built};
  return built;
}

struct Case {
  std::int64_t rows, cols;
  std::vector<std::int64_t> batches;
};

void register_shape(const Case& c, const std::vector<int>& threads_list) {
  const std::int64_t rows = c.rows, cols = c.cols;
  // Problems for this shape, built once.
  auto problems = std::make_shared<std::vector<Problem>>();
  for (double s : {0.5, 0.7, 0.8, 0.9, 0.95}) problems->push_back(make_problem(rows, cols, "unstructured", s, 0, 0));
  if (cols % 4 == 0) problems->push_back(make_problem(rows, cols, "nm", 0, 2, 4));
  if (cols % 8 == 0) problems->push_back(make_problem(rows, cols, "nm", 0, 4, 8));  // not LeNet's 300
  problems->push_back(make_problem(rows, cols, "block", 0.8, 4, 4));
  problems->push_back(make_problem(rows, cols, "block", 0.9, 4, 4));
  // Same allocator as the runtime and the sparse formats (64-byte lines, huge pages past 2 MiB),
  // so dense and sparse read their weights through the same kind of pages.
  auto dense_w = std::make_shared<std::vector<k::AlignedVector<float>>>();
  {
    std::mt19937 rng(7);
    std::vector<float> w(static_cast<std::size_t>(rows * cols));
    std::uniform_real_distribution<float> val(-1, 1);
    for (auto& v : w) v = val(rng);
    const std::size_t n = copies_for<float>(w.size() * 4);
    for (std::size_t i = 0; i < n; ++i) dense_w->emplace_back(w.begin(), w.end());
  }
  const std::string shape = std::to_string(rows) + "x" + std::to_string(cols);
  // What one (batch, threads) cell shares: its input, output, key and name suffix.
  struct Cell {
    int threads;
    std::int64_t batch;
    std::string k_, suffix;
    // 64-byte aligned, as a caller's activations (and libtorch's tensors) would be: the
    // feature-major rows read Xᵀ in place, where a misaligned buffer splits vector loads.
    std::shared_ptr<k::AlignedVector<float>> x, y;
  };
  std::vector<Cell> cells;
  for (int threads : threads_list)
    for (std::int64_t batch : c.batches)
      cells.push_back({threads, batch, key(rows, cols, batch, threads),
                       "/" + shape + "/batch:" + std::to_string(batch) + "/threads:" + std::to_string(threads) +
                           (g_hot ? "/hot" : ""),
                       std::make_shared<k::AlignedVector<float>>(static_cast<std::size_t>(batch * cols), 0.5f),
                       std::make_shared<k::AlignedVector<float>>(static_cast<std::size_t>(batch * rows))});
  const double dense_bytes = double(rows * cols * 4);
  // Baselines first (every sparse row reports its ratio to the best of them).
  for (const Cell& cell : cells) {
    const int threads = cell.threads;
    const std::int64_t batch = cell.batch;
    const std::string k_ = cell.k_, suffix = cell.suffix;
    const auto x = cell.x, y = cell.y;
    benchmark::RegisterBenchmark(("dense_openblas" + suffix).c_str(), [=](benchmark::State& st) {
      openblas_set_num_threads(threads);
      run_timed(st, dense_w->size(), [&](std::size_t i) {
        k::matmul_dense((*dense_w)[i].data(), rows, cols, x->data(), batch, y->data(), {k::best_isa(), threads});
      }, k_, true, dense_bytes, rows * cols, batch);
    });
    benchmark::RegisterBenchmark(("dense_libtorch" + suffix).c_str(), [=](benchmark::State& st) {
      torch::set_num_threads(threads);
      std::vector<torch::Tensor> ws;
      for (auto& w : *dense_w) ws.push_back(torch::from_blob(w.data(), {rows, cols}));
      auto xt = torch::from_blob(x->data(), {batch, cols});
      run_timed(st, ws.size(), [&](std::size_t i) { benchmark::DoNotOptimize(torch::linear(xt, ws[i])); }, k_, true,
                dense_bytes, rows * cols, batch);
    });
  }
  // Then each (pattern, format) across every cell in a row, so its rotating copies are built
  // once (cached()) rather than once a cell: on 11008×4096 building them took ~10 s a benchmark.
  for (std::size_t pi = 0; pi < problems->size(); ++pi) {
    const Problem& p = (*problems)[pi];  // registered lambdas hold `problems` alive
    std::int64_t nnz = 0;
    for (float v : p.dense) nnz += v != 0.0f;
    auto reg = [&](const std::string& name, auto make) {
      for (const Cell& cell : cells)
        benchmark::RegisterBenchmark((name + "/" + p.pattern + cell.suffix).c_str(),
                                     [=, keep = problems](benchmark::State& st) { make(st, cell); });
    };
    const std::string slot = shape + "/" + p.pattern + "/";
    auto prunus_format = [&](const std::string& fname, auto convert) {
      reg("prunus_" + fname, [=, &p](benchmark::State& st, const Cell& cell) {
        using F = decltype(convert(p));
        auto ws = cached<std::vector<F>>(slot + fname, [&] {
          auto one = convert(p);
          return std::vector<F>(copies_for<F>(one.bytes()), one);
        });
        run_timed(st, ws->size(), [&](std::size_t i) {
          k::matmul((*ws)[i], cell.x->data(), cell.batch, cell.y->data(), {k::best_isa(), cell.threads});
        }, cell.k_, false, double(ws->front().bytes()), nnz, cell.batch);
      });
      // The same product feature-major (Xᵀ in, Yᵀ out): the layouts libtorch's sparse CSR and
      // Eigen get below (their Xᵀ is made before the timing, their output is Yᵀ), so the
      // ratio to them compares like with like. Batch 1 is the same call in both layouts.
      if (fname == "sell" || fname.rfind("int8", 0) == 0) return;
      for (const Cell& cell : cells) {
        if (cell.batch == 1) continue;
        benchmark::RegisterBenchmark(("prunus_" + fname + "_fm/" + p.pattern + cell.suffix).c_str(),
                                     [=, &p, keep = problems](benchmark::State& st) {
          using F = decltype(convert(p));
          auto ws = cached<std::vector<F>>(slot + fname, [&] {
            auto one = convert(p);
            return std::vector<F>(copies_for<F>(one.bytes()), one);
          });
          k::Options opt{k::best_isa(), cell.threads};
          opt.layout = k::ActivationLayout::FeatureMajor;
          // cell.x holds one constant, so as Xᵀ [cols × batch] it is the same input.
          run_timed(st, ws->size(), [&](std::size_t i) { k::matmul((*ws)[i], cell.x->data(), cell.batch, cell.y->data(), opt); },
                    cell.k_, false, double(ws->front().bytes()), nnz, cell.batch);
        });
      }
    };
    const bool nm = p.pattern.find(':') != std::string::npos;
    const bool block = p.pattern.find('x') != std::string::npos;
    if (nm) {
      const int n = p.pattern[0] - '0', m = p.pattern[2] - '0';
      prunus_format("nm", [=](const Problem& q) { return k::to_nm(q.dense.data(), q.rows, q.cols, n, m); });
    } else if (block) {
      prunus_format("bsr4x4", [](const Problem& q) { return k::to_bsr(q.dense.data(), q.rows, q.cols, 4, 4); });
    }
    prunus_format("csr", [](const Problem& q) { return k::to_csr(q.dense.data(), q.rows, q.cols); });
    prunus_format("bitmask", [](const Problem& q) { return k::to_bitmask(q.dense.data(), q.rows, q.cols); });
    // SELL is for small layers that stay in cache (SparseLinear considers it up to 512 KiB).
    if (rows * cols <= (1 << 20))
      prunus_format("sell", [](const Problem& q) { return k::to_sell(q.dense.data(), q.rows, q.cols); });
    // INT8 weights (per-row scales) and per-token INT8 activations, int32 accumulation.
    if (nm) {
      const int n = p.pattern[0] - '0', m = p.pattern[2] - '0';
      prunus_format("int8_nm", [=](const Problem& q) { return k::quantize_nm(q.dense.data(), q.rows, q.cols, n, m); });
    }
    prunus_format("int8_bitmask", [](const Problem& q) { return k::quantize_bitmask(q.dense.data(), q.rows, q.cols); });
    if (!nm && !block) {  // Eigen on the unstructured patterns; libtorch's sparse CSR on every pattern below
      using Sp = Eigen::SparseMatrix<float, Eigen::RowMajor, int>;
      reg("eigen_sparse", [=, &p](benchmark::State& st, const Cell& cell) {
        Eigen::setNbThreads(cell.threads);
        const std::size_t bytes = std::size_t(nnz) * 8 + std::size_t(rows + 1) * 4;
        auto ws = cached<std::vector<Sp>>(slot + "eigen", [&] {
          Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> d(p.dense.data(), rows, cols);
          Sp one = d.sparseView();
          return std::vector<Sp>(copies_for<Sp>(bytes), one);
        });
        Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> xm(cell.x->data(), cell.batch,
                                                                                                      cols);
        Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic> out(rows, cell.batch);
        Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic> xtm = xm.transpose();
        run_timed(st, ws->size(), [&](std::size_t i) { out.noalias() = (*ws)[i] * xtm; }, cell.k_, false, double(bytes), nnz,
                  cell.batch);
      });
    }
    {  // the "every format ≥ 2× libtorch's sparse CSR" covers N:M and BSR too
      reg("libtorch_sparse_csr", [=, &p](benchmark::State& st, const Cell& cell) {
        torch::set_num_threads(cell.threads);
        const std::size_t bytes = std::size_t(nnz) * 12 + std::size_t(rows + 1) * 8;
        auto ws = cached<std::vector<torch::Tensor>>(slot + "libtorch_csr", [&] {
          auto one = torch::from_blob(const_cast<float*>(p.dense.data()), {rows, cols}).to_sparse_csr();
          std::vector<torch::Tensor> v;
          for (std::size_t i = 0; i < copies_for<float>(bytes); ++i) v.push_back(one.clone());
          return v;
        });
        auto xt = torch::from_blob(cell.x->data(), {cell.batch, cols}).t().contiguous();
        try {
          run_timed(st, ws->size(), [&](std::size_t i) { benchmark::DoNotOptimize(torch::mm((*ws)[i], xt)); }, cell.k_, false,
                    double(bytes), nnz, cell.batch);
        } catch (const std::exception& e) {
          st.SkipWithError(e.what());
        }
      });
    }
  }
}

// Streaming read bandwidth of this machine, for the GB/s columns.
void BM_MemoryReadBandwidth(benchmark::State& state) {
  k::AlignedVector<float> a(std::size_t(256) << 20 >> 2, 1.0f);  // pages as the weights have
  for (auto _ : state) {
    float s = 0;
    for (std::size_t i = 0; i < a.size(); i += 16) s += a[i];  // one touch per cache line
    benchmark::DoNotOptimize(s);
  }
  state.counters["GB/s"] = benchmark::Counter(double(a.size()) * 4, benchmark::Counter::kIsIterationInvariantRate);
}

// LeNet-5's convolutions at batch 64 (hot cache: the weights are a few KiB): the runtime's
// direct kernel (channel-vector and planar) against im2col + OpenBLAS sgemm and libtorch's
// conv2d, dense and shrunk to
// the channels `prunus shrink --sparsity 0.45` keeps (6→4 and 16→9).
struct ConvCase {
  const char* name;
  std::int64_t h, w, cin, rows, k, pad;
};
const ConvCase kConvCases[] = {{"lenet5_conv1", 28, 28, 1, 6, 5, 2},
                               {"lenet5_conv1_shrunk", 28, 28, 1, 4, 5, 2},
                               {"lenet5_conv2", 14, 14, 6, 16, 5, 0},
                               {"lenet5_conv2_shrunk", 14, 14, 4, 9, 5, 0}};

void BM_Conv(benchmark::State& state, ConvCase c, const std::string& path) {
  const std::int64_t batch = 64, taps = c.k * c.k * c.cin;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> val(-1, 1);
  std::vector<float> w(static_cast<std::size_t>(c.rows * taps)), bias(static_cast<std::size_t>(c.rows)),
      x(static_cast<std::size_t>(batch * c.h * c.w * c.cin));
  for (auto* v : {&w, &bias, &x})
    for (auto& e : *v) e = val(rng);
  auto conv = k::pack_direct_conv(w.data(), bias.data(), c.rows, c.cin, c.k, 1, c.pad, c.h, c.w);
  conv.layout = path == "direct_planar" ? k::DirectConv::Layout::Planar
                : path == "direct_flat"   ? k::DirectConv::Layout::Flat
                                          : k::DirectConv::Layout::Channels;
  std::vector<float> y(static_cast<std::size_t>(batch * conv.oh * conv.ow * c.rows));
  if (path == "direct" || path == "direct_planar" || path == "direct_flat") {
    for (auto _ : state) k::conv_direct(conv, x.data(), batch, y.data());
  } else if (path == "im2col_openblas") {
    const std::int64_t positions = batch * conv.oh * conv.ow;
    std::vector<float> cols(static_cast<std::size_t>(positions * taps));
    for (auto _ : state) {
      std::fill(cols.begin(), cols.end(), 0.0f);
      for (std::int64_t n = 0; n < batch; ++n)
        for (std::int64_t oy = 0; oy < conv.oh; ++oy)
          for (std::int64_t ox = 0; ox < conv.ow; ++ox)
            for (std::int64_t ky = 0; ky < c.k; ++ky) {  // one run of taps a kernel row, as the runtime does
              const std::int64_t iy = oy - c.pad + ky, ix0 = ox - c.pad;
              const std::int64_t kx0 = std::max<std::int64_t>(0, -ix0), kx1 = std::min(c.k, c.w - ix0);
              if (iy < 0 || iy >= c.h || kx0 >= kx1) continue;
              const float* src = &x[((n * c.h + iy) * c.w + ix0 + kx0) * c.cin];
              float* dst = &cols[((n * conv.oh + oy) * conv.ow + ox) * taps + (ky * c.k + kx0) * c.cin];
              for (std::int64_t i = 0; i < (kx1 - kx0) * c.cin; ++i) dst[i] = src[i];
            }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(positions), int(c.rows), int(taps), 1.0f, cols.data(),
                  int(taps), w.data(), int(taps), 0.0f, y.data(), int(c.rows));
      benchmark::DoNotOptimize(y.data());
    }
  } else {  // libtorch conv2d, NCHW
    torch::NoGradGuard no_grad;
    at::set_num_threads(1);
    auto xt = torch::randn({batch, c.cin, c.h, c.w});
    auto wt = torch::randn({c.rows, c.cin, c.k, c.k});
    auto bt = torch::randn({c.rows});
    for (auto _ : state) {
      auto out = torch::conv2d(xt, wt, bt, 1, c.pad);
      benchmark::DoNotOptimize(out.data_ptr());
    }
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * conv.macs_per_sample() * double(batch), benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

int main(int argc, char** argv) {
  bool full = false, lenet = false;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--full") == 0) full = true;
    else if (std::strcmp(argv[i], "--hot") == 0) g_hot = true;
    else if (std::strcmp(argv[i], "--lenet") == 0) lenet = g_hot = true;
    else rest.push_back(argv[i]);
  }
  int rc = static_cast<int>(rest.size());
  benchmark::RegisterBenchmark("memory_read_bandwidth", BM_MemoryReadBandwidth)->Unit(benchmark::kMillisecond);
  std::vector<Case> cases = {{4096, 4096, {1, 64}}};
  if (full)
    cases = {{4096, 4096, {1, 4, 16, 64, 256}},
             {11008, 4096, {1, 4, 16, 64, 256}},
             {4096, 11008, {1, 4, 16, 64, 256}},
             {768, 3072, {1, 4, 16, 64, 256}}};
  if (lenet) cases = {{300, 784, {1, 4}}, {100, 300, {1, 4}}};  // LeNet-300-100's layers: in L2, so hot
  for (const auto& c : cases) register_shape(c, {1, 2});
  for (const auto& c : kConvCases)
    for (const char* path : {"im2col_openblas", "libtorch", "direct", "direct_planar", "direct_flat"}) {
      benchmark::RegisterBenchmark((std::string("conv/") + c.name + "/b64/" + path).c_str(), BM_Conv, c, std::string(path))
          ->Unit(benchmark::kMicrosecond);
    }
  benchmark::Initialize(&rc, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
