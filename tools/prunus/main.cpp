// prunus <verb> — one binary, thin over the library. Bad input: one line on stderr naming
// the file and the problem, exit code 2.
#include <malloc.h>
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <memory>
#include <string>

#include "commands.h"
#include "prunus/distributed.h"
#include "prunus/io.h"
#include "prunus/report.h"

namespace {

std::string first_line(const std::string& s) {
  auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

}  // namespace

int main(int argc, char** argv) {
  // Keep large blocks (activations, attention scores) in the heap instead of an mmap per
  // allocation: LLM evaluation otherwise spends half its time in page faults.
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
  mallopt(M_TOP_PAD, 64 << 20);
  prunus::report::set_command_line(argc, argv);
  CLI::App app{"Prunus: turn dense neural networks into sparse ones, and make them faster.", "prunus"};
  app.set_version_flag("--version", std::string("prunus ") + prunus::version());
  app.require_subcommand(1);
  prunus::cli::Action action;
  prunus::cli::add_run(app, action);
  prunus::cli::add_train(app, action);
  prunus::cli::add_prune(app, action);
  prunus::cli::add_sensitivity(app, action);
  prunus::cli::add_finetune(app, action);
  prunus::cli::add_eval(app, action);
  prunus::cli::add_inspect(app, action);
  prunus::cli::add_infer(app, action);
  prunus::cli::add_llm(app, action);
  prunus::cli::add_report(app, action);
  prunus::cli::add_bench(app, action);
  prunus::cli::add_shrink(app, action);
  prunus::cli::add_export(app, action);
  prunus::cli::add_launch(app, action);
  prunus::cli::add_quantize(app, action);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "prunus: %s (see prunus --help)\n", first_line(e.what()).c_str());
    return 2;
  }
  // Under `prunus launch` (or torchrun-style variables) this process is one rank of a job.
  const std::string verb = app.get_subcommands().front()->get_name();
  bool distributed = false;
  auto fail_rank = [&](const std::string& message) {
    std::fprintf(stderr, "prunus: error: %s\n", first_line(message).c_str());
    if (distributed) {
      prunus::dist::report_failure(message);
      // Leave at once: a peer may be gone, and c10d's destructors would wait for it.
      std::fflush(nullptr);
      ::_exit(2);
    }
    return 2;
  };
  try {
    if (verb != "launch" && verb != "report") {
      const char* ws = std::getenv("WORLD_SIZE");
      if (ws && std::string(ws) != "1" && verb != "train" && verb != "prune" && verb != "finetune" &&
          verb != "sensitivity" && verb != "run" && verb != "oneshot")
        prunus::fail("prunus " + verb, std::string("runs in one process, but WORLD_SIZE is ") + ws +
                                           " (distributed verbs: train, prune, finetune, run, sensitivity, oneshot)");
      distributed = prunus::dist::init_from_env(prunus::dist::options_from_env());
    }
    const int rc = action();
    prunus::dist::finalize();
    return rc;
  } catch (const std::exception& e) {
    return fail_rank(e.what());
  }
}
