// The jobs behind the CLI verbs: each validates its inputs before writing anything.
#include <cmath>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "prunus/data.h"
#include "prunus/io.h"
#include "prunus/models.h"
#include "prunus/recipe.h"
#include "prunus/report.h"
#include "prunus/runtime.h"
#include "prunus/shrink.h"
#include "prunus/sparsify.h"
#include "prunus/train.h"
#include "util/interrupt.h"
#include "util/threads.h"

namespace prunus {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr int kInterrupted = 130;

class Stopwatch {
 public:
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

void setup(std::uint64_t seed, int threads) {
  set_compute_threads(threads);
  torch::manual_seed(seed);
  install_interrupt_handler();
}

// Fails before any work if `out` cannot be written: its directory must exist.
void check_output(const std::string& out) {
  if (out.empty()) fail("--out", "an output file is required");
  auto dir = fs::path(out).parent_path();
  if (!dir.empty() && !fs::is_directory(dir)) fail(out, "output directory does not exist");
  if (fs::is_directory(out)) fail(out, "is a directory, expected a file path");
}

std::string checkpoint_for(const std::string& out) { return out + ".ckpt"; }

std::vector<report::LayerRow> layer_rows(Net& net) {
  std::vector<report::LayerRow> rows;
  for (const auto& [name, w] : prunable_weights(net)) {
    auto s = measure(name, w);
    rows.push_back(report::make_row(name, s.shape, s.nnz));
  }
  return rows;
}

std::vector<PrunedParam> pruned_params(Net& net) {
  std::vector<PrunedParam> out;
  for (auto& [name, w] : prunable_weights(net)) out.push_back({name, w});
  return out;
}

// What the runtime does with each layer of the written model on this machine: the format it
// measured fastest at batch 1 on one thread, its bytes, and the dense time it competed with.
// Raw runtime inputs (pixel / 255, C×H×W) of the first n images of a split (whose images are
// normalized for libtorch).
std::vector<float> raw_pixels(const data::Dataset& d, std::int64_t n) {
  auto raw = (d.images.narrow(0, 0, n) * data::kPixelStd + data::kPixelMean).contiguous();
  return std::vector<float>(raw.data_ptr<float>(), raw.data_ptr<float>() + raw.numel());
}

// The quantize stage of a recipe: sparse model → INT8 file, scored in the runtime (INT8 arithmetic).
json quantize_stage(const QuantizeConfig& q, const std::string& sparse_path, const std::string& int8_path,
                    const data::Dataset& train, const data::Dataset& test, bool qat_scales) {
  std::map<std::string, float> scales;
  std::string activations = qat_scales ? "static, learned by QAT" : "per token at run time";
  if (!q.calibrate.empty()) {
    runtime::LoadOptions lo;
    lo.int8 = true;
    lo.stored_act_scales = false;
    auto m = runtime::Model::load(sparse_path, lo);
    const std::int64_t n = std::min<std::int64_t>(q.calib_samples, train.size());
    const auto x = raw_pixels(train, n);
    scales = runtime::calibrated_act_scales(m, x.data(), n, q.calibrate, q.keep_fp32);
    activations = fmt::format("static, calibrated ({}, {} training images)", q.calibrate, n);
  }
  const auto rep = runtime::quantize_file(sparse_path, int8_path, q.keep_fp32, scales);
  runtime::LoadOptions lo;
  lo.int8 = true;
  lo.batch_hint = 250;
  auto m = runtime::Model::load(int8_path, lo);
  const auto x = raw_pixels(test, test.size());
  std::int64_t correct = 0;
  for (std::int64_t i = 0; i < test.size(); i += 250) {
    const std::int64_t b = std::min<std::int64_t>(250, test.size() - i);
    const auto logits = m.forward(x.data() + i * m.input_size(), b);
    auto pred = torch::from_blob(const_cast<float*>(logits.data()), {b, m.output_size()}).argmax(1);
    correct += (pred == test.labels.narrow(0, i, b)).sum().item<std::int64_t>();
  }
  return {{"file", int8_path},
          {"bytes", rep.bytes_out},
          {"test_accuracy", test.size() ? double(correct) / double(test.size()) : 0.0},
          {"activations", activations},
          {"layers_int8", rep.quantized.size()},
          {"layers_fp32", rep.kept}};
}

json runtime_json(const std::string& path) {
  runtime::LoadOptions lo;
  lo.batch_hint = 1;
  const auto model = runtime::Model::load(path, lo);  // layers() refers into it
  return {{"batch", lo.batch_hint}, {"threads", lo.kernel.threads}, {"layers", report::runtime_layers_json(model.layers())}};
}

// Every prunable layer's mask for the report's pictures (at most 1024×1024 of each).
json masks_json(Net& net) {
  json out = json::array();
  for (const auto& [name, w] : prunable_weights(net)) {
    const auto rows = w.size(0), cols = w.numel() / std::max<std::int64_t>(rows, 1);
    const auto r = std::min<std::int64_t>(rows, 1024), c = std::min<std::int64_t>(cols, 1024);
    auto kept = (w.detach().reshape({rows, cols}).slice(0, 0, r).slice(1, 0, c) != 0).to(torch::kUInt8).contiguous();
    std::vector<std::uint8_t> v(kept.data_ptr<std::uint8_t>(), kept.data_ptr<std::uint8_t>() + kept.numel());
    out.push_back(report::mask_json(name, r, c, v, r < rows || c < cols));
  }
  return out;
}

json history_json(const std::vector<EpochRecord>& h) {
  json a = json::array();
  for (const auto& r : h)
    a.push_back({{"epoch", r.epoch}, {"step", r.step}, {"lr", r.lr}, {"train_loss", r.train_loss},
                 {"train_accuracy", r.train_accuracy}, {"test_accuracy", r.test_accuracy},
                 {"sparsity", r.sparsity}, {"target", r.target}, {"seconds", r.seconds}});
  return a;
}

std::string pct(double x) { return fmt::format("{:.2f}%", 100.0 * x); }

}  // namespace

int run_recipe(const Recipe& r, const JobOptions& opt) {
  Stopwatch total;
  validate(r, r.name);
  data::check_available(r.data);
  if (!r.input.empty() && r.input != "init" && !fs::exists(r.input)) fail(r.input, "input model not found");
  fs::create_directories(r.out_dir);
  const std::string out = r.out_dir;
  const std::string dense_path = (fs::path(out) / "dense.safetensors").string();
  const std::string sparse_path = (fs::path(out) / "sparse.safetensors").string();
  const std::string ckpt = (fs::path(out) / "checkpoint.safetensors").string();
  setup(r.seed, r.threads);
  std::string resume_stage = opt.resume ? checkpoint_stage(ckpt) : "";
  if (opt.resume && resume_stage.empty()) std::fprintf(stderr, "--resume: no checkpoint in %s, starting afresh\n", out.c_str());
  if (!opt.resume && fs::exists(ckpt))
    std::fprintf(stderr, "note: %s is from an interrupted run; starting afresh (pass --resume to continue it)\n",
                 ckpt.c_str());

  json stages = json::object();
  Stopwatch sw;
  auto train = data::load_split(r.data, "train");
  auto test = data::load_split(r.data, "test");
  stages["load_data"] = {{"seconds", sw.seconds()}};
  std::fprintf(stderr, "data: %lld training, %lld test samples\n", static_cast<long long>(train.size()),
               static_cast<long long>(test.size()));

  // Stage 1: the dense model.
  sw = Stopwatch();
  const bool iterative = r.prune.schedule.kind == "iterative";
  const std::int64_t rewind_at = iterative ? rewind_epoch(r.prune.schedule.rewind) : -1;
  std::shared_ptr<Net> rewind_net;
  bool rewind_kept = false;
  // A resumed fine-tuning stage would skip the dense epochs that rewinding needs.
  if (rewind_at >= 0 && resume_stage == "finetune") resume_stage.clear();
  std::shared_ptr<Net> dense;
  std::vector<EpochRecord> dense_history;
  std::string dense_source;
  if (r.input == "init") {  // pruning at initialization: the seeded initial weights
    dense = make_model(r.model);
    dense_source = fmt::format("initialization (seed {})", r.seed);
  } else if (!r.input.empty()) {
    dense = load_model(r.input);
    dense_source = r.input;
  } else if (resume_stage == "finetune") {
    dense = load_model(dense_path);
    dense_source = dense_path + " (resumed)";
  } else {
    dense = make_model(r.model);
    Trainer trainer(*dense, r.train, r.seed);
    if (rewind_at >= 0) {  // lottery-ticket rewinding: keep the weights of epoch K (0: init)
      rewind_net = make_model(r.model);
      if (rewind_at == 0) copy_state(*rewind_net, *dense);
      else trainer.on_epoch_end = [&](std::int64_t e) {
        if (e == rewind_at) copy_state(*rewind_net, *dense), rewind_kept = true;
      };
      rewind_kept = rewind_at == 0;
    }
    auto res = trainer.fit(train, &test, {ckpt, resume_stage == "train", "train"}, opt.progress);
    if (res.interrupted) return kInterrupted;
    dense_history = res.history;
    save_model(dense_path, *dense, {{"prunus.recipe", r.name}});
    dense_source = "trained";
  }
  const double dense_seconds = sw.seconds();
  const auto dense_eval = evaluate(*dense, test);
  stages["train"] = {{"seconds", dense_seconds}, {"source", dense_source}, {"history", history_json(dense_history)}};

  // Stage 2: prune while fine-tuning (or one-shot when there is no fine-tuning); or shrink
  // (remove channels), then fine-tune the smaller model.
  sw = Stopwatch();
  std::shared_ptr<Net> sparse;
  std::vector<EpochRecord> ft_history;
  json rounds = json::array();
  std::map<std::string, float> act_scales;  // from quantization-aware fine-tuning
  // Distillation: the dense model teaches the pruned one (eval mode: BatchNorm statistics fixed).
  Net* teacher = r.finetune.distill_alpha > 0 ? dense.get() : nullptr;
  if (teacher) teacher->eval();
  json shrink_info;
  std::unique_ptr<Sparsifier> sp;
  if (r.shrink.enabled) {
    // The dense model as a file (the graph the shrink traces); deterministic, so a resumed
    // fine-tuning finds the same shapes in its checkpoint.
    const std::string dense_file = !r.input.empty() ? r.input : dense_path;
    shrink::Options so{r.shrink.sparsity, r.shrink.criterion, r.shrink.round_to, r.seed, {}, 0};
    if (so.criterion == "activation" || so.criterion == "thinet") {
      so.calib_count = std::min<std::int64_t>(r.shrink.calib_samples, train.size());
      so.calib = raw_pixels(train, so.calib_count);
    }
    const auto plan = shrink::plan(dense_file, so);
    if (plan.groups.empty()) fail(dense_file, "no channel group can be pruned (every space feeds the output)");
    const std::string shrunk_path = (fs::path(out) / "shrunk.safetensors").string();
    shrink::write_shrunk(dense_file, plan, shrunk_path);
    sparse = load_model(shrunk_path);
    json groups = json::array();
    for (const auto& g : plan.groups)
      groups.push_back({{"producers", g.producers}, {"channels", g.channels}, {"kept", g.kept.size()}});
    shrink_info = {{"sparsity", r.shrink.sparsity},       {"criterion", r.shrink.criterion},
                   {"round_to", r.shrink.round_to},       {"macs_before", plan.macs_before},
                   {"macs_after", plan.macs_after},       {"params_before", plan.params_before},
                   {"params_after", plan.params_after},   {"groups", groups},
                   {"file", shrunk_path},                 {"accuracy_before_finetune", evaluate(*sparse, test).accuracy}};
    std::fprintf(stderr, "shrink (%s): multiply-adds per sample %lld -> %lld, parameters %lld -> %lld; test accuracy %.2f%%\n",
                 r.shrink.criterion.c_str(), static_cast<long long>(plan.macs_before),
                 static_cast<long long>(plan.macs_after), static_cast<long long>(plan.params_before),
                 static_cast<long long>(plan.params_after), 100.0 * shrink_info["accuracy_before_finetune"].get<double>());
    if (r.shrink.recalibrate_bn > 0) {
      recalibrate_batchnorm(*sparse, train, r.shrink.recalibrate_bn);
      shrink_info["recalibrate_bn"] = r.shrink.recalibrate_bn;
      shrink_info["accuracy_after_bn_recalibration"] = evaluate(*sparse, test).accuracy;
      std::fprintf(stderr, "BatchNorm statistics re-estimated on %lld training images: test accuracy %.2f%%\n",
                   static_cast<long long>(r.shrink.recalibrate_bn),
                   100.0 * shrink_info["accuracy_after_bn_recalibration"].get<double>());
    }
    if (r.finetune.epochs > 0) {
      Trainer trainer(*sparse, r.finetune, r.seed + 1, nullptr);
      trainer.teacher = teacher;
      auto res = trainer.fit(train, &test, {ckpt, resume_stage == "finetune", "finetune"}, opt.progress);
      if (res.interrupted) return kInterrupted;
      ft_history = res.history;
    }
  } else {
  sparse = make_model(dense->arch(), dense->widths());
  copy_state(*sparse, *dense);
  const std::int64_t steps_per_epoch = (train.size() + r.finetune.batch_size - 1) / r.finetune.batch_size;
  sp = Sparsifier::from_config(pruned_params(*sparse), r.prune, steps_per_epoch, r.seed);
  if (sp->needs_gradients())  // gradient criteria score from calibration batches before the first masks
    calibrate_gradients(*sparse, train, *sp, r.prune.calibration_batches, r.finetune.batch_size, r.seed);
  if (sp->needs_activations())  // activation criteria: input statistics of the dense model
    calibrate_activations(*sparse, train, *sp, r.prune.calibration_batches, r.finetune.batch_size, r.seed);
  if (r.prune.criterion == "synflow") synflow_prune(*sparse, *sp, r.prune.sparsity, r.prune.synflow_rounds);
  if (iterative) {
    // Iterative magnitude pruning (Han et al. 2015; Frankle & Carbin 2019 with rewinding):
    // each round prunes the same fraction of what remains, rewinds the kept weights, retrains.
    if (rewind_at >= 0 && !rewind_kept)
      fail(r.name, fmt::format("cannot rewind to {}: the dense run was resumed past it (run without --resume)",
                               r.prune.schedule.rewind));
    const auto R = r.prune.schedule.rounds;
    for (std::int64_t i = 1; i <= R; ++i) {
      const double target = i == R ? r.prune.sparsity : 1.0 - std::pow(1.0 - r.prune.sparsity, double(i) / double(R));
      sp->prune_to(target);
      if (rewind_net) {
        copy_state(*sparse, *rewind_net);
        sp->apply_masks();
      }
      const std::string stage = fmt::format("round{}", i);
      Trainer trainer(*sparse, r.finetune, r.seed + 1 + static_cast<std::uint64_t>(i), sp.get());
      trainer.teacher = teacher;
      auto res = trainer.fit(train, &test, {ckpt, resume_stage == stage, stage}, opt.progress);
      if (res.interrupted) return kInterrupted;
      ft_history.insert(ft_history.end(), res.history.begin(), res.history.end());
      act_scales = res.act_scales;
      const auto ev = evaluate(*sparse, test);
      std::fprintf(stderr, "round %lld/%lld: sparsity %.2f%%, test accuracy %.2f%%\n", static_cast<long long>(i),
                   static_cast<long long>(R), 100.0 * target, 100.0 * ev.accuracy);
      rounds.push_back({{"round", i}, {"target_sparsity", target}, {"test_accuracy", ev.accuracy}});
    }
  } else if (r.finetune.epochs == 0) {
    sp->prune_to(r.prune.sparsity);
  } else {
    Trainer trainer(*sparse, r.finetune, r.seed + 1, sp.get());
    trainer.teacher = teacher;
    auto res = trainer.fit(train, &test, {ckpt, resume_stage == "finetune", "finetune"}, opt.progress);
    if (res.interrupted) return kInterrupted;
    ft_history = res.history;
    act_scales = res.act_scales;
  }
  if (sp->current_target() != r.prune.sparsity) sp->prune_to(r.prune.sparsity);
  sp->squash();
  }
  stages["prune_finetune"] = {{"seconds", sw.seconds()}, {"history", history_json(ft_history)}};
  if (iterative) stages["prune_finetune"]["rounds"] = rounds;

  sw = Stopwatch();
  const auto sparse_eval = evaluate(*sparse, test);
  stages["evaluate"] = {{"seconds", sw.seconds()}};
  sw = Stopwatch();
  std::map<std::string, std::string> sparse_meta{{"prunus.recipe", r.name}};
  if (r.shrink.enabled) {
    sparse_meta["prunus.shrunk_by"] = fmt::format("{} {}", r.shrink.criterion, r.shrink.sparsity);
  } else {
    sparse_meta["prunus.sparsity"] = fmt::format("{}", r.prune.sparsity);
    sparse_meta["prunus.scope"] = r.prune.scope, sparse_meta["prunus.criterion"] = r.prune.criterion;
    sparse_meta["prunus.pattern"] = r.prune.pattern;
  }
  if (!act_scales.empty()) sparse_meta[kActScalesKey] = act_scales_json(act_scales);
  save_model(sparse_path, *sparse, sparse_meta);
  json int8;
  if (r.quantize.enabled) {
    sw = Stopwatch();
    int8 = quantize_stage(r.quantize, sparse_path, (fs::path(out) / "int8.safetensors").string(), train, test,
                          !act_scales.empty());
    int8["bytes_dense_file"] = fs::file_size(dense_path);
    int8["bytes_sparse_file"] = fs::file_size(sparse_path);
    stages["quantize"] = {{"seconds", sw.seconds()}};
  }

  const auto dense_rows = layer_rows(*dense);
  const auto rows = layer_rows(*sparse);
  const auto tot = report::totals(rows);
  const auto dense_tot = report::totals(dense_rows);
  json layers = json::array();
  for (const auto& row : rows) layers.push_back(report::to_json(row));
  json rep = {
      {"prunus_version", version()},
      {"run", report::run_info()},
      {"recipe", r.name},
      {"model", dense->arch()},
      {"seed", r.seed},
      {"threads", torch::get_num_threads()},
      {"data", {{"dir", r.data.dir.empty() ? data::kDefaultFashionMnistDir : r.data.dir},
                {"train_samples", train.size()}, {"test_samples", test.size()}}},
      {"prune", {{"target_sparsity", r.prune.sparsity}, {"criterion", r.prune.criterion},
                 {"pattern", r.prune.pattern}, {"scope", r.prune.scope}, {"schedule", r.prune.schedule.kind},
                 {"rounds", r.prune.schedule.rounds}, {"rewind", r.prune.schedule.rewind},
                 {"srste_decay", r.prune.srste_decay}}},
      {"distill", {{"alpha", r.finetune.distill_alpha}, {"temperature", r.finetune.distill_temperature}}},
      {"dense", {{"test_accuracy", dense_eval.accuracy}, {"test_loss", dense_eval.loss}, {"file", dense_path}}},
      {"sparse", {{"test_accuracy", sparse_eval.accuracy}, {"test_loss", sparse_eval.loss}, {"file", sparse_path}}},
      {"accuracy_drop_points", 100.0 * (dense_eval.accuracy - sparse_eval.accuracy)},
      {"total_sparsity", tot.sparsity()},
      {"total_params_pruned", tot.numel},
      {"total_nnz", tot.nnz},
      {"bytes_dense", dense_tot.dense_bytes},
      {"bytes_sparse_encoded", tot.encoded_bytes},
      {"compression_ratio", tot.encoded_bytes ? double(dense_tot.dense_bytes) / double(tot.encoded_bytes) : 0.0},
      {"layers", layers},
      {"stages", stages},
  };
  if (r.shrink.enabled) {
    rep.erase("prune");
    rep["shrink"] = shrink_info;
  }
  rep["masks"] = masks_json(*sparse);
  if (r.quantize.enabled) rep["int8"] = int8;
  stages["write"] = {{"seconds", sw.seconds()}};
  rep["stages"]["write"] = stages["write"];
  sw = Stopwatch();
  try {
    rep["runtime"] = runtime_json(sparse_path);
  } catch (const InputError& e) {
    std::fprintf(stderr, "note: no runtime measurements in the report (%s)\n", e.what());
  }
  rep["stages"]["runtime_measure"] = {{"seconds", sw.seconds()}};
  rep["total_seconds"] = total.seconds();
  const auto html_path = report::write_report((fs::path(out) / "report.json").string(), rep);

  std::vector<std::vector<std::string>> table{{"layer", "shape", "nnz", "sparsity", "dense", "encoded", "format"}};
  for (const auto& row : rows)
    table.push_back({row.name, fmt::format("{}", fmt::join(row.shape, "x")), std::to_string(row.nnz), pct(row.sparsity),
                     report::human_bytes(row.dense_bytes), report::human_bytes(row.encoded_bytes), row.encoding});
  table.push_back({"total", "", std::to_string(tot.nnz), pct(tot.sparsity()), report::human_bytes(dense_tot.dense_bytes),
                   report::human_bytes(tot.encoded_bytes), ""});
  std::printf("\n%s\n", report::text_table(table).c_str());
  std::vector<std::vector<std::string>> summary{
      {"model", "test accuracy", "sparsity", "weights"},
      {"dense", pct(dense_eval.accuracy), pct(0.0), report::human_bytes(dense_tot.dense_bytes)},
      {"sparse", pct(sparse_eval.accuracy), pct(tot.sparsity()), report::human_bytes(tot.encoded_bytes)}};
  if (r.quantize.enabled)
    summary.push_back({"sparse INT8 (runtime)", pct(int8["test_accuracy"].get<double>()), pct(tot.sparsity()),
                       report::human_bytes(int8["bytes"].get<std::uint64_t>()) + " file"});
  std::printf("%s", report::text_table(summary).c_str());
  if (r.quantize.enabled)
    std::printf("\nINT8 (activations %s): %.2f points vs sparse fp32; file %s, %.1fx smaller than the dense file (%s); "
                "wrote %s\n",
                int8["activations"].get<std::string>().c_str(),
                100.0 * (int8["test_accuracy"].get<double>() - sparse_eval.accuracy),
                report::human_bytes(int8["bytes"].get<std::uint64_t>()).c_str(),
                double(int8["bytes_dense_file"].get<std::uint64_t>()) / double(int8["bytes"].get<std::uint64_t>()),
                report::human_bytes(int8["bytes_dense_file"].get<std::uint64_t>()).c_str(),
                int8["file"].get<std::string>().c_str());
  if (r.shrink.enabled)
    std::printf("\nshrunk (%s, %.0f%% of each group's channels removed): multiply-adds per sample %lld -> %lld "
                "(%.2fx fewer), parameters %lld -> %lld\n",
                r.shrink.criterion.c_str(), 100.0 * r.shrink.sparsity, shrink_info["macs_before"].get<long long>(),
                shrink_info["macs_after"].get<long long>(),
                double(shrink_info["macs_before"].get<long long>()) / double(std::max(1LL, shrink_info["macs_after"].get<long long>())),
                shrink_info["params_before"].get<long long>(), shrink_info["params_after"].get<long long>());
  std::printf("\naccuracy drop %.2f points; wall time %.1f s; wrote %s, %s, %s\n",
              100.0 * (dense_eval.accuracy - sparse_eval.accuracy), total.seconds(), dense_path.c_str(),
              sparse_path.c_str(), (fs::path(out) / "report.json").c_str());
  std::printf("report with plots: %s\n", html_path.c_str());
  return 0;
}

namespace {

// --report of train/prune/finetune: the run summary, what the job measured, the per-layer table
// and masks; JSON and the HTML drawn from it (the path is checked before any work).
void write_job_report(const std::string& path, Net& net, json rep, const std::string& model_file) {
  if (path.empty()) return;
  try {
    rep["runtime"] = runtime_json(model_file);
  } catch (const InputError&) {  // a model the runtime cannot run: no runtime columns
  }
  rep["prunus_version"] = version();
  rep["run"] = report::run_info();
  rep["model"] = net.arch();
  json layers = json::array();
  for (const auto& row : layer_rows(net)) layers.push_back(report::to_json(row));
  rep["layers"] = layers;
  rep["masks"] = masks_json(net);
  std::printf("report: %s (plots: %s)\n", path.c_str(), report::write_report(path, rep).c_str());
}

}  // namespace

int train_job(const TrainJob& job, const JobOptions& opt) {
  validate(job.train, "train options");
  if (job.train.epochs < 1) fail("--epochs", "must be at least 1");
  make_model(job.model);  // unknown architecture: fail before anything else
  check_output(job.out);
  report::check_report_path(opt.report);
  data::check_available(job.data);
  setup(job.seed, job.threads);
  auto train = data::load_split(job.data, "train");
  auto test = data::load_split(job.data, "test");
  auto net = make_model(job.model);
  Trainer trainer(*net, job.train, job.seed);
  auto res = trainer.fit(train, &test, {checkpoint_for(job.out), opt.resume, "train"}, opt.progress);
  if (res.interrupted) return kInterrupted;
  save_model(job.out, *net);
  const auto ev = evaluate(*net, test);
  std::printf("%s: test accuracy %s (%.1f s)\n", job.out.c_str(), pct(ev.accuracy).c_str(), res.seconds);
  write_job_report(opt.report, *net,
                   {{"job", "train"}, {"seed", job.seed}, {"total_seconds", res.seconds},
                    {"dense", {{"test_accuracy", ev.accuracy}, {"test_loss", ev.loss}, {"file", job.out}}},
                    {"stages", {{"train", {{"seconds", res.seconds}, {"history", history_json(res.history)}}}}}},
                   job.out);
  return 0;
}

int prune_job(const PruneJob& job, const JobOptions& opt) {
  validate(job.prune, "prune options");
  const bool gradual = job.prune.schedule.kind == "gradual";
  if (job.prune.schedule.kind == "iterative")
    fail("--schedule", "iterative pruning retrains between rounds: run it from a recipe (prunus run)");
  const auto crit = make_criterion(job.prune.criterion);
  const bool needs_data = gradual || crit->needs_gradients() || crit->needs_activations();
  if (gradual) {
    validate(job.finetune, "fine-tune options");
    if (job.finetune.epochs < 1) fail("--epochs", "a gradual schedule needs at least one fine-tuning epoch");
    if (job.prune.schedule.end_epoch > job.finetune.epochs)
      fail("--end-epoch", fmt::format("{} is after the last fine-tuning epoch ({})", job.prune.schedule.end_epoch,
                                      job.finetune.epochs));
  }
  check_output(job.out);
  report::check_report_path(opt.report);
  setup(job.seed, job.threads);
  auto net = load_model(job.input);
  std::int64_t steps_per_epoch = 1;
  json rep = {{"job", "prune"}, {"seed", job.seed}, {"input", job.input},
              {"prune", {{"target_sparsity", job.prune.sparsity}, {"criterion", job.prune.criterion},
                         {"pattern", job.prune.pattern}, {"scope", job.prune.scope},
                         {"schedule", job.prune.schedule.kind}}}};
  data::Dataset train, test;
  if (needs_data) {
    data::check_available(job.data);
    train = data::load_split(job.data, "train");
    test = data::load_split(job.data, "test");
    steps_per_epoch = (train.size() + job.finetune.batch_size - 1) / job.finetune.batch_size;
  }
  auto sp = Sparsifier::from_config(pruned_params(*net), job.prune, steps_per_epoch, job.seed);
  if (sp->needs_gradients())
    calibrate_gradients(*net, train, *sp, job.prune.calibration_batches, job.finetune.batch_size, job.seed);
  if (sp->needs_activations())
    calibrate_activations(*net, train, *sp, job.prune.calibration_batches, job.finetune.batch_size, job.seed);
  if (job.prune.criterion == "synflow") synflow_prune(*net, *sp, job.prune.sparsity, job.prune.synflow_rounds);
  if (gradual) {
    Trainer trainer(*net, job.finetune, job.seed, sp.get());
    auto res = trainer.fit(train, &test, {checkpoint_for(job.out), opt.resume, "prune"}, opt.progress);
    if (res.interrupted) return kInterrupted;
    rep["stages"] = {{"prune_finetune", {{"seconds", res.seconds}, {"history", history_json(res.history)}}}};
  }
  if (sp->current_target() != job.prune.sparsity) sp->prune_to(job.prune.sparsity);
  sp->squash();
  save_model(job.out, *net,
             {{"prunus.sparsity", fmt::format("{}", job.prune.sparsity)}, {"prunus.scope", job.prune.scope},
              {"prunus.criterion", job.prune.criterion}, {"prunus.pattern", job.prune.pattern}});
  std::vector<std::vector<std::string>> table{{"layer", "shape", "nnz", "sparsity"}};
  for (const auto& row : layer_rows(*net))
    table.push_back({row.name, fmt::format("{}", fmt::join(row.shape, "x")), std::to_string(row.nnz), pct(row.sparsity)});
  std::printf("%s", report::text_table(table).c_str());
  if (gradual) {
    const auto ev = evaluate(*net, test);
    std::printf("%s: test accuracy %s\n", job.out.c_str(), pct(ev.accuracy).c_str());
    rep["sparse"] = {{"test_accuracy", ev.accuracy}, {"test_loss", ev.loss}, {"file", job.out}};
  } else {
    std::printf("wrote %s\n", job.out.c_str());
  }
  write_job_report(opt.report, *net, rep, job.out);
  return 0;
}

int finetune_job(const FinetuneJob& job, const JobOptions& opt) {
  validate(job.train, "fine-tune options");
  if (job.train.epochs < 1) fail("--epochs", "must be at least 1");
  check_output(job.out);
  report::check_report_path(opt.report);
  data::check_available(job.data);
  setup(job.seed, job.threads);
  auto net = load_model(job.input);
  auto train = data::load_split(job.data, "train");
  auto test = data::load_split(job.data, "test");
  // The model's zeros become masks held through training.
  Sparsifier sp(pruned_params(*net), make_criterion("magnitude"), make_pattern("unstructured"), make_scope("layer"),
                make_oneshot_schedule(0.0, -1));
  sp.masks_from_zeros();
  Trainer trainer(*net, job.train, job.seed, &sp);
  auto res = trainer.fit(train, &test, {checkpoint_for(job.out), opt.resume, "finetune"}, opt.progress);
  if (res.interrupted) return kInterrupted;
  std::map<std::string, std::string> meta;
  if (!res.act_scales.empty()) meta[kActScalesKey] = act_scales_json(res.act_scales);
  save_model(job.out, *net, meta);
  const auto ev = evaluate(*net, test);
  std::printf("%s: test accuracy %s\n", job.out.c_str(), pct(ev.accuracy).c_str());
  write_job_report(opt.report, *net,
                   {{"job", "finetune"}, {"seed", job.seed}, {"input", job.input}, {"total_seconds", res.seconds},
                    {"sparse", {{"test_accuracy", ev.accuracy}, {"test_loss", ev.loss}, {"file", job.out}}},
                    {"stages", {{"prune_finetune", {{"seconds", res.seconds}, {"history", history_json(res.history)}}}}}},
                   job.out);
  return 0;
}

EvalResult eval_job(const std::string& model_path, const DataConfig& data, int threads) {
  set_compute_threads(threads);
  auto net = load_model(model_path);
  data::check_available(data);
  auto test = data::load_split(data, "test");
  auto e = evaluate(*net, test);
  return {e.accuracy, e.loss, e.samples};
}

}  // namespace prunus
