// prunus/runtime.h — run a model that Prunus exported, without libtorch.
//
// A model file is safetensors whose __metadata__["prunus.graph"] is a small JSON graph:
//   {"input": [1, 28, 28], "ops": [{"op": "normalize", "mean": 0.286, "std": 0.353},
//     {"op": "conv2d", "weight": "conv1.weight", "bias": "conv1.bias", "padding": 2},
//     {"op": "relu"}, {"op": "maxpool2d", "kernel": 2}, {"op": "flatten"},
//     {"op": "linear", "weight": "fc1.weight", "bias": "fc1.bias"}, ...]}
// Ops: normalize, conv2d (stride, padding, optional "bn": BatchNorm tensors folded into the
// weights at load), relu, maxpool2d, add, concat (along channels), global_avg_pool, flatten,
// linear. An op reads the previous op's output unless it names "input" (add: "inputs": [a, b];
// concat: "inputs": [a, b, ...]); "output" names its result for later ops ("input" is the
// graph's input). Activations are NHWC inside; flatten gives torch's (C, H, W) order. Each
// conv (as im2col) and linear layer's weight is held in the format that measured fastest on
// this machine (kernels::SparseLinear), so the zeros pay or the layer stays dense.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "prunus/kernels.h"
#include "prunus/llama2c.h"
#include "prunus/safetensors.h"

namespace prunus::runtime {

struct LayerInfo {
  std::string name;
  std::string format;
  std::int64_t rows = 0, cols = 0, nnz = 0;
  std::uint64_t bytes = 0, dense_bytes = 0;
  double seconds = 0, dense_seconds = 0;  // per call at the batch hint, measured at load
};

struct LoadOptions {
  std::int64_t batch_hint = 1;   // the batch size to choose formats for
  bool dense = false;            // keep every layer dense (the runtime's dense path)
  bool int8 = false;             // INT8 weights and per-token INT8 activations in every conv/linear
                                 // (except layers an INT8 file keeps in fp32)
  // With int8: static per-tensor input scales from the file's "prunus.act_scales" (written by
  // quantization-aware training or `prunus quantize --calibrate`) where it has them; false or
  // absent: per-token scales at run time.
  bool stored_act_scales = true;
  // Llama::load: an unshared embedding table is read row by row from the model file (memory-
  // mapped; F32/F16/BF16 converted per row, exactly) instead of held as an fp32 copy, so only
  // the rows of tokens seen become resident — 524 MB of LLaMA-7B's 32,000 × 4096 table
  // otherwise. false: the copy.
  bool map_embedding = true;
  // How fp32 convolutions run: Measured times im2col + the layer's format against the direct
  // kernel's layouts (channel-vector, planar, flat: kernels::DirectConv::Layout) at load and
  // keeps the fastest; the others force one path (tests: every path must give the same
  // outputs). Planar and Flat fall back to the channel-vector kernel where they do not apply
  // (planar: stride > 1 or output rows under 8; flat: stride > 1).
  enum class ConvPath { Measured, Im2col, Direct, Planar, Flat } conv = ConvPath::Measured;
  kernels::Options kernel;
};

class Model {
 public:
  // Validates the graph against the tensors (names, shapes, chaining, finite values);
  // InputError naming the file otherwise.
  static Model load(const std::string& path, const LoadOptions& opt = {});
  // The same from a file already opened or parsed in memory (messages name file.path()).
  static Model from_file(const safetensors::File& file, const LoadOptions& opt = {});

  // x: [batch × input_size] (raw inputs in the graph's input layout, C×H×W, before the
  // normalize op) → [batch × output_size].
  std::vector<float> forward(const float* x, std::int64_t batch) const;
  // The same, calling `observe(layer, values, positions, channels)` after every conv and linear
  // (bias and folded BatchNorm applied, before any activation): values are [positions ×
  // channels], positions = batch × output H × W. For calibration (activation statistics).
  using Observer = std::function<void(const std::string& layer, const float* values, std::int64_t positions,
                                      std::int64_t channels)>;
  std::vector<float> forward(const float* x, std::int64_t batch, const Observer& observe) const;
  // The same, calling `inputs(layer, values, count)` with what every conv and linear reads
  // before it multiplies (layer indexes layers()): [positions × cols] im2col rows for a conv,
  // each row in (ky, kx, ci) order, or [batch × cols] for a linear. Convolutions take the
  // im2col path here. For calibration (INT8 scales, reconstruction-based channel choice).
  using InputHook = std::function<void(std::size_t layer, const float* values, std::int64_t count)>;
  std::vector<float> forward_inputs(const float* x, std::int64_t batch, const InputHook& inputs) const {
    return forward_impl(x, batch, nullptr, inputs);
  }

  // Static INT8 activation scales (models loaded with LoadOptions::int8): runs `batch` samples
  // and gives each INT8 layer one per-tensor scale for its inputs from what it saw — "minmax"
  // (max|x|/127), "percentile" (the 99.99th percentile of |x|, /127) or "mse" (the clipping
  // of max|x|·k/100, k = 30…100, with the least squared quantization error on the samples).
  // Without it, activations are quantized per token at each call. Returns the scales.
  std::vector<float> calibrate_int8(const float* x, std::int64_t batch, const std::string& method);

  std::int64_t input_size() const { return input_.size(); }
  std::int64_t output_size() const { return output_size_; }
  const std::vector<LayerInfo>& layers() const { return infos_; }  // conv and linear layers
  const std::string& arch() const { return arch_; }
  // INT8 layers running with static input scales from the file (LoadOptions::stored_act_scales).
  int static_act_layers() const { return static_act_layers_; }

 private:
  std::vector<float> forward_impl(const float* x, std::int64_t batch, const Observer& observe,
                                  const InputHook& inputs) const;
  struct Op;
  // A conv op through an im2col buffer and its layer's SparseLinear (bias added).
  void conv_im2col(const Op& op, const float* a, std::int64_t batch, float* out, std::vector<float>& cols,
                   const InputHook& inputs) const;
  void max_pool(const Op& op, const float* a, std::int64_t batch, float* out) const;
  // Per fp32 conv layer, the direct kernel when it measured faster than im2col at load.
  void choose_conv_paths(const LoadOptions& opt);
  struct Shape {  // per sample
    std::int64_t c = 1, h = 1, w = 1;
    std::int64_t size() const { return c * h * w; }
  };
  struct Op {
    enum Kind { Normalize, Conv, Relu, MaxPool, Add, Concat, GlobalAvgPool, Flatten, Linear } kind;
    std::vector<int> in;  // value slots read
    std::vector<std::int64_t> parts;  // concat: channels of each input, in order
    int out = 0;          // value slot written
    Shape in_shape, out_shape;
    float mean = 0, inv_std = 1;
    std::int64_t kernel = 1, stride = 1, padding = 0;
    std::size_t layer = 0;  // index into layers_/biases_
    bool relu = false;      // a ReLU fused into this op (fuse_relus)
  };
  // Folds each ReLU into a neighbour so its pass over the values disappears.
  void fuse_relus();
  std::string arch_;
  Shape input_;
  std::vector<Op> ops_;
  int slots_ = 1;
  std::vector<kernels::SparseLinear> layers_;
  std::vector<kernels::DirectConv> direct_;  // per layer; rows == 0: not used
  kernels::Options opt_;
  std::vector<std::vector<float>> biases_;
  std::vector<LayerInfo> infos_;
  std::int64_t output_size_ = 0;
  int static_act_layers_ = 0;
};

// INT8 model files: every conv/linear weight of `in` (a Prunus model with prunus.graph) is
// stored as per-output-channel INT8 codes with a bitmask of its non-zeros — name.q8.shape,
// name.q8.bitmask (U8, bit j of byte k = column 8k+j), name.q8.values (I8), name.q8.scale
// (F32) — so a 90%-sparse model takes ~0.23 bytes a weight instead of 4. Layers whose name
// contains one of `keep_fp32` stay fp32; biases and BatchNorm stay fp32. Model::load reads
// both forms; with LoadOptions::int8 the codes are used as they are (re-quantizing q·s gives
// q back). Written atomically.
struct QuantizeReport {
  std::uint64_t bytes_in = 0, bytes_out = 0;
  std::vector<std::string> quantized, kept;
};
// `act_scales` (weight name → static INT8 input scale, e.g. from Model::calibrate_int8) is
// stored as the file's "prunus.act_scales"; empty: the input file's scales, if any, are kept.
QuantizeReport quantize_file(const std::string& in, const std::string& out, const std::vector<std::string>& keep_fp32,
                             const std::map<std::string, float>& act_scales = {});
// Model::calibrate_int8 on `m` (loaded with LoadOptions::int8, stored scales off), keyed by
// weight name as quantize_file stores them, leaving out the layers `keep_fp32` keeps in fp32.
std::map<std::string, float> calibrated_act_scales(Model& m, const float* x, std::int64_t batch,
                                                   const std::string& method,
                                                   const std::vector<std::string>& keep_fp32);

// ------------------------------------------------------------------ LLaMA decoder
// The LLaMA forward of llama2.c (RMSNorm, RoPE on interleaved pairs, grouped-query attention,
// SwiGLU) one token at a time with a KV cache, every decoder linear in the format that
// measured fastest for batch 1 (dense competes). Greedy decoding gives the same tokens as the
// libtorch forward of prunus_core.
struct LlamaConfig {
  std::int64_t dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0, seq_len = 0;
  bool shared_classifier = true;
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  std::int64_t head_dim = 0;  // 0: dim / n_heads (see llama2c::Config::head_dim)
  std::int64_t head_size() const { return head_dim ? head_dim : dim / n_heads; }
  std::int64_t kv_dim() const { return head_size() * n_kv_heads; }
  std::int64_t q_dim() const { return head_size() * n_heads; }
};

class Llama {
 public:
  // A llama2.c checkpoint (validated by llama2c::read_checkpoint) or a Hugging Face LLaMA folder
  // (hf::read_llama_folder: safetensors, sharded, fp16/bf16, compressed-tensors sparse layouts).
  static Llama load(const std::string& path, const LoadOptions& opt = {});
  // Takes the checkpoint by value and frees each dense tensor once its layer is built, so
  // the resident size ends near the chosen formats' bytes.
  static Llama from_checkpoint(llama2c::Checkpoint ck, const LoadOptions& opt = {}, float norm_eps = 1e-5f,
                               float rope_theta = 10000.0f);

  // Runs `token` at position `pos` and returns the logits [vocab]. Positions start at 0 and
  // come in order (the KV cache holds positions < pos); pos < seq_len.
  const std::vector<float>& step(std::int32_t token, std::int64_t pos);
  // From BOS, the argmax token each step (first index on ties) until `steps` tokens, BOS or
  // seq_len; returns BOS followed by the generated tokens. `on_token` sees each new token.
  std::vector<std::int32_t> generate_greedy(std::int64_t steps,
                                            const std::function<void(std::int32_t)>& on_token = nullptr);

  const LlamaConfig& config() const { return cfg_; }
  // The decoder linears, then "lm_head" when an unshared classifier is pruned (≥ 10% zeros).
  const std::vector<LayerInfo>& layers() const { return infos_; }
  std::uint64_t weight_bytes() const;  // all weights as held (formats chosen + embeddings + norms)
  // Whether the embedding table is read from the model file (LoadOptions::map_embedding).
  bool embedding_mapped() const { return embedding_file_.data != nullptr; }

 private:
  struct Block {
    std::vector<float> attn_norm, ffn_norm;
    kernels::SparseLinear wq, wk, wv, wo, w1, w2, w3;
  };
  LlamaConfig cfg_;
  std::vector<float> embedding_;  // [vocab × dim]; empty when the classifier shares it or it is mapped
  // The table in the model file (LoadOptions::map_embedding); data == nullptr: not mapped.
  safetensors::TensorView embedding_file_{};
  std::shared_ptr<const void> embedding_map_;  // keeps the file's mapping alive
  kernels::SparseLinear classifier_;
  std::vector<float> final_norm_;
  std::vector<Block> blocks_;
  std::vector<LayerInfo> infos_;
  // Activations and cache.
  std::vector<float> x_, xb_, q_, k_, v_, att_, hb_, hb2_, logits_, cos_, sin_;
  std::vector<std::vector<float>> key_cache_, value_cache_;  // per layer [seq_len × kv_dim]
  void embed(std::int32_t token, float* out) const;  // the token's row of the embedding table
  void map_embedding(const std::string& path);
};

}  // namespace prunus::runtime
