// prunus/llama2c.h — llama2.c checkpoints and tokenizers (Karpathy's llama2.c formats).
// Part of prunus_runtime: no libtorch.
//
// Checkpoint: 7 little-endian int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
// vocab_size — negative when the classifier is stored separately —, seq_len), then fp32
// tensors in run.c order: tok_embeddings [vocab, dim], rms_att [L, dim], wq [L, dim, dim],
// wk [L, kv_dim, dim], wv [L, kv_dim, dim], wo [L, dim, dim], rms_ffn [L, dim],
// w1 [L, hidden, dim], w2 [L, dim, hidden], w3 [L, hidden, dim], rms_final [dim],
// freq_cis_real and freq_cis_imag [seq_len, head_size/2] (ignored), [wcls [vocab, dim]].
// Linear weights are (out, in) row-major.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace prunus::llama2c {

struct Config {
  std::int32_t dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0, seq_len = 0;
  bool shared_classifier = true;
  // 0: dim / n_heads. Set when heads were pruned (n_heads · head_dim < dim): Hugging Face
  // folders carry it (config.json head_dim); the llama2.c header cannot.
  std::int32_t head_dim = 0;
  std::int32_t head_size() const { return head_dim ? head_dim : n_heads ? dim / n_heads : 0; }
  std::int32_t kv_dim() const { return head_size() * n_kv_heads; }
  std::int32_t q_dim() const { return head_size() * n_heads; }
};

// One named tensor of the checkpoint, in Hugging Face LLaMA naming
// (model.layers.{i}.self_attn.q_proj.weight, ...), fp32 row-major.
struct Tensor {
  std::vector<std::int64_t> shape;
  std::vector<float> data;
};

struct Checkpoint {
  Config config;
  std::map<std::string, Tensor> tensors;  // per layer, HF names; lm_head.weight only if not shared
};

// Validates the header (positive sizes, dim divisible by n_heads, n_heads divisible by
// n_kv_heads, even head size, sizes that fit in memory), that the file size is exactly what
// the header implies, and that every value is finite. InputError naming the file.
Checkpoint read_checkpoint(const std::string& path);
// The same validation on bytes in memory (`name` is used in messages).
Checkpoint parse_checkpoint(const std::uint8_t* data, std::size_t size, const std::string& name);
// Writes the checkpoint atomically (RoPE tables regenerated as llama2.c's export does).
void write_checkpoint(const std::string& path, const Checkpoint& ckpt);
// The HF-style names of the linear weights of layer i, in checkpoint order.
std::vector<std::string> layer_linear_names(int layer);

// llama2.c tokenizer: int32 max_token_length, then per token: float score, int32 len, bytes.
class Tokenizer {
 public:
  // An external encoder (the sentencepiece library for tokenizer.model files).
  struct Encoder {
    virtual ~Encoder() = default;
    virtual std::vector<std::int32_t> encode(const std::string& text) const = 0;
  };
  static Tokenizer read(const std::string& path, std::int32_t vocab_size);
  static Tokenizer parse(const std::uint8_t* data, std::size_t size, const std::string& name, std::int32_t vocab_size);
  // A Hugging Face tokenizer.json of the LLaMA / sentencepiece kind: model BPE with
  // byte_fallback, spaces as "▁" with one prepended (normalizer Prepend("▁") + Replace(" ", "▁"),
  // or a Metaspace pre-tokenizer), <s> = 1 and </s> = 2. Merges then apply by rank, pair by
  // pair, as the tokenizers library does. Any other kind (byte-level BPE, WordPiece, ...) is an
  // InputError naming the file, as is a vocabulary that is not the model's size.
  static Tokenizer read_hf_json(const std::string& path, std::int32_t vocab_size);
  static Tokenizer parse_hf_json(const std::string& text, const std::string& path, std::int32_t vocab_size);
  // A sentencepiece model (a Hugging Face folder's tokenizer.model, LLaMA's BPE or a unigram
  // model): encoding is the sentencepiece library's own (its normalizer, dummy prefix, byte
  // fallback). The model must have the vocabulary's size, <s> = 1 and </s> = 2; anything else,
  // or a file the library cannot parse, is an InputError naming the file.
  static Tokenizer read_sentencepiece(const std::string& path, std::int32_t vocab_size);
  // By extension: .json → read_hf_json, .model → read_sentencepiece, else read (llama2.c .bin).
  static Tokenizer read_any(const std::string& path, std::int32_t vocab_size);
  // Where a model's tokenizer is when none is given: a folder's tokenizer.json, else its
  // tokenizer.model, else tok<vocab>.bin in the folder or beside the file. InputError naming
  // the model (and the candidates) when none exists.
  static std::string default_path(const std::string& model_path, std::int32_t vocab_size);
  // BPE as llama2.c's encode: a dummy-prefix space, UTF-8 code points (unknown ones as
  // byte tokens <0xXX>), then merges of the best-scoring pair until none (tokenizer.json: of
  // the lowest-ranked merge; leftmost on ties either way).
  std::vector<std::int32_t> encode(const std::string& text, bool bos, bool eos) const;
  std::string decode_token(std::int32_t prev, std::int32_t token) const;
  std::int32_t vocab_size() const { return static_cast<std::int32_t>(vocab_.size()); }
  static constexpr std::int32_t kBos = 1, kEos = 2;

 private:
  std::vector<std::string> vocab_;  // pieces with "▁" as ' '
  std::vector<float> scores_;
  std::unordered_map<std::string, std::int32_t> lookup_;
  // tokenizer.json: (left id << 32 | right id) → (rank, merged id); empty for llama2.c files.
  std::unordered_map<std::uint64_t, std::pair<std::int32_t, std::int32_t>> merges_;
  std::int32_t byte_ids_[256];  // <0xXX> tokens (0, <unk>, where the vocabulary lacks one)
  // tokenizer.model: the sentencepiece processor encodes (src/runtime/formats/sentencepiece.cpp).
  std::shared_ptr<const Encoder> encoder_;
};

}  // namespace prunus::llama2c
