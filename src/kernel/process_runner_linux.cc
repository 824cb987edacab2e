#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "src/kernel/process_runner.h"

namespace membrane::kernel {

Result<pid_t> LinuxProcessRunner::spawn(const PodProcessSpec& spec) { return spawnPodProcess(spec); }
uint64_t LinuxProcessRunner::startTime(pid_t pid) { return processStartTime(pid); }
bool LinuxProcessRunner::listensOnTcp(pid_t pid, uint16_t port) { return kernel::listensOnTcp(pid, port); }
void LinuxProcessRunner::signalGroup(pid_t pid, int sig) { ::kill(-pid, sig); }

ReapResult LinuxProcessRunner::reap(pid_t pid, bool block) {
  int status = 0;
  pid_t r = ::waitpid(pid, &status, block ? 0 : WNOHANG);
  if (r == pid)
    return {ReapResult::State::Exited, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status)};
  if (r < 0 && errno == ECHILD) return {ReapResult::State::NotAChild, -1};
  return {ReapResult::State::Running, -1};
}

Result<UniqueFd> LinuxProcessRunner::exitFd(pid_t pid) { return openPidfd(pid, "pod process"); }

Result<UniqueFd> openPidfd(pid_t pid, std::string_view what) {
  const std::string desc = "pidfd_open " + std::string(what) + " pid " + std::to_string(pid);
  if (pid <= 0) return Error(ESRCH, desc + ": no such process");
  // The raw syscall: glibc 2.36's <sys/pidfd.h> lacks extern "C" (C++ callers fail to link).
  UniqueFd fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!fd.valid()) return Error::fromErrno(errno, desc);
  return fd;
}

ProcessRunner& linuxProcessRunner() {
  static LinuxProcessRunner instance;
  return instance;
}

}  // namespace membrane::kernel
