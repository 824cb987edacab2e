// ProxyManager: membraned's side of membrane-proxy, the L7 proxy process.
//
// The proxy is a separate process that outlives the agent (so established
// proxied connections and the proxy's counters survive an agent restart). On
// start the agent ADOPTS a running proxy (pidfile names a live membrane-proxy
// process and its control socket answers /v1/healthz) and starts a new one
// only when it is gone. The agent pushes the whole L7 config (PUT /v1/config)
// on every policy/endpoint change and reads /v1/stats at scrape time.
//
// Thread-safety: push() and ensureRunning() are slow (a start waits up to
// 5 s for the new process, a push up to 10 s for its answer) and must be
// serialised by the caller (the agent's change lock), never run under a lock
// that API handlers need. running(), pid() and adopted() may be called from
// any thread meanwhile (state_mu_ guards what they read, and is never held
// across a wait); stats() and relayAccessLog() too (each call uses its own
// connection); starts() is atomic.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "membrane/mutex.h"
#include "membrane/result.h"
#include "membrane/unique_fd.h"
#include "src/proxy/control_protocol.h"

namespace membrane::daemon {

// An eventfd that wakes a thread blocked in poll() on fd(): notify() from any
// thread never blocks and is never lost (the count stays until drain()).
class Wakeup {
 public:
  static Result<Wakeup> create();
  void notify() const;
  void drain() const;
  int fd() const { return fd_.get(); }

 private:
  explicit Wakeup(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

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
  // GET /v1/stats. EINVAL naming the field when the reply lacks one
  // (control_protocol.h), EIO when the proxy does not answer 200.
  Result<proxy::StatsReply> stats() const;
  // Called by spawn() (on the thread that started the proxy) each time a NEW proxy
  // process answers, after starts() went up: the access-log relay reconnects
  // then. Set it before the proxy can be restarted (before any thread runs).
  void setOnStart(std::function<void()> fn) { on_start_ = std::move(fn); }
  // Proxy processes this manager started (0 when it adopted one and none died).
  uint64_t starts() const { return starts_.load(); }

  struct RelayHooks {
    std::function<bool()> stopping;                 // true: return
    std::function<bool()> wanted;                   // someone watches l7 events
    std::function<void(std::string_view)> on_line;  // one NDJSON access-log line
    // true once the proxy logs every request to the relay (its first line,
    // {"type":"subscribed"}, or the first record from a proxy that predates
    // that line); false when that stream ends. May be empty.
    std::function<void(bool)> on_live;
  };
  // The access-log relay, on the caller's thread until hooks.stopping(): while
  // hooks.wanted(), follows GET /v1/accesslog (one long-lived chunked stream)
  // and hands each line to on_line. No timers: it blocks in poll() on the
  // stream and on `wake`, and re-checks stopping()/wanted() on every wake.
  // Wake it when stopping, when wanted() may have changed and from
  // setOnStart(): a stream that ends (or a connect that fails) is retried only
  // once a new proxy started (or on the next wake), never on a clock.
  void relayAccessLog(const Wakeup& wake, const RelayHooks& hooks) const;

  // A pidfd of the running proxy process: poll() reports it readable once
  // that process exits, so a supervisor blocks instead of polling on a
  // clock. ESRCH when no proxy runs now.
  Result<UniqueFd> exitFd() EXCLUDES(state_mu_);
  // True while the proxy process is alive (reaps it if it was our child).
  bool running() EXCLUDES(state_mu_) { return alive(); }
  pid_t pid() const EXCLUDES(state_mu_) {
    MutexLock lk(state_mu_);
    return pid_;
  }
  bool adopted() const EXCLUDES(state_mu_) {
    MutexLock lk(state_mu_);
    return adopted_;
  }

  // `membraned cleanup`: stops the proxy named by the pidfile (SIGTERM, then
  // SIGKILL after 5 s) if it is a membrane-proxy process, removes pidfile and socket.
  static Status stopAndRemove(const ProxyManagerConfig& cfg);

 private:
  explicit ProxyManager(ProxyManagerConfig cfg) : cfg_(std::move(cfg)) {}
  Status spawn() EXCLUDES(state_mu_);
  bool alive() EXCLUDES(state_mu_);

  ProxyManagerConfig cfg_;
  std::function<void()> on_start_;
  std::atomic<uint64_t> starts_{0};
  mutable Mutex state_mu_;  // short sections only: no wait, no RPC under it
  pid_t pid_ GUARDED_BY(state_mu_) = -1;
  bool adopted_ GUARDED_BY(state_mu_) = false;
  bool child_ GUARDED_BY(state_mu_) = false;  // spawned by this agent (reap it with waitpid)
  std::string last_config_ GUARDED_BY(state_mu_);
};

}  // namespace membrane::daemon
