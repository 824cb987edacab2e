// membrane-proxy: the L7 (HTTP) policy proxy. See docs/l7.md.
#include <arpa/inet.h>
#include <signal.h>
#include <sys/resource.h>

#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "src/proxy/control.h"
#include "src/proxy/proxy.h"

using namespace membrane;
using namespace membrane::proxy;

namespace {

// Many idle client connections (each 1-2 fds) must not run out of fds.
void raiseFdLimit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  rlim_t want = rl.rlim_max;
  if (want == RLIM_INFINITY || want > (1u << 20)) want = 1u << 20;
  if (rl.rlim_cur < want) {
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) spdlog::warn("cannot raise RLIMIT_NOFILE to {}", want);
  }
}

bool parseHostPort(const std::string& s, sockaddr_in* out) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  if (inet_pton(AF_INET, s.substr(0, colon).c_str(), &a.sin_addr) != 1) return false;
  int port = std::atoi(s.c_str() + colon + 1);
  if (port <= 0 || port > 65535) return false;
  a.sin_port = htons(static_cast<uint16_t>(port));
  *out = a;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "membrane-proxy: transparent HTTP/1.1 L7 policy proxy.\n"
      "Enforces the toPorts[].rules.http rules of CiliumNetworkPolicies on connections the datapath\n"
      "redirects to it (TPROXY): allowed requests go to the original destination from the client's own\n"
      "IP, denied ones get 403 \"Access denied\". membraned starts, supervises and configures it (rules,\n"
      "endpoint identities) through the control socket; you normally never run it by hand."};
  app.footer(
      "Control API (unix socket): PUT/GET /v1/config, GET /v1/stats, GET /v1/accesslog (stream), GET /v1/healthz.\n"
      "Details: docs/l7.md.\n\n"
      "Examples:\n"
      "  membraned                                   # starts membrane-proxy itself (--enable-l7-proxy)\n"
      "  membrane-proxy --config rules.json --no-transparent-listeners --no-transparent-upstream \\\n"
      "                 --original-dst 127.0.0.1:8080 --control-socket /tmp/p.sock   # a manual test run");
  std::string config_path, control_socket = "/var/run/membrane/proxy.sock", original_dst;
  ProxyOptions opts;
  bool no_transparent_upstream = false, no_transparent_listeners = false;
  int64_t header_timeout_ms = opts.header_timeout.count(), idle_timeout_ms = opts.idle_timeout.count(),
          connect_timeout_ms = opts.connect_timeout.count(), linger_timeout_ms = opts.linger_timeout.count();
  std::string log_level = "info", escaped_slashes = "reject";
  // A zero or negative timeout would expire every connection at once; a day
  // is far past any sane value and keeps the deadline arithmetic in range.
  const CLI::Range kTimeoutRange(int64_t{1}, int64_t{86400000});
  app.add_option("--config", config_path, "proxy config JSON file (re-read on SIGHUP)");
  app.add_option("--control-socket", control_socket, "unix socket of the control API")->capture_default_str();
  app.add_option("--listen-address", opts.listen_address, "address the listeners bind")->capture_default_str();
  app.add_flag("--no-transparent-upstream", no_transparent_upstream,
               "plain connect() upstream (no IP_TRANSPARENT, no source-IP preservation, no SO_MARK)");
  app.add_flag("--no-transparent-listeners", no_transparent_listeners, "listeners without IP_TRANSPARENT (no TPROXY)");
  app.add_option("--original-dst", original_dst,
                 "forward everything to IP:PORT instead of the socket's original destination (manual runs)");
  app.add_option("--header-timeout-ms", header_timeout_ms, "first byte to end of request headers")
      ->check(kTimeoutRange)
      ->capture_default_str();
  app.add_option("--idle-timeout-ms", idle_timeout_ms, "close connections idle this long")
      ->check(kTimeoutRange)
      ->capture_default_str();
  app.add_option("--connect-timeout-ms", connect_timeout_ms, "upstream connect timeout")
      ->check(kTimeoutRange)
      ->capture_default_str();
  app.add_option("--linger-timeout-ms", linger_timeout_ms,
                 "after the proxy closes a connection (400/408/close-delimited), read and discard what the client "
                 "still sends this long at most, so its response is not lost to a reset")
      ->check(kTimeoutRange)
      ->capture_default_str();
  app.add_option("--escaped-slashes", escaped_slashes,
                 "'%2F'/'%5C' in a request path: reject (400), keep (rules and server see them escaped) or "
                 "unescape-and-forward (decoded to '/' before matching and forwarding); docs/l7.md")
      ->check(CLI::IsMember({"reject", "keep", "unescape-and-forward"}))
      ->capture_default_str();
  app.add_option("--max-header-bytes", opts.limits.max_header_bytes, "request line + headers limit (431)")
      ->capture_default_str();
  app.add_option("--max-headers", opts.limits.max_headers, "header count limit (431)")->capture_default_str();
  app.add_option("--max-connections", opts.max_connections, "client connections at once")->capture_default_str();
  app.add_option("--log-level", log_level, "debug, info, warn, error")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  spdlog::set_level(spdlog::level::from_str(log_level));
  opts.transparent_upstream = !no_transparent_upstream;
  opts.transparent_listeners = !no_transparent_listeners;
  opts.header_timeout = std::chrono::milliseconds(header_timeout_ms);
  opts.idle_timeout = std::chrono::milliseconds(idle_timeout_ms);
  opts.connect_timeout = std::chrono::milliseconds(connect_timeout_ms);
  opts.linger_timeout = std::chrono::milliseconds(linger_timeout_ms);
  parseEscapedSlashes(escaped_slashes, &opts.limits.escaped_slashes);  // checked by IsMember above
  opts.buffer_size = std::max(opts.buffer_size, opts.limits.max_header_bytes + 4096);
  if (!original_dst.empty()) {
    sockaddr_in a{};
    if (!parseHostPort(original_dst, &a)) {
      std::fprintf(stderr, "membrane-proxy: --original-dst '%s': expected IPv4:PORT\n", original_dst.c_str());
      return 2;
    }
    opts.original_dst_override = a;
  }

  raiseFdLimit();
  // Signals are taken synchronously by this thread (sigwait below); every
  // other thread inherits the blocked mask.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGHUP);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto proxy = Proxy::create(opts);
  if (!proxy.ok()) {
    std::fprintf(stderr, "membrane-proxy: %s\n", proxy.error().message.c_str());
    return 1;
  }
  Proxy& px = **proxy;
  if (!config_path.empty()) {
    Status s = loadConfigFile(px, config_path);
    if (!s.ok()) {
      std::fprintf(stderr, "membrane-proxy: %s\n", s.error().message.c_str());
      return 1;
    }
  }
  ControlServer control(px, control_socket);
  if (Status s = control.start(); !s.ok()) {
    std::fprintf(stderr, "membrane-proxy: control socket: %s\n", s.error().message.c_str());
    return 1;
  }
  if (Status s = px.start(); !s.ok()) {
    std::fprintf(stderr, "membrane-proxy: %s\n", s.error().message.c_str());
    return 1;
  }
  spdlog::info("membrane-proxy running (config revision {}, control {})", px.config()->revision(), control_socket);
  for (;;) {
    int sig = 0;
    if (sigwait(&sigs, &sig) != 0) continue;
    if (sig == SIGHUP) {
      if (config_path.empty()) {
        spdlog::warn("SIGHUP: no --config file to re-read");
        continue;
      }
      Status s = loadConfigFile(px, config_path);
      if (s.ok()) spdlog::info("config reloaded: revision {}", px.config()->revision());
      else spdlog::error("config reload failed, keeping revision {}: {}", px.config()->revision(), s.error().message);
      continue;
    }
    spdlog::info("membrane-proxy stopping (signal {})", sig);
    break;
  }
  control.stop();
  px.stop();
  return 0;
}
