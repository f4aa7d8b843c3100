// prunus infer: the libtorch-free runtime on the Fashion-MNIST test set — accuracy, the
// format each layer got, and latency against the runtime's own dense path.
#include <chrono>
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include "commands.h"
#include "prunus/idx.h"
#include "prunus/io.h"
#include "prunus/report.h"
#include "prunus/runtime.h"

namespace prunus::cli {
namespace {

struct Options {
  std::string model;
  std::string data = "/usr/share/datasets/fashion-mnist";
  std::int64_t limit = 0;
  std::int64_t batch = 1;
  int threads = 1;
  bool dense = false;
  bool int8 = false;
  std::string calibrate;         // static activation scales: minmax | percentile | mse
  std::int64_t calib_samples = 256;
  bool dynamic = false;          // --int8 with per-token scales even where the file stores static ones
};

std::string find(const std::string& dir, const std::string& stem) {
  for (const char* ext : {".gz", ""})
    if (std::filesystem::exists(dir + "/" + stem + ext)) return dir + "/" + stem + ext;
  fail(dir + "/" + stem + ".gz", "dataset file not found (install dataset-fashion-mnist or pass --data DIR)");
}

}  // namespace

std::vector<float> calibration_images(const std::string& dir, std::int64_t n, std::int64_t input_size) {
  // From the training set: the test set stays for the accuracy.
  const auto train = idx::read(find(dir, "train-images-idx3-ubyte"));
  if (n < 1) fail("--calib-samples", "at least 1");
  n = std::min<std::int64_t>(n, train.dims[0]);
  if (train.dims.size() != 3 || std::int64_t(train.dims[1]) * train.dims[2] != input_size)
    fail(dir, fmt::format("training images do not have the model's {} inputs", input_size));
  std::vector<float> x(static_cast<std::size_t>(n * input_size));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = train.data[i] / 255.0f;
  return x;
}

namespace {

// Mean seconds per forward of `batch` rows.
double latency(const runtime::Model& m, const std::vector<float>& x, std::int64_t batch) {
  m.forward(x.data(), batch);
  int reps = 0;
  const auto t0 = std::chrono::steady_clock::now();
  double elapsed = 0;
  while (elapsed < 0.3 || reps < 20) {
    m.forward(x.data(), batch);
    ++reps;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  return elapsed / reps;
}

int infer(const Options& o) {
  runtime::LoadOptions lo;
  lo.batch_hint = o.batch;
  lo.dense = o.dense;
  lo.int8 = o.int8;
  lo.stored_act_scales = !o.dynamic && o.calibrate.empty();
  lo.kernel.threads = o.threads;
  if (o.dynamic && !o.int8) fail("--dynamic", "per-token activation scales are for --int8");
  auto model = runtime::Model::load(o.model, lo);
  std::string act_mode = "INT8 weights and per-token activations";
  if (model.static_act_layers() > 0)
    act_mode = fmt::format("INT8 weights and the file's static activation scales ({} layers)", model.static_act_layers());
  if (!o.calibrate.empty()) {
    if (!o.int8) fail("--calibrate", "static activation scales are for --int8");
    const auto cx = calibration_images(o.data, o.calib_samples, model.input_size());
    const std::int64_t n = static_cast<std::int64_t>(cx.size()) / model.input_size();
    const auto scales = model.calibrate_int8(cx.data(), n, o.calibrate);
    act_mode = "INT8 weights and static activation scales";
    std::printf("static INT8 activation scales (%s, %lld training images):", o.calibrate.c_str(), static_cast<long long>(n));
    for (float sc : scales) std::printf(" %.4g", sc);
    std::printf("\n");
  }
  const auto images = idx::read(find(o.data, "t10k-images-idx3-ubyte"));
  const auto labels = idx::read(find(o.data, "t10k-labels-idx1-ubyte"));
  if (images.dims.size() != 3 || std::int64_t(images.dims[1]) * images.dims[2] != model.input_size())
    fail(o.data, fmt::format("test images do not have the model's {} inputs", model.input_size()));
  std::int64_t n = std::min<std::int64_t>(images.dims[0], labels.dims[0]);
  if (o.limit > 0) n = std::min(n, o.limit);
  const std::int64_t in = model.input_size();
  std::vector<float> x(static_cast<std::size_t>(n * in));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = images.data[i] / 255.0f;
  std::int64_t correct = 0;
  for (std::int64_t i = 0; i < n; i += o.batch) {
    const std::int64_t b = std::min(o.batch, n - i);
    const auto logits = model.forward(x.data() + i * in, b);
    for (std::int64_t k = 0; k < b; ++k) {
      const float* row = logits.data() + k * model.output_size();
      std::int64_t arg = 0;
      for (std::int64_t c = 1; c < model.output_size(); ++c)
        if (row[c] > row[arg]) arg = c;
      correct += arg == labels.data[i + k];
    }
  }
  std::vector<std::vector<std::string>> table{{"layer", "shape", "nnz", "format", "bytes", "dense bytes", "speed-up"}};
  for (const auto& l : model.layers())
    table.push_back({l.name, fmt::format("{}x{}", l.rows, l.cols), std::to_string(l.nnz), l.format,
                     report::human_bytes(l.bytes), report::human_bytes(l.dense_bytes),
                     l.seconds > 0 ? fmt::format("{:.2f}x", l.dense_seconds / l.seconds) : "-"});
  std::printf("%s", report::text_table(table).c_str());
  // End to end at the batch size, against the same model with every layer dense.
  lo.dense = true;
  lo.int8 = false;
  auto dense_model = runtime::Model::load(o.model, lo);
  const std::int64_t b = std::min(o.batch, n);
  const double t = latency(model, x, b), td = latency(dense_model, x, b);
  std::uint64_t bytes = 0, dense_bytes = 0;
  for (const auto& l : model.layers()) bytes += l.bytes, dense_bytes += l.dense_bytes;
  std::printf("%s: test accuracy %.2f%% (%lld samples, runtime%s, no libtorch); weights %s in memory (dense fp32 %s: "
              "%.1fx smaller)\n",
              o.model.c_str(), 100.0 * double(correct) / double(n), static_cast<long long>(n),
              o.int8 ? (", " + act_mode).c_str() : "", report::human_bytes(bytes).c_str(),
              report::human_bytes(dense_bytes).c_str(), double(dense_bytes) / double(bytes));
  std::printf("batch %lld, %d thread(s): %.1f us per forward (dense runtime path %.1f us): %.2fx\n",
              static_cast<long long>(b), o.threads, t * 1e6, td * 1e6, td / t);
  return 0;
}

}  // namespace

int run_model(const RunModelOptions& o) {
  runtime::LoadOptions lo;
  lo.batch_hint = o.batch;
  lo.int8 = o.int8;
  lo.kernel.threads = o.threads;
  auto model = runtime::Model::load(o.model, lo);
  const auto images = idx::read(o.input);
  std::int64_t per = 1;
  for (std::size_t d = 1; d < images.dims.size(); ++d) per *= images.dims[d];
  if (images.dims.size() < 2 || per != model.input_size())
    fail(o.input, fmt::format("samples have {} values, the model takes {}", per, model.input_size()));
  const std::int64_t n = images.dims[0];
  std::vector<std::int32_t> labels;
  if (!o.labels.empty()) {
    const auto l = idx::read(o.labels);
    if (l.dims.size() != 1 || std::int64_t(l.dims[0]) != n)
      fail(o.labels, fmt::format("expected {} labels, one per image", n));
    labels.assign(l.data.begin(), l.data.end());
  }
  std::vector<float> x(static_cast<std::size_t>(o.batch * per));
  std::int64_t correct = 0;
  std::string out;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::int64_t i = 0; i < n; i += o.batch) {
    const std::int64_t b = std::min(o.batch, n - i);
    for (std::int64_t j = 0; j < b * per; ++j) x[j] = images.data[i * per + j] / 255.0f;  // the models' pixel scale
    const auto logits = model.forward(x.data(), b);
    for (std::int64_t k = 0; k < b; ++k) {
      const float* row = logits.data() + k * model.output_size();
      const auto arg = std::max_element(row, row + model.output_size()) - row;
      if (o.logits) {
        for (std::int64_t c = 0; c < model.output_size(); ++c) out += fmt::format("{}{:.9g}", c ? " " : "", row[c]);
        out += "\n";
      } else {
        out += std::to_string(arg) + "\n";
      }
      if (!labels.empty()) correct += arg == labels[i + k];
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fputs(out.c_str(), stdout);
  std::fprintf(stderr, "%s: %lld samples in %.3f s (%.1f us each, batch %lld, runtime, no libtorch)",
               o.model.c_str(), static_cast<long long>(n), secs, 1e6 * secs / double(std::max<std::int64_t>(n, 1)),
               static_cast<long long>(o.batch));
  if (!labels.empty()) std::fprintf(stderr, "; accuracy %.2f%%", 100.0 * double(correct) / double(n));
  std::fprintf(stderr, "\n");
  return 0;
}

void add_infer(CLI::App& app, Action& action) {
  auto o = std::make_shared<Options>();
  auto* cmd = app.add_subcommand(
      "infer", "Run a model in the libtorch-free runtime on the Fashion-MNIST test set: accuracy, per-layer format "
               "(chosen by measurement), latency against the dense path");
  cmd->add_option("model", o->model, "Model file (safetensors with prunus.graph)")->required();
  cmd->add_option("--data", o->data, "Dataset directory")->capture_default_str();
  cmd->add_option("--test-limit", o->limit, "Use only the first N test samples");
  cmd->add_option("--batch", o->batch, "Batch size (formats are chosen for it)")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--threads", o->threads, "Kernel threads")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_flag("--dense", o->dense, "Keep every layer dense");
  cmd->add_flag("--int8", o->int8,
                "Post-training INT8: weights per output channel (zeros stay zero), activations per token, int32 sums");
  cmd->add_option("--calibrate", o->calibrate,
                  "--int8 with static per-tensor activation scales from training images: minmax | percentile | mse");
  cmd->add_option("--calib-samples", o->calib_samples, "Training images for --calibrate")->capture_default_str();
  cmd->add_flag("--dynamic", o->dynamic,
                "--int8 with per-token activation scales even where the file stores static ones (QAT, quantize --calibrate)");
  cmd->callback([&action, o] { action = [o] { return infer(*o); }; });
}

}  // namespace prunus::cli
