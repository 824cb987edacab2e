// What a request leaves behind once answered: its latency in the stats
// histograms (stats.h) and, when anyone subscribes, access-log records
// (access_log.h) for the request and for its answer.
#include <string>

#include "membrane/rfc3339.h"
#include "src/proxy/proxy_impl.h"

namespace membrane::proxy {

void Proxy::Impl::finishEntry(Conn* c, Pending& e, int status) {
  auto total = now - e.start;
  if (e.forward) {
    stats.observe(UpstreamError::None, Scope::TotalTime, total);
  } else if (e.error != UpstreamError::None) {
    stats.observe(e.error, Scope::TotalTime, total);
    stats.observe(e.error, Scope::UpstreamTime, now - e.sent);
  }
  logLine(c, e, /*response=*/true, status);
}

void Proxy::Impl::logLine(Conn* c, const Pending& e, bool response, int status) {
  if (!log.active()) return;
  const std::string time = nowRfc3339Micros();
  const int64_t latency_us =
      response ? std::chrono::duration_cast<std::chrono::microseconds>(now - e.start).count() : 0;
  log.publish(formatAccessRecord(
      accessRecordOf(e, directionName(c->dir), time, c->client, c->odst, response, status, latency_us)));
}

}  // namespace membrane::proxy
