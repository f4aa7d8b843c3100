// prunus/recipe.h — the plain description of a job: what to train, how to prune it,
// how to recover. Parsed from YAML recipes or filled from CLI flags; validated before
// anything is written to disk. No libtorch here: the CLI includes only this header.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace prunus {

struct DataConfig {
  std::string dir;              // empty: Debian's /usr/share/datasets/fashion-mnist
  std::int64_t train_limit = 0; // use only the first N training samples (0: all)
  std::int64_t test_limit = 0;
};

struct TrainConfig {
  int epochs = 0;
  int batch_size = 128;
  std::string optimizer = "sgd";    // sgd (with momentum) | adam
  double lr = 0.05;
  double momentum = 0.9;
  double weight_decay = 0.0;
  std::string lr_schedule = "cosine";  // cosine | step | constant
  int step_epochs = 10;              // step schedule: multiply by gamma every step_epochs
  double gamma = 0.1;
  double label_smoothing = 0.0;
  bool augment = false;              // random ±2 px shifts and horizontal flips
  // Knowledge distillation from a teacher (the dense model when fine-tuning a pruned one):
  // loss = α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α)·CE(s, y). α = 0: off.
  double distill_alpha = 0.0;
  double distill_temperature = 4.0;
  // Quantization-aware training: weights and layer inputs fake-quantized to INT8 in the forward
  // pass (as `prunus quantize` + the runtime's --int8 deploy them), straight-through gradients,
  // masks held. The learned input ranges are saved with the model as static activation scales.
  bool qat = false;
};

// When masks change. oneshot: prune to the target at `begin`. gradual: Zhu & Gupta's
// cubic ramp s_t = s_f + (s_i - s_f)·(1 - (t - t0)/(t1 - t0))³ from step t0 to t1,
// recomputed every `frequency` steps.
struct ScheduleConfig {
  std::string kind = "gradual";
  double initial_sparsity = 0.0;
  // Given in epochs of the fine-tuning stage (fractions allowed); converted to steps.
  double begin_epoch = 0.0;
  double end_epoch = 0.0;
  std::int64_t frequency = 100;      // steps between mask updates
  // iterative (IMP): `rounds` rounds, each pruning the same fraction of the remaining weights
  // (round i reaches 1 − (1 − s)^(i/rounds)), rewinding the kept weights, then retraining for
  // finetune.epochs with the masks held. rewind: none | init | epoch:K (of dense training).
  std::int64_t rounds = 1;
  std::string rewind = "none";
};

struct PruneConfig {
  double sparsity = 0.9;
  std::string criterion = "magnitude";   // see sparsify.h registries
  std::string pattern = "unstructured";
  std::string scope = "global";          // global | layer
  ScheduleConfig schedule;
  std::int64_t calibration_batches = 8;  // gradient criteria (taylor, snip, movement): batches seen before pruning
  std::int64_t synflow_rounds = 100;     // synflow: pruning rounds at initialization (data-free)
  // SR-STE (Zhou et al. 2021) for N:M while training: > 0 keeps dense weights behind the N:M
  // forward, recomputes the mask from their magnitudes every step and decays the pruned ones
  // by this λ through their gradient. 0: the mask is fixed between schedule updates.
  double srste_decay = 0.0;
  // Per-layer sparsities by parameter name (e.g. from `prunus sensitivity`); these layers
  // take o·t/s at schedule target t (final sparsity s), the scope shares t among the rest.
  // A name with sparsity 0 is a skip; names may be shell patterns ("conv1*": the first conv).
  std::map<std::string, double> layers;
};

// The last stage of a pipeline recipe (a `quantize:` section): the sparse model becomes an INT8
// file (prunus quantize: weights per output channel, zeros stay zero, BatchNorm folded), run and
// scored in the libtorch-free runtime with INT8 arithmetic.
struct QuantizeConfig {
  bool enabled = false;
  // Activation scales: "" — the ones quantization-aware fine-tuning learned (finetune.qat), else
  // per token at run time; minmax | percentile | mse — static ones calibrated on the first
  // calib_samples training images.
  std::string calibrate;
  std::int64_t calib_samples = 256;
  std::vector<std::string> keep_fp32;  // weight names containing one of these stay fp32
};

// Structured pruning that physically shrinks the model (`prunus shrink`), in place of `prune`:
// whole channels and neurons leave the trained dense model, then `finetune` trains the smaller
// one (no masks: the zeros are gone).
struct ShrinkConfig {
  bool enabled = false;
  double sparsity = 0.5;            // fraction of each prunable group's channels removed
  std::string criterion = "l2";     // l1 | l2 | bn | activation | thinet | random
  std::int64_t round_to = 1;        // kept channels rounded up to a multiple of this
  std::int64_t calib_samples = 256; // activation, thinet: the first N training images
  // Training images to re-estimate the shrunk model's BatchNorm statistics on before
  // fine-tuning (adaptive BN; 0: off, the statistics are the dense model's).
  std::int64_t recalibrate_bn = 0;
};

struct Recipe {
  std::string name = "builtin:lenet300-fmnist-gradual90";
  std::string model = "lenet300";
  std::uint64_t seed = 0;
  int threads = 0;                   // 0: libtorch's default
  DataConfig data;
  TrainConfig train;                 // dense training (epochs 0: skip, needs `input`)
  PruneConfig prune;
  TrainConfig finetune;              // pruning happens during this stage
  std::string input;                 // start from this model file instead of training
  std::string out_dir = "out";
  QuantizeConfig quantize;           // INT8 after fine-tuning (off unless the recipe has it)
  ShrinkConfig shrink;               // structured instead of `prune` (off unless the recipe has it)
};

// The built-in default recipe: the main job of `./run.sh`.
Recipe default_recipe();
// Parses a YAML recipe; unknown keys and impossible values are InputErrors naming the file.
// `sets`: "key.path=value" overrides applied before validation (prunus run --set).
Recipe load_recipe(const std::string& path, const std::vector<std::string>& sets = {});
// The same from YAML text; `path` names it in messages.
Recipe parse_recipe(const std::string& text, const std::string& path, const std::vector<std::string>& sets = {});
// Checks ranges and names (sparsity in [0,1), known model/criterion/...); InputError.
void validate(const Recipe& r, const std::string& where);
void validate(const TrainConfig& t, const std::string& where);
void validate(const PruneConfig& p, const std::string& where);

// Options every job shares.
struct JobOptions {
  bool progress = true;     // progress bar with ETA (a line per epoch when not a TTY)
  bool resume = false;      // continue from the checkpoint of an interrupted run
  std::string report;       // train/prune/finetune: write this report JSON and the HTML beside it
};

// ------------------------------------------------------------------ jobs (pipeline.cpp)
// Each returns a process exit code (0 ok, 130 interrupted with a checkpoint written).

// The whole recipe: train dense → prune while fine-tuning → evaluate → write
// dense.safetensors, sparse.safetensors, report.json to out_dir and print a summary.
int run_recipe(const Recipe& r, const JobOptions& opt);

struct TrainJob {
  std::string model;        // architecture name
  std::string out;          // model file to write
  std::uint64_t seed = 0;
  int threads = 0;
  DataConfig data;
  TrainConfig train;
};
int train_job(const TrainJob& job, const JobOptions& opt);

struct PruneJob {
  std::string input, out;
  std::uint64_t seed = 0;
  int threads = 0;
  PruneConfig prune;        // schedule.kind oneshot: no data needed
  DataConfig data;
  TrainConfig finetune;     // used when the schedule is gradual
};
int prune_job(const PruneJob& job, const JobOptions& opt);

// Sensitivity analysis: each prunable layer alone pruned to each level (no fine-tuning),
// accuracy measured on the last `holdout` training samples (the test set stays untouched for
// reporting); CSV out. With a target, a greedy allocator on the curves (linear between
// levels) picks per-layer sparsities that reach it with the least summed accuracy drop and
// prints them as a recipe's prune.layers.
struct SensitivityJob {
  std::string input, out;               // model, CSV to write
  std::vector<double> levels = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98};
  std::string criterion = "magnitude", pattern = "unstructured";
  double target = 0;                    // 0: no allocation
  std::int64_t holdout = 5000;          // the last N training samples score each level
  std::uint64_t seed = 0;
  int threads = 0;
  DataConfig data;
};
int sensitivity_job(const SensitivityJob& job, const JobOptions& opt);

// Fine-tunes a (sparse) model with its zeros held as masks.
struct FinetuneJob {
  std::string input, out;
  std::uint64_t seed = 0;
  int threads = 0;
  DataConfig data;
  TrainConfig train;
};
int finetune_job(const FinetuneJob& job, const JobOptions& opt);

struct EvalResult {
  double accuracy = 0;
  double loss = 0;
  std::int64_t samples = 0;
};
EvalResult eval_job(const std::string& model_path, const DataConfig& data, int threads);

// ------------------------------------------------------------------ language models (llm/jobs.cpp)
struct LlmTextOptions {
  std::string tokenizer;    // empty: tok<vocab>.bin beside the model
  int threads = 0;
};
int perplexity_job(const std::string& model, const std::string& text, std::int64_t context, std::int64_t max_windows,
                   const LlmTextOptions& o);
struct GenerateOptions {
  std::int64_t steps = 256;
  std::string runtime = "torch";  // torch (prunus_core's forward) | native (prunus_runtime, no libtorch)
  bool dense = false;             // native: keep every linear dense (the runtime's dense path)
  bool stats = false;             // native: per-layer formats and tokens/s on stderr
};
int generate_job(const std::string& model, const GenerateOptions& g, const LlmTextOptions& o);
struct OneShotJob {
  std::string model, out, calib;
  std::string method = "wanda";   // magnitude | wanda | sparsegpt
  double sparsity = 0.5;
  std::string nm;                 // "2:4", "4:8", ... (overrides sparsity)
  std::string magnitude_scope = "row";
  std::int64_t nsamples = 64, seqlen = 0;
  std::uint64_t seed = 0;
  double damp = 0.01;
  std::int64_t blocksize = 128;
  std::string report;             // JSON report path (optional)
  std::vector<std::string> skip;  // keep linears whose name contains one of these dense
  LlmTextOptions text;
  bool progress = true;
  bool resume = false;            // continue from OUT.ckpt (written by Ctrl-C)
  std::string device = "cpu";     // cpu | cuda (a distributed job: each rank on cuda:LOCAL_RANK)
  bool stream = false;            // HF folder → HF folder with one block in memory (llm::oneshot_streaming)
  int stop_after_block = -1;      // tests: behave as if Ctrl-C came during this block (0-based)
};
int oneshot_job(const OneShotJob& job);
// llama2.c checkpoint ⇄ Hugging Face LLaMA folder (OUT ending in .bin: llama2.c).
// compressed: "" (plain), "int8" or "int8-bitmask": OUT is a Hugging Face folder in
// compressed-tensors W8A8 int8 (llm::save_hf_compressed_int8).
int convert_job(const std::string& in, const std::string& out, const std::string& compressed = "");

// prunus shrink MODEL -o OUT: structured pruning that removes channels (prunus/shrink.h).
struct ShrinkJob {
  std::string input, out, masked;  // masked: also write the same-shape model with the channels zeroed
  double sparsity = 0.5;
  std::string criterion = "l2";
  std::int64_t round_to = 1;
  std::uint64_t seed = 0;
  std::string calib_data;               // activation criterion: Fashion-MNIST directory (default: Debian's)
  std::int64_t calib_samples = 256;
  // A language model (llama2.c .bin or Hugging Face folder): MLP neurons are removed
  // (llm::plan_mlp_shrink); the activation criterion reads calibration text.
  std::string calib_text;
  double heads = 0.0;  // fraction of each block's KV head groups removed
  bool reconstruct = false;  // refit o_proj/down_proj on calibration text (llm::reconstruct_llm_shrink)
  std::int64_t nsamples = 32, seqlen = 0;
  LlmTextOptions text;
};
int shrink_job(const ShrinkJob& job);
int shrink_llm_job(const ShrinkJob& job);  // shrink_job's language-model branch

// prunus bench MODEL: the whole model in prunus_runtime, sparse formats vs the runtime's dense
// path in one process (graph models: latency per batch; llama2.c .bin: decode tokens/s).
struct BenchJob {
  std::string model, report;
  std::string baseline;          // another model (e.g. before shrinking): its dense path is timed too
  std::vector<std::int64_t> batches = {1, 64};
  int threads = 1;
  double seconds = 2.0;          // measuring budget per batch size (dense + sparse)
  std::int64_t tokens = 64;      // LLM: tokens decoded per timed call
  std::uint64_t seed = 0;
};
int bench_job(const BenchJob& job);

std::vector<std::string> model_names();
std::vector<std::string> criterion_names();
std::vector<std::string> pattern_names();
// Empty when `name` is a valid pattern (unstructured, N:M such as 2:4, block:RxC), else why not.
std::string pattern_error(const std::string& name);
// The sparsity an N:M pattern fixes (1 − N/M); −1 for patterns that take any target.
double pattern_fixed_sparsity(const std::string& name);
// The dense epoch a rewind spec names: init → 0, epoch:K → K; −1 for anything else (none too).
std::int64_t rewind_epoch(const std::string& rewind);
std::vector<std::string> scope_names();
std::vector<std::string> schedule_names();

}  // namespace prunus
