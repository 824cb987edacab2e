// Wall-clock timestamps as the API and state files print them.
#pragma once

#include <ctime>
#include <string>

namespace membrane {

// Now, UTC, to the second: "2026-11-25T02:43:41Z" (Kubernetes' creationTimestamp
// format; the proxy's access log uses microseconds and has its own formatter).
inline std::string nowRfc3339() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace membrane
