// Sharded one-shot pruning of a synthetic LLaMA-7B-shaped model (hidden 4096, MLP 11008,
// 32 heads; a few decoder blocks): time per block on 1 vs N ranks, and a hash of every
// mask and weight so that runs of different sizes can be compared for equality.
//
//   one GPU:  dist_oneshot --layers 2 --device cuda
//   N GPUs:   torchrun --nproc-per-node N --no-python dist_oneshot --layers 2 --device cuda
//             (or prunus launch's variables; each rank takes cuda:LOCAL_RANK)
// Output: one JSON line on rank 0.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "prunus/distributed.h"
#include "prunus/llm.h"

namespace {

std::uint64_t fnv1a(const void* data, std::size_t n, std::uint64_t h = 1469598103934665603ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace prunus;
  std::int64_t layers = 2, nsamples = 128, seqlen = 2048, dim = 4096, hidden = 11008, heads = 32, vocab = 512;
  std::string method = "sparsegpt", device = "cuda";
  double sparsity = 0.5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--layers") layers = std::stoll(v);
    else if (k == "--nsamples") nsamples = std::stoll(v);
    else if (k == "--seqlen") seqlen = std::stoll(v);
    else if (k == "--dim") dim = std::stoll(v);
    else if (k == "--hidden") hidden = std::stoll(v);
    else if (k == "--heads") heads = std::stoll(v);
    else if (k == "--method") method = v;
    else if (k == "--device") device = v;
    else if (k == "--sparsity") sparsity = std::stod(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  try {
    dist::init_from_env(dist::options_from_env());
    auto& g = dist::world();
    if (device == "cuda") device = fmt::format("cuda:{}", g.local_rank());
    const torch::Device dev(device);
    torch::NoGradGuard ng;
    llm::Model m;
    m.config = {dim, hidden, layers, heads, heads, vocab, seqlen};
    m.config.shared_classifier = true;
    // The same seeded weights on every rank (generated where they will live).
    auto gen_opts = torch::TensorOptions().dtype(torch::kFloat32).device(dev);
    torch::manual_seed(1234);
    if (dev.is_cuda()) torch::cuda::manual_seed_all(1234);
    m.weights["model.embed_tokens.weight"] = torch::randn({vocab, dim}, gen_opts);
    m.weights["model.norm.weight"] = torch::ones({dim}, gen_opts);
    for (std::int64_t l = 0; l < layers; ++l) {
      const std::string p = fmt::format("model.layers.{}.", l);
      const double s_in = 1.0 / std::sqrt(double(dim)), s_hid = 1.0 / std::sqrt(double(hidden));
      for (const char* n : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"})
        m.weights[p + n + ".weight"] = torch::randn({dim, dim}, gen_opts) * s_in;
      m.weights[p + "mlp.gate_proj.weight"] = torch::randn({hidden, dim}, gen_opts) * s_in;
      m.weights[p + "mlp.up_proj.weight"] = torch::randn({hidden, dim}, gen_opts) * s_in;
      m.weights[p + "mlp.down_proj.weight"] = torch::randn({dim, hidden}, gen_opts) * s_hid;
      m.weights[p + "input_layernorm.weight"] = torch::ones({dim}, gen_opts);
      m.weights[p + "post_attention_layernorm.weight"] = torch::ones({dim}, gen_opts);
    }
    std::vector<std::int32_t> tokens(static_cast<std::size_t>(nsamples * seqlen * 2));
    std::uint64_t x = 88172645463325252ull;
    for (auto& t : tokens) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      t = static_cast<std::int32_t>(x % static_cast<std::uint64_t>(vocab));
    }
    llm::OneShotConfig cfg;
    cfg.method = method;
    cfg.sparsity = sparsity;
    cfg.nsamples = nsamples;
    cfg.seqlen = seqlen;
    cfg.device = device;
    cfg.progress = g.is_main();
    const auto r = llm::oneshot(m, tokens, cfg);
    // Hashes of each pruned linear's mask (bit per weight) and bytes.
    nlohmann::json hashes = nlohmann::json::object();
    std::uint64_t all_masks = 1469598103934665603ull, all_weights = 1469598103934665603ull;
    for (std::int64_t l = 0; l < layers; ++l)
      for (const auto& name : m.linear_names(static_cast<int>(l))) {
        auto w = m.w(name).contiguous();
        auto mask = (w != 0).to(torch::kUInt8).contiguous();
        const auto hm = fnv1a(mask.data_ptr(), static_cast<std::size_t>(mask.numel()));
        const auto hw = fnv1a(w.data_ptr(), static_cast<std::size_t>(w.numel()) * 4);
        all_masks = fnv1a(&hm, 8, all_masks);
        all_weights = fnv1a(&hw, 8, all_weights);
        hashes[name] = fmt::format("{:016x}", hm);
      }
    nlohmann::json out = {{"ranks", g.size()},
                          {"device", device},
                          {"gpu", dev.is_cuda() ? torch::cuda::device_count() : 0},
                          {"method", method},
                          {"sparsity", sparsity},
                          {"shape", fmt::format("dim {} hidden {} heads {} layers {}", dim, hidden, heads, layers)},
                          {"nsamples", nsamples},
                          {"seqlen", seqlen},
                          {"block_seconds", r.block_seconds},
                          {"seconds", r.seconds},
                          {"calib_seconds", r.calib_seconds},
                          {"solve_seconds_rank0", r.solve_seconds},
                          {"mask_hash", fmt::format("{:016x}", all_masks)},
                          {"weight_hash", fmt::format("{:016x}", all_weights)},
                          {"mask_hashes", hashes}};
    if (g.is_main()) std::printf("%s\n", out.dump().c_str());
    dist::finalize();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dist_oneshot: error: %s\n", e.what());
    dist::report_failure(e.what());
    std::fflush(nullptr);
    std::_Exit(2);
  }
}
