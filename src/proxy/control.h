// The proxy's control socket (unix, HTTP/1.1 via membrane_api's HttpServer):
//   PUT /v1/config     body = proxy config JSON (docs/l7.md); 200 ConfigReply
//                      or 400 ErrorReply (the running config stays in place)
//   GET /v1/config     the config in force, as it was given
//   GET /v1/stats      StatsReply (ProxyStats plus buffer usage)
//   GET /v1/accesslog  NDJSON stream (chunked), one line per request/response
//   GET /v1/healthz    HealthReply
// The reply types and their JSON: control_protocol.h (shared with membraned).
//
// Thread-safety: handlers run on the server's connection threads and only use
// Proxy's thread-safe methods.
#pragma once

#include <memory>
#include <string>

#include "membrane/result.h"
#include "src/proxy/proxy.h"

namespace membrane::api {
class HttpServer;
}

namespace membrane::proxy {

// Reads, parses and applies a config file. Errors name the file.
Status loadConfigFile(Proxy& proxy, const std::string& path);
// Parses and applies a config document (counts config errors in stats).
Status applyConfigText(Proxy& proxy, std::string_view text);

class ControlServer {
 public:
  ControlServer(Proxy& proxy, std::string socket_path);
  ~ControlServer();
  Status start();
  void stop();

 private:
  Proxy& proxy_;
  std::unique_ptr<api::HttpServer> server_;
};

}  // namespace membrane::proxy
