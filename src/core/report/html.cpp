// report.html: one self-contained page per job, rebuilt from report.json alone (so
// `prunus report RUN_DIR` can redraw any run). Sections appear when the JSON has their data.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <ctime>
#include <fstream>
#include <filesystem>
#include <thread>
#include <cstdio>

#include <fmt/format.h>

#include "prunus/io.h"
#include "prunus/report.h"
#include "svg.h"

namespace prunus::report {
using nlohmann::json;

namespace {

std::string g_command_line;

const json* at(const json& j, std::initializer_list<const char*> path) {
  const json* p = &j;
  for (const char* k : path) {
    if (!p->is_object() || !p->contains(k)) return nullptr;
    p = &(*p)[k];
  }
  return p;
}
std::optional<double> num(const json& j, std::initializer_list<const char*> path) {
  const json* p = at(j, path);
  if (!p || !p->is_number()) return std::nullopt;
  return p->get<double>();
}
std::string str(const json& j, std::initializer_list<const char*> path) {
  const json* p = at(j, path);
  if (!p) return "";
  if (p->is_string()) return p->get<std::string>();
  if (p->is_null()) return "";
  return p->dump();
}
std::string pct(std::optional<double> v) { return v ? fmt::format("{:.2f}%", 100 * *v) : "–"; }
std::string secs(std::optional<double> v) { return v ? fmt::format("{:.1f} s", *v) : "–"; }
std::string bytes(std::optional<double> v) { return v ? human_bytes(static_cast<std::uint64_t>(*v)) : "–"; }

std::string table(const std::vector<std::vector<std::string>>& rows, bool header = true) {
  std::string s = header ? "<table>" : "<table class=\"kv\">";
  for (std::size_t r = 0; r < rows.size(); ++r) {
    s += "<tr>";
    for (const auto& cell : rows[r])
      s += fmt::format("<{0}>{1}</{0}>", header && r == 0 ? "th" : "td", svg::escape(cell));
    s += "</tr>";
  }
  return s + "</table>";
}

const char* kStyle = R"(
body{font-family:system-ui,-apple-system,"DejaVu Sans",sans-serif;margin:24px auto;max-width:1340px;color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
.sub{color:#666;margin-top:0}table{border-collapse:collapse;margin:8px 0;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}.kv td{text-align:left}.kv td:first-child{font-weight:600;background:#fafafa}.plots{display:flex;flex-wrap:wrap;gap:12px}
.plots svg{border:1px solid #eee}.note{color:#555;font-size:13px;max-width:900px}
.mask{border:1px solid #ccc;margin:4px 12px 4px 0}figure{display:inline-block;margin:0 12px 12px 0}
figcaption{font-size:12px;color:#555}code{background:#f4f4f4;padding:1px 4px})";

// Counts the plots and the plots with data on load: the browser test reads this line.
const char* kSelfCheck = R"(<script>
(function(){var p=document.querySelectorAll('svg.plot'),d=0;for(var i=0;i<p.length;i++){if(+p[i].getAttribute('data-points')>0)d++;}
console.log('prunus-report: '+p.length+' plots, '+d+' with data');})();
</script>)";

std::string page(const std::string& title, const std::string& body) {
  return fmt::format("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{}</style>"
                     "</head><body>\n{}\n{}</body></html>\n",
                     svg::escape(title), kStyle, body, kSelfCheck);
}

// One job history (train or fine-tune epochs) as series over a shared epoch axis.
struct Curve {
  std::vector<double> epoch, test_acc, train_acc, loss, sparsity, target;
};
Curve curve(const json& hist, double epoch_offset) {
  Curve c;
  if (!hist.is_array()) return c;
  for (const auto& h : hist) {
    auto e = num(h, {"epoch"});
    if (!e) continue;
    c.epoch.push_back(*e + epoch_offset);
    c.test_acc.push_back(num(h, {"test_accuracy"}).value_or(NAN));
    c.train_acc.push_back(num(h, {"train_accuracy"}).value_or(NAN));
    c.loss.push_back(num(h, {"train_loss"}).value_or(NAN));
    c.sparsity.push_back(num(h, {"sparsity"}).value_or(NAN));
    c.target.push_back(num(h, {"target"}).value_or(NAN));
  }
  return c;
}

struct RunCurves {
  Curve train, tune;
  double tune_start = 0;
};
RunCurves run_curves(const json& r) {
  RunCurves rc;
  const json* th = at(r, {"stages", "train", "history"});
  const json* fh = at(r, {"stages", "prune_finetune", "history"});
  if (th) rc.train = curve(*th, 0);
  rc.tune_start = rc.train.epoch.empty() ? 0 : rc.train.epoch.back();
  if (fh) rc.tune = curve(*fh, rc.tune_start);
  return rc;
}

std::string run_section(const json& r) {
  std::vector<std::vector<std::string>> t;
  auto add = [&](const std::string& k, const std::string& v) {
    if (!v.empty()) t.push_back({k, v});
  };
  add("command", str(r, {"run", "command"}));
  add("Prunus version", str(r, {"prunus_version"}));
  add("date (UTC)", str(r, {"run", "date"}));
  add("machine", str(r, {"run", "machine"}));
  add("recipe", str(r, {"recipe"}));
  add("model", str(r, {"model"}));
  add("seed", str(r, {"seed"}));
  add("threads", str(r, {"threads"}));
  if (at(r, {"data"})) add("data", fmt::format("{} ({} training, {} test samples)", str(r, {"data", "dir"}),
                                               str(r, {"data", "train_samples"}), str(r, {"data", "test_samples"})));
  if (at(r, {"prune"}))
    add("pruning", fmt::format("{} sparsity {}, criterion {}, pattern {}, scope {}, schedule {}",
                               str(r, {"prune", "target_sparsity"}).empty() ? "" : "target",
                               pct(num(r, {"prune", "target_sparsity"})), str(r, {"prune", "criterion"}),
                               str(r, {"prune", "pattern"}), str(r, {"prune", "scope"}),
                               str(r, {"prune", "schedule"})));
  if (at(r, {"shrink"}))
    add("structured (shrunk)", fmt::format("criterion {}, {} of each group's channels removed; multiply-adds {} → {}, "
                                           "parameters {} → {}",
                                           str(r, {"shrink", "criterion"}), pct(num(r, {"shrink", "sparsity"})),
                                           str(r, {"shrink", "macs_before"}), str(r, {"shrink", "macs_after"}),
                                           str(r, {"shrink", "params_before"}), str(r, {"shrink", "params_after"})));
  if (auto a = num(r, {"distill", "alpha"}); a && *a > 0)
    add("distillation", fmt::format("alpha {}, temperature {}", *a, str(r, {"distill", "temperature"})));
  std::string stages;
  if (const json* s = at(r, {"stages"}); s && s->is_object())
    for (auto it = s->begin(); it != s->end(); ++it)
      if (auto v = num(it.value(), {"seconds"})) stages += fmt::format("{}{} {:.1f} s", stages.empty() ? "" : ", ", it.key(), *v);
  add("wall time", num(r, {"total_seconds"}) ? secs(num(r, {"total_seconds"})) + (stages.empty() ? "" : " (" + stages + ")") : "");
  return "<h2>Run</h2>" + table(t, false);
}

std::string metrics_section(const json& r) {
  const bool dense = at(r, {"dense"}) != nullptr, sparse = at(r, {"sparse"}) != nullptr;
  if (!dense && !sparse) return "";
  std::vector<std::vector<std::string>> t{{"model", "test accuracy", "test loss", "sparsity", "weights", "file"}};
  auto loss = [&](const char* k) {
    auto v = num(r, {k, "test_loss"});
    return v ? fmt::format("{:.4f}", *v) : std::string("–");
  };
  if (dense)
    t.push_back({"dense", pct(num(r, {"dense", "test_accuracy"})), loss("dense"), "0.00%", bytes(num(r, {"bytes_dense"})),
                 str(r, {"dense", "file"})});
  if (sparse)
    t.push_back({"sparse", pct(num(r, {"sparse", "test_accuracy"})), loss("sparse"), pct(num(r, {"total_sparsity"})),
                 bytes(num(r, {"bytes_sparse_encoded"})), str(r, {"sparse", "file"})});
  if (at(r, {"int8"}))  // the quantize stage: bytes are the INT8 file's on disk
    t.push_back({"sparse INT8 (runtime)", pct(num(r, {"int8", "test_accuracy"})), "–", pct(num(r, {"total_sparsity"})),
                 bytes(num(r, {"int8", "bytes"})), str(r, {"int8", "file"})});
  std::string s = std::string("<h2>") + (dense && sparse ? "Dense vs sparse" : "Result") + "</h2>" + table(t);
  if (auto d = num(r, {"accuracy_drop_points"}))
    s += fmt::format("<p class=\"note\">Accuracy drop <b>{:.2f} points</b>; weights {:.1f}× smaller in the smallest "
                     "encoding per layer.</p>",
                     *d, num(r, {"compression_ratio"}).value_or(NAN));
  return s;
}

std::string curves_section(const json& r) {
  const auto rc = run_curves(r);
  if (rc.train.epoch.empty() && rc.tune.epoch.empty()) return "";
  std::vector<std::pair<double, std::string>> marks;
  if (!rc.tune.epoch.empty()) marks.push_back({rc.tune_start, "pruning + fine-tuning"});
  svg::LineChart acc{"Test accuracy per epoch", "epoch", "test accuracy", {}, marks, {}, {}, true};
  acc.series.push_back({"dense training", rc.train.epoch, rc.train.test_acc});
  acc.series.push_back({"pruning + fine-tuning", rc.tune.epoch, rc.tune.test_acc});
  svg::LineChart loss{"Training loss per epoch", "epoch", "training loss", {}, marks};
  loss.series.push_back({"dense training", rc.train.epoch, rc.train.loss});
  loss.series.push_back({"pruning + fine-tuning", rc.tune.epoch, rc.tune.loss});
  svg::LineChart sp{"Sparsity per epoch (measured vs the schedule's target)", "epoch", "sparsity", {}, marks, 0.0, 1.0, true};
  Curve all = rc.train;
  all.epoch.insert(all.epoch.end(), rc.tune.epoch.begin(), rc.tune.epoch.end());
  all.sparsity.insert(all.sparsity.end(), rc.tune.sparsity.begin(), rc.tune.sparsity.end());
  all.target.insert(all.target.end(), rc.tune.target.begin(), rc.tune.target.end());
  sp.series.push_back({"schedule's target", all.epoch, all.target, true});
  sp.series.push_back({"measured", all.epoch, all.sparsity});  // drawn last: on top
  return "<h2>Training curves</h2><div class=\"plots\">" + svg::line_chart(acc) + svg::line_chart(loss) +
         svg::line_chart(sp) + "</div>";
}

std::string layers_section(const json& r) {
  const json* layers = at(r, {"layers"});
  if (!layers || !layers->is_array() || layers->empty()) return "";
  // Runtime measurements by layer name, when the job made them.
  std::map<std::string, const json*> rt;
  if (const json* l = at(r, {"runtime", "layers"}); l && l->is_array())
    for (const auto& x : *l)
      if (x.is_object() && x.contains("name") && x["name"].is_string()) rt[x["name"].get<std::string>()] = &x;
  std::vector<std::vector<std::string>> t{{"layer", "shape", "nnz", "sparsity", "dense bytes", "encoded bytes", "encoding"}};
  const bool has_rt = !rt.empty();
  if (has_rt)
    for (const char* h : {"runtime format", "runtime bytes", "speed-up"}) t[0].push_back(h);
  std::vector<std::string> names;
  std::vector<double> sparsity, dense_b, enc_b, rt_b, speedup;
  for (const auto& l : *layers) {
    const std::string name = str(l, {"name"});
    std::string shape;
    if (const json* s = at(l, {"shape"}); s && s->is_array())
      for (const auto& d : *s) shape += (shape.empty() ? "" : "×") + d.dump();
    std::optional<double> sp = num(l, {"sparsity"});
    if (!sp && num(l, {"numel"}) && num(l, {"zeros"}) && *num(l, {"numel"}) > 0)
      sp = *num(l, {"zeros"}) / *num(l, {"numel"});
    std::optional<double> nnz = num(l, {"nnz"});
    if (!nnz && num(l, {"numel"}) && num(l, {"zeros"})) nnz = *num(l, {"numel"}) - *num(l, {"zeros"});
    std::vector<std::string> row{name, shape, nnz ? fmt::format("{:.0f}", *nnz) : "–", pct(sp),
                                 bytes(num(l, {"dense_bytes"})), bytes(num(l, {"encoded_bytes"})), str(l, {"encoding"})};
    names.push_back(name);
    sparsity.push_back(sp.value_or(NAN));
    dense_b.push_back(num(l, {"dense_bytes"}).value_or(NAN) / 1024);
    enc_b.push_back(num(l, {"encoded_bytes"}).value_or(NAN) / 1024);
    if (has_rt) {
      auto it = rt.find(name);  // the runtime names layers without the ".weight" suffix
      if (it == rt.end() && name.ends_with(".weight")) it = rt.find(name.substr(0, name.size() - 7));
      const json* x = it == rt.end() ? nullptr : it->second;
      auto s = x ? num(*x, {"seconds"}) : std::nullopt, ds = x ? num(*x, {"dense_seconds"}) : std::nullopt;
      const double su = s && ds && *s > 0 ? *ds / *s : NAN;
      row.push_back(x ? str(*x, {"format"}) : "–");
      row.push_back(x ? bytes(num(*x, {"bytes"})) : "–");
      row.push_back(std::isfinite(su) ? fmt::format("{:.2f}×", su) : "–");
      rt_b.push_back(x ? num(*x, {"bytes"}).value_or(NAN) / 1024 : NAN);
      speedup.push_back(su);
    }
    t.push_back(row);
  }
  std::string s = "<h2>Layers</h2>" + table(t);
  if (has_rt)
    s += fmt::format("<p class=\"note\">Runtime columns: what <code>prunus_runtime</code> does with each layer on the "
                     "machine above — the format that measured fastest at batch {} on {} thread(s), its bytes, and its "
                     "speed-up over the runtime's dense path (single-threaded OpenBLAS sgemv/sgemm).</p>",
                     str(r, {"runtime", "batch"}), str(r, {"runtime", "threads"}));
  svg::BarChart sb{"Sparsity per layer", "sparsity", names, {{"sparsity", sparsity}}, true};
  if (auto target = num(r, {"prune", "target_sparsity"})) sb.reference = *target, sb.reference_label = "target";
  svg::BarChart bb{"Weight bytes per layer (KiB)", "KiB", names, {{"dense", dense_b}, {"smallest encoding", enc_b}}};
  if (has_rt) bb.groups.push_back({"runtime format", rt_b});
  s += "<div class=\"plots\">" + svg::bar_chart(sb) + svg::bar_chart(bb);
  if (has_rt) {
    svg::BarChart su{"Measured speed-up over dense per layer (runtime)", "× dense", names, {{"speed-up", speedup}}};
    su.reference = 1.0, su.reference_label = "dense";
    s += svg::bar_chart(su);
  }
  return s + "</div>";
}

std::string masks_section(const json& r) {
  const json* masks = at(r, {"masks"});
  if (!masks || !masks->is_array() || masks->empty()) return "";
  std::string s = "<h2>Where the zeros are</h2><p class=\"note\">Each weight is one pixel: dark = kept, white = pruned "
                  "(rows = outputs, columns = inputs). The zoomed corner shows the pattern's structure (N:M groups run "
                  "along the inputs; blocks are squares).</p>";
  std::size_t biggest = 0;
  std::int64_t biggest_n = -1;
  std::vector<std::tuple<std::string, std::int64_t, std::int64_t, std::vector<std::uint8_t>>> decoded;
  for (const auto& m : *masks) {
    const auto rows = static_cast<std::int64_t>(num(m, {"rows"}).value_or(0));
    const auto cols = static_cast<std::int64_t>(num(m, {"cols"}).value_or(0));
    if (rows <= 0 || cols <= 0 || rows > 4096 || cols > 4096) continue;
    std::string bits;
    try {
      bits = svg::base64_decode(str(m, {"bits"}));
    } catch (const std::exception&) {
      continue;
    }
    if (bits.size() * 8 < static_cast<std::size_t>(rows * cols)) continue;
    std::vector<std::uint8_t> kept(static_cast<std::size_t>(rows * cols));
    for (std::size_t i = 0; i < kept.size(); ++i) kept[i] = (std::uint8_t(bits[i / 8]) >> (i % 8)) & 1;
    if (rows * cols > biggest_n) biggest_n = rows * cols, biggest = decoded.size();
    decoded.emplace_back(str(m, {"layer"}) + (str(m, {"cropped"}) == "true" ? " (top-left corner)" : ""), rows, cols,
                         std::move(kept));
  }
  for (const auto& [name, rows, cols, kept] : decoded) {
    const int scale = static_cast<int>(std::clamp<std::int64_t>(600 / std::max(rows, cols), 1, 4));
    s += "<figure>" + svg::mask_image("mask of " + name, rows, cols, kept, scale) +
         fmt::format("<figcaption>{} — {}×{}</figcaption></figure>", svg::escape(name), rows, cols);
  }
  if (!decoded.empty()) {
    const auto& [name, rows, cols, kept] = decoded[biggest];
    const std::int64_t zr = std::min<std::int64_t>(rows, 24), zc = std::min<std::int64_t>(cols, 64);
    std::vector<std::uint8_t> crop(static_cast<std::size_t>(zr * zc));
    for (std::int64_t i = 0; i < zr; ++i)
      for (std::int64_t j = 0; j < zc; ++j) crop[static_cast<std::size_t>(i * zc + j)] = kept[static_cast<std::size_t>(i * cols + j)];
    s += "<figure>" + svg::mask_image("zoom: mask of " + name + ", first rows and columns", zr, zc, crop, 8) +
         fmt::format("<figcaption>{}: rows 0–{}, columns 0–{}, 8× zoom</figcaption></figure>", svg::escape(name), zr - 1,
                     zc - 1);
  }
  return s;
}

// One-shot LLM reports (prunus oneshot --report): per-block allocation and per-layer results.
std::string oneshot_section(const json& r) {
  if (!at(r, {"method"})) return "";
  std::vector<std::vector<std::string>> t;
  t.push_back({"model", str(r, {"model"})});
  t.push_back({"method", str(r, {"method"})});
  t.push_back({"target", str(r, {"nm"}).empty() || str(r, {"nm"}) == "\"\"" ? pct(num(r, {"sparsity"})) : str(r, {"nm"})});
  t.push_back({"calibration", fmt::format("{} windows × {} tokens, seed {}", str(r, {"nsamples"}), str(r, {"seqlen"}),
                                          str(r, {"seed"}))});
  t.push_back({"time", fmt::format("{} (calibration forward {})", secs(num(r, {"seconds"})), secs(num(r, {"calib_seconds"})))});
  t.push_back({"peak RSS", bytes(num(r, {"peak_rss_bytes"}))});
  std::string s = "<h2>One-shot pruning</h2>" + table(t, false) + "<div class=\"plots\">";
  if (const json* b = at(r, {"block_sparsity"}); b && b->is_array() && !b->empty()) {
    std::vector<std::string> names;
    std::vector<double> v, o;
    for (std::size_t i = 0; i < b->size(); ++i) {
      names.push_back(fmt::format("block {}", i));
      v.push_back((*b)[i].is_number() ? (*b)[i].get<double>() : NAN);
    }
    svg::BarChart bc{"Sparsity per decoder block", "sparsity", names, {{"sparsity", v}}, true};
    if (const json* ol = at(r, {"block_outlier_ratio"}); ol && ol->is_array() && ol->size() == b->size()) {
      for (const auto& x : *ol) o.push_back(x.is_number() ? x.get<double>() : NAN);
      bc.groups.push_back({"outlier ratio (OWL)", o});
    }
    s += svg::bar_chart(bc);
  }
  if (const json* ls = at(r, {"layers"}); ls && ls->is_array()) {
    std::vector<std::string> names;
    std::vector<double> sec;
    for (const auto& l : *ls) names.push_back(str(l, {"name"})), sec.push_back(num(l, {"seconds"}).value_or(NAN));
    s += svg::bar_chart({"Pruning time per layer", "seconds", names, {{"seconds", sec}}});
  }
  return s + "</div>";
}


// prunus bench: whole-model latency per batch (or decode tokens/s), sparse vs the dense path.
std::string bench_section(const json& r) {
  std::string s;
  if (const json* lat = at(r, {"latency"}); lat && lat->is_array() && !lat->empty()) {
    std::vector<std::vector<std::string>> t{{"batch", "dense", "sparse", "speed-up"}};
    std::vector<std::string> cats;
    std::vector<double> d, sp, su, base, subase;
    for (const auto& x : *lat) {
      base.push_back(num(x, {"baseline_seconds"}).value_or(NAN) * 1e6);
      subase.push_back(num(x, {"speedup_vs_baseline"}).value_or(NAN));
      const auto b = str(x, {"batch"});
      const double td = num(x, {"dense_seconds"}).value_or(NAN), ts = num(x, {"sparse_seconds"}).value_or(NAN);
      t.push_back({b, fmt::format("{:.1f} µs", td * 1e6), fmt::format("{:.1f} µs", ts * 1e6), fmt::format("{:.2f}×", td / ts)});
      cats.push_back("batch " + b);
      d.push_back(td * 1e6), sp.push_back(ts * 1e6), su.push_back(td / ts);
    }
    svg::BarChart lc{"Latency per call (µs)", "µs", cats, {{"dense path", d}, {"sparse formats", sp}}};
    if (at(r, {"baseline"})) {
      t[0].push_back("baseline " + str(r, {"baseline"}));
      for (std::size_t i = 0; i < base.size(); ++i) t[i + 1].push_back(fmt::format("{:.1f} µs", base[i]));
      lc.groups.insert(lc.groups.begin(), {"baseline (dense)", base});
    }
    svg::BarChart sc{"Whole-model speed-up over the dense path", "× dense", cats, {{"speed-up", su}}};
    if (at(r, {"baseline"})) sc.groups.push_back({"over the baseline", subase});
    sc.reference = 1.0, sc.reference_label = "dense";
    s += "<h2>Whole model in the runtime</h2>" + table(t) + "<div class=\"plots\">" + svg::bar_chart(lc) +
         svg::bar_chart(sc) + "</div>";
  }
  if (at(r, {"decode"})) {
    const auto dt = num(r, {"decode", "dense_tokens_per_second"}), st = num(r, {"decode", "sparse_tokens_per_second"});
    std::vector<std::vector<std::string>> t{{"path", "tokens/s", "weights"}};
    t.push_back({"dense", fmt::format("{:.1f}", dt.value_or(NAN)), bytes(num(r, {"decode", "dense_weight_bytes"}))});
    t.push_back({"sparse", fmt::format("{:.1f}", st.value_or(NAN)), bytes(num(r, {"decode", "sparse_weight_bytes"}))});
    svg::BarChart bc{"Greedy decoding, tokens/s", "tokens/s", {"dense path", "sparse formats"},
                     {{"tokens/s", {dt.value_or(NAN), st.value_or(NAN)}}}};
    s += fmt::format("<h2>Decoding in the runtime</h2>{}<p class=\"note\">{} tokens per timed call; speed-up {:.2f}×.</p>"
                     "<div class=\"plots\">{}</div>",
                     table(t), str(r, {"decode", "tokens"}), st.value_or(NAN) / dt.value_or(NAN), svg::bar_chart(bc));
  }
  return s;
}

// prunus sensitivity: accuracy drop against sparsity for each layer pruned alone, with the
// allocation for the target (when one was asked for) ringed on each curve.
std::string sensitivity_section(const json& r) {
  const json* cs = at(r, {"curves"});
  if (!cs || !cs->is_array() || cs->empty()) return "";
  svg::LineChart c{"Accuracy drop with each layer pruned alone", "sparsity of that layer", "accuracy drop (points)"};
  std::vector<std::vector<std::string>> t{{"layer", "weights"}};
  std::vector<std::string> level_names;
  for (const auto& cv : *cs) {
    svg::Series s{str(cv, {"name"})};
    const json* lv = at(cv, {"levels"});
    const json* dr = at(cv, {"drop"});
    if (!lv || !dr || !lv->is_array() || !dr->is_array()) continue;
    std::vector<std::string> row{s.name, str(cv, {"numel"})};
    for (std::size_t i = 0; i < std::min(lv->size(), dr->size()); ++i) {
      if (!(*lv)[i].is_number() || !(*dr)[i].is_number()) continue;
      s.x.push_back((*lv)[i].get<double>());
      s.y.push_back((*dr)[i].get<double>());
      if (i > 0) row.push_back(fmt::format("{:.2f}", s.y.back()));
      if (t.size() == 1 && i > 0) level_names.push_back(fmt::format("{:.0f}%", 100 * s.x.back()));
    }
    if (t.size() == 1) t[0].insert(t[0].end(), level_names.begin(), level_names.end());
    // The allocation: interpolate this layer's curve at its allocated sparsity.
    if (auto a = num(r, {"allocation", "layers", s.name.c_str()}); a && s.x.size() >= 2) {
      double y = s.y.back();
      for (std::size_t i = 1; i < s.x.size(); ++i)
        if (*a <= s.x[i]) {
          y = s.y[i - 1] + (s.y[i] - s.y[i - 1]) * (*a - s.x[i - 1]) / std::max(s.x[i] - s.x[i - 1], 1e-12);
          break;
        }
      c.markers.push_back({*a, y, fmt::format("{:.1f}%", 100 * *a), c.series.size()});
      row.push_back(fmt::format("{:.2f}%", 100 * *a));
    }
    c.series.push_back(std::move(s));
    t.push_back(row);
  }
  if (at(r, {"allocation"})) t[0].push_back("allocated");
  std::string s = "<h2>Sensitivity</h2>";
  s += fmt::format("<p class=\"note\">Model {}; criterion {}, pattern {}; each level scored on {} held-out training "
                   "samples (base accuracy {}).",
                   svg::escape(str(r, {"model"})), svg::escape(str(r, {"criterion"})), svg::escape(str(r, {"pattern"})),
                   svg::escape(str(r, {"holdout"})), pct(num(r, {"base_accuracy"})));
  if (auto tg = num(r, {"allocation", "target"}))
    s += fmt::format(" Rings: the allocation for {:.1f}% overall (greedy on these curves; predicted drop {:.2f} points).",
                     100 * *tg, num(r, {"allocation", "predicted_drop"}).value_or(NAN));
  return s + "</p>" + table(t) + "<div class=\"plots\">" + svg::line_chart(c) + "</div>";
}

// prunus_kernel_bench's Google Benchmark JSON: speed-up over the best dense baseline of the same
// run (OpenBLAS or libtorch, whichever was faster) against sparsity, per shape, batch and threads.
std::string benchmark_section(const json& r) {
  const json* b = at(r, {"benchmarks"});
  if (!b || !b->is_array()) return "";
  struct Group {
    std::map<std::string, double> dense;                        // baseline → seconds
    std::map<std::string, std::map<std::string, double>> kernels;  // kernel → pattern → seconds
  };
  std::map<std::string, Group> groups;  // "4096x4096/batch:1/threads:1"
  for (const auto& x : *b) {
    const std::string name = str(x, {"name"});
    auto t = num(x, {"real_time"});
    if (!t || str(x, {"run_type"}) == "aggregate") continue;
    std::vector<std::string> parts;
    for (std::size_t a = 0, e; a <= name.size(); a = e + 1) {
      e = name.find('/', a);
      if (e == std::string::npos) e = name.size();
      parts.push_back(name.substr(a, e - a));
    }
    if (parts.size() == 4 && parts[0].rfind("dense_", 0) == 0)
      groups[parts[1] + "/" + parts[2] + "/" + parts[3]].dense[parts[0]] = *t;
    else if (parts.size() == 5)
      groups[parts[2] + "/" + parts[3] + "/" + parts[4]].kernels[parts[0]][parts[1]] = *t;
  }
  if (groups.empty()) return "";
  std::string s = "<h2>Sparse kernels against the best dense path</h2><p class=\"note\">Speed-up = time of the faster "
                  "dense baseline (OpenBLAS or libtorch) in the same run ÷ the kernel's time; above 1 the zeros pay. "
                  "Context: " + svg::escape(str(r, {"context", "host_name"})) + " " +
                  svg::escape(str(r, {"context", "date"})) + "</p><div class=\"plots\">";
  for (const auto& [key, g] : groups) {
    if (g.dense.empty()) continue;
    double best = std::numeric_limits<double>::infinity();
    for (const auto& [n, t] : g.dense) best = std::min(best, t);
    svg::LineChart c{"Unstructured, " + key, "sparsity", "speed-up over best dense (×)"};
    std::vector<std::string> structured;
    std::vector<std::pair<std::string, std::vector<double>>> sbars;
    for (const auto& [kernel, pats] : g.kernels) {
      svg::Series ser{kernel};
      std::vector<double> bars;
      for (const auto& [pat, t] : pats) {
        if (pat.size() > 1 && pat.back() == '%' && pat.find('x') == std::string::npos) {
          ser.x.push_back(std::atof(pat.c_str()) / 100);
          ser.y.push_back(best / t);
        }
      }
      if (!ser.x.empty()) {
        // std::map orders "50%" < "95%" as strings, which is numeric order for two digits.
        c.series.push_back(ser);
      }
    }
    for (const auto& [kernel, pats] : g.kernels)
      for (const auto& [pat, t] : pats)
        if (!(pat.back() == '%' && pat.find('x') == std::string::npos) &&
            std::find(structured.begin(), structured.end(), pat) == structured.end())
          structured.push_back(pat);
    for (const auto& [kernel, pats] : g.kernels) {
      std::vector<double> v;
      bool any = false;
      for (const auto& pat : structured) {
        auto it = pats.find(pat);
        v.push_back(it == pats.end() ? NAN : best / it->second);
        any = any || it != pats.end();
      }
      if (any) sbars.push_back({kernel, v});
    }
    svg::Series one{"dense = 1×"};
    for (double x : {0.5, 0.95}) one.x.push_back(x), one.y.push_back(1.0);
    one.dashed = true;
    c.series.push_back(one);
    s += svg::line_chart(c);
    if (!structured.empty()) {
      svg::BarChart bc{"N:M and blocks, " + key, "× best dense", structured, sbars};
      bc.reference = 1.0, bc.reference_label = "dense";
      s += svg::bar_chart(bc);
    }
  }
  return s + "</div>";
}

// docs/data's method comparison (recipe → {label, seeds: {seed: {dense, sparse, total_sparsity}}}):
// accuracy kept per method, mean over seeds, against the dense mean.
std::string methods_section(const json& r) {
  if (!r.is_object() || r.empty()) return "";
  std::vector<std::string> names;
  std::vector<double> acc, sp;
  double dense_sum = 0;
  int dense_n = 0;
  for (auto it = r.begin(); it != r.end(); ++it) {
    const json* seeds = at(it.value(), {"seeds"});
    if (!seeds || !seeds->is_object() || seeds->empty()) return "";
    double a = 0, z = 0;
    int n = 0;
    for (auto sd = seeds->begin(); sd != seeds->end(); ++sd) {
      a += num(sd.value(), {"sparse"}).value_or(NAN), z += num(sd.value(), {"total_sparsity"}).value_or(NAN), ++n;
      if (auto d = num(sd.value(), {"dense"})) dense_sum += *d, ++dense_n;
    }
    std::string label = str(it.value(), {"label"});
    names.push_back(label.empty() ? it.key() : label);
    acc.push_back(a / n), sp.push_back(z / n);
  }
  std::vector<std::vector<std::string>> t{{"method", "sparsity", "test accuracy (mean over seeds)"}};
  for (std::size_t i = 0; i < names.size(); ++i) t.push_back({names[i], pct(sp[i]), pct(acc[i])});
  svg::BarChart bc{"Test accuracy per method", "test accuracy", names, {{"sparse", acc}}, true};
  if (dense_n) bc.reference = dense_sum / dense_n, bc.reference_label = fmt::format("dense {:.2f}%", 100 * dense_sum / dense_n);
  return "<h2>Pruning methods compared</h2>" + table(t) + "<div class=\"plots\">" + svg::bar_chart(bc) + "</div>";
}

}  // namespace

void set_command_line(int argc, char** argv) {
  g_command_line.clear();
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    const bool quote = a.empty() || a.find_first_of(" \t\"'$\\") != std::string::npos;
    g_command_line += (i ? " " : "") + (quote ? "'" + a + "'" : a);
  }
}

json run_info() {
  std::string cpu;
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&now, &tm);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm);
  return {{"command", g_command_line},
          {"date", date},
          {"machine", fmt::format("{}{}{} logical CPUs", cpu, cpu.empty() ? "" : ", ", std::thread::hardware_concurrency())}};
}

json mask_json(const std::string& layer, std::int64_t rows, std::int64_t cols, const std::vector<std::uint8_t>& kept,
               bool cropped) {
  std::string bits(static_cast<std::size_t>((rows * cols + 7) / 8), '\0');
  for (std::size_t i = 0; i < static_cast<std::size_t>(rows * cols) && i < kept.size(); ++i)
    if (kept[i]) bits[i / 8] = static_cast<char>(bits[i / 8] | (1 << (i % 8)));
  return {{"layer", layer}, {"rows", rows}, {"cols", cols}, {"cropped", cropped}, {"bits", svg::base64_encode(bits)}};
}

std::string render_html(const json& r) {
  std::string title = str(r, {"recipe"});
  if (title.empty()) title = str(r, {"job"}).empty() ? str(r, {"model"}) : str(r, {"job"}) + " " + str(r, {"model"});
  std::string body = fmt::format("<h1>Prunus report: {}</h1><p class=\"sub\">{}</p>", svg::escape(title),
                                 svg::escape(str(r, {"run", "date"}).empty() ? "" : "made " + str(r, {"run", "date"}) + " UTC"));
  if (r.contains("benchmarks")) {
    title = "kernel benchmarks";
    body = "<h1>Prunus report: kernel benchmarks</h1>" + benchmark_section(r);
  } else if (!methods_section(r).empty() && !r.contains("layers")) {
    title = "pruning methods";
    body = "<h1>Prunus report: pruning methods</h1>" + methods_section(r);
  } else if (r.contains("curves")) {
    title = "sensitivity";
    body = "<h1>Prunus report: sensitivity</h1>" + run_section(r) + sensitivity_section(r);
  } else {
    body += run_section(r) + metrics_section(r) + bench_section(r) + oneshot_section(r) + curves_section(r) +
            layers_section(r) + masks_section(r);
  }
  return page("Prunus report: " + title, body);
}

std::string render_comparison_html(const std::vector<std::pair<std::string, json>>& runs) {
  std::vector<std::vector<std::string>> t{{""}};
  for (const auto& [name, r] : runs) t[0].push_back(name);
  auto row = [&](const std::string& k, auto f) {
    std::vector<std::string> cells{k};
    for (const auto& [name, r] : runs) cells.push_back(f(r));
    t.push_back(cells);
  };
  row("recipe", [](const json& r) { return str(r, {"recipe"}); });
  row("model", [](const json& r) { return str(r, {"model"}); });
  row("pruning", [](const json& r) {
    return fmt::format("{} {} {} {}", str(r, {"prune", "criterion"}), str(r, {"prune", "pattern"}), str(r, {"prune", "scope"}),
                       str(r, {"prune", "schedule"}));
  });
  row("dense accuracy", [](const json& r) { return pct(num(r, {"dense", "test_accuracy"})); });
  row("sparse accuracy", [](const json& r) { return pct(num(r, {"sparse", "test_accuracy"})); });
  row("accuracy drop", [](const json& r) {
    auto d = num(r, {"accuracy_drop_points"});
    return d ? fmt::format("{:.2f} points", *d) : std::string("–");
  });
  row("sparsity", [](const json& r) { return pct(num(r, {"total_sparsity"})); });
  row("weights (encoded)", [](const json& r) { return bytes(num(r, {"bytes_sparse_encoded"})); });
  row("wall time", [](const json& r) { return secs(num(r, {"total_seconds"})); });
  std::string body = "<h1>Prunus: runs side by side</h1>" + table(t);
  svg::LineChart acc{"Test accuracy per epoch", "epoch", "test accuracy", {}, {}, {}, {}, true};
  svg::LineChart sp{"Sparsity per epoch", "epoch", "sparsity", {}, {}, 0.0, 1.0, true};
  std::vector<std::string> layer_names;
  std::vector<std::pair<std::string, std::vector<double>>> layer_sp;
  for (const auto& [name, r] : runs) {
    const auto rc = run_curves(r);
    Curve all = rc.train;
    all.epoch.insert(all.epoch.end(), rc.tune.epoch.begin(), rc.tune.epoch.end());
    all.test_acc.insert(all.test_acc.end(), rc.tune.test_acc.begin(), rc.tune.test_acc.end());
    all.sparsity.insert(all.sparsity.end(), rc.tune.sparsity.begin(), rc.tune.sparsity.end());
    acc.series.push_back({name, all.epoch, all.test_acc, acc.series.size() % 2 == 1});
    sp.series.push_back({name, all.epoch, all.sparsity, sp.series.size() % 2 == 1});
    std::vector<double> v;
    if (const json* ls = at(r, {"layers"}); ls && ls->is_array()) {
      for (const auto& l : *ls) {
        const auto n = str(l, {"name"});
        if (layer_sp.empty()) layer_names.push_back(n);
      }
      for (const auto& n : layer_names) {
        double x = NAN;
        for (const auto& l : *ls)
          if (str(l, {"name"}) == n) x = num(l, {"sparsity"}).value_or(NAN);
        v.push_back(x);
      }
    }
    layer_sp.push_back({name, v});
  }
  body += "<div class=\"plots\">" + svg::line_chart(acc) + svg::line_chart(sp) +
          svg::bar_chart({"Sparsity per layer", "sparsity", layer_names, layer_sp, true}) + "</div>";
  return page("Prunus: runs side by side", body);
}

namespace {
std::string json_path_for(const std::string& run) {
  namespace fs = std::filesystem;
  return fs::is_directory(run) ? (fs::path(run) / "report.json").string() : run;
}
json read_report(const std::string& path) {
  json j;
  try {
    j = json::parse(read_text_file(path));
  } catch (const json::exception& e) {
    fail(path, std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object()) fail(path, "a report must be a JSON object");
  if (!j.contains("layers") && !j.contains("stages") && !j.contains("method") && !j.contains("benchmarks") && !j.contains("curves") && !j.contains("latency") && !j.contains("decode") &&
      methods_section(j).empty())
    fail(path, "not a Prunus report (no layers, stages, method, benchmarks or method results)");
  return j;
}
}  // namespace

std::string write_report(const std::string& json_path, const json& rep) {
  const std::string html =
      (json_path.ends_with(".json") ? json_path.substr(0, json_path.size() - 5) : json_path) + ".html";
  atomic_write(json_path, rep.dump(2) + "\n");
  atomic_write(html, render_html(rep));
  return html;
}

void check_report_path(const std::string& json_path) {
  if (json_path.empty()) return;
  if (!json_path.ends_with(".json"))
    fail("--report " + json_path, "the report file must end in .json (the HTML goes beside it)");
  if (auto dir = std::filesystem::path(json_path).parent_path(); !dir.empty() && !std::filesystem::is_directory(dir))
    fail(json_path, "report directory does not exist");
}

json runtime_layers_json(const std::vector<runtime::LayerInfo>& layers) {
  json a = json::array();
  for (const auto& l : layers)
    a.push_back({{"name", l.name}, {"format", l.format}, {"rows", l.rows}, {"cols", l.cols}, {"nnz", l.nnz},
                 {"bytes", l.bytes}, {"dense_bytes", l.dense_bytes}, {"seconds", l.seconds},
                 {"dense_seconds", l.dense_seconds}});
  return a;
}

int report_job(const std::vector<std::string>& runs, const std::string& out) {
  namespace fs = std::filesystem;
  if (runs.empty()) fail("prunus report", "name at least one run folder or report JSON");
  std::vector<std::pair<std::string, json>> reports;
  for (const auto& run : runs) {
    const auto path = json_path_for(run);
    if (!fs::exists(path)) fail(path, "not found (a run folder holds report.json)");
    std::string name = fs::path(run).filename().string();
    if (name.empty()) name = fs::path(run).parent_path().filename().string();
    reports.emplace_back(name, read_report(path));
  }
  std::string target = out;
  if (target.empty()) {
    if (reports.size() == 1) {
      target = json_path_for(runs[0]);
      target = target.substr(0, target.size() - (target.ends_with(".json") ? 5 : 0)) + ".html";
    } else {
      target = "compare.html";
    }
  }
  if (auto dir = fs::path(target).parent_path(); !dir.empty() && !fs::is_directory(dir))
    fail(target, "output directory does not exist");
  const std::string html = reports.size() == 1 ? render_html(reports[0].second) : render_comparison_html(reports);
  atomic_write(target, html);
  std::printf("wrote %s (%s)\n", target.c_str(), human_bytes(html.size()).c_str());
  return 0;
}

}  // namespace prunus::report
