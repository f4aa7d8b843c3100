#include "util/progress.h"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

namespace prunus {

Progress::Progress(std::string label, std::int64_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled), tty_(::isatty(STDERR_FILENO) == 1) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

std::string Progress::format_duration(double s) {
  if (s < 0) s = 0;
  auto t = static_cast<long long>(s + 0.5);
  if (t >= 3600) return fmt::format("{}:{:02}:{:02}", t / 3600, (t / 60) % 60, t % 60);
  return fmt::format("{:02}:{:02}", t / 60, t % 60);
}

void Progress::update(std::int64_t done, const std::string& status) {
  if (!enabled_ || !tty_) return;
  auto now = std::chrono::steady_clock::now();
  if (start_done_ < 0) {
    start_done_ = done;  // a resumed run starts part way: rate from here
    start_ = now;
  }
  if (now - last_draw_ < std::chrono::milliseconds(100) && done < total_) return;
  last_draw_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const auto progressed = done - start_done_;
  const double eta = progressed > 0 ? elapsed / double(progressed) * double(total_ - done) : 0.0;
  const int width = 24;
  const int filled = total_ > 0 ? static_cast<int>(width * done / total_) : width;
  std::fprintf(stderr, "\r%s [%s%s] %lld/%lld %s ETA %s\x1b[K", label_.c_str(), std::string(filled, '#').c_str(),
               std::string(width - filled, '.').c_str(), static_cast<long long>(done),
               static_cast<long long>(total_), status.c_str(), format_duration(eta).c_str());
  std::fflush(stderr);
}

void Progress::finish(const std::string& line) {
  if (!enabled_) return;
  std::fprintf(stderr, tty_ ? "\r%s\x1b[K\n" : "%s\n", line.c_str());
  std::fflush(stderr);
}

}  // namespace prunus
