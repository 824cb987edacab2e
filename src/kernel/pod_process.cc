#include "src/kernel/pod_process.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "membrane/unique_fd.h"

namespace membrane::kernel {
namespace {

// What the child reports through the pipe when a step fails before exec.
struct ChildFailure {
  int step;
  int err;
};
enum Step { kSetsid = 1, kStdio, kSetns, kUnshare, kPrivate, kBindHosts, kBindResolv, kHostname, kChdir, kExec };

const char* stepName(int s) {
  switch (s) {
    case kSetsid: return "setsid";
    case kStdio: return "redirect stdout/stderr to the log file";
    case kSetns: return "enter the pod's network namespace";
    case kUnshare: return "unshare mount/UTS namespaces";
    case kPrivate: return "make / a slave mount";
    case kBindHosts: return "bind-mount the pod's /etc/hosts";
    case kBindResolv: return "bind-mount the pod's /etc/resolv.conf";
    case kHostname: return "set the hostname";
    case kChdir: return "chdir /";
    case kExec: return "exec";
    default: return "?";
  }
}

[[noreturn]] void childFail(int fd, int step) {
  ChildFailure f{step, errno};
  ssize_t n = ::write(fd, &f, sizeof f);
  (void)n;
  _exit(127);
}

}  // namespace

Result<pid_t> spawnPodProcess(const PodProcessSpec& spec) {
  if (spec.argv.empty()) return Error::invalid("pod process: empty command");
  UniqueFd log(::open(spec.log_file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640));
  if (!log) return Error::fromErrno(errno, "open log file " + spec.log_file);
  UniqueFd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!devnull) return Error::fromErrno(errno, "open /dev/null");
  UniqueFd netns(::open(spec.netns_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!netns) return Error::fromErrno(errno, "open netns " + spec.netns_path);
  int pfd[2];
  if (::pipe2(pfd, O_CLOEXEC) != 0) return Error::fromErrno(errno, "pipe");
  UniqueFd rd(pfd[0]), wr(pfd[1]);
  // Everything the child needs, prepared before fork (no allocation after).
  std::vector<char*> argv, envp;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  // The command is looked up in the POD's PATH (spec.env), as a container
  // runtime does, not in the agent's: glibc's execvpe searches the caller's
  // PATH, and an agent started from a shell with e.g. pyenv first in PATH
  // would run that interpreter in the pod. Resolved here, before fork.
  std::string exe = spec.argv.empty() ? std::string() : spec.argv[0];
  if (!exe.empty() && exe.find('/') == std::string::npos) {
    std::string path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    for (const auto& e : spec.env)
      if (e.rfind("PATH=", 0) == 0) path = e.substr(5);
    size_t start = 0;
    while (start <= path.size()) {
      size_t end = path.find(':', start);
      if (end == std::string::npos) end = path.size();
      std::string dir = path.substr(start, end - start);
      std::string cand = (dir.empty() ? std::string(".") : dir) + "/" + exe;
      if (::access(cand.c_str(), X_OK) == 0) {
        exe = cand;
        break;
      }
      start = end + 1;
    }
  }
  pid_t pid = ::fork();
  if (pid < 0) return Error::fromErrno(errno, "fork");
  if (pid == 0) {
    int w = wr.get();
    // The agent blocks SIGTERM/SIGINT (it waits for them with sigwait) and
    // ignores SIGPIPE; both are inherited across exec. A pod's command gets
    // the defaults, or `kill -TERM` would not stop it.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);
    if (::setsid() < 0) childFail(w, kSetsid);
    if (::dup2(devnull.get(), 0) < 0 || ::dup2(log.get(), 1) < 0 || ::dup2(log.get(), 2) < 0) childFail(w, kStdio);
    if (::setns(netns.get(), CLONE_NEWNET) != 0) childFail(w, kSetns);
    if (::unshare(CLONE_NEWNS | CLONE_NEWUTS) != 0) childFail(w, kUnshare);
    // Slave, not private: mounts made later on the node still propagate in,
    // ours never propagate out.
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0) childFail(w, kPrivate);
    if (!spec.hosts_file.empty() && ::mount(spec.hosts_file.c_str(), "/etc/hosts", nullptr, MS_BIND, nullptr) != 0)
      childFail(w, kBindHosts);
    if (!spec.resolv_file.empty() &&
        ::mount(spec.resolv_file.c_str(), "/etc/resolv.conf", nullptr, MS_BIND, nullptr) != 0)
      childFail(w, kBindResolv);
    if (!spec.hostname.empty() && ::sethostname(spec.hostname.c_str(), spec.hostname.size()) != 0)
      childFail(w, kHostname);
    if (::chdir("/") != 0) childFail(w, kChdir);
    ::execve(exe.c_str(), argv.data(), envp.data());
    childFail(w, kExec);
  }
  wr.reset();
  ChildFailure f{};
  ssize_t n;
  do {
    n = ::read(rd.get(), &f, sizeof f);
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof f)) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    std::string what = std::string("start pod command '") + spec.argv[0] + "': " + stepName(f.step);
    if (f.step == kExec && f.err == ENOENT) return Error(ENOENT, what + ": command not found in PATH");
    return Error::fromErrno(f.err, what);
  }
  return pid;
}

uint64_t processStartTime(pid_t pid) {
  if (pid <= 0) return 0;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string s;
  if (!std::getline(in, s)) return 0;
  // comm (field 2) may contain spaces and ')': fields after the last ')'.
  auto rp = s.rfind(')');
  if (rp == std::string::npos) return 0;
  std::istringstream rest(s.substr(rp + 2));
  std::string field;
  // rest starts at field 3 (state); start time is field 22.
  for (int i = 3; i <= 22; ++i) {
    if (!(rest >> field)) return 0;
    if (i == 3 && field == "Z") return 0;
  }
  return std::strtoull(field.c_str(), nullptr, 10);
}

bool listensOnTcp(pid_t pid, uint16_t port) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/net/tcp");
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string sl, local, remote, st;
    if (!(ls >> sl >> local >> remote >> st)) continue;
    auto colon = local.find(':');
    if (colon == std::string::npos) continue;
    if (st == "0A" && std::strtoul(local.c_str() + colon + 1, nullptr, 16) == port) return true;
  }
  return false;
}

Status enterPodForExec(const std::string& netns_path, const std::string& hosts_file, const std::string& resolv_file,
                       const std::string& hostname) {
  UniqueFd fd(::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Error::fromErrno(errno, "enter netns " + netns_path + ": open");
  if (::setns(fd.get(), CLONE_NEWNET) != 0) return Error::fromErrno(errno, "enter netns " + netns_path + ": setns");
  if (!hostname.empty()) {
    if (::unshare(CLONE_NEWUTS) != 0) return Error::fromErrno(errno, "unshare UTS namespace");
    if (::sethostname(hostname.c_str(), hostname.size()) != 0) return Error::fromErrno(errno, "set hostname " + hostname);
  }
  if (hosts_file.empty() && resolv_file.empty()) return okStatus();
  if (::unshare(CLONE_NEWNS) != 0) return Error::fromErrno(errno, "unshare mount namespace");
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0) return Error::fromErrno(errno, "make / a slave mount");
  if (!hosts_file.empty() && ::mount(hosts_file.c_str(), "/etc/hosts", nullptr, MS_BIND, nullptr) != 0)
    return Error::fromErrno(errno, "bind-mount " + hosts_file + " on /etc/hosts");
  if (!resolv_file.empty() && ::mount(resolv_file.c_str(), "/etc/resolv.conf", nullptr, MS_BIND, nullptr) != 0)
    return Error::fromErrno(errno, "bind-mount " + resolv_file + " on /etc/resolv.conf");
  return okStatus();
}

}  // namespace membrane::kernel
