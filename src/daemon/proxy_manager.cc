#include "src/daemon/proxy_manager.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "src/api/http_client.h"
#include "src/endpoint/state_store.h"
#include "src/kernel/process_runner.h"

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
  if (!r.ok() || r->status != 200) return false;
  auto h = proxy::healthReplyFromJson(json::parse(r->body, nullptr, false));
  if (!h) spdlog::warn("L7 proxy on {}: {}", socket, h.error().message);
  return h.ok() && h->status == "ok";
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
    MutexLock lk(m->state_mu_);
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
  {
    MutexLock lk(state_mu_);
    pid_ = pid;
    child_ = true;
    adopted_ = false;
  }
  auto wrote = endpoint::writeFileAtomic(cfg_.pidfile, fmt::format("{}\n", pid));
  if (!wrote.ok()) spdlog::warn("L7 proxy pidfile: {}", wrote.error().message);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    if (healthy(cfg_.control_socket)) {
      spdlog::info("L7 proxy: started membrane-proxy pid {} ({})", pid, cfg_.control_socket);
      starts_.fetch_add(1);
      if (on_start_) on_start_();
      return okStatus();
    }
    int st = 0;
    if (::waitpid(pid, &st, WNOHANG) == pid) {
      MutexLock lk(state_mu_);
      pid_ = -1;
      return Error(EIO, fmt::format("membrane-proxy exited at start (status {}); see {}", st, cfg_.log_file));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return Error(ETIMEDOUT, fmt::format("membrane-proxy pid {} did not answer on {} within 5 s; see {}", pid,
                                      cfg_.control_socket, cfg_.log_file));
}

bool ProxyManager::alive() {
  MutexLock lk(state_mu_);  // a waitpid(WNOHANG) and two /proc reads: short
  if (pid_ <= 0) return false;
  if (child_) {
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) return false;  // reaped
  }
  return isOurProxy(pid_, cfg_.control_socket);
}

Result<UniqueFd> ProxyManager::exitFd() {
  const pid_t p = pid();
  if (p <= 0) return Error(ESRCH, "no membrane-proxy process");
  auto fd = kernel::openPidfd(p, "membrane-proxy");
  if (!fd) return fd.error();
  // Opened after the pid was read: make sure it still names our proxy (not a
  // successor spawned meanwhile, nor a recycled pid).
  if (!alive() || pid() != p) return Error(ESRCH, fmt::format("membrane-proxy pid {} is gone", p));
  return fd;
}

Status ProxyManager::ensureRunning() {
  if (alive()) return okStatus();
  spdlog::warn("L7 proxy pid {} is gone; starting a new one", pid());
  MB_TRY(spawn());
  std::string last;
  {
    MutexLock lk(state_mu_);
    last = last_config_;
  }
  if (!last.empty()) {
    api::HttpClient c(cfg_.control_socket, std::chrono::seconds(10));
    auto r = c.request("PUT", "/v1/config", last);
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
    auto e = proxy::errorReplyFromJson(json::parse(r->body, nullptr, false));
    return Error::invalid(fmt::format("membrane-proxy rejected the L7 config (HTTP {}): {}", r->status,
                                      e ? e->error : r->body));
  }
  auto ok = proxy::configReplyFromJson(json::parse(r->body, nullptr, false));
  if (!ok) return ok.error().wrap("push L7 config to membrane-proxy");
  MutexLock lk(state_mu_);
  last_config_ = std::move(body);
  return okStatus();
}

Result<proxy::StatsReply> ProxyManager::stats() const {
  api::HttpClient c(cfg_.control_socket, std::chrono::seconds(2));
  auto r = c.request("GET", "/v1/stats");
  if (!r) return r.error().wrap("membrane-proxy stats");
  if (r->status != 200) return Error(EIO, fmt::format("membrane-proxy stats: HTTP {}", r->status));
  auto j = json::parse(r->body, nullptr, false);
  if (j.is_discarded()) return Error(EIO, "membrane-proxy stats: not JSON");
  return proxy::statsFromJson(j);
}

Result<Wakeup> Wakeup::create() {
  UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!fd.valid()) return Error::fromErrno(errno, "eventfd");
  return Wakeup(std::move(fd));
}

void Wakeup::notify() const {
  const uint64_t one = 1;
  (void)!::write(fd_.get(), &one, sizeof one);  // EAGAIN only at a count of 2^64-2: still readable
}

void Wakeup::drain() const {
  uint64_t n = 0;
  (void)!::read(fd_.get(), &n, sizeof n);
}

namespace {

// GET /v1/accesslog on a fresh connection; invalid fd if the proxy is not there.
UniqueFd openAccessLog(const std::string& control_socket) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", control_socket.c_str());
  if (!fd.valid() || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return UniqueFd();
  const std::string req = "GET /v1/accesslog HTTP/1.1\r\nHost: membrane-proxy\r\n\r\n";
  if (::send(fd.get(), req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) return UniqueFd();
  return fd;
}

}  // namespace

void ProxyManager::relayAccessLog(const Wakeup& wake, const RelayHooks& hooks) const {
  auto waitForWake = [&] {
    pollfd p{wake.fd(), POLLIN, 0};
    while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
    wake.drain();
  };
  while (!hooks.stopping()) {
    // Only while someone watches l7 events: the proxy formats access-log
    // lines only for subscribers, and that is a cost on every request.
    if (!hooks.wanted()) {
      waitForWake();
      continue;
    }
    const uint64_t started = starts();
    UniqueFd fd = openAccessLog(cfg_.control_socket);
    bool retry_now = false;  // the stream ended only because we let go of it
    if (fd.valid()) {
      // Chunked body of NDJSON lines: headers, then (size CRLF data CRLF)*.
      std::string in, lines;
      bool headers_done = false, live = false;
      auto setLive = [&](bool v) {
        if (live == v) return;
        live = v;
        if (hooks.on_live) hooks.on_live(v);
      };
      for (;;) {
        pollfd pfd[2] = {{fd.get(), POLLIN, 0}, {wake.fd(), POLLIN, 0}};
        if (::poll(pfd, 2, -1) < 0) {
          if (errno == EINTR) continue;
          break;
        }
        if (pfd[1].revents) {
          wake.drain();
          if (hooks.stopping()) return;
          if (!hooks.wanted()) {
            retry_now = true;  // back to waiting for a watcher
            break;
          }
          if (starts() != started) {
            retry_now = true;  // a new proxy: follow it
            break;
          }
        }
        if (!pfd[0].revents) continue;
        char buf[16384];
        ssize_t r = ::read(fd.get(), buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        in.append(buf, static_cast<size_t>(r));
        if (!headers_done) {
          auto end = in.find("\r\n\r\n");
          if (end == std::string::npos) continue;
          if (in.compare(0, 12, "HTTP/1.1 200") != 0) break;
          in.erase(0, end + 4);
          headers_done = true;
        }
        bool last = false;
        for (;;) {
          auto crlf = in.find("\r\n");
          if (crlf == std::string::npos) break;
          size_t size = std::strtoul(in.substr(0, crlf).c_str(), nullptr, 16);
          if (in.size() < crlf + 2 + size + 2) break;
          lines.append(in, crlf + 2, size);
          in.erase(0, crlf + 2 + size + 2);
          if (size == 0) {
            last = true;
            break;
          }
        }
        size_t nl;
        while ((nl = lines.find('\n')) != std::string::npos) {
          std::string_view line = std::string_view(lines).substr(0, nl);
          setLive(true);
          if (line != R"({"type":"subscribed"})") hooks.on_line(line);
          lines.erase(0, nl + 1);
        }
        if (last) break;
      }
      setLive(false);
    }
    // The proxy went away (or refused): a restart notification (setOnStart)
    // wakes us; if one came while we were still reading, it is already here.
    if (retry_now || starts() != started) continue;
    waitForWake();
  }
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
