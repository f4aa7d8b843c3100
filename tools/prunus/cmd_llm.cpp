// The language-model verbs: perplexity, generate, oneshot.
#include <cstdio>
#include <fstream>

#include "commands.h"
#include "prunus/io.h"
#include "prunus/llama2c.h"

namespace prunus::cli {

void add_llm(CLI::App& app, Action& action) {
  {
    struct O {
      std::string in, out;
      std::string compressed;
    };
    auto o = std::make_shared<O>();
    auto* cmd = app.add_subcommand(
        "convert",
        "Convert a language model: llama2.c checkpoint (.bin) <-> Hugging Face LLaMA folder (config.json + "
        "model.safetensors; reads sharded folders and fp16/bf16 too). OUT ending in .bin is written as llama2.c.");
    cmd->add_option("input", o->in, "llama2.c .bin or Hugging Face folder")->required();
    cmd->add_option("output", o->out, "llama2.c .bin or folder to write")->required();
    cmd->add_option("--compressed-tensors", o->compressed,
                    "Write the folder in a compressed-tensors layout (vLLM, transformers, llm-compressor): int8 = W8A8, "
                    "int8 weights per output channel and activations per token at run time, zeros as zero codes (what "
                    "current releases read); int8-bitmask = those codes with zeros not stored; sparse-bitmask / "
                    "sparse-24-bitmask = fp32 values, zeros not stored (compressed-tensors <= 0.14; 2:4 checked). "
                    "Sparse folders read back as input");
    cmd->callback([&action, o] { action = [o] { return convert_job(o->in, o->out, o->compressed); }; });
  }
  {
    // Token ids of each document, as perplexity and oneshot encode them (libtorch-free).
    struct O {
      std::string text, tokenizer;
      std::int32_t vocab_size = 0;
    };
    auto o = std::make_shared<O>();
    auto* cmd = app.add_subcommand(
        "tokenize", "Print the token ids of each non-empty line of a text file (BOS + the tokenizer's leading space, "
                    "as perplexity and oneshot encode documents), one line of ids per document");
    cmd->add_option("text", o->text, "Text file")->required();
    cmd->add_option("--tokenizer", o->tokenizer, "llama2.c tokenizer (.bin), Hugging Face tokenizer.json or sentencepiece tokenizer.model")->required();
    cmd->add_option("--vocab-size", o->vocab_size, "The model's vocabulary size")->required()->check(CLI::PositiveNumber);
    cmd->callback([&action, o] {
      action = [o] {
        const auto tok = llama2c::Tokenizer::read_any(o->tokenizer, o->vocab_size);
        std::ifstream in(o->text, std::ios::binary);
        if (!in) fail(o->text, "cannot open the text file");
        std::string line, out;
        while (std::getline(in, line)) {
          // The perplexity protocol's document: the line without surrounding whitespace.
          const char* ws = " \t\r\n\v\f";  // as llm::tokenize_documents (Python's str.strip())
          const auto b = line.find_first_not_of(ws), e = line.find_last_not_of(ws);
          if (b == std::string::npos) continue;
          out.clear();
          for (auto id : tok.encode(line.substr(b, e - b + 1), true, false)) out += (out.empty() ? "" : " ") + std::to_string(id);
          std::printf("%s\n", out.c_str());
        }
        return 0;
      };
    });
  }
  {
    struct O {
      std::string model, text;
      std::int64_t context = 0, max_windows = 0;
      LlmTextOptions t;
    };
    auto o = std::make_shared<O>();
    auto* cmd = app.add_subcommand(
        "perplexity",
        "Perplexity of a llama2.c model on a text file. Protocol: each non-empty line is one document, encoded "
        "with BOS and the tokenizer's leading space; documents are concatenated into one token stream, cut into "
        "non-overlapping windows of the context length (a last partial window is dropped); each window is scored "
        "independently; perplexity = exp(mean negative log-likelihood over all predicted positions).");
    cmd->add_option("model", o->model, "llama2.c checkpoint (.bin) or Hugging Face LLaMA folder")->required();
    cmd->add_option("text", o->text, "Text file")->required();
    cmd->add_option("--tokenizer", o->t.tokenizer, "llama2.c tokenizer (.bin), Hugging Face tokenizer.json (LLaMA/sentencepiece BPE) or sentencepiece tokenizer.model; default: the folder's tokenizer.json, else its tokenizer.model, else tok<vocab>.bin beside the model");
    cmd->add_option("--context", o->context, "Window length (default: the model's seq_len)");
    cmd->add_option("--max-windows", o->max_windows, "Score only the first N windows (0: all)");
    cmd->add_option("--threads", o->t.threads, "Intra-op threads");
    cmd->callback([&action, o] {
      action = [o] { return perplexity_job(o->model, o->text, o->context, o->max_windows, o->t); };
    });
  }
  {
    struct O {
      std::string model;
      GenerateOptions g;
      LlmTextOptions t;
    };
    auto o = std::make_shared<O>();
    auto* cmd = app.add_subcommand("generate", "Greedy decoding from BOS (a smoke test of a model)");
    cmd->add_option("model", o->model, "llama2.c checkpoint (.bin) or Hugging Face LLaMA folder")->required();
    cmd->add_option("--steps", o->g.steps, "Tokens to generate")->capture_default_str();
    cmd->add_option("--tokenizer", o->t.tokenizer, "llama2.c tokenizer (.bin), Hugging Face tokenizer.json (LLaMA/sentencepiece BPE) or sentencepiece tokenizer.model; default: the folder's tokenizer.json, else its tokenizer.model, else tok<vocab>.bin beside the model");
    cmd->add_option("--runtime", o->g.runtime,
                    "torch (libtorch forward) or native (prunus_runtime: KV cache, each linear in the sparse format "
                    "that measured fastest)")
        ->capture_default_str();
    cmd->add_flag("--dense", o->g.dense, "native: keep every linear dense (the runtime's dense path)");
    cmd->add_flag("--stats", o->g.stats, "native: per-layer formats, bytes, speed-ups and tokens/s on stderr");
    cmd->add_option("--threads", o->t.threads, "Threads");
    cmd->callback([&action, o] { action = [o] { return generate_job(o->model, o->g, o->t); }; });
  }
  {
    auto j = std::make_shared<OneShotJob>();
    auto* cmd = app.add_subcommand(
        "oneshot",
        "One-shot pruning of a language model's decoder linears (embeddings and classifier kept), block by block on "
        "calibration text: magnitude, wanda (|W|·‖X‖ per output row) or sparsegpt (OBS updates from the calibration "
        "Hessian); unstructured (--sparsity) or N:M (--nm 2:4)");
    cmd->add_option("model", j->model, "llama2.c checkpoint (.bin) or Hugging Face LLaMA folder")->required();
    cmd->add_option("-o,--out", j->out, "Pruned model to write: .bin (llama2.c) or a folder (Hugging Face)")->required();
    cmd->add_option("--method", j->method, "magnitude | wanda | sparsegpt | owl (Wanda with OWL per-block sparsity)")
        ->capture_default_str();
    cmd->add_option("--sparsity", j->sparsity, "Unstructured sparsity in [0, 1)")->capture_default_str();
    cmd->add_option("--nm", j->nm, "N:M pattern along the inputs, e.g. 2:4 (overrides --sparsity)");
    cmd->add_option("--scope", j->magnitude_scope, "magnitude: rank per output row or per layer")->capture_default_str();
    cmd->add_option("--calib", j->calib, "Calibration text (same line-per-document protocol as perplexity)");
    cmd->add_option("--tokenizer", j->text.tokenizer, "llama2.c tokenizer (.bin), Hugging Face tokenizer.json (LLaMA/sentencepiece BPE) or sentencepiece tokenizer.model; default: the folder's tokenizer.json, else its tokenizer.model, else tok<vocab>.bin beside the model");
    cmd->add_option("--nsamples", j->nsamples, "Calibration windows")->capture_default_str();
    cmd->add_option("--seqlen", j->seqlen, "Calibration window length (default: the model's seq_len)");
    cmd->add_option("--seed", j->seed, "Seed for picking calibration windows")->capture_default_str();
    cmd->add_option("--damp", j->damp, "SparseGPT dampening (fraction of the mean Hessian diagonal)")->capture_default_str();
    cmd->add_option("--blocksize", j->blocksize, "SparseGPT columns per lazy batch")->capture_default_str();
    cmd->add_option("--report", j->report, "Write a JSON report (per-layer zeros, times, peak RSS)");
    cmd->add_option("--skip", j->skip, "Keep linears whose name contains this dense (repeatable), e.g. down_proj");
    cmd->add_option("--threads", j->text.threads, "Intra-op threads");
    cmd->add_option("--device", j->device,
                    "cpu | cuda | cuda:N; under prunus launch, cuda means one GPU per rank (cuda:LOCAL_RANK)")
        ->capture_default_str();
    auto quiet = std::make_shared<bool>(false);
    cmd->add_flag("--no-progress", *quiet, "No per-block progress lines");
    cmd->add_option("--stop-after-block", j->stop_after_block, "(tests) act as if Ctrl-C came during block N (0-based)")
        ->group("");
    cmd->add_flag("--stream", j->stream,
                 "Hugging Face folder in and out with one decoder block in memory at a time (input memory-mapped, "
                 "output written block by block, appearing when complete): for models larger than RAM");
    cmd->add_flag("--resume", j->resume,
                  "Continue an interrupted run from OUT.ckpt (Ctrl-C saves the blocks finished so far there; with --stream "
                  "they stay in OUT.ckpt.partial and OUT.ckpt holds the calibration activations)");
    cmd->callback([&action, j, quiet] {
      j->progress = !*quiet;
      action = [j] { return oneshot_job(*j); };
    });
  }
}

}  // namespace prunus::cli
