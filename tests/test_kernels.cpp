// Every kernel variant (each ISA this CPU has, 1..3 threads) against the scalar reference
// and a double-precision dense product, on random shapes, sparsities and edge cases.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "kernels/kernels_internal.h"
#include "kernels/simd_batch.h"
#include "prunus/kernels.h"

namespace k = prunus::kernels;

namespace {

struct Case {
  std::int64_t rows, cols;
  double sparsity;
};

std::vector<float> random_sparse(std::int64_t rows, std::int64_t cols, double sparsity, std::mt19937& rng) {
  std::vector<float> w(static_cast<std::size_t>(rows * cols));
  std::uniform_real_distribution<float> val(-1, 1);
  std::bernoulli_distribution keep(1.0 - sparsity);
  for (auto& v : w) v = keep(rng) ? val(rng) : 0.0f;
  return w;
}

// Keeps n of every m along rows (largest |w|), as an N:M pruner would.
std::vector<float> random_nm(std::int64_t rows, std::int64_t cols, int n, int m, std::mt19937& rng, bool sparser) {
  auto w = random_sparse(rows, cols, 0.0, rng);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t g = 0; g < cols; g += m) {
      std::vector<int> order(m);
      for (int j = 0; j < m; ++j) order[j] = j;
      std::shuffle(order.begin(), order.end(), rng);
      const int keep = sparser ? n / 2 : n;  // some groups with fewer than n non-zeros
      for (int j = keep; j < m; ++j) w[r * cols + g + order[j]] = 0.0f;
    }
  return w;
}

// Y = X·Wᵀ in double, and the bound Σ|w||x| for the tolerance.
void reference(const std::vector<float>& w, std::int64_t rows, std::int64_t cols, const std::vector<float>& x,
               std::int64_t batch, std::vector<double>& y, std::vector<double>& bound) {
  y.assign(static_cast<std::size_t>(batch * rows), 0.0);
  bound.assign(y.size(), 0.0);
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t c = 0; c < cols; ++c) {
        const double p = double(w[r * cols + c]) * double(x[b * cols + c]);
        y[b * rows + r] += p;
        bound[b * rows + r] += std::fabs(p);
      }
}

template <class Format>
void check_all_variants(const Format& f, const std::vector<float>& w, std::int64_t rows, std::int64_t cols,
                        std::mt19937& rng, const std::string& what) {
  for (std::int64_t batch : {1, 2, 3, 17, 64, 65, 130}) {  // 130: 8-vector runs and a partial chunk
    std::vector<float> x(static_cast<std::size_t>(batch * cols));
    std::uniform_real_distribution<float> val(-2, 2);
    for (auto& v : x) v = val(rng);
    std::vector<double> ref, bound;
    reference(w, rows, cols, x, batch, ref, bound);
    // The same product feature-major: Xᵀ in, Yᵀ out.
    std::vector<float> xt(x.size());
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t c = 0; c < cols; ++c) xt[c * batch + b] = x[b * cols + c];
    for (k::Isa isa : k::supported_isas())
      for (int threads : {1, 2, 3})
        for (auto layout : {k::ActivationLayout::BatchMajor, k::ActivationLayout::FeatureMajor}) {
          const bool fm = layout == k::ActivationLayout::FeatureMajor;
          std::vector<float> y(static_cast<std::size_t>(batch * rows), std::nanf(""));
          k::Options opt{isa, threads, 0.0};  // 0: split even tiny products
          opt.layout = layout;
          k::matmul(f, fm ? xt.data() : x.data(), batch, y.data(), opt);
          for (std::int64_t b = 0; b < batch; ++b)
            for (std::int64_t r = 0; r < rows; ++r) {
              const std::size_t i = std::size_t(b * rows + r);
              const float got = fm ? y[std::size_t(r * batch + b)] : y[i];
              ASSERT_LE(std::fabs(double(got) - ref[i]), 1e-5 * bound[i] + 1e-6)
                  << what << " isa=" << k::isa_name(isa) << " threads=" << threads << " batch=" << batch
                  << (fm ? " feature-major" : "") << " row=" << r << " sample=" << b;
            }
        }
  }
}

template <class Format>
void check_round_trip(const Format& f, const std::vector<float>& w, std::int64_t rows, std::int64_t cols,
                      const std::string& what) {
  std::vector<float> back(w.size(), 1.0f);
  k::to_dense(f, back.data());
  for (std::size_t i = 0; i < w.size(); ++i) {
    const float expect = w[i] == 0.0f ? 0.0f : w[i];  // -0.0 comes back as +0.0
    ASSERT_EQ(std::memcmp(&back[i], &expect, 4), 0) << what << " at " << i;
  }
}

const std::vector<Case> kShapes = {
    {1, 1, 0.0},   {1, 37, 0.5},  {7, 1, 0.3},    {5, 5, 1.0},     {13, 70, 0.9},  {64, 64, 0.0},
    {33, 129, 0.7}, {100, 300, 0.95}, {17, 1000, 0.5}, {3, 4096, 0.8}, {40, 96, 0.99},
};

// Every shape of kShapes with a fresh random matrix: round trip, then every variant.
template <class Convert>
void check_on_every_shape(std::mt19937& rng, const std::string& name, Convert convert) {
  for (const auto& c : kShapes) {
    auto w = random_sparse(c.rows, c.cols, c.sparsity, rng);
    auto f = convert(w.data(), c.rows, c.cols);
    check_round_trip(f, w, c.rows, c.cols, name);
    check_all_variants(f, w, c.rows, c.cols, rng, name + " " + std::to_string(c.rows) + "x" + std::to_string(c.cols));
  }
}

}  // namespace

TEST(Kernels, ReportsWhichIsasAreTested) {
  std::string isas;
  for (auto i : k::supported_isas()) isas += std::string(k::isa_name(i)) + " ";
  std::printf("CPU features: %s\nkernel variants tested here: %s\n", k::cpu_features().c_str(), isas.c_str());
  if (!k::isa_supported(k::Isa::Avx512))
    std::printf("NOTE: this CPU has no AVX-512: the AVX-512 kernels are compiled but not run here\n");
  EXPECT_TRUE(k::isa_supported(k::Isa::Scalar));
}

TEST(Kernels, CsrMatchesReference) {
  std::mt19937 rng(1);
  check_on_every_shape(rng, "csr", k::to_csr);
  // Wide matrices use 32-bit column indices.
  // The AVX-512 batch-1 kernel has two ways to read x (scalar loads, gathers): both are checked.
  const bool scalar_loads = prunus::kernels::avx512::g_csr_scalar_loads;
  prunus::kernels::avx512::g_csr_scalar_loads = !scalar_loads;
  for (const auto& c : kShapes) {
    auto w2 = random_sparse(c.rows, c.cols, c.sparsity, rng);
    check_all_variants(k::to_csr(w2.data(), c.rows, c.cols), w2, c.rows, c.cols, rng,
                       std::string(scalar_loads ? "gather " : "scalar-load ") + "csr " + std::to_string(c.rows) + "x" +
                           std::to_string(c.cols));
  }
  prunus::kernels::avx512::g_csr_scalar_loads = scalar_loads;
  auto w = random_sparse(3, 70000, 0.99, rng);
  auto f = k::to_csr(w.data(), 3, 70000);
  EXPECT_FALSE(f.narrow());
  check_round_trip(f, w, 3, 70000, "csr wide");
  check_all_variants(f, w, 3, 70000, rng, "csr wide");
}

TEST(Kernels, BitmaskMatchesReference) {
  std::mt19937 rng(2);
  // The AVX-512 family has a VBMI2 path and a plain one: test both where the CPU allows.
  const bool vbmi2 = prunus::kernels::avx512::g_use_vbmi2;
  if (!vbmi2) std::printf("NOTE: no AVX-512 VBMI2 here: only the plain AVX-512 bitmask path is tested\n");
  for (bool use : {false, true}) {
    if (use && !vbmi2) continue;
    prunus::kernels::avx512::g_use_vbmi2 = use;
    prunus::kernels::avx512::g_vbmi2_max_density = use ? 1.0 : 0.2;
  check_on_every_shape(rng, use ? "vbmi2 bitmask" : "bitmask", k::to_bitmask);
  }
  prunus::kernels::avx512::g_use_vbmi2 = vbmi2;
  prunus::kernels::avx512::g_vbmi2_max_density = 0.2;
  // The AVX-512 batch-1 kernel takes rows in pairs on wide matrices: force it everywhere (odd
  // row counts leave one row to the single-row loop).
  const std::int64_t pair_cols = prunus::kernels::avx512::g_bitmask_pair_cols;
  prunus::kernels::avx512::g_bitmask_pair_cols = 0;
  prunus::kernels::avx512::g_use_vbmi2 = false;
  check_on_every_shape(rng, "row-pair bitmask", k::to_bitmask);
  prunus::kernels::avx512::g_use_vbmi2 = vbmi2;
  prunus::kernels::avx512::g_bitmask_pair_cols = pair_cols;
}

TEST(Kernels, BsrMatchesReference) {
  std::mt19937 rng(3);
  const std::pair<int, int> blocks[] = {{4, 4}, {8, 8}, {1, 4}, {4, 1}, {2, 8}, {3, 5}, {16, 4}};
  for (auto [br, bc] : blocks)
    for (const auto& c : kShapes) {
      // Block-sparse: zero whole blocks, and a few zeros inside kept blocks.
      auto w = random_sparse(c.rows, c.cols, 0.05, rng);
      std::bernoulli_distribution drop(c.sparsity);
      for (std::int64_t R = 0; R < c.rows; R += br)
        for (std::int64_t C = 0; C < c.cols; C += bc)
          if (drop(rng))
            for (std::int64_t i = R; i < std::min<std::int64_t>(c.rows, R + br); ++i)
              for (std::int64_t j = C; j < std::min<std::int64_t>(c.cols, C + bc); ++j) w[i * c.cols + j] = 0.0f;
      auto f = k::to_bsr(w.data(), c.rows, c.cols, br, bc);
      const std::string what = "bsr " + std::to_string(br) + "x" + std::to_string(bc) + " on " +
                               std::to_string(c.rows) + "x" + std::to_string(c.cols);
      check_round_trip(f, w, c.rows, c.cols, what);
      check_all_variants(f, w, c.rows, c.cols, rng, what);
    }
}

TEST(Kernels, NmMatchesReference) {
  std::mt19937 rng(4);
  const std::pair<int, int> nms[] = {{2, 4}, {4, 8}, {1, 4}, {3, 4}, {2, 8}, {3, 8}, {8, 16}};
  const std::pair<int, int> shapes[] = {{1, 16}, {5, 32}, {9, 48}, {33, 64}, {64, 96}, {3, 4096}, {20, 200}};
  for (auto [n, m] : nms)
    for (auto [rows, cols] : shapes) {
      if (cols % m) continue;
      for (bool sparser : {false, true}) {
        auto w = random_nm(rows, cols, n, m, rng, sparser);
        auto f = k::to_nm(w.data(), rows, cols, n, m);
        const std::string what = std::to_string(n) + ":" + std::to_string(m) + " on " + std::to_string(rows) + "x" +
                                 std::to_string(cols);
        check_round_trip(f, w, rows, cols, what);
        check_all_variants(f, w, rows, cols, rng, what);
      }
    }
}

TEST(Kernels, SellMatchesReference) {
  std::mt19937 rng(7);
  check_on_every_shape(rng, "sell", k::to_sell);
  // Rows of very different lengths (the sort puts them in different slices), empty rows, a
  // full 32-column window, and a last window of one column.
  auto w = random_sparse(45, 97, 0.9, rng);
  for (std::int64_t c = 0; c < 97; ++c) w[3 * 97 + c] = 0.5f + float(c);  // a dense row
  for (std::int64_t c = 0; c < 97; ++c) w[20 * 97 + c] = 0.0f;            // an empty row
  for (std::int64_t r = 0; r < 45; ++r) w[r * 97 + 96] = r % 2 ? 0.0f : -1.5f;
  auto f = k::to_sell(w.data(), 45, 97);
  EXPECT_EQ(f.nnz, std::count_if(w.begin(), w.end(), [](float v) { return v != 0.0f; }));
  check_round_trip(f, w, 45, 97, "sell ragged");
  check_all_variants(f, w, 45, 97, rng, "sell ragged");
  // The row grouping is a seeded search: the same weights give the same layout.
  auto w2 = random_sparse(300, 784, 0.92, rng);
  auto g1 = k::to_sell(w2.data(), 300, 784), g2 = k::to_sell(w2.data(), 300, 784);
  EXPECT_EQ(g1.row_of_lane, g2.row_of_lane);
  EXPECT_EQ(g1.pos, g2.pos);
  EXPECT_TRUE(std::equal(g1.values.begin(), g1.values.end(), g2.values.begin(), g2.values.end()));
  check_round_trip(g1, w2, 300, 784, "sell 300x784");
  std::vector<float> wide(std::size_t(65536) * 32 + 1, 0.0f);
  EXPECT_THROW(k::to_sell(wide.data(), 1, std::int64_t(wide.size())), std::invalid_argument);
}

TEST(Kernels, ColumnPanelsOfLargeBatchesMatchReference) {
  // Large batches walk the columns in panels sized to L2 (4096 columns at batch 256); a 4 KiB
  // budget makes every panel 64 columns wherever X^T passes 16 KiB (batch 17 on 1000 columns,
  // batch 64 on 129 and up), so rows cross several panel edges, including a ragged last panel and N:M
  // groups that straddle an edge (m = 3, 6); rows go in blocks of 16 (33 and 17 rows: a ragged block).
  // CSR, the bitmask, BSR and N:M.
  const std::int64_t saved = k::detail::g_panel_bytes;
  k::detail::g_panel_bytes = 4096;
  std::mt19937 rng(7);
  for (const Case& c : std::vector<Case>{{9, 200, 0.7}, {33, 129, 0.0}, {5, 1000, 0.95}, {17, 64, 0.5}}) {
    auto w = random_sparse(c.rows, c.cols, c.sparsity, rng);
    const std::string shape = std::to_string(c.rows) + "x" + std::to_string(c.cols);
    check_all_variants(k::to_csr(w.data(), c.rows, c.cols), w, c.rows, c.cols, rng, "paneled csr " + shape);
    check_all_variants(k::to_bitmask(w.data(), c.rows, c.cols), w, c.rows, c.cols, rng, "paneled bitmask " + shape);
    // BSR walks its blocks row by row where panels start (zeros inside blocks skipped; ragged
    // last block row and column on 33x129).
    check_all_variants(k::to_bsr(w.data(), c.rows, c.cols, 4, 4), w, c.rows, c.cols, rng, "paneled bsr 4x4 " + shape);
    check_all_variants(k::to_bsr(w.data(), c.rows, c.cols, 2, 8), w, c.rows, c.cols, rng, "paneled bsr 2x8 " + shape);
  }
  for (auto [n, m] : std::vector<std::pair<int, int>>{{2, 4}, {1, 3}, {2, 6}, {4, 8}}) {
    const std::int64_t rows = 11, cols = 24 * m;
    auto w = random_nm(rows, cols, n, m, rng, false);
    check_all_variants(k::to_nm(w.data(), rows, cols, n, m), w, rows, cols, rng,
                       "paneled " + std::to_string(n) + ":" + std::to_string(m));
  }
  k::detail::g_panel_bytes = saved;
}

TEST(Kernels, RowsThatShareColumnsMatchReference) {
  // Batch > 1 products walk four rows at a time where they share their columns (a 4×4-block
  // pattern held as CSR or a bitmask, BSR with 4-row blocks). Block rows are ragged here: 4×4
  // blocks on 30 rows (a last block row of 2), rows 8..11 made to differ in one column, and
  // thread ranges (2 and 3 threads) that start inside a group. With and without column panels,
  // and with the grouping off, every variant against the reference.
  std::mt19937 rng(11);
  std::bernoulli_distribution keep(0.3);
  std::uniform_real_distribution<float> val(-1, 1);
  const std::int64_t rows = 30, cols = 200;
  std::vector<float> w(static_cast<std::size_t>(rows * cols), 0.0f);
  for (std::int64_t R = 0; R < rows; R += 4)
    for (std::int64_t C = 0; C < cols; C += 4)
      if (keep(rng))
        for (std::int64_t i = R; i < std::min<std::int64_t>(rows, R + 4); ++i)
          for (std::int64_t j = C; j < C + 4; ++j) w[i * cols + j] = val(rng);
  w[9 * cols + 3] = w[9 * cols + 3] == 0.0f ? 0.5f : 0.0f;
  const auto csr = k::to_csr(w.data(), rows, cols);
  const auto bitmask = k::to_bitmask(w.data(), rows, cols);
  const auto bsr = k::to_bsr(w.data(), rows, cols, 4, 4);
  // The grouping sees what the pattern holds: rows 0..3 and 4..7 share, 8..11 and 2..5 do
  // not (rows 28..29 are too few for a group and go one by one).
  EXPECT_TRUE(k::detail::CsrRowGroups{csr}.shares(0));
  EXPECT_TRUE(k::detail::BitmaskRowGroups{bitmask}.shares(4));
  EXPECT_FALSE(k::detail::CsrRowGroups{csr}.shares(8));
  EXPECT_FALSE(k::detail::BitmaskRowGroups{bitmask}.shares(8));
  EXPECT_FALSE(k::detail::CsrRowGroups{csr}.shares(2));
  const std::int64_t saved_panel = k::detail::g_panel_bytes;
  const bool saved_groups = k::detail::g_row_groups;
  for (std::int64_t panel : {saved_panel, std::int64_t{4096}})
    for (bool groups : {true, false}) {
      k::detail::g_panel_bytes = panel;
      k::detail::g_row_groups = groups;
      const std::string what = std::string(groups ? "grouped" : "ungrouped") + (panel == 4096 ? " paneled " : " ");
      check_all_variants(csr, w, rows, cols, rng, what + "csr 4x4 blocks");
      check_all_variants(bitmask, w, rows, cols, rng, what + "bitmask 4x4 blocks");
      check_all_variants(bsr, w, rows, cols, rng, what + "bsr 4x4");
    }
  // Whole columns pruned: every row shares (wide matrix, 32-bit column indices).
  std::vector<float> wide(static_cast<std::size_t>(9 * 70000), 0.0f);
  for (std::int64_t c = 0; c < 70000; c += 97)
    for (std::int64_t r = 0; r < 9; ++r) wide[r * 70000 + c] = val(rng);
  const auto wide_csr = k::to_csr(wide.data(), 9, 70000);
  EXPECT_FALSE(wide_csr.narrow());
  EXPECT_TRUE(k::detail::CsrRowGroups{wide_csr}.shares(5));
  check_all_variants(wide_csr, wide, 9, 70000, rng, "column-pruned csr");
  k::detail::g_panel_bytes = saved_panel;
  k::detail::g_row_groups = saved_groups;
}

TEST(Kernels, NmRejectsMatricesThatBreakThePattern) {
  std::vector<float> w = {1, 2, 3, 0, 1, 0, 0, 1};
  EXPECT_THROW(k::to_nm(w.data(), 1, 8, 2, 4), std::invalid_argument);  // 3 non-zeros in a group of 4
  EXPECT_THROW(k::to_nm(w.data(), 1, 6, 1, 4), std::invalid_argument);  // cols not a multiple of m
}

TEST(Kernels, DensePathMatchesReference) {
  std::mt19937 rng(5);
  for (const auto& c : kShapes) {
    auto w = random_sparse(c.rows, c.cols, 0.0, rng);
    for (std::int64_t batch : {1, 5}) {
      std::vector<float> x(static_cast<std::size_t>(batch * c.cols), 0.5f), y(static_cast<std::size_t>(batch * c.rows));
      std::vector<double> ref, bound;
      reference(w, c.rows, c.cols, x, batch, ref, bound);
      k::matmul_dense(w.data(), c.rows, c.cols, x.data(), batch, y.data(), {k::best_isa(), 2});
      for (std::size_t i = 0; i < y.size(); ++i) ASSERT_LE(std::fabs(y[i] - ref[i]), 1e-5 * bound[i] + 1e-6);
      // Feature-major: Xᵀ in (x is constant, so Xᵀ holds the same values), Yᵀ out.
      k::Options fm{k::best_isa(), 2, 0.0};
      fm.layout = k::ActivationLayout::FeatureMajor;
      std::vector<float> yt(y.size(), std::nanf(""));
      k::matmul_dense(w.data(), c.rows, c.cols, x.data(), batch, yt.data(), fm);
      for (std::int64_t b = 0; b < batch; ++b)
        for (std::int64_t r = 0; r < c.rows; ++r) {
          const std::size_t i = std::size_t(b * c.rows + r);
          ASSERT_LE(std::fabs(yt[std::size_t(r * batch + b)] - ref[i]), 1e-5 * bound[i] + 1e-6);
        }
    }
  }
}

TEST(Kernels, SizesFollowTheFormats) {
  std::mt19937 rng(6);
  auto w = random_sparse(300, 784, 0.9, rng);
  auto csr = k::to_csr(w.data(), 300, 784);
  EXPECT_EQ(csr.bytes(), csr.nnz() * 6 + 301 * 4);
  auto bm = k::to_bitmask(w.data(), 300, 784);
  EXPECT_EQ(bm.nnz(), csr.nnz());
  EXPECT_EQ(bm.bytes(), 300u * 13 * 8 + csr.nnz() * 4 + 301 * 4);
  // SELL: 16 lanes a step (4-byte value, 1-byte position), a 4-byte descriptor per window.
  auto sell = k::to_sell(w.data(), 300, 784);
  EXPECT_EQ(sell.nnz, csr.nnz());
  std::uint64_t steps = 0;
  for (const auto& win : sell.windows) steps += win.steps;
  EXPECT_EQ(sell.values.size(), steps * 16);
  EXPECT_EQ(sell.bytes(), steps * 16 * 5 + sell.windows.size() * 4 + (300 + 2 * 20) * 4);
}

// The weight allocator: every array on a 64-byte line; arrays of 2 MiB and more start on a
// 2 MiB boundary, end with their mapping (no huge page faulted past the end) and carry the
// huge-page advice (VmFlags "hg"). Whether the kernel then backs them with huge pages depends
// on its THP setting and free memory, so that is not asserted.
TEST(Kernels, WeightArraysAreAlignedAndAdvisedIntoHugePages) {
  k::AlignedVector<float> small(1000, 1.0f);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(small.data()) % 64, 0u);
  if (const char* v = std::getenv("PRUNUS_HUGE_PAGES"); v && v[0] == '0')
    GTEST_SKIP() << "PRUNUS_HUGE_PAGES=0: large arrays are plain 64-byte-aligned allocations";
  const std::size_t n = (std::size_t(5) << 20) / 4 + 123;  // 5 MiB and a bit: a ragged end
  k::AlignedVector<float> big(n, 2.0f);
  const auto begin = reinterpret_cast<std::uintptr_t>(big.data());
  EXPECT_EQ(begin % (std::size_t(2) << 20), 0u);
  EXPECT_EQ(big.front(), 2.0f);
  EXPECT_EQ(big.back(), 2.0f);
  const std::uintptr_t end = begin + (n * 4 + 4095) / 4096 * 4096;
  std::ifstream smaps("/proc/self/smaps");
  if (!smaps) GTEST_SKIP() << "no /proc/self/smaps on this system: the huge-page advice is not checked";
  std::string line;
  bool found = false, advised = false;
  std::uintptr_t lo = 0, hi = 0;
  while (std::getline(smaps, line)) {
    if (std::uintptr_t a, b; std::sscanf(line.c_str(), "%lx-%lx ", &a, &b) == 2) {  // a mapping's first line
      found = a <= begin && begin < b;
      if (found) lo = a, hi = b;
    } else if (found && line.rfind("VmFlags:", 0) == 0) {
      advised = line.find(" hg") != std::string::npos;
      break;
    }
  }
  EXPECT_EQ(lo, begin);
  EXPECT_EQ(hi, end) << "the mapping must end with the array";
  EXPECT_TRUE(advised) << "MADV_HUGEPAGE missing on the weight array's mapping";
  // Copies and moves keep working through the same allocator (a vector reallocates).
  k::AlignedVector<float> copy = big;
  copy.push_back(3.0f);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(copy.data()) % (std::size_t(2) << 20), 0u);
  EXPECT_EQ(copy[n - 1], 2.0f);
  EXPECT_EQ(copy[n], 3.0f);
}

// The per-layer format choice: the product is the same whatever is chosen, a very sparse
// layer ends up smaller and no slower than dense (as measured), a dense one stays dense.
TEST(SparseLinear, ChoosesAFormatThatPaysAndComputesTheSameProduct) {
  std::mt19937 rng(11);
  struct C {
    std::int64_t rows, cols;
    double sparsity;
    bool nm;
    std::int64_t batch;
  };
  // A batch-1 product only pays once the dense weights leave L2 (a 512² GEMV from L2 takes
  // ~15 µs on Zen 4, as long as the sparse kernels' per-row work): 2048² at 95% is 16 MiB.
  for (const C c : {C{2048, 2048, 0.95, false, 1}, C{512, 512, 0.9, false, 16}, C{256, 384, 0.0, false, 1},
                    C{300, 256, 0.5, true, 1}, C{97, 130, 0.7, false, 5}}) {
    const auto w = c.nm ? random_nm(c.rows, c.cols, 2, 4, rng, false) : random_sparse(c.rows, c.cols, c.sparsity, rng);
    const auto lin = k::SparseLinear::build(w.data(), c.rows, c.cols, c.batch);
    const std::string what = std::to_string(c.rows) + "x" + std::to_string(c.cols) + " batch " + std::to_string(c.batch) + " " + std::to_string(lin.measured_seconds() * 1e6) + " us vs dense " + std::to_string(lin.measured_dense_seconds() * 1e6) + " us " +
                             k::SparseLinear::format_name(lin.format());
    EXPECT_LE(lin.measured_seconds(), lin.measured_dense_seconds() * 1.03) << what;
    if (c.sparsity == 0.0 && !c.nm) EXPECT_EQ(lin.format(), k::SparseLinear::Format::Dense) << what;
    if (c.sparsity >= 0.9) {  // these must pay on any x86 with AVX2
      EXPECT_NE(lin.format(), k::SparseLinear::Format::Dense) << what;
      EXPECT_LT(lin.bytes(), lin.dense_bytes() / 3) << what;
    }
    std::vector<float> x(static_cast<std::size_t>(c.batch * c.cols));
    std::uniform_real_distribution<float> u(-1, 1);
    for (auto& v : x) v = u(rng);
    std::vector<float> y(static_cast<std::size_t>(c.batch * c.rows));
    lin.forward(x.data(), c.batch, y.data());
    std::vector<double> ref, bound;
    reference(w, c.rows, c.cols, x, c.batch, ref, bound);
    for (std::size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], ref[i], 1e-5 * (bound[i] + 1)) << what << " at " << i;
  }
}

// ------------------------------------------------------------------ INT8
namespace {

// Every ISA and thread count gives the scalar reference's bits (integer sums are exact), and
// the result stays within the quantization error of the fp32 product.
template <class Format>
void check_int8_variants(const Format& f, const std::vector<float>& w, std::int64_t rows, std::int64_t cols,
                         std::mt19937& rng, const std::string& what) {
  for (std::int64_t batch : {1, 2, 5, 64}) {
    std::vector<float> x(static_cast<std::size_t>(batch * cols));
    std::uniform_real_distribution<float> val(-2, 2);
    for (auto& v : x) v = val(rng);
    std::vector<double> ref, bound;
    reference(w, rows, cols, x, batch, ref, bound);
    for (float act_scale : {0.0f, 2.5f / 127}) {  // dynamic per row; static, some values saturate
      std::vector<float> expect(static_cast<std::size_t>(batch * rows));
      k::matmul(f, x.data(), batch, expect.data(), {k::Isa::Scalar, 1, 0.0}, act_scale);
      if (act_scale == 0)  // each factor off by at most half its step: |Δ| ≤ Σ |w|·a/2 + |x|·s/2 + a·s/4
        for (std::int64_t b = 0; b < batch; ++b) {
          double a = 0;
          for (std::int64_t c = 0; c < cols; ++c) a = std::max(a, std::fabs(double(x[b * cols + c])) / 127);
          for (std::int64_t r = 0; r < rows; ++r) {
            double s = 0, tol = 0;
            for (std::int64_t c = 0; c < cols; ++c) s = std::max(s, std::fabs(double(w[r * cols + c])) / 127);
            for (std::int64_t c = 0; c < cols; ++c)
              if (w[r * cols + c] != 0.0f)
                tol += std::fabs(w[r * cols + c]) * a / 2 + std::fabs(x[b * cols + c]) * s / 2 + a * s / 4;
            const auto i = static_cast<std::size_t>(b * rows + r);
            ASSERT_LE(std::fabs(double(expect[i]) - ref[i]), tol * 1.001 + 1e-6) << what << " batch " << batch;
          }
        }
      for (k::Isa isa : k::supported_isas())
        for (int threads : {1, 2, 3}) {
          std::vector<float> y(expect.size(), std::nanf(""));
          k::matmul(f, x.data(), batch, y.data(), {isa, threads, 0.0}, act_scale);
          ASSERT_EQ(std::memcmp(y.data(), expect.data(), y.size() * 4), 0)
              << what << " isa=" << k::isa_name(isa) << " threads=" << threads << " batch=" << batch
              << " static=" << (act_scale > 0);
        }
      // Feature-major (Xᵀ in, Yᵀ out) gives the same bits, transposed.
      std::vector<float> xt(x.size()), yt(expect.size(), std::nanf(""));
      for (std::int64_t b = 0; b < batch; ++b)
        for (std::int64_t c = 0; c < cols; ++c) xt[c * batch + b] = x[b * cols + c];
      k::Options fm{k::best_isa(), 2, 0.0};
      fm.layout = k::ActivationLayout::FeatureMajor;
      k::matmul(f, xt.data(), batch, yt.data(), fm, act_scale);
      for (std::int64_t b = 0; b < batch; ++b)
        for (std::int64_t r = 0; r < rows; ++r)
          ASSERT_EQ(yt[r * batch + b], expect[b * rows + r]) << what << " feature-major batch=" << batch;
    }
  }
}

template <class Format>
void check_int8_dequantized(const Format& f, const std::vector<float>& w, std::int64_t rows, std::int64_t cols,
                            const std::string& what) {
  std::vector<float> back(w.size(), 1.0f);
  k::to_dense(f, back.data());
  for (std::int64_t r = 0; r < rows; ++r) {
    float amax = 0;
    for (std::int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(w[r * cols + c]));
    for (std::int64_t c = 0; c < cols; ++c) {
      const float a = w[r * cols + c], b = back[r * cols + c];
      if (a == 0.0f) ASSERT_EQ(b, 0.0f) << what << ": a zero must stay zero";
      else ASSERT_LE(std::fabs(a - b), amax / 127 * 0.5001f) << what;
    }
  }
}

}  // namespace

TEST(Kernels, Int8HandComputedProduct) {
  // w = [1, 0, -0.5]: s = 1/127, q = [127, 0, -64] (-63.5 rounds to even); x = [2, 5, -1]:
  // a = 5/127, x_q = [51, 127, -25]; Σ = 127·51 + (-64)(-25) = 8077.
  const std::vector<float> w = {1.0f, 0.0f, -0.5f}, x = {2.0f, 5.0f, -1.0f};
  const auto f = k::quantize_bitmask(w.data(), 1, 3);
  ASSERT_EQ(f.nnz(), 2);
  EXPECT_EQ(f.values[0], 127);
  EXPECT_EQ(f.values[1], -64);
  const float expect = static_cast<float>(8077) * ((5.0f / 127.0f) * (1.0f / 127.0f));
  for (k::Isa isa : k::supported_isas()) {
    float y = 0;
    k::matmul(f, x.data(), 1, &y, {isa, 1, 0.0});
    EXPECT_EQ(y, expect) << k::isa_name(isa);
  }
}

TEST(Kernels, Int8BitmaskMatchesReference) {
  std::printf("INT8 AVX-512 (VNNI + VBMI2) kernels %s\n", k::int8_vnni_supported() ? "tested" : "not available here: AVX2 runs");
  std::mt19937 rng(11);
  for (const auto& c : kShapes) {
    auto w = random_sparse(c.rows, c.cols, c.sparsity, rng);
    const auto f = k::quantize_bitmask(w.data(), c.rows, c.cols);
    const std::string what = "int8 bitmask " + std::to_string(c.rows) + "x" + std::to_string(c.cols);
    check_int8_dequantized(f, w, c.rows, c.cols, what);
    check_int8_variants(f, w, c.rows, c.cols, rng, what);
  }
}

TEST(Kernels, Int8NmMatchesReference) {
  std::mt19937 rng(12);
  const std::pair<int, int> nms[] = {{2, 4}, {4, 8}, {1, 4}, {3, 4}, {8, 16}};
  const std::pair<int, int> shapes[] = {{1, 16}, {5, 32}, {9, 48}, {33, 64}, {7, 192}, {3, 4096}, {20, 200}};
  for (auto [n, m] : nms)
    for (auto [rows, cols] : shapes) {
      if (cols % m) continue;
      for (bool sparser : {false, true}) {
        auto w = random_nm(rows, cols, n, m, rng, sparser);
        const auto f = k::quantize_nm(w.data(), rows, cols, n, m);
        const std::string what = "int8 " + std::to_string(n) + ":" + std::to_string(m) + " on " + std::to_string(rows) +
                                 "x" + std::to_string(cols);
        check_int8_dequantized(f, w, rows, cols, what);
        check_int8_variants(f, w, rows, cols, rng, what);
      }
    }
}

TEST(Kernels, Int8RejectsWhatItCannotHold) {
  std::vector<float> w = {1, 2, 3, 0, 1, 0, 0, 1};
  EXPECT_THROW(k::quantize_nm(w.data(), 1, 8, 2, 4), std::invalid_argument);
  EXPECT_THROW(k::quantize_nm(w.data(), 1, 6, 1, 4), std::invalid_argument);
  std::vector<float> wide(70000, 1.0f);
  EXPECT_THROW(k::quantize_bitmask(wide.data(), 1, 70000), std::invalid_argument);  // int32 sums could overflow
}

// The direct convolution against a double-precision product of the input windows: every ISA,
// 1..3 threads, odd shapes (one pixel, stride 2 and 3, padding wider than the stride, more
// than 16 channels, kernels as large as the padded input).
TEST(Kernels, DirectConvMatchesReference) {
  struct ConvCase {
    std::int64_t h, w, cin, rows, k, stride, pad;
  };
  const std::vector<ConvCase> cases = {
      {28, 28, 1, 6, 5, 1, 2},
      {14, 14, 6, 16, 5, 1, 0},
      {7, 9, 3, 17, 3, 2, 1},
      {5, 5, 2, 33, 5, 1, 2},
      {1, 1, 1, 1, 1, 1, 0},
      {8, 8, 16, 40, 3, 1, 1},
      {6, 11, 5, 8, 3, 3, 0},
      {4, 4, 1, 9, 3, 1, 1},
      {3, 3, 4, 4, 7, 1, 2},
      {12, 10, 3, 12, 1, 2, 0},
      // Stride 1 with output rows of 8 or more also run the planar path: blocks that overlap
      // at the row's end, partial channel groups. Every stride-1 case also runs the flat path: runs
      // across rows (short and long, tails of 1..B-1 blocks, row ranges split between threads),
      // channel groups of 1..12 and several groups.
      {10, 13, 1, 3, 3, 1, 1},
      {12, 12, 1, 8, 3, 1, 0},
      {8, 8, 1, 1, 1, 1, 0},
      {9, 7, 1, 5, 3, 1, 1},
      {20, 27, 1, 4, 5, 1, 2},
      {6, 30, 1, 7, 3, 1, 0},
      {9, 8, 1, 8, 3, 1, 0},
      {16, 16, 1, 2, 5, 1, 2},
      {14, 14, 4, 9, 5, 1, 0},
      {28, 28, 1, 4, 5, 1, 2},
      {6, 5, 3, 15, 3, 1, 1},
      {3, 2, 2, 23, 1, 1, 0},
      {11, 12, 7, 6, 3, 1, 2},
      {9, 9, 2, 12, 3, 1, 1},
      {7, 9, 2, 24, 3, 1, 0},
      {4, 40, 2, 1, 3, 1, 1},
      {5, 36, 3, 2, 3, 1, 0},
  };
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> val(-2, 2);
  for (const auto& c : cases) {
    const std::int64_t taps = c.k * c.k * c.cin;
    auto w = random_sparse(c.rows, taps, 0.3, rng);
    std::vector<float> bias(static_cast<std::size_t>(c.rows));
    for (auto& b : bias) b = val(rng);
    auto conv = k::pack_direct_conv(w.data(), bias.data(), c.rows, c.cin, c.k, c.stride, c.pad, c.h, c.w);
    ASSERT_EQ(conv.oh, (c.h + 2 * c.pad - c.k) / c.stride + 1);
    using Layout = k::DirectConv::Layout;
    for (Layout layout : {Layout::Channels, Layout::Planar, Layout::Flat}) {
      if ((layout == Layout::Planar && !conv.planar_applies()) || (layout == Layout::Flat && !conv.flat_applies()))
        continue;
      conv.layout = layout;
      const char* layout_name = layout == Layout::Planar ? " planar" : layout == Layout::Flat ? " flat" : " channel-vector";
      for (std::int64_t batch : {1, 2, 5}) {
        std::vector<float> x(static_cast<std::size_t>(batch * c.h * c.w * c.cin));
        for (auto& v : x) v = val(rng);
        const std::int64_t out = batch * conv.oh * conv.ow * c.rows;
        std::vector<double> ref(static_cast<std::size_t>(out)), bound(ref.size());
        for (std::int64_t n = 0; n < batch; ++n)
          for (std::int64_t oy = 0; oy < conv.oh; ++oy)
            for (std::int64_t ox = 0; ox < conv.ow; ++ox)
              for (std::int64_t r = 0; r < c.rows; ++r) {
                const std::size_t o = static_cast<std::size_t>(((n * conv.oh + oy) * conv.ow + ox) * c.rows + r);
                ref[o] = bias[r], bound[o] = std::fabs(bias[r]);
                for (std::int64_t ky = 0; ky < c.k; ++ky)
                  for (std::int64_t kx = 0; kx < c.k; ++kx)
                    for (std::int64_t ci = 0; ci < c.cin; ++ci) {
                      const std::int64_t iy = oy * c.stride - c.pad + ky, ix = ox * c.stride - c.pad + kx;
                      if (iy < 0 || iy >= c.h || ix < 0 || ix >= c.w) continue;
                      const double p = double(w[r * taps + (ky * c.k + kx) * c.cin + ci]) *
                                       double(x[((n * c.h + iy) * c.w + ix) * c.cin + ci]);
                      ref[o] += p, bound[o] += std::fabs(p);
                    }
              }
        for (k::Isa isa : k::supported_isas())
          for (int threads : {1, 2, 3}) {
            std::vector<float> y(static_cast<std::size_t>(out) + 16, std::nanf(""));
            k::conv_direct(conv, x.data(), batch, y.data(), {isa, threads, 0.0});
            for (std::int64_t i = 0; i < out; ++i)
              ASSERT_LE(std::fabs(double(y[i]) - ref[i]), 1e-5 * bound[i] + 1e-6)
                  << "conv " << c.h << "x" << c.w << "x" << c.cin << " -> " << c.rows << " k" << c.k << " s" << c.stride
                  << " p" << c.pad << layout_name << " isa=" << k::isa_name(isa)
                  << " threads=" << threads << " batch=" << batch << " i=" << i;
            for (std::int64_t i = out; i < out + 16; ++i) ASSERT_TRUE(std::isnan(y[i])) << "wrote past the output";
          }
      }
    }
  }
  EXPECT_THROW(k::pack_direct_conv(nullptr, nullptr, 1, 1, 5, 1, 0, 3, 3), std::invalid_argument);
  // Convolutions read NHWC activations only: a feature-major request is refused, not misread.
  std::vector<float> cw(9, 1.0f), cb(1, 0.0f), cx(2 * 16, 1.0f), cy(2 * 4);
  const auto small = k::pack_direct_conv(cw.data(), cb.data(), 1, 1, 3, 1, 0, 4, 4);
  k::Options fm;
  fm.layout = k::ActivationLayout::FeatureMajor;
  EXPECT_THROW(k::conv_direct(small, cx.data(), 2, cy.data(), fm), std::invalid_argument);
}
