// prunus/llm.h — LLaMA-family language models in libtorch: forward, perplexity, greedy
// generation, and one-shot pruning (magnitude, Wanda, SparseGPT; unstructured and N:M),
// layer by layer on calibration text.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <torch/types.h>

#include "prunus/llama2c.h"

namespace prunus::llm {

struct Config {
  std::int64_t dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0, seq_len = 0;
  bool shared_classifier = true;
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;
  std::int64_t head_dim = 0;  // 0: dim / n_heads (see llama2c::Config::head_dim)
  std::int64_t head_size() const { return head_dim ? head_dim : dim / n_heads; }
};

// Weights by Hugging Face LLaMA names (model.layers.{i}.self_attn.q_proj.weight, ...), fp32.
struct Model {
  Config config;
  std::map<std::string, torch::Tensor> weights;

  const torch::Tensor& w(const std::string& name) const;
  torch::Tensor embed(const torch::Tensor& tokens) const;                  // [B,T] → [B,T,D]
  // One decoder block. When `observe` is set it receives each linear's input (by weight
  // name) as [B·T, in] before the product: calibration hooks.
  using Observer = std::function<void(const std::string& weight, const torch::Tensor& input)>;
  torch::Tensor block(int layer, const torch::Tensor& x, const Observer& observe = nullptr) const;
  torch::Tensor logits(const torch::Tensor& x) const;                       // final norm + classifier
  torch::Tensor forward(const torch::Tensor& tokens) const;                 // [B,T] → [B,T,V]
  std::vector<std::string> linear_names(int layer) const;
};

Model from_llama2c(const llama2c::Checkpoint& ck);
llama2c::Checkpoint to_llama2c(const Model& m);
// A directory is a Hugging Face LLaMA folder (config.json + model.safetensors or a sharded
// index; fp32/fp16/bf16; tied or separate lm_head); a file is a llama2.c checkpoint.
Model load(const std::string& path);
// A path ending in ".bin" is written as llama2.c, anything else as a Hugging Face folder.
void save(const std::string& path, const Model& m);
bool is_hf_folder(const std::string& path);
Model load_hf(const std::string& dir);
void save_hf(const std::string& dir, const Model& m);
// A Hugging Face folder in a compressed-tensors layout (config.json quantization_config; the
// decoder linears compressed, embeddings, norms and lm_head fp32):
// - Int8: W8A8 "int-quantized" — symmetric per-output-channel int8 codes + weight_scale, inputs
//   quantized per token at run time; pruned weights are zero codes (what current releases read);
// - Int8Bitmask: those codes stacked with "sparse-bitmask" (zeros not stored);
// - SparseBitmask: fp32 values as "sparse-bitmask" (non-zero values, packed bitmask, row offsets);
// - Sparse24Bitmask: fp32 values as "sparse-24-bitmask" (two of every four; a weight that is not
//   2:4 is an InputError, never silently pruned further).
// The sparse layouts are those of compressed-tensors <= 0.14 and the vLLM releases of that time
// (later releases dropped sparse compression); load_hf reads them back.
enum class CtLayout { Int8, Int8Bitmask, SparseBitmask, Sparse24Bitmask };
struct CompressedTensorsReport {
  int layers = 0;
  double sparsity = 0;         // zeros (zero codes) over the decoder linears
  std::string structure;       // "2:4" or "unstructured"
};
CompressedTensorsReport save_hf_compressed(const std::string& dir, const Model& m, CtLayout layout);

// The default perplexity protocol: each non-empty line of the text is one document,
// encoded with BOS and the tokenizer's leading space; documents are concatenated.
std::vector<std::int32_t> tokenize_documents(const std::string& text_path, const llama2c::Tokenizer& tok);

struct Perplexity {
  double perplexity = 0;
  double mean_nll = 0;
  std::int64_t tokens = 0;      // tokens in the stream
  std::int64_t windows = 0;     // windows of `context` tokens scored
  std::int64_t predicted = 0;   // positions predicted (context − 1 per window)
};
// Non-overlapping windows of `context` tokens (a last partial window is dropped), each
// scored independently; perplexity = exp(mean NLL over all predicted positions).
Perplexity perplexity(const Model& m, const std::vector<std::int32_t>& tokens, std::int64_t context,
                      std::int64_t batch = 8);

std::vector<std::int32_t> generate_greedy(const Model& m, std::int64_t steps);

// ------------------------------------------------------------------ one-shot pruning
// Where a one-shot job's decoder blocks live when the model is not held whole (streaming):
// load(m, l) puts block l's weights into m.weights before it is calibrated and pruned,
// store(m, l) takes them out once the block is done (and writes them), release(m, l) takes
// them out unchanged (OWL's first pass). start(first) comes before the first block is pruned
// (first > 0: a resumed run, blocks before it are already in the kept output); keep() on an
// interrupt, to leave the output written so far for --resume.
struct BlockIO {
  std::function<void(Model&, int)> load, store, release;
  std::function<void(int)> start;
  std::function<void()> keep;
};

struct OneShotConfig {
  std::string method = "wanda";       // magnitude | wanda | sparsegpt | owl (Wanda with OWL's per-block sparsity)
  double sparsity = 0.5;              // unstructured target (ignored for N:M)
  std::int64_t n = 0, m = 0;          // N:M when m > 0: keep n of every m inputs
  std::string magnitude_scope = "row";  // magnitude: row | layer
  std::int64_t nsamples = 64;         // calibration windows
  std::int64_t seqlen = 0;            // 0: the model's context
  std::uint64_t seed = 0;
  double damp = 0.01;                 // SparseGPT: fraction of the mean Hessian diagonal
  std::int64_t blocksize = 128;       // SparseGPT: columns per lazy batch
  double owl_lambda = 0.08;           // OWL: per-block sparsity varies within target ± lambda
  double owl_m = 5.0;                 // OWL: an outlier exceeds m × the block's mean Wanda score
  std::vector<std::string> skip;      // linears whose name contains one of these stay dense
  bool progress = true;
  // Where the calibration and the solves run ("cpu", "cuda", "cuda:1"). In a distributed
  // job (prunus launch) the calibration windows are split over the ranks, their statistics
  // all-reduced, and SparseGPT's per-linear solves spread over the ranks: the masks and
  // weights equal the one-process result.
  std::string device = "cpu";
  // Ctrl-C stops after the block in progress and saves the finished blocks here; `resume`
  // continues from it (the calibration activations are recomputed through the pruned blocks,
  // so the result is byte-identical to an uninterrupted run). Empty: no checkpointing.
  std::string checkpoint;
  bool resume = false;
  int stop_after_block = -1;          // tests: act as if Ctrl-C came during this block
  // Streaming (CPU only, one process): see BlockIO. Its checkpoint holds the calibration
  // activations entering the next block instead of the finished blocks (those are in the
  // kept output, checkpoint + ".partial").
  const BlockIO* io = nullptr;
};

struct LayerResult {
  std::string name;
  std::int64_t numel = 0, zeros = 0;
  double seconds = 0;
  double damp = 0;  // SparseGPT's dampening actually used
};
struct OneShotResult {
  std::vector<LayerResult> layers;
  std::vector<double> block_sparsity;      // per decoder block (OWL varies it)
  std::vector<double> block_outlier_ratio; // OWL's layer-wise outlier ratios
  std::vector<double> block_seconds;       // wall time of each block pruned by this run
  double seconds = 0;
  double calib_seconds = 0;  // statistics pass (forward + accumulation + all-reduce)
  double solve_seconds = 0;  // this rank's own pruning of the linears it owns
  std::int64_t peak_rss_bytes = 0;
  bool interrupted = false;   // stopped by Ctrl-C; cfg.checkpoint holds the finished blocks
  int resumed_from_block = 0; // first block this run pruned (> 0 when resumed)
};

// Prunes every decoder linear (embeddings and classifier are kept; names matching `skip`
// too), block by block: block l is calibrated on the outputs of the already-pruned blocks
// before it. For N:M, every pruned linear's input size must be a multiple of M: checked
// before any work, with the layer named.
OneShotResult oneshot(Model& m, const std::vector<std::int32_t>& calib_tokens, const OneShotConfig& cfg);
// One-shot pruning of a Hugging Face folder into another without holding the model: the
// input stays memory-mapped, each decoder block is read when its turn comes and written to its
// place in OUT/model.safetensors as soon as it is pruned (embeddings, norms and lm_head stay in
// memory), and the output folder appears only when every block is done (model.safetensors,
// then config.json). Same bytes as oneshot() on the loaded model followed by save(). Ctrl-C
// (OneShotResult::interrupted) leaves no output at out_dir; with cfg.checkpoint set it keeps
// the blocks written so far in checkpoint + ".partial" and the next block's calibration
// activations in the checkpoint, and cfg.resume continues from them (same bytes).
OneShotResult oneshot_streaming(const std::string& in_dir, const std::string& out_dir,
                                const std::vector<std::int32_t>& calib_tokens, const OneShotConfig& cfg);

// ------------------------------------------------------------------ structured: neurons and heads
// Physically smaller models: removes whole SwiGLU hidden neurons (a gate_proj row, its up_proj
// row and down_proj column) and whole attention KV groups (one KV head with the query heads that
// read it — without GQA, one head: its q/k/v rows and o_proj columns). Every block keeps the same
// counts (the formats have one hidden_dim and one head count): hidden − round(mlp_fraction·hidden)
// rounded up to round_to, n_kv − round(head_fraction·n_kv) groups (at least one). With heads
// removed, n_heads · head_dim < dim: Hugging Face folders hold that (config.json head_dim), the
// llama2.c header cannot.
struct LlmShrinkConfig {
  double mlp_fraction = 0.25;
  double head_fraction = 0.0;
  // activation: the unit's expected output norm on calibration windows of the dense model,
  //   √(Σ_j ‖W_out[:, j]‖² · E[x_j²]) over its input columns j of down_proj / o_proj — Wanda's
  //   |W|·‖X‖ for a whole neuron or head group (cf. FLAP, Wanda-sp);
  // l2: the L2 norm of all the unit's weights (rows in, columns out); random (seeded).
  std::string criterion = "activation";
  std::int64_t round_to = 1;               // MLP neurons kept: a multiple of this
  std::int64_t nsamples = 32, seqlen = 0;  // activation: windows (0: the model's context)
  std::uint64_t seed = 0;
};
struct LlmShrinkPlan {
  std::int64_t hidden_before = 0, hidden_after = 0;
  std::vector<std::vector<std::int64_t>> kept;         // per block, ascending MLP neuron indices
  std::int64_t kv_before = 0, kv_after = 0;            // KV groups (heads without GQA)
  std::vector<std::vector<std::int64_t>> kept_groups;  // per block, ascending KV head indices
};
// Chooses what to keep (the model is unchanged).
LlmShrinkPlan plan_llm_shrink(const Model& m, const std::vector<std::int32_t>& calib_tokens, const LlmShrinkConfig& cfg);
// Removes the rest: new shapes and sizes (hidden_dim, n_heads, n_kv_heads, head_dim).
void apply_llm_shrink(Model& m, const LlmShrinkPlan& plan);
// Zeroes the rest's rows and columns, shapes unchanged: the same function as the shrunk
// model, which is how tests check the rewrite.
void mask_llm_shrink(Model& m, const LlmShrinkPlan& plan);
// Output reconstruction, after apply_llm_shrink: block by block, on calibration windows
// propagated through the already-reconstructed blocks, refits o_proj and down_proj over the
// kept inputs by least squares against the dense block's outputs — W' = W·Σ[:, K]·(Σ[K, K] +
// λI)⁻¹ with Σ = E[x xᵀ] of the dense layer's input and λ = 1% of its mean diagonal. The
// removed units' mean contribution is folded into the kept ones (cf. FLAP's bias compensation,
// ThiNet's least-squares refit). Returns, per block, the relative squared output error on
// the calibration windows before and after the refit.
struct ReconstructionError {
  std::vector<double> before, after;
};
ReconstructionError reconstruct_llm_shrink(Model& shrunk, const Model& dense, const LlmShrinkPlan& plan,
                                           const std::vector<std::int32_t>& calib_tokens, const LlmShrinkConfig& cfg);

// `nsamples` windows of `seqlen` tokens at seeded random offsets: the calibration batch of
// oneshot() and plan_llm_shrink().
torch::Tensor calibration_windows(const std::vector<std::int32_t>& tokens, std::int64_t nsamples, std::int64_t seqlen,
                                  std::uint64_t seed);

// OWL (Yin et al. 2024): per-block sparsities from outlier ratios D_l, rescaled to
// [s − λ, s + λ] around the target with mean s: s_l = 1 − (λ·2·(D_l − min)/(max − min) − mean + 1 − s).
std::vector<double> owl_allocation(const std::vector<double>& outlier_ratio, double target, double lambda);

// Per-layer primitives (exposed for tests).
torch::Tensor wanda_mask(const torch::Tensor& w, const torch::Tensor& col_sq_norm, const OneShotConfig& cfg);
torch::Tensor magnitude_mask(const torch::Tensor& w, const OneShotConfig& cfg);
// Prunes w in place given H = Σ x xᵀ / n; returns the dampening used.
double sparsegpt_prune(torch::Tensor& w, torch::Tensor h, const OneShotConfig& cfg, const std::string& name);

std::int64_t peak_rss_bytes();

}  // namespace prunus::llm
