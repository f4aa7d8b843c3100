// The model zoo. Layer names are the torch names that appear in model files.
#include <fmt/format.h>

#include "prunus/data.h"
#include "prunus/io.h"
#include "prunus/models.h"
#include "prunus/recipe.h"

namespace prunus {
namespace nn = torch::nn;
namespace F = torch::nn::functional;

namespace {

// LeNet-300-100 (LeCun et al. 1998; the network of Han et al. 2015's pruning results).
class LeNet300 : public Net {
 public:
  explicit LeNet300(const Widths& w) : Net("lenet300", w) {
    const auto h1 = width("fc1", 300), h2 = width("fc2", 100);
    fc1 = register_module("fc1", nn::Linear(784, h1));
    fc2 = register_module("fc2", nn::Linear(h1, h2));
    fc3 = register_module("fc3", nn::Linear(h2, 10));
  }
  std::string runtime_graph() const override {
    return fmt::format(
        R"({{"input":[1,28,28],"ops":[{{"op":"normalize","mean":{},"std":{}}},{{"op":"flatten"}},)"
        R"({{"op":"linear","weight":"fc1.weight","bias":"fc1.bias"}},{{"op":"relu"}},)"
        R"({{"op":"linear","weight":"fc2.weight","bias":"fc2.bias"}},{{"op":"relu"}},)"
        R"({{"op":"linear","weight":"fc3.weight","bias":"fc3.bias"}}]}})",
        data::kPixelMean, data::kPixelStd);
  }
  torch::Tensor forward(torch::Tensor x) override {
    x = x.flatten(1);
    x = torch::relu(fc1(layer_input("fc1", x)));
    x = torch::relu(fc2(layer_input("fc2", x)));
    return fc3(layer_input("fc3", x));
  }
  nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
};

// LeNet-5 with ReLU and max pooling (conv 6@5×5 pad 2, conv 16@5×5, fc 120-84-10).
class LeNet5 : public Net {
 public:
  explicit LeNet5(const Widths& w) : Net("lenet5", w) {
    const auto c1 = width("conv1", 6), c2 = width("conv2", 16), f1 = width("fc1", 120), f2 = width("fc2", 84);
    conv1 = register_module("conv1", nn::Conv2d(nn::Conv2dOptions(1, c1, 5).padding(2)));
    conv2 = register_module("conv2", nn::Conv2d(nn::Conv2dOptions(c1, c2, 5)));
    fc1 = register_module("fc1", nn::Linear(c2 * 5 * 5, f1));
    fc2 = register_module("fc2", nn::Linear(f1, f2));
    fc3 = register_module("fc3", nn::Linear(f2, 10));
  }
  std::string runtime_graph() const override {
    return fmt::format(
        R"({{"input":[1,28,28],"ops":[{{"op":"normalize","mean":{},"std":{}}},)"
        R"({{"op":"conv2d","weight":"conv1.weight","bias":"conv1.bias","padding":2}},{{"op":"relu"}},)"
        R"({{"op":"maxpool2d","kernel":2}},)"
        R"({{"op":"conv2d","weight":"conv2.weight","bias":"conv2.bias"}},{{"op":"relu"}},)"
        R"({{"op":"maxpool2d","kernel":2}},{{"op":"flatten"}},)"
        R"({{"op":"linear","weight":"fc1.weight","bias":"fc1.bias"}},{{"op":"relu"}},)"
        R"({{"op":"linear","weight":"fc2.weight","bias":"fc2.bias"}},{{"op":"relu"}},)"
        R"({{"op":"linear","weight":"fc3.weight","bias":"fc3.bias"}}]}})",
        data::kPixelMean, data::kPixelStd);
  }
  torch::Tensor forward(torch::Tensor x) override {
    x = F::max_pool2d(torch::relu(conv1(layer_input("conv1", x))), F::MaxPool2dFuncOptions(2));
    x = F::max_pool2d(torch::relu(conv2(layer_input("conv2", x))), F::MaxPool2dFuncOptions(2));
    x = x.flatten(1);
    x = torch::relu(fc1(layer_input("fc1", x)));
    x = torch::relu(fc2(layer_input("fc2", x)));
    return fc3(layer_input("fc3", x));
  }
  nn::Conv2d conv1{nullptr}, conv2{nullptr};
  nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
};

// Basic residual block: conv-bn-relu-conv-bn + shortcut (1×1 conv-bn when shape changes).
class BasicBlockImpl : public nn::Module {
 public:
  // in → mid (conv1) → out (conv2), plus the shortcut; mid differs from out once shrunk.
  // `owner` (the Net) routes layer inputs through its hook under the names "<name>.conv1", ...
  BasicBlockImpl(const Net* owner, std::string name, int64_t in, int64_t mid, int64_t out, int64_t stride)
      : owner_(owner), name_(std::move(name)) {
    conv1 = register_module("conv1", nn::Conv2d(nn::Conv2dOptions(in, mid, 3).stride(stride).padding(1).bias(false)));
    bn1 = register_module("bn1", nn::BatchNorm2d(mid));
    conv2 = register_module("conv2", nn::Conv2d(nn::Conv2dOptions(mid, out, 3).padding(1).bias(false)));
    bn2 = register_module("bn2", nn::BatchNorm2d(out));
    if (stride != 1 || in != out) {
      down_conv = register_module("down_conv", nn::Conv2d(nn::Conv2dOptions(in, out, 1).stride(stride).bias(false)));
      down_bn = register_module("down_bn", nn::BatchNorm2d(out));
    }
  }
  torch::Tensor forward(torch::Tensor x) {
    auto y = torch::relu(bn1(conv1(owner_->layer_input(name_ + ".conv1", x))));
    y = bn2(conv2(owner_->layer_input(name_ + ".conv2", y)));
    auto skip = down_conv ? down_bn(down_conv(owner_->layer_input(name_ + ".down_conv", x))) : x;
    return torch::relu(y + skip);
  }
  nn::Conv2d conv1{nullptr}, conv2{nullptr}, down_conv{nullptr};
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, down_bn{nullptr};

 private:
  const Net* owner_;
  std::string name_;
};
TORCH_MODULE(BasicBlock);

// A small ResNet for 28×28 inputs: stem 16 ch, stages of 16/32/64 channels.
class ResNetSmall : public Net {
 public:
  explicit ResNetSmall(const Widths& w) : Net("resnet", w) {
    // The stem and layer1's output are added, so they share one width (as do a block's conv2
    // and its shortcut).
    const auto s = width("stem", 16), o2 = width("layer2.conv2", 32), o3 = width("layer3.conv2", 64);
    stem = register_module("stem", nn::Conv2d(nn::Conv2dOptions(1, s, 3).padding(1).bias(false)));
    stem_bn = register_module("stem_bn", nn::BatchNorm2d(s));
    layer1 = register_module("layer1", BasicBlock(this, "layer1", s, width("layer1.conv1", 16), s, 1));
    layer2 = register_module("layer2", BasicBlock(this, "layer2", s, width("layer2.conv1", 32), o2, 2));
    layer3 = register_module("layer3", BasicBlock(this, "layer3", o2, width("layer3.conv1", 64), o3, 2));
    fc = register_module("fc", nn::Linear(o3, 10));
  }
  // BatchNorm runs folded into the convolution before it (eval mode).
  std::string runtime_graph() const override {
    auto conv = [](const std::string& c, const std::string& bn, int stride, int pad, const std::string& extra) {
      return fmt::format(
          R"({{"op":"conv2d","weight":"{0}.weight","stride":{2},"padding":{3},"bn":{{"weight":"{1}.weight",)"
          R"("bias":"{1}.bias","running_mean":"{1}.running_mean","running_var":"{1}.running_var","eps":1e-5}}{4}}},)",
          c, bn, stride, pad, extra);
    };
    auto block = [&](const std::string& b, const std::string& in, int stride, bool down) {
      std::string g = conv(b + ".conv1", b + ".bn1", stride, 1, fmt::format(R"(,"input":"{}")", in));
      g += R"({"op":"relu"},)";
      g += conv(b + ".conv2", b + ".bn2", 1, 1, fmt::format(R"(,"output":"{}.main")", b));
      std::string skip = in;
      if (down) {
        g += conv(b + ".down_conv", b + ".down_bn", stride, 0, fmt::format(R"(,"input":"{}","output":"{}.skip")", in, b));
        skip = b + ".skip";
      }
      g += fmt::format(R"({{"op":"add","inputs":["{}.main","{}"]}},{{"op":"relu","output":"{}"}},)", b, skip, b);
      return g;
    };
    std::string g = fmt::format(R"({{"input":[1,28,28],"ops":[{{"op":"normalize","mean":{},"std":{}}},)",
                                data::kPixelMean, data::kPixelStd);
    g += conv("stem", "stem_bn", 1, 1, "");
    g += R"({"op":"relu","output":"stem"},)";
    g += block("layer1", "stem", 1, false);
    g += block("layer2", "layer1", 2, true);
    g += block("layer3", "layer2", 2, true);
    g += R"({"op":"global_avg_pool"},{"op":"linear","weight":"fc.weight","bias":"fc.bias"}]})";
    return g;
  }
  torch::Tensor forward(torch::Tensor x) override {
    x = torch::relu(stem_bn(stem(layer_input("stem", x))));
    x = layer3(layer2(layer1(x)));
    x = x.mean({2, 3});
    return fc(layer_input("fc", x));
  }
  nn::Conv2d stem{nullptr};
  nn::BatchNorm2d stem_bn{nullptr};
  BasicBlock layer1{nullptr}, layer2{nullptr}, layer3{nullptr};
  nn::Linear fc{nullptr};
};

// GoogLeNet's Inception module (Szegedy et al. 2015) without its pooling branch: a 1×1
// branch, 1×1 → 3×3 and 1×1 → 5×5, each conv-bn-relu, concatenated along channels. The
// concatenation couples widths: the next layer's input channels are the three branches' outputs
// one after another, so structured pruning must cut each segment by its own branch's choice.
class InceptionBlockImpl : public nn::Module {
 public:
  // Output channels of the five convs, in the order named below.
  struct BranchWidths {
    int64_t b1, r3, b3, r5, b5;
  };
  InceptionBlockImpl(const Net* owner, std::string name, int64_t in, BranchWidths w) : owner_(owner), name_(std::move(name)) {
    auto conv = [&](const std::string& n, int64_t cin, int64_t cout, int64_t k) {
      convs_.push_back(register_module(n, nn::Conv2d(nn::Conv2dOptions(cin, cout, k).padding(k / 2).bias(false))));
      bns_.push_back(register_module(n + "_bn", nn::BatchNorm2d(cout)));
    };
    conv("branch1x1", in, w.b1, 1);
    conv("branch3x3_reduce", in, w.r3, 1);
    conv("branch3x3", w.r3, w.b3, 3);
    conv("branch5x5_reduce", in, w.r5, 1);
    conv("branch5x5", w.r5, w.b5, 5);
    out_channels_ = w.b1 + w.b3 + w.b5;
  }
  static constexpr const char* kConvs[] = {"branch1x1", "branch3x3_reduce", "branch3x3", "branch5x5_reduce", "branch5x5"};
  torch::Tensor forward(torch::Tensor x) {
    auto cbr = [&](std::size_t i, const torch::Tensor& in) {
      return torch::relu(bns_[i](convs_[i](owner_->layer_input(name_ + "." + kConvs[i], in))));
    };
    return torch::cat({cbr(0, x), cbr(2, cbr(1, x)), cbr(4, cbr(3, x))}, 1);
  }
  // The block in the runtime graph, reading value `in` and naming its output `name_`.
  std::string runtime_graph(const std::string& in) const {
    std::string g;
    auto conv = [&](std::size_t i, const std::string& input) {
      const std::string c = name_ + "." + kConvs[i];
      g += fmt::format(
          R"({{"op":"conv2d","weight":"{0}.weight","padding":{1},"bn":{{"weight":"{0}_bn.weight","bias":"{0}_bn.bias",)"
          R"("running_mean":"{0}_bn.running_mean","running_var":"{0}_bn.running_var","eps":1e-5}}{2}}},{{"op":"relu","output":"{3}"}},)",
          c, convs_[i]->options.kernel_size()->at(0) / 2, input.empty() ? "" : fmt::format(R"(,"input":"{}")", input), c);
    };
    conv(0, in);
    conv(1, in);
    conv(2, "");  // reads the reduce conv before it
    conv(3, in);
    conv(4, "");
    g += fmt::format(R"({{"op":"concat","inputs":["{0}.{1}","{0}.{2}","{0}.{3}"],"output":"{0}"}},)", name_, kConvs[0],
                     kConvs[2], kConvs[4]);
    return g;
  }
  int64_t out_channels() const { return out_channels_; }

 private:
  const Net* owner_;
  std::string name_;
  std::vector<nn::Conv2d> convs_;
  std::vector<nn::BatchNorm2d> bns_;
  int64_t out_channels_ = 0;
};
TORCH_MODULE(InceptionBlock);

// A small GoogLeNet for 28×28 inputs: stem conv 16 → pool → Inception (16, 16→24, 8→8: 48
// channels) → pool → Inception (32, 32→48, 8→16: 96 channels) → global average pool → fc.
class InceptionSmall : public Net {
 public:
  explicit InceptionSmall(const Widths& w) : Net("inception", w) {
    auto widths = [&](const std::string& b, InceptionBlockImpl::BranchWidths d) {
      return InceptionBlockImpl::BranchWidths{width(b + ".branch1x1", d.b1), width(b + ".branch3x3_reduce", d.r3),
                                        width(b + ".branch3x3", d.b3), width(b + ".branch5x5_reduce", d.r5),
                                        width(b + ".branch5x5", d.b5)};
    };
    const auto s = width("stem", 16);
    stem = register_module("stem", nn::Conv2d(nn::Conv2dOptions(1, s, 3).padding(1).bias(false)));
    stem_bn = register_module("stem_bn", nn::BatchNorm2d(s));
    mixed1 = register_module("mixed1", InceptionBlock(this, "mixed1", s, widths("mixed1", {16, 16, 24, 8, 8})));
    mixed2 = register_module("mixed2",
                             InceptionBlock(this, "mixed2", mixed1->out_channels(), widths("mixed2", {32, 32, 48, 8, 16})));
    fc = register_module("fc", nn::Linear(mixed2->out_channels(), 10));
  }
  std::string runtime_graph() const override {
    std::string g = fmt::format(R"({{"input":[1,28,28],"ops":[{{"op":"normalize","mean":{},"std":{}}},)",
                                data::kPixelMean, data::kPixelStd);
    g += R"({"op":"conv2d","weight":"stem.weight","padding":1,"bn":{"weight":"stem_bn.weight","bias":"stem_bn.bias",)"
         R"("running_mean":"stem_bn.running_mean","running_var":"stem_bn.running_var","eps":1e-5}},)";
    g += R"({"op":"relu"},{"op":"maxpool2d","kernel":2,"output":"pool0"},)";
    g += mixed1->runtime_graph("pool0");
    g += R"({"op":"maxpool2d","kernel":2,"output":"pool1"},)";
    g += mixed2->runtime_graph("pool1");
    g += R"({"op":"global_avg_pool"},{"op":"linear","weight":"fc.weight","bias":"fc.bias"}]})";
    return g;
  }
  torch::Tensor forward(torch::Tensor x) override {
    x = F::max_pool2d(torch::relu(stem_bn(stem(layer_input("stem", x)))), F::MaxPool2dFuncOptions(2));
    x = F::max_pool2d(mixed1(x), F::MaxPool2dFuncOptions(2));
    x = mixed2(x).mean({2, 3});
    return fc(layer_input("fc", x));
  }
  nn::Conv2d stem{nullptr};
  nn::BatchNorm2d stem_bn{nullptr};
  InceptionBlock mixed1{nullptr}, mixed2{nullptr};
  nn::Linear fc{nullptr};
};

}  // namespace

std::shared_ptr<Net> make_model(const std::string& arch, const Widths& widths) {
  for (const auto& [layer, w] : widths)
    if (w < 1 || w > (1 << 20)) fail("model '" + arch + "'", fmt::format("layer {} has width {}", layer, w));
  if (arch == "lenet300") return std::make_shared<LeNet300>(widths);
  if (arch == "lenet5") return std::make_shared<LeNet5>(widths);
  if (arch == "resnet") return std::make_shared<ResNetSmall>(widths);
  if (arch == "inception") return std::make_shared<InceptionSmall>(widths);
  fail("model '" + arch + "'", fmt::format("unknown architecture (known: {})", fmt::join(model_names(), ", ")));
}

std::vector<std::pair<std::string, torch::Tensor>> prunable_weights(Net& net) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : net.named_modules("", /*include_self=*/false)) {
    const auto& m = item.value();
    if (auto* lin = m->as<nn::Linear>()) out.emplace_back(item.key() + ".weight", lin->weight);
    else if (auto* conv = m->as<nn::Conv2d>()) out.emplace_back(item.key() + ".weight", conv->weight);
  }
  return out;
}

void copy_state(Net& dst, Net& src) {
  torch::NoGradGuard ng;
  auto sp = src.named_parameters(), dp = dst.named_parameters();
  for (const auto& p : sp) dp[p.key()].copy_(p.value());
  auto sb = src.named_buffers(), db = dst.named_buffers();
  for (const auto& b : sb) db[b.key()].copy_(b.value());
}

}  // namespace prunus
