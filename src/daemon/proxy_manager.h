// ProxyManager: membraned's side of membrane-proxy, the L7 proxy process.
//
// The proxy is a separate process that outlives the agent (so established
// proxied connections and the proxy's counters survive an agent restart). On
// start the agent ADOPTS a running proxy (pidfile names a live membrane-proxy
// process and its control socket answers /v1/healthz) and starts a new one
// only when it is gone. The agent pushes the whole L7 config (PUT /v1/config)
// on every policy/endpoint change and reads /v1/stats at scrape time.
//
// Thread-safety: push()/ensureRunning() are called under the agent lock;
// stats() and accessLog streaming may run concurrently on other threads (each
// call uses its own connection).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "membrane/result.h"

namespace membrane::daemon {

struct ProxyManagerConfig {
  std::string binary;          // membrane-proxy executable
  std::string control_socket;  // its control socket
  std::string pidfile;         // <state-dir>/proxy.pid
  std::string log_file;        // <state-dir>/proxy.log (the proxy's stderr)
  uint32_t header_timeout_ms = 10000;  // --header-timeout-ms (slowloris cut)
  uint32_t idle_timeout_ms = 300000;   // --idle-timeout-ms
  std::string escaped_slashes = "reject";  // --escaped-slashes
};

class ProxyManager {
 public:
  // Adopts the running proxy or starts one, and waits (5 s) until its control
  // socket answers. Errors say which step failed.
  static Result<std::unique_ptr<ProxyManager>> start(const ProxyManagerConfig& cfg);

  // Starts a new proxy if the one we know is gone (then re-pushes the last config).
  Status ensureRunning();
  // PUT /v1/config. The proxy rejects a bad config as a whole (400, message kept).
  Status push(const nlohmann::json& config);
  // GET /v1/stats.
  Result<nlohmann::json> stats() const;
  // Follows GET /v1/accesslog; on_line gets each NDJSON line. Returns when the
  // stream ends or on_line returns false.
  Status followAccessLog(const std::function<bool(std::string_view)>& on_line) const;

  // True while the proxy process is alive (reaps it if it was our child).
  bool running() { return alive(); }
  pid_t pid() const { return pid_; }
  bool adopted() const { return adopted_; }

  // `membraned cleanup`: stops the proxy named by the pidfile (SIGTERM, then
  // SIGKILL after 5 s) if it is a membrane-proxy process, removes pidfile and socket.
  static Status stopAndRemove(const ProxyManagerConfig& cfg);

 private:
  explicit ProxyManager(ProxyManagerConfig cfg) : cfg_(std::move(cfg)) {}
  Status spawn();
  bool alive();

  ProxyManagerConfig cfg_;
  pid_t pid_ = -1;
  bool adopted_ = false;
  bool child_ = false;  // spawned by this agent (reap it with waitpid)
  std::string last_config_;
};

}  // namespace membrane::daemon
