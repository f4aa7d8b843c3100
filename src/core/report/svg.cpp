#include "svg.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include <fmt/format.h>
#include <zlib.h>

namespace prunus::report::svg {
namespace {

constexpr int kW = 640, kH = 330;                        // every plot's size
constexpr int kLeft = 64, kRight = 16, kTop = 34, kBottom = 52;
const char* kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};
const char* color(std::size_t i) { return kPalette[i % 8]; }

// About five round steps over [lo, hi].
std::vector<double> ticks(double lo, double hi) {
  if (!(hi > lo)) hi = lo + 1;
  const double raw = (hi - lo) / 5, mag = std::pow(10.0, std::floor(std::log10(raw))), n = raw / mag;
  const double step = (n < 1.5 ? 1 : n < 3 ? 2 : n < 7 ? 5 : 10) * mag;
  std::vector<double> t;
  if (!(step > 0) || !std::isfinite(step) || !std::isfinite(lo) || !std::isfinite(hi)) return {lo, hi};  // degenerate range
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9 && t.size() < 50; v += step)
    t.push_back(std::abs(v) < step * 1e-9 ? 0 : v);
  return t;
}

std::string number(double v, bool percent) {
  if (percent) return fmt::format("{:g}%", std::round(v * 1000) / 10);
  if (v != 0 && (std::abs(v) >= 1e5 || std::abs(v) < 1e-3)) return fmt::format("{:.1e}", v);
  return fmt::format("{:g}", std::round(v * 1e4) / 1e4);
}

std::string open_plot(const std::string& title, std::size_t points) {
  return fmt::format(
      "<svg class=\"plot\" data-points=\"{}\" viewBox=\"0 0 {} {}\" width=\"{}\" "
      "height=\"{}\" role=\"img\" aria-label=\"{}\"><title>{}</title><rect width=\"{}\" height=\"{}\" fill=\"#fff\"/>"
      "<text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"600\">{}</text>",
      points, kW, kH, kW, kH, escape(title), escape(title), kW, kH, kW / 2, escape(title));
}

std::string legend(const std::vector<std::pair<std::string, bool>>& entries, bool bars) {
  std::string s;
  double x = kLeft + 8;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const auto& [name, dashed] = entries[i];
    if (bars)
      s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"14\" height=\"8\" fill=\"{}\"/>", x, kTop + 2, color(i));
    else
      s += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"2\"{}/>", x, kTop + 6,
                       x + 16, kTop + 6, color(i), dashed ? " stroke-dasharray=\"5 3\"" : "");
    s += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text>", x + 20, kTop + 10, escape(name));
    x += 28 + 6.2 * double(name.size());
  }
  return s;
}

// Frame, grid and labels of a plot whose y axis spans [y0, y1].
std::string y_axis(double y0, double y1, bool percent, const std::string& label) {
  std::string s;
  const double h = kH - kTop - kBottom;
  for (double t : ticks(y0, y1)) {
    const double py = kTop + h * (1 - (t - y0) / (y1 - y0));
    s += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#e5e5e5\"/>", kLeft, py, kW - kRight, py);
    s += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\" font-size=\"11\">{}</text>", kLeft - 6, py + 4,
                     number(t, percent));
  }
  s += fmt::format("<text transform=\"translate(14 {}) rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">{}</text>",
                   kTop + h / 2, escape(label));
  s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>", kLeft, kTop,
                   kW - kLeft - kRight, h);
  return s;
}

void write_be32(std::string& out, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<char>((v >> s) & 0xff));
}
void png_chunk(std::string& out, const char* type, const std::string& data) {
  write_be32(out, static_cast<std::uint32_t>(data.size()));
  const std::string body = std::string(type, 4) + data;
  out += body;
  write_be32(out, static_cast<std::uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size()))));
}

// 8-bit grayscale PNG, filter 0 on every row.
std::string png_gray(std::int64_t w, std::int64_t h, const std::vector<std::uint8_t>& pixels) {
  std::string raw;
  raw.reserve(static_cast<std::size_t>((w + 1) * h));
  for (std::int64_t r = 0; r < h; ++r) {
    raw.push_back(0);
    raw.append(reinterpret_cast<const char*>(pixels.data() + r * w), static_cast<std::size_t>(w));
  }
  uLongf n = compressBound(static_cast<uLong>(raw.size()));
  std::string z(n, '\0');
  if (compress2(reinterpret_cast<Bytef*>(z.data()), &n, reinterpret_cast<const Bytef*>(raw.data()),
                static_cast<uLong>(raw.size()), 9) != Z_OK)
    throw std::runtime_error("zlib compress2 failed");
  z.resize(n);
  std::string ihdr;
  write_be32(ihdr, static_cast<std::uint32_t>(w));
  write_be32(ihdr, static_cast<std::uint32_t>(h));
  ihdr += std::string("\x08\x00\x00\x00\x00", 5);  // depth 8, grayscale, deflate, filter 0, no interlace
  std::string png = "\x89PNG\r\n\x1a\n";
  png_chunk(png, "IHDR", ihdr);
  png_chunk(png, "IDAT", z);
  png_chunk(png, "IEND", "");
  return png;
}

}  // namespace

std::string escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '&') o += "&amp;";
    else if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}

std::string line_chart(const LineChart& c) {
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  std::size_t points = 0;
  auto fx = [&](double x) { return c.log_x ? std::log10(x) : x; };
  for (const auto& s : c.series)
    for (std::size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (!std::isfinite(s.y[i]) || !std::isfinite(fx(s.x[i]))) continue;
      x0 = std::min(x0, fx(s.x[i])), x1 = std::max(x1, fx(s.x[i]));
      y0 = std::min(y0, s.y[i]), y1 = std::max(y1, s.y[i]);
      ++points;
    }
  std::string out = open_plot(c.title, points);
  if (points == 0) return out + "<text x=\"320\" y=\"170\" text-anchor=\"middle\">no data</text></svg>";
  if (x1 == x0) x1 = x0 + 1;
  const double pad = (y1 - y0) * 0.06 + (y1 == y0 ? 0.5 : 0);
  y0 = c.y_min.value_or(y0 - pad), y1 = c.y_max.value_or(y1 + pad);
  const double w = kW - kLeft - kRight, h = kH - kTop - kBottom;
  auto px = [&](double x) { return kLeft + w * (fx(x) - x0) / (x1 - x0); };
  auto py = [&](double y) { return kTop + h * (1 - (std::clamp(y, y0, y1) - y0) / (y1 - y0)); };
  out += y_axis(y0, y1, c.y_percent, c.y_label);
  for (double t : c.log_x ? std::vector<double>{} : ticks(x0, x1))
    out += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\">{}</text>", px(t),
                       kH - kBottom + 16, number(t, false));
  if (c.log_x)
    for (double d = std::floor(x0); d <= x1; d += 1)
      if (d >= x0)
        out += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\">{}</text>",
                           kLeft + w * (d - x0) / (x1 - x0), kH - kBottom + 16, number(std::pow(10, d), false));
  out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"12\">{}</text>", kLeft + w / 2, kH - 12,
                     escape(c.x_label));
  for (const auto& [x, label] : c.x_marks) {
    out += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#888\" stroke-dasharray=\"2 3\"/>",
                       px(x), kTop, kTop + h);
    out += fmt::format("<text x=\"{:.1f}\" y=\"{}\" font-size=\"10\" fill=\"#555\">{}</text>", px(x) + 3, kTop + h - 4,
                       escape(label));
  }
  std::vector<std::pair<std::string, bool>> names;
  for (std::size_t si = 0; si < c.series.size(); ++si) {
    const auto& s = c.series[si];
    names.emplace_back(s.name, s.dashed);
    std::string pts, dots;
    const std::size_t n = std::min(s.x.size(), s.y.size());
    for (std::size_t i = 0; i < n; ++i) {
      if (!std::isfinite(s.y[i]) || !std::isfinite(fx(s.x[i]))) continue;
      pts += fmt::format("{:.1f},{:.1f} ", px(s.x[i]), py(s.y[i]));
      if (n <= 120)
        dots += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"2.5\" fill=\"{}\"><title>{}: {} = {}</title></circle>",
                            px(s.x[i]), py(s.y[i]), color(si), escape(s.name), number(s.x[i], false),
                            number(s.y[i], c.y_percent));
    }
    out += fmt::format("<polyline class=\"series\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{} points=\"{}\"/>",
                       color(si), s.dashed ? " stroke-dasharray=\"5 3\"" : "", pts);
    out += dots;
  }
  for (const auto& m : c.markers) {
    if (!std::isfinite(m.x) || !std::isfinite(m.y)) continue;
    out += fmt::format("<circle class=\"marker\" cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"6\" fill=\"none\" stroke=\"{}\" "
                       "stroke-width=\"2\"><title>{}</title></circle><text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"10\" "
                       "fill=\"{}\">{}</text>",
                       px(m.x), py(m.y), color(m.series), escape(m.label), px(m.x) - 8, py(m.y) - 9, color(m.series),
                       escape(m.label));
  }
  return out + legend(names, false) + "</svg>";
}

std::string bar_chart(const BarChart& c) {
  double y1 = c.reference.value_or(0);
  std::size_t points = 0;
  for (const auto& [name, v] : c.groups)
    for (double x : v)
      if (std::isfinite(x)) y1 = std::max(y1, x), ++points;
  std::string out = open_plot(c.title, points);
  if (points == 0 || c.categories.empty()) return out + "<text x=\"320\" y=\"170\" text-anchor=\"middle\">no data</text></svg>";
  if (c.y_percent) y1 = std::max(y1, 1.0);
  y1 *= 1.08;
  const double w = kW - kLeft - kRight, h = kH - kTop - kBottom;
  out += y_axis(0, y1, c.y_percent, c.y_label);
  const double slot = w / double(c.categories.size()), bw = slot * 0.8 / double(std::max<std::size_t>(c.groups.size(), 1));
  const bool rotate = c.categories.size() > 6;
  for (std::size_t k = 0; k < c.categories.size(); ++k) {
    const double cx = kLeft + slot * (double(k) + 0.5);
    std::string label = c.categories[k];
    if (label.size() > 22) label = "…" + label.substr(label.size() - 21);
    if (rotate)
      out += fmt::format("<text transform=\"translate({:.1f} {}) rotate(-30)\" text-anchor=\"end\" font-size=\"9\">{}</text>",
                         cx, kH - kBottom + 12, escape(label));
    else
      out += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\">{}</text>", cx,
                         kH - kBottom + 16, escape(label));
    for (std::size_t g = 0; g < c.groups.size(); ++g) {
      const auto& vals = c.groups[g].second;
      if (k >= vals.size() || !std::isfinite(vals[k])) continue;
      const double bh = h * std::max(vals[k], 0.0) / y1;
      out += fmt::format("<rect class=\"bar\" x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\">"
                         "<title>{} — {}: {}</title></rect>",
                         cx - slot * 0.4 + bw * double(g), kTop + h - bh, std::max(bw - 1, 1.0), bh, color(g),
                         escape(c.categories[k]), escape(c.groups[g].first), number(vals[k], c.y_percent));
    }
  }
  if (c.reference) {
    const double ry = kTop + h * (1 - *c.reference / y1);
    out += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#333\" stroke-dasharray=\"4 3\"/>"
                       "<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\" font-size=\"10\">{}</text>",
                       kLeft, ry, kW - kRight, ry, kW - kRight - 4, ry - 4, escape(c.reference_label));
  }
  std::vector<std::pair<std::string, bool>> names;
  for (const auto& g : c.groups) names.emplace_back(g.first, false);
  return out + (c.groups.size() > 1 ? legend(names, true) : "") + "</svg>";
}

std::string mask_image(const std::string& title, std::int64_t rows, std::int64_t cols, const std::vector<std::uint8_t>& kept,
                       int scale) {
  std::vector<std::uint8_t> px(kept.size());
  std::size_t on = 0;
  for (std::size_t i = 0; i < kept.size(); ++i) px[i] = kept[i] ? 0x20 : 0xff, on += kept[i] != 0;
  const auto png = png_gray(cols, rows, px);
  const std::int64_t w = cols * scale, h = rows * scale;
  return fmt::format(
      "<svg class=\"plot mask\" data-points=\"{}\" viewBox=\"0 0 {} {}\" width=\"{}\" "
      "height=\"{}\" role=\"img\" aria-label=\"{}\"><title>{}</title><image width=\"{}\" height=\"{}\" "
      "style=\"image-rendering:pixelated\" preserveAspectRatio=\"none\" href=\"data:image/png;base64,{}\"/></svg>",
      on, w, h + 2, w, h + 2, escape(title), escape(title), w, h, base64_encode(png));
}

std::string base64_encode(const std::string& in) {
  static const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  for (std::size_t i = 0; i < in.size(); i += 3) {
    std::uint32_t v = std::uint32_t(std::uint8_t(in[i])) << 16;
    if (i + 1 < in.size()) v |= std::uint32_t(std::uint8_t(in[i + 1])) << 8;
    if (i + 2 < in.size()) v |= std::uint8_t(in[i + 2]);
    out += a[(v >> 18) & 63];
    out += a[(v >> 12) & 63];
    out += i + 1 < in.size() ? a[(v >> 6) & 63] : '=';
    out += i + 2 < in.size() ? a[v & 63] : '=';
  }
  return out;
}

std::string base64_decode(const std::string& in) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    const int v = val(c);
    if (v < 0) throw std::invalid_argument("not base64");
    acc = (acc << 6) | std::uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

}  // namespace prunus::report::svg
