// prunus-cuda — the GPU side of Prunus for machines with an NVIDIA GPU and no training stack:
// the LLaMA forward of prunus::cuda (dense cuBLAS, 2:4 cuSPARSELt or auto per layer and batch
// size) over the models the runtime reads. Verbs:
//   perplexity MODEL TEXT   the default protocol of `prunus perplexity` (one document a line,
//                           BOS + leading space, concatenated, non-overlapping windows of the
//                           model's context, each scored alone; exp of the mean NLL)
//   generate MODEL          greedy tokens from BOS
//   bench                   prefill and decode tokens/s of a synthetic LLaMA (random weights
//                           pruned 2:4 by magnitude), dense vs 2:4 vs auto, one JSON line each
// Errors in input files: one line naming the file, exit 2.
#include <CLI/CLI.hpp>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "prunus/cuda.h"
#include "prunus/hf.h"
#include "prunus/io.h"
#include "prunus/llama2c.h"

namespace fs = std::filesystem;
using namespace prunus;

namespace {

struct Loaded {
  llama2c::Checkpoint ck;
  float norm_eps = 1e-5f, rope_theta = 10000.0f;
};

Loaded load_model(const std::string& path) {
  Loaded m;
  if (fs::is_directory(path)) {
    auto f = hf::read_llama_folder(path);
    const auto& c = f.config;
    m.ck.config = {std::int32_t(c.dim),        std::int32_t(c.hidden_dim), std::int32_t(c.n_layers),
                   std::int32_t(c.n_heads),    std::int32_t(c.n_kv_heads), std::int32_t(c.vocab_size),
                   std::int32_t(c.seq_len),    c.tie_word_embeddings,  std::int32_t(c.head_dim)};
    m.ck.tensors = std::move(f.tensors);
    m.norm_eps = float(c.norm_eps);
    m.rope_theta = float(c.rope_theta);
  } else {
    m.ck = llama2c::read_checkpoint(path);
  }
  return m;
}

llama2c::Tokenizer load_tokenizer(const Loaded& m, const std::string& model, const std::string& path) {
  const auto v = m.ck.config.vocab_size;
  return llama2c::Tokenizer::read_any(path.empty() ? llama2c::Tokenizer::default_path(model, v) : path, v);
}

cuda::LlamaGpuOptions options(const std::string& dtype, const std::string& gemm, std::int64_t max_tokens) {
  cuda::LlamaGpuOptions o;
  if (dtype == "fp16") o.dtype = cuda::DType::F16;
  else if (dtype == "bf16") o.dtype = cuda::DType::BF16;
  else fail("--dtype", "'" + dtype + "' is not fp16 or bf16");
  try {
    o.mode = cuda::parse_gemm_mode(gemm);
  } catch (const std::invalid_argument& e) {
    fail("--gemm", e.what());
  }
  o.max_tokens = max_tokens;
  return o;
}

int cmd_perplexity(const std::string& model, const std::string& text, const std::string& tok_path,
                   const std::string& dtype, const std::string& gemm, std::int64_t max_windows) {
  auto m = load_model(model);
  auto tok = load_tokenizer(m, model, tok_path);
  std::ifstream in(text, std::ios::binary);
  if (!in) fail(text, "cannot open the text");
  std::vector<std::int32_t> tokens;
  const char* ws = " \t\r\n\v\f";
  for (std::string line; std::getline(in, line);) {
    // A document is the line without surrounding whitespace (as prunus perplexity reads it).
    const auto b = line.find_first_not_of(ws);
    if (b == std::string::npos) continue;
    auto t = tok.encode(line.substr(b, line.find_last_not_of(ws) - b + 1), true, false);
    tokens.insert(tokens.end(), t.begin(), t.end());
  }
  const std::int64_t ctx = m.ck.config.seq_len;
  std::int64_t windows = std::int64_t(tokens.size()) / ctx;
  if (windows == 0) fail(text, std::to_string(tokens.size()) + " tokens is less than one window of " + std::to_string(ctx));
  if (max_windows > 0) windows = std::min(windows, max_windows);
  const auto t0 = std::chrono::steady_clock::now();
  cuda::LlamaGpu gpu(m.ck, options(dtype, gemm, ctx), m.norm_eps, m.rope_theta);
  m.ck.tensors.clear();
  double nll = 0;
  const auto t1 = std::chrono::steady_clock::now();
  for (std::int64_t w = 0; w < windows; ++w) {
    const std::int32_t* win = tokens.data() + w * ctx;
    gpu.forward(win, ctx, 0);
    nll += gpu.nll(win + 1, ctx - 1);
  }
  const auto t2 = std::chrono::steady_clock::now();
  const std::int64_t predicted = windows * (ctx - 1);
  std::printf(
      "{\"model\": \"%s\", \"gemm\": \"%s\", \"dtype\": \"%s\", \"tokens\": %zu, \"windows\": %lld, \"predicted\": %lld, "
      "\"mean_nll\": %.6f, \"perplexity\": %.4f, \"load_s\": %.2f, \"eval_s\": %.3f, \"weight_bytes\": %zu}\n",
      model.c_str(), gemm.c_str(), dtype.c_str(), tokens.size(), (long long)windows, (long long)predicted,
      nll / double(predicted), std::exp(nll / double(predicted)), std::chrono::duration<double>(t1 - t0).count(),
      std::chrono::duration<double>(t2 - t1).count(), gpu.weight_bytes());
  return 0;
}

int cmd_generate(const std::string& model, const std::string& tok_path, const std::string& dtype,
                 const std::string& gemm, std::int64_t steps) {
  auto m = load_model(model);
  auto tok = load_tokenizer(m, model, tok_path);
  cuda::LlamaGpu gpu(m.ck, options(dtype, gemm, 1), m.norm_eps, m.rope_theta);
  std::vector<std::int32_t> out = {llama2c::Tokenizer::kBos};
  for (std::int64_t s = 0; s < steps && std::int64_t(out.size()) < m.ck.config.seq_len; ++s) {
    gpu.forward(&out.back(), 1, std::int64_t(out.size()) - 1);
    auto lg = gpu.logits(0);
    const auto next = std::int32_t(std::max_element(lg.begin(), lg.end()) - lg.begin());
    if (next == llama2c::Tokenizer::kBos) break;
    std::printf("%s", tok.decode_token(out.back(), next).c_str());
    out.push_back(next);
  }
  std::printf("\n");
  return 0;
}

// A LLaMA with random weights (N(0, 0.02), norms 1) and every decoder linear pruned 2:4 by
// magnitude, so that dense (with zeros) and 2:4 run the same model.
llama2c::Checkpoint synthetic(std::int64_t dim, std::int64_t hidden, std::int64_t layers, std::int64_t heads,
                              std::int64_t kv_heads, std::int64_t vocab, std::int64_t seq, std::uint64_t seed) {
  llama2c::Checkpoint ck;
  ck.config = {std::int32_t(dim),      std::int32_t(hidden), std::int32_t(layers), std::int32_t(heads),
               std::int32_t(kv_heads), std::int32_t(vocab),  std::int32_t(seq),    true};
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  auto random = [&](std::int64_t rows, std::int64_t cols, bool prune) {
    llama2c::Tensor t{{rows, cols}, std::vector<float>(rows * cols)};
    for (auto& v : t.data) v = nd(rng);
    if (prune)
      for (std::int64_t g = 0; g < rows * cols; g += 4) {  // keep the two largest of four
        float* v = &t.data[g];
        int idx[4] = {0, 1, 2, 3};
        std::sort(idx, idx + 4, [&](int a, int b) { return std::fabs(v[a]) < std::fabs(v[b]); });
        v[idx[0]] = v[idx[1]] = 0.0f;
      }
    return t;
  };
  const std::int64_t kv = dim / heads * kv_heads;
  for (std::int64_t l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    ck.tensors[p + "self_attn.q_proj.weight"] = random(dim, dim, true);
    ck.tensors[p + "self_attn.k_proj.weight"] = random(kv, dim, true);
    ck.tensors[p + "self_attn.v_proj.weight"] = random(kv, dim, true);
    ck.tensors[p + "self_attn.o_proj.weight"] = random(dim, dim, true);
    ck.tensors[p + "mlp.gate_proj.weight"] = random(hidden, dim, true);
    ck.tensors[p + "mlp.down_proj.weight"] = random(dim, hidden, true);
    ck.tensors[p + "mlp.up_proj.weight"] = random(hidden, dim, true);
    ck.tensors[p + "input_layernorm.weight"] = {{dim}, std::vector<float>(dim, 1.0f)};
    ck.tensors[p + "post_attention_layernorm.weight"] = {{dim}, std::vector<float>(dim, 1.0f)};
  }
  ck.tensors["model.norm.weight"] = {{dim}, std::vector<float>(dim, 1.0f)};
  ck.tensors["model.embed_tokens.weight"] = random(vocab, dim, false);
  return ck;
}

int cmd_bench(std::int64_t layers, const std::vector<std::int64_t>& prefill, std::int64_t decode, const std::string& dtype,
              const std::vector<std::string>& modes, std::int64_t dim, std::int64_t hidden, std::int64_t heads,
              std::int64_t kv_heads, std::int64_t vocab) {
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) throw std::runtime_error("no CUDA device");
  setenv("PRUNUS_CSLT_SEARCH_S", "25", 0);  // complete searches (the first ones also load kernels)
  const std::int64_t longest = *std::max_element(prefill.begin(), prefill.end());
  const std::int64_t seq = std::max(longest, *std::min_element(prefill.begin(), prefill.end()) + decode + 8);
  const auto t0 = std::chrono::steady_clock::now();
  auto ck = synthetic(dim, hidden, layers, heads, kv_heads, vocab, seq, 1);
  std::fprintf(stderr, "synthetic model: %.1f s\n",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  std::vector<std::int32_t> toks(seq);
  std::mt19937 rng(7);
  for (auto& t : toks) t = std::int32_t(rng() % vocab);
  for (const auto& mode : modes) {
    cuda::LlamaGpu gpu(ck, options(dtype, mode, longest));
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    for (std::int64_t n : prefill) {
      gpu.forward(toks.data(), n, 0);  // first call at n: auto times both paths, 2:4 searches
      gpu.synchronize();
      // Auto's first call runs ~500 GEMMs a layer back to back; timed right after, the GPU was
      // still recovering from it (power and clocks). Every mode settles for a moment, and the
      // timed loop lasts ~0.3 s rather than a handful of calls.
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      const auto p0 = std::chrono::steady_clock::now();
      gpu.forward(toks.data(), n, 0);
      gpu.synchronize();
      const double once = std::chrono::duration<double>(std::chrono::steady_clock::now() - p0).count();
      const int reps = int(std::clamp(0.3 / std::max(once, 1e-6), 5.0, 500.0));
      cudaEventRecord(a, nullptr);
      const auto w0 = std::chrono::steady_clock::now();
      for (int r = 0; r < reps; ++r) gpu.forward(toks.data(), n, 0);
      gpu.synchronize();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count() / reps;
      int sparse = 0;
      for (const auto& l : gpu.linears()) sparse += l.sparse_at(n);
      std::printf(
          "{\"gpu\": \"%s\", \"cusparselt\": %d, \"dtype\": \"%s\", \"gemm\": \"%s\", \"layers\": %lld, \"phase\": \"prefill\", \"tokens\": %lld, "
          "\"ms\": %.3f, \"tokens_per_s\": %.1f, \"reps\": %d, \"sparse_linears\": %d, \"linears\": %zu, \"weight_bytes\": %zu}\n",
          prop.name, prunus::cuda::cusparselt_version(), dtype.c_str(), mode.c_str(), (long long)layers, (long long)n, 1000 * s, double(n) / s, reps, sparse,
          gpu.linears().size(), gpu.weight_bytes());
      std::fflush(stdout);
    }
    if (decode > 0) {
      // Greedy decode after a prompt as long as the shortest prefill (its plans are already
      // chosen): one token per forward, argmax on the host.
      const std::int64_t prompt = *std::min_element(prefill.begin(), prefill.end());
      auto run = [&](bool timed) {
        gpu.forward(toks.data(), prompt, 0);
        std::int32_t tok = toks[prompt];
        const auto w0 = std::chrono::steady_clock::now();
        for (std::int64_t i = 0; i < (timed ? decode : 4); ++i) {
          gpu.forward(&tok, 1, prompt + i);
          auto lg = gpu.logits(0);
          tok = std::int32_t(std::max_element(lg.begin(), lg.end()) - lg.begin());
        }
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count();
      };
      run(false);
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      const double s = run(true);
      int sparse = 0;
      for (const auto& l : gpu.linears()) sparse += l.sparse_at(1);
      std::printf(
          "{\"gpu\": \"%s\", \"cusparselt\": %d, \"dtype\": \"%s\", \"gemm\": \"%s\", \"layers\": %lld, \"phase\": \"decode\", \"tokens\": %lld, "
          "\"ms_per_token\": %.4f, \"tokens_per_s\": %.1f, \"sparse_linears\": %d, \"linears\": %zu}\n",
          prop.name, prunus::cuda::cusparselt_version(), dtype.c_str(), mode.c_str(), (long long)layers, (long long)decode, 1000 * s / decode,
          double(decode) / s, sparse, gpu.linears().size());
      std::fflush(stdout);
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"prunus-cuda: LLaMA on the GPU with dense cuBLAS or 2:4 cuSPARSELt linears"};
  app.require_subcommand(1);
  std::string model, text, tok, dtype = "fp16", gemm = "auto";
  std::int64_t max_windows = 0, steps = 64, layers = 2, decode = 128;
  std::int64_t dim = 4096, hidden = 11008, heads = 32, kv_heads = 32, vocab = 32000;
  std::vector<std::int64_t> prefill = {512, 2048};
  std::vector<std::string> modes = {"dense", "2:4", "auto"};
  auto* ppl = app.add_subcommand("perplexity", "Perplexity of MODEL on TEXT on the GPU (the default protocol of prunus perplexity)");
  ppl->add_option("model", model, "llama2.c checkpoint or Hugging Face folder")->required();
  ppl->add_option("text", text, "Text, one document a line")->required();
  ppl->add_option("--tokenizer", tok, "llama2.c tokenizer, tokenizer.json or tokenizer.model (default: the folder's tokenizer.json, else its tokenizer.model, else tok<vocab>.bin beside the model)");
  ppl->add_option("--dtype", dtype, "fp16 | bf16")->capture_default_str();
  ppl->add_option("--gemm", gemm, "dense | 2:4 | auto (2:4 where it measured faster) | int8-2:4 (W8A8 on 2:4)")->capture_default_str();
  ppl->add_option("--max-windows", max_windows, "Score at most this many windows (0: all)");
  auto* gen = app.add_subcommand("generate", "Greedy tokens from BOS on the GPU");
  gen->add_option("model", model)->required();
  gen->add_option("--tokenizer", tok);
  gen->add_option("--dtype", dtype)->capture_default_str();
  gen->add_option("--gemm", gemm)->capture_default_str();
  gen->add_option("--steps", steps)->capture_default_str();
  auto* bench = app.add_subcommand("bench", "Prefill and decode tokens/s of a synthetic LLaMA pruned 2:4, per GEMM mode");
  bench->add_option("--layers", layers)->capture_default_str();
  bench->add_option("--prefill", prefill, "Prefill lengths")->capture_default_str();
  bench->add_option("--decode", decode, "Decode steps (0: none)")->capture_default_str();
  bench->add_option("--dtype", dtype)->capture_default_str();
  bench->add_option("--modes", modes)->capture_default_str();
  bench->add_option("--dim", dim)->capture_default_str();
  bench->add_option("--hidden", hidden)->capture_default_str();
  bench->add_option("--heads", heads)->capture_default_str();
  bench->add_option("--kv-heads", kv_heads)->capture_default_str();
  bench->add_option("--vocab", vocab)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  try {
    if (*ppl) return cmd_perplexity(model, text, tok, dtype, gemm, max_windows);
    if (*gen) return cmd_generate(model, tok, dtype, gemm, steps);
    if (*bench) return cmd_bench(layers, prefill, decode, dtype, modes, dim, hidden, heads, kv_heads, vocab);
  } catch (const InputError& e) {
    std::fprintf(stderr, "prunus-cuda: %s\n", e.what());
    return 2;
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "prunus-cuda: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "prunus-cuda: %s\n", e.what());
    return 1;
  }
  return 0;
}
