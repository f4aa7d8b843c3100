// prunus/report.h — what a job reports: per-layer sparsity and bytes, summary tables.
// No libtorch: rows are built from names, shapes and non-zero counts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "prunus/runtime.h"

namespace prunus::report {

struct LayerRow {
  std::string name;
  std::vector<std::int64_t> shape;
  std::int64_t numel = 0;
  std::int64_t nnz = 0;
  double sparsity = 0;
  std::uint64_t dense_bytes = 0;
  std::string encoding;          // smallest of dense / csr / bitmask
  std::uint64_t encoded_bytes = 0;
};

// Treats the tensor as a matrix [shape[0], prod(shape[1:])] (conv weights flattened per
// output channel, vectors as one row).
LayerRow make_row(const std::string& name, const std::vector<std::int64_t>& shape, std::int64_t nnz);
nlohmann::json to_json(const LayerRow& row);

struct Totals {
  std::int64_t numel = 0, nnz = 0;
  std::uint64_t dense_bytes = 0, encoded_bytes = 0;
  double sparsity() const { return numel ? 1.0 - double(nnz) / double(numel) : 0.0; }
};
Totals totals(const std::vector<LayerRow>& rows);

// A plain text table: first row is the header; columns after the first are right-aligned.
std::string text_table(const std::vector<std::vector<std::string>>& rows);
std::string human_bytes(std::uint64_t bytes);

// ------------------------------------------------------------------ report.html
// One self-contained page (inline CSS and SVG plots, no URLs) drawn from report.json alone, so
// `prunus report RUN_DIR` redraws any run. Sections appear when the JSON has their data: run
// summary, dense vs sparse, training curves, per-layer table and bar charts (with the runtime's
// format and measured speed-up when present), mask pictures, one-shot allocations.
std::string render_html(const nlohmann::json& report);
// Two or more runs (name, report.json) side by side: metrics, overlaid curves, per-layer sparsity.
std::string render_comparison_html(const std::vector<std::pair<std::string, nlohmann::json>>& runs);

// `prunus report RUN [RUN...]`: each RUN is a folder holding report.json or a report JSON file.
// One run: writes report.html beside its JSON (or `out`); several: a side-by-side page at `out`
// (default compare.html). Returns the exit code; InputError naming the file for bad JSON.
int report_job(const std::vector<std::string>& runs, const std::string& out);

// Writes `rep` to `json_path` (atomically) and the page drawn from it beside it: X.json → X.html
// (any other name gets ".html" appended). Returns the HTML path.
std::string write_report(const std::string& json_path, const nlohmann::json& rep);
// A --report argument: must end in .json and its directory must exist (InputError otherwise);
// checked before any work. Empty: no report, nothing to check.
void check_report_path(const std::string& json_path);
// What the runtime did with each layer (format, bytes, measured times): report.json's "runtime".
nlohmann::json runtime_layers_json(const std::vector<runtime::LayerInfo>& layers);

// For report.json: the command line (set once by main), date and machine.
void set_command_line(int argc, char** argv);
nlohmann::json run_info();
// A layer's mask (kept = 1, row-major rows × cols) packed 8 per byte, base64, for the pictures.
nlohmann::json mask_json(const std::string& layer, std::int64_t rows, std::int64_t cols,
                         const std::vector<std::uint8_t>& kept, bool cropped);

}  // namespace prunus::report
