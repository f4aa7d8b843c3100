// Patterns: which shapes of zeros are allowed. Add one: a class and a line in make_pattern.
//
// Every pattern views a weight as a matrix [out, in·k·k] (a Linear weight as it is, a conv
// weight with its input channels and kernel flattened per output channel: the layout N:M
// sparse tensor cores and the runtime's im2col use).
#include <algorithm>
#include <charconv>

#include <fmt/format.h>

#include "prunus/io.h"
#include "prunus/sparsify.h"

namespace prunus {
namespace {

torch::Tensor as_matrix(const torch::Tensor& t) {
  return t.dim() >= 2 ? t.reshape({t.size(0), -1}) : t.reshape({1, -1});
}

// Any weight may go: zero the `zeros` lowest scores, ties to the lower flat index.
class UnstructuredPattern : public Pattern {
 public:
  std::string name() const override { return "unstructured"; }
  torch::Tensor mask(const torch::Tensor& scores, std::int64_t zeros) const override {
    auto flat = scores.detach().reshape({-1}).to(torch::kFloat64);
    auto mask = torch::ones({flat.numel()}, torch::kFloat32);
    if (zeros > 0) {
      auto order = std::get<1>(torch::sort(flat, /*stable=*/true, /*dim=*/0, /*descending=*/false));
      mask.index_fill_(0, order.narrow(0, 0, zeros), 0.0f);
    }
    return mask.reshape(scores.sizes());
  }
  bool check(const torch::Tensor& mask) const override {
    return ((mask == 0) | (mask == 1)).all().item<bool>();
  }
};

// Unstructured within each output row, the same number of zeros in every row (the first
// zeros % rows rows take one more): Wanda's per-output comparison group (Sun et al. 2023), so
// no output loses more of its inputs than another; it also balances the sparse kernels' rows.
class RowBalancedPattern : public Pattern {
 public:
  std::string name() const override { return "row-balanced"; }
  torch::Tensor mask(const torch::Tensor& scores, std::int64_t zeros) const override {
    auto s = as_matrix(scores.detach()).to(torch::kFloat64);
    const std::int64_t rows = s.size(0), cols = s.size(1);
    zeros = std::clamp<std::int64_t>(zeros, 0, rows * cols);
    // Row r loses its k_r lowest scores (ties to the lower index): rank < k_r.
    auto order = std::get<1>(torch::sort(s, /*stable=*/true, /*dim=*/1, /*descending=*/false));
    auto rank = torch::empty_like(order);
    rank.scatter_(1, order, torch::arange(cols, torch::kInt64).expand({rows, cols}).contiguous());
    auto k = torch::full({rows, 1}, zeros / rows, torch::kInt64);
    k.narrow(0, 0, zeros % rows).add_(1);
    return (rank >= k).to(torch::kFloat32).reshape(scores.sizes());
  }
  bool check(const torch::Tensor& mask) const override {
    auto mm = as_matrix(mask);
    if (!((mm == 0) | (mm == 1)).all().item<bool>()) return false;
    auto per_row = (mm == 0).sum(1);
    return (per_row.max() - per_row.min()).item<std::int64_t>() <= 1;
  }
};

// N:M along the inputs: in every group of M consecutive weights of a row, at most N stay
// (the N highest scores, ties to the lower index). The sparsity is fixed at 1 − N/M, so the
// requested count is ignored. A row's last group, when the row length is not a multiple of
// M, keeps at most N of its weights too.
class NMPattern : public Pattern {
 public:
  NMPattern(std::int64_t n, std::int64_t m) : n_(n), m_(m) {}
  std::string name() const override { return fmt::format("{}:{}", n_, m_); }
  torch::Tensor mask(const torch::Tensor& scores, std::int64_t) const override {
    auto s = as_matrix(scores.detach()).to(torch::kFloat64);
    const std::int64_t rows = s.size(0), cols = s.size(1), full = cols / m_ * m_;
    auto mask = torch::ones({rows, cols}, torch::kFloat32);
    auto keep_top = [&](const torch::Tensor& groups, std::int64_t width) {  // [rows, g, width]
      if (width <= n_) return torch::ones(groups.sizes(), torch::kFloat32);
      // Stable descending order: ties keep the lower index.
      auto order = std::get<1>(torch::sort(groups, /*stable=*/true, /*dim=*/-1, /*descending=*/true));
      auto m = torch::zeros(groups.sizes(), torch::kFloat32);
      m.scatter_(-1, order.narrow(-1, 0, n_), 1.0f);
      return m;
    };
    if (full > 0)
      mask.narrow(1, 0, full).copy_(keep_top(s.narrow(1, 0, full).reshape({rows, full / m_, m_}), m_).reshape({rows, full}));
    if (cols > full)
      mask.narrow(1, full, cols - full)
          .copy_(keep_top(s.narrow(1, full, cols - full).reshape({rows, 1, cols - full}), cols - full).reshape({rows, -1}));
    return mask.reshape(scores.sizes());
  }
  bool check(const torch::Tensor& mask) const override {
    auto mm = as_matrix(mask);
    if (!((mm == 0) | (mm == 1)).all().item<bool>()) return false;
    const std::int64_t rows = mm.size(0), cols = mm.size(1), full = cols / m_ * m_;
    if (full > 0 && (mm.narrow(1, 0, full).reshape({rows, full / m_, m_}).sum(-1) > n_).any().item<bool>()) return false;
    if (cols > full && (mm.narrow(1, full, cols - full).sum(-1) > n_).any().item<bool>()) return false;
    return true;
  }

 private:
  std::int64_t n_, m_;
};

// r×c blocks of the weight matrix go or stay together; a block's score is the mean score of
// its weights (blocks on ragged edges are smaller). Blocks are zeroed lowest score first
// (ties to the lower block index) while the zeros stay within half a block of the request.
class BlockPattern : public Pattern {
 public:
  BlockPattern(std::int64_t r, std::int64_t c) : r_(r), c_(c) {}
  std::string name() const override { return fmt::format("block:{}x{}", r_, c_); }
  torch::Tensor mask(const torch::Tensor& scores, std::int64_t zeros) const override {
    auto s = as_matrix(scores.detach()).to(torch::kFloat64);
    const std::int64_t rows = s.size(0), cols = s.size(1);
    const std::int64_t br = (rows + r_ - 1) / r_, bc = (cols + c_ - 1) / c_;
    // Pad to whole blocks with NaN-free zeros and count real elements per block.
    auto padded = torch::zeros({br * r_, bc * c_}, torch::kFloat64);
    padded.narrow(0, 0, rows).narrow(1, 0, cols).copy_(s);
    auto real = torch::zeros({br * r_, bc * c_}, torch::kFloat64);
    real.narrow(0, 0, rows).narrow(1, 0, cols).fill_(1.0);
    auto blocks = [&](const torch::Tensor& t) { return t.reshape({br, r_, bc, c_}).sum({1, 3}).reshape({-1}); };
    auto size = blocks(real);
    auto score = blocks(padded) / size;
    auto order = std::get<1>(torch::sort(score, /*stable=*/true, 0, false));
    auto keep = torch::ones({br * bc}, torch::kFloat32);
    auto size_a = size.accessor<double, 1>();
    auto order_a = order.accessor<std::int64_t, 1>();
    std::int64_t done = 0;
    for (std::int64_t i = 0; i < br * bc; ++i) {
      const auto b = order_a[i];
      const auto n = static_cast<std::int64_t>(size_a[b]);
      if (2 * (done + n) > 2 * zeros + n) break;  // would overshoot by more than half this block
      keep[b] = 0.0f;
      done += n;
    }
    auto full = keep.reshape({br, 1, bc, 1}).expand({br, r_, bc, c_}).reshape({br * r_, bc * c_});
    return full.narrow(0, 0, rows).narrow(1, 0, cols).contiguous().reshape(scores.sizes());
  }
  bool check(const torch::Tensor& mask) const override {
    auto mm = as_matrix(mask).to(torch::kFloat64);
    if (!((mm == 0) | (mm == 1)).all().item<bool>()) return false;
    const std::int64_t rows = mm.size(0), cols = mm.size(1);
    const std::int64_t br = (rows + r_ - 1) / r_, bc = (cols + c_ - 1) / c_;
    auto ones = torch::zeros({br * r_, bc * c_}, torch::kFloat64), real = torch::zeros({br * r_, bc * c_}, torch::kFloat64);
    ones.narrow(0, 0, rows).narrow(1, 0, cols).copy_(mm);
    real.narrow(0, 0, rows).narrow(1, 0, cols).fill_(1.0);
    auto count = ones.reshape({br, r_, bc, c_}).sum({1, 3}), size = real.reshape({br, r_, bc, c_}).sum({1, 3});
    return ((count == 0) | (count == size)).all().item<bool>();
  }

 private:
  std::int64_t r_, c_;
};

}  // namespace

std::unique_ptr<Pattern> make_pattern(const std::string& name) {
  if (auto why = pattern_error(name); !why.empty()) fail("pattern '" + name + "'", why);
  if (name == "unstructured") return std::make_unique<UnstructuredPattern>();
  if (name == "row-balanced") return std::make_unique<RowBalancedPattern>();
  if (name.rfind("block:", 0) == 0) {
    const auto x = name.find('x', 6);
    return std::make_unique<BlockPattern>(std::stoll(name.substr(6, x - 6)), std::stoll(name.substr(x + 1)));
  }
  const auto colon = name.find(':');
  return std::make_unique<NMPattern>(std::stoll(name.substr(0, colon)), std::stoll(name.substr(colon + 1)));
}

}  // namespace prunus
