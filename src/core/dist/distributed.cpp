// The c10d-backed world: TCPStore rendezvous, Gloo for CPU tensors, NCCL for CUDA tensors
// (when libtorch has it), a heartbeat per rank in the store so that a failure names the
// rank at fault.
#include "prunus/distributed.h"

#include <fcntl.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <numeric>
#include <thread>

#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef PRUNUS_WITH_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "prunus/io.h"

namespace prunus::dist {
namespace fs = std::filesystem;
using namespace std::chrono;

bool Group::any(bool flag, const char* what) {
  if (!active()) return flag;
  auto t = torch::tensor({flag ? 1.0 : 0.0}, torch::kFloat64);
  all_reduce_sum(t, what);
  return t.item<double>() > 0;
}

torch::Tensor Group::all_gather(const std::vector<double>& values, const char* what) {
  auto t = torch::zeros({size(), static_cast<std::int64_t>(values.size())}, torch::kFloat64);
  // Each rank fills its row; a sum with zeros is exact, so every row arrives bit for bit.
  t[rank()].copy_(torch::tensor(values, torch::kFloat64));
  all_reduce_sum(t, what);
  return t;
}

std::vector<double> fingerprint(const torch::Tensor& t) {
  torch::NoGradGuard ng;
  auto v = t.detach().reshape({-1}).to(torch::kFloat64);
  auto pos = torch::arange(v.numel(), torch::TensorOptions().dtype(torch::kInt64).device(v.device())).remainder_(1009).add_(1);
  return {v.sum().item<double>(), v.abs().sum().item<double>(), (v * pos).sum().item<double>(),
          static_cast<double>(v.count_nonzero().item<std::int64_t>())};
}

void Group::check_same(const std::vector<torch::Tensor>& tensors, const std::string& what) {
  if (!active()) return;
  std::vector<double> fp;
  for (const auto& t : tensors) {
    auto f = fingerprint(t);
    fp.insert(fp.end(), f.begin(), f.end());
  }
  auto all = all_gather(fp, what.c_str());
  for (int r = 1; r < size(); ++r)
    for (std::int64_t i = 0; i < all.size(1); ++i)
      if (all[r][i].item<double>() != all[0][i].item<double>())
        fail("distributed", fmt::format("rank {}'s {} differ from rank 0's (tensor {} of {}): the ranks diverged", r,
                                        what, i / 4 + 1, tensors.size()));
}

std::pair<std::int64_t, std::int64_t> shard(std::int64_t n, std::int64_t align) {
  const auto& g = world();
  const std::int64_t units = (n + align - 1) / align;
  const std::int64_t r = g.rank(), w = g.size();
  const std::int64_t b = units * r / w, e = units * (r + 1) / w;
  return {std::min(n, b * align), std::min(n, e * align)};
}

std::vector<int> assign_owners(const std::vector<double>& costs) {
  const int w = world().size();
  std::vector<std::size_t> order(costs.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return costs[a] > costs[b]; });
  std::vector<double> load(static_cast<std::size_t>(w), 0.0);
  std::vector<int> owner(costs.size(), 0);
  for (auto i : order) {
    const int r = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    owner[i] = r;
    load[static_cast<std::size_t>(r)] += costs[i];
  }
  return owner;
}

namespace {

std::string first_line(const std::string& s) {
  auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

// Waits until something listens at host:port (rank 0's store), polling every 10 ms: c10d's
// own client backs off for a second or more when it arrives before the server.
void wait_for_listener(const std::string& host, std::uint16_t port, milliseconds timeout) {
  const auto deadline = steady_clock::now() + timeout;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  while (steady_clock::now() < deadline) {
    addrinfo* res = nullptr;
    if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) == 0) {
      bool up = false;
      for (auto* a = res; a && !up; a = a->ai_next) {
        const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        up = ::connect(fd, a->ai_addr, a->ai_addrlen) == 0;
        ::close(fd);
      }
      ::freeaddrinfo(res);
      if (up) return;
    }
    std::this_thread::sleep_for(milliseconds(10));
  }
}

std::int64_t now_ms() { return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count(); }

std::vector<std::uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }
std::string text(const std::vector<std::uint8_t>& b) { return {b.begin(), b.end()}; }

constexpr auto kHeartbeat = milliseconds(500);
constexpr std::int64_t kStaleMs = 3000;  // a heartbeat older than this: the rank is gone or stopped

class C10dGroup final : public Group {
 public:
  C10dGroup(int rank, int size, int local_rank, std::string host, std::uint16_t port, milliseconds timeout)
      : rank_(rank), size_(size), local_rank_(local_rank), host_(std::move(host)), port_(port), timeout_(timeout) {
    c10d::TCPStoreOptions so;
    so.port = port_;
    so.isServer = rank_ == 0;
    so.numWorkers = static_cast<std::size_t>(size_);
    so.waitWorkers = true;
    so.timeout = timeout_;
    try {
      if (rank_ != 0) wait_for_listener(host_, port_, timeout_);
      store_ = c10::make_intrusive<c10d::TCPStore>(host_, so);
      auto gloo_opts = c10d::ProcessGroupGloo::Options::create(timeout_);
      const bool loopback = host_ == "127.0.0.1" || host_ == "localhost";
      gloo_opts->devices.push_back(loopback ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                            : c10d::ProcessGroupGloo::createDefaultDevice());
      gloo_ = c10::make_intrusive<c10d::ProcessGroupGloo>(c10::make_intrusive<c10d::PrefixStore>("gloo", store_), rank_,
                                                          size_, gloo_opts);
#ifdef PRUNUS_WITH_NCCL
      if (torch::cuda::is_available() && std::getenv("PRUNUS_NO_NCCL") == nullptr) {
        c10::cuda::set_device(static_cast<c10::DeviceIndex>(local_rank_ % torch::cuda::device_count()));
        auto nccl_opts = c10d::ProcessGroupNCCL::Options::create();
        nccl_opts->timeout = timeout_;
        nccl_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(c10::make_intrusive<c10d::PrefixStore>("nccl", store_),
                                                            rank_, size_, nccl_opts);
      }
#endif
    } catch (const std::exception& e) {
      fail("distributed", fmt::format("rank {} of {} could not join the job at {}:{} within {} s: {}", rank_, size_, host_,
                                      port_, timeout_.count() / 1000, first_line(e.what())));
    }
    start_heartbeat();
  }

  ~C10dGroup() override { stop_heartbeat(); }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }

  void all_reduce_sum(torch::Tensor& t, const char* what) override {
    std::vector<torch::Tensor> ts{t};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    o.timeout = timeout_;
    run(what, [&] { return on_backend(t, [&](auto& b) { return b.allreduce(ts, o); }); });
  }
  void broadcast(torch::Tensor& t, int root, const char* what) override {
    std::vector<torch::Tensor> ts{t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.timeout = timeout_;
    run(what, [&] { return on_backend(t, [&](auto& b) { return b.broadcast(ts, o); }); });
  }
  void barrier(const char* what) override {
    c10d::BarrierOptions o;
    o.timeout = timeout_;
    run(what, [&] { return gloo_->barrier(o); });
  }

  void report_failure(const std::string& message) {
    if (peer_failed_) return;  // the cause is elsewhere; the rank at fault has said so
    try {
      std::lock_guard<std::mutex> lock(hb_mutex_);
      if (hb_store_) hb_store_->set(fmt::format("prunus/failed/{}", rank_), bytes(first_line(message)));
    } catch (...) {
    }
  }

  void finalize() {
    barrier("the final barrier");
    stop_heartbeat();
#ifdef PRUNUS_WITH_NCCL
    // libtorch 2.x wants an explicit shutdown before the communicator is destroyed.
    if constexpr (requires(c10d::ProcessGroupNCCL& p) { p.shutdown(); })
      if (nccl_) nccl_->shutdown();
#endif
  }

 private:
  template <class Launch>
  void run(const char* what, Launch launch) {
    try {
      auto work = launch();
      work->wait(timeout_);
    } catch (const std::exception& e) {
      peer_failed_ = true;
      throw PeerFailure(diagnose(what, first_line(e.what())));
    }
  }

  // CUDA tensors go through NCCL where it is there, everything else through Gloo.
  template <class Op>
  c10::intrusive_ptr<c10d::Work> on_backend(const torch::Tensor& t, Op op) {
#ifdef PRUNUS_WITH_NCCL
    if (t.is_cuda() && nccl_) return op(*nccl_);
#endif
    return op(*gloo_);
  }

  // Which rank is at fault: one that reported an error, else one whose heartbeat is stale.
  // A rank that died a moment ago still has a fresh heartbeat: look again for a few seconds.
  std::string diagnose(const char* what, const std::string& error) {
    const std::string tail = fmt::format("during {}; rank {} stops ({})", what, rank_, error);
    const auto deadline = steady_clock::now() + milliseconds(kStaleMs + 1500);
    try {
      for (;;) {
        std::lock_guard<std::mutex> lock(hb_mutex_);
        if (!hb_store_) break;
        for (int r = 0; r < size_; ++r) {
          if (r == rank_) continue;
          const auto failed_key = fmt::format("prunus/failed/{}", r);
          if (hb_store_->check({failed_key}))
            return fmt::format("distributed: rank {} failed: {} — {}", r, text(hb_store_->get(failed_key)), tail);
        }
        for (int r = 0; r < size_; ++r) {
          if (r == rank_) continue;
          const auto key = fmt::format("prunus/hb/{}", r);
          if (!hb_store_->check({key})) continue;
          const std::int64_t age = now_ms() - std::stoll(text(hb_store_->get(key)));
          if (age > kStaleMs)
            return fmt::format("distributed: rank {} stopped responding (no heartbeat for {:.1f} s: it died or hangs) {}",
                               r, double(age) / 1000.0, tail);
        }
        if (steady_clock::now() > deadline) break;
        std::this_thread::sleep_for(milliseconds(250));
      }
    } catch (const std::exception&) {
      if (rank_ != 0)
        return fmt::format("distributed: rank 0, which hosts the rendezvous store at {}:{}, is gone {}", host_, port_,
                           tail);
    }
    return fmt::format("distributed: a peer did not complete {} within {} s (every rank's heartbeat is current: one "
                       "is alive but stuck) — rank {} stops ({})",
                       what, timeout_.count() / 1000, rank_, error);
  }

  void start_heartbeat() {
    c10d::TCPStoreOptions so;
    so.port = port_;
    so.isServer = false;
    so.numWorkers = c10::nullopt;
    so.waitWorkers = false;
    so.timeout = milliseconds(2000);
    hb_store_ = c10::make_intrusive<c10d::TCPStore>(host_, so);
    beat();
    hb_thread_ = std::thread([this] {
      std::unique_lock<std::mutex> lock(stop_mutex_);
      while (!stop_cv_.wait_for(lock, kHeartbeat, [this] { return stop_; })) {
        if (!beat()) return;
      }
    });
  }
  bool beat() {
    try {
      std::lock_guard<std::mutex> lock(hb_mutex_);
      hb_store_->set(fmt::format("prunus/hb/{}", rank_), bytes(std::to_string(now_ms())));
      return true;
    } catch (...) {
      return false;  // the store is gone: the collectives will say so
    }
  }
  void stop_heartbeat() {
    {
      std::lock_guard<std::mutex> lock(stop_mutex_);
      stop_ = true;
    }
    stop_cv_.notify_all();
    if (hb_thread_.joinable()) hb_thread_.join();
  }

  int rank_, size_, local_rank_;
  std::string host_;
  std::uint16_t port_;
  milliseconds timeout_;
  c10::intrusive_ptr<c10d::TCPStore> store_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo_;
#ifdef PRUNUS_WITH_NCCL
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl_;
#endif
  c10::intrusive_ptr<c10d::TCPStore> hb_store_;
  std::mutex hb_mutex_;
  std::thread hb_thread_;
  std::mutex stop_mutex_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::atomic<bool> peer_failed_{false};
};

Group g_single;
std::unique_ptr<C10dGroup> g_world;

int env_int(const char* name, int fallback, int lo, int hi) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < lo || x > hi)
    fail(std::string("environment variable ") + name, fmt::format("'{}' is not an integer in [{}, {}]", v, lo, hi));
  return static_cast<int>(x);
}

void redirect_to_log(int rank) {
  const char* dir_env = std::getenv("PRUNUS_LOG_DIR");
  const fs::path dir = dir_env && *dir_env ? dir_env : "prunus-logs";
  std::error_code ec;
  fs::create_directories(dir, ec);
  const auto path = (dir / fmt::format("rank{}.log", rank)).string();
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) fail(path, "cannot open this rank's log file");
  std::fflush(stdout);
  std::fflush(stderr);
  ::dup2(fd, 1);
  ::dup2(fd, 2);
  ::close(fd);
  std::fprintf(stderr, "---- rank %d, pid %d\n", rank, static_cast<int>(::getpid()));
}

}  // namespace

Group& world() { return g_world ? static_cast<Group&>(*g_world) : g_single; }

InitOptions options_from_env() {
  InitOptions o;
  o.timeout = seconds(env_int("PRUNUS_DIST_TIMEOUT", static_cast<int>(o.timeout.count() / 1000), 1, 86400));
  return o;
}

bool init_from_env(const InitOptions& opt) {
  if (g_world) return true;
  const int size = env_int("WORLD_SIZE", 1, 1, 65536);
  if (size == 1) return false;
  const int rank = env_int("RANK", -1, 0, size - 1);
  if (rank < 0) fail("environment variable RANK", fmt::format("is not set (WORLD_SIZE is {})", size));
  const int local_rank = env_int("LOCAL_RANK", rank, 0, 65535);
  const char* addr = std::getenv("MASTER_ADDR");
  const int port = env_int("MASTER_PORT", -1, 1, 65535);
  if (!addr || !*addr) fail("environment variable MASTER_ADDR", "is not set");
  if (port < 0) fail("environment variable MASTER_PORT", "is not set");
  {
    // c10d logs every retry of the rendezvous on stderr; what matters is in our one line.
    std::fflush(stderr);
    const int saved = ::dup(2), devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (devnull >= 0) ::dup2(devnull, 2), ::close(devnull);
    auto restore = [&] {
      if (saved >= 0) ::dup2(saved, 2), ::close(saved);
    };
    try {
      g_world = std::make_unique<C10dGroup>(rank, size, local_rank, addr, static_cast<std::uint16_t>(port), opt.timeout);
    } catch (...) {
      restore();
      throw;
    }
    restore();
  }
  // After joining, so that a rank that cannot join says so where it was started.
  if (rank != 0) redirect_to_log(rank);
  // Every rank computes what rank 0 computes; only rank 0's files are written.
  set_writes_enabled(rank == 0);
  return true;
}

void finalize() {
  if (!g_world) return;
  g_world->finalize();
  g_world.reset();
}

void report_failure(const std::string& message) {
  if (g_world) g_world->report_failure(message);
}

}  // namespace prunus::dist
