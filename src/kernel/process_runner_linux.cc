#include <signal.h>
#include <sys/wait.h>

#include <cerrno>

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

ProcessRunner& linuxProcessRunner() {
  static LinuxProcessRunner instance;
  return instance;
}

}  // namespace membrane::kernel
