#include "prunus/llama2c.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "prunus/io.h"

namespace prunus::llama2c {
namespace {

std::vector<std::pair<std::string, std::vector<std::int64_t>>> layout(const Config& c) {
  const std::int64_t d = c.dim, h = c.hidden_dim, kv = c.kv_dim(), q = c.q_dim(), v = c.vocab_size;
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> out;
  out.push_back({"model.embed_tokens.weight", {v, d}});
  auto per_layer = [&](const char* fmt_name, std::vector<std::int64_t> shape) {
    for (int l = 0; l < c.n_layers; ++l) out.push_back({fmt::format(fmt::runtime(fmt_name), l), shape});
  };
  per_layer("model.layers.{}.input_layernorm.weight", {d});
  per_layer("model.layers.{}.self_attn.q_proj.weight", {q, d});
  per_layer("model.layers.{}.self_attn.k_proj.weight", {kv, d});
  per_layer("model.layers.{}.self_attn.v_proj.weight", {kv, d});
  per_layer("model.layers.{}.self_attn.o_proj.weight", {d, q});
  per_layer("model.layers.{}.post_attention_layernorm.weight", {d});
  per_layer("model.layers.{}.mlp.gate_proj.weight", {h, d});
  per_layer("model.layers.{}.mlp.down_proj.weight", {d, h});
  per_layer("model.layers.{}.mlp.up_proj.weight", {h, d});
  out.push_back({"model.norm.weight", {d}});
  return out;
}

std::int64_t numel(const std::vector<std::int64_t>& s) {
  std::int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

}  // namespace

std::vector<std::string> layer_linear_names(int l) {
  std::vector<std::string> n;
  for (const char* s : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                        "mlp.down_proj", "mlp.up_proj"})
    n.push_back(fmt::format("model.layers.{}.{}.weight", l, s));
  return n;
}

Checkpoint read_checkpoint(const std::string& path) {
  MappedFile f(path);
  return parse_checkpoint(f.data(), f.size(), path);
}

Checkpoint parse_checkpoint(const std::uint8_t* data, std::size_t size, const std::string& path) {
  struct View {
    const std::uint8_t* d;
    std::size_t n;
    const std::uint8_t* data() const { return d; }
    std::size_t size() const { return n; }
  } f{data, size};
  if (f.size() < 28) fail(path, fmt::format("not a llama2.c checkpoint: {} bytes, shorter than the 28-byte header", f.size()));
  std::int32_t h[7];
  std::memcpy(h, f.data(), 28);
  Checkpoint ck;
  Config& c = ck.config;
  c.dim = h[0];
  c.hidden_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  c.shared_classifier = h[5] > 0;
  c.vocab_size = h[5] == std::numeric_limits<std::int32_t>::min() ? 0 : std::abs(h[5]);
  c.seq_len = h[6];
  const std::string hdr = fmt::format("dim={} hidden_dim={} n_layers={} n_heads={} n_kv_heads={} vocab_size={} seq_len={}",
                                      h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
  if (c.dim <= 0 || c.hidden_dim <= 0 || c.n_layers <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 || c.vocab_size <= 0 ||
      c.seq_len <= 0)
    fail(path, "not a llama2.c checkpoint: header has non-positive sizes (" + hdr + ")");
  if (c.dim > 65536 || c.hidden_dim > 262144 || c.n_layers > 1024 || c.vocab_size > 1 << 20 || c.seq_len > 1 << 20)
    fail(path, "llama2.c header sizes are implausibly large (" + hdr + ")");
  if (c.dim % c.n_heads != 0 || c.n_heads % c.n_kv_heads != 0 || c.head_size() % 2 != 0)
    fail(path, "llama2.c header is inconsistent: dim must divide into heads, heads into kv heads, head size even (" +
                   hdr + ")");
  auto tensors = layout(c);
  std::int64_t floats = 0;
  for (const auto& [n, s] : tensors) floats += numel(s);
  const std::int64_t rope = std::int64_t(c.seq_len) * c.head_size() / 2 * 2;
  floats += rope;
  if (!c.shared_classifier) floats += std::int64_t(c.vocab_size) * c.dim;
  const std::uint64_t expect = 28 + std::uint64_t(floats) * 4;
  if (f.size() != expect)
    fail(path, fmt::format("file is {} bytes but its header ({}) implies {}{}", f.size(), hdr, expect,
                           f.size() < expect ? " (truncated)" : " (trailing bytes)"));
  const std::uint8_t* p = f.data() + 28;
  auto take = [&](const std::string& name, const std::vector<std::int64_t>& shape) {
    Tensor t;
    t.shape = shape;
    t.data.resize(static_cast<std::size_t>(numel(shape)));
    std::memcpy(t.data.data(), p, t.data.size() * 4);
    p += t.data.size() * 4;
    for (float v : t.data)
      if (!std::isfinite(v)) fail(path, fmt::format("tensor {} contains NaN or Inf", name));
    return t;
  };
  // run.c's order: all layers of one kind, then the next kind; split per layer here.
  for (const auto& [name, shape] : tensors) ck.tensors[name] = take(name, shape);
  p += rope * 4;
  if (!c.shared_classifier) ck.tensors["lm_head.weight"] = take("lm_head.weight", {c.vocab_size, c.dim});
  return ck;
}

void write_checkpoint(const std::string& path, const Checkpoint& ck) {
  const Config& c = ck.config;
  if (c.head_dim && c.head_dim * c.n_heads != c.dim)
    fail(path, fmt::format("{} heads of {} do not fill dim {} (pruned heads): the llama2.c header cannot say so; "
                           "write a Hugging Face folder (an output path not ending in .bin)",
                           c.n_heads, c.head_dim, c.dim));
  atomic_write(path, [&](const ByteSink& sink) {
    const std::int32_t h[7] = {c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                               c.shared_classifier ? c.vocab_size : -c.vocab_size, c.seq_len};
    sink(h, 28);
    for (const auto& [name, shape] : layout(c)) {
      const auto it = ck.tensors.find(name);
      if (it == ck.tensors.end() || numel(it->second.shape) != numel(shape))
        throw std::invalid_argument("write_checkpoint: missing or misshapen tensor " + name);
      sink(it->second.data.data(), it->second.data.size() * 4);
    }
    // RoPE tables as llama2.c's export writes them (run.c ignores them).
    const int hs = c.head_size();
    std::vector<float> re(static_cast<std::size_t>(c.seq_len) * hs / 2), im(re.size());
    // In float32, as export.py's torch code computes them.
    for (int pos = 0; pos < c.seq_len; ++pos)
      for (int i = 0; i < hs / 2; ++i) {
        const float freq = 1.0f / std::pow(10000.0f, static_cast<float>(2 * i) / static_cast<float>(hs));
        const float angle = static_cast<float>(pos) * freq;
        re[pos * hs / 2 + i] = std::cos(angle);
        im[pos * hs / 2 + i] = std::sin(angle);
      }
    sink(re.data(), re.size() * 4);
    sink(im.data(), im.size() * 4);
    if (!c.shared_classifier) {
      const auto& w = ck.tensors.at("lm_head.weight");
      sink(w.data.data(), w.data.size() * 4);
    }
  });
}

Tokenizer Tokenizer::read(const std::string& path, std::int32_t vocab_size) {
  MappedFile f(path);
  return parse(f.data(), f.size(), path, vocab_size);
}

Tokenizer Tokenizer::parse(const std::uint8_t* data, std::size_t size, const std::string& path,
                           std::int32_t vocab_size) {
  const std::uint8_t* p = data;
  const std::uint8_t* end = p + size;
  auto need = [&](std::size_t n, const char* what) {
    if (static_cast<std::size_t>(end - p) < n) fail(path, fmt::format("tokenizer truncated while reading {}", what));
  };
  need(4, "max_token_length");
  std::int32_t max_len;
  std::memcpy(&max_len, p, 4);
  p += 4;
  if (max_len <= 0 || max_len > 1 << 16) fail(path, fmt::format("tokenizer max_token_length {} is invalid", max_len));
  Tokenizer t;
  for (std::int32_t i = 0; i < vocab_size; ++i) {
    need(8, "a token's score and length");
    float score;
    std::int32_t len;
    std::memcpy(&score, p, 4);
    std::memcpy(&len, p + 4, 4);
    p += 8;
    if (len < 0 || len > max_len)
      fail(path, fmt::format("token {} has length {} (max_token_length is {})", i, len, max_len));
    need(static_cast<std::size_t>(len), "a token's bytes");
    t.vocab_.emplace_back(reinterpret_cast<const char*>(p), static_cast<std::size_t>(len));
    t.scores_.push_back(score);
    p += len;
  }
  if (p != end)
    fail(path, fmt::format("tokenizer has {} bytes after the {} tokens the model's vocabulary needs (vocab mismatch?)",
                           end - p, vocab_size));
  for (std::int32_t i = 0; i < vocab_size; ++i) t.lookup_.emplace(t.vocab_[i], i);
  // llama2.c: byte b is token b + 3; a vocabulary without byte tokens gets <unk> (0).
  for (int b = 0; b < 256; ++b) t.byte_ids_[b] = b + 3 < vocab_size ? b + 3 : 0;
  return t;
}

Tokenizer Tokenizer::read_hf_json(const std::string& path, std::int32_t vocab_size) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open the tokenizer");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse_hf_json(text, path, vocab_size);
}

Tokenizer Tokenizer::parse_hf_json(const std::string& text, const std::string& path, std::int32_t vocab_size) {
  using nlohmann::json;
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) fail(path, "tokenizer.json is not a JSON object");
  const auto kind_error = [&](const std::string& what) {
    fail(path, "only LLaMA/sentencepiece-style tokenizer.json files are read (BPE with byte_fallback, spaces as "
               "'\u2581'): " + what);
  };
  if (!j.contains("model") || !j["model"].is_object()) fail(path, "tokenizer.json has no model");
  const auto& model = j["model"];
  if (model.value("type", std::string()) != "BPE") kind_error("model.type is not BPE");
  if (!model.value("byte_fallback", false)) kind_error("model.byte_fallback is not true");
  const std::string meta = "\xe2\x96\x81";  // U+2581 ▁
  // The space convention: normalizer Prepend(▁) + Replace(" " → ▁), or a Metaspace pre-tokenizer.
  bool spaces_ok = false;
  if (j.contains("normalizer") && j["normalizer"].is_object()) {
    const auto& n = j["normalizer"];
    if (n.value("type", std::string()) == "Sequence" && n.contains("normalizers") && n["normalizers"].is_array()) {
      bool prepend = false, replace = false;
      for (const auto& x : n["normalizers"]) {
        if (!x.is_object()) continue;
        if (x.value("type", std::string()) == "Prepend" && x.value("prepend", std::string()) == meta) prepend = true;
        if (x.value("type", std::string()) == "Replace" && x.value("content", std::string()) == meta &&
            x.contains("pattern") && x["pattern"].is_object() && x["pattern"].value("String", std::string()) == " ")
          replace = true;
      }
      spaces_ok = prepend && replace;
    }
  }
  if (!spaces_ok && j.contains("pre_tokenizer") && j["pre_tokenizer"].is_object()) {
    const auto& pt = j["pre_tokenizer"];
    spaces_ok = pt.value("type", std::string()) == "Metaspace" && pt.value("replacement", std::string()) == meta &&
                pt.value("prepend_scheme", std::string("always")) != "never" && !pt.value("split", false);
  }
  if (!spaces_ok) kind_error("no Prepend('\u2581') + Replace(' ', '\u2581') normalizer or Metaspace pre-tokenizer");
  if (!model.contains("vocab") || !model["vocab"].is_object()) fail(path, "tokenizer.json model.vocab is not an object");
  Tokenizer t;
  t.vocab_.assign(static_cast<std::size_t>(vocab_size), std::string());
  std::vector<bool> seen(static_cast<std::size_t>(vocab_size), false);
  auto to_spaces = [&](std::string piece) {
    for (std::size_t at; (at = piece.find(meta)) != std::string::npos;) piece.replace(at, meta.size(), " ");
    return piece;
  };
  auto add = [&](const std::string& piece, const json& id) {
    if (!id.is_number_integer() || id.get<std::int64_t>() < 0 || id.get<std::int64_t>() >= vocab_size)
      fail(path, fmt::format("token '{}' has id {} outside the model's vocabulary of {}", piece, id.dump(), vocab_size));
    const auto i = static_cast<std::size_t>(id.get<std::int64_t>());
    if (seen[i] && t.vocab_[i] != to_spaces(piece)) fail(path, fmt::format("two tokens share id {}", i));
    seen[i] = true;
    t.vocab_[i] = to_spaces(piece);
  };
  for (const auto& [piece, id] : model["vocab"].items()) add(piece, id);
  if (j.contains("added_tokens") && j["added_tokens"].is_array())
    for (const auto& a : j["added_tokens"])
      if (a.is_object() && a.contains("content") && a["content"].is_string() && a.contains("id")) add(a["content"], a["id"]);
  for (std::int32_t i = 0; i < vocab_size; ++i)
    if (!seen[static_cast<std::size_t>(i)])
      fail(path, fmt::format("the vocabulary has no token {} (the model's vocabulary is {})", i, vocab_size));
  if (t.vocab_[kBos] != "<s>" || t.vocab_[kEos] != "</s>")
    fail(path, "<s> and </s> must be tokens 1 and 2 (the LLaMA convention the models here use)");
  for (std::int32_t i = 0; i < vocab_size; ++i) t.lookup_.emplace(t.vocab_[static_cast<std::size_t>(i)], i);
  for (int b = 0; b < 256; ++b) {
    const auto it = t.lookup_.find(fmt::format("<0x{:02X}>", b));
    t.byte_ids_[b] = it == t.lookup_.end() ? 0 : it->second;
  }
  // Merges "left right" (or ["left", "right"]), rank = position.
  if (!model.contains("merges") || !model["merges"].is_array()) fail(path, "tokenizer.json model.merges is not a list");
  std::int32_t rank = 0;
  for (const auto& m : model["merges"]) {
    std::string l, r;
    if (m.is_string()) {
      const auto s = m.get<std::string>();
      const auto sp = s.find(' ');
      if (sp == std::string::npos) fail(path, fmt::format("merge '{}' is not 'left right'", s));
      l = s.substr(0, sp), r = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      l = m[0].get<std::string>(), r = m[1].get<std::string>();
    } else {
      fail(path, fmt::format("merge {} is neither 'left right' nor a pair", rank));
    }
    const auto li = t.lookup_.find(to_spaces(l)), ri = t.lookup_.find(to_spaces(r)),
               mi = t.lookup_.find(to_spaces(l + r));
    if (li == t.lookup_.end() || ri == t.lookup_.end() || mi == t.lookup_.end())
      fail(path, fmt::format("merge {} ('{}' + '{}') names a token the vocabulary lacks", rank, l, r));
    const auto key = (std::uint64_t(std::uint32_t(li->second)) << 32) | std::uint32_t(ri->second);
    t.merges_.emplace(key, std::make_pair(rank, mi->second));  // the first listing wins, as in tokenizers
    ++rank;
  }
  t.scores_.assign(static_cast<std::size_t>(vocab_size), 0.0f);
  return t;
}

std::vector<std::int32_t> Tokenizer::encode(const std::string& text, bool bos, bool eos) const {
  std::vector<std::int32_t> tokens;
  if (bos && kBos < vocab_size()) tokens.push_back(kBos);
  if (encoder_) {  // a sentencepiece model
    auto ids = encoder_->encode(text);
    tokens.insert(tokens.end(), ids.begin(), ids.end());
    if (eos && kEos < vocab_size()) tokens.push_back(kEos);
    return tokens;
  }
  auto find = [&](const std::string& s) {
    auto it = lookup_.find(s);
    return it == lookup_.end() ? -1 : it->second;
  };
  if (!text.empty()) {
    const int space = find(" ");
    if (space >= 0) tokens.push_back(space);
  }
  // UTF-8 code points (at most 4 bytes) → tokens, bytes as <0xXX> fallback (id = byte + 3).
  std::string buf;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const unsigned char ch = static_cast<unsigned char>(text[i]);
    if ((ch & 0xC0) != 0x80) buf.clear();
    buf.push_back(static_cast<char>(ch));
    const bool next_is_cont = i + 1 < text.size() && (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80;
    if (next_is_cont && buf.size() < 4) continue;
    const int id = find(buf);
    if (id >= 0) {
      tokens.push_back(id);
    } else {
      // Byte fallback; a vocabulary without byte tokens gets <unk> (0).
      for (unsigned char b : buf) tokens.push_back(byte_ids_[b]);
    }
    buf.clear();
  }
  // Merge the best-scoring adjacent pair (leftmost on ties) until no pair is in the vocabulary,
  // as llama2.c's encode does — but with a heap of candidate pairs over a linked list instead of
  // a full rescan per merge, which made tokenizing a corpus quadratic in document length.
  // Symbols keep their first index, so index order is sequence order and breaks ties as a
  // left-to-right scan would; a popped pair is used only if it still joins the same two tokens.
  struct Symbol {
    std::int32_t id;
    std::int32_t prev, next;  // -1 at the ends
  };
  struct Candidate {
    float score;
    std::int32_t left, right, left_id, right_id, merged;
  };
  auto later = [](const Candidate& a, const Candidate& b) {  // heap order: best score, then leftmost
    return a.score != b.score ? a.score < b.score : a.left > b.left;
  };
  std::vector<Symbol> syms(tokens.size());
  for (std::size_t i = 0; i < tokens.size(); ++i)
    syms[i] = {tokens[i], static_cast<std::int32_t>(i) - 1,
               i + 1 < tokens.size() ? static_cast<std::int32_t>(i + 1) : -1};
  std::vector<Candidate> heap;
  auto consider = [&](std::int32_t left) {
    if (left < 0 || syms[left].next < 0) return;
    const std::int32_t right = syms[left].next;
    float priority;
    int merged;
    if (merges_.empty()) {  // llama2.c: the merged piece's score
      merged = find(vocab_[syms[left].id] + vocab_[syms[right].id]);
      if (merged < 0) return;
      priority = scores_[merged];
    } else {  // tokenizer.json: this pair's rank (lower first)
      const auto it = merges_.find((std::uint64_t(std::uint32_t(syms[left].id)) << 32) | std::uint32_t(syms[right].id));
      if (it == merges_.end()) return;
      priority = -static_cast<float>(it->second.first);
      merged = it->second.second;
    }
    heap.push_back({priority, left, right, syms[left].id, syms[right].id, merged});
    std::push_heap(heap.begin(), heap.end(), later);
  };
  for (std::size_t i = 0; i + 1 < syms.size(); ++i) consider(static_cast<std::int32_t>(i));
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Candidate c = heap.back();
    heap.pop_back();
    Symbol& l = syms[c.left];
    if (l.next != c.right || l.id != c.left_id || syms[c.right].id != c.right_id) continue;  // stale
    l.id = c.merged;
    l.next = syms[c.right].next;
    if (l.next >= 0) syms[l.next].prev = c.left;
    syms[c.right].id = -1;  // gone: no candidate names it any more
    consider(l.prev);
    consider(c.left);
  }
  std::size_t kept = 0;
  for (std::int32_t i = syms.empty() ? -1 : 0; i >= 0; i = syms[i].next) tokens[kept++] = syms[i].id;
  tokens.resize(kept);
  if (eos && kEos < vocab_size()) tokens.push_back(kEos);
  return tokens;
}

std::string Tokenizer::decode_token(std::int32_t prev, std::int32_t token) const {
  if (token < 0 || token >= vocab_size()) return "";
  std::string piece = vocab_[token];
  if (prev == kBos && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
  unsigned byte;
  if (piece.size() == 6 && std::sscanf(piece.c_str(), "<0x%02X>", &byte) == 1) piece = std::string(1, char(byte));
  return piece;
}

}  // namespace prunus::llama2c
