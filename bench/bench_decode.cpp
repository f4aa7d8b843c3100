// End-to-end decode of a synthetic LLaMA-shape model in the runtime (no libtorch):
// tokens/s and resident memory, dense path against the same model pruned per row by
// magnitude. One process per configuration, so resident memory is the model's own.
//
//   build/bench/prunus_decode_bench --sparsity 0.5 [--dense] [--threads 1] [--vocab 32000]
//   build/bench/prunus_decode_bench --sparsity 0.5 --compare   (both paths in one process)
//
// --compare loads the pruned model twice, on the runtime's dense path and with the formats
// chosen at load, and alternates their decode steps, so that both see the same machine: on
// a shared VM, memory bandwidth drifts by ±20% between runs.
// --file DIR writes the synthetic model to DIR as a llama2.c file (once per shape and sparsity)
// and loads it with Llama::load, as `prunus generate --runtime native` does: the embedding table
// is then read from the file (LoadOptions::map_embedding) and only the rows of tokens seen
// become resident.
// Prints one JSON line (docs/data/cpu_decode.jsonl keeps the runs of docs/benchmarks.md).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "prunus/llama2c.h"
#include "prunus/runtime.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace {

std::int64_t proc_status_kb(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0) return std::atoll(line.c_str() + std::strlen(key));
  return 0;
}

// xorshift64*: fast, seeded, the same weights every run.
struct Rng {
  std::uint64_t s;
  float uniform() {  // [-1, 1)
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return static_cast<float>((s * 2685821657736338717ull) >> 40) / float(1 << 23) - 1.0f;
  }
};

// Keeps the largest-magnitude (1 − sparsity) of every row.
void prune_rows(std::vector<float>& w, std::int64_t rows, std::int64_t cols, double sparsity) {
  const auto drop = static_cast<std::int64_t>(std::llround(sparsity * double(cols)));
  if (drop <= 0) return;
  std::vector<float> mags(static_cast<std::size_t>(cols));
  for (std::int64_t r = 0; r < rows; ++r) {
    float* row = &w[r * cols];
    for (std::int64_t c = 0; c < cols; ++c) mags[c] = std::abs(row[c]);
    std::nth_element(mags.begin(), mags.begin() + (drop - 1), mags.end());
    const float cut = mags[drop - 1];
    std::int64_t dropped = 0;
    for (std::int64_t c = 0; c < cols && dropped < drop; ++c)
      if (std::abs(row[c]) <= cut) row[c] = 0.0f, ++dropped;
  }
}

// "q_proj=bitmask,k_proj=..." for the first decoder block.
std::string layer0_formats(const prunus::runtime::Llama& model) {
  std::string out;
  for (const auto& l : model.layers())
    if (l.name.find("layers.0.") != std::string::npos)
      out += fmt::format("{}{}={}", out.empty() ? "" : ",", l.name.substr(l.name.rfind('.') + 1), l.format);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::int64_t dim = 4096, hidden = 11008, layers = 2, heads = 32, kv_heads = 32, vocab = 32000, seq = 256, tokens = 24;
  double sparsity = 0.0;
  bool dense = false, compare = false, prune_classifier = false;
  std::string file_dir;
  int threads = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return std::string(argv[++i]);
    };
    if (a == "--dim") dim = std::stoll(next());
    else if (a == "--hidden") hidden = std::stoll(next());
    else if (a == "--layers") layers = std::stoll(next());
    else if (a == "--heads") heads = std::stoll(next());
    else if (a == "--kv-heads") kv_heads = std::stoll(next());
    else if (a == "--vocab") vocab = std::stoll(next());
    else if (a == "--tokens") tokens = std::stoll(next());
    else if (a == "--sparsity") sparsity = std::stod(next());
    else if (a == "--threads") threads = std::stoi(next());
    else if (a == "--dense") dense = true;
    else if (a == "--compare") compare = true;
    else if (a == "--prune-classifier") prune_classifier = true;  // lm_head pruned like the decoder linears
    else if (a == "--file") file_dir = next();
    else {
      std::fprintf(stderr,
                   "usage: %s [--sparsity S] [--dense] [--threads N] [--dim 4096] [--hidden 11008] [--layers 2] "
                   "[--heads 32] [--kv-heads 32] [--vocab 32000] [--tokens 24] [--prune-classifier] [--file DIR]\n",
                   argv[0]);
      return 2;
    }
  }
  if (!(sparsity >= 0 && sparsity < 1)) {
    std::fprintf(stderr, "--sparsity must be in [0, 1)\n");
    return 2;
  }

  // The synthetic checkpoint: uniform weights scaled like a trained model's (≈ 1/√fan-in).
  const auto t0 = std::chrono::steady_clock::now();
  prunus::llama2c::Checkpoint ck;
  ck.config = {static_cast<std::int32_t>(dim),   static_cast<std::int32_t>(hidden),   static_cast<std::int32_t>(layers),
               static_cast<std::int32_t>(heads), static_cast<std::int32_t>(kv_heads), static_cast<std::int32_t>(vocab),
               static_cast<std::int32_t>(seq),   false};
  Rng rng{0x9e3779b97f4a7c15ull};
  auto add = [&](const std::string& name, std::int64_t rows, std::int64_t cols, bool prune) {
    prunus::llama2c::Tensor t;
    t.shape = cols ? std::vector<std::int64_t>{rows, cols} : std::vector<std::int64_t>{rows};
    const std::int64_t n = rows * std::max<std::int64_t>(cols, 1);
    t.data.resize(static_cast<std::size_t>(n));
    const float scale = cols ? 1.0f / std::sqrt(float(cols)) : 0.0f;
    for (auto& v : t.data) v = cols ? rng.uniform() * scale : 1.0f;
    if (prune) prune_rows(t.data, rows, cols, sparsity);
    ck.tensors[name] = std::move(t);
  };
  const std::int64_t kv = dim / heads * kv_heads;
  add("model.embed_tokens.weight", vocab, dim, false);
  for (std::int64_t l = 0; l < layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    add(p + "input_layernorm.weight", dim, 0, false);
    add(p + "post_attention_layernorm.weight", dim, 0, false);
    add(p + "self_attn.q_proj.weight", dim, dim, true);
    add(p + "self_attn.k_proj.weight", kv, dim, true);
    add(p + "self_attn.v_proj.weight", kv, dim, true);
    add(p + "self_attn.o_proj.weight", dim, dim, true);
    add(p + "mlp.gate_proj.weight", hidden, dim, true);
    add(p + "mlp.down_proj.weight", dim, hidden, true);
    add(p + "mlp.up_proj.weight", hidden, dim, true);
  }
  add("model.norm.weight", dim, 0, false);
  add("lm_head.weight", vocab, dim, prune_classifier);
  // With --file: the model as a llama2.c file (written once; the weights are seeded, so an
  // existing file of the same name holds the same bytes), loaded by path.
  std::string path;
  if (!file_dir.empty()) {
    path = fmt::format("{}/synthetic-d{}-h{}-l{}-q{}-kv{}-v{}-s{:.2f}{}.bin", file_dir, dim, hidden, layers, heads, kv_heads,
                       vocab, sparsity, prune_classifier ? "-pc" : "");
    if (!std::filesystem::exists(path)) {
      std::filesystem::create_directories(file_dir);
      prunus::llama2c::write_checkpoint(path, ck);
    }
    ck = {};
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
  }
  const double make_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto load = [&](prunus::runtime::LoadOptions o) {
    return path.empty() ? prunus::runtime::Llama::from_checkpoint(ck, o) : prunus::runtime::Llama::load(path, o);
  };

  prunus::runtime::LoadOptions lo;
  lo.kernel.threads = threads;
  if (compare) {
    lo.dense = true;
    auto dense_model = load(lo);
    lo.dense = false;
    auto model = path.empty() ? prunus::runtime::Llama::from_checkpoint(std::move(ck), lo) : load(lo);
    for (std::int64_t pos = 0; pos < 2; ++pos) {
      dense_model.step(static_cast<std::int32_t>(pos % vocab), pos);
      model.step(static_cast<std::int32_t>(pos % vocab), pos);
    }
    std::vector<double> td, ts, ratio;
    for (std::int64_t pos = 2; pos < 2 + tokens; ++pos) {
      const auto tok = static_cast<std::int32_t>((pos * 7) % vocab);
      auto a = std::chrono::steady_clock::now();
      const float ld = dense_model.step(tok, pos)[0];
      auto b = std::chrono::steady_clock::now();
      const float ls = model.step(tok, pos)[0];
      auto c = std::chrono::steady_clock::now();
      td.push_back(std::chrono::duration<double>(b - a).count());
      ts.push_back(std::chrono::duration<double>(c - b).count());
      ratio.push_back(td.back() / ts.back());
      if (std::abs(ld - ls) > 1e-3f * (1.0f + std::abs(ld))) {
        std::fprintf(stderr, "dense and sparse logits differ at step %lld: %g vs %g\n", static_cast<long long>(pos), ld, ls);
        return 1;
      }
    }
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    const std::string formats = layer0_formats(model);
    std::printf(
        "{\"sparsity\": %.2f, \"mode\": \"compare\", \"threads\": %d, \"dim\": %lld, \"hidden\": %lld, "
        "\"layers\": %lld, \"vocab\": %lld, \"tokens\": %lld, \"dense_ms_per_token\": %.2f, "
        "\"sparse_ms_per_token\": %.2f, \"speedup_median_of_steps\": %.3f, \"dense_weight_mb\": %.1f, "
        "\"sparse_weight_mb\": %.1f, \"pruned_classifier\": %s, \"formats_layer0\": \"%s\"}\n",
        sparsity, threads, static_cast<long long>(dim), static_cast<long long>(hidden), static_cast<long long>(layers),
        static_cast<long long>(vocab), static_cast<long long>(tokens), 1e3 * median(td), 1e3 * median(ts),
        median(ratio), dense_model.weight_bytes() / 1e6, model.weight_bytes() / 1e6,
        prune_classifier ? "true" : "false", formats.c_str());
    return 0;
  }
  lo.dense = dense;
  const auto t1 = std::chrono::steady_clock::now();
  auto model = path.empty() ? prunus::runtime::Llama::from_checkpoint(std::move(ck), lo) : load(lo);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  const std::int64_t rss_kb = proc_status_kb("VmRSS:");

  // Warm-up, then time `tokens` decode steps (token ids cycle; positions advance).
  for (std::int64_t pos = 0; pos < 2; ++pos) model.step(static_cast<std::int32_t>(pos % vocab), pos);
  // The median step: this shared VM's neighbours stall single steps by tens of percent.
  std::vector<double> step_s;
  for (std::int64_t pos = 2; pos < 2 + tokens; ++pos) {
    const auto t2 = std::chrono::steady_clock::now();
    model.step(static_cast<std::int32_t>((pos * 7) % vocab), pos);
    step_s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t2).count());
  }
  const std::int64_t rss_after_kb = proc_status_kb("VmRSS:");  // with the rows of the tokens seen
  std::sort(step_s.begin(), step_s.end());
  const double gen_s = step_s[step_s.size() / 2] * double(tokens);

  const std::string formats = layer0_formats(model);
  std::printf(
      "{\"sparsity\": %.2f, \"path\": \"%s\", \"threads\": %d, \"dim\": %lld, \"hidden\": %lld, \"layers\": %lld, "
      "\"vocab\": %lld, \"tokens\": %lld, \"tokens_per_s\": %.3f, \"ms_per_token\": %.2f, \"weight_mb\": %.1f, "
      "\"rss_mb\": %.1f, \"rss_after_decode_mb\": %.1f, \"load_s\": %.1f, \"make_s\": %.1f, \"pruned_classifier\": %s, "
      "\"from_file\": %s, \"embedding_mapped\": %s, \"formats_layer0\": \"%s\"}\n",
      sparsity, dense ? "dense" : "auto", threads, static_cast<long long>(dim), static_cast<long long>(hidden),
      static_cast<long long>(layers), static_cast<long long>(vocab), static_cast<long long>(tokens),
      double(tokens) / gen_s, 1e3 * gen_s / double(tokens), model.weight_bytes() / 1e6, rss_kb / 1024.0,
      rss_after_kb / 1024.0, load_s, make_s, prune_classifier ? "true" : "false", path.empty() ? "false" : "true",
      model.embedding_mapped() ? "true" : "false", formats.c_str());
  return 0;
}
