#include "src/daemon/instance.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

namespace membrane::daemon {
namespace {

bool validName(const std::string& n) {
  if (n.empty() || n.size() > 10 || n.front() == '-') return false;
  for (char c : n)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  return true;
}

// A lock file name for a resource value: printable, no '/'.
std::string lockFileName(const std::string& resource, const std::string& value) {
  std::string out = resource + "=";
  for (unsigned char c : value) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
        c == '.')
      out += static_cast<char>(c);
    else
      out += fmt::format("%{:02X}", c);
  }
  return out + ".lock";
}

// "pid 1234 (membraned --instance a ...)" from the pid a lock file holds.
std::string describeOwner(int fd) {
  char buf[32] = {};
  ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
  if (n <= 0) return "a process that has not written its pid yet";
  const long pid = std::strtol(buf, nullptr, 10);
  std::ifstream f(fmt::format("/proc/{}/cmdline", pid), std::ios::binary);
  std::string cmd((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  for (char& c : cmd)
    if (c == '\0') c = ' ';
  while (!cmd.empty() && cmd.back() == ' ') cmd.pop_back();
  if (cmd.size() > 200) cmd = cmd.substr(0, 200) + "...";
  return cmd.empty() ? fmt::format("pid {}", pid) : fmt::format("pid {} ({})", pid, cmd);
}

}  // namespace

unsigned instanceSlot(const std::string& name) {
  uint32_t h = 2166136261u;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 16777619u;
  return 1 + h % 250;
}

Status applyInstance(Config& cfg, const std::string& name, const std::set<std::string>& explicit_flags) {
  if (!validName(name))
    return Error::invalid(fmt::format(
        "--instance '{}': use 1-10 characters of a-z, 0-9 and '-', not starting with '-' (it becomes part of "
        "device, chain and path names)",
        name));
  const unsigned slot = instanceSlot(name);
  auto set = [&](const char* flag, auto& field, auto value) {
    if (!explicit_flags.count(flag)) field = value;
  };
  std::string upper;
  for (char c : name) upper += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  const std::string run = "/var/run/membrane-" + name;
  set("--api-socket", cfg.api_socket, run + "/membrane.sock");
  set("--state-dir", cfg.state_dir, "/var/lib/membrane-" + name);
  set("--bpf-root", cfg.bpf_root, "/sys/fs/bpf/membrane-" + name);
  set("--host-device", cfg.host_device, "mb_" + name);  // <= 13 bytes: IFNAMSIZ is 16
  // /24s next to the defaults (10.200.0.0/16, 10.96.0.0/16), never inside them.
  set("--pod-cidr", cfg.pod_cidr, fmt::format("10.201.{}.0/24", slot - 1));
  set("--service-cidr", cfg.service_cidr, fmt::format("10.97.{}.0/24", slot - 1));
  set("--prometheus-serve-addr", cfg.prometheus_serve_addr, fmt::format(":{}", 9970 + slot));
  set("--proxy-control-socket", cfg.proxy_control_socket, run + "/proxy.sock");
  set("--proxy-port-range", cfg.proxy_port_range, fmt::format("{}-{}", 15001 + 2 * slot, 15002 + 2 * slot));
  set("--proxy-route-table", cfg.proxy_route_table, 2004u + slot);
  set("--proxy-rule-priority", cfg.proxy_rule_priority, 9u + slot);
  set("--proxy-iptables-chain", cfg.proxy_iptables_chain, "MEMBRANE_" + upper + "_mangle");
  return okStatus();
}

std::vector<std::pair<std::string, std::string>> OwnershipLocks::resources(const Config& cfg) {
  // Named after their flags, so a refusal can say which flag to change.
  std::vector<std::pair<std::string, std::string>> r{
      {"state-dir", cfg.state_dir},     {"bpf-root", cfg.bpf_root},     {"host-device", cfg.host_device},
      {"api-socket", cfg.api_socket},   {"pod-cidr", cfg.pod_cidr},     {"service-cidr", cfg.service_cidr},
  };
  if (!cfg.prometheus_serve_addr.empty()) r.push_back({"prometheus-serve-addr", cfg.prometheus_serve_addr});
  if (cfg.enable_l7_proxy) {
    r.push_back({"proxy-control-socket", cfg.proxy_control_socket});
    r.push_back({"proxy-port-range", cfg.proxy_port_range});
    r.push_back({"proxy-route-table", std::to_string(cfg.proxy_route_table)});
    r.push_back({"proxy-rule-priority", std::to_string(cfg.proxy_rule_priority)});
    r.push_back({"proxy-iptables-chain", cfg.proxy_iptables_chain});
  }
  return r;
}

OwnershipLocks::~OwnershipLocks() {
  for (const Held& h : held_)
    if (h.fd) ::unlink(h.path.c_str());  // still locked: nobody else holds it meanwhile
}

Result<OwnershipLocks> OwnershipLocks::acquire(const Config& cfg, const std::string& lock_dir) {
  // mkdir -p (two levels at most: /run/membrane/locks).
  const std::string parent = lock_dir.substr(0, lock_dir.rfind('/'));
  if (!parent.empty()) ::mkdir(parent.c_str(), 0755);
  if (::mkdir(lock_dir.c_str(), 0755) != 0 && errno != EEXIST)
    return Error::fromErrno(errno, fmt::format("create the lock directory {}", lock_dir));
  OwnershipLocks locks;
  for (const auto& [resource, value] : resources(cfg)) {
    const std::string path = lock_dir + "/" + lockFileName(resource, value);
    UniqueFd fd;
    for (int attempt = 0;; ++attempt) {
      fd.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
      if (!fd) return Error::fromErrno(errno, fmt::format("open the lock file {}", path));
      if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK) return Error::fromErrno(errno, fmt::format("lock {}", path));
        return Error(EBUSY, fmt::format("{} {} is in use by another membraned: {}. Stop that agent first, or give "
                                        "this one its own names (--instance NAME, or the --{} flag)",
                                        resource, value, describeOwner(fd.get()), resource));
      }
      // The owner before us may have removed the file on its way out after
      // we opened it: then our lock is on a file nobody else will find.
      struct stat mine {}, there {};
      if (::fstat(fd.get(), &mine) == 0 && ::stat(path.c_str(), &there) == 0 && mine.st_ino == there.st_ino &&
          mine.st_dev == there.st_dev)
        break;
      if (attempt == 3) return Error(EAGAIN, fmt::format("lock {}: the file keeps being replaced", path));
    }
    const std::string pid = std::to_string(getpid()) + "\n";
    if (::ftruncate(fd.get(), 0) != 0 || ::pwrite(fd.get(), pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size()))
      return Error::fromErrno(errno, fmt::format("write the lock file {}", path));
    locks.held_.push_back({path, std::move(fd)});
  }
  return locks;
}

}  // namespace membrane::daemon
