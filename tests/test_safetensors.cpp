// safetensors reader/writer: round trips, every validation rule, crash-safe writes.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <random>

#include <unistd.h>

#include "prunus/safetensors.h"
#include "test_util.h"

namespace st = prunus::safetensors;
namespace fs = std::filesystem;

namespace {

std::string with_header(const std::string& json, const std::string& data = "") {
  std::string out(8, '\0');
  std::uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
  return out + json + data;
}

std::string parse_error(const std::string& bytes) {
  try {
    st::File::parse(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(), "bad.safetensors");
  } catch (const prunus::InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Safetensors, RoundTripIsBitExact) {
  prunus::test::TempDir dir;
  std::mt19937 rng(1);
  std::vector<float> a(37 * 11);
  for (auto& x : a) x = std::uniform_real_distribution<float>(-1, 1)(rng);
  a[3] = -0.0f;
  a[5] = std::numeric_limits<float>::denorm_min();
  std::vector<std::int64_t> b = {1, -2, INT64_MAX, INT64_MIN};
  std::vector<std::uint16_t> h = {0x3c00, 0x8001, 0x7bff};
  const std::string path = dir.file("rt.safetensors");
  st::write(path,
            {{"layer.weight", st::DType::F32, {37, 11}, a.data()},
             {"ints", st::DType::I64, {4}, b.data()},
             {"half", st::DType::F16, {3}, h.data()},
             {"empty", st::DType::F32, {0, 5}, nullptr}},
            {{"prunus.arch", "x"}, {"note", "ünïcödé"}});
  auto f = st::File::open(path);
  ASSERT_EQ(f.tensors().size(), 4u);
  const auto& w = f.at("layer.weight");
  EXPECT_EQ(w.shape, (std::vector<std::int64_t>{37, 11}));
  EXPECT_EQ(std::memcmp(w.data, a.data(), a.size() * 4), 0);
  EXPECT_EQ(std::memcmp(f.at("ints").data, b.data(), 32), 0);
  EXPECT_EQ(f.at("empty").nbytes, 0u);
  auto hf = f.at("half").to_f32();
  EXPECT_EQ(hf[0], 1.0f);
  EXPECT_EQ(hf[2], 65504.0f);
  EXPECT_EQ(f.metadata().at("note"), "ünïcödé");
  // Header padded so data starts 8-byte aligned; writing the same input twice gives the same bytes.
  auto bytes = prunus::test::read_bytes(path);
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
  st::write(dir.file("rt2.safetensors"), {{"layer.weight", st::DType::F32, {37, 11}, a.data()},
                                          {"ints", st::DType::I64, {4}, b.data()},
                                          {"half", st::DType::F16, {3}, h.data()},
                                          {"empty", st::DType::F32, {0, 5}, nullptr}},
            {{"prunus.arch", "x"}, {"note", "ünïcödé"}});
  EXPECT_EQ(bytes, prunus::test::read_bytes(dir.file("rt2.safetensors")));
}

TEST(Safetensors, AcceptsMinimalAndMetadataOnlyFiles) {
  EXPECT_EQ(parse_error(with_header("{}")), "");
  EXPECT_EQ(parse_error(with_header(R"({"__metadata__":{"a":"b"}})")), "");
  EXPECT_EQ(parse_error(with_header(R"({"x":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}   )", "abcd")), "");
}

struct CorruptCase {
  const char* what;
  std::string bytes;
  const char* expect;  // substring of the message
};

TEST(Safetensors, RejectsCorruptFilesWithTheRightMessage) {
  const std::string ok_entry = R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  std::string huge(8, '\0');
  std::uint64_t big = 200'000'000;
  std::memcpy(huge.data(), &big, 8);
  std::string past(8, '\0');
  std::uint64_t p = 1000;
  std::memcpy(past.data(), &p, 8);
  past += "{}";
  const std::vector<CorruptCase> cases = {
      {"empty file", "", "too small"},
      {"4 bytes", "abcd", "too small"},
      {"header over 100 MB", huge + "{}", "exceeds"},
      {"header past EOF", past, "past the end"},
      {"not JSON", with_header("{nope"), "not valid JSON"},
      {"JSON array", with_header("[1,2]"), "start with '{'"},
      {"header not starting with brace", with_header(" {}"), "start with '{'"},
      {"truncated header", with_header("{\"w\":{\"dtype\":\"F32\""), "not valid JSON"},
      {"duplicate names", with_header("{" + ok_entry + "," + ok_entry + "}", std::string(8, 'x')), "duplicate tensor name 'w'"},
      {"unknown dtype", with_header(R"({"w":{"dtype":"F9","shape":[2],"data_offsets":[0,8]}})", std::string(8, 'x')), "unknown dtype 'F9'"},
      {"negative dim", with_header(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", std::string(8, 'x')), "non-negative"},
      {"fractional dim", with_header(R"({"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", std::string(8, 'x')), "non-negative"},
      {"shape overflow", with_header(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", std::string(8, 'x')), "overflows"},
      {"offsets out of bounds", with_header(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "1234"), "out of bounds"},
      {"offsets reversed", with_header(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", std::string(8, 'x')), "reversed"},
      {"size mismatch", with_header(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, 'x')), "needs 12"},
      {"overlap", with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", std::string(12, 'x')), "overlap"},
      {"gap", with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", std::string(8, 'x')), "unused bytes"},
      {"trailing bytes", with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(8, 'x')), "not covered"},
      {"metadata not string", with_header(R"({"__metadata__":{"a":1}})"), "not a string"},
      {"metadata not object", with_header(R"({"__metadata__":"x"})"), "not a JSON object"},
      {"entry not object", with_header(R"({"w":5})"), "not a JSON object"},
      {"missing offsets", with_header(R"({"w":{"dtype":"F32","shape":[0]}})"), "data_offsets"},
      {"unknown field", with_header(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[0,0],"x":1}})"), "unknown field"},
      {"non-UTF-8 name", with_header("{\"\xff\xfe\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}"), "not valid JSON"},
      {"three offsets", with_header(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[0,0,0]}})"), "two non-negative"},
  };
  ASSERT_GE(cases.size(), 15u);
  for (const auto& c : cases) {
    const std::string msg = parse_error(c.bytes);
    EXPECT_NE(msg.find("bad.safetensors: "), std::string::npos) << c.what << ": " << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.what << ": got '" << msg << "'";
    EXPECT_EQ(msg.find('\n'), std::string::npos) << c.what << ": message must be one line";
  }
}

TEST(Safetensors, EveryTruncationOfAValidFileIsRejected) {
  std::vector<float> a = {1, 2, 3, 4};
  const std::string bytes = st::serialize({{"a", st::DType::F32, {4}, a.data()}}, {{"k", "v"}});
  for (std::size_t n = 0; n < bytes.size(); ++n)
    EXPECT_NE(parse_error(bytes.substr(0, n)), "") << "truncated to " << n << " bytes";
  EXPECT_EQ(parse_error(bytes), "");
}

TEST(Safetensors, OpenNamesMissingFile) {
  try {
    st::File::open("/nonexistent/model.safetensors");
    FAIL();
  } catch (const prunus::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model.safetensors: cannot open"), std::string::npos);
  }
}

TEST(AtomicWrite, FailedWriteKeepsTheOldFileAndLeavesNoTemp) {
  prunus::test::TempDir dir;
  const std::string path = dir.file("m.safetensors");
  prunus::atomic_write(path, std::string("old content"));
  EXPECT_THROW(prunus::atomic_write(path,
                                    [](const prunus::ByteSink& sink) {
                                      sink("partial", 7);
                                      throw std::runtime_error("disk full");
                                    }),
               std::runtime_error);
  EXPECT_EQ(prunus::read_text_file(path), "old content");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
  prunus::atomic_write(path, std::string("new"));
  EXPECT_EQ(prunus::read_text_file(path), "new");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(AtomicWrite, MissingDirectoryIsAnInputError) {
  EXPECT_THROW(prunus::atomic_write("/nonexistent-dir/x.bin", std::string("x")), prunus::InputError);
}

// The streaming writer (one tensor in memory at a time): tensors put in any order give the
// bytes `serialize` gives; nothing appears at the path before commit(), and a writer destroyed
// before commit() leaves neither the file nor its temp file.
TEST(Safetensors, StreamWriterWritesTheSameBytesInAnyOrderAndNothingUntilCommit) {
  const auto dir = fs::temp_directory_path() / ("prunus_stream_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::vector<float> a(1000), b(7);
  std::vector<std::uint16_t> c(33);
  std::iota(a.begin(), a.end(), 0.5f);
  std::iota(b.begin(), b.end(), -3.0f);
  std::iota(c.begin(), c.end(), std::uint16_t(9));
  const std::vector<st::TensorToWrite> ts = {{"a", st::DType::F32, {10, 100}, a.data()},
                                             {"b", st::DType::F32, {7}, b.data()},
                                             {"c", st::DType::BF16, {3, 11}, c.data()}};
  const std::map<std::string, std::string> meta = {{"format", "pt"}};
  const auto path = (dir / "m.safetensors").string();
  {
    st::StreamWriter w(path, ts, meta);
    w.put("c", c.data());
    w.put("a", a.data());
    EXPECT_THROW(w.put("a", a.data()), std::invalid_argument);    // twice
    EXPECT_THROW(w.put("zz", a.data()), std::invalid_argument);   // not in the header
    EXPECT_THROW(w.commit(), std::logic_error);                   // b missing
    EXPECT_FALSE(fs::exists(path));
    w.put("b", b.data());
    w.commit();
  }
  std::ifstream in(path, std::ios::binary);
  const std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(got, st::serialize(ts, meta));
  {
    st::StreamWriter w((dir / "n.safetensors").string(), ts, meta);
    w.put("a", a.data());
  }  // destroyed before commit
  EXPECT_FALSE(fs::exists(dir / "n.safetensors"));
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir)) files += e.is_regular_file();
  EXPECT_EQ(files, 1);  // m.safetensors only: no temp file left
  fs::remove_all(dir);
}
