// Structured pruning that shrinks the model: the rewritten model (fewer channels) gives the
// same outputs as the same-shape model with those channels zeroed, for an MLP, a conv net, a
// residual net (whose add groups must be pruned together) and an Inception net (whose
// concatenated branches each keep their own channels, cut at their offsets in the reader).
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>

#include "prunus/data.h"
#include "prunus/models.h"
#include "prunus/runtime.h"
#include "prunus/safetensors.h"
#include "prunus/shrink.h"
#include "test_util.h"

using namespace prunus;

namespace {

// Random BatchNorm statistics and affine parameters, so a wrong BN rewrite shows.
void randomize_bn(Net& net) {
  torch::NoGradGuard ng;
  torch::manual_seed(7);
  for (auto& item : net.named_buffers()) {
    auto& t = item.value();
    if (item.key().find("running_mean") != std::string::npos) t.normal_(0, 0.3);
    else if (item.key().find("running_var") != std::string::npos) t.uniform_(0.5, 2.0);
  }
  for (auto& item : net.named_parameters())
    if (item.key().find("bn") != std::string::npos) item.value().normal_(0.2, 0.5);
}

std::vector<float> run(const std::string& path, const std::vector<float>& x, std::int64_t batch) {
  runtime::LoadOptions lo;
  lo.dense = true;
  return runtime::Model::load(path, lo).forward(x.data(), batch);
}

// LeNet-300-100 whose fc1 rows alternate strong (1.0) and weak (0.001) weights, no fc1 bias;
// with fc2_reads_odd_only, fc2's columns for the even (strong) neurons are zero.
void save_alternating_lenet300(const std::string& path, bool fc2_reads_odd_only) {
  auto net = make_model("lenet300");
  {
    torch::NoGradGuard ng;
    for (auto& item : net->named_parameters()) {
      if (item.key() == "fc1.weight")
        for (std::int64_t r = 0; r < 300; ++r) item.value()[r].fill_(r % 2 == 0 ? 1.0 : 0.001);
      if (item.key() == "fc1.bias") item.value().zero_();
      if (fc2_reads_odd_only && item.key() == "fc2.weight")
        for (std::int64_t c = 0; c < 300; c += 2) item.value().select(1, c).zero_();
    }
  }
  save_model(path, *net);
}

}  // namespace

class Shrink : public ::testing::TestWithParam<std::string> {};

TEST_P(Shrink, ShrunkModelMatchesTheMaskedOneAndIsSmaller) {
  test::TempDir dir;
  auto net = make_model(GetParam());
  randomize_bn(*net);
  save_model(dir.file("dense.safetensors"), *net);
  shrink::Options opt;
  opt.sparsity = 0.5;
  opt.round_to = 4;
  const auto plan = shrink::plan(dir.file("dense.safetensors"), opt);
  ASSERT_FALSE(plan.groups.empty());
  for (const auto& g : plan.groups) {
    EXPECT_TRUE(g.kept.size() % 4 == 0 || std::int64_t(g.kept.size()) == g.channels) << g.producers.front();
    EXPECT_LT(std::int64_t(g.kept.size()), g.channels) << g.producers.front();
  }
  EXPECT_LT(plan.macs_after, plan.macs_before);
  shrink::write_shrunk(dir.file("dense.safetensors"), plan, dir.file("shrunk.safetensors"));
  shrink::write_masked(dir.file("dense.safetensors"), plan, dir.file("masked.safetensors"));
  // The parameter count the plan predicted is what was written.
  std::int64_t written = 0;
  const auto shrunk = safetensors::File::open(dir.file("shrunk.safetensors"));
  for (const auto& v : shrunk.tensors()) written += v.numel();
  EXPECT_EQ(written, plan.params_after);
  EXPECT_LT(plan.params_after, plan.params_before);

  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0, 1);
  std::vector<float> x(3 * 28 * 28);
  for (auto& v : x) v = u(rng);
  const auto ys = run(dir.file("shrunk.safetensors"), x, 3), ym = run(dir.file("masked.safetensors"), x, 3),
             yd = run(dir.file("dense.safetensors"), x, 3);
  ASSERT_EQ(ys.size(), ym.size());
  double scale = 0, err = 0, moved = 0;
  for (std::size_t i = 0; i < ys.size(); ++i) {
    scale = std::max(scale, double(std::abs(ym[i])));
    err = std::max(err, double(std::abs(ys[i] - ym[i])));
    moved = std::max(moved, double(std::abs(yd[i] - ym[i])));
  }
  EXPECT_LE(err, 1e-4 * std::max(scale, 1.0)) << "shrunk and masked outputs differ";
  EXPECT_GT(moved, 1e-3) << "pruning changed nothing: the comparison would not catch a wrong rewrite";

  // The shrunk file reloads in libtorch with its new widths and computes the same function.
  auto small = load_model(dir.file("shrunk.safetensors"));
  small->eval();
  torch::NoGradGuard ng;
  auto xt = (torch::from_blob(x.data(), {3, 1, 28, 28}).clone() - data::kPixelMean) / data::kPixelStd;
  auto yt = small->forward(xt).contiguous();
  double terr = 0;
  for (std::size_t i = 0; i < ys.size(); ++i) terr = std::max(terr, double(std::abs(yt.data_ptr<float>()[i] - ys[i])));
  EXPECT_LE(terr, 1e-4 * std::max(scale, 1.0)) << "libtorch forward of the shrunk model differs from the runtime's";
  EXPECT_LT(small->parameters()[0].numel(), net->parameters()[0].numel());
}

INSTANTIATE_TEST_SUITE_P(Models, Shrink, ::testing::Values("lenet300", "lenet5", "resnet", "inception"));

TEST(Shrink, ConcatenatedBranchesAreCutAtTheirOffsetsInTheReader) {
  // mixed1 concatenates branch1x1 (16), branch3x3 (24) and branch5x5 (8); every mixed2 1×1
  // conv reads all 48. Each branch is its own group, and a reader keeps exactly the columns
  // [kept(b1), 16 + kept(b3), 40 + kept(b5)] of its dense weight, rows = its own kept channels.
  test::TempDir dir;
  torch::manual_seed(11);
  auto net = make_model("inception");
  save_model(dir.file("d.safetensors"), *net);
  shrink::Options opt;
  opt.sparsity = 0.5;
  const auto plan = shrink::plan(dir.file("d.safetensors"), opt);
  std::map<std::string, const shrink::Group*> by;
  for (const auto& g : plan.groups) {
    ASSERT_EQ(g.producers.size(), 1u) << g.producers.front() << ": no add couples these convs";
    by[g.producers.front()] = &g;
  }
  ASSERT_EQ(by.size(), 11u);  // every conv but the logits' fc
  const auto& b1 = by.at("mixed1.branch1x1.weight")->kept;
  const auto& b3 = by.at("mixed1.branch3x3.weight")->kept;
  const auto& b5 = by.at("mixed1.branch5x5.weight")->kept;
  EXPECT_EQ(by.at("mixed1.branch3x3.weight")->consumers,
            (std::vector<std::string>{"mixed2.branch1x1.weight", "mixed2.branch3x3_reduce.weight",
                                      "mixed2.branch5x5_reduce.weight"}));
  std::vector<std::int64_t> cols(b1);
  for (auto k : b3) cols.push_back(16 + k);
  for (auto k : b5) cols.push_back(40 + k);
  shrink::write_shrunk(dir.file("d.safetensors"), plan, dir.file("s.safetensors"));
  const auto dense = safetensors::File::open(dir.file("d.safetensors")), small = safetensors::File::open(dir.file("s.safetensors"));
  const auto& rows = by.at("mixed2.branch1x1.weight")->kept;
  const auto& dw = dense.at("mixed2.branch1x1.weight");
  const auto& sw = small.at("mixed2.branch1x1.weight");
  ASSERT_EQ(sw.shape, (std::vector<std::int64_t>{std::int64_t(rows.size()), std::int64_t(cols.size()), 1, 1}));
  const auto d = dw.to_f32(), sm = sw.to_f32();
  for (std::size_t r = 0; r < rows.size(); ++r)
    for (std::size_t c = 0; c < cols.size(); ++c)
      ASSERT_EQ(sm[r * cols.size() + c], d[static_cast<std::size_t>(rows[r] * 48 + cols[c])]) << r << "," << c;
  // After global pooling the fc reads mixed2's three branches (32, 48, 16) the same way.
  const auto& fc = small.at("fc.weight");
  EXPECT_EQ(fc.shape, (std::vector<std::int64_t>{10, 16 + 24 + 8}));
}

namespace {
// A graph whose adds read concatenations: ab = [a(4), b(4)]; with `aligned`, ab + [e(4), f(4)]
// (segment by segment: a with e, b with f), else ab + c(8), which no cut of c into the two
// segments can follow. Then a 1×1 conv d (6) reads the sum, pools, and fc gives 2 logits.
void save_concat_add_graph(const std::string& path, bool aligned) {
  std::mt19937 rng(9);
  std::normal_distribution<float> n(0, 1);
  std::map<std::string, std::vector<std::int64_t>> shapes{{"a.weight", {4, 2, 1, 1}}, {"b.weight", {4, 2, 3, 3}},
                                                          {"d.weight", {6, 8, 1, 1}}, {"fc.weight", {2, 6}}};
  if (aligned) shapes["e.weight"] = {4, 2, 3, 3}, shapes["f.weight"] = {4, 2, 1, 1};
  else shapes["c.weight"] = {8, 2, 1, 1};
  std::map<std::string, std::vector<float>> data;
  std::vector<safetensors::TensorToWrite> w;
  for (const auto& [name, shape] : shapes) {
    std::int64_t numel = 1;
    for (auto d : shape) numel *= d;
    auto& v = data[name];
    for (std::int64_t i = 0; i < numel; ++i) v.push_back(n(rng));
    w.push_back({name, safetensors::DType::F32, shape, v.data()});
  }
  std::string g = R"({"input":[2,6,6],"ops":[)"
                  R"({"op":"conv2d","weight":"a.weight","input":"input","output":"a"},)"
                  R"({"op":"conv2d","weight":"b.weight","padding":1,"input":"input","output":"b"},)"
                  R"({"op":"concat","inputs":["a","b"],"output":"ab"},)";
  if (aligned)
    g += R"({"op":"conv2d","weight":"e.weight","padding":1,"input":"input","output":"e"},)"
         R"({"op":"conv2d","weight":"f.weight","input":"input","output":"f"},)"
         R"({"op":"concat","inputs":["e","f"],"output":"other"},)";
  else
    g += R"({"op":"conv2d","weight":"c.weight","input":"input","output":"other"},)";
  g += R"({"op":"add","inputs":["ab","other"]},{"op":"relu"},{"op":"conv2d","weight":"d.weight"},{"op":"relu"},)"
       R"({"op":"global_avg_pool"},{"op":"linear","weight":"fc.weight"}]})";
  safetensors::write(path, w, {{"prunus.graph", g}});
}
}  // namespace

TEST(Shrink, AddsOfConcatenationsCoupleSegmentBySegmentOrNotAtAll) {
  test::TempDir dir;
  save_concat_add_graph(dir.file("aligned.safetensors"), true);
  shrink::Options opt;
  opt.sparsity = 0.5;
  const auto plan = shrink::plan(dir.file("aligned.safetensors"), opt);
  std::vector<std::vector<std::string>> producers;
  for (const auto& g : plan.groups) producers.push_back(g.producers);
  std::sort(producers.begin(), producers.end());
  EXPECT_EQ(producers, (std::vector<std::vector<std::string>>{{"a.weight", "e.weight"}, {"b.weight", "f.weight"}, {"d.weight"}}));
  shrink::write_shrunk(dir.file("aligned.safetensors"), plan, dir.file("s.safetensors"));
  shrink::write_masked(dir.file("aligned.safetensors"), plan, dir.file("m.safetensors"));
  std::vector<float> x(5 * 72);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1, 1);
  for (auto& v : x) v = u(rng);
  const auto ys = run(dir.file("s.safetensors"), x, 5), ym = run(dir.file("m.safetensors"), x, 5),
             yd = run(dir.file("aligned.safetensors"), x, 5);
  double moved = 0;
  for (std::size_t i = 0; i < ys.size(); ++i) {
    EXPECT_NEAR(ys[i], ym[i], 1e-5 * (1 + std::fabs(ym[i])));
    moved = std::max(moved, double(std::fabs(yd[i] - ym[i])));
  }
  EXPECT_GT(moved, 1e-3);
  EXPECT_EQ(safetensors::File::open(dir.file("s.safetensors")).at("d.weight").shape,
            (std::vector<std::int64_t>{3, 4, 1, 1}));  // 2 of a∪e's channels and 2 of b∪f's read
  // Added to one 8-channel conv, the segments cannot be followed: a, b and c stay whole.
  save_concat_add_graph(dir.file("mixed.safetensors"), false);
  const auto mixed = shrink::plan(dir.file("mixed.safetensors"), opt);
  ASSERT_EQ(mixed.groups.size(), 1u);
  EXPECT_EQ(mixed.groups[0].producers, std::vector<std::string>{"d.weight"});
}

TEST(Shrink, ResidualAddsArePrunedAsOneGroupAndTheLogitsNever) {
  test::TempDir dir;
  auto net = make_model("resnet");
  save_model(dir.file("r.safetensors"), *net);
  const auto plan = shrink::plan(dir.file("r.safetensors"), {});
  bool stem_group = false;
  for (const auto& g : plan.groups) {
    auto has = [&](const std::string& n) { return std::find(g.producers.begin(), g.producers.end(), n) != g.producers.end(); };
    // stem → layer1 (no downsampling): the block's output is stem + layer1.bn2(conv2), one space.
    if (has("stem.weight")) {
      stem_group = true;
      EXPECT_TRUE(has("layer1.conv2.weight"));
      EXPECT_EQ(g.producers.size(), 2u);
    }
    EXPECT_FALSE(has("fc.weight"));
  }
  EXPECT_TRUE(stem_group);
}

TEST(Shrink, ModelsWithoutAGraphAndBadOptionsAreRejected) {
  test::TempDir dir;
  const float w[4] = {1, 2, 3, 4};
  safetensors::write(dir.file("plain.safetensors"), {{"w", safetensors::DType::F32, {2, 2}, w}});
  EXPECT_THROW(shrink::plan(dir.file("plain.safetensors"), {}), InputError);
  auto net = make_model("lenet300");
  save_model(dir.file("m.safetensors"), *net);
  shrink::Options o;
  o.sparsity = 1.0;
  EXPECT_THROW(shrink::plan(dir.file("m.safetensors"), o), InputError);
}

TEST(Shrink, ActivationCriterionKeepsTheChannelsThatFireHandComputed) {
  // fc1 rows alternate strong (1.0) and weak (0.001) weights on an all-0.5 input: the mean
  // |output| of even neurons is ~1000× the odd ones', so halving fc1 keeps exactly the even ones.
  test::TempDir dir;
  save_alternating_lenet300(dir.file("m.safetensors"), false);
  shrink::Options opt;
  opt.criterion = "activation";
  opt.calib.assign(4 * 784, 0.5f);
  opt.calib_count = 4;
  const auto plan = shrink::plan(dir.file("m.safetensors"), opt);
  const shrink::Group* fc1 = nullptr;
  for (const auto& g : plan.groups)
    if (g.producers.front() == "fc1.weight") fc1 = &g;
  ASSERT_NE(fc1, nullptr);
  ASSERT_EQ(fc1->kept.size(), 150u);
  for (std::size_t i = 0; i < 150; ++i) EXPECT_EQ(fc1->kept[i], std::int64_t(2 * i));
  opt.calib_count = 0;
  EXPECT_THROW(shrink::plan(dir.file("m.safetensors"), opt), InputError);  // activation needs data
}

TEST(Shrink, ThinetCriterionKeepsWhatTheConsumerReadsHandComputed) {
  // fc1 as in the activation test (even neurons fire ~1000× harder), but fc2 reads only the
  // odd ones (its even columns are zero): removing an even neuron changes nothing fc2
  // computes, so output reconstruction removes exactly the even half — the opposite of the
  // activation criterion, which keeps the even neurons.
  test::TempDir dir;
  save_alternating_lenet300(dir.file("m.safetensors"), true);
  shrink::Options opt;
  opt.calib.assign(4 * 784, 0.5f);
  opt.calib_count = 4;
  auto fc1_kept = [&](const std::string& criterion) {
    opt.criterion = criterion;
    for (const auto& g : shrink::plan(dir.file("m.safetensors"), opt).groups)
      if (g.producers.front() == "fc1.weight") return g.kept;
    return std::vector<std::int64_t>{};
  };
  const auto thinet = fc1_kept("thinet"), activation = fc1_kept("activation");
  // The removed neurons contributed nothing to fc2, so with the least-squares factors on the
  // kept ones (of every group) the shrunk model still gives the dense logits on these inputs.
  opt.criterion = "thinet";
  shrink::write_shrunk(dir.file("m.safetensors"), shrink::plan(dir.file("m.safetensors"), opt), dir.file("s.safetensors"));
  const auto dense = run(dir.file("m.safetensors"), opt.calib, 4), shrunk = run(dir.file("s.safetensors"), opt.calib, 4);
  for (std::size_t i = 0; i < dense.size(); ++i) EXPECT_NEAR(shrunk[i], dense[i], 1e-3 * (1 + std::fabs(dense[i])));
  ASSERT_EQ(thinet.size(), 150u);
  ASSERT_EQ(activation.size(), 150u);
  for (std::size_t i = 0; i < 150; ++i) {
    EXPECT_EQ(thinet[i], std::int64_t(2 * i + 1));
    EXPECT_EQ(activation[i], std::int64_t(2 * i));
  }
  // The same seed gives the same choice on every group; no calibration data is an error.
  opt.criterion = "thinet";
  const auto a = shrink::plan(dir.file("m.safetensors"), opt), b = shrink::plan(dir.file("m.safetensors"), opt);
  ASSERT_EQ(a.groups.size(), b.groups.size());
  for (std::size_t i = 0; i < a.groups.size(); ++i) EXPECT_EQ(a.groups[i].kept, b.groups[i].kept);
  opt.calib_count = 0;
  EXPECT_THROW(shrink::plan(dir.file("m.safetensors"), opt), InputError);
}

TEST(Shrink, ThinetFactorsGoToTheSameColumnsInTheShrunkAndMaskedModels) {
  // An untrained LeNet-5 (conv and flatten-linear consumers) and Inception net (consumers that
  // read concatenated branches) halved with thinet: every pruned group gets a factor per kept
  // channel, the shrunk and masked models agree with them, and they change the outputs
  // (without them the logits differ).
  for (const std::string arch : {"lenet5", "inception"}) {
    test::TempDir dir;
    torch::manual_seed(3);
    auto net = make_model(arch);
    save_model(dir.file("d.safetensors"), *net);
    shrink::Options opt;
    opt.criterion = "thinet";
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> u(0, 1);
    opt.calib_count = 64;
    opt.calib.resize(64 * 784);
    for (auto& v : opt.calib) v = u(rng);
    auto plan = shrink::plan(dir.file("d.safetensors"), opt);
    shrink::write_shrunk(dir.file("d.safetensors"), plan, dir.file("s.safetensors"));
    shrink::write_masked(dir.file("d.safetensors"), plan, dir.file("m.safetensors"));
    auto unscaled = plan;
    for (auto& g : unscaled.groups) {
      EXPECT_EQ(g.scale.size(), g.kept.size()) << arch << " " << g.producers.front();
      g.scale.clear();
    }
    shrink::write_shrunk(dir.file("d.safetensors"), unscaled, dir.file("u.safetensors"));
    const auto scaled = run(dir.file("s.safetensors"), opt.calib, 64), masked = run(dir.file("m.safetensors"), opt.calib, 64),
               plain = run(dir.file("u.safetensors"), opt.calib, 64);
    double moved = 0;
    for (std::size_t i = 0; i < scaled.size(); ++i) {
      EXPECT_NEAR(scaled[i], masked[i], 1e-4 * (1 + std::fabs(masked[i]))) << arch;
      moved = std::max(moved, double(std::fabs(scaled[i] - plain[i])));
    }
    EXPECT_GT(moved, 1e-3) << arch;
  }
}

TEST(Shrink, BatchNormScaleCriterionRanksByGammaHandComputed) {
  // Network slimming on the ResNet's stem group (stem_bn and layer1.bn2): channel c gets
  // |γ| = c + 1 in both, so removing half keeps the upper half of the channels.
  test::TempDir dir;
  auto net = make_model("resnet");
  {
    torch::NoGradGuard ng;
    for (auto& item : net->named_parameters())
      if (item.key() == "stem_bn.weight" || item.key() == "layer1.bn2.weight")
        for (std::int64_t c = 0; c < item.value().size(0); ++c) item.value()[c].fill_(c % 2 ? -(c + 1.0) : c + 1.0);
  }
  save_model(dir.file("r.safetensors"), *net);
  shrink::Options opt;
  opt.criterion = "bn";
  const auto plan = shrink::plan(dir.file("r.safetensors"), opt);
  bool found = false;
  for (const auto& g : plan.groups)
    if (g.producers.front() == "stem.weight") {
      found = true;
      ASSERT_EQ(g.kept.size(), 8u);
      for (std::size_t i = 0; i < 8; ++i) EXPECT_EQ(g.kept[i], std::int64_t(8 + i));
    }
  EXPECT_TRUE(found);
}
