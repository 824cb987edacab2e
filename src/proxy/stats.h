// ProxyStats: the proxy's counters and upstream latency histograms, updated by
// the loop thread and read (as JSON) by the control socket. All members are
// atomics: readers see each value exactly, the set of values is not a snapshot.
//
// Mapping to Cilium metrics (done by the agent):
//   received/forwarded/denied/parse_errors -> cilium_policy_l7_*_total and
//     cilium_policy_l7_total{rule=...,proxy_type="http"}
//   redirects -> cilium_proxy_redirects{protocol_l7="http"}
//   latency   -> cilium_proxy_upstream_reply_seconds{error,protocol_l7="http",scope}
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "src/proxy/control_protocol.h"

namespace membrane::proxy {

enum class Scope : uint8_t { TotalTime, UpstreamTime };
// The "error" label: "" for an answered request, else why there was no answer.
enum class UpstreamError : uint8_t { None, ConnectFailed, Reset, Timeout };
inline constexpr size_t kScopes = 2, kUpstreamErrors = 4;
std::string_view scopeName(Scope s);
std::string_view upstreamErrorName(UpstreamError e);

// Prometheus' default buckets (what Cilium's histogram uses).
inline constexpr std::array<double, 11> kLatencyBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                           0.5,   1,    2.5,   5,    10};

struct Histogram {
  std::array<std::atomic<uint64_t>, kLatencyBuckets.size()> buckets{};  // non-cumulative
  std::atomic<uint64_t> count{0};
  std::atomic<uint64_t> sum_ns{0};
  void observe(std::chrono::nanoseconds d);
};

struct ProxyStats {
  std::atomic<uint64_t> received{0}, forwarded{0}, denied{0}, parse_errors{0};
  std::atomic<uint64_t> redirects_http{0};
  std::atomic<uint64_t> connections_accepted{0}, connections_active{0}, connections_rejected{0};
  std::atomic<uint64_t> upstream_connect_errors{0}, timeouts_header{0}, timeouts_idle{0};
  std::atomic<uint64_t> config_revision{0}, config_loads{0}, config_errors{0};
  std::array<std::array<Histogram, kScopes>, kUpstreamErrors> latency;

  void observe(UpstreamError e, Scope s, std::chrono::nanoseconds d) {
    latency[static_cast<size_t>(e)][static_cast<size_t>(s)].observe(d);
  }
  // The counters as the control socket serves them (control_protocol.h),
  // buffers left 0 (the Proxy knows those). Series with error "" are always
  // present; error series once observed.
  StatsReply snapshot() const;
  nlohmann::json toJson() const { return proxy::toJson(snapshot()); }
};

}  // namespace membrane::proxy
