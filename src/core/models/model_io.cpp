#include <set>

#include <fmt/format.h>

#include "prunus/io.h"
#include "prunus/models.h"
#include "util/tensor_io.h"

namespace prunus {
namespace st = safetensors;

namespace {
NamedTensors state_of(Net& net) {
  NamedTensors s;
  for (const auto& p : net.named_parameters()) s.emplace_back(p.key(), p.value());
  for (const auto& b : net.named_buffers()) s.emplace_back(b.key(), b.value());
  return s;
}
}  // namespace

void save_model(const std::string& path, Net& net, const std::map<std::string, std::string>& extra) {
  auto meta = extra;
  meta["prunus.arch"] = net.arch();
  meta["prunus.format"] = "1";
  meta["prunus.version"] = version();
  if (auto g = net.runtime_graph(); !g.empty()) meta["prunus.graph"] = g;
  write_tensors(path, state_of(net), meta);
}

std::shared_ptr<Net> load_model(const std::string& path) {
  st::File f = st::File::open(path);
  auto it = f.metadata().find("prunus.arch");
  if (it == f.metadata().end())
    fail(path, "not a Prunus model: __metadata__ has no 'prunus.arch' (which architecture?)");
  if (f.metadata().count("prunus.quant"))
    fail(path, "an INT8 file written by prunus quantize: it runs in the runtime (infer, run, export); give this "
               "verb the fp32 model");
  // Layer widths come from the file: a model shrunk by structured pruning has fewer channels
  // than the architecture's defaults. Every shape is still checked against the built model.
  Widths widths;
  for (const auto& v : f.tensors())
    if (v.name.size() > 7 && v.name.ends_with(".weight") && (v.shape.size() == 2 || v.shape.size() == 4))
      widths[v.name.substr(0, v.name.size() - 7)] = v.shape[0];
  std::shared_ptr<Net> net;
  try {
    net = make_model(it->second, widths);
  } catch (const InputError& e) {
    fail(path, e.what());
  }
  torch::NoGradGuard ng;
  std::set<std::string> expected;
  for (auto& [name, dst] : state_of(*net)) {
    expected.insert(name);
    const st::TensorView* v = f.find(name);
    if (!v) fail(path, fmt::format("missing tensor '{}' for architecture {}", name, net->arch()));
    if (v->shape != dst.sizes().vec())
      fail(path, fmt::format("tensor '{}' has shape [{}], architecture {} needs [{}]", name,
                             fmt::join(v->shape, ","), net->arch(), fmt::join(dst.sizes(), ",")));
    torch::Tensor src = to_tensor(*v);
    if (src.is_floating_point() && !torch::isfinite(src).all().item<bool>())
      fail(path, fmt::format("tensor '{}' contains NaN or Inf", name));
    if (src.scalar_type() != dst.scalar_type())
      fail(path, fmt::format("tensor '{}' has dtype {}, expected {}", name, st::dtype_name(v->dtype),
                             st::dtype_name(to_safetensors_dtype(dst.scalar_type()))));
    dst.copy_(src);
  }
  for (const auto& t : f.tensors())
    if (!expected.count(t.name)) fail(path, fmt::format("unexpected tensor '{}' for architecture {}", t.name, net->arch()));
  return net;
}

}  // namespace prunus
