// prunus/safetensors.h — the safetensors format: validating mmap reader, atomic writer.
// Part of prunus_runtime: no libtorch.
//
// Format: u64 little-endian header length N, N bytes of JSON header, then the data
// section. The header maps tensor names to {dtype, shape, data_offsets} (offsets relative
// to the data section) plus an optional "__metadata__" object of strings.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "prunus/io.h"

namespace prunus::safetensors {

enum class DType { BOOL, U8, I8, U16, I16, F16, BF16, U32, I32, F32, U64, I64, F64, F8_E4M3, F8_E5M2 };

std::size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);
std::optional<DType> parse_dtype(std::string_view name);

// Readers reject headers larger than this (the reference implementation's limit).
inline constexpr std::uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;

struct TensorView {
  std::string name;
  DType dtype;
  std::vector<std::int64_t> shape;
  const std::uint8_t* data;  // not necessarily aligned: copy before typed access
  std::size_t nbytes;
  std::size_t offset;        // within the data section

  std::int64_t numel() const;
  // Converts F32/F16/BF16/F64 to float32; InputError for other dtypes.
  std::vector<float> to_f32() const;
  // Elements [first, first + n) only, into out (the same conversions).
  void to_f32(std::int64_t first, std::int64_t n, float* out) const;
};

// A validated, memory-mapped safetensors file. Validation (all fatal, InputError naming
// the file): header length within the file and <= kMaxHeaderBytes; the header is a JSON
// object with no duplicate keys; known dtypes; non-negative shapes whose byte size does
// not overflow and equals the offsets' span; offsets in bounds, non-overlapping, without
// gaps and covering the whole data section; __metadata__ holds only strings.
class File {
 public:
  static File open(const std::string& path);
  // Validates an in-memory buffer (the name is used in messages). The buffer must
  // outlive the returned File.
  static File parse(const std::uint8_t* data, std::size_t size, const std::string& name);

  const std::string& path() const { return path_; }
  const std::vector<TensorView>& tensors() const { return tensors_; }  // in data order
  const TensorView* find(std::string_view name) const;
  const TensorView& at(std::string_view name) const;  // InputError if missing
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  File() = default;
  std::string path_;
  std::shared_ptr<MappedFile> map_;
  std::vector<TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<std::int64_t> shape;
  const void* data;  // numel × dtype_size bytes
};

// Serialises to bytes (header padded with spaces to a multiple of 8, as the reference
// writer does, so tensor data is 8-byte aligned).
void write(const std::string& path, const std::vector<TensorToWrite>& tensors,
           const std::map<std::string, std::string>& metadata = {});
std::string serialize(const std::vector<TensorToWrite>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// A safetensors file written tensor by tensor in any order: the header (names, dtypes, shapes
// in file order, as `write` would lay them out) is fixed up front, put() writes one tensor's
// bytes where they belong, commit() makes the file appear at `path` atomically once every
// tensor is in. Until then, and if the writer is destroyed first, `path` is untouched (the
// temp file is removed). For outputs larger than memory: one tensor in RAM at a time.
class StreamWriter {
 public:
  StreamWriter(const std::string& path, const std::vector<TensorToWrite>& layout,  // data unused
               const std::map<std::string, std::string>& metadata = {});
  // Continues the file an interrupted writer kept (keep()), whose tensors `written` are in:
  // InputError naming `partial` if its size or header is not this layout's.
  StreamWriter(const std::string& path, const std::vector<TensorToWrite>& layout,
               const std::map<std::string, std::string>& metadata, const std::string& partial,
               const std::vector<std::string>& written);
  ~StreamWriter();
  StreamWriter(const StreamWriter&) = delete;
  StreamWriter& operator=(const StreamWriter&) = delete;
  void put(const std::string& name, const void* data);
  void commit();
  // Leaves the unfinished file at `as` for a later run to continue, instead of removing it.
  void keep(const std::string& as);

 private:
  std::string path_;
  std::map<std::string, std::pair<std::uint64_t, std::uint64_t>> slots_;  // offset, bytes (~0: written)
  std::unique_ptr<PartialFile> file_;
};

}  // namespace prunus::safetensors
