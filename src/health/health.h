// Node connectivity health, as cilium-health does it: a health endpoint
// (reserved identity 4) answers HTTP GET /hello on port 4240 and ICMP; the
// agent probes every known node's host address and health endpoint address
// over ICMP and HTTP at an interval, and exports the results
// (cilium_unreachable_nodes, cilium_unreachable_health_endpoints,
// cilium_node_health_connectivity_*).
//
// Thread-safety: HealthChecker runs its own probing thread; status() may be
// called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "membrane/result.h"
#include "membrane/unique_fd.h"

namespace membrane::health {

inline constexpr uint16_t kHealthPort = 4240;  // Cilium's cluster-health-port

struct ProbeResult {
  bool ok = false;
  double rtt_seconds = 0;
  std::string error;  // empty when ok
};

// One ICMP echo to ip_be (raw socket, root); ok when the matching reply comes back in time.
ProbeResult probeIcmp(uint32_t ip_be, std::chrono::milliseconds timeout);
// TCP connect + "GET /hello" on ip_be:port; ok on an HTTP 200 answer in time.
ProbeResult probeHttp(uint32_t ip_be, uint16_t port, std::chrono::milliseconds timeout);

// Serves "GET /hello" -> 200 on an already-listening TCP socket (created by
// the caller, e.g. inside the health endpoint's network namespace: a socket
// belongs to the namespace it was created in). Stops and joins on destruction.
class HelloServer {
 public:
  static Result<std::unique_ptr<HelloServer>> start(UniqueFd listen_fd);
  ~HelloServer();
  HelloServer(const HelloServer&) = delete;
  HelloServer& operator=(const HelloServer&) = delete;
  uint64_t served() const;

 private:
  HelloServer(UniqueFd listen_fd, UniqueFd stop_fd);
  void loop();
  UniqueFd listen_fd_;
  UniqueFd stop_fd_;
  std::thread thread_;
  std::atomic<uint64_t> served_{0};
};

// A listening TCP socket on 0.0.0.0:port in the calling thread's network namespace.
Result<UniqueFd> listenTcp(uint16_t port);

struct NodeTarget {
  std::string name;         // node name ("localhost" marks this node in status output)
  uint32_t host_ip_be = 0;  // the node's address
  uint32_t health_ip_be = 0;  // its health endpoint's address (0 = none)
};

struct PathStatus {
  std::string address;      // dotted quad
  ProbeResult icmp;
  ProbeResult http;
  bool reachable() const { return icmp.ok && http.ok; }
};

struct NodeStatus {
  std::string name;
  bool local = false;
  PathStatus host;
  std::optional<PathStatus> endpoint;
};

struct HealthReport {
  std::chrono::system_clock::time_point probe_time{};
  std::chrono::seconds interval{60};
  std::vector<NodeStatus> nodes;
  double round_seconds = 0;  // how long the round's probes took
  int unreachableNodes() const;            // nodes whose host address fails a probe
  int unreachableHealthEndpoints() const;  // nodes whose health endpoint fails a probe
  // Nodes whose every path (host, and health endpoint if it has one) passes both
  // probes: the N of `Cluster health: N/M reachable`, as cilium status counts it.
  int healthyNodes() const;
};

// Probes the targets every `interval` (first round right away) on its own thread,
// and calls on_report after each round (from that thread).
class HealthChecker {
 public:
  using Targets = std::function<std::vector<NodeTarget>()>;
  using OnReport = std::function<void(const HealthReport&)>;
  HealthChecker(Targets targets, OnReport on_report, std::chrono::seconds interval,
                std::chrono::milliseconds probe_timeout = std::chrono::milliseconds(1000));
  ~HealthChecker();
  void start();
  void stop();
  // Runs one round now (synchronously) and returns it.
  HealthReport probeNow();
  std::optional<HealthReport> last() const;

 private:
  void loop();
  Targets targets_;
  OnReport on_report_;
  std::chrono::seconds interval_;
  std::chrono::milliseconds timeout_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::optional<HealthReport> last_;
  std::thread thread_;
};

}  // namespace membrane::health
