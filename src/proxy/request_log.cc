// What a request leaves behind once answered: its latency in the stats
// histograms (stats.h) and, when anyone subscribes, access-log records
// (access_log.h) for the request and for its answer.
#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>

#include "src/proxy/proxy_impl.h"

namespace membrane::proxy {
namespace {

std::string nowRfc3339() {
  auto now = std::chrono::system_clock::now();
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count();
  time_t secs = static_cast<time_t>(us / 1000000);
  struct tm tm {};
  gmtime_r(&secs, &tm);
  char buf[64];
  size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, sizeof(buf) - n, ".%06lldZ", static_cast<long long>(us % 1000000));
  return buf;
}

}  // namespace

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
  const std::string time = nowRfc3339();
  const int64_t latency_us =
      response ? std::chrono::duration_cast<std::chrono::microseconds>(now - e.start).count() : 0;
  log.publish(formatAccessRecord(
      accessRecordOf(e, directionName(c->dir), time, c->client, c->odst, response, status, latency_us)));
}

}  // namespace membrane::proxy
