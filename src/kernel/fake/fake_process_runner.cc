#include "src/kernel/fake/fake_process_runner.h"

#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

namespace membrane::kernel {

Result<pid_t> FakeProcessRunner::spawn(const PodProcessSpec& spec) {
  if (spec.argv.empty()) return Error::invalid("spawn pod process: empty command");
  pid_t pid = 1000;
  while (procs_.count(pid)) ++pid;
  Process p;
  p.argv = spec.argv;
  p.netns_path = spec.netns_path;
  p.hostname = spec.hostname;
  p.start_time = 1000 + ++spawns_;
  procs_[pid] = p;
  children_.insert(pid);
  return pid;
}

void FakeProcessRunner::exit(pid_t pid, int code) {
  auto& p = procs_.at(pid);
  p.running = false;
  p.exit_code = code;
  p.listening.clear();
  if (auto it = exit_fds_.find(pid); it != exit_fds_.end()) {
    for (const auto& fd : it->second) {
      const uint64_t one = 1;
      (void)!::write(fd.get(), &one, sizeof one);
    }
    exit_fds_.erase(it);
  }
  // Not our child: nobody reaps it, init does.
  if (!children_.count(pid)) procs_.erase(pid);
}

uint64_t FakeProcessRunner::startTime(pid_t pid) {
  auto it = procs_.find(pid);
  return it == procs_.end() || !it->second.running ? 0 : it->second.start_time;
}

bool FakeProcessRunner::listensOnTcp(pid_t pid, uint16_t port) {
  auto it = procs_.find(pid);
  return it != procs_.end() && it->second.listening.count(port);
}

void FakeProcessRunner::signalGroup(pid_t pid, int sig) {
  auto it = procs_.find(pid);
  if (it == procs_.end() || !it->second.running || sig == 0) return;
  if (sig != SIGKILL && it->second.ignored.count(sig)) return;
  exit(pid, 128 + sig);
}

ReapResult FakeProcessRunner::reap(pid_t pid, bool block) {
  auto it = procs_.find(pid);
  if (it == procs_.end() || !children_.count(pid)) return {ReapResult::State::NotAChild, -1};
  if (it->second.running) {
    if (!block) return {ReapResult::State::Running, -1};
    exit(pid, 128 + SIGKILL);
  }
  int code = it->second.exit_code;
  procs_.erase(pid);
  children_.erase(pid);
  return {ReapResult::State::Exited, code};
}

Result<UniqueFd> FakeProcessRunner::exitFd(pid_t pid) {
  auto it = procs_.find(pid);
  if (it == procs_.end()) return Error(ESRCH, "fake exitFd: no process " + std::to_string(pid));
  UniqueFd fd(::eventfd(it->second.running ? 0 : 1, EFD_CLOEXEC));
  if (!fd.valid()) return Error::fromErrno(errno, "fake exitFd: eventfd");
  if (it->second.running) {
    UniqueFd keep(::dup(fd.get()));
    if (!keep.valid()) return Error::fromErrno(errno, "fake exitFd: dup");
    exit_fds_[pid].push_back(std::move(keep));
  }
  return fd;
}

}  // namespace membrane::kernel
