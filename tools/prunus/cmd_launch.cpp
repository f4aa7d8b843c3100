// prunus launch --nproc N -- <verb> ...: N local processes of one distributed job, with the
// variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT). Any launcher that sets them works the same (one `prunus <verb>` per rank).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include <fmt/format.h>

#include "commands.h"
#include "prunus/io.h"

namespace prunus::cli {
namespace {

volatile sig_atomic_t g_forward = 0;
extern "C" void on_launch_signal(int sig) { g_forward = sig; }

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    fail("prunus launch", "cannot find a free TCP port on 127.0.0.1 (pass --master-port)");
  ::close(fd);
  return ntohs(a.sin_port);
}

// The last line that says "error" in a rank's log: what the user needs first.
std::string last_error_line(const std::string& log) {
  std::ifstream in(log);
  std::string line, found;
  while (std::getline(in, line))
    if (line.find("error") != std::string::npos) found = line;
  return found;
}

struct LaunchOptions {
  int nproc = 2;
  std::string addr = "127.0.0.1";
  int port = 0;
  std::string log_dir = std::getenv("PRUNUS_LOG_DIR") && *std::getenv("PRUNUS_LOG_DIR") ? std::getenv("PRUNUS_LOG_DIR")
                                                                                       : "prunus-logs";
  int timeout = 120;
  std::vector<std::string> command;
};

int launch(const LaunchOptions& o) {
  if (o.nproc < 1 || o.nproc > 256) fail("--nproc", fmt::format("{} is outside [1, 256]", o.nproc));
  if (o.command.empty()) fail("prunus launch", "no command after -- (e.g. prunus launch --nproc 2 -- finetune ...)");
  if (o.command[0] == "launch") fail("prunus launch", "cannot launch itself");
  const int port = o.port > 0 ? o.port : free_port();
  std::filesystem::create_directories(o.log_dir);
  std::vector<std::string> argv_s{"prunus"};
  argv_s.insert(argv_s.end(), o.command.begin(), o.command.end());
  std::fprintf(stderr, "prunus launch: %d processes, rendezvous at %s:%d, timeout %d s, logs of ranks 1-%d in %s/\n",
               o.nproc, o.addr.c_str(), port, o.timeout, o.nproc - 1, o.log_dir.c_str());
  std::fflush(stderr);
  std::map<pid_t, int> ranks;
  for (int r = 0; r < o.nproc; ++r) {
    const pid_t pid = ::fork();
    if (pid < 0) fail("prunus launch", std::string("fork failed: ") + std::strerror(errno));
    if (pid == 0) {
      // Its own process group: Ctrl-C reaches the launcher, which forwards it once.
      ::setpgid(0, 0);
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(o.nproc).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(o.nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", o.addr.c_str(), 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      ::setenv("PRUNUS_LOG_DIR", o.log_dir.c_str(), 1);
      ::setenv("PRUNUS_DIST_TIMEOUT", std::to_string(o.timeout).c_str(), 1);
      std::vector<char*> argv;
      for (auto& a : argv_s) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv("/proc/self/exe", argv.data());
      std::fprintf(stderr, "prunus launch: cannot start rank %d: %s\n", r, std::strerror(errno));
      ::_exit(127);
    }
    ranks[pid] = r;
  }
  struct sigaction sa{};
  sa.sa_handler = on_launch_signal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  int rc = 0;
  auto give_up_at = std::chrono::steady_clock::time_point::max();
  while (!ranks.empty()) {
    if (g_forward) {
      for (const auto& [pid, r] : ranks) ::kill(pid, g_forward);
      g_forward = 0;
    }
    if (std::chrono::steady_clock::now() > give_up_at) {
      for (const auto& [pid, r] : ranks) {
        std::fprintf(stderr, "prunus launch: rank %d did not stop within the timeout after a failure; killing it\n", r);
        ::kill(pid, SIGKILL);
      }
      give_up_at = std::chrono::steady_clock::time_point::max();
    }
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    const auto it = ranks.find(pid);
    if (it == ranks.end()) continue;
    const int r = it->second;
    ranks.erase(it);
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code == 0) continue;
    const std::string log = r == 0 ? "" : fmt::format("{}/rank{}.log", o.log_dir, r);
    std::string what = !WIFEXITED(status) ? fmt::format("was killed by signal {}", WTERMSIG(status))
                       : code == 130      ? std::string("was interrupted (exit code 130; --resume continues the job)")
                                          : fmt::format("exited with code {}", code);
    if (!log.empty()) {
      what += fmt::format(" (log: {})", log);
      if (auto line = last_error_line(log); !line.empty()) what += "\n  " + line;
    }
    std::fprintf(stderr, "prunus launch: rank %d %s\n", r, what.c_str());
    if (rc == 0) {
      rc = code;
      // The others notice within the job's timeout and stop with their own message.
      give_up_at = std::chrono::steady_clock::now() + std::chrono::seconds(o.timeout + 15);
    }
  }
  return rc;
}

}  // namespace

void add_launch(CLI::App& app, Action& action) {
  auto o = std::make_shared<LaunchOptions>();
  auto* cmd = app.add_subcommand(
      "launch",
      "Run a verb as N local processes of one distributed job (c10d: Gloo on CPU, NCCL on GPUs), with the variables "
      "torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT): data-parallel train/prune/finetune "
      "and recipes, sharded oneshot calibration, distributed sensitivity. Rank 0 prints and writes; ranks 1.. log "
      "to --log-dir. Example: prunus launch --nproc 2 -- finetune model.safetensors --out ft.safetensors");
  cmd->add_option("--nproc", o->nproc, "processes (one per GPU on a GPU machine)")->capture_default_str();
  cmd->add_option("--master-addr", o->addr, "rendezvous address (rank 0 hosts the store)")->capture_default_str();
  cmd->add_option("--master-port", o->port, "rendezvous port (default: a free one)");
  cmd->add_option("--log-dir", o->log_dir, "where ranks 1.. write rank<R>.log")->capture_default_str();
  cmd->add_option("--timeout", o->timeout,
                  "seconds a rank waits for the others in a collective before it stops, naming the rank at fault")
      ->capture_default_str();
  cmd->add_option("command", o->command, "the verb and its arguments, after --")->required();
  cmd->callback([&action, o] { action = [o] { return launch(*o); }; });
}

}  // namespace prunus::cli
