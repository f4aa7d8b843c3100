// Format choice by measurement: the zeros must pay on this machine, or the layer stays dense.
#include <algorithm>
#include <chrono>
#include <functional>
#include <limits>
#include <stdexcept>

#include "prunus/kernels.h"

namespace prunus::kernels {
namespace {

// Best of a few calls of each candidate, taken in rounds that rotate the order: timings on a
// shared machine drift by ±20% over seconds, and timing one candidate after the other hands
// that drift to whichever ran in the slow stretch (a 4096×11008 layer at 50% zeros flipped
// between bitmask and CSR from run to run).
std::vector<double> time_interleaved(const std::vector<std::function<void()>>& calls) {
  const std::size_t n = calls.size();
  std::vector<double> best(n, std::numeric_limits<double>::infinity());
  for (const auto& call : calls) call();  // warm-up
  for (std::size_t round = 0; round < 5; ++round)
    for (std::size_t j = 0; j < n; ++j) {
      const std::size_t i = (j + round) % n;
      const auto t0 = std::chrono::steady_clock::now();
      calls[i]();
      best[i] = std::min(best[i], std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  return best;
}

}  // namespace

const char* SparseLinear::format_name(Format f) {
  switch (f) {
    case Format::Dense: return "dense";
    case Format::Csr: return "csr";
    case Format::Bitmask: return "bitmask";
    case Format::Bsr: return "bsr4x4";
    case Format::NM: return "n:m";
    case Format::Int8Bitmask: return "int8-bitmask";
    case Format::Int8NM: return "int8-n:m";
    case Format::Sell: return "sell";
  }
  return "?";
}

std::uint64_t SparseLinear::bytes() const {
  switch (format_) {
    case Format::Dense: return dense_bytes();
    case Format::Csr: return csr_.bytes();
    case Format::Bitmask: return bitmask_.bytes();
    case Format::Bsr: return bsr_.bytes();
    case Format::NM: return nm_.bytes();
    case Format::Int8Bitmask: return int8_bitmask_.bytes();
    case Format::Int8NM: return int8_nm_.bytes();
    case Format::Sell: return sell_.bytes();
  }
  return 0;
}

namespace {

// A batch of ones at the expected batch size, for timing a layer's candidate formats.
struct Probe {
  std::int64_t rows, cols, batch;
  std::vector<float> x, y;
  Probe(std::int64_t r, std::int64_t c, std::int64_t batch_hint)
      : rows(r), cols(c), batch(std::max<std::int64_t>(1, batch_hint)),
        x(static_cast<std::size_t>(batch * c), 1.0f), y(static_cast<std::size_t>(batch * r)) {}
};

}  // namespace

SparseLinear SparseLinear::shell(const float* w, std::int64_t rows, std::int64_t cols, const Options& opt) {
  SparseLinear s;
  s.rows_ = rows;
  s.cols_ = cols;
  s.opt_ = opt;
  for (std::int64_t i = 0; i < rows * cols; ++i) s.nnz_ += w[i] != 0.0f;
  return s;
}

void SparseLinear::forward(const float* x, std::int64_t batch, float* y) const {
  switch (format_) {
    case Format::Dense: return matmul_dense(dense_.data(), rows_, cols_, x, batch, y, opt_);
    case Format::Csr: return matmul(csr_, x, batch, y, opt_);
    case Format::Bitmask: return matmul(bitmask_, x, batch, y, opt_);
    case Format::Bsr: return matmul(bsr_, x, batch, y, opt_);
    case Format::NM: return matmul(nm_, x, batch, y, opt_);
    case Format::Int8Bitmask: return matmul(int8_bitmask_, x, batch, y, opt_, act_scale_);
    case Format::Int8NM: return matmul(int8_nm_, x, batch, y, opt_, act_scale_);
    case Format::Sell: return matmul(sell_, x, batch, y, opt_);
  }
}

SparseLinear SparseLinear::build_int8(const float* w, std::int64_t rows, std::int64_t cols, std::int64_t batch_hint,
                                      const Options& opt) {
  SparseLinear s = shell(w, rows, cols, opt);
  Probe p(rows, cols, batch_hint);
  const AlignedVector<float> dense(w, w + rows * cols);
  const std::int64_t batch = p.batch;
  auto& x = p.x;
  auto& y = p.y;
  s.int8_bitmask_ = quantize_bitmask(w, rows, cols);
  Int8NM nm;
  bool have_nm = false;
  for (auto [n, m] : {std::pair{2, 4}, std::pair{4, 8}}) {
    if (have_nm || cols % m) continue;
    try {
      nm = quantize_nm(w, rows, cols, n, m);
      have_nm = true;
    } catch (const std::invalid_argument&) {
    }
  }
  std::vector<std::function<void()>> calls = {
      [&] { matmul_dense(dense.data(), rows, cols, x.data(), batch, y.data(), opt); },
      [&] { matmul(s.int8_bitmask_, x.data(), batch, y.data(), opt); }};
  if (have_nm) calls.push_back([&] { matmul(nm, x.data(), batch, y.data(), opt); });
  const std::vector<double> t = time_interleaved(calls);
  s.dense_seconds_ = t[0];
  s.format_ = Format::Int8Bitmask;
  s.seconds_ = t[1];
  if (have_nm && t[2] < t[1]) {
    s.int8_nm_ = std::move(nm);
    s.int8_bitmask_ = {};
    s.format_ = Format::Int8NM;
    s.seconds_ = t[2];
  }
  return s;
}

SparseLinear SparseLinear::dense(const float* w, std::int64_t rows, std::int64_t cols, const Options& opt) {
  SparseLinear s = shell(w, rows, cols, opt);
  s.dense_.assign(w, w + rows * cols);
  return s;
}

SparseLinear SparseLinear::build(const float* w, std::int64_t rows, std::int64_t cols, std::int64_t batch_hint,
                                 const Options& opt) {
  SparseLinear s = shell(w, rows, cols, opt);
  Probe p(rows, cols, batch_hint);
  AlignedVector<float> dense(w, w + rows * cols);
  const std::int64_t batch = p.batch;
  auto& x = p.x;
  auto& y = p.y;
  struct Candidate {
    Format format;
    std::uint64_t bytes;
    std::function<void()> call;
    double seconds = 0;
  };
  std::vector<Candidate> tried = {{Format::Dense, static_cast<std::uint64_t>(rows * cols) * 4,
                                   [&] { matmul_dense(dense.data(), rows, cols, x.data(), batch, y.data(), opt); }}};
  Csr csr;
  Bitmask bm;
  Bsr bsr;
  NM nm;
  Sell sell;
  if (s.nnz_ < rows * cols) {
    csr = to_csr(w, rows, cols);
    tried.push_back({Format::Csr, csr.bytes(), [&] { matmul(csr, x.data(), batch, y.data(), opt); }});
    bm = to_bitmask(w, rows, cols);
    tried.push_back({Format::Bitmask, bm.bytes(), [&] { matmul(bm, x.data(), batch, y.data(), opt); }});
    bsr = to_bsr(w, rows, cols, 4, 4);
    if (bsr.values.size() <= static_cast<std::size_t>(s.nnz_) * 5 / 4)  // zeros come in blocks
      tried.push_back({Format::Bsr, bsr.bytes(), [&] { matmul(bsr, x.data(), batch, y.data(), opt); }});
    bool have_nm = false;
    for (auto [n, m] : {std::pair{2, 4}, std::pair{4, 8}}) {
      if (have_nm || cols % m) continue;
      try {
        nm = to_nm(w, rows, cols, n, m);
        have_nm = true;
      } catch (const std::invalid_argument&) {
      }
    }
    if (have_nm) tried.push_back({Format::NM, nm.bytes(), [&] { matmul(nm, x.data(), batch, y.data(), opt); }});
    // SELL only for layers whose weights stay in cache between calls: its padding makes it
    // larger than CSR (2× on LeNet-300-100's first layer), a product from memory is bound by
    // the bytes it reads, and this probe times every candidate hot, so it could not tell.
    constexpr std::uint64_t kSellMaxBytes = 512 * 1024;  // half of a Zen 4 core's L2
    if (csr.bytes() <= kSellMaxBytes) {
      sell = to_sell(w, rows, cols);
      if (sell.bytes() <= kSellMaxBytes)
        tried.push_back({Format::Sell, sell.bytes(), [&] { matmul(sell, x.data(), batch, y.data(), opt); }});
    }
  }
  std::vector<std::function<void()>> calls;
  for (const auto& c : tried) calls.push_back(c.call);
  const std::vector<double> seconds = time_interleaved(calls);
  for (std::size_t i = 0; i < tried.size(); ++i) tried[i].seconds = seconds[i];
  s.dense_seconds_ = tried[0].seconds;
  // The fastest format wins, except that a smaller one within 3% of the fastest is kept
  // instead: timings this close are noise on a shared machine, and the bytes saved are not.
  double fastest = tried[0].seconds;
  for (const auto& c : tried) fastest = std::min(fastest, c.seconds);
  const Candidate* pick = nullptr;
  for (const auto& c : tried)
    if (c.seconds <= fastest * 1.03 && (!pick || c.bytes < pick->bytes)) pick = &c;
  const Format best_format = pick->format;
  const double best = pick->seconds;
  switch (best_format) {
    case Format::Csr: s.csr_ = std::move(csr); break;
    case Format::Bitmask: s.bitmask_ = std::move(bm); break;
    case Format::Bsr: s.bsr_ = std::move(bsr); break;
    case Format::NM: s.nm_ = std::move(nm); break;
    case Format::Sell: s.sell_ = std::move(sell); break;
    default: s.dense_ = std::move(dense); break;  // Dense: the only other candidate
  }
  s.format_ = best_format;
  s.seconds_ = best;
  return s;
}

}  // namespace prunus::kernels
