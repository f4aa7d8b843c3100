// Language models: llama2.c files, tokenizer, forward, one-shot pruning methods.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "prunus/io.h"
#include "prunus/llama2c.h"
#include "prunus/llm.h"
#include "prunus/runtime.h"
#include "prunus/safetensors.h"
#include "test_util.h"

using namespace prunus;
namespace fs = std::filesystem;

namespace {

std::string shared_dir() { return PRUNUS_SHARED_DIR; }

bool have_shared() {
  if (fs::exists(shared_dir() + "/models/stories260K.bin")) return true;
  std::fprintf(stderr, "SKIPPED: %s/models/stories260K.bin not found (the shared test data)\n", shared_dir().c_str());
  return false;
}

// A small random LLaMA (GQA, unshared classifier) for tests that need no real weights.
llm::Model tiny_model(std::uint64_t seed) {
  torch::manual_seed(seed);
  llm::Model m;
  m.config = {32, 64, 2, 4, 2, 40, 16, false};
  llama2c::Checkpoint ck;
  ck.config = {32, 64, 2, 4, 2, 40, 16, false};
  auto add = [&](const std::string& n, std::vector<std::int64_t> shape, float scale) {
    m.weights[n] = torch::randn(shape) * scale;
  };
  add("model.embed_tokens.weight", {40, 32}, 1.0f);
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    m.weights[p + "input_layernorm.weight"] = torch::ones({32});
    m.weights[p + "post_attention_layernorm.weight"] = torch::ones({32});
    add(p + "self_attn.q_proj.weight", {32, 32}, 0.2f);
    add(p + "self_attn.k_proj.weight", {16, 32}, 0.2f);
    add(p + "self_attn.v_proj.weight", {16, 32}, 0.2f);
    add(p + "self_attn.o_proj.weight", {32, 32}, 0.2f);
    add(p + "mlp.gate_proj.weight", {64, 32}, 0.2f);
    add(p + "mlp.up_proj.weight", {64, 32}, 0.2f);
    add(p + "mlp.down_proj.weight", {32, 64}, 0.2f);
  }
  m.weights["model.norm.weight"] = torch::ones({32});
  add("lm_head.weight", {40, 32}, 0.5f);
  return m;
}

std::vector<std::int32_t> random_tokens(std::int64_t n, std::uint64_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::int32_t> t(static_cast<std::size_t>(n));
  for (auto& v : t) v = static_cast<std::int32_t>(rng() % 40);
  return t;
}

}  // namespace

TEST(Llama2c, WriteReadRoundTripIsExact) {
  test::TempDir dir;
  auto m = tiny_model(1);
  llm::save(dir.file("m.bin"), m);
  auto back = llm::load(dir.file("m.bin"));
  EXPECT_FALSE(back.config.shared_classifier);
  for (const auto& [name, t] : m.weights) EXPECT_TRUE(torch::equal(t, back.w(name))) << name;
  // The same model written twice gives the same bytes.
  llm::save(dir.file("m2.bin"), back);
  EXPECT_EQ(test::read_bytes(dir.file("m.bin")), test::read_bytes(dir.file("m2.bin")));
}

TEST(Llama2c, BadCheckpointsAreRejectedNamingTheFile) {
  test::TempDir dir;
  llm::save(dir.file("m.bin"), tiny_model(1));
  const auto good = test::read_bytes(dir.file("m.bin"));
  auto error_for = [&](const std::string& bytes) {
    const auto p = dir.file("bad.bin");
    test::write_bytes(p, bytes);
    try {
      llama2c::read_checkpoint(p);
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(p + ": "), std::string::npos);
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(error_for(good.substr(0, 20)).find("shorter than the 28-byte header"), std::string::npos);
  EXPECT_NE(error_for(good.substr(0, good.size() - 4)).find("truncated"), std::string::npos);
  EXPECT_NE(error_for(good + "xxxx").find("trailing bytes"), std::string::npos);
  auto bad_heads = good;
  const std::int32_t three = 3;
  std::memcpy(&bad_heads[12], &three, 4);  // n_heads = 3 does not divide dim 32
  EXPECT_NE(error_for(bad_heads).find("inconsistent"), std::string::npos);
  auto zero = good;
  std::memset(&zero[0], 0, 4);
  EXPECT_NE(error_for(zero).find("non-positive"), std::string::npos);
  auto nan = good;
  const float n = NAN;
  std::memcpy(&nan[28 + 4 * 7], &n, 4);
  EXPECT_NE(error_for(nan).find("NaN"), std::string::npos);
}

TEST(Llama2c, TokenizerMatchesTheReferenceCountAndRejectsAMismatchedVocab) {
  if (!have_shared()) GTEST_SKIP() << "shared data not present";
  const auto tok = llama2c::Tokenizer::read(shared_dir() + "/models/tok512.bin", 512);
  // ../shared/models/SOURCES.md: 384,909 tokens for the validation text with BOS + dummy prefix per line.
  EXPECT_EQ(llm::tokenize_documents(shared_dir() + "/data/tinystories_valid.txt", tok).size(), 384909u);
  // Byte fallback: a character outside the vocabulary becomes its UTF-8 bytes (+3).
  const auto t = tok.encode("\xe2\x98\x83", false, false);  // U+2603 snowman
  ASSERT_GE(t.size(), 3u);
  EXPECT_EQ(t[t.size() - 3], 0xe2 + 3);
  EXPECT_THROW(llama2c::Tokenizer::read(shared_dir() + "/models/tok512.bin", 500), InputError);
  EXPECT_THROW(llama2c::Tokenizer::read(shared_dir() + "/models/tok512.bin", 600), InputError);
}

// llama2.c's encode as written in run.c (full rescan per merge): the reference the heap-based
// Tokenizer::encode must match token for token.
struct NaiveBpe {
  std::vector<std::string> vocab;
  std::vector<float> scores;
  int find(const std::string& s) const {
    for (std::size_t i = 0; i < vocab.size(); ++i)
      if (vocab[i] == s) return static_cast<int>(i);
    return -1;
  }
  std::vector<std::int32_t> encode(const std::string& text) const {
    std::vector<std::int32_t> t{1};  // BOS
    if (!text.empty() && find(" ") >= 0) t.push_back(find(" "));
    std::string buf;
    for (std::size_t i = 0; i < text.size(); ++i) {
      if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) buf.clear();
      buf.push_back(text[i]);
      if (i + 1 < text.size() && (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80 && buf.size() < 4) continue;
      const int id = find(buf);
      if (id >= 0) t.push_back(id);
      else
        for (unsigned char b : buf) t.push_back(b + 3);
      buf.clear();
    }
    for (;;) {
      float best = -1e10f;
      int best_id = -1, best_at = -1;
      for (std::size_t i = 0; i + 1 < t.size(); ++i) {
        const int id = find(vocab[t[i]] + vocab[t[i + 1]]);
        if (id >= 0 && scores[id] > best) best = scores[id], best_id = id, best_at = static_cast<int>(i);
      }
      if (best_id < 0) break;
      t[best_at] = best_id;
      t.erase(t.begin() + best_at + 1);
    }
    return t;
  }
  std::string bytes() const {  // llama2.c tokenizer file
    std::string out(4, '\0');
    std::int32_t max_len = 0;
    for (const auto& v : vocab) max_len = std::max<std::int32_t>(max_len, static_cast<std::int32_t>(v.size()));
    std::memcpy(out.data(), &max_len, 4);
    for (std::size_t i = 0; i < vocab.size(); ++i) {
      const std::int32_t len = static_cast<std::int32_t>(vocab[i].size());
      out.append(reinterpret_cast<const char*>(&scores[i]), 4);
      out.append(reinterpret_cast<const char*>(&len), 4);
      out += vocab[i];
    }
    return out;
  }
};

TEST(Llama2c, TokenizerMergesExactlyAsTheRescanningReference) {
  // A vocabulary full of score ties and overlapping merges (aaa…, abab…), where the heap's
  // tie-break (leftmost pair) and its stale-pair checks matter.
  NaiveBpe ref;
  ref.vocab = {"<unk>", "<s>", "</s>"};
  for (int b = 0; b < 256; ++b) ref.vocab.push_back(fmt::format("<0x{:02X}>", b));
  for (std::string v : {" ", "a", "b", "c", "aa", "ab", "ba", "bb", "aaa", "aab", "abab", " a", " ab", "cab", "abc", "caa",
                        "aaaa", "bab", "\xc3\xa9", "a\xc3\xa9"})
    ref.vocab.push_back(v);
  std::mt19937 rng(7);
  ref.scores.assign(ref.vocab.size(), 0.0f);
  for (std::size_t i = 259; i < ref.vocab.size(); ++i) ref.scores[i] = static_cast<float>(rng() % 4);  // many ties
  const auto bytes = ref.bytes();
  const auto tok = llama2c::Tokenizer::parse(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(), "synthetic",
                                             static_cast<std::int32_t>(ref.vocab.size()));
  const std::vector<std::string> alphabet = {"a", "b", "c", " ", "\xc3\xa9", "z", "\xe2\x98\x83"};
  for (int trial = 0; trial < 300; ++trial) {
    std::string text;
    const int n = static_cast<int>(rng() % 40);
    for (int i = 0; i < n; ++i) text += alphabet[rng() % (trial % 2 ? 3 : alphabet.size())];
    ASSERT_EQ(tok.encode(text, true, false), ref.encode(text)) << "text '" << text << "'";
  }
  // The real 512-token vocabulary on real lines, when the shared data is there.
  if (!have_shared()) return;
  NaiveBpe real;
  const auto file = test::read_bytes(shared_dir() + "/models/tok512.bin");
  for (std::size_t p = 4; p < file.size();) {
    float score;
    std::int32_t len;
    std::memcpy(&score, &file[p], 4);
    std::memcpy(&len, &file[p + 4], 4);
    real.scores.push_back(score);
    real.vocab.push_back(file.substr(p + 8, static_cast<std::size_t>(len)));
    p += 8 + static_cast<std::size_t>(len);
  }
  const auto tok512 = llama2c::Tokenizer::read(shared_dir() + "/models/tok512.bin", 512);
  std::ifstream in(shared_dir() + "/data/tinystories_valid.txt");
  std::string line;
  for (int i = 0; i < 40 && std::getline(in, line); ++i)
    ASSERT_EQ(tok512.encode(line, true, false), real.encode(line)) << "line " << i;
}

TEST(Llm, GreedyDecodingReproducesTheLlama2cSample) {
  if (!have_shared()) GTEST_SKIP() << "shared data not present";
  const auto m = llm::load(shared_dir() + "/models/stories260K.bin");
  const auto tok = llama2c::Tokenizer::read(shared_dir() + "/models/tok512.bin", 512);
  const auto out = llm::generate_greedy(m, 40);
  std::string text;
  for (std::size_t i = 1; i < out.size(); ++i) text += tok.decode_token(out[i - 1], out[i]);
  // llama2.c's doc/stories260K.md sample.
  EXPECT_EQ(text.rfind("Once upon a time, there was a little girl named Lily. She loved to play outside in the park.", 0), 0u)
      << text;
}

TEST(Llm, ForwardIsCausal) {
  auto m = tiny_model(2);
  auto t = torch::randint(0, 40, {2, 12}, torch::kInt64);
  auto a = m.forward(t);
  auto t2 = t.clone();
  t2.narrow(1, 8, 4).fill_(3);  // change the future only
  auto b = m.forward(t2);
  EXPECT_TRUE(torch::allclose(a.narrow(1, 0, 8), b.narrow(1, 0, 8), 1e-5, 1e-6));
  EXPECT_FALSE(torch::allclose(a.narrow(1, 8, 4), b.narrow(1, 8, 4)));
}

TEST(OneShot, EveryMethodIsExactPerRowAndObeysNM) {
  for (const std::string method : {"magnitude", "wanda", "sparsegpt"}) {
    for (const std::string pattern : {"50%", "2:4", "4:8"}) {
      auto m = tiny_model(3);
      llm::OneShotConfig cfg;
      cfg.method = method;
      cfg.progress = false;
      cfg.nsamples = 8;
      if (pattern == "50%") cfg.sparsity = 0.5;
      else {
        cfg.n = pattern[0] - '0';
        cfg.m = pattern[2] - '0';
      }
      auto r = llm::oneshot(m, random_tokens(400, 4), cfg);
      ASSERT_EQ(r.layers.size(), 14u);
      for (int l = 0; l < 2; ++l)
        for (const auto& name : m.linear_names(l)) {
          const auto& w = m.w(name);
          auto zeros_per_row = (w == 0).sum(1);
          if (cfg.m == 0) {
            if (method != "sparsegpt") {  // SparseGPT is exact per block of columns, not per row
              EXPECT_TRUE((zeros_per_row == w.size(1) / 2).all().item<bool>()) << method << " " << name;
            }
            EXPECT_EQ((w == 0).sum().item<std::int64_t>(), w.numel() / 2) << method << " " << name;
          } else {
            auto groups = (w != 0).reshape({w.size(0), -1, cfg.m}).sum(2);
            EXPECT_TRUE((groups <= cfg.n).all().item<bool>()) << method << " " << pattern << " " << name;
            EXPECT_EQ((w == 0).sum().item<std::int64_t>(), w.numel() / cfg.m * (cfg.m - cfg.n));
          }
        }
      // Embeddings and classifier are kept.
      EXPECT_EQ(m.w("lm_head.weight").count_nonzero().item<std::int64_t>(), 40 * 32);
    }
  }
}

TEST(OneShot, SparseGptWithIdentityHessianIsMagnitudePruning) {
  torch::manual_seed(5);
  auto w = torch::randn({8, 32});
  llm::OneShotConfig cfg;
  cfg.sparsity = 0.5;
  cfg.blocksize = 32;
  auto pruned = w.clone();
  llm::sparsegpt_prune(pruned, torch::eye(32), cfg, "w");
  // With H = I there is nothing to compensate: the kept weights are the largest, unchanged.
  auto expect = w.masked_fill(llm::magnitude_mask(w, [] {
                                llm::OneShotConfig c;
                                c.sparsity = 0.5;
                                c.magnitude_scope = "layer";
                                return c;
                              }()),
                              0.0);
  EXPECT_TRUE(torch::allclose(pruned, expect, 1e-5, 1e-6));
}

TEST(OneShot, SparseGptReconstructsLayerOutputsBetterThanWandaAndMagnitude) {
  torch::manual_seed(6);
  // Correlated inputs with uneven scales: where OBS updates and activation norms matter.
  auto x = torch::matmul(torch::randn({512, 64}), torch::randn({64, 64})) * torch::linspace(0.1, 3.0, 64);
  auto w = torch::randn({32, 64});
  auto y = torch::matmul(x, w.t());
  llm::OneShotConfig cfg;
  cfg.sparsity = 0.5;
  auto err = [&](const torch::Tensor& wp) { return (torch::matmul(x, wp.t()) - y).pow(2).sum().item<double>(); };
  auto mag = w.masked_fill(llm::magnitude_mask(w, cfg), 0.0);
  auto wanda = w.masked_fill(llm::wanda_mask(w, x.pow(2).sum(0) / 512.0, cfg), 0.0);
  auto sgpt = w.clone();
  llm::sparsegpt_prune(sgpt, torch::matmul(x.t(), x) * (2.0 / 512), cfg, "w");
  EXPECT_LT(err(sgpt), err(wanda));
  EXPECT_LT(err(wanda), err(mag));
}

TEST(OneShot, CholeskyFailureRaisesDampeningAndSaysSo) {
  auto w = torch::randn({4, 8});
  auto h = -torch::eye(8);  // negative definite: no dampening of 1% fixes it at first
  llm::OneShotConfig cfg;
  cfg.sparsity = 0.5;
  cfg.damp = 1e-4;
  EXPECT_THROW(llm::sparsegpt_prune(w, h, cfg, "layer.weight"), InputError);
  auto h2 = torch::ones({8, 8});  // rank 1: needs dampening
  cfg.damp = 1e-12;
  auto w2 = torch::randn({4, 8});
  const double used = llm::sparsegpt_prune(w2, h2, cfg, "layer.weight");
  EXPECT_GT(used, 1e-12);
  EXPECT_EQ((w2 == 0).sum().item<std::int64_t>(), 16);
}

TEST(Llm, PrunedModelsRankAsThePapersSay) {
  if (!have_shared()) GTEST_SKIP() << "shared data not present";
  const auto base = llm::load(shared_dir() + "/models/stories260K.bin");
  const auto tok = llama2c::Tokenizer::read(shared_dir() + "/models/tok512.bin", 512);
  const auto tokens = llm::tokenize_documents(shared_dir() + "/data/tinystories_valid.txt", tok);
  const std::vector<std::int32_t> eval(tokens.end() - 30 * 512, tokens.end());  // last 30 windows
  std::map<std::string, double> ppl;
  for (const std::string method : {"magnitude", "wanda", "sparsegpt"}) {
    auto m = base;
    for (auto& [k, v] : m.weights) v = v.clone();
    llm::OneShotConfig cfg;
    cfg.method = method;
    cfg.sparsity = 0.5;
    cfg.nsamples = 16;
    cfg.seqlen = 256;
    cfg.progress = false;
    llm::oneshot(m, tokens, cfg);
    ppl[method] = llm::perplexity(m, eval, 512).perplexity;
  }
  const double dense = llm::perplexity(base, eval, 512).perplexity;
  EXPECT_LT(dense, ppl["sparsegpt"]);
  EXPECT_LE(ppl["sparsegpt"], ppl["wanda"]);
  EXPECT_LT(ppl["wanda"], ppl["magnitude"]);
}

TEST(OneShot, OwlAllocationMatchesTheFormula) {
  // Outlier ratios 1%, 2%, 4%: rescaled to [0, 2λ], centred on 1 − s.
  const auto s = llm::owl_allocation({0.01, 0.02, 0.04}, 0.7, 0.08);
  ASSERT_EQ(s.size(), 3u);
  const double k0 = 0.0, k1 = (0.02 - 0.01) / 0.03 * 0.16, k2 = 0.16, mean = (k0 + k1 + k2) / 3;
  EXPECT_NEAR(s[0], 1 - (k0 - mean + 0.3), 1e-12);
  EXPECT_NEAR(s[2], 1 - (k2 - mean + 0.3), 1e-12);
  EXPECT_NEAR((s[0] + s[1] + s[2]) / 3, 0.7, 1e-12);  // the mean is the target
  EXPECT_GT(s[0], s[2]);                                // more outliers → pruned less
}

TEST(OneShot, OwlKeepsTheOverallTargetWithUnevenBlocks) {
  auto m = tiny_model(7);
  llm::OneShotConfig cfg;
  cfg.method = "owl";
  cfg.sparsity = 0.7;
  cfg.nsamples = 8;
  cfg.progress = false;
  auto r = llm::oneshot(m, random_tokens(400, 8), cfg);
  ASSERT_EQ(r.block_sparsity.size(), 2u);
  EXPECT_NEAR((r.block_sparsity[0] + r.block_sparsity[1]) / 2, 0.7, 1e-9);
  std::int64_t n = 0, z = 0;
  for (const auto& l : r.layers) {
    n += l.numel;
    z += l.zeros;
  }
  EXPECT_NEAR(double(z) / double(n), 0.7, 0.01);
  cfg.n = 2;
  cfg.m = 4;
  EXPECT_THROW(llm::oneshot(m, random_tokens(400, 8), cfg), InputError);
}

TEST(OneShot, NMNeedsInputsThatDivideAndSkipListsKeepLayersDense) {
  auto m = tiny_model(9);  // down_proj has 64 inputs: fine for 2:4; 4:8 also; make one that is not
  m.weights["model.layers.1.mlp.down_proj.weight"] = torch::randn({32, 60});
  m.weights["model.layers.1.mlp.gate_proj.weight"] = torch::randn({60, 32});
  m.weights["model.layers.1.mlp.up_proj.weight"] = torch::randn({60, 32});
  llm::OneShotConfig cfg;
  cfg.method = "magnitude";
  cfg.n = 4;
  cfg.m = 8;
  cfg.progress = false;
  try {
    llm::oneshot(m, {}, cfg);
    ADD_FAILURE() << "expected an error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.1.mlp.down_proj.weight: input size 60"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(m.w("model.layers.0.self_attn.q_proj.weight").count_nonzero().item<std::int64_t>(), 32 * 32)
      << "nothing is pruned before the check";
  cfg.skip = {"down_proj"};
  llm::oneshot(m, {}, cfg);
  EXPECT_EQ(m.w("model.layers.1.mlp.down_proj.weight").count_nonzero().item<std::int64_t>(), 32 * 60);
  EXPECT_EQ(m.w("model.layers.0.mlp.down_proj.weight").count_nonzero().item<std::int64_t>(), 32 * 64);
  EXPECT_EQ(m.w("model.layers.0.self_attn.q_proj.weight").count_nonzero().item<std::int64_t>(), 32 * 16);
}

TEST(HuggingFace, FolderRoundTripIsExactAndBadFoldersAreRejected) {
  test::TempDir dir;
  auto m = tiny_model(10);
  const auto hf = dir.file("hf");
  llm::save(hf, m);  // no .bin: a Hugging Face folder
  ASSERT_TRUE(fs::exists(hf + "/config.json"));
  auto back = llm::load(hf);
  EXPECT_FALSE(back.config.shared_classifier);
  EXPECT_EQ(back.config.n_kv_heads, 2);
  for (const auto& [name, t] : m.weights) EXPECT_TRUE(torch::equal(t, back.w(name))) << name;
  // q/k are stored permuted (HF's rotate-half RoPE), everything else as is.
  auto f = safetensors::File::open(hf + "/model.safetensors");
  const auto q = f.at("model.layers.0.self_attn.q_proj.weight").to_f32();
  EXPECT_FALSE(torch::equal(torch::from_blob(const_cast<float*>(q.data()), {32, 32}), m.w("model.layers.0.self_attn.q_proj.weight")));
  const auto v = f.at("model.layers.0.self_attn.v_proj.weight").to_f32();
  EXPECT_TRUE(torch::equal(torch::from_blob(const_cast<float*>(v.data()), {16, 32}), m.w("model.layers.0.self_attn.v_proj.weight")));

  auto error_for = [&](const std::function<void()>& mutate) {
    const auto bad = dir.file("bad");
    fs::remove_all(bad);
    fs::copy(hf, bad);
    mutate();
    try {
      llm::load(bad);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(error_for([&] { test::write_bytes(dir.file("bad/config.json"), "{\"hidden_size\": 32}"); })
                .find("config.json has no 'intermediate_size'"),
            std::string::npos);
  // A number too large for its field is an error, not undefined behaviour in the conversion.
  EXPECT_NE(error_for([&] { test::write_bytes(dir.file("bad/config.json"), "{\"hidden_size\": 3.3e69}"); })
                .find("'hidden_size' must be an integer"),
            std::string::npos);
  EXPECT_NE(error_for([&] {
              test::write_bytes(dir.file("bad/model.safetensors.index.json"),
                                "{\"weight_map\": {\"model.norm.weight\": \"../evil.safetensors\"}}");
            }).find("outside the model folder"),
            std::string::npos);
  EXPECT_NE(error_for([&] {
              test::write_bytes(dir.file("bad/model.safetensors.index.json"),
                                "{\"weight_map\": {\"model.norm.weight\": \"shard-2.safetensors\"}}");
            }).find("no shard listed"),
            std::string::npos);
  EXPECT_NE(error_for([&] { fs::remove(dir.file("bad/model.safetensors")); }).find("model file not found"),
            std::string::npos);
  // A sharded folder whose index names a shard file that is not there.
  EXPECT_NE(error_for([&] {
              std::string map = "{\"weight_map\": {";
              bool first = true;
              const auto file = safetensors::File::open(dir.file("bad/model.safetensors"));
              for (const auto& t : file.tensors()) {
                map += std::string(first ? "" : ", ") + "\"" + t.name + "\": \"model-00002-of-00002.safetensors\"";
                first = false;
              }
              test::write_bytes(dir.file("bad/model.safetensors.index.json"), map + "}}");
              fs::remove(dir.file("bad/model.safetensors"));  // the mapping stays valid after unlink
            }).find("model-00002-of-00002.safetensors: model file not found"),
            std::string::npos);
}

// The runtime's decoder (no libtorch, KV cache, formats chosen by measurement) against the
// libtorch forward: every position's logits within 1e-4 of the largest logit, dense and
// with half of every linear pruned (so sparse formats compete), GQA and an unshared classifier
// (pruned too in the pruned case: it then gets a measured format and a row in layers()).
TEST(NativeRuntime, LogitsMatchTheLibtorchForward) {
  for (bool pruned : {false, true}) {
    auto m = tiny_model(5);
    if (pruned) {
      torch::manual_seed(9);
      for (int l = 0; l < m.config.n_layers; ++l)
        for (const auto& n : m.linear_names(l)) m.weights[n] *= (torch::rand(m.weights[n].sizes()) > 0.5).to(torch::kFloat32);
      m.weights["lm_head.weight"] *= (torch::rand(m.weights["lm_head.weight"].sizes()) > 0.5).to(torch::kFloat32);
    }
    const auto tokens = random_tokens(16, 3);
    auto t = torch::from_blob(const_cast<std::int32_t*>(tokens.data()), {1, 16}, torch::kInt32).to(torch::kInt64);
    const auto ref = m.forward(t)[0].contiguous();  // [16, vocab]
    for (bool dense : {true, false}) {
      runtime::LoadOptions lo;
      lo.dense = dense;
      auto rt = runtime::Llama::from_checkpoint(llm::to_llama2c(m), lo);
      double worst = 0;
      for (std::int64_t pos = 0; pos < 16; ++pos) {
        const auto& logits = rt.step(tokens[pos], pos);
        const auto row = ref[pos];
        const double scale = row.abs().max().item<double>();
        for (std::int64_t v = 0; v < 40; ++v)
          worst = std::max(worst, std::abs(double(logits[v]) - row[v].item<double>()) / scale);
      }
      EXPECT_LT(worst, 1e-4) << (pruned ? "pruned" : "dense") << (dense ? " dense path" : " auto formats");
      const bool has_head = !rt.layers().empty() && rt.layers().back().name == "lm_head";
      EXPECT_EQ(has_head, pruned && !dense) << "the classifier is a measured layer exactly when it is pruned";
    }
  }
}

// Llama::load reads an unshared embedding table's rows from the file (mmap) instead of holding
// a copy: the logits must be the copy's bit for bit — from a llama2.c file (fp32 after the
// header) and from a Hugging Face folder whose table is BF16 in a shard the index names.
TEST(NativeRuntime, EmbeddingReadFromTheFileGivesTheCopysLogits) {
  test::TempDir dir;
  auto m = tiny_model(11);
  llm::save(dir.file("m.bin"), m);
  const std::string folder = dir.file("hf");
  llm::save_hf(folder, m);
  {  // the table as BF16, in a shard named by an index
    const auto f = safetensors::File::open(folder + "/model.safetensors");
    std::vector<std::uint16_t> bf16;
    std::vector<safetensors::TensorToWrite> out;
    nlohmann::json weight_map;
    for (const auto& t : f.tensors()) {
      weight_map[t.name] = "model-00001-of-00001.safetensors";
      if (t.name != "model.embed_tokens.weight") {
        out.push_back({t.name, t.dtype, t.shape, t.data});
        continue;
      }
      for (float v : t.to_f32()) {
        std::uint32_t bits;
        std::memcpy(&bits, &v, 4);
        bf16.push_back(std::uint16_t(bits >> 16));
      }
      out.push_back({t.name, safetensors::DType::BF16, t.shape, bf16.data()});
    }
    safetensors::write(folder + "/model-00001-of-00001.safetensors", out);
    std::ofstream(folder + "/model.safetensors.index.json") << nlohmann::json{{"metadata", nlohmann::json::object()},
                                                                              {"weight_map", weight_map}}.dump();
    fs::remove(folder + "/model.safetensors");
  }
  const auto tokens = random_tokens(16, 5);
  for (const std::string path : {dir.file("m.bin"), folder}) {
    runtime::LoadOptions copy;
    copy.map_embedding = false;
    auto held = runtime::Llama::load(path, copy);
    auto mapped = runtime::Llama::load(path);
    EXPECT_FALSE(held.embedding_mapped()) << path;
    EXPECT_TRUE(mapped.embedding_mapped()) << path;
    const std::uint64_t table = 40 * 32 * (path == folder ? 2 : 4);
    EXPECT_EQ(mapped.weight_bytes() + 40 * 32 * 4, held.weight_bytes() + table) << path;
    for (std::int64_t pos = 0; pos < 16; ++pos) {
      const auto a = held.step(tokens[pos], pos);
      const auto& b = mapped.step(tokens[pos], pos);
      ASSERT_EQ(a, b) << path << " position " << pos;
    }
  }
  // A shared classifier is the embedding table too (read whole every token): it stays in memory.
  auto shared = m;
  shared.config.shared_classifier = true;
  shared.weights.erase("lm_head.weight");
  llm::save(dir.file("shared.bin"), shared);
  EXPECT_FALSE(runtime::Llama::load(dir.file("shared.bin")).embedding_mapped());
}

TEST(NativeRuntime, GreedyDecodingEqualsTheLibtorchPathOnStories260K) {
  if (!have_shared()) GTEST_SKIP() << "shared data not present";
  const auto m = llm::load(shared_dir() + "/models/stories260K.bin");
  const auto ref = llm::generate_greedy(m, 120);
  auto rt = runtime::Llama::load(shared_dir() + "/models/stories260K.bin");
  EXPECT_EQ(rt.generate_greedy(120), ref);
  EXPECT_EQ(rt.layers().size(), 35u);
}

TEST(NativeRuntime, BadTokensPositionsAndShapesAreErrors) {
  auto m = tiny_model(6);
  auto rt = runtime::Llama::from_checkpoint(llm::to_llama2c(m));
  EXPECT_THROW(rt.step(40, 0), InputError);
  EXPECT_THROW(rt.step(0, 16), InputError);
  auto ck = llm::to_llama2c(m);
  ck.tensors["model.layers.1.mlp.up_proj.weight"].shape = {32, 64};
  try {
    runtime::Llama::from_checkpoint(std::move(ck));
    FAIL() << "a wrong shape was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("up_proj"), std::string::npos) << e.what();
  }
}

// Structured pruning of a GQA model: whole SwiGLU neurons and whole KV groups (a KV head and
// its two query heads) out. The shrunk model computes what the same-shape model with those
// units zeroed computes, in libtorch, in the runtime and after a Hugging Face folder round
// trip; the unit each criterion must rank last goes first.
TEST(LlmShrink, RemovedNeuronsAndHeadsGiveTheMaskedLogitsAndTheWeakestGoFirst) {
  auto base = tiny_model(7);
  {
    torch::NoGradGuard ng;
    base.weights["model.layers.0.mlp.down_proj.weight"].select(1, 5).zero_();  // activation score 0
    for (const char* p : {"gate_proj", "up_proj"}) base.weights[std::string("model.layers.1.mlp.") + p + ".weight"][9] *= 1e-3;
    base.weights["model.layers.1.mlp.down_proj.weight"].select(1, 9).mul_(1e-3);  // smallest l2 norm
    // KV group 1 = query heads 2 and 3 (rows/columns 16..31), KV head 1 (rows 8..15).
    base.weights["model.layers.0.self_attn.o_proj.weight"].narrow(1, 16, 16).zero_();
    for (const char* p : {"q_proj", "o_proj"}) {
      auto& w = base.weights[std::string("model.layers.1.self_attn.") + p + ".weight"];
      (p[0] == 'q' ? w.narrow(0, 16, 16) : w.narrow(1, 16, 16)).mul_(1e-3);
    }
    for (const char* p : {"k_proj", "v_proj"}) base.weights[std::string("model.layers.1.self_attn.") + p + ".weight"].narrow(0, 8, 8).mul_(1e-3);
  }
  const auto calib = random_tokens(400, 11);
  const auto tokens = random_tokens(16, 3);
  auto t = torch::from_blob(const_cast<std::int32_t*>(tokens.data()), {1, 16}, torch::kInt32).to(torch::kInt64);
  for (const std::string criterion : {"activation", "l2", "random"}) {
    llm::LlmShrinkConfig cfg;
    cfg.criterion = criterion;
    cfg.mlp_fraction = 0.3;  // 64 − 19 = 45, rounded up to 48
    cfg.head_fraction = 0.5;  // one of the two KV groups
    cfg.round_to = 8;
    cfg.nsamples = 8;
    cfg.seqlen = 16;
    const auto plan = llm::plan_llm_shrink(base, calib, cfg);
    EXPECT_EQ(plan.hidden_before, 64);
    EXPECT_EQ(plan.hidden_after, 48) << criterion;
    ASSERT_EQ(plan.kept.size(), 2u);
    for (const auto& k : plan.kept) {
      ASSERT_EQ(k.size(), 48u);
      EXPECT_TRUE(std::is_sorted(k.begin(), k.end()) && std::adjacent_find(k.begin(), k.end()) == k.end());
    }
    const auto again = llm::plan_llm_shrink(base, calib, cfg);
    EXPECT_EQ(again.kept, plan.kept) << criterion << ": same inputs, same neurons";
    auto has = [](const std::vector<std::int64_t>& k, std::int64_t j) { return std::find(k.begin(), k.end(), j) != k.end(); };
    if (criterion == "activation") EXPECT_FALSE(has(plan.kept[0], 5));
    if (criterion != "random") EXPECT_FALSE(has(plan.kept[1], 9)) << criterion;
    EXPECT_EQ(plan.kv_after, 1);
    if (criterion == "activation") EXPECT_EQ(plan.kept_groups[0], std::vector<std::int64_t>{0});
    if (criterion != "random") EXPECT_EQ(plan.kept_groups[1], std::vector<std::int64_t>{0}) << criterion;

    auto shrunk = base, masked = base;
    for (auto& [n, w] : shrunk.weights) w = w.clone();
    for (auto& [n, w] : masked.weights) w = w.clone();
    llm::apply_llm_shrink(shrunk, plan);
    llm::mask_llm_shrink(masked, plan);
    EXPECT_EQ(shrunk.config.hidden_dim, 48);
    EXPECT_EQ(shrunk.w("model.layers.1.mlp.gate_proj.weight").sizes(), (std::vector<std::int64_t>{48, 32}));
    EXPECT_EQ(shrunk.w("model.layers.1.mlp.down_proj.weight").sizes(), (std::vector<std::int64_t>{32, 48}));
    EXPECT_EQ(shrunk.config.n_heads, 2);
    EXPECT_EQ(shrunk.config.n_kv_heads, 1);
    EXPECT_EQ(shrunk.config.head_size(), 8);
    EXPECT_EQ(shrunk.w("model.layers.0.self_attn.q_proj.weight").sizes(), (std::vector<std::int64_t>{16, 32}));
    EXPECT_EQ(shrunk.w("model.layers.0.self_attn.k_proj.weight").sizes(), (std::vector<std::int64_t>{8, 32}));
    EXPECT_EQ(shrunk.w("model.layers.0.self_attn.o_proj.weight").sizes(), (std::vector<std::int64_t>{32, 16}));
    const auto a = shrunk.forward(t)[0], b = masked.forward(t)[0];
    EXPECT_LT((a - b).abs().max().item<double>() / b.abs().max().item<double>(), 1e-5) << criterion;
    EXPECT_GT((a - base.forward(t)[0]).abs().max().item<double>(), 1e-4) << criterion << ": pruning changed nothing?";
    // The smaller model is an ordinary checkpoint: the runtime runs it.
    auto rt = runtime::Llama::from_checkpoint(llm::to_llama2c(shrunk));
    double worst = 0;
    for (std::int64_t pos = 0; pos < 16; ++pos) {
      const auto& logits = rt.step(tokens[pos], pos);
      for (std::int64_t v = 0; v < 40; ++v)
        worst = std::max(worst, std::abs(double(logits[v]) - a[pos][v].item<double>()) / a[pos].abs().max().item<double>());
    }
    EXPECT_LT(worst, 1e-4) << criterion;
    // 2 heads of 8 do not fill dim 32: a Hugging Face folder says head_dim; a llama2.c file cannot.
    const auto dir = fs::temp_directory_path() / ("prunus_shrink_" + criterion);
    fs::remove_all(dir);
    llm::save(dir.string(), shrunk);
    const auto back = llm::load(dir.string());
    EXPECT_EQ(back.config.n_heads, 2);
    EXPECT_EQ(back.config.head_size(), 8);
    EXPECT_LT((back.forward(t)[0] - a).abs().max().item<double>() / a.abs().max().item<double>(), 1e-6) << criterion;
    auto rt2 = runtime::Llama::load(dir.string());
    const auto& l15 = [&]() -> const std::vector<float>& {
      for (std::int64_t pos = 0; pos < 15; ++pos) rt2.step(tokens[pos], pos);
      return rt2.step(tokens[15], 15);
    }();
    EXPECT_NEAR(l15[7], a[15][7].item<float>(), 1e-4 * a[15].abs().max().item<double>());
    EXPECT_THROW(llm::save((dir / "x.bin").string(), shrunk), InputError);
    fs::remove_all(dir);
  }
  {
    // Output reconstruction: least squares on the kept inputs can only lower each block's error.
    llm::LlmShrinkConfig cfg;
    cfg.mlp_fraction = 0.5;
    cfg.head_fraction = 0.5;
    cfg.nsamples = 8;
    cfg.seqlen = 16;
    const auto plan = llm::plan_llm_shrink(base, calib, cfg);
    auto shrunk = base;
    llm::apply_llm_shrink(shrunk, plan);
    const auto before = shrunk.forward(t);
    const auto e = llm::reconstruct_llm_shrink(shrunk, base, plan, calib, cfg);
    ASSERT_EQ(e.after.size(), 2u);
    for (std::size_t l = 0; l < 2; ++l) {
      EXPECT_GT(e.before[l], 1e-3) << l;
      EXPECT_LT(e.after[l], 0.9 * e.before[l]) << l;
    }
    EXPECT_EQ(shrunk.w("model.layers.0.mlp.down_proj.weight").sizes(), (std::vector<std::int64_t>{32, 32}));
    EXPECT_EQ(shrunk.w("model.layers.0.self_attn.o_proj.weight").sizes(), (std::vector<std::int64_t>{32, 16}));
    EXPECT_GT((shrunk.forward(t) - before).abs().max().item<double>(), 1e-4);
  }
  llm::LlmShrinkConfig bad;
  bad.criterion = "bn";
  EXPECT_THROW(llm::plan_llm_shrink(base, calib, bad), InputError);
  bad.criterion = "activation";
  EXPECT_THROW(llm::plan_llm_shrink(base, {}, bad), InputError);
  bad.mlp_fraction = 1.0;
  EXPECT_THROW(llm::plan_llm_shrink(base, calib, bad), InputError);
}
