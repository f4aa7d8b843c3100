// The names recipes and the CLI accept, and the parsing of pattern names: torch-free, so a
// recipe is validated (and fuzzed) without libtorch. The make_* factories in the sparsify and
// models files build what these names describe; a test checks every name builds.
#include <charconv>
#include <string_view>

#include <fmt/format.h>

#include "prunus/recipe.h"

namespace prunus {
namespace {

bool parse_int(std::string_view s, std::int64_t& v) {
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  return r.ec == std::errc() && r.ptr == s.data() + s.size() && v > 0;
}

}  // namespace

std::vector<std::string> criterion_names() { return {"magnitude", "l2", "random", "lamp", "activation", "taylor", "snip", "movement", "synflow"}; }

std::vector<std::string> schedule_names() { return {"oneshot", "gradual", "iterative"}; }

std::vector<std::string> scope_names() { return {"global", "layer"}; }

std::vector<std::string> model_names() { return {"lenet300", "lenet5", "resnet", "inception"}; }

std::vector<std::string> pattern_names() {
  return {"unstructured", "row-balanced", "N:M (e.g. 2:4, 4:8, 1:4)", "block:RxC (e.g. block:4x4)"};
}

std::string pattern_error(const std::string& name) {
  if (name == "unstructured" || name == "row-balanced") return "";
  if (name.rfind("block:", 0) == 0) {
    const auto spec = std::string_view(name).substr(6);
    const auto x = spec.find('x');
    std::int64_t r = 0, c = 0;
    if (x == std::string_view::npos || !parse_int(spec.substr(0, x), r) || !parse_int(spec.substr(x + 1), c))
      return "a block pattern is block:RxC with positive R and C, e.g. block:4x4";
    if (r > 1024 || c > 1024 || r * c < 2) return "a block must hold at least 2 weights and sides of at most 1024";
    return "";
  }
  if (const auto colon = name.find(':'); colon != std::string::npos) {
    std::int64_t n = 0, m = 0;
    if (!parse_int(std::string_view(name).substr(0, colon), n) || !parse_int(std::string_view(name).substr(colon + 1), m))
      return "an N:M pattern is two positive integers, e.g. 2:4";
    if (n >= m) return fmt::format("N:M needs N < M (keep N of every M), got {}:{}", n, m);
    if (m > 64) return "N:M supports M up to 64";
    return "";
  }
  return fmt::format("unknown (known: {})", fmt::join(pattern_names(), ", "));
}

double pattern_fixed_sparsity(const std::string& name) {
  if (name == "unstructured" || name == "row-balanced" || name.rfind("block:", 0) == 0 || !pattern_error(name).empty())
    return -1.0;
  const auto colon = name.find(':');
  return 1.0 - double(std::stoll(name.substr(0, colon))) / double(std::stoll(name.substr(colon + 1)));
}

}  // namespace prunus
