// prunus/distributed.h — several processes on one job, over PyTorch's c10d (TCPStore
// rendezvous; Gloo on CPU tensors, NCCL on CUDA tensors where libtorch was built with it).
//
// Launched the way torchrun launches: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT and
// LOCAL_RANK in the environment (`prunus launch --nproc N -- <verb> ...` sets them). Without
// WORLD_SIZE (or with 1) the world is one process and every collective is a no-op, so
// library code calls them unconditionally.
//
// Conventions of the jobs that use it: every rank computes what rank 0 computes (identical
// weights and masks, checked by fingerprint), rank 0 alone writes files and prints; the
// other ranks log to PRUNUS_LOG_DIR/rank<R>.log (default ./prunus-logs). A rank that dies or
// hangs makes the others stop within the timeout with a message naming it.
#pragma once
// Torch-free (tensors are forward-declared) so that the CLI can include it.

#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace at {
class Tensor;
}

namespace prunus::dist {

// A collective failed because another rank died, hung past the timeout or failed itself; the
// message names it. Jobs catch it to leave a checkpoint on rank 0 before they stop.
class PeerFailure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Group {
 public:
  virtual ~Group() = default;
  virtual int rank() const { return 0; }
  virtual int size() const { return 1; }
  virtual int local_rank() const { return 0; }
  bool is_main() const { return rank() == 0; }
  bool active() const { return size() > 1; }

  // In place, on every rank. Tensors must be contiguous and of the same shape everywhere.
  virtual void all_reduce_sum(at::Tensor& t, const char* what) {}
  virtual void broadcast(at::Tensor& t, int root, const char* what) {}
  virtual void barrier(const char* what) {}
  // True on every rank when any rank passes true (e.g. "Ctrl-C arrived here").
  bool any(bool flag, const char* what);
  // Each rank's values, stacked: [size(), values.size()] (float64).
  at::Tensor all_gather(const std::vector<double>& values, const char* what);
  // Fails on every rank, naming the first rank whose tensors differ from rank 0's, unless
  // all ranks hold the same values (compared by an order-sensitive float64 fingerprint).
  void check_same(const std::vector<at::Tensor>& tensors, const std::string& what);
};

// The process-wide group (one process until init_from_env connects).
Group& world();

struct InitOptions {
  std::chrono::milliseconds timeout{std::chrono::seconds(120)};  // collectives and rendezvous
};
// Reads the torchrun variables; with WORLD_SIZE > 1 connects to the others (rank 0 hosts
// the TCPStore at MASTER_ADDR:MASTER_PORT) and redirects a non-zero rank's stdout/stderr to
// its log file. Returns whether the world has more than one process. Bad variables: InputError.
bool init_from_env(const InitOptions& opt = {});
// The timeout from PRUNUS_DIST_TIMEOUT (seconds) or the default.
InitOptions options_from_env();
// Waits for every rank, then disconnects (a clean end: no peer sees a lost connection).
void finalize();
// Called by the CLI when this rank fails: the others name it and quote `message`.
void report_failure(const std::string& message);

// This rank's share [begin, end) of n items, split as evenly as possible with every
// boundary a multiple of `align` (so per-chunk work is the same as in one process).
std::pair<std::int64_t, std::int64_t> shard(std::int64_t n, std::int64_t align = 1);
// The rank that owns each of `costs` items: largest first onto the least-loaded rank.
std::vector<int> assign_owners(const std::vector<double>& costs);

// Order-sensitive fingerprint of a tensor: {Σw, Σ|w|, Σw·((i mod 1009)+1), nnz} in float64.
std::vector<double> fingerprint(const at::Tensor& t);

}  // namespace prunus::dist
