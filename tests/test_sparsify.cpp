// The sparsifier: exact-k, scopes, schedules, masks held through training, bad weights.
#include <gtest/gtest.h>

#include <cmath>

#include "prunus/io.h"
#include "prunus/models.h"
#include "prunus/sparsify.h"

using namespace prunus;

namespace {

std::int64_t zeros(const torch::Tensor& t) { return t.numel() - t.count_nonzero().item<std::int64_t>(); }

std::vector<PrunedParam> random_params(std::vector<std::vector<std::int64_t>> shapes, std::uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<PrunedParam> out;
  for (std::size_t i = 0; i < shapes.size(); ++i)
    out.push_back({"p" + std::to_string(i), torch::randn(shapes[i])});
  return out;
}

std::unique_ptr<Sparsifier> make(std::vector<PrunedParam> params, const std::string& scope,
                                 std::unique_ptr<Schedule> schedule = nullptr) {
  if (!schedule) schedule = make_oneshot_schedule(0.5, 0);
  return std::make_unique<Sparsifier>(std::move(params), make_criterion("magnitude"), make_pattern("unstructured"),
                                      make_scope(scope), std::move(schedule));
}

}  // namespace

TEST(Sparsifier, OneShotIsExactForEveryTargetAndScope) {
  for (const std::string scope : {"layer", "global"}) {
    for (double s : {0.0, 0.1, 0.333, 0.5, 0.9, 0.97, 0.999}) {
      auto sp = make(random_params({{7, 13}, {31}, {5, 3, 3, 3}}, 3), scope);
      sp->prune_to(s);
      std::int64_t total = 0, total_zero = 0;
      for (const auto& p : sp->params()) {
        total += p.weight.numel();
        total_zero += zeros(p.weight);
        if (scope == "layer") EXPECT_EQ(zeros(p.weight), std::llround(s * double(p.weight.numel()))) << s;
      }
      if (scope == "global") EXPECT_EQ(total_zero, std::llround(s * double(total))) << s;
    }
  }
}

TEST(Sparsifier, TiesAreBrokenByPositionNotByThreshold) {
  // All weights equal: a `<= threshold` rule would prune everything.
  std::vector<PrunedParam> p = {{"a", torch::ones({4, 5})}, {"b", torch::ones({10})}};
  auto sp = make(p, "global");
  sp->prune_to(0.5);
  // 15 of 30 pruned: all 20 of the first layer go first? No: the lowest positions go first.
  EXPECT_EQ(zeros(p[0].weight) + zeros(p[1].weight), 15);
  EXPECT_EQ(zeros(p[0].weight), 15);  // earlier layer first
  auto flat = p[0].weight.reshape({-1});
  EXPECT_EQ(flat.narrow(0, 0, 15).count_nonzero().item<std::int64_t>(), 0);
  EXPECT_EQ(flat.narrow(0, 15, 5).count_nonzero().item<std::int64_t>(), 5);
}

TEST(Sparsifier, HandComputedMagnitudeExample) {
  std::vector<PrunedParam> p = {{"w", torch::tensor({0.5f, -0.1f, 2.0f, -3.0f, 0.2f, 0.05f})}};
  auto sp = make(p, "layer");
  sp->prune_to(0.5);
  EXPECT_TRUE(torch::equal(p[0].weight, torch::tensor({0.5f, 0.0f, 2.0f, -3.0f, 0.0f, 0.0f})));
  // -0.1 pruned must be +0.0: files and sparse encodings see bytes, not values.
  EXPECT_FALSE(torch::signbit(p[0].weight[1]).item<bool>());
}

TEST(Sparsifier, GlobalAndLayerScopesDifferOnUnequalLayers) {
  // Layer 0 has small weights, layer 1 large: global prunes layer 0 far more.
  torch::manual_seed(0);
  std::vector<PrunedParam> g = {{"small", torch::randn({100, 50}) * 0.01}, {"large", torch::randn({10, 50})}};
  std::vector<PrunedParam> l = {{"small", g[0].weight.clone()}, {"large", g[1].weight.clone()}};
  auto sg = make(g, "global");
  auto sl = make(l, "layer");
  sg->prune_to(0.5);
  sl->prune_to(0.5);
  auto gs = sg->stats(), ls = sl->stats();
  EXPECT_NEAR(ls[0].sparsity(), 0.5, 1e-9);
  EXPECT_NEAR(ls[1].sparsity(), 0.5, 1e-9);
  EXPECT_GT(gs[0].sparsity(), 0.54);
  EXPECT_LT(gs[1].sparsity(), 0.01);
  EXPECT_EQ(gs[0].numel - gs[0].nnz + gs[1].numel - gs[1].nnz, 2750);
}

TEST(Schedule, CubicMatchesZhuGupta) {
  const double si = 0.1, sf = 0.9;
  const std::int64_t t0 = 100, t1 = 1100, freq = 50;
  auto s = make_cubic_schedule(si, sf, t0, t1, freq);
  for (std::int64_t t : {100, 150, 300, 600, 999, 1050}) {
    const double expect = sf + (si - sf) * std::pow(1.0 - double(t - t0) / double(t1 - t0), 3);
    EXPECT_NEAR(s->target(t), expect, 1e-12) << t;
  }
  EXPECT_EQ(s->target(50), 0.0);
  EXPECT_EQ(s->target(1100), sf);
  EXPECT_EQ(s->target(5000), sf);
  EXPECT_TRUE(s->updates_at(100));
  EXPECT_TRUE(s->updates_at(150));
  EXPECT_FALSE(s->updates_at(151));
  EXPECT_TRUE(s->updates_at(1100));
  EXPECT_FALSE(s->updates_at(1150));
  EXPECT_THROW(make_cubic_schedule(0, 0.9, 10, 10, 1), InputError);
}

TEST(Sparsifier, EveryGradualStepIsExactAndMonotone) {
  auto params = random_params({{30, 20}, {20, 10}}, 5);
  auto sp = make(params, "global", make_cubic_schedule(0.0, 0.8, 0, 100, 10));
  const std::int64_t n = 30 * 20 + 20 * 10;
  std::int64_t prev = 0;
  int updates = 0;
  for (std::int64_t t = 0; t <= 120; ++t) {
    if (sp->step(t)) {
      ++updates;
      std::int64_t z = zeros(params[0].weight) + zeros(params[1].weight);
      EXPECT_EQ(z, std::llround(sp->schedule().target(t) * double(n))) << "step " << t;
      EXPECT_GE(z, prev);
      prev = z;
    }
    // Perturb the surviving weights as training would.
    torch::NoGradGuard ng;
    for (auto& p : params) p.weight.add_(torch::randn_like(p.weight) * 0.01);
    sp->apply_masks();
  }
  EXPECT_EQ(updates, 11);
  EXPECT_EQ(prev, std::llround(0.8 * double(n)));
}

TEST(Sparsifier, MasksHoldThroughSgdWithMomentumAndWeightDecay) {
  torch::manual_seed(0);
  auto net = make_model("lenet300");
  std::vector<PrunedParam> params;
  for (auto& [name, w] : prunable_weights(*net)) params.push_back({name, w});
  auto sp = make(params, "global");
  // Momentum built up while dense would move pruned weights if masks were not held.
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9).weight_decay(1e-3));
  auto x = torch::randn({64, 1, 28, 28});
  auto y = torch::randint(0, 10, {64}, torch::kInt64);
  auto train_step = [&] {
    opt.zero_grad();
    torch::nn::functional::cross_entropy(net->forward(x), y).backward();
    sp->mask_gradients();
    opt.step();
    sp->apply_masks();
  };
  for (int i = 0; i < 5; ++i) train_step();
  sp->prune_to(0.9);
  std::vector<torch::Tensor> masks;
  for (const auto& m : sp->masks()) masks.push_back(m.clone());
  for (int i = 0; i < 50; ++i) train_step();
  std::int64_t total = 0, z = 0;
  for (std::size_t i = 0; i < params.size(); ++i) {
    // Every masked weight is exactly zero, and nothing else changed its mask.
    EXPECT_EQ(params[i].weight.masked_select(masks[i] == 0).abs().max().item<float>(), 0.0f);
    EXPECT_TRUE(torch::equal(sp->masks()[i], masks[i]));
    total += params[i].weight.numel();
    z += zeros(params[i].weight);
  }
  EXPECT_EQ(z, std::llround(0.9 * double(total)));
}

TEST(Sparsifier, NanWeightsAreAnInputErrorNamingTheParameter) {
  std::vector<PrunedParam> p = {{"fc1.weight", torch::tensor({1.0f, NAN, 2.0f})}};
  auto sp = make(p, "layer");
  try {
    sp->prune_to(0.5);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("fc1.weight"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("NaN"), std::string::npos);
  }
}

TEST(Sparsifier, UnknownPartsAreInputErrors) {
  EXPECT_THROW(make_criterion("psychic"), InputError);
  EXPECT_THROW(make_pattern("3:2"), InputError);
  EXPECT_THROW(make_scope("galactic"), InputError);
}

// ------------------------------------------------------------------ patterns and criteria

TEST(Patterns, NMKeepsTheNLargestOfEveryGroupHandComputed) {
  auto p = make_pattern("2:4");
  // Row 0: groups [0.1 0.9 0.5 0.2] [3 1 2 4]; row 1 has a tie and a ragged tail of 2.
  auto s = torch::tensor({0.1, 0.9, 0.5, 0.2, 3.0, 1.0, 2.0, 4.0, 0.5, 0.7}, torch::kFloat64).reshape({1, 10});
  auto m = p->mask(s, 0);
  auto want = torch::tensor({0, 1, 1, 0, 1, 0, 0, 1, 1, 1}, torch::kFloat32).reshape({1, 10});
  EXPECT_TRUE(torch::equal(m, want)) << m;
  auto tie = torch::tensor({1.0, 1.0, 1.0, 0.0}, torch::kFloat64).reshape({1, 4});
  EXPECT_TRUE(torch::equal(p->mask(tie, 0), torch::tensor({1, 1, 0, 0}, torch::kFloat32).reshape({1, 4})));
  EXPECT_TRUE(p->check(want));
  EXPECT_FALSE(p->check(torch::tensor({1, 1, 1, 0}, torch::kFloat32).reshape({1, 4})));
  // Conv weights: groups run along input channels × kernel of each output channel.
  auto conv = torch::rand({3, 2, 2, 2}, torch::kFloat64);
  auto cm = make_pattern("1:4")->mask(conv, 0);
  EXPECT_TRUE(torch::equal(cm.reshape({3, 2, 4}).sum(-1), torch::ones({3, 2})));
  EXPECT_EQ(pattern_fixed_sparsity("2:4"), 0.5);
  EXPECT_EQ(pattern_fixed_sparsity("1:4"), 0.75);
  EXPECT_LT(pattern_fixed_sparsity("block:4x4"), 0);
}

TEST(Patterns, RowBalancedZeroesTheSameCountInEveryRowHandComputed) {
  auto p = make_pattern("row-balanced");
  // 3 zeros over 2 rows: row 0 (the first zeros % rows rows take one more) loses its two
  // lowest, row 1 its lowest — though row 1's scores are all above row 0's.
  auto s = torch::tensor({{1.0, 2.0, 3.0, 4.0}, {8.0, 7.0, 6.0, 5.0}}, torch::kFloat64);
  auto m = p->mask(s, 3);
  EXPECT_TRUE(torch::equal(m, torch::tensor({{0, 0, 1, 1}, {1, 1, 1, 0}}, torch::kFloat32))) << m;
  EXPECT_TRUE(p->check(m));
  EXPECT_FALSE(p->check(torch::tensor({{0, 0, 0, 1}, {1, 1, 1, 1}}, torch::kFloat32)));
  // Ties go to the lower index; conv weights are rows of in·k·k.
  EXPECT_TRUE(torch::equal(p->mask(torch::ones({1, 4}, torch::kFloat64), 2), torch::tensor({{0, 0, 1, 1}}, torch::kFloat32)));
  auto conv = torch::rand({3, 2, 3, 3}, torch::kFloat64);
  auto cm = p->mask(conv, 27);  // 9 of each output channel's 18
  EXPECT_TRUE(torch::equal((cm == 0).reshape({3, 18}).sum(1), torch::full({3}, 9, torch::kInt64)));
  EXPECT_LT(pattern_fixed_sparsity("row-balanced"), 0);
  EXPECT_TRUE(pattern_error("row-balanced").empty());
  // Exact through a sparsifier with a global scope: the scope sets each layer's count, the
  // pattern spreads it over the rows.
  auto ps = random_params({{40, 50}, {30, 20}}, 3);
  Sparsifier sp(ps, make_criterion("magnitude"), make_pattern("row-balanced"), make_scope("global"),
                make_oneshot_schedule(0.8, 0));
  sp.prune_to(0.8);
  std::int64_t z = 0;
  for (std::size_t i = 0; i < ps.size(); ++i) {
    z += zeros(sp.params()[i].weight);
    EXPECT_TRUE(p->check((sp.params()[i].weight != 0).to(torch::kFloat32))) << i;
  }
  EXPECT_EQ(z, 2080);  // round(0.8 · 2600)
}

TEST(Patterns, BlocksGoTogetherWithRaggedEdgesHandComputed) {
  auto p = make_pattern("block:2x2");
  // 3×3 scores: blocks (mean): [0,0]=(1+2+4+5)/4=3, [0,1]=(3+6)/2=4.5, [1,0]=(7+8)/2=7.5, [1,1]=9.
  auto s = torch::arange(1, 10, torch::kFloat64).reshape({3, 3});
  auto m = p->mask(s, 4);  // the lowest block (4 weights)
  auto want = torch::tensor({0, 0, 1, 0, 0, 1, 1, 1, 1}, torch::kFloat32).reshape({3, 3});
  EXPECT_TRUE(torch::equal(m, want)) << m;
  // 6 zeros: block [0,0] (4) then [0,1] (2) — exactly 6.
  EXPECT_EQ(zeros(p->mask(s, 6)), 6);
  // 5 zeros: after 4, the next block (2) would overshoot by 1 ≤ half of it: taken → 6.
  EXPECT_EQ(zeros(p->mask(s, 5)), 6);
  EXPECT_TRUE(p->check(want));
  EXPECT_FALSE(p->check(torch::tensor({0, 1, 1, 0, 0, 1, 1, 1, 1}, torch::kFloat32).reshape({3, 3})));
  // A large matrix at 80%: within half a block of the target, every block whole.
  auto big = torch::rand({37, 50}, torch::kFloat64);
  auto bm = make_pattern("block:4x4")->mask(big, 1480);
  EXPECT_NEAR(double(zeros(bm)), 1480.0, 8.0);
  EXPECT_TRUE(make_pattern("block:4x4")->check(bm));
}

TEST(Patterns, BadNamesAreInputErrorsThatSayWhy) {
  EXPECT_NE(pattern_error("3:2").find("N < M"), std::string::npos);
  EXPECT_NE(pattern_error("0:4").find("positive"), std::string::npos);
  EXPECT_NE(pattern_error("block:4").find("block:RxC"), std::string::npos);
  EXPECT_NE(pattern_error("block:1x1").find("at least 2"), std::string::npos);
  EXPECT_NE(pattern_error("diagonal").find("unknown"), std::string::npos);
  EXPECT_TRUE(pattern_error("4:8").empty());
  EXPECT_TRUE(pattern_error("block:1x4").empty());
  EXPECT_THROW(make_pattern("3:2"), InputError);
}

TEST(Criteria, LampHandComputedAndRandomIsSeeded) {
  PrunedParam w{"w", torch::tensor({3.0f, -1.0f, 2.0f})};
  // Sorted squares 1, 4, 9: LAMP = 1/14, 4/13, 9/9.
  auto lamp = make_criterion("lamp")->score(w);
  EXPECT_NEAR(lamp[1].item<double>(), 1.0 / 14, 1e-12);
  EXPECT_NEAR(lamp[2].item<double>(), 4.0 / 13, 1e-12);
  EXPECT_NEAR(lamp[0].item<double>(), 1.0, 1e-12);
  auto l2 = make_criterion("l2")->score(w);
  EXPECT_TRUE(torch::allclose(l2, torch::tensor({9.0, 1.0, 4.0}, torch::kFloat64)));
  PrunedParam big{"layer", torch::randn({50, 40})};
  auto a = make_criterion("random", 7)->score(big), b = make_criterion("random", 7)->score(big);
  auto c = make_criterion("random", 8)->score(big);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, c));
  // Random scores prune about as many large weights as small ones; magnitude none of the large.
  auto sp = std::make_unique<Sparsifier>(std::vector<PrunedParam>{{"layer", big.weight.clone()}}, make_criterion("random", 1),
                                         make_pattern("unstructured"), make_scope("layer"), make_oneshot_schedule(0.5, 0));
  sp->prune_to(0.5);
  EXPECT_EQ(zeros(sp->params()[0].weight), 1000);
  const auto large = big.weight.abs() > big.weight.abs().median();
  const auto pruned_large = (sp->params()[0].weight == 0).logical_and(large).sum().item<std::int64_t>();
  EXPECT_GT(pruned_large, 400);
  EXPECT_LT(pruned_large, 600);
}

// |w|·rms(x_j): columns with rms 2 and 1 over two samples, then a third sample that only the
// second column sees.
TEST(Criteria, ActivationHandComputedAndCheckpointedBitExact) {
  PrunedParam w{"fc.weight", torch::tensor({{1.0f, -2.0f}, {3.0f, 0.5f}})};
  auto act = make_criterion("activation");
  EXPECT_TRUE(act->needs_activations());
  EXPECT_FALSE(act->needs_gradients());
  EXPECT_FALSE(make_criterion("magnitude")->needs_activations());
  EXPECT_THROW(act->score(w), InputError);  // no calibration yet
  act->accumulate_activations("fc.weight", torch::tensor({8.0, 2.0}, torch::kFloat64), 2);
  EXPECT_TRUE(torch::allclose(act->score(w), torch::tensor({{2.0, 2.0}, {6.0, 0.5}}, torch::kFloat64), 0, 1e-12));
  act->accumulate_activations("fc.weight", torch::tensor({0.0, 6.0}, torch::kFloat64), 1);
  const double r = std::sqrt(8.0 / 3.0);  // both columns: sum of squares 8 over 3 samples
  EXPECT_TRUE(torch::allclose(act->score(w), torch::tensor({{r, 2 * r}, {3 * r, 0.5 * r}}, torch::kFloat64), 0, 1e-12));
  auto restored = make_criterion("wanda");
  restored->set_state(act->state());
  EXPECT_TRUE(torch::equal(restored->score(w), act->score(w)));
  // Statistics of another shape (a different layer under the same name) are refused.
  EXPECT_THROW(act->accumulate_activations("fc.weight", torch::ones({3}, torch::kFloat64), 1), InputError);
  PrunedParam wide{"fc.weight", torch::ones({2, 3})};
  EXPECT_THROW(restored->score(wide), InputError);
}

TEST(Criteria, LampWithGlobalScopeNeverEmptiesALayerAndIsExact) {
  // A layer of tiny weights: global magnitude empties it, global LAMP keeps its largest.
  std::vector<PrunedParam> ps = {{"big", torch::randn({40, 40})}, {"tiny", torch::randn({10, 10}) * 1e-3}};
  auto run = [&](const std::string& crit) {
    std::vector<PrunedParam> copy;
    for (const auto& p : ps) copy.push_back({p.name, p.weight.clone()});
    Sparsifier sp(copy, make_criterion(crit), make_pattern("unstructured"), make_scope("global"),
                  make_oneshot_schedule(0.9, 0));
    sp.prune_to(0.9);
    return sp.stats();
  };
  const auto mag = run("magnitude"), lamp = run("lamp");
  EXPECT_EQ(mag[1].nnz, 0);
  EXPECT_GT(lamp[1].nnz, 0);
  EXPECT_EQ(lamp[0].numel - lamp[0].nnz + lamp[1].numel - lamp[1].nnz, std::llround(0.9 * 1700));
}

TEST(Patterns, NMAndBlockMasksHoldThroughTraining) {
  for (const std::string pattern : {"2:4", "block:4x4"}) {
    torch::manual_seed(1);
    auto lin = torch::nn::Linear(32, 16);
    std::vector<PrunedParam> ps = {{"w", lin->weight}};
    Sparsifier sp(ps, make_criterion("magnitude"), make_pattern(pattern), make_scope("layer"),
                  make_oneshot_schedule(0.5, 0));
    sp.prune_to(0.5);
    torch::optim::SGD opt(lin->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9).weight_decay(1e-4));
    for (int step = 0; step < 20; ++step) {
      opt.zero_grad();
      lin->forward(torch::randn({8, 32})).square().mean().backward();
      sp.mask_gradients();
      opt.step();
      sp.apply_masks();
    }
    EXPECT_TRUE(make_pattern(pattern)->check((lin->weight != 0).to(torch::kFloat32))) << pattern;
    EXPECT_EQ(zeros(lin->weight), 256) << pattern;
  }
}

TEST(SrSte, HandComputedStepKeepsDenseWeightsAndDecaysThePrunedOnes) {
  auto w = torch::tensor({{4.0f, 3.0f, 0.2f, 0.1f}}).set_requires_grad(true);
  Sparsifier sp({{"w", w}}, make_criterion("magnitude"), make_pattern("2:4"), make_scope("layer"),
                make_oneshot_schedule(0.5, 0));
  sp.enable_srste(0.5);
  sp.step(0);  // first mask from the dense weights; the model holds the masked ones
  EXPECT_TRUE(torch::equal(w, torch::tensor({{4.0f, 3.0f, 0.0f, 0.0f}})));
  w.mutable_grad() = torch::tensor({{3.0f, 0.0f, -1.0f, -1.0f}});
  sp.mask_gradients();  // g += 0.5·(1 − m)·w_dense; the dense weights are back for the optimiser
  EXPECT_TRUE(torch::allclose(w.grad(), torch::tensor({{3.0f, 0.0f, -0.9f, -0.95f}})));
  EXPECT_TRUE(torch::equal(w, torch::tensor({{4.0f, 3.0f, 0.2f, 0.1f}})));
  {
    torch::NoGradGuard ng;
    w.sub_(w.grad());  // SGD, lr 1
  }
  sp.after_optimizer_step();  // dense [1, 3, 1.1, 1.05] kept; the old mask applied
  EXPECT_TRUE(torch::allclose(w, torch::tensor({{1.0f, 3.0f, 0.0f, 0.0f}})));
  ASSERT_EQ(sp.srste_dense().size(), 1u);
  EXPECT_TRUE(torch::allclose(sp.srste_dense()[0], torch::tensor({{1.0f, 3.0f, 1.1f, 1.05f}})));
  sp.step(1);  // the mask follows the dense magnitudes: 3 and 1.1 now
  EXPECT_TRUE(torch::allclose(w, torch::tensor({{0.0f, 3.0f, 1.1f, 0.0f}})));
  EXPECT_TRUE(torch::equal(sp.masks()[0], torch::tensor({{0.0f, 1.0f, 1.0f, 0.0f}})));
}

// A 2:4 regression whose true support is where the initial weights are smallest: a mask fixed
// from the initial magnitudes can never fit it; SR-STE moves the mask onto the support.
TEST(SrSte, FindsTheSupportAFixedMaskMisses) {
  torch::manual_seed(3);
  const auto x = torch::randn({512, 8});
  const auto w_true = torch::tensor({{0.0f, 0.0f, 1.5f, -2.0f, 0.0f, 1.0f, 0.0f, -1.0f}});
  const auto y = torch::matmul(x, w_true.t());
  auto train = [&](double decay) {
    auto w = torch::tensor({{1.0f, 0.9f, 0.1f, 0.05f, 0.8f, 0.1f, 0.7f, 0.05f}}).set_requires_grad(true);
    Sparsifier sp({{"w", w}}, make_criterion("magnitude"), make_pattern("2:4"), make_scope("layer"),
                  make_oneshot_schedule(0.5, 0));
    if (decay > 0) sp.enable_srste(decay);
    double loss = 0;
    for (int step = 0; step < 400; ++step) {
      sp.step(step);
      if (w.grad().defined()) w.mutable_grad().zero_();
      auto l = (torch::matmul(x, w.t()) - y).square().mean();
      l.backward();
      loss = l.item<double>();
      sp.mask_gradients();
      {
        torch::NoGradGuard ng;
        w.sub_(0.05 * w.grad());
      }
      sp.after_optimizer_step();
    }
    EXPECT_TRUE(make_pattern("2:4")->check((w != 0).to(torch::kFloat32)));
    return std::make_pair(loss, (w != 0).to(torch::kFloat32));
  };
  const auto [fixed_loss, fixed_mask] = train(0.0);
  const auto [srste_loss, srste_mask] = train(2e-4);
  EXPECT_GT(fixed_loss, 1.0);
  EXPECT_LT(srste_loss, 1e-4);
  EXPECT_TRUE(torch::equal(srste_mask, (w_true != 0).to(torch::kFloat32)));
}

TEST(Criteria, GradientScoresHandComputed) {
  auto w = torch::tensor({2.0f, -1.0f, 0.5f, 0.0f}).set_requires_grad(true);
  w.mutable_grad() = torch::tensor({0.1f, -3.0f, 1.0f, 5.0f});
  PrunedParam p{"w", w};
  auto taylor = make_criterion("taylor"), movement = make_criterion("movement"), snip = make_criterion("snip");
  EXPECT_TRUE(taylor->needs_gradients());
  EXPECT_FALSE(make_criterion("magnitude")->needs_gradients());
  EXPECT_THROW(taylor->score(p), InputError);  // nothing accumulated yet
  for (int i = 0; i < 2; ++i) {
    taylor->accumulate(p);
    movement->accumulate(p);
    snip->accumulate(p);
  }
  // |w·g| summed over two batches: 2·[0.2, 3, 0.5, 0]; −w·g: 2·[−0.2, −3, −0.5, ·], the pruned
  // (zero) weight −∞.
  EXPECT_TRUE(torch::allclose(taylor->score(p), torch::tensor({0.4, 6.0, 1.0, 0.0}, torch::kFloat64), 1e-6));
  EXPECT_TRUE(torch::allclose(snip->score(p), taylor->score(p)));
  auto mv = movement->score(p);
  EXPECT_NEAR(mv[0].item<double>(), -0.4, 1e-6);
  EXPECT_NEAR(mv[1].item<double>(), -6.0, 1e-6);
  EXPECT_NEAR(mv[2].item<double>(), -1.0, 1e-6);
  EXPECT_TRUE(std::isinf(mv[3].item<double>()) && mv[3].item<double>() < 0);
}

TEST(Sparsifier, PerLayerSparsitiesOverrideTheScopeAndTheRestShareTheTarget) {
  for (const std::string scope : {"global", "layer"}) {
    auto ps = random_params({{40, 50}, {30, 20}, {10, 10}}, 5);  // 2000, 600, 100 weights
    Sparsifier sp(ps, make_criterion("magnitude"), make_pattern("unstructured"), make_scope(scope),
                  make_oneshot_schedule(0.8, 0));
    sp.set_layer_overrides({{"p0", 0.9}, {"p2", 0.0}}, 0.8);
    // Half-way through a schedule every override scales with the target.
    sp.prune_to(0.4);
    EXPECT_EQ(sp.stats()[0].numel - sp.stats()[0].nnz, 900) << scope;
    sp.prune_to(0.8);
    const auto st = sp.stats();
    EXPECT_EQ(st[0].numel - st[0].nnz, 1800) << scope;  // exactly its own sparsity
    EXPECT_EQ(st[2].nnz, 100) << scope;                  // a skip
    EXPECT_EQ(st[1].numel - st[1].nnz, 2160 - 1800) << scope;  // the rest of round(0.8 * 2700)
  }
  auto ps = random_params({{4, 4}}, 1);
  Sparsifier sp(ps, make_criterion("magnitude"), make_pattern("unstructured"), make_scope("layer"),
                make_oneshot_schedule(0.5, 0));
  EXPECT_THROW(sp.set_layer_overrides({{"fc9.weight", 0.5}}, 0.5), InputError);
  EXPECT_THROW(sp.set_layer_overrides({{"fc9*", 0.0}}, 0.5), InputError);
}

TEST(Sparsifier, LayerOverridesTakeShellPatternsAndExactNamesWin) {
  auto ps = random_params({{40, 50}, {30, 20}, {10, 10}}, 5);  // p0 2000, p1 600, p2 100 weights
  ps[0].name = "conv1.weight";
  ps[1].name = "conv2.weight";
  ps[2].name = "fc.weight";
  Sparsifier sp(ps, make_criterion("magnitude"), make_pattern("unstructured"), make_scope("layer"),
                make_oneshot_schedule(0.5, 0));
  sp.set_layer_overrides({{"conv*", 0.0}, {"conv2.weight", 0.25}}, 0.5);
  sp.prune_to(0.5);
  const auto st = sp.stats();
  EXPECT_EQ(st[0].nnz, 2000);                 // skipped by the pattern
  EXPECT_EQ(st[1].numel - st[1].nnz, 150);    // the exact name wins: 25% of 600
  EXPECT_EQ(st[2].numel - st[2].nnz, 100);    // round(0.5 · 2700) − 150 = 1200 > 100: all of fc
}

TEST(Registry, EveryNameRecipesAcceptBuilds) {
  for (const auto& n : criterion_names()) EXPECT_NO_THROW(make_criterion(n)) << n;
  for (const auto& n : scope_names()) EXPECT_NO_THROW(make_scope(n)) << n;
  for (const auto& n : model_names()) EXPECT_NO_THROW(make_model(n)) << n;
  for (const std::string n : {"unstructured", "2:4", "1:8", "block:4x4", "block:1x16"}) EXPECT_NO_THROW(make_pattern(n)) << n;
  PruneConfig pc;
  for (const auto& n : schedule_names()) {
    pc.schedule.kind = n;
    pc.schedule.end_epoch = 1;
    EXPECT_NO_THROW(make_schedule(pc, 10)) << n;
  }
  EXPECT_NE(pattern_error("block:99999999999x99999999999").find("at most 1024"), std::string::npos);
}
