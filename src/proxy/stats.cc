#include "src/proxy/stats.h"

namespace membrane::proxy {

std::string_view scopeName(Scope s) { return s == Scope::TotalTime ? "totalTime" : "upstreamTime"; }

std::string_view upstreamErrorName(UpstreamError e) {
  switch (e) {
    case UpstreamError::None: return "";
    case UpstreamError::ConnectFailed: return "connect_failed";
    case UpstreamError::Reset: return "upstream_reset";
    case UpstreamError::Timeout: return "timeout";
  }
  return "unknown";
}

void Histogram::observe(std::chrono::nanoseconds d) {
  double secs = std::chrono::duration<double>(d).count();
  for (size_t i = 0; i < kLatencyBuckets.size(); ++i) {
    if (secs <= kLatencyBuckets[i]) {
      buckets[i].fetch_add(1, std::memory_order_relaxed);
      break;
    }
  }
  sum_ns.fetch_add(static_cast<uint64_t>(d.count() < 0 ? 0 : d.count()), std::memory_order_relaxed);
  count.fetch_add(1, std::memory_order_relaxed);
}

nlohmann::json ProxyStats::toJson() const {
  using nlohmann::json;
  json series = json::array();
  for (size_t e = 0; e < kUpstreamErrors; ++e) {
    for (size_t s = 0; s < kScopes; ++s) {
      const Histogram& h = latency[e][s];
      uint64_t count = h.count.load();
      if (e != 0 && count == 0) continue;
      json buckets = json::array();
      uint64_t cum = 0;
      for (size_t i = 0; i < kLatencyBuckets.size(); ++i) {
        cum += h.buckets[i].load();
        buckets.push_back({{"le", kLatencyBuckets[i]}, {"count", cum}});
      }
      series.push_back({{"error", upstreamErrorName(static_cast<UpstreamError>(e))},
                        {"protocol_l7", "http"},
                        {"scope", scopeName(static_cast<Scope>(s))},
                        {"buckets", buckets},
                        {"count", count},
                        {"sum", static_cast<double>(h.sum_ns.load()) / 1e9}});
    }
  }
  return json{{"received", received.load()},
              {"forwarded", forwarded.load()},
              {"denied", denied.load()},
              {"parse_errors", parse_errors.load()},
              {"redirects", {{"http", redirects_http.load()}}},
              {"upstream_reply_seconds", series},
              {"connections",
               {{"accepted", connections_accepted.load()},
                {"active", connections_active.load()},
                {"rejected", connections_rejected.load()}}},
              {"timeouts", {{"header", timeouts_header.load()}, {"idle", timeouts_idle.load()}}},
              {"upstream_connect_errors", upstream_connect_errors.load()},
              {"config",
               {{"revision", config_revision.load()}, {"loads", config_loads.load()}, {"errors", config_errors.load()}}}};
}

}  // namespace membrane::proxy
