#include "src/proxy/control.h"

#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "src/api/http_server.h"
#include "src/proxy/control_protocol.h"

namespace membrane::proxy {

Status applyConfigText(Proxy& proxy, std::string_view text) {
  auto cfg = ProxyConfig::parse(text);
  if (!cfg.ok()) {
    proxy.stats().config_errors.fetch_add(1);
    return cfg.error();
  }
  return proxy.applyConfig(std::move(cfg).value());
}

Status loadConfigFile(Proxy& proxy, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error::fromErrno(errno, "read proxy config " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  Status s = applyConfigText(proxy, ss.str());
  if (!s.ok()) return s.error().wrap("proxy config " + path);
  return okStatus();
}

ControlServer::ControlServer(Proxy& proxy, std::string socket_path)
    : proxy_(proxy), server_(std::make_unique<api::HttpServer>(std::move(socket_path))) {
  server_->route("PUT", "/v1/config", [this](const api::Request& rq) {
    Status s = applyConfigText(proxy_, rq.body);
    if (!s.ok()) return api::Response::error(400, s.error().message);
    return api::Response::json(200, toJson(ConfigReply{proxy_.config()->revision()}));
  });
  server_->route("GET", "/v1/config", [this](const api::Request&) {
    auto cfg = proxy_.config();
    api::Response r;
    r.status = 200;
    r.body = cfg->source().empty() ? std::string("{\"revision\":0}") : cfg->source();
    return r;
  });
  server_->route("GET", "/v1/stats", [this](const api::Request&) {
    StatsReply s = proxy_.stats().snapshot();
    s.buffers_in_use = proxy_.buffersInUse();
    s.buffers_peak = proxy_.buffersPeak();
    return api::Response::json(200, toJson(s));
  });
  server_->route("GET", "/v1/healthz", [this](const api::Request&) {
    return api::Response::json(200, toJson(HealthReply{"ok", proxy_.config()->revision()}));
  });
  server_->routeStream("GET", "/v1/accesslog", [this](const api::Request&, api::StreamWriter& w) {
    auto sub = proxy_.accessLog().subscribe();
    // First line: every request from now on is logged to this stream (the
    // agent holds `membrane monitor --type l7` clients' banner until it).
    bool open = w.write(R"({"type":"subscribed"})");
    std::vector<std::string> lines;
    while (open && w.alive()) {
      if (!sub->next(lines, std::chrono::milliseconds(500))) continue;
      for (const auto& l : lines) {
        if (!w.write(l)) {
          open = false;
          break;
        }
      }
    }
    proxy_.accessLog().unsubscribe(sub);
  });
}

ControlServer::~ControlServer() { stop(); }

Status ControlServer::start() { return server_->start(); }
void ControlServer::stop() { server_->stop(); }

}  // namespace membrane::proxy
