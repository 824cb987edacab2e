// Pod processes: a workload's command run inside the pod's network namespace
// with its own view of /etc/hosts and /etc/resolv.conf (a private mount
// namespace with bind mounts, as `ip netns exec` does with /etc/netns/NAME)
// and its own hostname (UTS namespace), as the leader of its own session and
// process group, so that it outlives the agent and is stopped as a group.
//
// Contract
// - spawnPodProcess() forks; the child only makes system calls before
//   execvp (safe in a multi-threaded parent). Failures in the child before
//   exec (setns, mount, command not found) come back as the Error of
//   spawnPodProcess, through a close-on-exec pipe: on success the process
//   runs the command.
// - stdout and stderr are appended to log_file; stdin is /dev/null.
// - The caller owns the child: it must reap it (waitpid) or, after an agent
//   restart, watch it with processStartTime().
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "membrane/result.h"

namespace membrane::kernel {

struct PodProcessSpec {
  std::vector<std::string> argv;  // argv[0] is searched in PATH
  std::vector<std::string> env;   // "K=V", the whole environment
  std::string netns_path;         // /var/run/netns/<name>
  std::string hosts_file;         // bound over /etc/hosts ("" = host's)
  std::string resolv_file;        // bound over /etc/resolv.conf ("" = host's)
  std::string hostname;           // "" = keep the node's
  std::string log_file;
};

Result<pid_t> spawnPodProcess(const PodProcessSpec& spec);

// Start time of pid in clock ticks since boot (/proc/<pid>/stat field 22),
// 0 when there is no such process (or it is a zombie). With the pid it
// identifies a process across pid reuse.
uint64_t processStartTime(pid_t pid);

// True when a socket of pid's network namespace listens on TCP port
// (/proc/<pid>/net/tcp, which shows the namespace of that process).
bool listensOnTcp(pid_t pid, uint16_t port);

// For `membrane exec` only (single-threaded, right before execvp): enters the
// pod's network namespace and gives the calling process the pod's
// /etc/hosts and /etc/resolv.conf view and hostname (empty = keep the node's).
Status enterPodForExec(const std::string& netns_path, const std::string& hosts_file, const std::string& resolv_file,
                       const std::string& hostname = "");

}  // namespace membrane::kernel
