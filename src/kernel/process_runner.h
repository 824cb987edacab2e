// ProcessRunner: the pod processes of workload::Controller (spawn, identity
// across pid reuse, readiness, signals, reaping) as an interface, so that the
// controller is tested without root and real processes (fake in
// src/kernel/fake/, failures injected with src/kernel/fake/faults.h).
//
// Contract: the Linux implementation forwards to src/kernel/pod_process.h
// (spawnPodProcess's errors come from the child before exec, the caller owns
// and reaps the child) and to kill(2)/waitpid(2). Thread safety:
// LinuxProcessRunner is stateless and safe from any thread; the fake is not
// thread-safe.
#pragma once

#include <sys/types.h>

#include <cstdint>

#include "membrane/result.h"
#include "membrane/unique_fd.h"
#include "src/kernel/pod_process.h"

namespace membrane::kernel {

// What reap() found.
struct ReapResult {
  enum class State { Running, Exited, NotAChild };
  State state = State::Running;
  int exit_code = -1;  // Exited: exit status, or 128 + signal
};

class ProcessRunner {
 public:
  virtual ~ProcessRunner() = default;

  virtual Result<pid_t> spawn(const PodProcessSpec& spec) = 0;
  // Clock ticks since boot, 0 if there is no such (non-zombie) process.
  virtual uint64_t startTime(pid_t pid) = 0;
  virtual bool listensOnTcp(pid_t pid, uint16_t port) = 0;
  // Signals pid's process group (kill(-pid, sig)); a gone group is fine.
  virtual void signalGroup(pid_t pid, int sig) = 0;
  // A child of this process: reaps it if it has exited; block = wait for it.
  virtual ReapResult reap(pid_t pid, bool block) = 0;
  // An fd that poll(2) reports readable once pid has exited (Linux: a
  // pidfd), so that a caller can wait for an exit without polling on a
  // clock. It does not reap. ESRCH when there is no such process. The caller
  // opens it while it knows pid is still the process it means (our child
  // not yet reaped, or its start time checked): a pid is reused once reaped.
  virtual Result<UniqueFd> exitFd(pid_t pid) = 0;
};

class LinuxProcessRunner final : public ProcessRunner {
 public:
  Result<pid_t> spawn(const PodProcessSpec& spec) override;
  uint64_t startTime(pid_t pid) override;
  bool listensOnTcp(pid_t pid, uint16_t port) override;
  void signalGroup(pid_t pid, int sig) override;
  ReapResult reap(pid_t pid, bool block) override;
  Result<UniqueFd> exitFd(pid_t pid) override;
};

// pidfd_open(2) of pid; `what` names the process in the error.
Result<UniqueFd> openPidfd(pid_t pid, std::string_view what);

// The process-wide LinuxProcessRunner (stateless, lives forever).
ProcessRunner& linuxProcessRunner();

}  // namespace membrane::kernel
