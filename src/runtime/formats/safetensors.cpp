#include "prunus/safetensors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace prunus::safetensors {
namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  std::size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::BOOL, "BOOL", 1}, {DType::U8, "U8", 1},     {DType::I8, "I8", 1},
    {DType::U16, "U16", 2},   {DType::I16, "I16", 2},   {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2}, {DType::U32, "U32", 4},   {DType::I32, "I32", 4},
    {DType::F32, "F32", 4},   {DType::U64, "U64", 8},   {DType::I64, "I64", 8},
    {DType::F64, "F64", 8},   {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E5M2, "F8_E5M2", 1},
};

const DTypeInfo& info(DType d) {
  for (const auto& i : kDTypes)
    if (i.dtype == d) return i;
  throw std::logic_error("unknown safetensors dtype");
}

float half_to_float(std::uint16_t h) {
  std::uint32_t sign = (h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1f;
  std::uint32_t mant = h & 0x3ff;
  std::uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ff;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace

std::size_t dtype_size(DType d) { return info(d).size; }
const char* dtype_name(DType d) { return info(d).name; }
std::optional<DType> parse_dtype(std::string_view name) {
  for (const auto& i : kDTypes)
    if (name == i.name) return i.dtype;
  return std::nullopt;
}

std::int64_t TensorView::numel() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::vector<float> TensorView::to_f32() const {
  std::vector<float> out(static_cast<std::size_t>(numel()));
  to_f32(0, numel(), out.data());
  return out;
}

void TensorView::to_f32(std::int64_t first, std::int64_t count, float* out) const {
  const std::size_t n = static_cast<std::size_t>(count);
  const std::uint8_t* data = this->data + static_cast<std::size_t>(first) * dtype_size(dtype);
  switch (dtype) {
    case DType::F32:
      if (n) std::memcpy(out, data, n * 4);
      break;
    case DType::F64:
      for (std::size_t i = 0; i < n; ++i) {
        double v;
        std::memcpy(&v, data + 8 * i, 8);
        out[i] = static_cast<float>(v);
      }
      break;
    case DType::F16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, data + 2 * i, 2);
        out[i] = half_to_float(h);
      }
      break;
    case DType::BF16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, data + 2 * i, 2);
        std::uint32_t bits = static_cast<std::uint32_t>(h) << 16;
        std::memcpy(&out[i], &bits, 4);
      }
      break;
    default:
      fail(name, fmt::format("dtype {} is not a floating-point type", dtype_name(dtype)));
  }
}

File File::open(const std::string& path) {
  auto map = std::make_shared<MappedFile>(path);
  File f = parse(map->data(), map->size(), path);
  f.map_ = std::move(map);
  return f;
}

File File::parse(const std::uint8_t* data, std::size_t size, const std::string& name) {
  using nlohmann::json;
  if (size < 8)
    fail(name, fmt::format("not a safetensors file: {} bytes, too small for the 8-byte header length", size));
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
  if (header_len > kMaxHeaderBytes)
    fail(name, fmt::format("header length {} exceeds the {} byte limit", header_len, kMaxHeaderBytes));
  if (header_len > size - 8)
    fail(name, fmt::format("header length {} runs past the end of the file ({} bytes)", header_len, size));
  if (header_len < 2) fail(name, "header is too short to be a JSON object");
  const char* hdr = reinterpret_cast<const char*>(data + 8);
  if (hdr[0] != '{') fail(name, "header does not start with '{'");

  // nlohmann keeps the last of duplicate keys silently; a callback catches them.
  std::set<std::string> seen;
  std::string duplicate;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  json header;
  try {
    header = json::parse(hdr, hdr + header_len, cb);
  } catch (const json::exception& e) {
    std::string what = e.what();
    fail(name, "header is not valid JSON (" + what.substr(0, 120) + ")");
  }
  if (!duplicate.empty()) fail(name, fmt::format("duplicate tensor name '{}' in header", duplicate));
  if (!header.is_object()) fail(name, "header is not a JSON object");

  const std::uint64_t data_size = size - 8 - header_len;
  const std::uint8_t* section = data + 8 + header_len;
  File f;
  f.path_ = name;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    if (key == "__metadata__") {
      if (!v.is_object()) fail(name, "__metadata__ is not a JSON object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          fail(name, fmt::format("__metadata__ value for '{}' is not a string", m.key()));
        f.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) fail(name, fmt::format("tensor '{}': entry is not a JSON object", key));
    for (auto m = v.begin(); m != v.end(); ++m)
      if (m.key() != "dtype" && m.key() != "shape" && m.key() != "data_offsets")
        fail(name, fmt::format("tensor '{}': unknown field '{}'", key, m.key()));
    if (!v.contains("dtype") || !v["dtype"].is_string())
      fail(name, fmt::format("tensor '{}': missing or non-string dtype", key));
    auto dtype = parse_dtype(v["dtype"].get<std::string>());
    if (!dtype) fail(name, fmt::format("tensor '{}': unknown dtype '{}'", key, v["dtype"].get<std::string>()));
    if (!v.contains("shape") || !v["shape"].is_array())
      fail(name, fmt::format("tensor '{}': missing or non-array shape", key));
    TensorView t;
    t.name = key;
    t.dtype = *dtype;
    std::uint64_t nbytes = dtype_size(*dtype);
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned())
        fail(name, fmt::format("tensor '{}': shape entries must be non-negative integers", key));
      std::uint64_t dim = d.get<std::uint64_t>();
      if (dim > static_cast<std::uint64_t>(INT64_MAX))
        fail(name, fmt::format("tensor '{}': dimension {} is too large", key, dim));
      if (dim != 0 && nbytes > UINT64_MAX / dim)
        fail(name, fmt::format("tensor '{}': shape × dtype size overflows 64 bits", key));
      nbytes *= dim;
      t.shape.push_back(static_cast<std::int64_t>(dim));
    }
    const json& off = v.contains("data_offsets") ? v["data_offsets"] : json();
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail(name, fmt::format("tensor '{}': data_offsets must be two non-negative integers", key));
    std::uint64_t begin = off[0].get<std::uint64_t>(), end = off[1].get<std::uint64_t>();
    if (begin > end) fail(name, fmt::format("tensor '{}': data_offsets [{}, {}] are reversed", key, begin, end));
    if (end > data_size)
      fail(name, fmt::format("tensor '{}': data_offsets [{}, {}] out of bounds (data section is {} bytes)", key,
                             begin, end, data_size));
    if (end - begin != nbytes)
      fail(name, fmt::format("tensor '{}': data_offsets span {} bytes but shape × dtype needs {}", key,
                             end - begin, nbytes));
    t.offset = begin;
    t.nbytes = nbytes;
    t.data = section + begin;
    f.tensors_.push_back(std::move(t));
  }
  std::sort(f.tensors_.begin(), f.tensors_.end(), [](const TensorView& a, const TensorView& b) {
    return a.offset != b.offset ? a.offset < b.offset : a.nbytes < b.nbytes;
  });
  std::uint64_t cursor = 0;
  const TensorView* prev = nullptr;
  for (const auto& t : f.tensors_) {
    if (t.offset < cursor)
      fail(name, fmt::format("tensors '{}' and '{}' overlap in the data section", prev->name, t.name));
    if (t.offset > cursor)
      fail(name, fmt::format("{} unused bytes before tensor '{}' in the data section", t.offset - cursor, t.name));
    cursor = t.offset + t.nbytes;
    prev = &t;
  }
  if (cursor != data_size)
    fail(name, fmt::format("data section has {} bytes not covered by any tensor", data_size - cursor));
  return f;
}

const TensorView* File::find(std::string_view name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

const TensorView& File::at(std::string_view name) const {
  const TensorView* t = find(name);
  if (!t) fail(path_, fmt::format("missing tensor '{}'", name));
  return *t;
}

namespace {

// The bytes before the tensor data (length + header padded to a multiple of 8) and each
// tensor's data size, in the given order.
std::string header_bytes(const std::vector<TensorToWrite>& tensors, const std::map<std::string, std::string>& metadata,
                         std::vector<std::uint64_t>& sizes) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t offset = 0;
  sizes.clear();
  for (const auto& t : tensors) {
    if (t.name == "__metadata__" || header.contains(t.name))
      throw std::invalid_argument("safetensors writer: duplicate or reserved tensor name '" + t.name + "'");
    std::uint64_t n = dtype_size(t.dtype);
    for (auto d : t.shape) {
      if (d < 0) throw std::invalid_argument("safetensors writer: negative dimension in '" + t.name + "'");
      n *= static_cast<std::uint64_t>(d);
    }
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
    sizes.push_back(n);
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::type_error&) {  // JSON strings must be valid UTF-8
    throw std::invalid_argument("safetensors writer: a tensor name or metadata value is not valid UTF-8");
  }
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');
  std::string out(8, '\0');
  const std::uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(static_cast<std::uint8_t>(n >> (8 * i)));
  return out + text;
}

void emit(const ByteSink& sink, const std::vector<TensorToWrite>& tensors,
          const std::map<std::string, std::string>& metadata) {
  std::vector<std::uint64_t> sizes;
  const std::string head = header_bytes(tensors, metadata, sizes);
  sink(head.data(), head.size());
  for (std::size_t i = 0; i < tensors.size(); ++i)
    if (sizes[i]) sink(tensors[i].data, sizes[i]);
}

}  // namespace

void write(const std::string& path, const std::vector<TensorToWrite>& tensors,
           const std::map<std::string, std::string>& metadata) {
  atomic_write(path, [&](const ByteSink& sink) { emit(sink, tensors, metadata); });
}

std::string serialize(const std::vector<TensorToWrite>& tensors, const std::map<std::string, std::string>& metadata) {
  std::string out;
  emit([&](const void* d, std::size_t n) { out.append(static_cast<const char*>(d), n); }, tensors, metadata);
  return out;
}

}  // namespace prunus::safetensors

namespace prunus::safetensors {
namespace {

// The header `write` would produce for `layout` and each tensor's (offset, bytes) after it;
// returns the file's total size.
std::uint64_t place_tensors(const std::vector<TensorToWrite>& layout, const std::map<std::string, std::string>& metadata,
                            std::string& head, std::map<std::string, std::pair<std::uint64_t, std::uint64_t>>& slots) {
  std::vector<std::uint64_t> sizes;
  head = header_bytes(layout, metadata, sizes);
  std::uint64_t offset = head.size();
  for (std::size_t i = 0; i < layout.size(); ++i) {
    slots[layout[i].name] = {offset, sizes[i]};
    offset += sizes[i];
  }
  return offset;
}

}  // namespace

StreamWriter::StreamWriter(const std::string& path, const std::vector<TensorToWrite>& layout,
                           const std::map<std::string, std::string>& metadata)
    : path_(path) {
  std::string head;
  const std::uint64_t size = place_tensors(layout, metadata, head, slots_);
  file_ = std::make_unique<PartialFile>(path, size);
  file_->write_at(0, head.data(), head.size());
}

StreamWriter::StreamWriter(const std::string& path, const std::vector<TensorToWrite>& layout,
                           const std::map<std::string, std::string>& metadata, const std::string& partial,
                           const std::vector<std::string>& written)
    : path_(path) {
  std::string head;
  const std::uint64_t size = place_tensors(layout, metadata, head, slots_);
  file_ = std::make_unique<PartialFile>(path, partial, size);
  std::string on_disk(head.size(), '\0');
  file_->read_at(0, on_disk.data(), on_disk.size());
  if (on_disk != head) {
    file_->keep(partial);  // not ours to remove
    fail(partial, "its header is not the one this run writes (another model or layout)");
  }
  for (const auto& name : written) {
    auto it = slots_.find(name);
    if (it == slots_.end()) {
      file_->keep(partial);
      fail(partial, "names a tensor '" + name + "' this layout lacks");
    }
    it->second.second = ~std::uint64_t(0);
  }
}

StreamWriter::~StreamWriter() = default;

void StreamWriter::keep(const std::string& as) { file_->keep(as); }

void StreamWriter::put(const std::string& name, const void* data) {
  auto it = slots_.find(name);
  if (it == slots_.end()) throw std::invalid_argument("safetensors stream: no tensor '" + name + "' in the header");
  if (it->second.second == ~std::uint64_t(0)) throw std::invalid_argument("safetensors stream: '" + name + "' written twice");
  file_->write_at(it->second.first, data, it->second.second);
  it->second.second = ~std::uint64_t(0);
}

void StreamWriter::commit() {
  for (const auto& [name, slot] : slots_)
    if (slot.second != ~std::uint64_t(0) && slot.second != 0)
      throw std::logic_error("safetensors stream: tensor '" + name + "' was never written to " + path_);
  file_->commit();
}

}  // namespace prunus::safetensors
