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

}  // namespace prunus::cli
