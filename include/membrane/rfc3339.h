// Wall-clock timestamps as the API and state files print them.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>

namespace membrane {

// Now, UTC, to the second: "2026-11-25T02:43:41Z" (Kubernetes' creationTimestamp
// format, used by the API and state files).
inline std::string nowRfc3339() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// A wall-clock time in nanoseconds since the epoch, UTC, to the microsecond:
// "2026-11-25T02:43:41.123456Z" (what `membrane monitor` events and the L7
// access log print, like Hubble's flow times). Negative times round down.
inline std::string rfc3339Micros(int64_t realtime_ns) {
  constexpr int64_t kNsPerSec = 1000000000;
  int64_t sec = realtime_ns / kNsPerSec;
  int64_t frac = realtime_ns % kNsPerSec;
  if (frac < 0) {
    frac += kNsPerSec;
    sec -= 1;
  }
  const std::time_t t = static_cast<std::time_t>(sec);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(frac / 1000));
  return buf;
}

inline std::string nowRfc3339Micros() {
  return rfc3339Micros(std::chrono::duration_cast<std::chrono::nanoseconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count());
}

}  // namespace membrane
