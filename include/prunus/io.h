// prunus/io.h — errors, memory-mapped reads and crash-safe writes.
// Part of prunus_runtime: no libtorch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace prunus {

const char* version();

// Bad input from the user: a file that is corrupt or missing, a recipe that is
// impossible, an out-of-range option. The CLI prints what() as one line and exits 2.
// The message always names the thing at fault first ("path: problem").
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws InputError("<subject>: <problem>").
[[noreturn]] void fail(std::string_view subject, std::string_view problem);

// A read-only memory map of a whole file. Empty files map to size 0.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept;

  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Hands the pages of [p, p + n) back (madvise DONTNEED): they leave this process's resident
  // set and are read again from the page cache if touched. For readers that stream a file once.
  static void release(const void* p, std::size_t n);

 private:
  std::string path_;
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

// Writes a file so that `path` is always either its old content or the complete new
// content: a temp file in the same directory, fsync, rename, fsync the directory.
// `write` receives a sink that appends bytes; if it throws, the temp file is removed
// and the old file is untouched.
using ByteSink = std::function<void(const void* data, std::size_t size)>;
void atomic_write(const std::string& path, const std::function<void(const ByteSink&)>& write);
void atomic_write(const std::string& path, std::string_view content);
// The same guarantee for a file written out of order (pwrite at offsets) over a long job: a temp
// file of the final size beside `path`; commit() fsyncs it and renames it over `path`. A
// PartialFile destroyed without commit() removes its temp file, so `path` keeps its old
// content (or stays absent).
class PartialFile {
 public:
  PartialFile(const std::string& path, std::uint64_t size);
  // Continues a file kept by keep(): `existing` must be `size` bytes; commit() renames it to path.
  PartialFile(const std::string& path, const std::string& existing, std::uint64_t size);
  ~PartialFile();
  PartialFile(const PartialFile&) = delete;
  PartialFile& operator=(const PartialFile&) = delete;
  void write_at(std::uint64_t offset, const void* data, std::size_t size);
  void read_at(std::uint64_t offset, void* data, std::size_t size) const;
  void commit();
  // Flushes the unfinished file to `as` (kept for a resumed run) instead of removing it.
  void keep(const std::string& as);

 private:
  std::string path_, tmp_;
  int fd_ = -1;
};

// In a distributed job every rank computes what rank 0 computes and only rank 0 writes:
// with writes disabled, atomic_write returns without touching the disk.
void set_writes_enabled(bool enabled);
bool writes_enabled();

// Reads a whole (small) file into a string; InputError if it cannot.
std::string read_text_file(const std::string& path);

}  // namespace prunus
