// Internal: the plots of report.html, drawn as inline SVG (no scripts, no network). Every
// plot is one <svg class="plot" data-points="N"> whose N counts the data marks drawn, so a
// test can tell a plot with data from an empty frame.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace prunus::report::svg {

std::string escape(const std::string& s);  // &, <, >, " for text and attributes

struct Series {
  std::string name;
  std::vector<double> x, y;
  bool dashed = false;
};
struct LineChart {
  std::string title, x_label, y_label;
  std::vector<Series> series;
  std::vector<std::pair<double, std::string>> x_marks;  // labelled vertical lines (stage starts)
  std::optional<double> y_min, y_max;                     // default: the data's range, padded
  bool y_percent = false;                                 // values in [0,1] labelled as %
  bool log_x = false;
  struct Marker {
    double x, y;
    std::string label;
    std::size_t series;  // drawn in that series' colour
  };
  std::vector<Marker> markers;                            // labelled rings (e.g. a chosen allocation)
};
std::string line_chart(const LineChart& c);

struct BarChart {
  std::string title, y_label;
  std::vector<std::string> categories;                                // one group of bars each
  std::vector<std::pair<std::string, std::vector<double>>> groups;    // legend name → one value per category
  bool y_percent = false;
  std::optional<double> reference;                                    // a horizontal line (e.g. 1× speed-up)
  std::string reference_label;
};
std::string bar_chart(const BarChart& c);

// A binary mask as pixels (kept = dark, pruned = white), `kept` row-major rows × cols, drawn at
// `scale` screen pixels per weight; an 8-bit grayscale PNG inside the SVG as a data: URI.
std::string mask_image(const std::string& title, std::int64_t rows, std::int64_t cols,
                       const std::vector<std::uint8_t>& kept, int scale);

std::string base64_encode(const std::string& bytes);
// Throws std::invalid_argument on characters outside the alphabet.
std::string base64_decode(const std::string& text);

}  // namespace prunus::report::svg
