#include <filesystem>

#include <fmt/format.h>

#include "prunus/data.h"
#include "prunus/idx.h"
#include "prunus/io.h"

namespace prunus::data {
namespace fs = std::filesystem;
namespace {

constexpr float kMean = kPixelMean;
constexpr float kStd = kPixelStd;

std::string dir_of(const DataConfig& cfg) { return cfg.dir.empty() ? kDefaultFashionMnistDir : cfg.dir; }

std::string find_file(const std::string& dir, const std::string& stem) {
  for (const char* ext : {".gz", ""}) {
    fs::path p = fs::path(dir) / (stem + ext);
    if (fs::exists(p)) return p.string();
  }
  fail((fs::path(dir) / (stem + ".gz")).string(),
       "dataset file not found (install Debian's dataset-fashion-mnist or pass --data DIR)");
}

std::string prefix(const std::string& split) {
  if (split == "train") return "train";
  if (split == "test") return "t10k";
  throw std::invalid_argument("unknown split " + split);
}

}  // namespace

void check_available(const DataConfig& cfg) {
  for (const char* split : {"train", "test"}) {
    find_file(dir_of(cfg), prefix(split) + "-images-idx3-ubyte");
    find_file(dir_of(cfg), prefix(split) + "-labels-idx1-ubyte");
  }
}

Dataset load_split(const DataConfig& cfg, const std::string& split) {
  const std::string dir = dir_of(cfg);
  const std::string img_path = find_file(dir, prefix(split) + "-images-idx3-ubyte");
  const std::string lbl_path = find_file(dir, prefix(split) + "-labels-idx1-ubyte");
  idx::Array img = idx::read(img_path);
  idx::Array lbl = idx::read(lbl_path);
  if (img.dims.size() != 3 || img.dims[1] != 28 || img.dims[2] != 28)
    fail(img_path, "expected images of shape N×28×28");
  if (lbl.dims.size() != 1) fail(lbl_path, "expected a rank-1 label array");
  if (lbl.dims[0] != img.dims[0])
    fail(lbl_path, fmt::format("{} labels but {} images in {}", lbl.dims[0], img.dims[0], img_path));
  for (auto l : lbl.data)
    if (l >= 10) fail(lbl_path, fmt::format("label {} is outside 0..9", l));
  std::int64_t n = img.dims[0];
  const std::int64_t limit = split == "train" ? cfg.train_limit : cfg.test_limit;
  if (limit > 0 && limit < n) n = limit;
  Dataset d;
  d.images = torch::from_blob(img.data.data(), {n, 1, 28, 28}, torch::kUInt8)
                 .to(torch::kFloat32)
                 .div_(255.0f)
                 .sub_(kMean)
                 .div_(kStd);
  d.labels = torch::from_blob(lbl.data.data(), {n}, torch::kUInt8).to(torch::kInt64);
  return d;
}

torch::Tensor epoch_order(std::int64_t n, std::uint64_t seed, std::int64_t epoch) {
  auto gen = at::detail::createCPUGenerator(seed * 1000003ull + static_cast<std::uint64_t>(epoch));
  return torch::randperm(n, gen, torch::kInt64);
}

torch::Tensor augment(const torch::Tensor& batch, at::Generator& gen) {
  const std::int64_t b = batch.size(0);
  auto shifts = torch::randint(-2, 3, {b, 2}, gen, torch::kInt64);
  auto flips = torch::rand({b}, gen) < 0.5;
  auto padded = torch::constant_pad_nd(batch, {2, 2, 2, 2}, -kMean / kStd);
  auto out = torch::empty_like(batch);
  auto sa = shifts.accessor<std::int64_t, 2>();
  auto fa = flips.accessor<bool, 1>();
  for (std::int64_t i = 0; i < b; ++i) {
    auto crop = padded[i].narrow(1, 2 + sa[i][0], 28).narrow(2, 2 + sa[i][1], 28);
    out[i].copy_(fa[i] ? crop.flip({2}) : crop);
  }
  return out;
}

}  // namespace prunus::data
