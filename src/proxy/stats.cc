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

StatsReply ProxyStats::snapshot() const {
  StatsReply out;
  for (size_t e = 0; e < kUpstreamErrors; ++e) {
    for (size_t s = 0; s < kScopes; ++s) {
      const Histogram& h = latency[e][s];
      uint64_t count = h.count.load();
      if (e != 0 && count == 0) continue;
      LatencySeries series;
      series.error = upstreamErrorName(static_cast<UpstreamError>(e));
      series.protocol_l7 = "http";
      series.scope = scopeName(static_cast<Scope>(s));
      uint64_t cum = 0;
      for (size_t i = 0; i < kLatencyBuckets.size(); ++i) {
        cum += h.buckets[i].load();
        series.buckets.emplace_back(kLatencyBuckets[i], cum);
      }
      series.count = count;
      series.sum = static_cast<double>(h.sum_ns.load()) / 1e9;
      out.upstream_reply_seconds.push_back(std::move(series));
    }
  }
  out.received = received.load();
  out.forwarded = forwarded.load();
  out.denied = denied.load();
  out.parse_errors = parse_errors.load();
  out.redirects_http = redirects_http.load();
  out.connections_accepted = connections_accepted.load();
  out.connections_active = connections_active.load();
  out.connections_rejected = connections_rejected.load();
  out.timeouts_header = timeouts_header.load();
  out.timeouts_idle = timeouts_idle.load();
  out.upstream_connect_errors = upstream_connect_errors.load();
  out.config_revision = config_revision.load();
  out.config_loads = config_loads.load();
  out.config_errors = config_errors.load();
  return out;
}

}  // namespace membrane::proxy
