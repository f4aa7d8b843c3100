// IDX reader validation (plain and gzip) and the runtime's sparse sizes and pattern names.
#include <gtest/gtest.h>
#include <zlib.h>

#include "prunus/idx.h"
#include "prunus/io.h"
#include "prunus/sparse.h"
#include "test_util.h"

namespace {

std::string idx_bytes(std::vector<std::uint32_t> dims, std::size_t payload, std::uint8_t type = 0x08) {
  std::string b = {0, 0, static_cast<char>(type), static_cast<char>(dims.size())};
  for (auto d : dims)
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<char>((d >> s) & 0xff));
  for (std::size_t i = 0; i < payload; ++i) b.push_back(static_cast<char>(i % 251));
  return b;
}

void write_gz(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}

std::string read_error(const std::string& path) {
  try {
    prunus::idx::read(path);
  } catch (const prunus::InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Idx, ReadsPlainAndGzip) {
  prunus::test::TempDir dir;
  const auto bytes = idx_bytes({3, 4, 5}, 60);
  prunus::test::write_bytes(dir.file("a.idx"), bytes);
  write_gz(dir.file("a.idx.gz"), bytes);
  for (const char* name : {"a.idx", "a.idx.gz"}) {
    auto a = prunus::idx::read(dir.file(name));
    EXPECT_EQ(a.dims, (std::vector<std::uint32_t>{3, 4, 5}));
    ASSERT_EQ(a.data.size(), 60u);
    EXPECT_EQ(a.data[59], 59);
  }
}

TEST(Idx, RejectsCorruptFiles) {
  prunus::test::TempDir dir;
  struct Case {
    std::string bytes;
    const char* expect;
  };
  std::string bad_magic = idx_bytes({2}, 2);
  bad_magic[0] = 1;
  const std::vector<Case> cases = {
      {"", "too small"},
      {bad_magic, "bad magic"},
      {idx_bytes({2}, 8, 0x0d), "not supported"},
      {idx_bytes({}, 0), "rank 0"},
      {std::string("\0\0\x08\x05", 4), "rank 5"},
      {idx_bytes({2, 3}, 5), "truncated"},
      {idx_bytes({2, 3}, 7), "trailing"},
      {idx_bytes({0, 3}, 0), "zero"},
      {idx_bytes({65536, 65536, 65536}, 0), "more than 4 GiB"},
      {std::string("\0\0\x08\x02\0\0", 6), "header is truncated"},
  };
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto path = dir.file("c" + std::to_string(i) + ".idx");
    prunus::test::write_bytes(path, cases[i].bytes);
    const auto msg = read_error(path);
    EXPECT_NE(msg.find(path + ": "), std::string::npos) << i << ": " << msg;
    EXPECT_NE(msg.find(cases[i].expect), std::string::npos) << i << ": " << msg;
  }
  // A gzip stream cut short.
  write_gz(dir.file("t.gz"), idx_bytes({100}, 100));
  auto gz = prunus::test::read_bytes(dir.file("t.gz"));
  prunus::test::write_bytes(dir.file("t.gz"), gz.substr(0, gz.size() / 2));
  EXPECT_NE(read_error(dir.file("t.gz")).find("gzip"), std::string::npos);
  EXPECT_NE(read_error(dir.file("missing.gz")).find("cannot open"), std::string::npos);
}

TEST(SparseSizes, MatchTheFormatDefinitions) {
  namespace sp = prunus::sparse;
  EXPECT_EQ(sp::dense_bytes(300, 784), 300u * 784 * 4);
  // CSR with 16-bit column indices: 6 bytes per non-zero + 4 per row offset.
  EXPECT_EQ(sp::csr_bytes(300, 784, 1000), 1000u * 6 + 301 * 4);
  EXPECT_EQ(sp::csr_bytes(2, 70000, 10), 10u * 8 + 3 * 4);  // 32-bit indices past 65536 columns
  EXPECT_EQ(sp::bitmask_bytes(3, 9, 5), 3u * 2 + 5 * 4);
  EXPECT_EQ(sp::smallest_encoding(300, 784, 300 * 784).format, "dense");
  EXPECT_EQ(sp::smallest_encoding(300, 784, 2000).format, "csr");
  EXPECT_EQ(sp::smallest_encoding(300, 784, 300 * 784 / 2).format, "bitmask");
}

TEST(SparsePattern, NamesTheStructureOfZeros) {
  namespace sp = prunus::sparse;
  std::vector<float> w(8 * 16, 1.0f);
  EXPECT_EQ(sp::detect_pattern(w.data(), 8, 16), "dense");
  auto nm = w;
  for (std::size_t i = 0; i < nm.size(); i += 4) {  // 2 of every 4 zero, positions varying by row
    const std::size_t o = (i / 16) % 2;
    nm[i + o] = nm[i + o + 2] = 0;
  }
  EXPECT_EQ(sp::detect_pattern(nm.data(), 8, 16), "2:4");
  auto rows = w;
  std::fill(rows.begin() + 16, rows.begin() + 48, 0.0f);
  EXPECT_EQ(sp::detect_pattern(rows.data(), 8, 16), "rows (2 of 8 zero)");
  auto cols = w;
  for (int r = 0; r < 8; ++r) cols[r * 16 + 3] = 0;
  EXPECT_EQ(sp::detect_pattern(cols.data(), 8, 16), "columns (1 of 16 zero)");
  auto blocks = w;
  for (int r = 4; r < 8; ++r)
    for (int c = 0; c < 4; ++c) blocks[r * 16 + c] = 0;
  blocks[0] = 0;  // one stray zero outside the block breaks the block structure
  EXPECT_EQ(sp::detect_pattern(blocks.data(), 8, 16), "unstructured");
  auto balanced = w;  // 3 or 4 zeros in every row, at scattered places
  for (int r = 0; r < 8; ++r)
    for (int j = 0; j < 3 + r % 2; ++j) balanced[r * 16 + (r * 5 + j * 7) % 16] = 0;
  EXPECT_EQ(sp::detect_pattern(balanced.data(), 8, 16), "row-balanced");
  balanced[7 * 16 + 15] = balanced[7 * 16 + 14] = 0;  // one row two zeros ahead
  EXPECT_EQ(sp::detect_pattern(balanced.data(), 8, 16), "unstructured");
  blocks[0] = 1;
  EXPECT_EQ(sp::detect_pattern(blocks.data(), 8, 16), "4x4 blocks");
  std::vector<float> z(8, 0.0f);
  EXPECT_EQ(sp::detect_pattern(z.data(), 2, 4), "all zero");
}
