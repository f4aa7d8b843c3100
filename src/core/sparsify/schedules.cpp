// Schedules: the target over time. Add one: a class and a line in make_schedule.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "prunus/io.h"
#include "prunus/sparsify.h"

namespace prunus {
namespace {

class OneShotSchedule : public Schedule {
 public:
  OneShotSchedule(double s, std::int64_t at) : s_(s), at_(at) {}
  std::string name() const override { return "oneshot"; }
  double target(std::int64_t step) const override { return step >= at_ ? s_ : 0.0; }
  bool updates_at(std::int64_t step) const override { return step == at_; }
  std::int64_t last_update_step() const override { return at_; }

 private:
  double s_;
  std::int64_t at_;
};

class CubicSchedule : public Schedule {
 public:
  CubicSchedule(double si, double sf, std::int64_t t0, std::int64_t t1, std::int64_t freq)
      : si_(si), sf_(sf), t0_(t0), t1_(t1), freq_(freq) {}
  std::string name() const override { return "gradual"; }
  double target(std::int64_t t) const override {
    if (t < t0_) return 0.0;
    if (t >= t1_) return sf_;
    const double x = 1.0 - double(t - t0_) / double(t1_ - t0_);
    return sf_ + (si_ - sf_) * x * x * x;
  }
  bool updates_at(std::int64_t t) const override {
    return t == t1_ || (t >= t0_ && t < t1_ && (t - t0_) % freq_ == 0);
  }
  std::int64_t last_update_step() const override { return t1_; }

 private:
  double si_, sf_;
  std::int64_t t0_, t1_, freq_;
};

}  // namespace

std::unique_ptr<Schedule> make_cubic_schedule(double initial, double final_sparsity, std::int64_t begin,
                                              std::int64_t end, std::int64_t frequency) {
  if (end <= begin) fail("gradual schedule", fmt::format("end step {} must come after begin step {}", end, begin));
  if (frequency < 1) fail("gradual schedule", "frequency must be at least 1 step");
  return std::make_unique<CubicSchedule>(initial, final_sparsity, begin, end, frequency);
}

std::unique_ptr<Schedule> make_oneshot_schedule(double sparsity, std::int64_t at_step) {
  return std::make_unique<OneShotSchedule>(sparsity, at_step);
}

std::unique_ptr<Schedule> make_schedule(const PruneConfig& cfg, std::int64_t steps_per_epoch) {
  const auto& s = cfg.schedule;
  const auto begin = static_cast<std::int64_t>(std::llround(s.begin_epoch * double(steps_per_epoch)));
  if (s.kind == "oneshot") return make_oneshot_schedule(cfg.sparsity, begin);
  // Iterative rounds are driven by the pipeline (prune_to per round); within a round the
  // masks hold, so the schedule never updates.
  if (s.kind == "iterative") return make_oneshot_schedule(cfg.sparsity, -1);
  if (s.kind == "gradual") {
    const auto end = static_cast<std::int64_t>(std::llround(s.end_epoch * double(steps_per_epoch)));
    return make_cubic_schedule(s.initial_sparsity, cfg.sparsity, begin, end, s.frequency);
  }
  fail("schedule '" + s.kind + "'", fmt::format("unknown (known: {})", fmt::join(schedule_names(), ", ")));
}

}  // namespace prunus
