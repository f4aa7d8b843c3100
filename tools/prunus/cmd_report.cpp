// prunus report: redraw report.html from report.json, or put runs side by side.
#include "commands.h"
#include "prunus/report.h"

namespace prunus::cli {

void add_report(CLI::App& app, Action& action) {
  struct O {
    std::vector<std::string> runs;
    std::string out;
  };
  auto o = std::make_shared<O>();
  auto* cmd = app.add_subcommand(
      "report",
      "Draw the HTML report (self-contained: inline SVG plots, no network) from a run's report.json. One RUN: "
      "writes report.html beside it; two or more: one page with the runs side by side");
  cmd->add_option("runs", o->runs, "Run folders (holding report.json) or report JSON files")->required();
  cmd->add_option("-o,--out", o->out, "HTML file to write (default: beside the JSON; compare.html for several runs)");
  cmd->callback([&action, o] { action = [o] { return report::report_job(o->runs, o->out); }; });
}

void add_bench(CLI::App& app, Action& action) {
  auto j = std::make_shared<BenchJob>();
  auto* cmd = app.add_subcommand(
      "bench",
      "Time a whole model in the libtorch-free runtime: sparse (each layer in the format that measured fastest) "
      "against the runtime's dense path (single-threaded OpenBLAS per call), same process. Graph models: latency per "
      "batch size; llama2.c checkpoints: greedy-decode tokens/s");
  cmd->add_option("model", j->model, "A .safetensors written by prunus (with its runtime graph) or a llama2.c .bin")
      ->required();
  cmd->add_option("--batch", j->batches, "Batch sizes (graph models)")->delimiter(',')->capture_default_str();
  cmd->add_option("--threads", j->threads, "Kernel threads")->capture_default_str();
  cmd->add_option("--seconds", j->seconds, "Measuring time per batch size")->capture_default_str();
  cmd->add_option("--tokens", j->tokens, "Tokens decoded per timed call (llama2.c)")->capture_default_str();
  cmd->add_option("--report", j->report, "Also write FILE.json and FILE.html (plots) beside it");
  cmd->add_option("--baseline", j->baseline,
                  "Also time this model's dense path (e.g. the model before prunus shrink) and report the speed-up over it");
  cmd->callback([&action, j] { action = [j] { return bench_job(*j); }; });
}

}  // namespace prunus::cli
