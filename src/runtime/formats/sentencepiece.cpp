// sentencepiece tokenizer.model files through the sentencepiece library, and the choice of a
// tokenizer file by extension / by what a model folder holds. The library is reached through
// libprunus_sentencepiece.so (src/runtime/sentencepiece_shim), loaded on first use with
// RTLD_LOCAL | RTLD_DEEPBIND: Debian's libsentencepiece carries its own protobuf-lite and cannot
// share a link with libprotobuf (see the shim). Tools that read only llama2.c and tokenizer.json
// files need neither.
#include <dlfcn.h>
#include <unistd.h>

#include <filesystem>
#include <fmt/format.h>
#include <mutex>

#include "prunus/io.h"
#include "prunus/llama2c.h"

#ifndef PRUNUS_SENTENCEPIECE_SHIM
#define PRUNUS_SENTENCEPIECE_SHIM ""
#endif

namespace prunus::llama2c {
namespace fs = std::filesystem;

namespace {

struct Shim {
  void* (*load)(const char*, char*, std::size_t) = nullptr;
  void (*free_model)(void*) = nullptr;
  int (*size)(void*) = nullptr;
  int (*bos)(void*) = nullptr;
  int (*eos)(void*) = nullptr;
  float (*score)(void*, int) = nullptr;
  int (*piece)(void*, int, char*, std::size_t) = nullptr;
  int (*encode)(void*, const char*, std::size_t, int**, std::size_t*, char*, std::size_t) = nullptr;
  void (*free_ids)(int*) = nullptr;
  std::string error;  // why it could not be loaded
};

// PRUNUS_SENTENCEPIECE_SHIM (environment), then beside the executable, then where the build put it.
const Shim& shim() {
  static Shim s;
  static std::once_flag once;
  std::call_once(once, [] {
    std::vector<std::string> candidates;
    if (const char* e = std::getenv("PRUNUS_SENTENCEPIECE_SHIM")) candidates.push_back(e);
    std::error_code ec;
    const auto exe = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) candidates.push_back((exe.parent_path() / "libprunus_sentencepiece.so").string());
    if (*PRUNUS_SENTENCEPIECE_SHIM) candidates.push_back(PRUNUS_SENTENCEPIECE_SHIM);
    void* h = nullptr;
    for (const auto& c : candidates) {
      if (!fs::exists(c, ec)) continue;
      h = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (h) break;
      s.error = dlerror();
    }
    if (!h) {
      if (s.error.empty()) s.error = "libprunus_sentencepiece.so not found (set PRUNUS_SENTENCEPIECE_SHIM)";
      return;
    }
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(h, name));
      if (!fn) s.error = std::string("libprunus_sentencepiece.so lacks ") + name;
    };
    sym(s.load, "prunus_spm_load");
    sym(s.free_model, "prunus_spm_free");
    sym(s.size, "prunus_spm_size");
    sym(s.bos, "prunus_spm_bos");
    sym(s.eos, "prunus_spm_eos");
    sym(s.score, "prunus_spm_score");
    sym(s.piece, "prunus_spm_piece");
    sym(s.encode, "prunus_spm_encode");
    sym(s.free_ids, "prunus_spm_free_ids");
  });
  return s;
}

struct SentencePieceEncoder final : Tokenizer::Encoder {
  void* model = nullptr;
  std::string path;
  ~SentencePieceEncoder() override {
    if (model) shim().free_model(model);
  }
  std::vector<std::int32_t> encode(const std::string& text) const override {
    int* ids = nullptr;
    std::size_t n = 0;
    char err[512] = {0};
    if (shim().encode(model, text.data(), text.size(), &ids, &n, err, sizeof err) != 0)
      fail(path, std::string("sentencepiece could not encode a text: ") + err);
    std::vector<std::int32_t> out(ids, ids + n);
    shim().free_ids(ids);
    return out;
  }
};

}  // namespace

Tokenizer Tokenizer::read_sentencepiece(const std::string& path, std::int32_t vocab_size) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) fail(path, "cannot open the tokenizer (no such file)");
  const auto& lib = shim();
  if (!lib.error.empty()) fail(path, "cannot read a sentencepiece model: " + lib.error);
  auto enc = std::make_shared<SentencePieceEncoder>();
  enc->path = path;
  char err[512] = {0};
  enc->model = lib.load(path.c_str(), err, sizeof err);
  if (!enc->model) fail(path, std::string("not a sentencepiece model (tokenizer.model): ") + err);
  const int n = lib.size(enc->model);
  if (n != vocab_size)
    fail(path, fmt::format("sentencepiece model has {} pieces but the model's vocabulary is {}", n, vocab_size));
  if (lib.bos(enc->model) != kBos || lib.eos(enc->model) != kEos)
    fail(path, fmt::format("sentencepiece model has <s> = {} and </s> = {}; LLaMA models use 1 and 2",
                           lib.bos(enc->model), lib.eos(enc->model)));
  Tokenizer t;
  std::vector<char> buf(1024);
  for (int i = 0; i < n; ++i) {
    const int len = lib.piece(enc->model, i, buf.data(), buf.size());
    if (len >= int(buf.size())) {
      buf.resize(len + 1);
      lib.piece(enc->model, i, buf.data(), buf.size());
    }
    std::string piece(buf.data(), len);
    // Spaces as the other formats hold them ("▁" is U+2581, three bytes).
    for (std::size_t at; (at = piece.find("\xE2\x96\x81")) != std::string::npos;) piece.replace(at, 3, " ");
    t.vocab_.push_back(piece);
    t.scores_.push_back(lib.score(enc->model, i));
  }
  for (std::int32_t i = 0; i < vocab_size; ++i) t.lookup_.emplace(t.vocab_[i], i);
  for (int b = 0; b < 256; ++b) {
    auto it = t.lookup_.find(fmt::format("<0x{:02X}>", b));
    t.byte_ids_[b] = it == t.lookup_.end() ? 0 : it->second;
  }
  t.encoder_ = std::move(enc);
  return t;
}

Tokenizer Tokenizer::read_any(const std::string& path, std::int32_t vocab_size) {
  if (path.ends_with(".json")) return read_hf_json(path, vocab_size);
  if (path.ends_with(".model")) return read_sentencepiece(path, vocab_size);
  return read(path, vocab_size);
}

std::string Tokenizer::default_path(const std::string& model_path, std::int32_t vocab_size) {
  const bool folder = fs::is_directory(model_path);
  const fs::path dir = folder ? fs::path(model_path) : fs::path(model_path).parent_path();
  const auto bin = (dir / fmt::format("tok{}.bin", vocab_size)).string();
  if (folder) {
    for (const char* name : {"tokenizer.json", "tokenizer.model"})
      if (fs::exists(dir / name)) return (dir / name).string();
    if (fs::exists(bin)) return bin;
    fail(model_path, fmt::format("no tokenizer given and none of {}, {}, {} exists (pass --tokenizer)",
                                 (dir / "tokenizer.json").string(), (dir / "tokenizer.model").string(), bin));
  }
  if (!fs::exists(bin)) fail(model_path, fmt::format("no tokenizer given and {} does not exist (pass --tokenizer)", bin));
  return bin;
}

}  // namespace prunus::llama2c
