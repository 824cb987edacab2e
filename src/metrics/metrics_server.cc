#include <arpa/inet.h>

#include <CivetServer.h>
#include <civetweb.h>

#include <cerrno>
#include <charconv>
#include <exception>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "membrane/metrics.h"

namespace membrane::metrics {
namespace {

// civetweb reports why mg_start failed only through its log callback, on the
// thread that calls the CivetServer constructor ("cannot bind to
// 127.0.0.1:9962: 98 (Address already in use)", then "Failed to setup server
// ports"); keep them all.
thread_local std::string t_civetweb_errors;

int logCivetweb(const mg_connection*, const char* message) {
  if (!t_civetweb_errors.empty()) t_civetweb_errors += "; ";
  t_civetweb_errors += message;
  spdlog::debug("metrics server (civetweb): {}", message);
  return 1;  // handled: keep civetweb from writing to stderr itself
}

// --prometheus-serve-addr syntax ([host]:port, Go's) -> civetweb's
// listening_ports syntax (no host = all interfaces).
Result<std::string> toListeningPorts(const std::string& addr) {
  auto colon = addr.rfind(':');
  if (colon == std::string::npos)
    return Error::invalid(fmt::format("metrics address '{}': expected [host]:port, e.g. :9962", addr));
  std::string host = addr.substr(0, colon), port_str = addr.substr(colon + 1);
  unsigned port = 0;
  auto [p, ec] = std::from_chars(port_str.data(), port_str.data() + port_str.size(), port);
  if (port_str.empty() || ec != std::errc() || p != port_str.data() + port_str.size() || port > 65535)
    return Error::invalid(fmt::format("metrics address '{}': port '{}' is not a number 0-65535", addr, port_str));
  if (host.empty()) return std::to_string(port);
  if (host == "localhost") host = "127.0.0.1";
  in_addr a4{};
  in6_addr a6{};
  bool ok = inet_pton(AF_INET, host.c_str(), &a4) == 1 ||
            (host.size() > 2 && host.front() == '[' && host.back() == ']' &&
             inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &a6) == 1);
  if (!ok)
    return Error::invalid(fmt::format(
        "metrics address '{}': host must be an IPv4 address, [IPv6] address, localhost or empty", addr));
  return host + ":" + std::to_string(port);
}

class MetricsHandler : public CivetHandler {
 public:
  explicit MetricsHandler(AgentMetrics& metrics) : metrics_(metrics) {}

  bool handleGet(CivetServer*, mg_connection* conn) override {
    std::string body;
    try {
      body = metrics_.renderText();
    } catch (const std::exception& e) {
      // Nothing in renderText throws by design, but a civetweb worker must
      // never let an exception escape into C code.
      spdlog::error("metrics: scrape failed: {}", e.what());
      mg_send_http_error(conn, 500, "%s", "scrape failed");
      return true;
    }
    mg_printf(conn,
              "HTTP/1.1 200 OK\r\n"
              "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
              "Content-Length: %zu\r\n"
              "Connection: close\r\n\r\n",
              body.size());
    mg_write(conn, body.data(), body.size());
    return true;
  }

 private:
  AgentMetrics& metrics_;
};

}  // namespace

struct MetricsServer::Impl {
  explicit Impl(AgentMetrics& m) : handler(m) {}
  MetricsHandler handler;             // outlives server (declared first, destroyed last)
  std::unique_ptr<CivetServer> server;
  int port = 0;
};

MetricsServer::MetricsServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

MetricsServer::~MetricsServer() {
  // Stop the workers before the handler they call goes away.
  if (impl_) impl_->server.reset();
}

int MetricsServer::port() const { return impl_->port; }

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(const std::string& addr, AgentMetrics& metrics) {
  if (addr.empty()) return std::unique_ptr<MetricsServer>();
  auto ports = toListeningPorts(addr);
  if (!ports.ok()) return ports.error();

  auto impl = std::make_unique<Impl>(metrics);
  CivetCallbacks callbacks{};
  callbacks.log_message = logCivetweb;
  // Two workers: Prometheus scrapes one at a time; the second keeps a slow
  // or stuck client from blocking it.
  std::vector<std::string> options{"listening_ports", *ports, "num_threads", "2", "request_timeout_ms", "10000"};
  t_civetweb_errors.clear();
  try {
    impl->server = std::make_unique<CivetServer>(options, &callbacks);
  } catch (const std::exception& e) {
    // civetweb throws CivetException; it must not cross our module boundary.
    const std::string why = t_civetweb_errors.empty() ? std::string(e.what()) : t_civetweb_errors;
    if (why.find("Address already in use") != std::string::npos)
      return Error(EADDRINUSE, fmt::format("cannot serve metrics on {}: address in use — pass "
                                           "--prometheus-serve-addr with another port, or empty to disable",
                                           addr));
    return Error(EADDRNOTAVAIL, fmt::format("cannot serve metrics on {}: {} — pass --prometheus-serve-addr "
                                            "with another address, or empty to disable",
                                            addr, why));
  }
  impl->server->addHandler("/metrics", impl->handler);
  auto listening = impl->server->getListeningPorts();
  impl->port = listening.empty() ? 0 : listening.front();
  spdlog::info("metrics: serving /metrics on {} (port {})", addr, impl->port);
  return std::unique_ptr<MetricsServer>(new MetricsServer(std::move(impl)));
}

}  // namespace membrane::metrics
