#include "src/daemon/proxy_manager.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "src/api/http_client.h"
#include "src/endpoint/state_store.h"

namespace membrane::daemon {
namespace {

using nlohmann::json;

std::string readAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// True if pid is a live (not zombie) membrane-proxy serving `control_socket`.
bool isOurProxy(pid_t pid, const std::string& control_socket) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  std::string stat = readAll(fmt::format("/proc/{}/stat", pid));
  auto rp = stat.rfind(')');
  if (rp == std::string::npos || rp + 2 >= stat.size() || stat[rp + 2] == 'Z') return false;
  std::string cmdline = readAll(fmt::format("/proc/{}/cmdline", pid));
  std::vector<std::string> args;
  size_t start = 0;
  for (size_t i = 0; i <= cmdline.size(); ++i)
    if (i == cmdline.size() || cmdline[i] == '\0') {
      if (i > start) args.push_back(cmdline.substr(start, i - start));
      start = i + 1;
    }
  if (args.empty() || args[0].find("membrane-proxy") == std::string::npos) return false;
  for (size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == "--control-socket" && args[i + 1] == control_socket) return true;
  return false;
}

bool healthy(const std::string& socket) {
  api::HttpClient c(socket, std::chrono::seconds(2));
  auto r = c.request("GET", "/v1/healthz");
  return r.ok() && r->status == 200;
}

pid_t readPid(const std::string& pidfile) {
  std::string s = readAll(pidfile);
  return static_cast<pid_t>(std::atoi(s.c_str()));
}

}  // namespace

Result<std::unique_ptr<ProxyManager>> ProxyManager::start(const ProxyManagerConfig& cfg) {
  std::unique_ptr<ProxyManager> m(new ProxyManager(cfg));
  pid_t pid = readPid(cfg.pidfile);
  if (isOurProxy(pid, cfg.control_socket) && healthy(cfg.control_socket)) {
    m->pid_ = pid;
    m->adopted_ = true;
    spdlog::info("L7 proxy: adopted running membrane-proxy pid {} ({})", pid, cfg.control_socket);
    return m;
  }
  // A proxy we did not start (another agent's, or one whose pidfile is gone)
  // answers there: never take its socket over.
  if (healthy(cfg.control_socket))
    return Error::exists(fmt::format(
        "a membrane-proxy not recorded in {} already serves {} (another agent on this host?): give each agent "
        "its own --proxy-control-socket, --proxy-port-range, --proxy-route-table, --proxy-rule-priority and "
        "--proxy-iptables-chain, or stop that proxy",
        cfg.pidfile, cfg.control_socket));
  MB_TRY(m->spawn());
  return m;
}

Status ProxyManager::spawn() {
  if (::access(cfg_.binary.c_str(), X_OK) != 0)
    return Error::fromErrno(errno, fmt::format("L7 proxy binary {} (build it, or give --proxy-binary)", cfg_.binary));
  ::unlink(cfg_.control_socket.c_str());
  std::vector<std::string> argv{cfg_.binary,
                                "--control-socket",
                                cfg_.control_socket,
                                "--log-level",
                                "info",
                                "--header-timeout-ms",
                                std::to_string(cfg_.header_timeout_ms),
                                "--idle-timeout-ms",
                                std::to_string(cfg_.idle_timeout_ms),
                                "--escaped-slashes",
                                cfg_.escaped_slashes};
  int logfd = ::open(cfg_.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (logfd < 0) return Error::fromErrno(errno, "open " + cfg_.log_file);
  // Everything the child needs is prepared here: after fork() in a threaded
  // process only async-signal-safe calls are allowed (no malloc).
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    ::close(logfd);
    return Error::fromErrno(e, "fork membrane-proxy");
  }
  if (pid == 0) {
    // Own session: the agent's stop (or its process group being signalled)
    // must not take the proxy down; established proxied flows live on.
    ::setsid();
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(logfd, 1);
    ::dup2(logfd, 2);
    // Nothing of the agent's (API socket, BPF fds, metrics port) leaks into
    // the long-lived proxy, whatever their CLOEXEC flags.
    ::close_range(3, ~0U, 0);
    ::execv(cargv[0], cargv.data());
    ::_exit(127);
  }
  ::close(logfd);
  pid_ = pid;
  child_ = true;
  adopted_ = false;
  auto wrote = endpoint::writeFileAtomic(cfg_.pidfile, fmt::format("{}\n", pid));
  if (!wrote.ok()) spdlog::warn("L7 proxy pidfile: {}", wrote.error().message);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    if (healthy(cfg_.control_socket)) {
      spdlog::info("L7 proxy: started membrane-proxy pid {} ({})", pid, cfg_.control_socket);
      return okStatus();
    }
    int st = 0;
    if (::waitpid(pid, &st, WNOHANG) == pid) {
      pid_ = -1;
      return Error(EIO, fmt::format("membrane-proxy exited at start (status {}); see {}", st, cfg_.log_file));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return Error(ETIMEDOUT, fmt::format("membrane-proxy pid {} did not answer on {} within 5 s; see {}", pid,
                                      cfg_.control_socket, cfg_.log_file));
}

bool ProxyManager::alive() {
  if (pid_ <= 0) return false;
  if (child_) {
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) return false;  // reaped
  }
  return isOurProxy(pid_, cfg_.control_socket);
}

Status ProxyManager::ensureRunning() {
  if (alive()) return okStatus();
  spdlog::warn("L7 proxy pid {} is gone; starting a new one", pid_);
  MB_TRY(spawn());
  if (!last_config_.empty()) {
    api::HttpClient c(cfg_.control_socket, std::chrono::seconds(10));
    auto r = c.request("PUT", "/v1/config", last_config_);
    if (!r) return r.error().wrap("re-push L7 config");
  }
  return okStatus();
}

Status ProxyManager::push(const json& config) {
  std::string body = config.dump();
  api::HttpClient c(cfg_.control_socket, std::chrono::seconds(10));
  auto r = c.request("PUT", "/v1/config", body);
  if (!r) return r.error().wrap("push L7 config to membrane-proxy");
  if (r->status != 200) {
    auto j = json::parse(r->body, nullptr, false);
    std::string msg = j.is_object() ? j.value("error", r->body) : r->body;
    return Error::invalid(fmt::format("membrane-proxy rejected the L7 config: {}", msg));
  }
  last_config_ = std::move(body);
  return okStatus();
}

Result<json> ProxyManager::stats() const {
  api::HttpClient c(cfg_.control_socket, std::chrono::seconds(2));
  auto r = c.request("GET", "/v1/stats");
  if (!r) return r.error().wrap("membrane-proxy stats");
  if (r->status != 200) return Error(EIO, fmt::format("membrane-proxy stats: HTTP {}", r->status));
  auto j = json::parse(r->body, nullptr, false);
  if (j.is_discarded()) return Error(EIO, "membrane-proxy stats: not JSON");
  return j;
}

Status ProxyManager::followAccessLog(const std::function<bool(std::string_view)>& on_line) const {
  api::HttpClient c(cfg_.control_socket, std::chrono::hours(24 * 365));
  return c.stream("/v1/accesslog", on_line);
}

Status ProxyManager::stopAndRemove(const ProxyManagerConfig& cfg) {
  pid_t pid = readPid(cfg.pidfile);
  if (isOurProxy(pid, cfg.control_socket)) {
    ::kill(pid, SIGTERM);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (isOurProxy(pid, cfg.control_socket) && std::chrono::steady_clock::now() < deadline) {
      ::waitpid(pid, nullptr, WNOHANG);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (isOurProxy(pid, cfg.control_socket)) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
  ::unlink(cfg.pidfile.c_str());
  ::unlink(cfg.control_socket.c_str());
  return okStatus();
}

}  // namespace membrane::daemon
