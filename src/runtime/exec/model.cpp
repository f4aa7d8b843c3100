// The graph executor: validates a model file's prunus.graph against its tensors, then runs
// it with NHWC activations; convolutions are im2col products through kernels::SparseLinear.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <chrono>
#include <functional>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "prunus/io.h"
#include "prunus/runtime.h"
#include "prunus/safetensors.h"
#include "layer_build.h"

namespace prunus::runtime {
using nlohmann::json;

namespace {

std::vector<float> finite_f32(const std::string& path, const safetensors::TensorView& t) {
  auto v = t.to_f32();
  for (float x : v)
    if (!std::isfinite(x)) fail(path, fmt::format("tensor '{}' contains NaN or Inf", t.name));
  return v;
}

// Numbers from the graph, range-checked before conversion: nlohmann's get<int64_t>() of
// 1e69 is undefined behaviour (found by fuzz_graph), as is a double → float outside its range.
std::int64_t json_int(const std::string& path, const json& v, const std::string& what) {
  if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<std::uint64_t>() > std::uint64_t(INT64_MAX)))
    fail(path, fmt::format("prunus.graph: {} must be an integer", what));
  return v.get<std::int64_t>();
}

float json_float(const std::string& path, const json& v, const std::string& what) {
  const double d = v.is_number() ? v.get<double>() : NAN;
  if (!std::isfinite(d) || std::abs(d) > 1e30) fail(path, fmt::format("prunus.graph: {} must be a finite number", what));
  return static_cast<float>(d);
}

std::int64_t positive(const std::string& path, const json& o, const char* key, std::int64_t fallback, std::int64_t min) {
  if (!o.contains(key)) return fallback;
  const auto v = json_int(path, o.at(key), key);
  if (v < min || v > 4096) fail(path, fmt::format("prunus.graph: '{}' = {} is out of range", key, v));
  return v;
}

// A conv/linear weight: stored as fp32 `name`, or (prunus quantize) as INT8 with a bitmask:
// name.q8.shape (I64), name.q8.bitmask (U8 [rows, ceil(cols/8)], bit j of byte k is column
// 8k+j), name.q8.values (I8, the non-zeros in row-major order), name.q8.scale (F32 [rows]).
// Dequantized here (q·scale); LoadOptions::int8 re-quantizes to the same codes.
struct Weight {
  std::vector<std::int64_t> shape;
  std::vector<float> values;
};

Weight read_weight(const safetensors::File& file, const std::string& name) {
  const std::string& path = file.path();
  if (const auto* t = file.find(name)) return {t->shape, finite_f32(path, *t)};
  const auto* shape_t = file.find(name + ".q8.shape");
  if (!shape_t) fail(path, fmt::format("tensor '{}' not found (neither fp32 nor INT8 '{}.q8.*')", name, name));
  auto need = [&](const std::string& suffix, safetensors::DType dtype) -> const safetensors::TensorView& {
    const auto& t = file.at(name + suffix);
    if (t.dtype != dtype)
      fail(path, fmt::format("tensor '{}{}' has dtype {}, expected {}", name, suffix, safetensors::dtype_name(t.dtype),
                             safetensors::dtype_name(dtype)));
    return t;
  };
  const auto& sh = need(".q8.shape", safetensors::DType::I64);
  if (sh.shape.size() != 1 || sh.numel() < 2 || sh.numel() > 4) fail(path, fmt::format("'{}.q8.shape' must hold 2 to 4 dimensions", name));
  Weight w;
  w.shape.resize(static_cast<std::size_t>(sh.numel()));
  std::memcpy(w.shape.data(), sh.data, w.shape.size() * 8);
  std::int64_t cols = 1;
  for (std::size_t i = 0; i < w.shape.size(); ++i) {
    if (w.shape[i] <= 0 || w.shape[i] > (1 << 24)) fail(path, fmt::format("'{}.q8.shape' has a bad dimension", name));
    if (i > 0) cols *= w.shape[i];
    if (cols > (1 << 24)) fail(path, fmt::format("'{}.q8.shape' is too large", name));
  }
  const std::int64_t rows = w.shape[0];
  if (rows * cols > (std::int64_t(1) << 26)) fail(path, fmt::format("'{}.q8.shape' is too large", name));
  const std::int64_t row_bytes = (cols + 7) / 8;
  const auto& bits = need(".q8.bitmask", safetensors::DType::U8);
  if (bits.shape != std::vector<std::int64_t>{rows, row_bytes})
    fail(path, fmt::format("'{}.q8.bitmask' must be [{}, {}]", name, rows, row_bytes));
  const auto& vals = need(".q8.values", safetensors::DType::I8);
  const auto& scale = need(".q8.scale", safetensors::DType::F32);
  if (scale.shape != std::vector<std::int64_t>{rows}) fail(path, fmt::format("'{}.q8.scale' must be [{}]", name, rows));
  const auto sc = finite_f32(path, scale);
  const std::uint8_t* b = bits.data;
  const auto* v = reinterpret_cast<const std::int8_t*>(vals.data);
  std::int64_t set = 0;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t k = 0; k < row_bytes; ++k) {
      const std::uint8_t byte = b[r * row_bytes + k];
      if (k == row_bytes - 1 && cols % 8 && (byte >> (cols % 8)))
        fail(path, fmt::format("'{}.q8.bitmask' sets bits past the last column", name));
      set += __builtin_popcount(byte);
    }
  if (vals.shape.size() != 1 || vals.numel() != set)
    fail(path, fmt::format("'{}.q8.values' holds {} values but the bitmask sets {}", name, vals.numel(), set));
  w.values.assign(static_cast<std::size_t>(rows * cols), 0.0f);
  std::int64_t at = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    if (!(sc[r] > 0)) fail(path, fmt::format("'{}.q8.scale' must be positive", name));
    for (std::int64_t c = 0; c < cols; ++c)
      if (b[r * row_bytes + c / 8] >> (c % 8) & 1) w.values[r * cols + c] = float(v[at++]) * sc[r];
  }
  return w;
}

}  // namespace

Model Model::load(const std::string& path, const LoadOptions& opt) {
  return from_file(safetensors::File::open(path), opt);
}

Model Model::from_file(const safetensors::File& file, const LoadOptions& opt) {
  const std::string& path = file.path();
  auto g = file.metadata().find("prunus.graph");
  if (g == file.metadata().end())
    fail(path, "no 'prunus.graph' in __metadata__: this model cannot run in the runtime (export it with Prunus)");
  Model m;
  if (auto a = file.metadata().find("prunus.arch"); a != file.metadata().end()) m.arch_ = a->second;
  try {
    const json graph = json::parse(g->second);
    if (!graph.is_object() || !graph.contains("input") || !graph.contains("ops") || !graph["ops"].is_array() ||
        !graph["input"].is_array())
      fail(path, "prunus.graph must be an object with 'input' and 'ops'");
    std::vector<std::int64_t> dims;
    for (const auto& d : graph.at("input")) {
      const auto v = json_int(path, d, "an input dimension");
      if (v <= 0 || v > (1 << 24)) fail(path, "prunus.graph: bad input dimension");
      dims.push_back(v);
    }
    if (dims.empty() || dims.size() > 3) fail(path, "prunus.graph: input must have 1 to 3 dimensions (C, H, W)");
    if (dims.size() == 1) dims = {dims[0], 1, 1};  // features
    if (dims.size() == 2) dims = {1, dims[0], dims[1]};  // one channel
    m.input_ = {dims[0], dims[1], dims[2]};
    if (m.input_.size() > (1 << 24)) fail(path, "prunus.graph: input too large");

    // Static activation scales stored with the model (weight name → scale).
    std::map<std::string, float> act_scales;
    // Validated whatever the options, so a bad value is reported before it is carried on.
    if (auto a = file.metadata().find("prunus.act_scales"); a != file.metadata().end()) {
      const json j = json::parse(a->second, nullptr, /*allow_exceptions=*/false);
      if (!j.is_object()) fail(path, "prunus.act_scales must be a JSON object (weight name → scale)");
      for (const auto& [name, v] : j.items()) {
        if (!v.is_number()) fail(path, fmt::format("prunus.act_scales: scale of '{}' is not a number", name));
        const float sc = v.get<float>();
        if (!(sc > 0) || !std::isfinite(sc))
          fail(path, fmt::format("prunus.act_scales: scale of '{}' is {} (must be finite and > 0)", name, sc));
        if (opt.int8 && opt.stored_act_scales) act_scales[name] = sc;
      }
    }
    std::map<std::string, int> names{{"input", 0}};
    std::int64_t activations = m.input_.size();
    if (graph["ops"].size() > 4096) fail(path, "prunus.graph: more than 4096 ops");
    std::vector<Shape> shapes{m.input_};
    int prev = 0;
    auto slot = [&](const json& name) {
      const auto n = name.get<std::string>();
      auto it = names.find(n);
      if (it == names.end()) fail(path, fmt::format("prunus.graph: op reads '{}', which no earlier op writes", n));
      return it->second;
    };
    // A conv or linear layer: weight rows × cols (cols in the order the im2col buffer uses).
    auto add_layer = [&](const std::string& wname, std::vector<float> w, std::int64_t rows, std::int64_t cols,
                         std::vector<float> bias, std::int64_t batch_hint) {
      // An INT8 file's layers that `prunus quantize --keep-fp32` kept stay fp32 under --int8 too.
      LoadOptions layer_opt = opt;
      if (opt.int8 && file.metadata().count("prunus.quant") && file.find(wname)) layer_opt.int8 = false;
      auto [lin, info] = build_layer(wname.substr(0, wname.rfind(".weight")), w, rows, cols, batch_hint, layer_opt);
      if (auto sc = act_scales.find(wname); sc != act_scales.end() && lin.is_int8()) {
        lin.set_act_scale(sc->second);
        ++m.static_act_layers_;
      }
      m.infos_.push_back(info);
      m.layers_.push_back(std::move(lin));
      m.biases_.push_back(std::move(bias));
      return m.layers_.size() - 1;
    };
    auto vector_of = [&](const std::string& name, std::int64_t n) {
      const auto& t = file.at(name);
      if (t.numel() != n) fail(path, fmt::format("tensor '{}' has {} values, expected {}", name, t.numel(), n));
      return finite_f32(path, t);
    };

    for (const auto& o : graph["ops"]) {
      const std::string kind = o.at("op").get<std::string>();
      Op op{};
      if (kind == "add") {
        if (!o.contains("inputs") || !o["inputs"].is_array() || o["inputs"].size() != 2)
          fail(path, "prunus.graph: add needs \"inputs\": [a, b]");
        op.in = {slot(o["inputs"][0]), slot(o["inputs"][1])};
      } else if (kind == "concat") {
        if (!o.contains("inputs") || !o["inputs"].is_array() || o["inputs"].size() < 2 || o["inputs"].size() > 64)
          fail(path, "prunus.graph: concat needs \"inputs\": [a, b, ...] (2 to 64 values)");
        for (const auto& name : o["inputs"]) op.in.push_back(slot(name));
      } else {
        op.in = {o.contains("input") ? slot(o["input"]) : prev};
      }
      op.in_shape = shapes[op.in[0]];
      Shape out = op.in_shape;
      const Shape in = op.in_shape;
      if (kind == "normalize") {
        op.kind = Op::Normalize;
        op.mean = json_float(path, o.at("mean"), "normalize mean");
        const float sd = json_float(path, o.at("std"), "normalize std");
        if (!(sd > 0) || !std::isfinite(op.mean)) fail(path, "prunus.graph: normalize needs a finite mean and std > 0");
        op.inv_std = 1.0f / sd;
      } else if (kind == "flatten") {
        op.kind = Op::Flatten;
        out = {in.size(), 1, 1};
      } else if (kind == "relu") {
        op.kind = Op::Relu;
      } else if (kind == "add") {
        op.kind = Op::Add;
        const Shape b = shapes[op.in[1]];
        if (b.c != in.c || b.h != in.h || b.w != in.w)
          fail(path, fmt::format("prunus.graph: add of {}x{}x{} and {}x{}x{}", in.c, in.h, in.w, b.c, b.h, b.w));
      } else if (kind == "concat") {  // along channels, as torch.cat(dim=1)
        op.kind = Op::Concat;
        out.c = 0;
        for (int s : op.in) {
          const Shape b = shapes[static_cast<std::size_t>(s)];
          if (b.h != in.h || b.w != in.w)
            fail(path, fmt::format("prunus.graph: concat of {}x{}x{} and {}x{}x{} (heights and widths must match)", in.c,
                                   in.h, in.w, b.c, b.h, b.w));
          out.c += b.c;
          op.parts.push_back(b.c);
        }
      } else if (kind == "global_avg_pool") {
        op.kind = Op::GlobalAvgPool;
        out = {in.c, 1, 1};
      } else if (kind == "maxpool2d") {
        op.kind = Op::MaxPool;
        op.kernel = positive(path, o, "kernel", 2, 1);
        op.stride = positive(path, o, "stride", op.kernel, 1);
        if (in.h < op.kernel || in.w < op.kernel) fail(path, "prunus.graph: maxpool2d kernel larger than its input");
        out = {in.c, (in.h - op.kernel) / op.stride + 1, (in.w - op.kernel) / op.stride + 1};
      } else if (kind == "conv2d") {
        op.kind = Op::Conv;
        const auto wname = o.at("weight").get<std::string>();
        const auto wv = read_weight(file, wname);
        if (wv.shape.size() != 4 || wv.shape[2] != wv.shape[3])
          fail(path, fmt::format("conv2d weight '{}' must be [out, in, k, k]", wname));
        const std::int64_t oc = wv.shape[0], ic = wv.shape[1], k = wv.shape[2];
        if (ic != in.c)
          fail(path, fmt::format("conv2d weight '{}' expects {} input channels but the graph gives {}", wname, ic, in.c));
        op.kernel = k;
        op.stride = positive(path, o, "stride", 1, 1);
        op.padding = positive(path, o, "padding", 0, 0);
        const std::int64_t oh = (in.h + 2 * op.padding - k) / op.stride + 1, ow = (in.w + 2 * op.padding - k) / op.stride + 1;
        if (in.h + 2 * op.padding < k || in.w + 2 * op.padding < k || oh <= 0 || ow <= 0)
          fail(path, fmt::format("conv2d '{}': kernel {} does not fit its {}x{} input", wname, k, in.h, in.w));
        out = {oc, oh, ow};
        // Checked before the layer is built: its format measurement runs at oh·ow positions.
        if (out.size() > (std::int64_t(1) << 24) || oh * ow * k * k * ic > (std::int64_t(1) << 26))
          fail(path, fmt::format("prunus.graph: conv2d '{}' makes a {}x{}x{} value (im2col {} floats a sample): too "
                                 "large", wname, oc, oh, ow, oh * ow * k * k * ic));
        const auto& w = wv.values;
        std::vector<float> bias(static_cast<std::size_t>(oc), 0.0f);
        if (o.contains("bias")) bias = vector_of(o.at("bias").get<std::string>(), oc);
        std::vector<float> scale(static_cast<std::size_t>(oc), 1.0f);
        if (o.contains("bn")) {
          // Eval-mode BatchNorm folded in: w·γ/√(var+ε), (b − mean)·γ/√(var+ε) + β.
          const auto& bn = o.at("bn");
          const auto gamma = vector_of(bn.at("weight").get<std::string>(), oc);
          const auto beta = vector_of(bn.at("bias").get<std::string>(), oc);
          const auto mean = vector_of(bn.at("running_mean").get<std::string>(), oc);
          const auto var = vector_of(bn.at("running_var").get<std::string>(), oc);
          const double eps = bn.value("eps", 1e-5);
          for (std::int64_t c = 0; c < oc; ++c) {
            if (!(var[c] + eps > 0)) fail(path, fmt::format("conv2d '{}': BatchNorm variance + eps is not positive", wname));
            const double sc = double(gamma[c]) / std::sqrt(double(var[c]) + eps);
            scale[c] = static_cast<float>(sc);
            bias[c] = static_cast<float>((double(bias[c]) - mean[c]) * sc + beta[c]);
          }
        }
        // [out, in, k, k] → [out, k, k, in]: im2col then copies runs of channels.
        std::vector<float> wt(w.size());
        for (std::int64_t a = 0; a < oc; ++a)
          for (std::int64_t c = 0; c < ic; ++c)
            for (std::int64_t y = 0; y < k; ++y)
              for (std::int64_t x = 0; x < k; ++x)
                wt[((a * k + y) * k + x) * ic + c] = w[((a * ic + c) * k + y) * k + x] * scale[a];
        // The direct kernel's packing too; choose_conv_paths keeps it if it measures faster.
        auto direct = kernels::pack_direct_conv(wt.data(), bias.data(), oc, ic, k, op.stride, op.padding, in.h, in.w);
        op.layer = add_layer(wname, std::move(wt), oc, k * k * ic, std::move(bias), opt.batch_hint * oh * ow);
        m.direct_.resize(m.layers_.size());
        m.direct_[op.layer] = std::move(direct);
      } else if (kind == "linear") {
        op.kind = Op::Linear;
        const auto wname = o.at("weight").get<std::string>();
        auto wv = read_weight(file, wname);
        if (wv.shape.size() != 2) fail(path, fmt::format("linear weight '{}' must be 2-D", wname));
        const std::int64_t rows = wv.shape[0], cols = wv.shape[1];
        if (in.h != 1 || in.w != 1)
          fail(path, fmt::format("linear '{}' reads a {}x{}x{} value: flatten or pool it first", wname, in.c, in.h, in.w));
        if (cols != in.c)
          fail(path, fmt::format("linear weight '{}' expects {} inputs but the graph gives {}", wname, cols, in.c));
        auto w = std::move(wv.values);
        std::vector<float> bias(static_cast<std::size_t>(rows), 0.0f);
        if (o.contains("bias")) bias = vector_of(o.at("bias").get<std::string>(), rows);
        op.layer = add_layer(wname, std::move(w), rows, cols, std::move(bias), opt.batch_hint);
        out = {rows, 1, 1};
      } else {
        fail(path, fmt::format("prunus.graph: unknown op '{}'", kind));
      }
      // A graph is a few lines of JSON: bound what it can make the runtime allocate.
      if (out.size() > (std::int64_t(1) << 24))
        fail(path, fmt::format("prunus.graph: op '{}' makes a {}x{}x{} value (over 16M values a sample)", kind, out.c,
                               out.h, out.w));
      activations += out.size();
      if (activations > (std::int64_t(1) << 26))
        fail(path, "prunus.graph: the ops' values exceed 64M floats a sample in all");
      op.out_shape = out;
      op.out = static_cast<int>(shapes.size());
      shapes.push_back(out);
      if (o.contains("output")) names[o.at("output").get<std::string>()] = op.out;
      prev = op.out;
      m.ops_.push_back(op);
    }
    m.slots_ = static_cast<int>(shapes.size());
    const Shape last = shapes.back();
    if (last.h != 1 || last.w != 1) fail(path, "prunus.graph: the last op must give a vector (flatten or pool)");
    m.output_size_ = last.c;
  } catch (const json::exception& e) {
    fail(path, std::string("prunus.graph is malformed: ") + e.what());
  }
  if (m.layers_.empty()) fail(path, "prunus.graph has no layers");
  m.fuse_relus();
  m.opt_ = opt.kernel;
  m.direct_.resize(m.layers_.size());
  m.choose_conv_paths(opt);
  return m;
}

// A ReLU whose input only it reads goes into the max pool that alone reads its output
// (max(relu x) = relu(max x): the pool applies it to its smaller output), or else into the op
// that produced its input: a linear's bias loop or an add's sum apply it, a conv applies it in
// place after its kernel (and after an observer has seen the values, which observers get
// before any activation). The ReLU op is then gone.
void Model::fuse_relus() {
  auto readers = [&](int slot) {
    int n = 0;
    for (const auto& op : ops_)
      for (int s : op.in) n += s == slot;
    return n;
  };
  for (std::size_t i = 0; i < ops_.size(); ++i) {
    const Op r = ops_[i];
    if (r.kind != Op::Relu || readers(r.in[0]) != 1) continue;
    auto producer = std::find_if(ops_.begin(), ops_.end(), [&](const Op& o) { return o.out == r.in[0]; });
    auto pool = std::find_if(ops_.begin(), ops_.end(), [&](const Op& o) {
      return o.kind == Op::MaxPool && !o.relu && o.in[0] == r.out;
    });
    if (pool != ops_.end() && readers(r.out) == 1 && r.out != slots_ - 1) {
      pool->in[0] = r.in[0];
      pool->relu = true;
    } else if (producer != ops_.end() && !producer->relu &&
               (producer->kind == Op::Linear || producer->kind == Op::Add || producer->kind == Op::Conv)) {
      producer->out = r.out;  // writes the ReLU's value itself; its own slot is left unused
      producer->relu = true;
    } else {
      continue;
    }
    ops_.erase(ops_.begin() + static_cast<std::ptrdiff_t>(i));
    --i;
  }
}

namespace {

// One output row of a max pool over the row of vertical maxima `rows` ([in W × C]): C known
// at compile time for the narrow layers (LeNet's 3..16 channels), where a loop over an unknown
// handful of channels per pixel cost 10× the memory traffic.
template <int C>
void max_pool_row(const float* rows, float* o, std::int64_t ow, std::int64_t k, std::int64_t s, std::int64_t c_rt) {
  const std::int64_t ch = C > 0 ? C : c_rt;
  for (std::int64_t x0 = 0; x0 < ow; ++x0) {
    const float* p = rows + x0 * s * ch;
    float* dst = o + x0 * ch;
    for (std::int64_t c = 0; c < ch; ++c) dst[c] = p[c];
    for (std::int64_t kx = 1; kx < k; ++kx)
      for (std::int64_t c = 0; c < ch; ++c) dst[c] = std::max(dst[c], p[kx * ch + c]);
  }
}

}  // namespace

void Model::max_pool(const Op& op, const float* a, std::int64_t batch, float* out) const {
  const Shape is = op.in_shape, os = op.out_shape;
  const std::int64_t row = is.w * is.c;
  std::vector<float> vmax(static_cast<std::size_t>(row));
  using RowFn = void (*)(const float*, float*, std::int64_t, std::int64_t, std::int64_t, std::int64_t);
  static constexpr RowFn kByChannels[] = {max_pool_row<0>,  max_pool_row<1>,  max_pool_row<2>,  max_pool_row<3>,
                                          max_pool_row<4>,  max_pool_row<5>,  max_pool_row<6>,  max_pool_row<7>,
                                          max_pool_row<8>,  max_pool_row<9>,  max_pool_row<10>, max_pool_row<11>,
                                          max_pool_row<12>, max_pool_row<13>, max_pool_row<14>, max_pool_row<15>,
                                          max_pool_row<16>};
  const RowFn pool_row = is.c <= 16 ? kByChannels[is.c] : max_pool_row<0>;
  for (std::int64_t n = 0; n < batch; ++n)
    for (std::int64_t y = 0; y < os.h; ++y) {
      // The maximum down the kernel's rows first: contiguous, so it vectorizes.
      const float* first = a + (n * is.h + y * op.stride) * row;
      std::copy(first, first + row, vmax.begin());
      for (std::int64_t ky = 1; ky < op.kernel; ++ky) {
        const float* r = first + ky * row;
        for (std::int64_t i = 0; i < row; ++i) vmax[i] = std::max(vmax[i], r[i]);
      }
      pool_row(vmax.data(), out + (n * os.h + y) * os.w * os.c, os.w, op.kernel, op.stride, is.c);
    }
}

void Model::conv_im2col(const Op& op, const float* a, std::int64_t batch, float* out, std::vector<float>& cols,
                        const InputHook& inputs) const {
  const Shape is = op.in_shape, os = op.out_shape;
  const auto& lin = layers_[op.layer];
  const std::int64_t k = op.kernel, positions = batch * os.h * os.w, width = k * k * is.c;
  cols.assign(static_cast<std::size_t>(positions * width), 0.0f);
  for (std::int64_t n = 0; n < batch; ++n)
    for (std::int64_t y = 0; y < os.h; ++y)
      for (std::int64_t x0 = 0; x0 < os.w; ++x0) {
        float* row = &cols[((n * os.h + y) * os.w + x0) * width];
        // One contiguous run per kernel row: in NHWC the taps kx..kx+m of a row and their
        // channels are adjacent both in the input and in the im2col row.
        const std::int64_t ix0 = x0 * op.stride - op.padding;
        const std::int64_t kx0 = std::max<std::int64_t>(0, -ix0), kx1 = std::min<std::int64_t>(k, is.w - ix0);
        if (kx0 >= kx1) continue;
        const std::int64_t run = (kx1 - kx0) * is.c;
        for (std::int64_t ky = 0; ky < k; ++ky) {
          const std::int64_t iy = y * op.stride - op.padding + ky;
          if (iy < 0 || iy >= is.h) continue;
          const float* src = &a[((n * is.h + iy) * is.w + ix0 + kx0) * is.c];
          float* dst = row + (ky * k + kx0) * is.c;
          for (std::int64_t i = 0; i < run; ++i) dst[i] = src[i];
        }
      }
  if (inputs) inputs(op.layer, cols.data(), positions * width);
  lin.forward(cols.data(), positions, out);
  const auto& bias = biases_[op.layer];
  for (std::int64_t p = 0; p < positions; ++p)
    for (std::int64_t c = 0; c < os.c; ++c) out[p * os.c + c] += bias[c];
}

void Model::choose_conv_paths(const LoadOptions& opt) {
  // The direct kernel against im2col + the layer's chosen format, each timed as a whole op
  // on the batch hint (best of a few calls after a warm-up). INT8 layers keep im2col: their
  // kernels quantize the im2col rows.
  auto best_of = [](const std::function<void()>& call) {
    call();
    double best = INFINITY;
    for (int i = 0; i < 5; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      call();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  };
  const std::int64_t batch = std::max<std::int64_t>(1, opt.batch_hint);
  for (const auto& op : ops_) {
    if (op.kind != Op::Conv) continue;
    const auto& lin = layers_[op.layer];
    auto& direct = direct_[op.layer];
    if (lin.is_int8() || direct.rows == 0) {
      direct = {};
      continue;
    }
    const Shape is = op.in_shape, os = op.out_shape;
    std::vector<float> x(static_cast<std::size_t>(batch * is.size()), 1.0f), y(static_cast<std::size_t>(batch * os.size()));
    std::vector<float> cols;
    using Path = LoadOptions::ConvPath;
    const double t_im2col = best_of([&] { conv_im2col(op, x.data(), batch, y.data(), cols, nullptr); });
    // Every layout of the direct kernel that applies (a forced path times only its own); the
    // fastest is kept.
    using Layout = kernels::DirectConv::Layout;
    double t_direct = INFINITY;
    Layout best = Layout::Channels;
    for (Layout layout : {Layout::Channels, Layout::Planar, Layout::Flat}) {
      const bool applies = layout == Layout::Channels || (layout == Layout::Planar && direct.planar_applies()) ||
                           (layout == Layout::Flat && direct.flat_applies());
      const bool allowed = opt.conv == Path::Measured || opt.conv == Path::Im2col ||
                           (opt.conv == Path::Direct && layout == Layout::Channels) ||
                           (opt.conv == Path::Planar && layout == Layout::Planar) ||
                           (opt.conv == Path::Flat && layout == Layout::Flat);
      if (!applies || !allowed) continue;
      direct.layout = layout;
      const double t = best_of([&] { kernels::conv_direct(direct, x.data(), batch, y.data(), opt_); });
      if (t < t_direct) t_direct = t, best = layout;
    }
    if (t_direct == INFINITY) {  // the forced layout does not apply to this layer: channel-vector
      direct.layout = Layout::Channels;
      t_direct = best_of([&] { kernels::conv_direct(direct, x.data(), batch, y.data(), opt_); });
    }
    direct.layout = best;
    auto& info = infos_[op.layer];
    // What im2col would cost with the dense matmul instead of the chosen format.
    const double t_im2col_dense = t_im2col - lin.measured_seconds() + lin.measured_dense_seconds();
    const bool use_direct = opt.conv == Path::Measured ? t_direct < t_im2col : opt.conv != Path::Im2col;
    info.dense_seconds = std::min(t_direct, t_im2col_dense);
    info.seconds = use_direct ? t_direct : t_im2col;
    if (use_direct) {
      info.format = best == Layout::Planar ? "direct-planar" : best == Layout::Flat ? "direct-flat" : "direct";
      info.bytes = info.dense_bytes;
    } else {
      direct = {};
    }
  }
}

std::vector<float> Model::forward(const float* x, std::int64_t batch) const { return forward(x, batch, nullptr); }

std::vector<float> Model::forward(const float* x, std::int64_t batch, const Observer& observe) const {
  return forward_impl(x, batch, observe, nullptr);
}

std::vector<float> Model::calibrate_int8(const float* x, std::int64_t batch, const std::string& method) {
  if (method != "minmax" && method != "percentile" && method != "mse")
    fail("--calibrate " + method, "unknown (known: minmax, percentile, mse)");
  // |x| of every value each layer reads (a strided sample of at most 1M per layer).
  std::vector<std::vector<float>> seen(layers_.size());
  for (auto& l : layers_) l.set_act_scale(0);  // dynamic while observing
  forward_impl(x, batch, nullptr, [&](std::size_t layer, const float* v, std::int64_t n) {
    const std::int64_t step = std::max<std::int64_t>(1, n / (1 << 20));
    for (std::int64_t i = 0; i < n; i += step) seen[layer].push_back(std::fabs(v[i]));
  });
  std::vector<float> scales(layers_.size(), 0.0f);
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    auto& a = seen[l];
    if (a.empty() || !layers_[l].is_int8()) continue;
    const float amax = *std::max_element(a.begin(), a.end());
    float clip = amax;
    if (method == "percentile") {
      const auto k = static_cast<std::size_t>(0.9999 * double(a.size() - 1));
      std::nth_element(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(k), a.end());
      clip = a[k];
    } else if (method == "mse") {
      double best = INFINITY;
      for (int k = 30; k <= 100; ++k) {
        const float c = amax * float(k) / 100.0f, s = c / 127.0f;
        if (!(s > 0)) continue;
        double err = 0;
        for (float v : a) {
          const float q = std::min(std::nearbyint(v / s), 127.0f) * s;
          err += double(v - q) * double(v - q);
        }
        if (err < best) best = err, clip = c;
      }
    }
    scales[l] = clip > 0 ? clip / 127.0f : 1.0f;
    layers_[l].set_act_scale(scales[l]);
  }
  return scales;
}

std::vector<float> Model::forward_impl(const float* x, std::int64_t batch, const Observer& observe,
                                       const InputHook& inputs) const {
  // Every value is [batch × H × W × C]. The buffers are the calling thread's and outlive the
  // call: at a steady batch size no call allocates, zero-fills or page-faults its values (at
  // LeNet-5's batch 64 that was 7% of the forward). A forward started from inside another (an
  // observer that runs a model) gets buffers of its own.
  // Values start on cache lines: the batch > 1 kernels write Y in 64-byte runs, and into a
  // malloc'd buffer (16 bytes past a line) every run split across two lines.
  struct Workspace {
    std::vector<kernels::AlignedVector<float>> values;
    std::vector<float> cols;
    bool busy = false;
  };
  thread_local Workspace shared;
  Workspace own;
  Workspace& ws = shared.busy ? own : shared;
  ws.busy = true;
  struct Release {
    Workspace& w;
    ~Release() { w.busy = false; }
  } release{ws};
  auto& v = ws.values;
  if (v.size() < static_cast<std::size_t>(slots_)) v.resize(static_cast<std::size_t>(slots_));
  {
    const Shape s = input_;
    auto& in = v[0];
    in.resize(static_cast<std::size_t>(batch * s.size()));
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t c = 0; c < s.c; ++c)
        for (std::int64_t i = 0; i < s.h * s.w; ++i) in[(b * s.h * s.w + i) * s.c + c] = x[(b * s.c + c) * s.h * s.w + i];
  }
  std::vector<float>& cols = ws.cols;
  for (const auto& op : ops_) {
    const auto& a = v[op.in[0]];
    auto& out = v[op.out];
    const Shape is = op.in_shape, os = op.out_shape;
    out.resize(static_cast<std::size_t>(batch * os.size()));
    switch (op.kind) {
      case Op::Normalize:
        for (std::size_t i = 0; i < a.size(); ++i) out[i] = (a[i] - op.mean) * op.inv_std;
        break;
      case Op::Relu:
        for (std::size_t i = 0; i < a.size(); ++i) out[i] = a[i] > 0.0f ? a[i] : 0.0f;
        break;
      case Op::Add: {
        const auto& b = v[op.in[1]];
        if (op.relu)
          for (std::size_t i = 0; i < a.size(); ++i) out[i] = std::max(a[i] + b[i], 0.0f);
        else
          for (std::size_t i = 0; i < a.size(); ++i) out[i] = a[i] + b[i];
        break;
      }
      case Op::Concat: {  // NHWC: each position's channels are the inputs' channels in order
        const std::int64_t positions = batch * os.h * os.w;
        std::int64_t at = 0;
        for (std::size_t i = 0; i < op.in.size(); ++i) {
          const float* src = v[static_cast<std::size_t>(op.in[i])].data();
          const std::int64_t c = op.parts[i];
          for (std::int64_t p = 0; p < positions; ++p) std::copy_n(src + p * c, c, out.data() + p * os.c + at);
          at += c;
        }
        break;
      }
      case Op::Flatten:  // NHWC → torch's C, H, W order
        for (std::int64_t n = 0; n < batch; ++n)
          for (std::int64_t c = 0; c < is.c; ++c)
            for (std::int64_t i = 0; i < is.h * is.w; ++i)
              out[n * os.c + c * is.h * is.w + i] = a[(n * is.h * is.w + i) * is.c + c];
        break;
      case Op::GlobalAvgPool:
        for (std::int64_t n = 0; n < batch; ++n)
          for (std::int64_t c = 0; c < is.c; ++c) {
            double s = 0;
            for (std::int64_t i = 0; i < is.h * is.w; ++i) s += a[(n * is.h * is.w + i) * is.c + c];
            out[n * is.c + c] = static_cast<float>(s / double(is.h * is.w));
          }
        break;
      case Op::MaxPool:
        max_pool(op, a.data(), batch, out.data());
        if (op.relu)
          for (auto& e : out) e = std::max(e, 0.0f);
        break;
      case Op::Conv: {
        const auto& direct = direct_[op.layer];
        if (direct.rows > 0 && !inputs)
          kernels::conv_direct(direct, a.data(), batch, out.data(), opt_);
        else
          conv_im2col(op, a.data(), batch, out.data(), cols, inputs);
        if (observe) observe(infos_[op.layer].name, out.data(), batch * os.h * os.w, os.c);
        if (op.relu)
          for (auto& e : out) e = std::max(e, 0.0f);
        break;
      }
      case Op::Linear: {
        const auto& lin = layers_[op.layer];
        if (inputs) inputs(op.layer, a.data(), batch * op.in_shape.size());
        lin.forward(a.data(), batch, out.data());
        const auto& bias = biases_[op.layer];
        const bool relu_here = op.relu && !observe;  // an observer sees the values before the ReLU
        for (std::int64_t b = 0; b < batch; ++b)
          for (std::int64_t r = 0; r < os.c; ++r) {
            float& e = out[b * os.c + r];
            e = relu_here ? std::max(e + bias[r], 0.0f) : e + bias[r];
          }
        if (observe) observe(infos_[op.layer].name, out.data(), batch, os.c);
        if (op.relu && !relu_here)
          for (auto& e : out) e = std::max(e, 0.0f);
        break;
      }
    }
  }
  const auto& last = v[static_cast<std::size_t>(slots_ - 1)];
  return std::vector<float>(last.begin(), last.begin() + batch * output_size_);
}

}  // namespace prunus::runtime
