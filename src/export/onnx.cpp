// ONNX export from the runtime graph: each graph op becomes the ONNX node(s) with the same
// meaning (the runtime computes in NHWC internally, but the graph's semantics — and its
// flatten order, C×H×W — are PyTorch's NCHW ones, which are ONNX's too).
#include "prunus/export.h"

#include <cstring>
#include <map>
#include <set>
#include <vector>

#include <onnx/onnx_pb.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "prunus/io.h"
#include "prunus/runtime.h"
#include "prunus/safetensors.h"

namespace prunus::exporter {
using nlohmann::json;

namespace {

struct Builder {
  onnx::GraphProto* g;
  const safetensors::File& f;
  std::set<std::string> done;
  int counter = 0;

  std::string fresh(const std::string& stem) { return fmt::format("{}_{}", stem, counter++); }
  // The shape of a weight, fp32 or INT8 (prunus quantize: name.q8.shape).
  std::vector<std::int64_t> shape(const std::string& name) {
    if (const auto* t = f.find(name)) return t->shape;
    const auto& sh = f.at(name + ".q8.shape");
    std::vector<std::int64_t> out(static_cast<std::size_t>(sh.numel()));
    std::memcpy(out.data(), sh.data, out.size() * 8);
    return out;
  }
  // An INT8 weight as QDQ: an int8 initializer (zeros where the bitmask has none), per-output-
  // channel scales and zero points, and DequantizeLinear(axis 0) making the float tensor `name`.
  void dequantized(const std::string& name) {
    const auto dims = shape(name);
    const std::int64_t rows = dims[0];
    std::int64_t cols = 1;
    for (std::size_t i = 1; i < dims.size(); ++i) cols *= dims[i];
    const std::int64_t row_bytes = (cols + 7) / 8;
    const auto* bits = f.at(name + ".q8.bitmask").data;
    const auto* vals = reinterpret_cast<const std::int8_t*>(f.at(name + ".q8.values").data);
    std::string codes(static_cast<std::size_t>(rows * cols), '\0');
    std::int64_t k = 0;
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t c = 0; c < cols; ++c)
        if (bits[r * row_bytes + c / 8] >> (c % 8) & 1) codes[static_cast<std::size_t>(r * cols + c)] = static_cast<char>(vals[k++]);
    auto* q = g->add_initializer();
    q->set_name(name + ".int8");
    q->set_data_type(onnx::TensorProto::INT8);
    for (auto d : dims) q->add_dims(d);
    q->set_raw_data(codes);
    const auto scale = f.at(name + ".q8.scale").to_f32();
    auto* sc = g->add_initializer();
    sc->set_name(name + ".scale");
    sc->set_data_type(onnx::TensorProto::FLOAT);
    sc->add_dims(rows);
    sc->set_raw_data(std::string(reinterpret_cast<const char*>(scale.data()), scale.size() * sizeof(float)));
    auto* zp = g->add_initializer();
    zp->set_name(name + ".zero_point");
    zp->set_data_type(onnx::TensorProto::INT8);
    zp->add_dims(rows);
    zp->set_raw_data(std::string(static_cast<std::size_t>(rows), '\0'));
    integer(node("DequantizeLinear", {name + ".int8", name + ".scale", name + ".zero_point"}, name), "axis", 0);
  }
  // A weight from the model file as a float initializer (once per name); INT8 weights come
  // through DequantizeLinear.
  std::string tensor(const std::string& name) {
    if (!f.find(name) && f.find(name + ".q8.values")) {
      if (done.insert(name).second) dequantized(name);
      return name;
    }
    if (done.insert(name).second) {
      const auto& v = f.at(name);
      const auto data = v.to_f32();
      auto* t = g->add_initializer();
      t->set_name(name);
      t->set_data_type(onnx::TensorProto::FLOAT);
      for (auto d : v.shape) t->add_dims(d);
      t->set_raw_data(std::string(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(float)));
    }
    return name;
  }
  // Static INT8 activation scales stored with the model (weight name → scale); see quantized_input.
  std::map<std::string, float> act_scales;
  // The input of an INT8 layer whose file stores a static activation scale, as QDQ
  // (QuantizeLinear → DequantizeLinear, int8, zero point 0): the arithmetic of the runtime's
  // --int8 with stored scales. Other layers read x unchanged.
  std::string quantized_input(const std::string& x, const std::string& weight) {
    const auto sc = act_scales.find(weight);
    if (sc == act_scales.end() || f.find(weight) || !f.find(weight + ".q8.values")) return x;
    const std::string s = scalar(sc->second), zp = fresh("act_zero_point"), q = fresh("act_int8"), dq = fresh("act_qdq");
    auto* z = g->add_initializer();
    z->set_name(zp);
    z->set_data_type(onnx::TensorProto::INT8);
    z->set_raw_data(std::string(1, '\0'));
    node("QuantizeLinear", {x, s, zp}, q);
    node("DequantizeLinear", {q, s, zp}, dq);
    return dq;
  }
  std::string scalar(float value) {
    const std::string name = fresh("const");
    auto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    t->set_raw_data(std::string(reinterpret_cast<const char*>(&value), sizeof value));
    return name;
  }
  onnx::NodeProto* node(const std::string& op, std::vector<std::string> in, const std::string& out) {
    auto* n = g->add_node();
    n->set_op_type(op);
    n->set_name(out);
    for (const auto& i : in) n->add_input(i);
    n->add_output(out);
    return n;
  }
  static void ints(onnx::NodeProto* n, const char* name, std::vector<std::int64_t> v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (auto x : v) a->add_ints(x);
  }
  static void integer(onnx::NodeProto* n, const char* name, std::int64_t v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void real(onnx::NodeProto* n, const char* name, float v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }
};

void value_info(onnx::ValueInfoProto* v, const std::string& name, std::vector<std::int64_t> dims) {
  v->set_name(name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  auto* shape = tt->mutable_shape();
  shape->add_dim()->set_dim_param("N");
  for (auto d : dims) shape->add_dim()->set_dim_value(d);
}

}  // namespace

void write_onnx(const std::string& model_path, const std::string& out_path) {
  const auto f = safetensors::File::open(model_path);
  auto it = f.metadata().find("prunus.graph");
  if (it == f.metadata().end()) fail(model_path, "no prunus.graph: ONNX export needs a model the runtime can run");
  // The runtime's (fuzzed) loader validates the graph against the tensors first.
  runtime::LoadOptions lo;
  lo.dense = true;
  (void)runtime::Model::from_file(f, lo);
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name("prunus");
  m.set_producer_version(version());
  auto* opset = m.add_opset_import();
  opset->set_domain("");
  opset->set_version(13);
  auto* g = m.mutable_graph();
  g->set_name(f.metadata().count("prunus.arch") ? f.metadata().at("prunus.arch") : "prunus");
  Builder b{g, f};
  try {
    if (auto a = f.metadata().find("prunus.act_scales"); a != f.metadata().end()) {  // validated by the load above
      const json scales = json::parse(a->second);
      for (const auto& [name, v] : scales.items()) b.act_scales[name] = v.get<float>();
    }
    const json graph = json::parse(it->second);
    const auto& in = graph.at("input");
    std::vector<std::int64_t> in_dims;
    for (const auto& d : in) in_dims.push_back(d.get<std::int64_t>());
    value_info(g->add_input(), "pixels", in_dims);
    // Each value: its ONNX name and rank (4: N,C,H,W; 2: N,features).
    struct Val {
      std::string name;
      int rank;
    };
    std::map<std::string, Val> named{{"input", {"pixels", 4}}};
    Val prev{"pixels", 4};
    auto lookup = [&](const json& name) {
      auto n = named.find(name.get<std::string>());
      if (n == named.end()) fail(model_path, fmt::format("prunus.graph: unknown value '{}'", name.get<std::string>()));
      return n->second;
    };
    for (const auto& o : graph.at("ops")) {
      const std::string kind = o.at("op").get<std::string>();
      const Val x = o.contains("input") ? lookup(o.at("input")) : prev;
      Val y{b.fresh(kind), x.rank};
      if (kind == "normalize") {
        const std::string centred = b.fresh("centred");
        b.node("Sub", {x.name, b.scalar(o.at("mean").get<float>())}, centred);
        b.node("Div", {centred, b.scalar(o.at("std").get<float>())}, y.name);
      } else if (kind == "relu") {
        b.node("Relu", {x.name}, y.name);
      } else if (kind == "flatten") {
        Builder::integer(b.node("Flatten", {x.name}, y.name), "axis", 1);
        y.rank = 2;
      } else if (kind == "add") {
        b.node("Add", {lookup(o.at("inputs")[0]).name, lookup(o.at("inputs")[1]).name}, y.name);
        y.rank = lookup(o.at("inputs")[0]).rank;
      } else if (kind == "concat") {
        std::vector<std::string> ins;
        for (const auto& n : o.at("inputs")) ins.push_back(lookup(n).name);
        Builder::integer(b.node("Concat", ins, y.name), "axis", 1);
        y.rank = lookup(o.at("inputs")[0]).rank;
      } else if (kind == "global_avg_pool") {
        b.node("GlobalAveragePool", {x.name}, y.name);
      } else if (kind == "maxpool2d") {
        const auto k = o.value("kernel", std::int64_t(2)), s = o.value("stride", k);
        auto* n = b.node("MaxPool", {x.name}, y.name);
        Builder::ints(n, "kernel_shape", {k, k});
        Builder::ints(n, "strides", {s, s});
      } else if (kind == "conv2d") {
        const std::string w = o.at("weight").get<std::string>();
        const auto ws = b.shape(w);
        if (ws.size() != 4) fail(model_path, fmt::format("conv weight {} is not 4-D", w));
        std::vector<std::string> ins{b.quantized_input(x.name, w), b.tensor(w)};
        if (o.contains("bias")) ins.push_back(b.tensor(o.at("bias").get<std::string>()));
        const bool bn = o.contains("bn");
        const std::string conv_out = bn ? b.fresh("conv") : y.name;
        auto* n = b.node("Conv", ins, conv_out);
        const auto s = o.value("stride", std::int64_t(1)), p = o.value("padding", std::int64_t(0));
        Builder::ints(n, "kernel_shape", {ws[2], ws[3]});
        Builder::ints(n, "strides", {s, s});
        Builder::ints(n, "pads", {p, p, p, p});
        if (bn) {
          const auto& q = o.at("bn");
          auto* bnn = b.node("BatchNormalization",
                             {conv_out, b.tensor(q.at("weight")), b.tensor(q.at("bias")), b.tensor(q.at("running_mean")),
                              b.tensor(q.at("running_var"))},
                             y.name);
          Builder::real(bnn, "epsilon", q.value("eps", 1e-5f));
        }
      } else if (kind == "linear") {
        std::string a = x.name;
        if (x.rank != 2) {  // after a global pool: [N, C, 1, 1] → [N, C]
          a = b.fresh("flat");
          Builder::integer(b.node("Flatten", {x.name}, a), "axis", 1);
        }
        const std::string w = o.at("weight").get<std::string>();
        std::vector<std::string> ins{b.quantized_input(a, w), b.tensor(w)};
        if (o.contains("bias")) ins.push_back(b.tensor(o.at("bias").get<std::string>()));
        Builder::integer(b.node("Gemm", ins, y.name), "transB", 1);
        y.rank = 2;
      } else {
        fail(model_path, fmt::format("ONNX export does not know the graph op '{}'", kind));
      }
      if (o.contains("output")) named[o.at("output").get<std::string>()] = y;
      prev = y;
    }
    if (prev.rank != 2) fail(model_path, "the graph does not end in a [N, K] value");
    b.node("Identity", {prev.name}, "logits");
    std::int64_t classes = 0;
    for (auto i = graph.at("ops").size(); i-- > 0;)
      if (graph.at("ops")[i].at("op") == "linear") {
        classes = b.shape(graph.at("ops")[i].at("weight").get<std::string>()).at(0);
        break;
      }
    value_info(g->add_output(), "logits", {classes});
  } catch (const json::exception& e) {
    fail(model_path, std::string("prunus.graph: ") + e.what());
  }
  std::string bytes;
  if (!m.SerializeToString(&bytes)) fail(out_path, "could not serialise the ONNX model");
  atomic_write(out_path, bytes);
}

}  // namespace prunus::exporter
