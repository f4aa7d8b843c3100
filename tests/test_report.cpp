// report.html pieces: base64, mask pictures, plot data counts, escaping, and a page drawn from a
// report.json that holds hand-written values.
#include <gtest/gtest.h>

#include <regex>
#include <zlib.h>

#include "prunus/report.h"
#include "report/svg.h"

using namespace prunus::report;

TEST(Report, Base64RoundTripsEveryLengthAndRejectsForeignCharacters) {
  std::string bytes;
  for (int n = 0; n < 70; ++n) {
    EXPECT_EQ(svg::base64_decode(svg::base64_encode(bytes)), bytes) << n;
    bytes.push_back(static_cast<char>(n * 37 + 11));
  }
  EXPECT_EQ(svg::base64_encode("Man"), "TWFu");
  EXPECT_EQ(svg::base64_encode("Ma"), "TWE=");
  EXPECT_THROW(svg::base64_decode("TW*u"), std::invalid_argument);
}

TEST(Report, MaskPictureIsAValidPngWithTheKeptPixelsDark) {
  // 3×5 mask, kept where (r + c) % 2 == 0 → 8 kept.
  std::vector<std::uint8_t> kept(15);
  for (int i = 0; i < 15; ++i) kept[i] = ((i / 5 + i % 5) % 2) == 0;
  const std::string s = svg::mask_image("m", 3, 5, kept, 2);
  EXPECT_NE(s.find("data-points=\"8\""), std::string::npos);
  const auto at = s.find("base64,") + 7;
  const std::string png = svg::base64_decode(s.substr(at, s.find('"', at) - at));
  ASSERT_EQ(png.substr(0, 8), "\x89PNG\r\n\x1a\n");
  // IHDR: width 5, height 3, 8-bit grayscale.
  EXPECT_EQ(static_cast<unsigned char>(png[19]), 5);
  EXPECT_EQ(static_cast<unsigned char>(png[23]), 3);
  // Inflate IDAT: each row is a filter byte then 5 pixels, kept = 0x20, pruned = 0xff.
  const auto idat = png.find("IDAT");
  const std::uint32_t len = (std::uint8_t(png[idat - 4]) << 24) | (std::uint8_t(png[idat - 3]) << 16) |
                            (std::uint8_t(png[idat - 2]) << 8) | std::uint8_t(png[idat - 1]);
  std::string raw(3 * 6, '\0');
  uLongf n = raw.size();
  ASSERT_EQ(uncompress(reinterpret_cast<Bytef*>(raw.data()), &n, reinterpret_cast<const Bytef*>(png.data() + idat + 4), len),
            Z_OK);
  ASSERT_EQ(n, 18u);
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(raw[r * 6], 0);
    for (int c = 0; c < 5; ++c) EXPECT_EQ(std::uint8_t(raw[r * 6 + 1 + c]), kept[r * 5 + c] ? 0x20 : 0xff) << r << "," << c;
  }
}

TEST(Report, PlotsCountTheirDataAndEmptyPlotsSaySo) {
  svg::LineChart c{"t", "x", "y"};
  c.series.push_back({"a", {1, 2, 3}, {0.1, 0.2, NAN}});
  c.series.push_back({"b", {1, 2}, {0.3, 0.4}});
  EXPECT_NE(svg::line_chart(c).find("data-points=\"4\""), std::string::npos);  // the NaN is not drawn
  svg::LineChart empty{"t", "x", "y"};
  const auto e = svg::line_chart(empty);
  EXPECT_NE(e.find("data-points=\"0\""), std::string::npos);
  EXPECT_NE(e.find("no data"), std::string::npos);
  // Degenerate ranges draw (and end): a tiny spread, and values near the largest double.
  svg::LineChart tiny{"t", "x", "y"};
  tiny.series.push_back({"a", {1, 2}, {1.0, 1.0 + 1e-300}});
  EXPECT_NE(svg::line_chart(tiny).find("data-points=\"2\""), std::string::npos);
  svg::BarChart huge{"t", "y", {"a"}, {{"s", {1e308}}}};
  EXPECT_NE(svg::bar_chart(huge).find("data-points=\"1\""), std::string::npos);
  svg::BarChart b{"t", "y", {"l1", "l2"}, {{"s", {0.5, 0.9}}}, true};
  const auto bs = svg::bar_chart(b);
  EXPECT_NE(bs.find("data-points=\"2\""), std::string::npos);
  EXPECT_EQ(std::count(bs.begin(), bs.end(), '%') > 0, true);
}

TEST(Report, PageFromAHandWrittenReportShowsItsNumbersAndEscapesNames) {
  std::vector<std::uint8_t> kept = {1, 0, 0, 1, 1, 0};
  nlohmann::json r = {
      {"recipe", "demo<script>"},
      {"dense", {{"test_accuracy", 0.9}, {"test_loss", 0.3}}},
      {"sparse", {{"test_accuracy", 0.88}, {"test_loss", 0.35}}},
      {"accuracy_drop_points", 2.0},
      {"total_sparsity", 0.5},
      {"layers", {{{"name", "fc<1>"}, {"shape", {2, 3}}, {"nnz", 3}, {"sparsity", 0.5}}}},
      {"stages", {{"train", {{"history", {{{"epoch", 1}, {"test_accuracy", 0.8}}, {{"epoch", 2}, {"test_accuracy", 0.9}}}}}}}},
      {"masks", {mask_json("fc<1>", 2, 3, kept, false)}}};
  const auto html = render_html(r);
  EXPECT_EQ(html.find("demo<script>"), std::string::npos);
  EXPECT_NE(html.find("demo&lt;script&gt;"), std::string::npos);
  EXPECT_NE(html.find("fc&lt;1&gt;"), std::string::npos);
  EXPECT_NE(html.find("90.00%"), std::string::npos);
  EXPECT_NE(html.find("88.00%"), std::string::npos);
  EXPECT_NE(html.find("2.00 points"), std::string::npos);
  // The mask section decodes the 3 kept weights back out of report.json.
  EXPECT_NE(html.find("class=\"plot mask\" data-points=\"3\""), std::string::npos);
  EXPECT_EQ(html.find("http"), std::string::npos);
  // A report that is not a report: no crash, sections simply absent.
  EXPECT_NO_THROW(render_html(nlohmann::json{{"layers", 5}, {"masks", {{{"rows", -1}}}}}));
}
