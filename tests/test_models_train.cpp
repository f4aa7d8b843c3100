// Models, model files, recipes, and training: determinism, resume, a short real run.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <random>
#include <variant>

#include "prunus/data.h"
#include "prunus/io.h"
#include "prunus/models.h"
#include "prunus/recipe.h"
#include "prunus/train.h"
#include "test_util.h"
#include "util/tensor_io.h"

using namespace prunus;
namespace fs = std::filesystem;

namespace {

std::string expect_input_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an InputError";
  return "";
}

bool have_fashion_mnist() {
  if (fs::exists(test::fashion_mnist_dir() + "/train-images-idx3-ubyte.gz")) return true;
  std::fprintf(stderr, "SKIPPED: Fashion-MNIST not found in %s (install dataset-fashion-mnist)\n",
               test::fashion_mnist_dir().c_str());
  return false;
}

DataConfig small_data(std::int64_t train, std::int64_t test) {
  DataConfig d;
  d.dir = test::fashion_mnist_dir();
  d.train_limit = train;
  d.test_limit = test;
  return d;
}

}  // namespace

TEST(Models, SaveLoadRoundTripForEveryArchitecture) {
  test::TempDir dir;
  for (const auto& arch : model_names()) {
    torch::manual_seed(1);
    auto net = make_model(arch);
    net->eval();
    auto x = torch::randn({3, 1, 28, 28});
    // Non-trivial BatchNorm statistics must survive too.
    {
      torch::NoGradGuard ng;
      for (auto& b : net->named_buffers())
        if (b.value().is_floating_point()) b.value().uniform_(0.5, 1.5);
    }
    const auto path = dir.file(arch + ".safetensors");
    save_model(path, *net);
    auto back = load_model(path);
    EXPECT_EQ(back->arch(), arch);
    back->eval();
    EXPECT_TRUE(torch::equal(net->forward(x), back->forward(x))) << arch;
    auto a = net->named_parameters();
    for (const auto& p : back->named_parameters()) EXPECT_TRUE(torch::equal(p.value(), a[p.key()])) << p.key();
  }
}

TEST(Models, PrunableWeightsAreLinearAndConvWeights) {
  auto names = [](const std::string& arch) {
    std::vector<std::string> n;
    auto net = make_model(arch);
    for (auto& [name, w] : prunable_weights(*net)) n.push_back(name);
    return n;
  };
  EXPECT_EQ(names("lenet300"), (std::vector<std::string>{"fc1.weight", "fc2.weight", "fc3.weight"}));
  EXPECT_EQ(names("lenet5").size(), 5u);
  EXPECT_EQ(names("resnet").size(), 10u);  // stem, 2 convs × 3 blocks, 2 downsamples, fc
  EXPECT_EQ(names("inception").size(), 12u);  // stem, 5 convs × 2 Inception modules, fc
}

TEST(Models, BadModelFilesAreRejectedNamingTheFile) {
  test::TempDir dir;
  auto net = make_model("lenet300");
  NamedTensors state;
  for (const auto& p : net->named_parameters()) state.emplace_back(p.key(), p.value());
  const auto path = dir.file("m.safetensors");

  write_tensors(path, state, {});
  EXPECT_NE(expect_input_error([&] { load_model(path); }).find("no 'prunus.arch'"), std::string::npos);

  write_tensors(path, state, {{"prunus.arch", "alexnet"}});
  EXPECT_NE(expect_input_error([&] { load_model(path); }).find("unknown architecture"), std::string::npos);

  auto missing = state;
  missing.pop_back();
  write_tensors(path, missing, {{"prunus.arch", "lenet300"}});
  EXPECT_NE(expect_input_error([&] { load_model(path); }).find("missing tensor 'fc3.bias'"), std::string::npos);

  auto wrong = state;
  wrong[0].second = torch::zeros({300, 785});
  write_tensors(path, wrong, {{"prunus.arch", "lenet300"}});
  EXPECT_NE(expect_input_error([&] { load_model(path); }).find("has shape [300,785]"), std::string::npos);

  auto nan = state;
  nan[1].second = nan[1].second.clone();
  nan[1].second[3] = NAN;
  write_tensors(path, nan, {{"prunus.arch", "lenet300"}});
  const auto msg = expect_input_error([&] { load_model(path); });
  EXPECT_NE(msg.find(path + ": tensor 'fc1.bias' contains NaN"), std::string::npos) << msg;

  auto extra = state;
  extra.emplace_back("fc4.weight", torch::zeros({2}));
  write_tensors(path, extra, {{"prunus.arch", "lenet300"}});
  EXPECT_NE(expect_input_error([&] { load_model(path); }).find("unexpected tensor 'fc4.weight'"), std::string::npos);
}

TEST(Recipes, DefaultAndShippedRecipesAreValid) {
  EXPECT_NO_THROW(validate(default_recipe(), "default"));
  const char* src = PRUNUS_SOURCE_DIR;
  int n = 0;
  for (const auto& e : fs::directory_iterator(fs::path(src) / "recipes")) {
    if (e.path().extension() != ".yaml") continue;
    EXPECT_NO_THROW(load_recipe(e.path().string())) << e.path();
    ++n;
  }
  EXPECT_GE(n, 1);
}

TEST(Recipes, ImpossibleRecipesAreInputErrorsNamingTheFile) {
  test::TempDir dir;
  const auto path = dir.file("r.yaml");
  auto error_for = [&](const std::string& yaml) {
    test::write_bytes(path, yaml);
    return expect_input_error([&] { load_recipe(path); });
  };
  EXPECT_NE(error_for("model: lenet300\ntrian: {epochs: 3}\n").find(path + ": line 2: unknown key 'trian'"),
            std::string::npos);
  EXPECT_NE(error_for("prune: {sparsity: 1.5}\n").find("outside [0, 1)"), std::string::npos);
  EXPECT_NE(error_for("prune: {sparsity: -0.1}\n").find("outside [0, 1)"), std::string::npos);
  EXPECT_NE(error_for("model: vgg\n").find("model 'vgg' is unknown"), std::string::npos);
  EXPECT_NE(error_for("train: {epochs: three}\n").find("wrong type"), std::string::npos);
  EXPECT_NE(error_for("train: [1, 2\n").find("invalid YAML"), std::string::npos);
  EXPECT_NE(error_for("prune: {schedule: {kind: gradual, end_epoch: 50}}\n").find("ends at epoch 50"),
            std::string::npos);
  EXPECT_NE(error_for("prune: {scope: galaxy}\n").find("scope 'galaxy' is unknown"), std::string::npos);
  EXPECT_NE(error_for("").find("empty"), std::string::npos);
  // Patterns: impossible N:M, a sparsity N:M cannot give, bad blocks; gradient criteria knobs.
  EXPECT_NE(error_for("prune: {pattern: \"3:2\"}\n").find("N < M"), std::string::npos);
  EXPECT_NE(error_for("prune: {pattern: \"2:4\", sparsity: 0.9}\n").find("fixes the sparsity at 0.5"), std::string::npos);
  EXPECT_NE(error_for("prune: {pattern: \"block:4\"}\n").find("block:RxC"), std::string::npos);
  EXPECT_NE(error_for("prune: {srste_decay: 0.0002}\n").find("srste_decay is for N:M patterns"), std::string::npos);
  EXPECT_NE(error_for("prune: {pattern: \"2:4\", srste_decay: 0.0002}\n").find("schedule kind oneshot"),
            std::string::npos);
  EXPECT_NE(error_for("prune: {pattern: \"2:4\", srste_decay: 2, schedule: {kind: oneshot}}\n").find("[0, 1]"),
            std::string::npos);
  EXPECT_NE(error_for("prune: {criterion: taylor, calibration_batches: 0}\n").find("calibration_batches"),
            std::string::npos);
  EXPECT_NE(error_for("input: init\ntrain: {epochs: 5}\n").find("input: init"), std::string::npos);
  EXPECT_NE(error_for("train: {epochs: 0}\n").find("input: init"), std::string::npos);
  EXPECT_NE(error_for("finetune: {distill: {alpha: 2}}\n").find("distill.alpha"), std::string::npos);
  EXPECT_NE(error_for("shrink: {sparsity: 0.3, recalibrate_bn: -1}\n").find("shrink.recalibrate_bn must be in [0, 60000]"), std::string::npos);
  EXPECT_NE(error_for("finetune: {distill: {alpah: 0.5}}\n").find("unknown key 'finetune.distill.alpah'"), std::string::npos);
  EXPECT_NE(error_for("train: {distill: {alpha: 0.5}}\n").find("needs a teacher"), std::string::npos);
  EXPECT_NE(error_for("prune: {schedule: {kind: iterative, rounds: 3}}\nfinetune: {epochs: 0}\n").find("retrains each round"),
            std::string::npos);
  EXPECT_NE(error_for("prune: {schedule: {kind: iterative, rewind: \"epoch:99\"}}\n").find("after the last dense epoch"),
            std::string::npos);
  EXPECT_NE(error_for("prune: {schedule: {kind: iterative, rewind: later}}\n").find("rewind 'later' is unknown"),
            std::string::npos);
  EXPECT_NE(error_for("prune: {schedule: {kind: gradual, end_epoch: 5, rounds: 3}}\n").find("iterative schedule"),
            std::string::npos);
  EXPECT_NE(error_for("input: x.safetensors\ntrain: {epochs: 0}\nprune: {schedule: {kind: iterative, rewind: init}}\n")
                .find("rewinding needs the dense training"),
            std::string::npos);
  // N:M without a sparsity takes 1 − N/M; init without train skips dense training.
  test::write_bytes(path, "prune: {pattern: \"1:4\", schedule: {kind: oneshot}}\ninput: init\n");
  const auto r = load_recipe(path);
  EXPECT_EQ(r.prune.sparsity, 0.75);
  EXPECT_EQ(r.train.epochs, 0);
}

TEST(Data, LoadsFashionMnistWithLimits) {
  if (!have_fashion_mnist()) GTEST_SKIP() << "Fashion-MNIST not installed";
  auto d = data::load_split(small_data(1000, 0), "train");
  EXPECT_EQ(d.images.sizes(), (std::vector<std::int64_t>{1000, 1, 28, 28}));
  EXPECT_EQ(data::load_split(small_data(0, 0), "test").size(), 10000);
  EXPECT_GE(d.labels.min().item<std::int64_t>(), 0);
  EXPECT_LE(d.labels.max().item<std::int64_t>(), 9);
  // Normalised: mean about 0 over the data.
  EXPECT_NEAR(d.images.mean().item<float>(), 0.0f, 0.1f);
}

namespace {

struct Run {
  std::shared_ptr<Net> net;
  std::unique_ptr<Sparsifier> sp;
  TrainResult result;
};

TrainConfig short_config() {
  TrainConfig t;
  t.epochs = 2;
  t.batch_size = 64;
  t.lr = 0.05;
  t.weight_decay = 5e-4;
  t.augment = true;
  return t;
}

Run train_small(const data::Dataset& train, const data::Dataset& test, const CheckpointOptions& ck, bool sparse) {
  torch::manual_seed(7);
  Run r;
  r.net = make_model("lenet300");
  if (sparse) {
    std::vector<PrunedParam> params;
    for (auto& [name, w] : prunable_weights(*r.net)) params.push_back({name, w});
    PruneConfig pc;
    pc.sparsity = 0.8;
    pc.schedule.end_epoch = 1.5;
    pc.schedule.frequency = 5;
    r.sp = Sparsifier::from_config(params, pc, (train.size() + 63) / 64);
  }
  Trainer trainer(*r.net, short_config(), 7, r.sp.get());
  r.result = trainer.fit(train, &test, ck, false);
  return r;
}

std::string state_bytes(Net& net) {
  test::TempDir dir;
  save_model(dir.file("m.safetensors"), net);
  return test::read_bytes(dir.file("m.safetensors"));
}

}  // namespace

TEST(Training, ShortRunBeatsChanceByAWideMargin) {
  if (!have_fashion_mnist()) GTEST_SKIP() << "Fashion-MNIST not installed";
  auto train = data::load_split(small_data(4000, 0), "train");
  auto test = data::load_split(small_data(0, 2000), "test");
  auto r = train_small(train, test, {}, false);
  ASSERT_EQ(r.result.history.size(), 2u);
  EXPECT_GT(r.result.history.back().test_accuracy, 0.70);  // chance is 0.10
  EXPECT_LT(r.result.history.back().train_loss, r.result.history.front().train_loss);
}

TEST(Training, SameSeedGivesIdenticalBytes) {
  if (!have_fashion_mnist()) GTEST_SKIP() << "Fashion-MNIST not installed";
  auto train = data::load_split(small_data(1500, 0), "train");
  auto test = data::load_split(small_data(0, 500), "test");
  auto a = train_small(train, test, {}, true);
  auto b = train_small(train, test, {}, true);
  EXPECT_EQ(state_bytes(*a.net), state_bytes(*b.net));
}

TEST(Training, InterruptedSparseRunResumesToTheSameWeights) {
  if (!have_fashion_mnist()) GTEST_SKIP() << "Fashion-MNIST not installed";
  test::TempDir dir;
  auto train = data::load_split(small_data(1500, 0), "train");
  auto test = data::load_split(small_data(0, 500), "test");
  auto full = train_small(train, test, {}, true);

  CheckpointOptions ck{dir.file("ckpt.safetensors"), false, "finetune", 31};  // mid-epoch 2, mid-ramp
  auto first = train_small(train, test, ck, true);
  ASSERT_TRUE(first.result.interrupted);
  ASSERT_TRUE(fs::exists(ck.path));
  EXPECT_EQ(checkpoint_stage(ck.path), "finetune");
  ck.resume = true;
  ck.stop_at_step = -1;
  auto resumed = train_small(train, test, ck, true);
  ASSERT_FALSE(resumed.result.interrupted);
  EXPECT_FALSE(fs::exists(ck.path)) << "a finished stage removes its checkpoint";
  EXPECT_EQ(state_bytes(*full.net), state_bytes(*resumed.net));
  EXPECT_EQ(resumed.result.history.size(), 2u);
  // The run ends at the target, exactly.
  std::int64_t n = 0, nnz = 0;
  for (const auto& s : resumed.sp->stats()) {
    n += s.numel;
    nnz += s.nnz;
  }
  EXPECT_EQ(n - nnz, std::llround(0.8 * double(n)));
}

// Movement pruning scores from what it accumulated over the steps so far: the checkpoint must
// carry those scores, or the resumed run prunes differently (it did, before they were saved).
TEST(Training, InterruptedMovementPruningResumesToTheSameWeights) {
  if (!have_fashion_mnist()) GTEST_SKIP() << "Fashion-MNIST not installed";
  test::TempDir dir;
  auto train = data::load_split(small_data(1500, 0), "train");
  auto test = data::load_split(small_data(0, 200), "test");
  auto run = [&](const CheckpointOptions& ck) {
    torch::manual_seed(7);
    ::Run r;
    r.net = make_model("lenet300");
    std::vector<PrunedParam> params;
    for (auto& [name, w] : prunable_weights(*r.net)) params.push_back({name, w});
    PruneConfig pc;
    pc.sparsity = 0.8;
    pc.criterion = "movement";
    pc.schedule.end_epoch = 1.5;
    pc.schedule.frequency = 5;
    r.sp = Sparsifier::from_config(params, pc, (train.size() + 63) / 64);
    calibrate_gradients(*r.net, train, *r.sp, 2, 64, 7);  // scores before the first masks, as recipes do
    Trainer trainer(*r.net, short_config(), 7, r.sp.get());
    r.result = trainer.fit(train, &test, ck, false);
    return r;
  };
  auto full = run({});
  CheckpointOptions ck{dir.file("ckpt.safetensors"), false, "finetune", 31};  // mid-ramp: scores accumulated
  ASSERT_TRUE(run(ck).result.interrupted);
  ck.resume = true;
  ck.stop_at_step = -1;
  auto resumed = run(ck);
  EXPECT_EQ(state_bytes(*full.net), state_bytes(*resumed.net));
}

TEST(Training, BatchNormRecalibrationAveragesTheBatchStatisticsOfTheModelAsItIs) {
  // Adaptive BN on the ResNet: after re-estimating on 8 images in batches of 4, the stem's
  // running mean and variance are the plain averages of the two batches' statistics of the
  // stem conv's outputs (unbiased variance, as BatchNorm keeps); weights and momentum are
  // unchanged and the net is left in eval mode.
  torch::manual_seed(5);
  auto net = make_model("resnet");
  auto* resnet = net.get();
  data::Dataset d{torch::randn({8, 1, 28, 28}), torch::zeros({8}, torch::kLong)};
  const auto stem_w = resnet->named_parameters()["stem.weight"].detach().clone();
  recalibrate_batchnorm(*net, d, 8, 4);
  EXPECT_FALSE(net->is_training());
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> means, vars;
  for (std::int64_t b = 0; b < 2; ++b) {
    const auto y = torch::conv2d(d.images.narrow(0, 4 * b, 4), stem_w, {}, 1, 1);
    means.push_back(y.mean({0, 2, 3}));
    vars.push_back(y.var({0, 2, 3}, /*unbiased=*/true));
  }
  auto buffers = net->named_buffers();
  EXPECT_TRUE(torch::allclose(buffers["stem_bn.running_mean"], (means[0] + means[1]) / 2, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(buffers["stem_bn.running_var"], (vars[0] + vars[1]) / 2, 1e-4, 1e-6));
  EXPECT_EQ(buffers["stem_bn.num_batches_tracked"].item<std::int64_t>(), 2);
  EXPECT_TRUE(torch::equal(net->named_parameters()["stem.weight"], stem_w));
  for (const auto& m : net->modules(false))
    if (auto* bn = m->as<torch::nn::BatchNorm2d>()) EXPECT_EQ(bn->options.momentum().value(), 0.1);
  // No BatchNorm: nothing to do, the MLP's outputs stay the same.
  auto mlp = make_model("lenet300");
  mlp->eval();
  const auto before = mlp->forward(d.images);
  recalibrate_batchnorm(*mlp, d, 8);
  EXPECT_TRUE(torch::equal(mlp->forward(d.images), before));
}

TEST(Training, ResumingAnotherStagesCheckpointIsRefused) {
  if (!have_fashion_mnist()) GTEST_SKIP() << "Fashion-MNIST not installed";
  test::TempDir dir;
  auto train = data::load_split(small_data(500, 0), "train");
  auto test = data::load_split(small_data(0, 100), "test");
  CheckpointOptions ck{dir.file("ckpt.safetensors"), false, "train", 3};
  ASSERT_TRUE(train_small(train, test, ck, false).result.interrupted);
  ck.stage = "finetune";
  ck.resume = true;
  EXPECT_NE(expect_input_error([&] { train_small(train, test, ck, false); }).find("from stage 'train'"),
            std::string::npos);
}

#include "prunus/runtime.h"

// Every architecture through the runtime (convolutions as im2col, BatchNorm folded into
// them, residual adds, pooling) against the libtorch forward in eval mode, 90% pruned.
TEST(Runtime, MatchesTheLibtorchForwardOnPrunedModelsOfEveryArchitecture) {
  for (const std::string arch : {"lenet300", "lenet5", "resnet", "inception"}) {
    test::TempDir dir;
    torch::manual_seed(3);
    auto net = make_model(arch);
    {
      torch::NoGradGuard ng;  // BatchNorm statistics that are not the identity, so folding shows
      for (auto& b : net->named_buffers())
        if (b.key().find("running_mean") != std::string::npos) b.value().copy_(torch::randn(b.value().sizes()) * 0.1);
        else if (b.key().find("running_var") != std::string::npos) b.value().copy_(torch::rand(b.value().sizes()) + 0.5);
      for (auto& p : net->named_parameters())
        if (p.key().find("bn") != std::string::npos) p.value().copy_(torch::rand(p.value().sizes()) + 0.5);
    }
    std::vector<PrunedParam> params;
    for (auto& [name, w] : prunable_weights(*net)) params.push_back({name, w});
    Sparsifier sp(params, make_criterion("magnitude"), make_pattern("unstructured"), make_scope("global"),
                  make_oneshot_schedule(0.9, 0));
    sp.prune_to(0.9);
    const auto path = dir.file("sparse.safetensors");
    save_model(path, *net);
    net->eval();
    for (std::int64_t batch : {1, 7}) {
      auto raw = torch::rand({batch, 1, 28, 28});
      torch::NoGradGuard ng;
      auto expect = net->forward((raw - data::kPixelMean) / data::kPixelStd).contiguous();
      using Path = runtime::LoadOptions::ConvPath;
      for (auto [dense, conv] : {std::pair{false, Path::Measured}, {true, Path::Measured}, {false, Path::Im2col},
                                 {true, Path::Direct}, {false, Path::Planar}, {true, Path::Flat}}) {
        runtime::LoadOptions lo;
        lo.batch_hint = batch;
        lo.dense = dense;
        lo.conv = conv;
        auto m = runtime::Model::load(path, lo);
        ASSERT_EQ(m.input_size(), 784);
        ASSERT_EQ(m.output_size(), 10);
        auto got = m.forward(raw.data_ptr<float>(), batch);
        auto g = torch::from_blob(got.data(), {batch, 10}).clone();
        const double err = ((g - expect).abs() / expect.abs().clamp_min(1.0)).max().item<double>();
        EXPECT_LT(err, 1e-4) << arch << " dense=" << dense << " conv path " << int(conv) << " batch=" << batch;
        EXPECT_TRUE(torch::equal(g.argmax(1), expect.argmax(1))) << arch;
      }
    }
    // The runtime saw the zeros: 90% of the pruned weights are not stored densely.
    auto m = runtime::Model::load(path);
    std::int64_t nnz = 0, n = 0;
    for (const auto& l : m.layers()) {
      nnz += l.nnz;
      n += l.rows * l.cols;
    }
    EXPECT_EQ(m.layers().size(), prunable_weights(*net).size()) << arch;
    EXPECT_EQ(n - nnz, std::llround(0.9 * double(n))) << arch;
  }
}

// The runtime folds each ReLU into a neighbour (a pool, a bias loop, the conv's output); an
// observer must still see every conv and linear output before its activation, and observing
// must not change the result.
TEST(Runtime, ObserversSeeValuesBeforeTheFusedRelu) {
  test::TempDir dir;
  torch::manual_seed(3);
  auto net = make_model("lenet5");
  const auto path = dir.file("lenet5.safetensors");
  save_model(path, *net);
  const auto m = runtime::Model::load(path);
  std::vector<float> x(static_cast<std::size_t>(4 * m.input_size()));
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (auto& v : x) v = u(rng);
  const auto plain = m.forward(x.data(), 4);
  std::map<std::string, float> lowest;
  const auto observed = m.forward(x.data(), 4, [&](const std::string& layer, const float* v, std::int64_t positions,
                                                   std::int64_t channels) {
    float lo = 0;
    for (std::int64_t i = 0; i < positions * channels; ++i) lo = std::min(lo, v[i]);
    lowest[layer] = lo;
  });
  EXPECT_EQ(plain, observed);
  for (const std::string layer : {"conv1", "conv2", "fc1", "fc2", "fc3"})
    EXPECT_LT(lowest.at(layer), 0.0f) << layer << " was observed after its ReLU";
}

TEST(Runtime, RejectsModelsItCannotRunNamingTheFile) {
  test::TempDir dir;
  const auto path = dir.file("model.safetensors");
  auto mlp = make_model("lenet300");
  NamedTensors state;
  for (const auto& p : mlp->named_parameters()) state.emplace_back(p.key(), p.value());
  auto write_graph = [&](const std::string& graph) {
    write_tensors(path, state, {{"prunus.arch", "lenet300"}, {"prunus.graph", graph}});
    return expect_input_error([&] { runtime::Model::load(path); });
  };
  EXPECT_NE(write_graph("{not json").find("malformed"), std::string::npos);
  EXPECT_NE(write_graph(R"({"input":[784],"ops":[{"op":"conv3d"}]})").find("unknown op 'conv3d'"), std::string::npos);
  EXPECT_NE(write_graph(R"({"input":[700],"ops":[{"op":"linear","weight":"fc1.weight"}]})").find("expects 784 inputs"),
            std::string::npos);
  EXPECT_NE(write_graph(R"({"input":[784],"ops":[{"op":"linear","weight":"fc9.weight"}]})").find("tensor 'fc9.weight' not found"),
            std::string::npos);
  EXPECT_NE(write_graph(R"({"input":[784],"ops":[]})").find("no layers"), std::string::npos);
  EXPECT_NE(write_graph(R"({"input":[1,28,28],"ops":[{"op":"linear","weight":"fc1.weight"}]})").find("flatten or pool"),
            std::string::npos);
  EXPECT_NE(write_graph(R"({"input":[784],"ops":[{"op":"add","inputs":["input","skip"]}]})").find("'skip'"),
            std::string::npos);
  EXPECT_NE(write_graph(R"({"input":[1,28,28],"ops":[{"op":"conv2d","weight":"fc1.weight"}]})").find("must be [out, in, k, k]"),
            std::string::npos);
  EXPECT_NE(write_graph(R"({"input":[1,28,28],"ops":[{"op":"concat","inputs":["input"]}]})").find("concat needs"),
            std::string::npos);
  EXPECT_NE(write_graph(R"({"input":[1,28,28],"ops":[{"op":"maxpool2d","kernel":2,"output":"p"},)"
                        R"({"op":"concat","inputs":["input","p"]}]})")
                .find("heights and widths must match"),
            std::string::npos);
  EXPECT_NE(write_graph(R"({"input":[1,2,2],"ops":[{"op":"maxpool2d","kernel":3}]})").find("larger than its input"),
            std::string::npos);
  // A few bytes of JSON must not make the runtime allocate gigabytes.
  NamedTensors conv_state = state;
  conv_state.emplace_back("c.weight", torch::ones({4, 1, 3, 3}));
  write_tensors(path, conv_state,
                {{"prunus.arch", "lenet300"},
                 {"prunus.graph", R"({"input":[1,28,28],"ops":[{"op":"conv2d","weight":"c.weight","padding":4000}]})"}});
  EXPECT_NE(expect_input_error([&] { runtime::Model::load(path); }).find("too large"), std::string::npos);
  {
    NamedTensors none;
    for (const auto& p : mlp->named_parameters()) none.emplace_back(p.key(), p.value());
    write_tensors(path, none, {{"prunus.arch", "lenet300"}});
    EXPECT_NE(expect_input_error([&] { runtime::Model::load(path); }).find(path + ": no 'prunus.graph'"),
              std::string::npos);
  }
}

// Gradient criteria end to end: Taylor scores from calibration batches give an exact one-shot
// mask; movement accumulates through fine-tuning on a gradual schedule and ends exact, with
// the pruned weights held at zero.
TEST(Criteria, TaylorAfterCalibrationAndMovementDuringFineTuning) {
  if (!have_fashion_mnist()) GTEST_SKIP() << "Fashion-MNIST not installed";
  auto train = data::load_split(small_data(1024, 0), "train");
  auto test_set = data::load_split(small_data(0, 256), "test");
  for (const std::string crit : {"taylor", "movement"}) {
    torch::manual_seed(4);
    auto net = make_model("lenet300");
    std::vector<PrunedParam> params;
    for (auto& [name, w] : prunable_weights(*net)) params.push_back({name, w});
    PruneConfig pc;
    pc.criterion = crit;
    pc.sparsity = 0.8;
    pc.scope = "layer";
    pc.schedule.kind = crit == "taylor" ? "oneshot" : "gradual";
    pc.schedule.end_epoch = 1;
    pc.schedule.frequency = 4;
    const std::int64_t steps_per_epoch = 1024 / 64;
    auto sp = Sparsifier::from_config(params, pc, steps_per_epoch, 3);
    ASSERT_TRUE(sp->needs_gradients());
    calibrate_gradients(*net, train, *sp, 2, 64, 3);
    for (const auto& p : net->parameters()) EXPECT_FALSE(p.grad().defined()) << "calibration left gradients";
    Trainer trainer(*net, short_config(), 7, sp.get());
    trainer.fit(train, &test_set, {}, false);
    for (const auto& st : sp->stats())
      EXPECT_EQ(st.numel - st.nnz, std::llround(0.8 * double(st.numel))) << crit << " " << st.name;
  }
}

// calibrate_activations records, per weight column, exactly the inputs that column multiplies:
// for a conv the padded input window of each kernel tap, for a linear its input feature.
TEST(Criteria, ActivationStatisticsAreWhatEachColumnMultiplies) {
  if (!have_fashion_mnist()) GTEST_SKIP() << "Fashion-MNIST not installed";
  auto train = data::load_split(small_data(128, 0), "train");
  torch::manual_seed(5);
  auto net = make_model("lenet5");
  std::vector<PrunedParam> params;
  for (auto& [name, w] : prunable_weights(*net)) params.push_back({name, w});
  PruneConfig pc;
  pc.criterion = "activation";
  pc.sparsity = 0.9;
  pc.schedule.kind = "oneshot";
  auto sp = Sparsifier::from_config(params, pc, 2, 0);
  ASSERT_TRUE(sp->needs_activations());
  net->train();
  calibrate_activations(*net, train, *sp, 2, 64, 3);  // two batches of 64: all 128 images
  EXPECT_TRUE(net->is_training()) << "calibration must restore the training mode";

  // The same images through the eval-mode net, inputs captured by a hook of our own.
  std::map<std::string, torch::Tensor> seen;
  net->eval();
  net->set_input_hook([&](const std::string& layer, const torch::Tensor& x) {
    seen[layer] = x.detach().to(torch::kFloat64);
    return x;
  });
  {
    torch::NoGradGuard ng;
    net->forward(train.images);
  }
  net->set_input_hook({});
  const auto score_of = [&](const std::string& name) {
    for (const auto& p : sp->params())
      if (p.name == name) return sp->criterion().score(p);
    ADD_FAILURE() << name;
    return torch::Tensor();
  };
  // conv1 (k×k, stride 1, padding p): tap (ki, kj) multiplies the padded input shifted by it.
  auto* conv1 = net->named_modules()["conv1"]->as<torch::nn::Conv2dImpl>();
  const auto k = conv1->options.kernel_size()->at(0);
  using std::get_if;  // c10::variant (libtorch 1.x) or std::variant (2.x)
  const auto p = (*get_if<torch::ExpandingArray<2>>(&conv1->options.padding()))->at(0);
  const auto x = seen.at("conv1");
  const auto xp = torch::constant_pad_nd(x, {p, p, p, p});
  const auto oh = x.size(2) + 2 * p - k + 1, ow = x.size(3) + 2 * p - k + 1;
  auto rms = torch::empty({x.size(1), k, k}, torch::kFloat64);
  for (std::int64_t ki = 0; ki < k; ++ki)
    for (std::int64_t kj = 0; kj < k; ++kj)
      rms.select(1, ki).select(1, kj).copy_(
          xp.narrow(2, ki, oh).narrow(3, kj, ow).square().mean({0, 2, 3}).sqrt());
  const auto w1 = conv1->weight.detach().to(torch::kFloat64).abs();
  EXPECT_TRUE(torch::allclose(score_of("conv1.weight"), w1 * rms.unsqueeze(0), 1e-9, 0));
  // fc1: its input features' root mean squares.
  const auto f = seen.at("fc1");
  const auto wf = net->named_parameters()["fc1.weight"].detach().to(torch::kFloat64).abs();
  EXPECT_TRUE(torch::allclose(score_of("fc1.weight"), wf * f.square().mean(0).sqrt().unsqueeze(0), 1e-9, 0));
  // And the one-shot mask is exact.
  sp->prune_to(0.9);
  std::int64_t n = 0, zeros = 0;
  for (const auto& st : sp->stats()) {
    n += st.numel;
    zeros += st.numel - st.nnz;
  }
  EXPECT_EQ(zeros, std::llround(0.9 * double(n)));
}

TEST(Distillation, LossMatchesTheHandComputedKl) {
  // Teacher [ln 3, 0] → p = [0.75, 0.25]; student [0, 0] → q = [0.5, 0.5];
  // KL(p‖q) = 0.75·ln 1.5 + 0.25·ln 0.5.
  auto s = torch::zeros({1, 2}), t = torch::tensor({{std::log(3.0f), 0.0f}});
  const double kl = 0.75 * std::log(1.5) + 0.25 * std::log(0.5);
  auto hard = torch::tensor(2.0);
  EXPECT_NEAR(distillation_loss(s, t, hard, 1.0, 1.0).item<double>(), kl, 1e-6);
  EXPECT_NEAR(distillation_loss(s, t, hard, 0.5, 1.0).item<double>(), 0.5 * kl + 1.0, 1e-6);
  // At T = 2 the teacher softens to [√3, 1]/(√3 + 1) and the term is scaled by T².
  const double p0 = std::sqrt(3.0) / (std::sqrt(3.0) + 1), p1 = 1 - p0;
  EXPECT_NEAR(distillation_loss(s, t, hard, 1.0, 2.0).item<double>(),
              4 * (p0 * std::log(p0 / 0.5) + p1 * std::log(p1 / 0.5)), 1e-6);
}

TEST(Criteria, SynFlowIsExactDataFreeAndKeepsTheSurvivorsValues) {
  torch::manual_seed(2);
  for (const std::string arch : {"lenet300", "resnet"}) {
    auto net = make_model(arch);
    std::vector<torch::Tensor> before;
    for (auto& p : net->parameters()) before.push_back(p.detach().clone());
    std::vector<PrunedParam> params;
    for (auto& [name, w] : prunable_weights(*net)) params.push_back({name, w});
    Sparsifier sp(params, make_criterion("synflow"), make_pattern("unstructured"), make_scope("global"),
                  make_oneshot_schedule(0.98, 0));
    synflow_prune(*net, sp, 0.98, 20);
    std::int64_t n = 0, zeros = 0, empty_layers = 0;
    for (const auto& st : sp.stats()) {
      n += st.numel;
      zeros += st.numel - st.nnz;
      empty_layers += st.nnz == 0;
    }
    EXPECT_EQ(zeros, std::llround(0.98 * double(n))) << arch;
    EXPECT_EQ(empty_layers, 0) << arch << ": SynFlow must not collapse a layer";
    std::size_t i = 0;
    for (auto& p : net->parameters()) {
      EXPECT_EQ(p.scalar_type(), torch::kFloat32);
      EXPECT_FALSE(p.grad().defined());
      const auto kept = p.detach() != 0;  // survivors keep their values and signs exactly
      EXPECT_TRUE(torch::equal(p.detach().masked_select(kept), before[i].masked_select(kept))) << arch;
      ++i;
    }
  }
}

TEST(Recipes, SetOverridesKeysBeforeValidation) {
  test::TempDir dir;
  const auto path = dir.file("r.yaml");
  test::write_bytes(path, "model: lenet300\nprune: {sparsity: 0.5}\n");
  const auto r = load_recipe(path, {"prune.sparsity=0.8", "finetune.distill.alpha=0.3", "seed=7", "prune.scope=layer"});
  EXPECT_EQ(r.prune.sparsity, 0.8);
  EXPECT_EQ(r.finetune.distill_alpha, 0.3);
  EXPECT_EQ(r.seed, 7u);
  EXPECT_EQ(r.prune.scope, "layer");
  EXPECT_NE(expect_input_error([&] { load_recipe(path, {"prune.sparsty=0.8"}); }).find("unknown key 'prune.sparsty'"),
            std::string::npos);
  EXPECT_NE(expect_input_error([&] { load_recipe(path, {"prune.sparsity"}); }).find("key.path=value"), std::string::npos);
  EXPECT_NE(expect_input_error([&] { load_recipe(path, {"model.x=1"}); }).find("not a mapping"), std::string::npos);
  EXPECT_NE(expect_input_error([&] { load_recipe(path, {"prune.sparsity=1.5"}); }).find("outside [0, 1)"),
            std::string::npos);
}

// Static INT8 activation scales come from what each layer read: max|x| (minmax), a high
// percentile, or an MSE-chosen clip between 0.3 and 1 of the max.
TEST(Runtime, Int8CalibrationScalesAreWhatTheLayersSaw) {
  const std::string path = ::testing::TempDir() + "/calib.safetensors";
  auto w1 = torch::tensor({1.0f, 0.5f, -1.0f, 0.25f, -0.5f, 2.0f, 1.0f, -1.0f, 0.0f, 1.0f, 1.0f, 1.0f}).reshape({3, 4});
  auto w2 = torch::tensor({1.0f, -1.0f, 0.5f, 2.0f, 0.0f, 1.0f}).reshape({2, 3});
  write_tensors(path, {{"a.weight", w1}, {"b.weight", w2}},
                {{"prunus.arch", "mlp"},
                 {"prunus.graph",
                  R"({"input":[4],"ops":[{"op":"linear","weight":"a.weight"},{"op":"relu"},{"op":"linear","weight":"b.weight"}]})"}});
  const std::vector<float> x = {1, -2, 0.5f, 3, -4, 1, 1, 0};
  // The second layer reads relu(W1·x) for both samples.
  auto h = torch::relu(torch::matmul(torch::tensor(x).reshape({2, 4}), w1.t()));
  const float h_max = h.abs().max().item<float>();
  runtime::LoadOptions lo;
  lo.int8 = true;
  {
    auto m = runtime::Model::load(path, lo);
    const auto s = m.calibrate_int8(x.data(), 2, "minmax");
    ASSERT_EQ(s.size(), 2u);
    EXPECT_FLOAT_EQ(s[0], 4.0f / 127.0f);
    // The second layer reads what the INT8 first layer produced: h within its quantization error.
    EXPECT_NEAR(s[1], h_max / 127.0f, 0.02f * h_max / 127.0f);
    EXPECT_NE(s[1], h_max / 127.0f);
    const auto y = m.forward(x.data(), 2);
    auto ref = torch::matmul(h, w2.t()).reshape({-1});
    for (int i = 0; i < 4; ++i) EXPECT_NEAR(y[i], ref[i].item<float>(), 0.05f) << i;
  }
  {
    auto m = runtime::Model::load(path, lo);
    // 8 values |x| sorted: 0, 0.5, 1, 1, 1, 2, 3, 4; the 99.99th percentile index is 6 → 3.
    EXPECT_FLOAT_EQ(m.calibrate_int8(x.data(), 2, "percentile")[0], 3.0f / 127.0f);
  }
  {
    auto m = runtime::Model::load(path, lo);
    const auto s = m.calibrate_int8(x.data(), 2, "mse");
    EXPECT_GE(s[0], 0.3f * 4.0f / 127.0f - 1e-7f);
    EXPECT_LE(s[0], 4.0f / 127.0f + 1e-7f);
    EXPECT_NE(expect_input_error([&] { m.calibrate_int8(x.data(), 2, "median"); }).find("unknown"), std::string::npos);
  }
}

#include "train/qat.h"

TEST(Qat, FakeQuantIsTheInt8GridPerChannelAndKeepsZeros) {
  // Row 0: max 2.54 → scale 0.02: codes 0, 50, -127 and round(0.25/0.02 = 12.5) (half to even,
  // as the runtime's nearbyint). Row 1: all zero stays zero.
  auto w = torch::tensor({0.0f, 1.0f, -2.54f, 0.25f, 0.0f, 0.0f, 0.0f, 0.0f}).reshape({2, 4});
  auto q = qat::fake_quant_weight(w);
  const float s = 2.54f / 127.0f;
  EXPECT_EQ(q[0][0].item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(q[0][1].item<float>(), 50 * s);
  EXPECT_FLOAT_EQ(q[0][2].item<float>(), -127 * s);
  EXPECT_FLOAT_EQ(q[0][3].item<float>(), std::nearbyint(0.25f / s) * s);
  EXPECT_TRUE(torch::equal(q[1], torch::zeros({4})));
  // Activations: x / scale half to even (the runtime's and ONNX QuantizeLinear's rounding),
  // saturated to [-128, 127]·scale, gradient straight through.
  auto x = torch::tensor({0.5f, -0.5f, 1.5f, 1.49f, 300.0f, -300.0f}).requires_grad_();
  auto y = qat::fake_quant_activation(x, 1.0);
  EXPECT_TRUE(torch::equal(y.detach(), torch::tensor({0.0f, -0.0f, 2.0f, 1.0f, 127.0f, -128.0f})));
  y.sum().backward();
  EXPECT_TRUE(torch::equal(x.grad(), torch::ones({6})));
}

// Quantization-aware fine-tuning of an 80%-sparse LeNet-300: the zeros stay where they were,
// an interrupted run resumes to the same bytes and ranges, and the runtime's INT8 model with
// the learned static scales computes what the fake-quantized forward computed.
TEST(Qat, FineTuningHoldsMasksResumesAndMatchesTheRuntimeInt8Model) {
  if (!have_fashion_mnist()) GTEST_SKIP() << "Fashion-MNIST not installed";
  test::TempDir dir;
  auto train = data::load_split(small_data(1500, 0), "train");
  auto test = data::load_split(small_data(0, 500), "test");
  auto base = train_small(train, test, {}, true);
  const auto before = state_bytes(*base.net);
  auto qat_run = [&](const CheckpointOptions& ck) {
    auto net = make_model("lenet300");
    copy_state(*net, *base.net);
    std::vector<PrunedParam> params;
    for (auto& [name, w] : prunable_weights(*net)) params.push_back({name, w});
    auto sp = std::make_unique<Sparsifier>(params, make_criterion("magnitude"), make_pattern("unstructured"),
                                           make_scope("layer"), make_oneshot_schedule(0.0, -1));
    sp->masks_from_zeros();
    TrainConfig t = short_config();
    t.epochs = 1;
    t.lr = 0.01;
    t.qat = true;
    Trainer trainer(*net, t, 11, sp.get());
    ::Run r{net, std::move(sp), trainer.fit(train, &test, ck, false)};
    return r;
  };
  auto full = qat_run({});
  ASSERT_EQ(full.result.act_scales.size(), 3u);
  for (const auto& [name, s] : full.result.act_scales) EXPECT_GT(s, 0.0f) << name;
  // Masks held: zero exactly where the sparse model had its zeros, and the weights did move.
  auto base_w = prunable_weights(*base.net), qat_w = prunable_weights(*full.net);
  for (std::size_t i = 0; i < base_w.size(); ++i) {
    EXPECT_TRUE(torch::equal(base_w[i].second == 0, qat_w[i].second == 0)) << base_w[i].first;
    EXPECT_FALSE(torch::equal(base_w[i].second, qat_w[i].second)) << base_w[i].first;
  }
  EXPECT_EQ(state_bytes(*base.net), before);
  // Interrupted mid-epoch and resumed: the same weights and the same activation ranges.
  CheckpointOptions ck{dir.file("qat.ckpt"), false, "finetune", 9};
  ASSERT_TRUE(qat_run(ck).result.interrupted);
  ck.resume = true;
  ck.stop_at_step = -1;
  auto resumed = qat_run(ck);
  EXPECT_EQ(state_bytes(*resumed.net), state_bytes(*full.net));
  EXPECT_EQ(resumed.result.act_scales, full.result.act_scales);

  // The runtime, INT8 with the stored scales, against the fake-quantized libtorch forward.
  const auto path = dir.file("qat.safetensors");
  save_model(path, *full.net, {{kActScalesKey, act_scales_json(full.result.act_scales)}});
  runtime::LoadOptions lo;
  lo.int8 = true;
  lo.batch_hint = 500;
  auto m = runtime::Model::load(path, lo);
  EXPECT_EQ(m.static_act_layers(), 3);
  auto raw = (test.images * data::kPixelStd + data::kPixelMean).contiguous();
  auto got = m.forward(raw.data_ptr<float>(), test.size());
  auto g = torch::from_blob(got.data(), {test.size(), 10}).clone();
  torch::Tensor expect;
  {
    qat::FakeQuant fq(*full.net);
    std::int64_t i = 0;
    for (const auto& [name, w] : prunable_weights(*full.net))
      fq.ranges()[i++] = double(full.result.act_scales.at(name)) * 127.0;
    auto quantized = fq.quantized_weights();
    full.net->eval();
    torch::NoGradGuard ng;
    expect = full.net->forward(test.images);
  }
  const double spread = (expect.max() - expect.min()).item<double>();
  // The same codes on both sides, up to activations that land within float rounding of a code
  // boundary: libtorch's sums change order with OpenBLAS's thread count (2e-6 of a logit spread
  // of 16 with 2 threads, 4e-4 with OPENBLAS_NUM_THREADS=1, one flipped code); per-token scales
  // instead of the learned ones differ by 0.06 of it.
  EXPECT_LT((g - expect).abs().max().item<double>(), 2e-3 * spread);
  const double agree = (g.argmax(1) == expect.argmax(1)).to(torch::kFloat64).mean().item<double>();
  EXPECT_GE(agree, 0.998);
  // The accuracy QAT reported for its fake-quantized model is the runtime INT8 accuracy.
  const double runtime_acc = (g.argmax(1) == test.labels).to(torch::kFloat64).mean().item<double>();
  EXPECT_NEAR(runtime_acc, full.result.history.back().test_accuracy, 0.0021);
  // Without the stored scales (per-token), the same file still runs: a different model.
  lo.stored_act_scales = false;
  EXPECT_EQ(runtime::Model::load(path, lo).static_act_layers(), 0);
}
