// FakeProcessRunner: pod processes as records, for tests without root.
//
// spawn() gives the lowest free pid from 1000 and start time 1000 + the
// number of spawns so far (a reused pid gets a new start time, as in the
// kernel). A process runs until signalGroup() (exit 128 + signal) or exit()
// ends it; it stays a zombie (startTime 0) until reap(). A blocking reap of a
// running process ends it with SIGKILL first (a test cannot wait). Ports
// listen as the test sets them (listen()). exitFd() is an eventfd that the
// fake makes readable when the process ends. Not thread-safe.
#pragma once

#include <map>
#include <set>
#include <vector>

#include "src/kernel/process_runner.h"

namespace membrane::kernel {

class FakeProcessRunner final : public ProcessRunner {
 public:
  struct Process {
    std::vector<std::string> argv;
    std::string netns_path;
    std::string hostname;
    uint64_t start_time = 0;
    bool running = true;  // false: a zombie until reaped
    int exit_code = -1;
    std::set<uint16_t> listening;
    std::set<int> ignored;  // signals it ignores (trap '' TERM)
    bool operator==(const Process&) const = default;
  };
  using State = std::map<pid_t, Process>;  // not yet reaped

  const State& state() const { return procs_; }
  // The process ends by itself with this exit code.
  void exit(pid_t pid, int code);
  void listen(pid_t pid, uint16_t port) { procs_.at(pid).listening.insert(port); }
  // The process ignores sig (SIGKILL cannot be ignored).
  void ignore(pid_t pid, int sig) { procs_.at(pid).ignored.insert(sig); }
  // Forgets pid as if another agent run adopted it (not our child).
  void disown(pid_t pid) { children_.erase(pid); }

  Result<pid_t> spawn(const PodProcessSpec& spec) override;
  uint64_t startTime(pid_t pid) override;
  bool listensOnTcp(pid_t pid, uint16_t port) override;
  void signalGroup(pid_t pid, int sig) override;
  ReapResult reap(pid_t pid, bool block) override;
  Result<UniqueFd> exitFd(pid_t pid) override;

 private:
  std::map<pid_t, std::vector<UniqueFd>> exit_fds_;  // dups of the eventfds handed out, until the exit
  State procs_;
  std::set<pid_t> children_;
  uint64_t spawns_ = 0;
};

}  // namespace membrane::kernel
