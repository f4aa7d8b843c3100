// Internal: a progress bar with ETA on stderr. On a terminal it redraws one line; in logs
// (not a TTY) it prints only the closing line of each phase.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace prunus {

class Progress {
 public:
  Progress(std::string label, std::int64_t total, bool enabled);
  // `done` out of total, with a short status such as "loss 0.41 acc 85.2%".
  void update(std::int64_t done, const std::string& status);
  void finish(const std::string& line);
  static std::string format_duration(double seconds);

 private:
  std::string label_;
  std::int64_t total_;
  bool enabled_, tty_;
  std::int64_t start_done_ = -1;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace prunus
