#include <atomic>
#include <csignal>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "prunus/io.h"

namespace prunus {
namespace fs = std::filesystem;

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail(path, std::string("cannot stat: ") + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, "not a regular file");
  }
  size_ = static_cast<std::size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      fail(path, std::string("cannot map: ") + std::strerror(e));
    }
    data_ = static_cast<const std::uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)), data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<std::uint8_t*>(data_), size_);
}

namespace {

void write_all(int fd, const void* data, std::size_t size, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(path, std::string("write failed: ") + std::strerror(errno));
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

void fsync_dir(const fs::path& dir) {
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace

namespace {
std::atomic<bool> g_writes_enabled{true};
}  // namespace

void set_writes_enabled(bool enabled) { g_writes_enabled = enabled; }
bool writes_enabled() { return g_writes_enabled; }

void atomic_write(const std::string& path, const std::function<void(const ByteSink&)>& write) {
  if (!g_writes_enabled) return;
  fs::path target(path);
  fs::path dir = target.parent_path();
  if (!dir.empty() && !fs::is_directory(dir)) fail(path, "directory does not exist");
  // Temp name starts with '.' so directory listings and globs skip it, and carries the
  // writer's pid: a temp file left by a writer that was killed (SIGKILL, power loss) is
  // removed by the next write of the same target, while a live writer's is left alone.
  const std::string prefix = "." + target.filename().string() + ".tmp.";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir.empty() ? fs::path(".") : dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    const long pid = std::strtol(name.c_str() + prefix.size(), nullptr, 10);
    if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) fs::remove(e.path(), ec);
  }
  std::string tmpl = (dir / (prefix + std::to_string(::getpid()) + ".XXXXXX")).string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  int fd = ::mkstemp(buf.data());
  if (fd < 0) fail(path, std::string("cannot create temp file: ") + std::strerror(errno));
  std::string tmp(buf.data());
  try {
    // Buffer small writes: safetensors headers and tensors arrive in pieces.
    std::vector<char> pending;
    pending.reserve(1 << 20);
    auto flush = [&] {
      write_all(fd, pending.data(), pending.size(), path);
      pending.clear();
    };
    ByteSink sink = [&](const void* data, std::size_t size) {
      if (size >= (1u << 20)) {
        flush();
        write_all(fd, data, size, path);
        return;
      }
      if (pending.size() + size > pending.capacity()) flush();
      const char* p = static_cast<const char*>(data);
      pending.insert(pending.end(), p, p + size);
    };
    write(sink);
    flush();
    if (::fchmod(fd, 0644) != 0) { /* keep mkstemp's 0600 */ }
    if (::fsync(fd) != 0) fail(path, std::string("fsync failed: ") + std::strerror(errno));
    ::close(fd);
    fd = -1;
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      fail(path, std::string("rename failed: ") + std::strerror(errno));
    fsync_dir(dir);
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
}

void MappedFile::release(const void* p, std::size_t n) {
  if (!p || n == 0) return;
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<std::uintptr_t>(p) & ~(page - 1);
  const auto end = (reinterpret_cast<std::uintptr_t>(p) + n + page - 1) & ~(page - 1);
  ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);  // advice only: errors are harmless
}

PartialFile::PartialFile(const std::string& path, std::uint64_t size) : path_(path) {
  if (!g_writes_enabled) return;
  fs::path target(path);
  fs::path dir = target.parent_path();
  if (!dir.empty() && !fs::is_directory(dir)) fail(path, "directory does not exist");
  // The temp-name convention of atomic_write (a killed writer's leftovers are removed later).
  std::string tmpl = (dir / ("." + target.filename().string() + ".tmp." + std::to_string(::getpid()) + ".XXXXXX")).string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  fd_ = ::mkstemp(buf.data());
  if (fd_ < 0) fail(path, std::string("cannot create temp file: ") + std::strerror(errno));
  tmp_ = buf.data();
  if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd_);
    ::unlink(tmp_.c_str());
    fail(path, "cannot size the temp file: " + why);
  }
}

PartialFile::PartialFile(const std::string& path, const std::string& existing, std::uint64_t size) : path_(path) {
  if (!g_writes_enabled) return;
  fd_ = ::open(existing.c_str(), O_RDWR | O_CLOEXEC);
  if (fd_ < 0) fail(existing, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd_, &st) != 0 || static_cast<std::uint64_t>(st.st_size) != size) {
    ::close(fd_);
    fd_ = -1;
    fail(existing, "is " + std::to_string(st.st_size) + " bytes, the output being continued is " + std::to_string(size) +
                       " bytes");
  }
  tmp_ = existing;
}

void PartialFile::read_at(std::uint64_t offset, void* data, std::size_t size) const {
  if (fd_ < 0) return;
  char* p = static_cast<char*>(data);
  while (size > 0) {
    const ssize_t n = ::pread(fd_, p, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail(tmp_, "read failed");
    p += n;
    offset += static_cast<std::uint64_t>(n);
    size -= static_cast<std::size_t>(n);
  }
}

void PartialFile::keep(const std::string& as) {
  if (fd_ < 0) return;
  if (::fsync(fd_) != 0) fail(as, std::string("fsync failed: ") + std::strerror(errno));
  ::close(fd_);
  fd_ = -1;
  if (tmp_ != as && ::rename(tmp_.c_str(), as.c_str()) != 0) fail(as, std::string("rename failed: ") + std::strerror(errno));
  tmp_.clear();
  fsync_dir(fs::path(as).parent_path());
}

PartialFile::~PartialFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!tmp_.empty()) ::unlink(tmp_.c_str());
}

void PartialFile::write_at(std::uint64_t offset, const void* data, std::size_t size) {
  if (fd_ < 0) return;
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::pwrite(fd_, p, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(path_, std::string("write failed: ") + std::strerror(errno));
    }
    p += n;
    offset += static_cast<std::uint64_t>(n);
    size -= static_cast<std::size_t>(n);
  }
}

void PartialFile::commit() {
  if (fd_ < 0) return;
  if (::fchmod(fd_, 0644) != 0) { /* keep mkstemp's 0600 */ }
  if (::fsync(fd_) != 0) fail(path_, std::string("fsync failed: ") + std::strerror(errno));
  ::close(fd_);
  fd_ = -1;
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail(path_, std::string("rename failed: ") + std::strerror(errno));
  tmp_.clear();
  fsync_dir(fs::path(path_).parent_path());
}

void atomic_write(const std::string& path, std::string_view content) {
  atomic_write(path, [&](const ByteSink& sink) { sink(content.data(), content.size()); });
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace prunus
