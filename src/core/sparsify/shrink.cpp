// Structured pruning on the runtime graph: trace channel spaces, group them, keep the
// strongest channels, rewrite the tensors. Torch-free: it reads and writes model files only.
#include "prunus/shrink.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <cmath>
#include <numeric>
#include <random>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "prunus/idx.h"
#include "prunus/io.h"
#include "prunus/recipe.h"
#include "prunus/report.h"
#include "prunus/runtime.h"
#include "prunus/safetensors.h"

namespace prunus::shrink {
using nlohmann::json;

namespace {

struct Tensor {
  std::vector<std::int64_t> shape;
  std::vector<float> data;
};

// A conv/linear whose output channels define a space; BatchNorm folded after a conv.
struct Producer {
  std::string weight, bias;
  std::string bn_weight, bn_bias, bn_mean, bn_var;
  double eps = 1e-5;
  int space = -1;
};
// A run of channels of one space inside a value: a concatenation's value is its inputs'
// segments one after another. `unit` consecutive columns a channel (H×W after a flatten).
struct Segment {
  int space = -1;
  std::int64_t channels = 0, unit = 1;
};
// Columns of a run of segments, as the runtime counts them (a flattened value: features).
std::int64_t columns(const std::vector<Segment>& segs) {
  std::int64_t n = 0;
  for (const auto& s : segs) n += s.channels * s.unit;
  return n;
}
// A conv/linear reading a value: its input columns are the segments' in order.
struct Consumer {
  std::string weight;
  std::vector<Segment> segs;
};
struct OpCost {  // for multiply-add counts: Σ over input segments of out × channels × unit × per
  int out_space = -1;
  std::vector<Segment> in;
  std::int64_t out = 0, per = 1;  // per: k·k·oh·ow for a conv, 1 for a linear
};

struct Trace {
  std::vector<int> parent;  // union-find over spaces
  std::vector<bool> fixed;
  std::vector<std::int64_t> channels;
  std::vector<Producer> producers;
  std::vector<Consumer> consumers;
  std::vector<OpCost> costs;
  int find(int s) { return parent[s] == s ? s : parent[s] = find(parent[s]); }
  int add_space(std::int64_t c, bool is_fixed) {
    parent.push_back(static_cast<int>(parent.size()));
    fixed.push_back(is_fixed);
    channels.push_back(c);
    return parent.back();
  }
  void unite(int a, int b) {
    a = find(a), b = find(b);
    if (a == b) return;
    parent[b] = a;
    fixed[a] = fixed[a] || fixed[b];
  }
};

struct Value {
  std::vector<Segment> segs;
  std::int64_t h = 1, w = 1;
  bool flat() const {
    return std::any_of(segs.begin(), segs.end(), [](const Segment& s) { return s.unit > 1; });
  }
};

Trace trace(const safetensors::File& f) {
  const std::string& path = f.path();
  auto it = f.metadata().find("prunus.graph");
  if (it == f.metadata().end()) fail(path, "no prunus.graph: structured pruning needs a model the runtime can run");
  if (f.metadata().count("prunus.quant"))
    fail(path, "an INT8 file written by prunus quantize: shrink the fp32 model, then quantize the result");
  // The runtime's loader validates the whole graph (ops, names, shapes, chaining, finite
  // values; fuzzed): tracing below may then assume a well-formed graph.
  runtime::LoadOptions lo;
  lo.dense = true;
  (void)runtime::Model::from_file(f, lo);
  Trace t;
  try {
    const json g = json::parse(it->second);
    const auto& in = g.at("input");
    if (!in.is_array() || in.size() != 3) fail(path, "prunus.graph: input must be [C, H, W]");
    std::vector<Value> slots;
    std::map<std::string, int> names;
    const std::int64_t c0 = in[0].get<std::int64_t>();
    slots.push_back(Value{{Segment{t.add_space(c0, true), c0, 1}}, in[1].get<std::int64_t>(), in[2].get<std::int64_t>()});
    names["input"] = 0;
    int prev = 0;
    auto slot = [&](const json& name) {
      auto n = names.find(name.get<std::string>());
      if (n == names.end()) fail(path, fmt::format("prunus.graph: unknown value '{}'", name.get<std::string>()));
      return n->second;
    };
    auto shape_of = [&](const std::string& name) { return f.at(name).shape; };
    for (const auto& o : g.at("ops")) {
      const std::string kind = o.at("op").get<std::string>();
      Value x = slots[static_cast<std::size_t>(o.contains("input") ? slot(o.at("input")) : prev)];
      Value y = x;
      if (kind == "normalize" || kind == "relu") {
      } else if (kind == "flatten") {
        for (auto& sg : y.segs) sg.unit *= x.h * x.w;
        y.h = y.w = 1;
      } else if (kind == "global_avg_pool") {
        y.h = y.w = 1;
      } else if (kind == "maxpool2d") {
        const auto k = o.value("kernel", std::int64_t(2)), s = o.value("stride", k);
        y.h = (x.h - k) / s + 1, y.w = (x.w - k) / s + 1;
      } else if (kind == "add") {
        const Value a = slots[static_cast<std::size_t>(slot(o.at("inputs")[0]))];
        const Value b = slots[static_cast<std::size_t>(slot(o.at("inputs")[1]))];
        bool aligned = a.segs.size() == b.segs.size();
        for (std::size_t i = 0; aligned && i < a.segs.size(); ++i)
          aligned = a.segs[i].channels == b.segs[i].channels && a.segs[i].unit == b.segs[i].unit;
        if (aligned) {  // channel i of each segment of a is added to channel i of b's: one space
          for (std::size_t i = 0; i < a.segs.size(); ++i) t.unite(a.segs[i].space, b.segs[i].space);
        } else {
          // Differently concatenated operands (a concat added to one conv, say): a segment of
          // one would have to split a space of the other; left whole, never pruned.
          for (const auto* v : {&a, &b})
            for (const auto& sg : v->segs) t.fixed[static_cast<std::size_t>(t.find(sg.space))] = true;
        }
        y = a;
      } else if (kind == "concat") {  // along channels: the inputs' segments one after another
        const auto& inputs = o.at("inputs");
        y = slots[static_cast<std::size_t>(slot(inputs[0]))];
        for (std::size_t i = 1; i < inputs.size(); ++i) {
          const Value& p = slots[static_cast<std::size_t>(slot(inputs[i]))];
          y.segs.insert(y.segs.end(), p.segs.begin(), p.segs.end());
        }
      } else if (kind == "conv2d") {
        const std::string wn = o.at("weight").get<std::string>();
        const auto ws = shape_of(wn);
        if (ws.size() != 4 || ws[1] != columns(x.segs) || x.flat()) fail(path, fmt::format("prunus.graph: conv {} does not fit its input", wn));
        const auto stride = o.value("stride", std::int64_t(1)), pad = o.value("padding", std::int64_t(0));
        t.consumers.push_back({wn, x.segs});
        y.segs = {Segment{t.add_space(ws[0], false), ws[0], 1}};
        y.h = (x.h + 2 * pad - ws[2]) / stride + 1, y.w = (x.w + 2 * pad - ws[3]) / stride + 1;
        Producer p;
        p.weight = wn, p.bias = o.value("bias", std::string());
        if (o.contains("bn")) {
          const auto& bn = o.at("bn");
          p.bn_weight = bn.at("weight"), p.bn_bias = bn.at("bias"), p.bn_mean = bn.at("running_mean");
          p.bn_var = bn.at("running_var"), p.eps = bn.value("eps", 1e-5);
        }
        p.space = y.segs[0].space;
        t.producers.push_back(p);
        t.costs.push_back(OpCost{p.space, x.segs, ws[0], ws[2] * ws[3] * y.h * y.w});
      } else if (kind == "linear") {
        const std::string wn = o.at("weight").get<std::string>();
        const auto ws = shape_of(wn);
        // The runtime only feeds a linear a vector: x.h = x.w = 1 (it rejects the graph otherwise).
        if (ws.size() != 2 || ws[1] != columns(x.segs) || x.h != 1 || x.w != 1)
          fail(path, fmt::format("prunus.graph: linear {} does not fit its input", wn));
        t.consumers.push_back({wn, x.segs});
        y = Value{{Segment{t.add_space(ws[0], false), ws[0], 1}}, 1, 1};
        Producer p;
        p.weight = wn, p.bias = o.value("bias", std::string());
        p.space = y.segs[0].space;
        t.producers.push_back(p);
        t.costs.push_back({p.space, x.segs, ws[0], 1});
      } else {
        fail(path, fmt::format("prunus.graph: structured pruning does not know op '{}'", kind));
      }
      slots.push_back(y);
      prev = static_cast<int>(slots.size()) - 1;
      if (o.contains("output")) names[o.at("output").get<std::string>()] = prev;
    }
    for (const auto& sg : slots[static_cast<std::size_t>(prev)].segs)  // the logits
      t.fixed[static_cast<std::size_t>(t.find(sg.space))] = true;
  } catch (const json::exception& e) {
    fail(path, std::string("prunus.graph: ") + e.what());
  }
  return t;
}

Tensor load(const safetensors::File& f, const std::string& name) {
  const auto& v = f.at(name);
  return {v.shape, v.to_f32()};
}

// Keeps `idx` (each standing for `unit` consecutive entries) along dimension `dim`.
void select(Tensor& t, std::size_t dim, const std::vector<std::int64_t>& idx, std::int64_t unit) {
  std::int64_t outer = 1, inner = 1;
  for (std::size_t d = 0; d < dim; ++d) outer *= t.shape[d];
  for (std::size_t d = dim + 1; d < t.shape.size(); ++d) inner *= t.shape[d];
  const std::int64_t n = t.shape[dim];
  std::vector<float> out;
  out.reserve(static_cast<std::size_t>(outer * std::int64_t(idx.size()) * unit * inner));
  for (std::int64_t o = 0; o < outer; ++o)
    for (auto i : idx)
      for (std::int64_t u = 0; u < unit; ++u) {
        const float* src = t.data.data() + (o * n + i * unit + u) * inner;
        out.insert(out.end(), src, src + inner);
      }
  t.data = std::move(out);
  t.shape[dim] = std::int64_t(idx.size()) * unit;
}

// The input columns of `c` (dimension 1 of its weight) that stay: each segment's kept channels
// at the segment's offset, `unit` columns a channel.
std::vector<std::int64_t> kept_columns(const Consumer& c, const std::vector<std::vector<std::int64_t>>& kept) {
  std::vector<std::int64_t> cols;
  std::int64_t offset = 0;
  for (const auto& sg : c.segs) {
    for (auto k : kept[static_cast<std::size_t>(sg.space)])
      for (std::int64_t u = 0; u < sg.unit; ++u) cols.push_back(offset + k * sg.unit + u);
    offset += sg.channels * sg.unit;
  }
  return cols;
}

std::vector<std::int64_t> complement(const std::vector<std::int64_t>& kept, std::int64_t n) {
  std::vector<std::int64_t> out;
  for (std::int64_t i = 0, k = 0; i < n; ++i) {
    if (k < std::int64_t(kept.size()) && kept[static_cast<std::size_t>(k)] == i) ++k;
    else out.push_back(i);
  }
  return out;
}

// The kept channels of every space (all channels for spaces that are not pruned).
std::vector<std::vector<std::int64_t>> kept_by_space(Trace& t, const Plan& plan, const std::string& path) {
  std::vector<std::vector<std::int64_t>> kept(t.parent.size());
  for (std::size_t s = 0; s < t.parent.size(); ++s) {
    kept[s].resize(static_cast<std::size_t>(t.channels[s]));
    std::iota(kept[s].begin(), kept[s].end(), 0);
  }
  for (const auto& g : plan.groups) {
    bool found = false;
    for (const auto& p : t.producers)
      if (p.weight == g.producers.front()) {
        const int root = t.find(p.space);
        for (std::size_t s = 0; s < t.parent.size(); ++s)
          if (t.find(static_cast<int>(s)) == root) kept[s] = g.kept;
        found = true;
      }
    if (!found) fail(path, fmt::format("the plan names {}, which this model does not have", g.producers.front()));
  }
  return kept;
}

void write_model(const std::string& path, const Plan& plan, const std::string& out, bool shrink) {
  const auto f = safetensors::File::open(path);
  Trace t = trace(f);
  const auto kept = kept_by_space(t, plan, path);
  std::map<std::string, Tensor> tensors;
  std::vector<const safetensors::TensorView*> others;  // integer buffers (BatchNorm's counter): copied as they are
  for (const auto& v : f.tensors()) {
    if (v.dtype == safetensors::DType::F32 || v.dtype == safetensors::DType::F16 || v.dtype == safetensors::DType::BF16 ||
        v.dtype == safetensors::DType::F64)
      tensors[v.name] = load(f, v.name);
    else
      others.push_back(&v);
  }
  for (const auto& p : t.producers) {
    const auto& k = kept[static_cast<std::size_t>(p.space)];
    if (std::int64_t(k.size()) == t.channels[static_cast<std::size_t>(p.space)]) continue;
    for (const auto& name : {p.weight, p.bias, p.bn_weight, p.bn_bias, p.bn_mean, p.bn_var}) {
      if (name.empty()) continue;
      auto& x = tensors.at(name);
      if (shrink) {
        select(x, 0, k, 1);
      } else if (name != p.bn_mean && name != p.bn_var) {  // zero: weight rows, bias, BN scale and shift
        const std::int64_t row = x.data.size() / static_cast<std::size_t>(x.shape[0]);
        for (auto c : complement(k, x.shape[0])) std::fill_n(x.data.begin() + c * row, row, 0.0f);
      }
    }
  }
  // Consumers' weights on each kept channel times the group's scale (both models, so that
  // the masked one still computes what the shrunk one does).
  for (const auto& g : plan.groups) {
    if (g.scale.empty()) continue;
    if (g.scale.size() != g.kept.size()) fail(path, fmt::format("the plan's scales for {} do not match its kept channels", g.producers.front()));
    int root = -1;
    for (const auto& p : t.producers)
      if (p.weight == g.producers.front()) root = t.find(p.space);
    for (const auto& c : t.consumers) {
      auto& x = tensors.at(c.weight);
      const std::int64_t outer = x.shape[0], cols = x.shape[1];
      const std::int64_t inner = std::int64_t(x.data.size()) / (outer * cols);  // k·k for a conv, 1 for a linear
      std::int64_t offset = 0;
      for (const auto& sg : c.segs) {
        if (t.find(sg.space) == root)
          for (std::int64_t o = 0; o < outer; ++o)
            for (std::size_t i = 0; i < g.kept.size(); ++i) {
              float* w = x.data.data() + (o * cols + offset + g.kept[i] * sg.unit) * inner;
              for (std::int64_t e = 0; e < sg.unit * inner; ++e) w[e] *= g.scale[i];
            }
        offset += sg.channels * sg.unit;
      }
    }
  }
  if (shrink)
    for (const auto& c : t.consumers) {
      const auto cols = kept_columns(c, kept);
      if (std::int64_t(cols.size()) != columns(c.segs)) select(tensors.at(c.weight), 1, cols, 1);
    }
  std::vector<safetensors::TensorToWrite> w;
  for (const auto& [name, x] : tensors) w.push_back({name, safetensors::DType::F32, x.shape, x.data.data()});
  std::vector<std::vector<std::uint8_t>> raw;
  raw.reserve(others.size());
  for (const auto* v : others) {
    raw.emplace_back(v->data, v->data + v->nbytes);
    w.push_back({v->name, v->dtype, v->shape, raw.back().data()});
  }
  auto meta = f.metadata();
  json groups = json::array();
  for (const auto& g : plan.groups)
    groups.push_back({{"producers", g.producers}, {"channels", g.channels}, {"kept", g.kept.size()}});
  meta[shrink ? "prunus.shrunk" : "prunus.structured_mask"] = groups.dump();
  safetensors::write(out, w, meta);
}

// The Gram matrices of criterion thinet (see plan), from the runtime's view of each
// consumer's input on the calibration samples. At most 512 (position, output) pairs a
// consumer per chunk of 64 samples, drawn with the plan's seed.
std::map<std::string, std::vector<double>> consumer_grams(const safetensors::File& f, Trace& t, const Options& opt) {
  runtime::LoadOptions lo;
  lo.dense = true;
  const auto model = runtime::Model::from_file(f, lo);
  if (opt.calib_count < 1 || std::int64_t(opt.calib.size()) != opt.calib_count * model.input_size())
    fail("--criterion thinet", "needs calibration samples (--calib-data)");
  struct Reader {
    const Consumer* consumer;
    std::int64_t channels;
    std::vector<float> w;             // [rows × cols], columns in the runtime's input order
    std::vector<std::int64_t> owner;  // channel of each column
    std::int64_t rows = 0, cols = 0;
  };
  std::map<std::string, Reader> readers;
  for (const auto& c : t.consumers) {
    if (std::all_of(c.segs.begin(), c.segs.end(), [&](const Segment& sg) { return t.fixed[static_cast<std::size_t>(t.find(sg.space))]; }))
      continue;
    std::int64_t channels = 0;
    for (const auto& sg : c.segs) channels += sg.channels;
    Reader r{&c, channels, {}, {}};
    const auto w = load(f, c.weight);
    r.rows = w.shape[0];
    r.cols = static_cast<std::int64_t>(w.data.size()) / r.rows;
    r.w.resize(w.data.size());
    r.owner.resize(static_cast<std::size_t>(r.cols));
    if (w.shape.size() == 4) {  // [out, in, k, k] → im2col order (ky, kx, ci)
      const std::int64_t cin = w.shape[1], k = w.shape[2];
      for (std::int64_t o = 0; o < r.rows; ++o)
        for (std::int64_t ci = 0; ci < cin; ++ci)
          for (std::int64_t y = 0; y < k; ++y)
            for (std::int64_t x = 0; x < k; ++x)
              r.w[static_cast<std::size_t>(o * r.cols + (y * k + x) * cin + ci)] =
                  w.data[static_cast<std::size_t>(((o * cin + ci) * k + y) * k + x)];
      for (std::int64_t j = 0; j < r.cols; ++j) r.owner[static_cast<std::size_t>(j)] = j % cin;
    } else {  // linear: each segment's channels own `unit` consecutive columns (H×W after a flatten)
      r.w = w.data;
      std::int64_t j = 0, first = 0;
      for (const auto& sg : c.segs) {
        for (std::int64_t col = 0; col < sg.channels * sg.unit; ++col) r.owner[static_cast<std::size_t>(j++)] = first + col / sg.unit;
        first += sg.channels;
      }
    }
    readers.emplace(c.weight, std::move(r));
  }
  std::map<std::string, std::vector<double>> gram;
  std::mt19937_64 rng(opt.seed);
  const auto& layers = model.layers();
  const std::int64_t chunk = 64;
  for (std::int64_t i = 0; i < opt.calib_count; i += chunk) {
    const std::int64_t b = std::min(chunk, opt.calib_count - i);
    model.forward_inputs(opt.calib.data() + i * model.input_size(), b,
                         [&](std::size_t layer, const float* v, std::int64_t count) {
                           auto it = readers.find(layers[layer].name + ".weight");
                           if (it == readers.end()) return;
                           const Reader& r = it->second;
                           const std::int64_t positions = count / r.cols, C = r.channels;
                           auto& G = gram[it->first];
                           G.resize(static_cast<std::size_t>(C * C), 0.0);
                           std::uniform_int_distribution<std::int64_t> pick_p(0, positions - 1), pick_o(0, r.rows - 1);
                           std::vector<double> z(static_cast<std::size_t>(C));
                           for (int s = 0; s < 512; ++s) {
                             const std::int64_t p = pick_p(rng), o = pick_o(rng);
                             std::fill(z.begin(), z.end(), 0.0);
                             for (std::int64_t j = 0; j < r.cols; ++j)
                               z[static_cast<std::size_t>(r.owner[static_cast<std::size_t>(j)])] +=
                                   double(r.w[static_cast<std::size_t>(o * r.cols + j)]) * double(v[p * r.cols + j]);
                             for (std::int64_t a = 0; a < C; ++a) {
                               if (z[static_cast<std::size_t>(a)] == 0.0) continue;
                               for (std::int64_t c = 0; c < C; ++c)
                                 G[static_cast<std::size_t>(a * C + c)] += z[static_cast<std::size_t>(a)] * z[static_cast<std::size_t>(c)];
                             }
                           }
                         });
  }
  return gram;
}

// The group's consumers' Gram matrices summed (C × C): of a consumer that reads the group in
// a segment of a concatenation, the block of that segment (every pair of its segments in the
// group, should it read the group twice).
std::vector<double> group_gram(const std::string& path, Trace& t, int root, const Group& g,
                               const std::map<std::string, std::vector<double>>& gram) {
  const std::int64_t C = g.channels;
  std::vector<double> G(static_cast<std::size_t>(C * C), 0.0);
  bool seen = false;
  for (const auto& c : t.consumers) {
    auto it = gram.find(c.weight);
    if (it == gram.end()) continue;
    std::vector<std::int64_t> at;  // first channel of each segment of the group
    std::int64_t total = 0;
    for (const auto& sg : c.segs) {
      if (t.find(sg.space) == root) at.push_back(total);
      total += sg.channels;
    }
    if (at.empty() || std::int64_t(it->second.size()) != total * total) continue;
    for (auto a : at)
      for (auto b : at)
        for (std::int64_t i = 0; i < C; ++i)
          for (std::int64_t j = 0; j < C; ++j)
            G[static_cast<std::size_t>(i * C + j)] += it->second[static_cast<std::size_t>((a + i) * total + b + j)];
    seen = true;
  }
  if (!seen) fail(path, fmt::format("no consumer inputs observed for the group of {}", g.producers.front()));
  return G;
}

// ThiNet's greedy choice over a group: repeatedly remove the channel whose contribution,
// added to those already removed, changes the consumers' outputs least. Score = the step a
// channel left at, so the last to leave rank highest.
std::vector<double> thinet_order(const std::vector<double>& G, std::int64_t C) {
  std::vector<double> score(static_cast<std::size_t>(C), 0.0);
  std::vector<bool> removed(static_cast<std::size_t>(C), false);
  std::vector<double> cross(static_cast<std::size_t>(C), 0.0);  // Σ_{t removed} G[c][t]
  for (std::int64_t step = 0; step < C; ++step) {
    std::int64_t best = -1;
    double best_cost = INFINITY;
    for (std::int64_t c = 0; c < C; ++c) {
      if (removed[static_cast<std::size_t>(c)]) continue;
      const double cost = 2 * cross[static_cast<std::size_t>(c)] + G[static_cast<std::size_t>(c * C + c)];
      if (cost < best_cost) best_cost = cost, best = c;
    }
    removed[static_cast<std::size_t>(best)] = true;
    score[static_cast<std::size_t>(best)] = double(step);
    for (std::int64_t c = 0; c < C; ++c) cross[static_cast<std::size_t>(c)] += G[static_cast<std::size_t>(c * C + best)];
  }
  return score;
}

// ThiNet's second step: factors w on the kept channels' contributions that best give the
// full sum, min ‖Σ_all z − Σ_kept w_k z_k‖² → (G_KK + λI) w = G_K,all · 1 (Cholesky; λ a
// millionth of the mean diagonal keeps channels that never fired solvable).
std::vector<float> thinet_scales(const std::vector<double>& G, std::int64_t C, const std::vector<std::int64_t>& kept) {
  const std::size_t K = kept.size();
  std::vector<double> A(K * K), b(K, 0.0);
  double diag = 0;
  for (std::size_t i = 0; i < K; ++i) diag += G[static_cast<std::size_t>(kept[i] * C + kept[i])];
  const double lambda = 1e-6 * diag / double(std::max<std::size_t>(K, 1)) + 1e-30;
  for (std::size_t i = 0; i < K; ++i) {
    for (std::size_t j = 0; j < K; ++j) A[i * K + j] = G[static_cast<std::size_t>(kept[i] * C + kept[j])];
    A[i * K + i] += lambda;
    for (std::int64_t c = 0; c < C; ++c) b[i] += G[static_cast<std::size_t>(kept[i] * C + c)];
  }
  for (std::size_t j = 0; j < K; ++j) {  // A = L·Lᵀ in place (lower triangle)
    for (std::size_t k = 0; k < j; ++k) A[j * K + j] -= A[j * K + k] * A[j * K + k];
    A[j * K + j] = std::sqrt(std::max(A[j * K + j], 1e-300));
    for (std::size_t i = j + 1; i < K; ++i) {
      for (std::size_t k = 0; k < j; ++k) A[i * K + j] -= A[i * K + k] * A[j * K + k];
      A[i * K + j] /= A[j * K + j];
    }
  }
  for (std::size_t i = 0; i < K; ++i) {  // L·y = b, then Lᵀ·w = y
    for (std::size_t k = 0; k < i; ++k) b[i] -= A[i * K + k] * b[k];
    b[i] /= A[i * K + i];
  }
  for (std::size_t i = K; i-- > 0;) {
    for (std::size_t k = i + 1; k < K; ++k) b[i] -= A[k * K + i] * b[k];
    b[i] /= A[i * K + i];
  }
  return std::vector<float>(b.begin(), b.end());
}

}  // namespace

Plan plan(const std::string& path, const Options& opt) {
  if (!(opt.sparsity >= 0 && opt.sparsity < 1)) fail("--sparsity", fmt::format("{} is outside [0, 1)", opt.sparsity));
  if (opt.round_to < 1) fail("--round-to", "must be at least 1");
  if (opt.criterion != "l1" && opt.criterion != "l2" && opt.criterion != "random" && opt.criterion != "bn" &&
      opt.criterion != "activation" && opt.criterion != "thinet")
    fail("--criterion " + opt.criterion, "structured pruning knows l1, l2, bn, activation, thinet and random");
  const auto f = safetensors::File::open(path);
  Trace t = trace(f);
  // activation: mean |output| per channel of every conv/linear over the calibration samples.
  std::map<std::string, std::vector<double>> act;
  if (opt.criterion == "activation") {
    runtime::LoadOptions lo;
    lo.dense = true;
    const auto model = runtime::Model::from_file(f, lo);
    if (opt.calib_count < 1 || std::int64_t(opt.calib.size()) != opt.calib_count * model.input_size())
      fail("--criterion activation", "needs calibration samples (--calib-data)");
    std::map<std::string, std::int64_t> seen;
    const std::int64_t chunk = 64;
    for (std::int64_t i = 0; i < opt.calib_count; i += chunk) {
      const std::int64_t b = std::min(chunk, opt.calib_count - i);
      model.forward(opt.calib.data() + i * model.input_size(), b,
                    [&](const std::string& layer, const float* v, std::int64_t positions, std::int64_t channels) {
                      auto& a = act[layer + ".weight"];
                      a.resize(static_cast<std::size_t>(channels), 0.0);
                      for (std::int64_t p = 0; p < positions; ++p)
                        for (std::int64_t c = 0; c < channels; ++c) a[static_cast<std::size_t>(c)] += std::abs(v[p * channels + c]);
                      seen[layer + ".weight"] += positions;
                    });
    }
    for (auto& [name, a] : act)
      for (auto& x : a) x /= double(seen[name]);
  }
  // thinet: per consumer, the Gram matrix over its input channels of their contributions to
  // sampled (position, output) pairs: G[c][c'] = Σ z_c·z_c', z_c = Σ_{columns j of c} W[o][j]·x[j].
  std::map<std::string, std::vector<double>> gram;
  if (opt.criterion == "thinet") gram = consumer_grams(f, t, opt);
  Plan plan;
  std::mt19937_64 rng(opt.seed);
  std::map<int, Group> by_root;
  for (const auto& p : t.producers) {
    const int root = t.find(p.space);
    if (t.fixed[static_cast<std::size_t>(root)]) continue;
    auto& g = by_root[root];
    g.producers.push_back(p.weight);
    g.channels = t.channels[static_cast<std::size_t>(p.space)];
  }
  for (const auto& c : t.consumers)
    for (const auto& sg : c.segs)
      if (auto it = by_root.find(t.find(sg.space)); it != by_root.end()) {
        auto& list = it->second.consumers;
        if (std::find(list.begin(), list.end(), c.weight) == list.end()) list.push_back(c.weight);
      }
  for (auto& [root, g] : by_root) {
    // Group score: each producer's row norm (× its BatchNorm scale), summed over the group.
    std::vector<double> score(static_cast<std::size_t>(g.channels), 0.0);
    bool group_has_bn = false;
    for (const auto& p : t.producers)
      if (t.find(p.space) == root && !p.bn_weight.empty()) group_has_bn = true;
    for (const auto& p : t.producers) {
      // thinet and random replace the score below: no weights to read for them.
      if (t.find(p.space) != root || opt.criterion == "thinet" || opt.criterion == "random") continue;
      if (opt.criterion == "activation") {
        const auto it = act.find(p.weight);
        if (it == act.end() || std::int64_t(it->second.size()) != g.channels)
          fail(path, fmt::format("no activations observed for {}", p.weight));
        for (std::int64_t c = 0; c < g.channels; ++c) score[static_cast<std::size_t>(c)] += it->second[static_cast<std::size_t>(c)];
        continue;
      }
      if (opt.criterion == "bn" && group_has_bn) {  // network slimming: |γ| alone
        if (p.bn_weight.empty()) continue;
        const auto gamma = load(f, p.bn_weight).data;
        for (std::int64_t c = 0; c < g.channels; ++c) score[static_cast<std::size_t>(c)] += std::abs(gamma[static_cast<std::size_t>(c)]);
        continue;
      }
      const auto w = load(f, p.weight);
      const std::int64_t row = static_cast<std::int64_t>(w.data.size()) / g.channels;
      std::vector<float> gamma, var;
      if (!p.bn_weight.empty()) gamma = load(f, p.bn_weight).data, var = load(f, p.bn_var).data;
      for (std::int64_t c = 0; c < g.channels; ++c) {
        double s = 0;
        for (std::int64_t i = 0; i < row; ++i) {
          const double x = w.data[static_cast<std::size_t>(c * row + i)];
          s += opt.criterion == "l1" ? std::abs(x) : x * x;
        }
        if (opt.criterion != "l1") s = std::sqrt(s);
        if (!gamma.empty()) s *= std::abs(gamma[static_cast<std::size_t>(c)]) / std::sqrt(var[static_cast<std::size_t>(c)] + p.eps);
        score[static_cast<std::size_t>(c)] += s;
      }
    }
    if (opt.criterion == "random")
      for (auto& s : score) s = std::uniform_real_distribution<double>(0, 1)(rng);
    std::vector<double> G;
    if (opt.criterion == "thinet") {
      G = group_gram(path, t, root, g, gram);
      score = thinet_order(G, g.channels);
    }
    std::int64_t keep = g.channels - static_cast<std::int64_t>(std::floor(opt.sparsity * double(g.channels) + 1e-9));
    keep = std::min(g.channels, std::max<std::int64_t>(1, (keep + opt.round_to - 1) / opt.round_to * opt.round_to));
    std::vector<std::int64_t> order(static_cast<std::size_t>(g.channels));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return score[a] > score[b]; });
    g.kept.assign(order.begin(), order.begin() + keep);
    std::sort(g.kept.begin(), g.kept.end());
    if (opt.criterion == "thinet" && keep < g.channels) g.scale = thinet_scales(G, g.channels, g.kept);
    plan.groups.push_back(g);
  }
  // Multiply-adds and parameters per sample, before and after.
  std::vector<std::int64_t> after(t.parent.size());
  for (std::size_t s = 0; s < t.parent.size(); ++s) after[s] = t.channels[s];
  for (const auto& [root, g] : by_root)
    for (std::size_t s = 0; s < t.parent.size(); ++s)
      if (t.find(static_cast<int>(s)) == root) after[s] = static_cast<std::int64_t>(g.kept.size());
  for (const auto& c : t.costs)
    for (const auto& sg : c.in) {
      plan.macs_before += c.out * sg.channels * sg.unit * c.per;
      plan.macs_after += after[static_cast<std::size_t>(c.out_space)] * after[static_cast<std::size_t>(sg.space)] * sg.unit * c.per;
    }
  for (const auto& v : f.tensors()) plan.params_before += v.numel();
  plan.params_after = plan.params_before;
  {
    // Parameters after: the same rewrite as write_shrunk, counted.
    const auto kept = kept_by_space(t, plan, path);
    for (const auto& p : t.producers) {
      const auto n = t.channels[static_cast<std::size_t>(p.space)], k = std::int64_t(kept[static_cast<std::size_t>(p.space)].size());
      for (const auto& name : {p.weight, p.bias, p.bn_weight, p.bn_bias, p.bn_mean, p.bn_var})
        if (!name.empty()) plan.params_after -= f.at(name).numel() / n * (n - k);
    }
    for (const auto& c : t.consumers) {
      const auto& ws = f.at(c.weight).shape;
      const std::int64_t before = columns(c.segs), now = std::int64_t(kept_columns(c, kept).size());
      // Rows of a consumer may already have been cut as a producer: count with the kept rows.
      std::int64_t rows = ws[0];
      for (const auto& p : t.producers)
        if (p.weight == c.weight) rows = std::int64_t(kept[static_cast<std::size_t>(p.space)].size());
      plan.params_after -= rows * (f.at(c.weight).numel() / ws[0] / before) * (before - now);
    }
  }
  return plan;
}

void write_shrunk(const std::string& path, const Plan& plan, const std::string& out) { write_model(path, plan, out, true); }
void write_masked(const std::string& path, const Plan& plan, const std::string& out) { write_model(path, plan, out, false); }

}  // namespace prunus::shrink

namespace prunus {

int shrink_job(const ShrinkJob& job) {
  namespace fs = std::filesystem;
  if (fs::is_directory(job.input) || (job.input.size() > 4 && job.input.ends_with(".bin"))) return shrink_llm_job(job);
  if (job.heads > 0 || job.reconstruct || !job.calib_text.empty())
    fail(job.heads > 0 ? "--heads" : job.reconstruct ? "--reconstruct" : "--calib",
         "is for language models (a llama2.c .bin or a Hugging Face folder); " + job.input + " is a graph model");
  if (job.calib_samples < 1) fail("--calib-samples", "must be at least 1");
  if (job.out.empty()) fail("--out", "an output file is required");
  for (const auto& o : {job.out, job.masked})
    if (auto d = fs::path(o).parent_path(); !o.empty() && !d.empty() && !fs::is_directory(d))
      fail(o, "output directory does not exist");
  shrink::Options opt{job.sparsity, job.criterion, job.round_to, job.seed};
  if (job.criterion == "activation" || job.criterion == "thinet") {
    // The first calib_samples training images, as the runtime takes them (pixels / 255).
    const std::string dir = job.calib_data.empty() ? "/usr/share/datasets/fashion-mnist" : job.calib_data;
    std::string file = dir + "/train-images-idx3-ubyte";
    if (!fs::exists(file)) file += ".gz";
    if (!fs::exists(file)) fail(dir, "no train-images-idx3-ubyte[.gz] for --criterion " + job.criterion + " (pass --calib-data DIR)");
    const auto images = idx::read(file);
    std::int64_t per = 1;
    for (std::size_t d = 1; d < images.dims.size(); ++d) per *= images.dims[d];
    opt.calib_count = std::min<std::int64_t>(job.calib_samples, images.dims[0]);
    opt.calib.resize(static_cast<std::size_t>(opt.calib_count * per));
    for (std::size_t i = 0; i < opt.calib.size(); ++i) opt.calib[i] = images.data[i] / 255.0f;
  }
  const auto plan = shrink::plan(job.input, opt);
  if (plan.groups.empty()) fail(job.input, "no channel group can be pruned (every space feeds the output)");
  std::vector<std::vector<std::string>> table{{"group (producers)", "consumers", "channels", "kept"}};
  for (const auto& g : plan.groups)
    table.push_back({fmt::format("{}", fmt::join(g.producers, " + ")), fmt::format("{}", fmt::join(g.consumers, ", ")),
                     std::to_string(g.channels), std::to_string(g.kept.size())});
  shrink::write_shrunk(job.input, plan, job.out);
  if (!job.masked.empty()) shrink::write_masked(job.input, plan, job.masked);
  std::printf("%s", report::text_table(table).c_str());
  std::printf("multiply-adds per sample %lld -> %lld (%.2fx fewer); parameters %lld -> %lld; wrote %s%s%s\n",
              static_cast<long long>(plan.macs_before), static_cast<long long>(plan.macs_after),
              double(plan.macs_before) / double(std::max<std::int64_t>(plan.macs_after, 1)),
              static_cast<long long>(plan.params_before), static_cast<long long>(plan.params_after), job.out.c_str(),
              job.masked.empty() ? "" : " and ", job.masked.c_str());
  return 0;
}

}  // namespace prunus
