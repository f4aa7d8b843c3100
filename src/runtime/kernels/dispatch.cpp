// Run-time ISA choice, the worker pool, nnz-balanced work split, and the public matmuls.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include <cblas.h>
#include <immintrin.h>

#include "kernels_internal.h"

namespace prunus::kernels {

std::int64_t detail::g_panel_bytes = [] {
  const char* v = std::getenv("PRUNUS_PANEL_BYTES");
  return v && *v ? std::atoll(v) : std::int64_t{512} * 1024;
}();

bool detail::g_row_groups = [] {
  const char* v = std::getenv("PRUNUS_ROW_GROUPS");
  return !(v && *v && std::atoi(v) == 0);
}();

std::int64_t detail::prefetch_l2_bytes() {
  static const std::int64_t bytes = [] {
    const char* v = std::getenv("PRUNUS_PREFETCH_L2");
    return v && *v ? std::atoll(v) : std::int64_t{16384};
  }();
  return bytes;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
  }
  return "?";
}

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return true;
    case Isa::Avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::Avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  }
  return false;
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa i : {Isa::Scalar, Isa::Avx2, Isa::Avx512})
    if (isa_supported(i)) out.push_back(i);
  return out;
}

Isa best_isa() {
  static const Isa best = [] {
    Isa b = Isa::Scalar;
    for (Isa i : supported_isas()) b = i;
    if (const char* cap = std::getenv("PRUNUS_ISA")) {
      for (Isa i : {Isa::Scalar, Isa::Avx2, Isa::Avx512})
        if (std::strcmp(cap, isa_name(i)) == 0 && static_cast<int>(i) < static_cast<int>(b)) b = i;
    }
    return b;
  }();
  return best;
}

std::string cpu_features() {
  std::string s;
  auto add = [&](bool has, const char* name) {
    if (has) s += (s.empty() ? "" : " ") + std::string(name);
  };
  add(__builtin_cpu_supports("avx2"), "avx2");
  add(__builtin_cpu_supports("fma"), "fma");
  add(__builtin_cpu_supports("avx512f"), "avx512f");
  add(__builtin_cpu_supports("avx512bw"), "avx512bw");
  add(__builtin_cpu_supports("avx512vl"), "avx512vl");
  add(__builtin_cpu_supports("avx512dq"), "avx512dq");
  add(__builtin_cpu_supports("avx512vnni"), "avx512vnni");
  return s;
}

namespace {

// A fixed set of workers that run one parallel region at a time; the caller runs part 0.
// Waking a sleeping worker costs 14–53 µs per region on the development VM. Spinning for up
// to 50 µs before sleeping (workers for the next region, the caller for the workers) cut an
// empty 2-thread region to 0.5 µs, yet made real 2-thread GEMVs slower and erratic (768×3072
// at 90%: 0.06–0.07 -> 0.18–0.22 ms, with or without pause): a spinning vCPU here seems to
// be descheduled or throttled. So the workers sleep at once.
class Pool {
 public:
  static Pool& get() {
    static Pool pool;
    return pool;
  }
  void run(int parts, const std::function<void(int)>& fn) {
    if (parts <= 1) {
      fn(0);
      return;
    }
    std::lock_guard<std::mutex> region(region_mu_);
    grow(parts - 1);
    {
      std::lock_guard<std::mutex> lk(mu_);
      job_ = &fn;
      parts_ = parts;
      next_ = 1;
      pending_ = parts - 1;
      ++generation_;
    }
    cv_.notify_all();
    fn(0);
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [&] { return pending_ == 0; });
    job_ = nullptr;
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

 private:
  void grow(int n) {
    while (static_cast<int>(workers_.size()) < n) workers_.emplace_back([this] { loop(); });
  }
  void loop() {
    std::uint64_t seen = 0;
    for (;;) {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || (generation_ != seen && next_ < parts_); });
      if (stop_) return;
      const int part = next_++;
      if (next_ >= parts_) seen = generation_;
      const auto* job = job_;
      lk.unlock();
      (*job)(part);
      lk.lock();
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }
  std::mutex region_mu_, mu_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  const std::function<void(int)>* job_ = nullptr;
  int parts_ = 0, next_ = 0, pending_ = 0;
  std::uint64_t generation_ = 0;
  bool stop_ = false;
};

// Splits [0, n) into `parts` ranges of about equal work, given the prefix sums of work
// per item (prefix[i] = work before item i, prefix.size() == n + 1).
template <class Prefix>
std::int64_t split_point(const Prefix& prefix, std::int64_t n, int part, int parts) {
  if (part >= parts) return n;
  const double target = double(prefix[n]) * part / parts;
  std::int64_t lo = 0, hi = n;
  while (lo < hi) {
    const std::int64_t mid = (lo + hi) / 2;
    if (double(prefix[mid]) < target) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// X [batch × cols] → X^T [cols × batch] for columns [c0, c1): 8×8 blocks through AVX2
// shuffles (two 32-byte loads and stores per 8 values instead of 16 scalar moves), the ragged
// edges one value at a time.
__attribute__((target("avx2"))) void transpose_avx2(const float* x, std::int64_t batch, std::int64_t cols, float* out,
                                                    std::int64_t c0, std::int64_t c1) {
  const std::int64_t b8 = batch / 8 * 8, c8 = c0 + (c1 - c0) / 8 * 8;
  for (std::int64_t c = c0; c < c8; c += 8) {
    for (std::int64_t b = 0; b < b8; b += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(x + (b + i) * cols + c);
      const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
      const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
      const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
      const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
      const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
      const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
      const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
      const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
      float* o = out + c * batch + b;
      _mm256_storeu_ps(o, _mm256_permute2f128_ps(s0, s4, 0x20));
      _mm256_storeu_ps(o + batch, _mm256_permute2f128_ps(s1, s5, 0x20));
      _mm256_storeu_ps(o + 2 * batch, _mm256_permute2f128_ps(s2, s6, 0x20));
      _mm256_storeu_ps(o + 3 * batch, _mm256_permute2f128_ps(s3, s7, 0x20));
      _mm256_storeu_ps(o + 4 * batch, _mm256_permute2f128_ps(s0, s4, 0x31));
      _mm256_storeu_ps(o + 5 * batch, _mm256_permute2f128_ps(s1, s5, 0x31));
      _mm256_storeu_ps(o + 6 * batch, _mm256_permute2f128_ps(s2, s6, 0x31));
      _mm256_storeu_ps(o + 7 * batch, _mm256_permute2f128_ps(s3, s7, 0x31));
    }
    for (std::int64_t b = b8; b < batch; ++b)
      for (std::int64_t j = 0; j < 8; ++j) out[(c + j) * batch + b] = x[b * cols + c + j];
  }
  for (std::int64_t c = c8; c < c1; ++c)
    for (std::int64_t b = 0; b < batch; ++b) out[c * batch + b] = x[b * cols + c];
}

void transpose_scalar(const float* x, std::int64_t batch, std::int64_t cols, float* out, std::int64_t c0,
                      std::int64_t c1) {
  constexpr std::int64_t kTile = 32;
  for (std::int64_t b0 = 0; b0 < batch; b0 += kTile)
    for (std::int64_t t0 = c0; t0 < c1; t0 += kTile)
      for (std::int64_t b = b0; b < std::min(batch, b0 + kTile); ++b)
        for (std::int64_t c = t0; c < std::min(c1, t0 + kTile); ++c) out[c * batch + b] = x[b * cols + c];
}

// X^T for the batch > 1 kernels, reused across calls on this thread, split by column ranges
// over `parts` threads. It was serial and scalar: ~10% of a 90–95%-sparse product at batch
// 256 (4096 columns 0.75 ms, 11008 columns 7.7 ms; AVX2 blocks: 0.5 and 3.3 ms on one thread).
// The buffer is 64-byte aligned: a std::vector this large comes from mmap 16 bytes past a page
// boundary, so every vector load of X^T split across two cache lines; aligned, the batch-256
// products ran 1.2–1.3× faster (CSR 80% 11008×4096: 130–140 -> 108–114 ms; 90% 4096²:
// 28 -> 22 ms; one thread, alternating processes, medians of 9).
const float* transpose(const float* x, std::int64_t batch, std::int64_t cols, Isa isa, int parts) {
  thread_local AlignedVector<float> buf;
  buf.resize(static_cast<std::size_t>(batch * cols));
  const bool avx2 = isa != Isa::Scalar && isa_supported(Isa::Avx2);
  const std::int64_t blocks = (cols + 7) / 8;
  parts = static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(parts, blocks)));
  float* out = buf.data();
  Pool::get().run(parts, [&](int p) {
    const std::int64_t c0 = std::min(cols, blocks * p / parts * 8), c1 = std::min(cols, blocks * (p + 1) / parts * 8);
    if (avx2) transpose_avx2(x, batch, cols, out, c0, c1);
    else transpose_scalar(x, batch, cols, out, c0, c1);
  });
  return out;
}

// in [n × m] → out [m × n] (AVX2 blocks where the CPU has them).
void transpose_into(const float* in, std::int64_t n, std::int64_t m, float* out) {
  if (isa_supported(Isa::Avx2)) transpose_avx2(in, n, m, out, 0, m);
  else transpose_scalar(in, n, m, out, 0, m);
}

// A FeatureMajor call (Xᵀ in, Yᵀ out) through a path that reads only batch-major X (the
// scalar references, SELL, INT8, BSR with blocks over 16 rows): X is transposed in, Y out.
template <class Fn>
void via_batch_major(const float* xt, std::int64_t batch, std::int64_t cols, float* yt, std::int64_t rows, Fn fn) {
  thread_local AlignedVector<float> xb, yb;
  xb.resize(static_cast<std::size_t>(batch * cols));
  yb.resize(static_cast<std::size_t>(batch * rows));
  transpose_into(xt, cols, batch, xb.data());
  fn(xb.data(), yb.data());
  transpose_into(yb.data(), batch, rows, yt);
}

Options batch_major(Options opt) {
  opt.layout = ActivationLayout::BatchMajor;
  return opt;
}

bool feature_major(const Options& opt, std::int64_t batch) { return opt.layout == ActivationLayout::FeatureMajor && batch > 1; }

// Threads for transposing n floats of X. The split is static, so the caller waits for a
// worker to wake (14–53 µs on this VM) before the product starts: below ~1 MiB of X the
// caller alone is done sooner (768×3072 at batch 16: 196 KiB, ~10 µs of copying).
int transpose_parts(std::int64_t n, int parts) {
  static const std::int64_t min_floats = [] {
    const char* v = std::getenv("PRUNUS_TRANSPOSE_PAR_FLOATS");
    return v && *v ? std::atoll(v) : std::int64_t{256} * 1024;
  }();
  return n >= min_floats ? parts : 1;
}

// The batch-1 kernels read x in 64-byte vectors; from a misaligned x nearly every one of those
// loads splits across two cache lines, which cost the bitmask GEMV 15–20% (4096 columns,
// L2-hot, Zen 4: 4.2–4.4 -> 3.7 ns per 64 columns). Such an x is copied to an aligned
// buffer first (16 KiB for 4096 columns, well under a microsecond).
const float* aligned_x(const float* x, std::int64_t n) {
  if ((reinterpret_cast<std::uintptr_t>(x) & 63) == 0) return x;
  thread_local AlignedVector<float> buf;
  buf.resize(static_cast<std::size_t>(n));
  std::memcpy(buf.data(), x, static_cast<std::size_t>(n) * sizeof(float));
  return buf.data();
}

// Waking a worker costs microseconds (tens on a busy VM): a part must carry enough
// multiply-adds to pay for it (Options::min_macs_per_thread). Measured on LeNet-300-100 at
// 90% (18.6 k non-zeros in its largest layer): 2 threads took 104 µs per batch-1 forward
// against 12 µs on one.
int parts_for(const Options& opt, std::int64_t items, double macs) {
  const int threads = opt.threads;
  const double by_work = opt.min_macs_per_thread > 0 ? std::floor(macs / opt.min_macs_per_thread) : double(threads);
  return static_cast<int>(std::max<double>(1, std::min<double>({double(threads), double(items), by_work})));
}

}  // namespace
// Chunks of work per thread in a parallel product (PRUNUS_CHUNKS; 1: one static range each).
int g_chunks_per_part = [] {
  const char* v = std::getenv("PRUNUS_CHUNKS");
  return v && *v ? std::max(1, std::atoi(v)) : 8;
}();
namespace {

// Runs fn(chunk, chunks) over `parts` threads: the work is cut into g_chunks_per_part chunks
// a thread (equal work each, by the prefix sums) and each thread claims the next chunk as it
// comes free. The caller starts at once while a worker is still waking (14–53 µs here), so
// the caller takes more chunks instead of waiting for the worker's fixed half; a vCPU the
// host slows gets less. 4096² CSR at 90% zeros, two threads, static against claimed chunks
// in one process: 0.467/0.412/0.445/0.474 -> 0.364/0.367/0.352/0.416 ms (other runs equal).
template <class Fn>
void run_chunks(int parts, const Fn& fn) {
  if (parts <= 1 || g_chunks_per_part <= 1) {
    Pool::get().run(parts, [&](int p) { fn(p, parts); });
    return;
  }
  const int chunks = parts * g_chunks_per_part;
  std::atomic<int> next{0};
  Pool::get().run(parts, [&](int) {
    for (int c; (c = next.fetch_add(1, std::memory_order_relaxed)) < chunks;) fn(c, chunks);
  });
}

template <class W, class Prefix, class Kernel>
void run(const W& w, std::int64_t items, const Prefix& prefix, double macs, const float* x, std::int64_t batch, float* y,
         const Options& opt, Kernel kernel) {
  if (batch <= 0) return;
  if (!isa_supported(opt.isa)) throw std::invalid_argument(std::string("ISA not supported here: ") + isa_name(opt.isa));
  const bool fm = feature_major(opt, batch);
  if (fm && opt.isa == Isa::Scalar)
    return via_batch_major(x, batch, w.cols, y, w.rows, [&](const float* xb, float* yb) {
      run(w, items, prefix, macs, xb, batch, yb, batch_major(opt), kernel);
    });
  const int parts = parts_for(opt, items, macs * double(batch));
  const float* xt = batch == 1 || opt.isa == Isa::Scalar ? nullptr
                    : fm ? aligned_x(x, batch * w.cols)  // a misaligned Xᵀ split every vector load (90%: 3.3 -> 3.5-3.7 ms)
                         : transpose(x, batch, w.cols, opt.isa, transpose_parts(batch * w.cols, parts));
  const Args a{batch == 1 ? aligned_x(x, w.cols) : fm ? nullptr : x, xt, batch, y, fm};
  run_chunks(parts, [&](int c, int chunks) {
    const std::int64_t r0 = split_point(prefix, items, c, chunks), r1 = split_point(prefix, items, c + 1, chunks);
    if (r0 < r1) kernel(w, a, r0, r1);
  });
}

template <class W>
auto pick(Isa isa, void (*s)(const W&, const Args&, std::int64_t, std::int64_t),
          void (*v2)(const W&, const Args&, std::int64_t, std::int64_t),
          void (*v5)(const W&, const Args&, std::int64_t, std::int64_t)) {
  return isa == Isa::Avx512 ? v5 : isa == Isa::Avx2 ? v2 : s;
}

// Work per row of an N:M matrix is the same everywhere.
struct Uniform {
  std::int64_t operator[](std::int64_t i) const { return i; }
};

}  // namespace

void matmul(const Csr& w, const float* x, std::int64_t batch, float* y, const Options& opt) {
  run(w, w.rows, w.row_ptr, double(w.nnz()), x, batch, y, opt, pick<Csr>(opt.isa, scalar::csr, avx2::csr, avx512::csr));
}
void matmul(const Bitmask& w, const float* x, std::int64_t batch, float* y, const Options& opt) {
  run(w, w.rows, w.row_ptr, double(w.nnz()), x, batch, y, opt,
      pick<Bitmask>(opt.isa, scalar::bitmask, avx2::bitmask, avx512::bitmask));
}
void matmul(const Bsr& w, const float* x, std::int64_t batch, float* y, const Options& opt) {
  if (feature_major(opt, batch) && w.br > 16)  // blocks this tall take the scalar kernel
    return via_batch_major(x, batch, w.cols, y, w.rows,
                           [&](const float* xb, float* yb) { matmul(w, xb, batch, yb, batch_major(opt)); });
  run(w, w.block_rows, w.block_ptr, double(w.values.size()), x, batch, y, opt,
      pick<Bsr>(opt.isa, scalar::bsr, avx2::bsr, avx512::bsr));
}
void matmul(const NM& w, const float* x, std::int64_t batch, float* y, const Options& opt) {
  run(w, w.rows, Uniform{}, double(w.values.size()), x, batch, y, opt, pick<NM>(opt.isa, scalar::nm, avx2::nm, avx512::nm));
}

void matmul(const Sell& w, const float* x, std::int64_t batch, float* y, const Options& opt) {
  if (batch <= 0) return;
  if (feature_major(opt, batch))
    return via_batch_major(x, batch, w.cols, y, w.rows,
                           [&](const float* xb, float* yb) { matmul(w, xb, batch, yb, batch_major(opt)); });
  if (!isa_supported(opt.isa)) throw std::invalid_argument(std::string("ISA not supported here: ") + isa_name(opt.isa));
  auto* kernel = pick<Sell>(opt.isa, scalar::sell, avx2::sell, avx512::sell);
  const std::int64_t slices = w.slices();
  const int parts = parts_for(opt, slices, double(w.nnz) * double(batch));
  const Args a{batch == 1 ? aligned_x(x, w.cols) : x, nullptr, batch, y};
  Pool::get().run(parts, [&](int p) {  // split by steps, the work a slice carries
    const std::int64_t s0 = split_point(w.slice_step, slices, p, parts), s1 = split_point(w.slice_step, slices, p + 1, parts);
    if (s0 < s1) kernel(w, a, s0, s1);
  });
}

namespace {

// Quantizes X to unsigned bytes (x_q + 128), rows padded to a multiple of 128 with the zero
// code, plus slack for the 128-byte window loads; one scale per row.
struct QuantizedInput {
  AlignedVector<std::uint8_t> xq;  // rows (stride: whole 128-byte steps) start on cache lines
  std::vector<float> scale;
  std::int64_t stride = 0;
};
const QuantizedInput& quantize_input(const float* x, std::int64_t batch, std::int64_t cols, float act_scale) {
  thread_local QuantizedInput q;
  q.stride = (cols + 127) / 128 * 128;
  q.xq.resize(static_cast<std::size_t>(batch * q.stride + 128));
  // Padding holds the zero code (128); the values are written below.
  for (std::int64_t b = 0; b < batch; ++b)
    std::memset(q.xq.data() + b * q.stride + cols, 128, static_cast<std::size_t>(q.stride - cols));
  std::memset(q.xq.data() + batch * q.stride, 128, 128);
  q.scale.resize(static_cast<std::size_t>(batch));
  for (std::int64_t b = 0; b < batch; ++b) {
    const float* xb = x + b * cols;
    float a = act_scale;
    if (a <= 0) {
      float amax = 0;
      for (std::int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(xb[c]));
      a = amax > 0 ? amax / 127.0f : 1.0f;
    }
    q.scale[b] = a;
    std::uint8_t* out = q.xq.data() + b * q.stride;
    // ONNX QuantizeLinear's arithmetic, so an exported QDQ model computes the same codes:
    // x / scale, rounded half to even, saturated to [-128, 127]. The rounding is the 1.5·2^23
    // trick (exact for |v| < 2^22, which the clamp ensures) rather than std::nearbyint, a libm
    // call per value that made INT8 convolutions 4x slower than fp32; it vectorizes.
    constexpr float kRound = 12582912.0f;
    for (std::int64_t c = 0; c < cols; ++c) {
      const float v = std::clamp(xb[c] / a, -128.0f, 127.0f);
      out[c] = static_cast<std::uint8_t>(static_cast<int>((v + kRound) - kRound) + 128);
    }
  }
  return q;
}

template <class W, class Prefix, class Kernel>
void run_int8(const W& w, const Prefix& prefix, double macs, const float* x, std::int64_t batch, float* y,
              const Options& opt, float act_scale, Kernel s, Kernel v2, Kernel v5) {
  if (batch <= 0) return;
  if (feature_major(opt, batch))
    return via_batch_major(x, batch, w.cols, y, w.rows, [&](const float* xb, float* yb) {
      run_int8(w, prefix, macs, xb, batch, yb, batch_major(opt), act_scale, s, v2, v5);
    });
  if (!isa_supported(opt.isa)) throw std::invalid_argument(std::string("ISA not supported here: ") + isa_name(opt.isa));
  // The AVX-512 INT8 kernels need VNNI and VBMI/VBMI2; otherwise AVX2 runs.
  const Kernel kernel = opt.isa == Isa::Avx512 && int8_vnni_supported() ? v5 : opt.isa == Isa::Scalar ? s : v2;
  const auto& q = quantize_input(x, batch, w.cols, act_scale);
  const Int8Args a{q.xq.data(), q.stride, q.scale.data(), batch, y};
  const int parts = parts_for(opt, w.rows, macs * double(batch));
  run_chunks(parts, [&](int c, int chunks) {
    const std::int64_t r0 = split_point(prefix, w.rows, c, chunks), r1 = split_point(prefix, w.rows, c + 1, chunks);
    if (r0 < r1) kernel(w, a, r0, r1);
  });
}

}  // namespace

void matmul(const Int8Bitmask& w, const float* x, std::int64_t batch, float* y, const Options& opt, float act_scale) {
  run_int8(w, w.row_ptr, double(w.nnz()), x, batch, y, opt, act_scale, &scalar::int8_bitmask, &avx2::int8_bitmask,
           &avx512::int8_bitmask);
}
void matmul(const Int8NM& w, const float* x, std::int64_t batch, float* y, const Options& opt, float act_scale) {
  run_int8(w, Uniform{}, double(w.rows * w.windows_per_row * 64), x, batch, y, opt, act_scale, &scalar::int8_nm,
           &avx2::int8_nm, &avx512::int8_nm);
}

void matmul_dense(const float* w, std::int64_t rows, std::int64_t cols, const float* x, std::int64_t batch, float* y,
                  const Options& opt) {
  // The best dense path is OpenBLAS itself; the runtime does not reimplement GEMM. Its
  // kernels run single-threaded on Prunus's pool, each thread on a block of rows: OpenBLAS's
  // own threads spin for a while after each call, and on a small machine that spinning
  // starves the sparse kernels of the next layer (measured: 2-thread decode of a 50%-sparse
  // LLaMA-shape model, 62.7 ms per token with OpenBLAS threads, 45.8 ms with them idle).
  if (batch <= 0) return;
  openblas_set_num_threads(1);
  const int parts = parts_for(opt, rows / 16, double(rows) * double(cols) * double(batch));
  Pool::get().run(parts, [&](int p) {
    const std::int64_t r0 = rows * p / parts, r1 = rows * (p + 1) / parts;
    if (r0 >= r1) return;
    if (batch == 1)
      cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(r1 - r0), static_cast<int>(cols), 1.0f, w + r0 * cols,
                  static_cast<int>(cols), x, 1, 0.0f, y + r0, 1);
    else if (opt.layout == ActivationLayout::FeatureMajor)  // Yᵀ rows [r0, r1) = W rows [r0, r1) · Xᵀ
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(r1 - r0), static_cast<int>(batch),
                  static_cast<int>(cols), 1.0f, w + r0 * cols, static_cast<int>(cols), x, static_cast<int>(batch), 0.0f,
                  y + r0 * batch, static_cast<int>(batch));
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(batch), static_cast<int>(r1 - r0),
                  static_cast<int>(cols), 1.0f, x, static_cast<int>(cols), w + r0 * cols, static_cast<int>(cols), 0.0f,
                  y + r0, static_cast<int>(rows));
  });
}

}  // namespace prunus::kernels

namespace prunus::kernels {
void conv_direct(const DirectConv& c, const float* x, std::int64_t batch, float* y, const Options& opt) {
  if (batch <= 0) return;
  if (opt.layout != ActivationLayout::BatchMajor)
    throw std::invalid_argument("conv_direct: activations are NHWC (ActivationLayout::BatchMajor); FeatureMajor is for matmul");
  if (!isa_supported(opt.isa)) throw std::invalid_argument(std::string("ISA not supported here: ") + isa_name(opt.isa));
  auto* kernel = opt.isa == Isa::Avx512 ? &avx512::conv_direct : opt.isa == Isa::Avx2 ? &avx2::conv_direct
                                                                                      : &scalar::conv_direct;
  const std::int64_t rows = batch * c.oh;
  const int parts = parts_for(opt, rows, c.macs_per_sample() * double(batch));
  Pool::get().run(parts, [&](int p) { kernel(c, x, y, rows * p / parts, rows * (p + 1) / parts); });
}
}  // namespace prunus::kernels
