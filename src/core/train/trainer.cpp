#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <variant>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "prunus/distributed.h"
#include "prunus/io.h"
#include "prunus/train.h"
#include "train/qat.h"
#include "util/interrupt.h"
#include "util/progress.h"
#include "util/tensor_io.h"

namespace prunus {
namespace F = torch::nn::functional;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::unique_ptr<torch::optim::Optimizer> make_optimizer(Net& net, const TrainConfig& c) {
  if (c.optimizer == "sgd")
    return std::make_unique<torch::optim::SGD>(
        net.parameters(), torch::optim::SGDOptions(c.lr).momentum(c.momentum).weight_decay(c.weight_decay));
  if (c.optimizer == "adam")
    return std::make_unique<torch::optim::Adam>(net.parameters(),
                                                torch::optim::AdamOptions(c.lr).weight_decay(c.weight_decay));
  fail("optimizer '" + c.optimizer + "'", "unknown (known: sgd, adam)");
}

json to_json(const EpochRecord& r) {
  return {{"epoch", r.epoch},          {"step", r.step},
          {"lr", r.lr},                {"train_loss", r.train_loss},
          {"train_accuracy", r.train_accuracy}, {"test_accuracy", r.test_accuracy},
          {"sparsity", r.sparsity},    {"target", r.target},
          {"seconds", r.seconds}};
}

EpochRecord from_json(const json& j) {
  EpochRecord r;
  r.epoch = j.at("epoch");
  r.step = j.at("step");
  r.lr = j.at("lr");
  r.train_loss = j.at("train_loss");
  r.train_accuracy = j.at("train_accuracy");
  r.test_accuracy = j.at("test_accuracy");
  r.sparsity = j.at("sparsity");
  r.target = j.at("target");
  r.seconds = j.at("seconds");
  return r;
}

struct Position {
  std::int64_t epoch = 0, step_in_epoch = 0, global_step = 0;
  double seconds = 0;
  double target = 0;
};

double pruned_sparsity(const Sparsifier* sp) {
  if (!sp) return 0.0;
  std::int64_t n = 0, nnz = 0;
  for (const auto& s : sp->stats()) {
    n += s.numel;
    nnz += s.nnz;
  }
  return n ? 1.0 - double(nnz) / double(n) : 0.0;
}

void save_checkpoint(const CheckpointOptions& ck, Net& net, torch::optim::Optimizer& opt, const Sparsifier* sp,
                     const Position& pos, const std::vector<EpochRecord>& history, qat::FakeQuant* fq) {
  NamedTensors t;
  if (fq) t.emplace_back("qat.ranges", fq->ranges());
  for (const auto& p : net.named_parameters()) t.emplace_back("model." + p.key(), p.value());
  for (const auto& b : net.named_buffers()) t.emplace_back("model." + b.key(), b.value());
  if (sp)
    for (std::size_t i = 0; i < sp->masks().size(); ++i) t.emplace_back("mask." + sp->params()[i].name, sp->masks()[i]);
  if (sp)  // a gradient criterion's accumulated scores (movement, Taylor)
    for (const auto& [name, acc] : sp->criterion().state()) t.emplace_back("criterion." + name, acc);
  if (sp)  // SR-STE's dense weights behind the masks
    for (std::size_t i = 0; i < sp->srste_dense().size(); ++i)
      t.emplace_back("srste." + sp->params()[i].name, sp->srste_dense()[i]);
  std::ostringstream os;
  torch::serialize::OutputArchive archive;
  opt.save(archive);
  archive.save_to(os);
  const std::string blob = os.str();
  t.emplace_back("optimizer", torch::from_blob(const_cast<char*>(blob.data()), {static_cast<std::int64_t>(blob.size())},
                                               torch::kUInt8));
  json h = json::array();
  for (const auto& r : history) h.push_back(to_json(r));
  json state = {{"stage", ck.stage},           {"arch", net.arch()},
                {"epoch", pos.epoch},          {"step_in_epoch", pos.step_in_epoch},
                {"global_step", pos.global_step}, {"seconds", pos.seconds},
                {"target", pos.target},        {"history", h}};
  write_tensors(ck.path, t, {{"prunus.checkpoint", state.dump()}});
}

void load_checkpoint(const CheckpointOptions& ck, Net& net, torch::optim::Optimizer& opt, Sparsifier* sp, Position& pos,
                     std::vector<EpochRecord>& history, qat::FakeQuant* fq) {
  auto f = safetensors::File::open(ck.path);
  auto it = f.metadata().find("prunus.checkpoint");
  if (it == f.metadata().end()) fail(ck.path, "not a Prunus checkpoint");
  json state;
  try {
    state = json::parse(it->second);
    if (state.at("stage") != ck.stage)
      fail(ck.path, fmt::format("checkpoint is from stage '{}', this run resumes '{}'",
                                state.at("stage").get<std::string>(), ck.stage));
    if (state.at("arch") != net.arch())
      fail(ck.path, fmt::format("checkpoint holds a {} model, not {}", state.at("arch").get<std::string>(), net.arch()));
    pos.epoch = state.at("epoch");
    pos.step_in_epoch = state.at("step_in_epoch");
    pos.global_step = state.at("global_step");
    pos.seconds = state.at("seconds");
    pos.target = state.at("target");
    for (const auto& r : state.at("history")) history.push_back(from_json(r));
  } catch (const json::exception& e) {
    fail(ck.path, std::string("corrupt checkpoint state: ") + e.what());
  }
  torch::NoGradGuard ng;
  auto load = [&](const std::string& name, torch::Tensor dst) {
    auto v = to_tensor(f.at(name));
    if (v.sizes() != dst.sizes()) fail(ck.path, fmt::format("checkpoint tensor '{}' has the wrong shape", name));
    dst.copy_(v);
  };
  for (const auto& p : net.named_parameters()) load("model." + p.key(), p.value());
  for (const auto& b : net.named_buffers()) load("model." + b.key(), b.value());
  if (sp) {
    std::vector<torch::Tensor> masks;
    for (const auto& p : sp->params()) {
      auto m = torch::empty_like(p.weight);
      load("mask." + p.name, m);
      masks.push_back(m);
    }
    sp->set_masks(std::move(masks));
    std::map<std::string, torch::Tensor> acc;
    for (const auto& p : sp->params())
      if (const auto* v = f.find("criterion." + p.name)) acc[p.name] = to_tensor(*v).clone();
    if (!acc.empty()) sp->criterion().set_state(std::move(acc));
    std::vector<torch::Tensor> dense;
    for (const auto& p : sp->params())
      if (const auto* v = f.find("srste." + p.name)) dense.push_back(to_tensor(*v).clone());
    if (!dense.empty() && dense.size() != sp->params().size())
      fail(ck.path, "checkpoint holds SR-STE dense weights for only some parameters");
    if (sp->srste_decay() > 0) sp->set_srste_dense(std::move(dense));
  }
  if (fq) {
    if (!f.find("qat.ranges")) fail(ck.path, "checkpoint has no QAT ranges (it was written without qat)");
    load("qat.ranges", fq->ranges());
  }
  const auto& blob = f.at("optimizer");
  std::istringstream is(std::string(reinterpret_cast<const char*>(blob.data), blob.nbytes));
  torch::serialize::InputArchive archive;
  archive.load_from(is);
  opt.load(archive);
}

// Data parallelism: after each rank's backward over its share of the global batch, the
// gradients are summed (each rank scaled its loss by share/batch, so the sum is the
// gradient of the global batch mean), together with the step's loss and correct count.
// Every rank then takes the same optimiser step on the same weights.
struct StepTotals {
  double loss_sum = 0;
  std::int64_t correct = 0;
  bool stop = false;  // some rank saw Ctrl-C: every rank stops before the next step
};
StepTotals all_reduce_gradients(Net& net, dist::Group& g, double local_loss_sum, std::int64_t local_correct,
                                bool local_stop) {
  std::vector<torch::Tensor> parts;
  for (auto& p : net.parameters())
    parts.push_back(p.grad().defined() ? p.grad().reshape({-1}) : torch::zeros({p.numel()}, p.options()));
  parts.push_back(torch::tensor(
      {static_cast<float>(local_loss_sum), static_cast<float>(local_correct), local_stop ? 1.0f : 0.0f}));
  auto flat = torch::cat(parts);
  g.all_reduce_sum(flat, "the gradient all-reduce");
  std::int64_t at = 0;
  for (auto& p : net.parameters()) {
    auto src = flat.narrow(0, at, p.numel()).view(p.sizes());
    if (p.grad().defined()) p.mutable_grad().copy_(src);
    else p.mutable_grad() = src.clone();
    at += p.numel();
  }
  return {static_cast<double>(flat[at].item<float>()), static_cast<std::int64_t>(std::llround(flat[at + 1].item<float>())),
          flat[at + 2].item<float>() > 0};
}

// BatchNorm statistics follow rank 0's (as PyTorch's DistributedDataParallel broadcasts
// buffers before each forward): every rank's model stays identical.
void broadcast_buffers(Net& net, dist::Group& g) {
  if (!g.active()) return;
  torch::NoGradGuard ng;
  for (auto& b : net.buffers()) g.broadcast(b, 0, "the BatchNorm statistics broadcast");
}

// Test accuracy with the test set split over the ranks.
Evaluation evaluate_sharded(Net& net, const data::Dataset& d, dist::Group& g) {
  if (!g.active()) return evaluate(net, d);
  const auto [lo, hi] = dist::shard(d.size());
  const data::Dataset part{d.images.narrow(0, lo, hi - lo), d.labels.narrow(0, lo, hi - lo)};
  Evaluation local = part.size() > 0 ? evaluate(net, part) : Evaluation{};
  auto t = torch::tensor({local.accuracy * double(hi - lo), local.loss * double(hi - lo), double(hi - lo)}, torch::kFloat64);
  g.all_reduce_sum(t, "the test evaluation");
  Evaluation e;
  e.samples = static_cast<std::int64_t>(t[2].item<double>());
  e.accuracy = e.samples ? std::round(t[0].item<double>()) / double(e.samples) : 0;
  e.loss = e.samples ? t[1].item<double>() / double(e.samples) : 0;
  return e;
}

std::vector<torch::Tensor> model_and_masks(Net& net, const Sparsifier* sp) {
  std::vector<torch::Tensor> all;
  for (const auto& p : net.parameters()) all.push_back(p);
  if (sp)
    for (const auto& m : sp->masks()) all.push_back(m);
  return all;
}

}  // namespace

std::string checkpoint_stage(const std::string& path) {
  if (path.empty() || !fs::exists(path)) return "";
  auto f = safetensors::File::open(path);
  auto it = f.metadata().find("prunus.checkpoint");
  if (it == f.metadata().end()) fail(path, "not a Prunus checkpoint");
  try {
    return json::parse(it->second).at("stage").get<std::string>();
  } catch (const json::exception& e) {
    fail(path, std::string("corrupt checkpoint state: ") + e.what());
  }
}

void synflow_prune(Net& net, Sparsifier& sparsifier, double target, std::int64_t rounds) {
  std::vector<torch::Tensor> signs;
  {
    torch::NoGradGuard ng;
    for (auto& p : net.parameters()) {
      signs.push_back(torch::sign(p).to(torch::kFloat32));
      p.abs_();
    }
  }
  const bool was_training = net.is_training();
  net.eval();  // BatchNorm as the affine map of its running statistics
  net.to(torch::kFloat64);  // R grows with depth and width: float64 keeps it finite
  auto ones = torch::ones({1, 1, 28, 28}, torch::kFloat64);
  for (std::int64_t k = 1; k <= rounds; ++k) {
    for (auto& p : net.parameters()) p.mutable_grad() = torch::Tensor();
    net.forward(ones).sum().backward();
    sparsifier.accumulate_gradients();
    sparsifier.prune_to(k == rounds ? target : 1.0 - std::pow(1.0 - target, double(k) / double(rounds)));
  }
  net.to(torch::kFloat32);
  {
    torch::NoGradGuard ng;
    std::size_t i = 0;
    for (auto& p : net.parameters()) {
      p.mutable_grad() = torch::Tensor();
      p.mul_(signs[i++]);
    }
  }
  sparsifier.apply_masks();
  net.train(was_training);
}

torch::Tensor distillation_loss(const torch::Tensor& student, const torch::Tensor& teacher, const torch::Tensor& hard,
                                double alpha, double temperature) {
  // Hinton et al. 2015: T² keeps the soft term's gradients on the scale of the hard one.
  const double T = temperature;
  auto kd = F::kl_div(torch::log_softmax(student / T, 1), torch::softmax(teacher / T, 1),
                      F::KLDivFuncOptions().reduction(torch::kBatchMean));
  return alpha * T * T * kd + (1.0 - alpha) * hard;
}

namespace {
// The calibration batches both criteria families see: `batches` of `batch_size` training
// samples in one seeded order (the same images whichever criterion asks).
void for_each_calibration_batch(const data::Dataset& train, std::int64_t batches, std::int64_t batch_size,
                                std::uint64_t seed, const std::function<void(const torch::Tensor& idx)>& fn) {
  const std::int64_t n = train.size();
  const auto order = data::epoch_order(n, seed ^ 0x5eedull, 0);
  for (std::int64_t b = 0; b < batches && b * batch_size < n; ++b)
    fn(order.narrow(0, b * batch_size, std::min(batch_size, n - b * batch_size)));
}
}  // namespace

void calibrate_gradients(Net& net, const data::Dataset& train, Sparsifier& sparsifier, std::int64_t batches,
                         std::int64_t batch_size, std::uint64_t seed) {
  net.train();
  for_each_calibration_batch(train, batches, batch_size, seed, [&](const torch::Tensor& idx) {
    for (auto& p : net.parameters()) p.mutable_grad() = torch::Tensor();
    auto loss = F::cross_entropy(net.forward(train.images.index_select(0, idx)), train.labels.index_select(0, idx));
    loss.backward();
    sparsifier.accumulate_gradients();
  });
  for (auto& p : net.parameters()) p.mutable_grad() = torch::Tensor();
}

void calibrate_activations(Net& net, const data::Dataset& train, Sparsifier& sparsifier, std::int64_t batches,
                           std::int64_t batch_size, std::uint64_t seed) {
  // A conv's columns are its im2col rows: unfold with the layer's own geometry.
  std::map<std::string, F::UnfoldFuncOptions> unfold;
  for (const auto& item : net.named_modules()) {
    const auto* conv = item.value()->as<torch::nn::Conv2dImpl>();
    if (!conv) continue;
    const auto& o = conv->options;
    using std::get_if;  // c10::variant (libtorch 1.x) or std::variant (2.x): ADL picks the right one
    const auto* pad = get_if<torch::ExpandingArray<2>>(&o.padding());
    if (!pad || o.groups() != 1)
      fail("layer '" + item.key() + "'", "activation statistics need an ungrouped conv with explicit padding");
    unfold.emplace(item.key(), F::UnfoldFuncOptions(o.kernel_size()).dilation(o.dilation()).padding(*pad).stride(o.stride()));
  }
  std::map<std::string, std::vector<std::int64_t>> column_shape;  // pruned weight → its shape without dim 0
  for (const auto& p : sparsifier.params()) column_shape[p.name] = p.weight.sizes().slice(1).vec();
  Criterion& crit = sparsifier.criterion();
  net.set_input_hook([&](const std::string& layer, const torch::Tensor& x) {
    const std::string param = layer + ".weight";
    const auto shape = column_shape.find(param);
    if (shape == column_shape.end()) return x;
    torch::Tensor cols;  // [rows, columns]
    if (auto it = unfold.find(layer); it != unfold.end())
      cols = F::unfold(x, it->second).transpose(1, 2).reshape({-1, x.size(1) * it->second.kernel_size()->at(0) *
                                                                         it->second.kernel_size()->at(1)});
    else
      cols = x.reshape({-1, x.size(-1)});
    crit.accumulate_activations(param, cols.to(torch::kFloat64).square().sum(0).reshape(shape->second), cols.size(0));
    return x;
  });
  const bool was_training = net.is_training();
  net.eval();
  torch::NoGradGuard ng;
  for_each_calibration_batch(train, batches, batch_size, seed,
                             [&](const torch::Tensor& idx) { net.forward(train.images.index_select(0, idx)); });
  net.set_input_hook({});
  net.train(was_training);
}

Trainer::Trainer(Net& net, TrainConfig cfg, std::uint64_t seed, Sparsifier* sparsifier)
    : net_(net), cfg_(std::move(cfg)), seed_(seed), sparsifier_(sparsifier) {}

double Trainer::lr_at(std::int64_t step, std::int64_t steps_per_epoch) const {
  const double total = double(cfg_.epochs) * double(steps_per_epoch);
  if (cfg_.lr_schedule == "cosine") return cfg_.lr * 0.5 * (1.0 + std::cos(M_PI * double(step) / total));
  if (cfg_.lr_schedule == "step")
    return cfg_.lr * std::pow(cfg_.gamma, double(step / (std::int64_t(cfg_.step_epochs) * steps_per_epoch)));
  return cfg_.lr;
}

TrainResult Trainer::fit(const data::Dataset& train, const data::Dataset* test, const CheckpointOptions& ck,
                         bool progress) {
  TrainResult result;
  auto opt = make_optimizer(net_, cfg_);
  const std::int64_t n = train.size();
  const std::int64_t bs = cfg_.batch_size;
  const std::int64_t steps_per_epoch = (n + bs - 1) / bs;
  const std::int64_t total_steps = steps_per_epoch * cfg_.epochs;
  Position pos;
  // QAT: fake INT8 weights and layer inputs; input ranges start from the first 512 training
  // images (the same on every rank), then follow the batches.
  std::unique_ptr<qat::FakeQuant> fq;
  if (cfg_.qat) {
    fq = std::make_unique<qat::FakeQuant>(net_);
    fq->init_ranges(train.images.narrow(0, 0, std::min<std::int64_t>(512, n)));
  }
  if (ck.resume && !ck.path.empty() && fs::exists(ck.path)) {
    load_checkpoint(ck, net_, *opt, sparsifier_, pos, result.history, fq.get());
    if (sparsifier_) sparsifier_->apply_masks();
    std::fprintf(stderr, "resuming %s from %s at epoch %lld, step %lld\n", ck.stage.c_str(), ck.path.c_str(),
                 static_cast<long long>(pos.epoch + 1), static_cast<long long>(pos.step_in_epoch));
  }
  const auto t_start = std::chrono::steady_clock::now();
  const double seconds_before = pos.seconds;
  auto elapsed = [&] {
    return seconds_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  };
  const std::int64_t first_step = pos.global_step;
  auto& g = dist::world();
  if (g.active()) g.check_same(model_and_masks(net_, sparsifier_), "initial weights and masks");
  bool stop_seen = false;
  for (; pos.epoch < cfg_.epochs; ++pos.epoch) {
    net_.train();
    const auto order = data::epoch_order(n, seed_, pos.epoch);
    Progress bar(fmt::format("{} {}/{}", ck.stage, pos.epoch + 1, cfg_.epochs), steps_per_epoch, progress);
    double loss_sum = 0;
    std::int64_t correct = 0, seen = 0;
    const auto epoch_start = std::chrono::steady_clock::now();
    double lr = cfg_.lr;
    for (; pos.step_in_epoch < steps_per_epoch; ++pos.step_in_epoch, ++pos.global_step) {
      // Every rank stops at the same step: Ctrl-C reaches the ranks at different moments, so
      // in a distributed run each rank's flag rides on the previous step's gradient all-reduce.
      if ((g.active() ? stop_seen : interrupt_requested()) || pos.global_step == ck.stop_at_step) {
        pos.seconds = elapsed();
        broadcast_buffers(net_, g);
        if (!ck.path.empty()) {
          if (g.is_main()) save_checkpoint(ck, net_, *opt, sparsifier_, pos, result.history, fq.get());
          std::fprintf(stderr, "\ninterrupted: checkpoint written to %s (continue with --resume)\n", ck.path.c_str());
        } else {
          std::fprintf(stderr, "\ninterrupted\n");
        }
        result.interrupted = true;
        result.seconds = pos.seconds;
        return result;
      }
      try {  // a peer lost mid-step: rank 0 keeps the state before this step (see the catch)
        if (sparsifier_ && sparsifier_->step(pos.global_step)) pos.target = sparsifier_->current_target();
        const std::int64_t begin = pos.step_in_epoch * bs;
        const std::int64_t count = std::min(bs, n - begin);
        const auto idx = order.narrow(0, begin, count);
        auto x = train.images.index_select(0, idx);
        auto y = train.labels.index_select(0, idx);
        if (cfg_.augment) {
          auto gen = at::detail::createCPUGenerator(seed_ * 7919ull + static_cast<std::uint64_t>(pos.global_step) + 1);
          x = data::augment(x, gen);
        }
        // This rank's share of the global batch (all of it in one process).
        const auto [lo, hi] = dist::shard(count);
        x = x.narrow(0, lo, hi - lo);
        y = y.narrow(0, lo, hi - lo);
        lr = lr_at(pos.global_step, steps_per_epoch);
        for (auto& group : opt->param_groups()) group.options().set_lr(lr);
        opt->zero_grad();
        broadcast_buffers(net_, g);
        double l = 0;
        std::int64_t step_correct = 0;
        std::optional<qat::FakeQuant::QuantizedWeights> quantized;  // masters back before the step
        if (fq) quantized.emplace(fq.get());
        if (hi > lo) {
          auto logits = net_.forward(x);
          auto loss = F::cross_entropy(logits, y, F::CrossEntropyFuncOptions().label_smoothing(cfg_.label_smoothing));
          if (cfg_.distill_alpha > 0) {
            if (!teacher) fail("distill", "distillation is on but no teacher model was given");
            torch::Tensor t_logits;
            {
              torch::NoGradGuard ng;
              t_logits = teacher->forward(x);
            }
            loss = distillation_loss(logits, t_logits, loss, cfg_.distill_alpha, cfg_.distill_temperature);
          }
          // Scaled by this rank's share: summed over the ranks, the gradient of the batch mean.
          (g.active() ? loss * (double(hi - lo) / double(count)) : loss).backward();
          l = loss.item<double>() * double(hi - lo);
          step_correct = (logits.detach().argmax(1) == y).sum().item<std::int64_t>();
        }
        if (g.active()) {
          const auto totals = all_reduce_gradients(net_, g, l, step_correct, interrupt_requested());
          stop_seen = totals.stop;
          l = totals.loss_sum;
          step_correct = totals.correct;
        }
        quantized.reset();
        if (fq) fq->update_ranges(g);
        l /= double(count);
        if (!std::isfinite(l))
          fail("training", fmt::format("loss became {} at step {} (learning rate {} too high?)", l, pos.global_step, lr));
        if (sparsifier_ && sparsifier_->needs_gradients()) sparsifier_->accumulate_gradients();
        if (sparsifier_) sparsifier_->mask_gradients();
        opt->step();
        if (sparsifier_) sparsifier_->after_optimizer_step();
        loss_sum += l * double(count);
        correct += step_correct;
        seen += count;
        if (progress) {
          const double done = double(pos.global_step + 1 - first_step);
          const double eta = (elapsed() - seconds_before) / done * double(total_steps - pos.global_step - 1);
          bar.update(pos.step_in_epoch + 1, fmt::format("loss {:.4f} acc {:.2f}% | run ETA {}", loss_sum / double(seen),
                                                        100.0 * double(correct) / double(seen),
                                                        Progress::format_duration(eta)));
        }
      } catch (const dist::PeerFailure& e) {
        // Every collective of a step comes before its optimiser step, so the weights and the
        // optimiser are still those before this step (the schedule's pruning at this step, if
        // any, is redone on resume).
        if (g.is_main() && !ck.path.empty()) {
          pos.seconds = elapsed();
          save_checkpoint(ck, net_, *opt, sparsifier_, pos, result.history, fq.get());
          throw dist::PeerFailure(std::string(e.what()) + "; checkpoint written to " + ck.path +
                                  " (continue with --resume)");
        }
        throw;
      }
    }
    pos.step_in_epoch = 0;
    EpochRecord r;
    r.epoch = static_cast<int>(pos.epoch + 1);
    r.step = pos.global_step;
    r.lr = lr;
    r.train_loss = seen ? loss_sum / double(seen) : 0;
    r.train_accuracy = seen ? double(correct) / double(seen) : 0;
    r.sparsity = pruned_sparsity(sparsifier_);
    r.target = pos.target;
    broadcast_buffers(net_, g);
    if (g.active())
      g.check_same(model_and_masks(net_, sparsifier_), fmt::format("weights and masks after epoch {}", r.epoch));
    if (test) {
      std::optional<qat::FakeQuant::QuantizedWeights> quantized;  // QAT: the accuracy INT8 will have
      if (fq) quantized.emplace(fq.get());
      r.test_accuracy = evaluate_sharded(net_, *test, g).accuracy;
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start).count();
    result.history.push_back(r);
    if (on_epoch_end) on_epoch_end(pos.epoch + 1);
    const double done = double(pos.global_step - first_step);
    const double eta = done > 0 ? (elapsed() - seconds_before) / done * double(total_steps - pos.global_step) : 0;
    std::string line = fmt::format("{} epoch {}/{}: loss {:.4f} train {:.2f}%", ck.stage, r.epoch, cfg_.epochs,
                                   r.train_loss, 100 * r.train_accuracy);
    if (test) line += fmt::format(" test {:.2f}%", 100 * r.test_accuracy);
    if (sparsifier_) line += fmt::format(" sparsity {:.2f}%", 100 * r.sparsity);
    line += fmt::format(" lr {:.4g} ({}, ETA {})", lr, Progress::format_duration(r.seconds),
                        Progress::format_duration(eta));
    bar.finish(line);
  }
  if (g.is_main() && !ck.path.empty() && fs::exists(ck.path)) fs::remove(ck.path);
  result.seconds = elapsed();
  if (fq) result.act_scales = fq->act_scales();
  return result;
}

void recalibrate_batchnorm(Net& net, const data::Dataset& train, std::int64_t samples, std::int64_t batch_size) {
  std::vector<torch::nn::BatchNorm2dImpl*> norms;
  for (const auto& m : net.modules(/*include_self=*/false))
    if (auto* bn = m->as<torch::nn::BatchNorm2d>()) norms.push_back(bn);
  const std::int64_t n = std::min(samples, train.size());
  if (norms.empty() || n <= 0) return;
  std::vector<c10::optional<double>> momentum;
  for (auto* bn : norms) {
    momentum.push_back(bn->options.momentum());
    bn->options.momentum(c10::nullopt);  // cumulative average: every batch weighs the same
    bn->reset_running_stats();
  }
  torch::NoGradGuard ng;
  net.train();
  for (std::int64_t i = 0; i < n; i += batch_size) net.forward(train.images.narrow(0, i, std::min(batch_size, n - i)));
  for (std::size_t i = 0; i < norms.size(); ++i) norms[i]->options.momentum(momentum[i]);
  net.eval();
}

Evaluation evaluate(Net& net, const data::Dataset& d, std::int64_t batch) {
  torch::NoGradGuard ng;
  const bool was_training = net.is_training();
  net.eval();
  Evaluation e;
  double loss = 0;
  std::int64_t correct = 0;
  for (std::int64_t i = 0; i < d.size(); i += batch) {
    const std::int64_t b = std::min(batch, d.size() - i);
    auto logits = net.forward(d.images.narrow(0, i, b));
    auto y = d.labels.narrow(0, i, b);
    loss += F::cross_entropy(logits, y, F::CrossEntropyFuncOptions().reduction(torch::kSum)).item<double>();
    correct += (logits.argmax(1) == y).sum().item<std::int64_t>();
  }
  e.samples = d.size();
  e.accuracy = e.samples ? double(correct) / double(e.samples) : 0;
  e.loss = e.samples ? loss / double(e.samples) : 0;
  net.train(was_training);
  return e;
}

}  // namespace prunus
