// The LLM verbs: perplexity, generate, oneshot. Inputs are validated before any write.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "prunus/distributed.h"
#include "prunus/io.h"
#include "prunus/llm.h"
#include "util/interrupt.h"
#include "prunus/recipe.h"
#include "prunus/report.h"
#include "prunus/hf.h"
#include "prunus/runtime.h"
#include "util/threads.h"

namespace prunus {
namespace fs = std::filesystem;

namespace {

llama2c::Tokenizer tokenizer_for(const std::string& model_path, std::int64_t vocab_size, const LlmTextOptions& o) {
  const auto vocab = static_cast<std::int32_t>(vocab_size);
  // Given, else a Hugging Face folder's tokenizer.json / tokenizer.model, else tok<vocab>.bin.
  const std::string path = o.tokenizer.empty() ? llama2c::Tokenizer::default_path(model_path, vocab) : o.tokenizer;
  return llama2c::Tokenizer::read_any(path, vocab);
}

// An output model path: a .bin file is llama2.c, anything else a Hugging Face folder.
void check_model_output(const std::string& out) {
  if (auto dir = fs::path(out).parent_path(); !dir.empty() && !fs::is_directory(dir))
    fail(out, "output directory does not exist");
  if (fs::exists(out) && !fs::is_directory(out) && !(out.size() > 4 && out.ends_with(".bin")))
    fail(out, "exists and is not a directory (outputs not ending in .bin are Hugging Face folders)");
}

void threads(int n) { set_compute_threads(n); }

}  // namespace

int perplexity_job(const std::string& model, const std::string& text, std::int64_t context, std::int64_t max_windows,
                   const LlmTextOptions& o) {
  threads(o.threads);
  auto m = llm::load(model);
  auto tok = tokenizer_for(model, m.config.vocab_size, o);
  auto tokens = llm::tokenize_documents(text, tok);
  if (context <= 0) context = m.config.seq_len;
  if (context > m.config.seq_len) fail("--context", fmt::format("{} exceeds the model's {}", context, m.config.seq_len));
  auto r = llm::perplexity(m, max_windows > 0 && std::int64_t(tokens.size()) > max_windows * context
                                ? std::vector<std::int32_t>(tokens.begin(), tokens.begin() + max_windows * context)
                                : tokens,
                            context);
  if (max_windows > 0) r.tokens = static_cast<std::int64_t>(tokens.size());
  std::printf("%s on %s: %lld tokens, %lld windows of %lld, %lld predicted; perplexity %.4f\n", model.c_str(),
              text.c_str(), static_cast<long long>(r.tokens), static_cast<long long>(r.windows),
              static_cast<long long>(context), static_cast<long long>(r.predicted), r.perplexity);
  return 0;
}

int generate_job(const std::string& model, const GenerateOptions& g, const LlmTextOptions& o) {
  if (g.runtime != "torch" && g.runtime != "native")
    fail("--runtime", fmt::format("'{}' is not a runtime (torch | native)", g.runtime));
  threads(o.threads);
  if (g.runtime == "torch") {
    auto m = llm::load(model);
    auto tok = tokenizer_for(model, m.config.vocab_size, o);
    const auto out = llm::generate_greedy(m, g.steps);
    std::string text;
    for (std::size_t i = 1; i < out.size(); ++i) text += tok.decode_token(out[i - 1], out[i]);
    std::printf("%s\n", text.c_str());
    return 0;
  }
  // The native runtime reads the model itself (the same readers as llm::load), with no libtorch
  // copy in between; an unshared embedding table stays in the file, mapped (map_embedding).
  runtime::LoadOptions lo;
  lo.dense = g.dense;
  lo.kernel.threads = std::max(1, o.threads);
  const auto t0 = std::chrono::steady_clock::now();
  auto rt = runtime::Llama::load(model, lo);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto tok = tokenizer_for(model, rt.config().vocab_size, o);
  std::int32_t prev = llama2c::Tokenizer::kBos;
  const auto t1 = std::chrono::steady_clock::now();
  const auto out = rt.generate_greedy(g.steps, [&](std::int32_t t) {
    std::fputs(tok.decode_token(prev, t).c_str(), stdout);
    std::fflush(stdout);
    prev = t;
  });
  const double gen_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  std::printf("\n");
  if (g.stats) {
    std::fprintf(stderr, "%-34s %-12s %8s %11s %9s\n", "layer", "shape", "format", "bytes", "speed-up");
    for (const auto& l : rt.layers())
      std::fprintf(stderr, "%-34s %-12s %8s %11llu %8.2fx\n", l.name.c_str(),
                   fmt::format("{}x{}", l.rows, l.cols).c_str(), l.format.c_str(),
                   static_cast<unsigned long long>(l.bytes), l.seconds > 0 ? l.dense_seconds / l.seconds : 1.0);
    const auto n = static_cast<double>(out.size() - 1);
    std::fprintf(stderr, "native runtime: %s weights %.1f MB%s, load %.2f s, %lld tokens in %.3f s = %.1f tokens/s\n",
                 g.dense ? "dense" : "auto-format", rt.weight_bytes() / 1e6,
                 rt.embedding_mapped() ? " (embedding table read from the file)" : "", load_s,
                 static_cast<long long>(out.size() - 1), gen_s, n > 0 ? n / gen_s : 0.0);
  }
  return 0;
}

int convert_job(const std::string& in, const std::string& out, const std::string& compressed) {
  const bool compressed_int8 = !compressed.empty();
  static const std::pair<const char*, llm::CtLayout> layouts[] = {{"int8", llm::CtLayout::Int8},
                                                                 {"int8-bitmask", llm::CtLayout::Int8Bitmask},
                                                                 {"sparse-bitmask", llm::CtLayout::SparseBitmask},
                                                                 {"sparse-24-bitmask", llm::CtLayout::Sparse24Bitmask}};
  llm::CtLayout layout{};
  bool known = false;
  for (const auto& [name, l] : layouts)
    if (compressed == name) layout = l, known = true;
  if (compressed_int8 && !known)
    fail("--compressed-tensors " + compressed,
         "unknown layout (known: int8, int8-bitmask, sparse-bitmask, sparse-24-bitmask)");
  if (out.empty()) fail("convert", "an output path is required");
  const bool to_bin = out.size() > 4 && out.compare(out.size() - 4, 4, ".bin") == 0;
  if (compressed_int8 && to_bin) fail(out, "--compressed-tensors writes a Hugging Face folder, not a .bin");
  if (to_bin) {
    if (auto dir = fs::path(out).parent_path(); !dir.empty() && !fs::is_directory(dir))
      fail(out, "output directory does not exist");
  } else if (fs::exists(out) && !fs::is_directory(out)) {
    fail(out, "exists and is not a directory (a Hugging Face folder is written there)");
  }
  auto m = llm::load(in);
  if (compressed_int8) {
    const auto r = llm::save_hf_compressed(out, m, layout);
    std::printf("%s -> %s (compressed-tensors %s): %d decoder linears, %.2f%% zeros (%s)\n", in.c_str(), out.c_str(),
                compressed.c_str(), r.layers, 100.0 * r.sparsity, r.structure.c_str());
    return 0;
  }
  llm::save(out, m);
  std::printf("%s (%s) -> %s (%s): %lld layers, dim %lld, vocab %lld\n", in.c_str(),
              llm::is_hf_folder(in) ? "Hugging Face folder" : "llama2.c", out.c_str(),
              to_bin ? "llama2.c" : "Hugging Face folder", static_cast<long long>(m.config.n_layers),
              static_cast<long long>(m.config.dim), static_cast<long long>(m.config.vocab_size));
  return 0;
}

int shrink_llm_job(const ShrinkJob& job) {
  threads(job.text.threads);
  if (job.out.empty()) fail("--out", "an output file is required");
  check_model_output(job.out);
  if (!job.masked.empty()) check_model_output(job.masked);
  if (job.heads > 0 && job.out.ends_with(".bin"))
    fail(job.out, "removing heads makes n_heads · head_dim < dim, which the llama2.c header cannot hold: "
                  "write a Hugging Face folder (an output path not ending in .bin)");
  auto m = llm::load(job.input);
  llm::LlmShrinkConfig cfg;
  cfg.mlp_fraction = job.sparsity;
  cfg.head_fraction = job.heads;
  cfg.criterion = job.criterion;
  cfg.round_to = job.round_to;
  cfg.nsamples = job.nsamples;
  cfg.seqlen = job.seqlen;
  cfg.seed = job.seed;
  std::vector<std::int32_t> calib;
  if (cfg.criterion == "activation" || job.reconstruct) {
    if (job.calib_text.empty())
      fail("--calib", fmt::format("{} needs calibration text (--calib FILE)",
                                  job.reconstruct ? "--reconstruct" : "--criterion activation"));
    calib = llm::tokenize_documents(job.calib_text, tokenizer_for(job.input, m.config.vocab_size, job.text));
  }
  const auto plan = llm::plan_llm_shrink(m, calib, cfg);
  const auto count = [](const llm::Model& mm) {
    std::int64_t n = 0;
    for (const auto& [name, t] : mm.weights) n += t.numel();
    return n;
  };
  const std::int64_t params_before = count(m);
  if (!job.masked.empty()) {
    auto masked = m;
    for (auto& [name, t] : masked.weights) t = t.clone();
    llm::mask_llm_shrink(masked, plan);
    llm::save(job.masked, masked);
  }
  const auto heads_before = m.config.n_heads;
  std::optional<llm::Model> dense;
  if (job.reconstruct) dense = m;  // the weights are replaced, not modified: sharing is safe
  llm::apply_llm_shrink(m, plan);
  if (dense) {
    const auto e = llm::reconstruct_llm_shrink(m, *dense, plan, calib, cfg);
    std::string line;
    for (std::size_t l = 0; l < e.before.size(); ++l)
      line += fmt::format("{}{:.4f} -> {:.4f}", l ? ", " : "", e.before[l], e.after[l]);
    std::printf("reconstruction: relative squared error of each block's output on the calibration windows %s\n",
                line.c_str());
  }
  llm::save(job.out, m);
  std::printf("MLP neurons per block %lld -> %lld, attention heads %lld -> %lld (KV heads %lld -> %lld) "
              "(%s criterion, %d blocks); parameters %lld -> %lld; wrote %s%s%s\n",
              static_cast<long long>(plan.hidden_before), static_cast<long long>(plan.hidden_after),
              static_cast<long long>(heads_before), static_cast<long long>(m.config.n_heads),
              static_cast<long long>(plan.kv_before), static_cast<long long>(plan.kv_after), cfg.criterion.c_str(),
              static_cast<int>(plan.kept.size()), static_cast<long long>(params_before),
              static_cast<long long>(count(m)), job.out.c_str(), job.masked.empty() ? "" : " and ", job.masked.c_str());
  return 0;
}

int oneshot_job(const OneShotJob& job) {
  threads(job.text.threads);
  llm::OneShotConfig cfg;
  cfg.method = job.method;
  cfg.sparsity = job.sparsity;
  cfg.magnitude_scope = job.magnitude_scope;
  cfg.nsamples = job.nsamples;
  cfg.seqlen = job.seqlen;
  cfg.seed = job.seed;
  cfg.damp = job.damp;
  cfg.blocksize = job.blocksize;
  cfg.progress = job.progress;
  cfg.skip = job.skip;
  cfg.device = job.device;
  cfg.stop_after_block = job.stop_after_block;
  if (job.device == "cuda" && dist::world().active()) cfg.device = fmt::format("cuda:{}", dist::world().local_rank());
  try {
    const torch::Device d(cfg.device);
    if (d.is_cuda() && !torch::cuda::is_available()) fail("--device " + job.device, "this libtorch or machine has no CUDA");
    if (!d.is_cuda() && !d.is_cpu()) fail("--device " + job.device, "expected cpu, cuda or cuda:N");
  } catch (const c10::Error&) {
    fail("--device " + job.device, "expected cpu, cuda or cuda:N");
  }
  if (!job.nm.empty()) {
    if (std::sscanf(job.nm.c_str(), "%lld:%lld", reinterpret_cast<long long*>(&cfg.n), reinterpret_cast<long long*>(&cfg.m)) != 2 ||
        !(cfg.n > 0 && cfg.n < cfg.m && cfg.m <= 16))
      fail("--nm " + job.nm, "expected N:M with 0 < N < M <= 16, e.g. 2:4");
  }
  if (cfg.magnitude_scope != "row" && cfg.magnitude_scope != "layer")
    fail("--scope " + cfg.magnitude_scope, "expected row or layer");
  if (job.out.empty()) fail("--out", "an output file is required");
  check_model_output(job.out);
  if (cfg.nsamples < 1) fail("--nsamples", "must be at least 1");
  if (cfg.damp <= 0) fail("--damp", "must be positive");
  if (cfg.blocksize < 1) fail("--blocksize", "must be at least 1");
  if (cfg.method != "magnitude" && cfg.method != "wanda" && cfg.method != "sparsegpt" && cfg.method != "owl")
    fail("--method " + cfg.method, "unknown (known: magnitude, wanda, sparsegpt, owl)");
  if (job.stream) {
    if (!fs::is_directory(job.model)) fail(job.model, "--stream reads a Hugging Face folder (convert a .bin first)");
    if (job.out.ends_with(".bin")) fail(job.out, "--stream writes a Hugging Face folder, not a .bin");
    if (cfg.device != "cpu") fail("--device " + job.device, "streaming runs on the CPU");
    if (dist::world().active()) fail("--stream", "runs in one process");
  }
  // Streaming reads only the folder's config here; the blocks come one at a time.
  llm::Model m;
  if (job.stream) m.config.vocab_size = hf::LlamaFolderReader(job.model).config().vocab_size;
  else m = llm::load(job.model);
  std::vector<std::int32_t> calib;
  if (cfg.method != "magnitude") {
    if (job.calib.empty()) fail("--calib", fmt::format("{} needs calibration text", cfg.method));
    calib = llm::tokenize_documents(job.calib, tokenizer_for(job.model, m.config.vocab_size, job.text));
  }
  // Ctrl-C stops after the block in progress and leaves OUT.ckpt; the output is written only
  // by a run that finished every block.
  std::string out = job.out;
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  cfg.checkpoint = out + ".ckpt";
  cfg.resume = job.resume;
  if (!job.resume && fs::exists(cfg.checkpoint))
    std::fprintf(stderr, "note: %s is from an interrupted run; starting afresh (pass --resume to continue it)\n",
                 cfg.checkpoint.c_str());
  install_interrupt_handler();
  llm::OneShotResult r;
  if (job.stream) {
    if (job.resume && fs::exists(cfg.checkpoint) && !fs::exists(cfg.checkpoint + ".partial"))
      fail(cfg.checkpoint + ".partial", "missing: the streamed output this checkpoint continues (run without --resume)");
    r = llm::oneshot_streaming(job.model, out, calib, cfg);
    if (r.interrupted) return 130;
  } else {
    r = llm::oneshot(m, calib, cfg);
    if (r.interrupted) return 130;
    llm::save(job.out, m);
  }
  std::error_code ec;
  fs::remove(cfg.checkpoint, ec);
  fs::remove(cfg.checkpoint + ".partial", ec);  // a streamed run started afresh leaves an older one
  if (!r.block_outlier_ratio.empty()) {
    std::string line;
    for (std::size_t i = 0; i < r.block_sparsity.size(); ++i)
      line += fmt::format("{}{:.3f} (outliers {:.2f}%)", i ? ", " : "", r.block_sparsity[i], 100 * r.block_outlier_ratio[i]);
    std::printf("OWL block sparsities: %s\n", line.c_str());
  }
  std::int64_t n = 0, z = 0;
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : r.layers) {
    n += l.numel;
    z += l.zeros;
    layers.push_back({{"name", l.name}, {"numel", l.numel}, {"zeros", l.zeros}, {"seconds", l.seconds}, {"damp", l.damp}});
  }
  if (dist::world().active())
    std::printf("%d ranks: each calibrated on its share of the %lld windows (statistics all-reduced)\n",
                dist::world().size(), static_cast<long long>(cfg.nsamples));
  std::printf("%s %s: %lld of %lld decoder-linear weights zero (%.2f%%); %.2f s (calibration forward %.2f s); "
              "peak RSS %s; wrote %s\n",
              cfg.method.c_str(), job.nm.empty() ? fmt::format("{:.0f}%", 100 * cfg.sparsity).c_str() : job.nm.c_str(),
              static_cast<long long>(z), static_cast<long long>(n), 100.0 * double(z) / double(n), r.seconds,
              r.calib_seconds, report::human_bytes(static_cast<std::uint64_t>(r.peak_rss_bytes)).c_str(), job.out.c_str());
  if (!job.report.empty()) {
    nlohmann::json rep = {{"prunus_version", version()}, {"run", report::run_info()}, {"model", job.model}, {"method", cfg.method}, {"sparsity", cfg.sparsity}, {"nm", job.nm},
                          {"block_sparsity", r.block_sparsity}, {"block_outlier_ratio", r.block_outlier_ratio},
                          {"nsamples", cfg.nsamples}, {"seqlen", cfg.seqlen}, {"seed", cfg.seed},
                          {"seconds", r.seconds}, {"calib_seconds", r.calib_seconds},
                          {"ranks", dist::world().size()}, {"device", cfg.device},
                          {"peak_rss_bytes", r.peak_rss_bytes}, {"layers", layers}};
    report::write_report(job.report, rep);
  }
  return 0;
}

}  // namespace prunus
