#include "prunus/idx.h"

#include <zlib.h>

#include <fmt/format.h>

#include "prunus/io.h"

namespace prunus::idx {
namespace {

// Largest payload we accept: far above any (Fashion-)MNIST file, small enough that a
// corrupt header cannot make us allocate the machine away.
constexpr std::uint64_t kMaxBytes = 1ull << 32;

std::vector<std::uint8_t> gunzip(const MappedFile& f) {
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 32) != Z_OK) fail(f.path(), "zlib init failed");
  zs.next_in = const_cast<Bytef*>(f.data());
  zs.avail_in = static_cast<uInt>(f.size());
  std::vector<std::uint8_t> out;
  std::uint8_t buf[1 << 16];
  int ret;
  do {
    zs.next_out = buf;
    zs.avail_out = sizeof buf;
    ret = inflate(&zs, Z_NO_FLUSH);
    if (ret != Z_OK && ret != Z_STREAM_END) {
      std::string msg = zs.msg ? zs.msg : "unknown error";
      inflateEnd(&zs);
      fail(f.path(), ret == Z_BUF_ERROR ? "gzip stream is truncated" : "corrupt gzip stream (" + msg + ")");
    }
    out.insert(out.end(), buf, buf + (sizeof buf - zs.avail_out));
    if (out.size() > kMaxBytes) {
      inflateEnd(&zs);
      fail(f.path(), "decompressed data exceeds 4 GiB");
    }
  } while (ret != Z_STREAM_END);
  inflateEnd(&zs);
  return out;
}

}  // namespace

Array parse(const std::vector<std::uint8_t>& b, const std::string& name) {
  if (b.size() < 4) fail(name, fmt::format("not an IDX file: {} bytes, too small for the magic", b.size()));
  if (b[0] != 0 || b[1] != 0) fail(name, "not an IDX file: bad magic (first two bytes must be zero)");
  if (b[2] != 0x08) fail(name, fmt::format("IDX element type 0x{:02x} is not supported (only unsigned byte, 0x08)", b[2]));
  const unsigned rank = b[3];
  if (rank < 1 || rank > 4) fail(name, fmt::format("IDX rank {} is outside 1..4", rank));
  const std::size_t header = 4 + 4 * rank;
  if (b.size() < header) fail(name, "IDX header is truncated");
  Array a;
  std::uint64_t total = 1;
  for (unsigned i = 0; i < rank; ++i) {
    const std::uint8_t* p = b.data() + 4 + 4 * i;
    std::uint32_t d = (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) | p[3];
    if (d == 0) fail(name, fmt::format("IDX dimension {} is zero", i));
    total *= d;
    if (total > kMaxBytes) fail(name, "IDX dimensions describe more than 4 GiB");
    a.dims.push_back(d);
  }
  const std::uint64_t payload = b.size() - header;
  if (payload != total)
    fail(name, fmt::format("IDX payload is {} bytes but the dimensions need {}{}", payload, total,
                           payload < total ? " (file truncated)" : " (trailing bytes)"));
  a.data.assign(b.begin() + static_cast<std::ptrdiff_t>(header), b.end());
  return a;
}

Array read(const std::string& path) {
  MappedFile f(path);
  if (f.size() >= 2 && f.data()[0] == 0x1f && f.data()[1] == 0x8b) return parse(gunzip(f), path);
  return parse(std::vector<std::uint8_t>(f.data(), f.data() + f.size()), path);
}

}  // namespace prunus::idx
