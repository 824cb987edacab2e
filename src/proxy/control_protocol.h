// The control socket's replies as types (issue 10): membrane-proxy writes
// them and membraned reads them through this one header, so a field renamed
// on one side fails the read with the field's name instead of silently
// reading 0. The wire format is JSON (docs/l7.md); each fromJson is strict:
// every field listed here must be present with its JSON type (unknown extra
// fields are ignored, so a newer proxy may add some).
//
//   GET /v1/stats    StatsReply
//   PUT /v1/config   200 ConfigReply, else ErrorReply (api::Response::error)
//   GET /v1/healthz  HealthReply
//
// Plain values; no I/O.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "membrane/result.h"

namespace membrane::proxy {

// One cilium_proxy_upstream_reply_seconds series.
struct LatencySeries {
  std::string error;        // "" answered; connect_failed, upstream_reset, timeout
  std::string protocol_l7;  // "http"
  std::string scope;        // totalTime | upstreamTime
  std::vector<std::pair<double, uint64_t>> buckets;  // (le, CUMULATIVE count), ascending, without +Inf
  uint64_t count = 0;
  double sum = 0;  // seconds
  bool operator==(const LatencySeries&) const = default;
};

// A reading of ProxyStats (stats.h says what each counter counts).
struct StatsReply {
  uint64_t received = 0, forwarded = 0, denied = 0, parse_errors = 0;
  uint64_t redirects_http = 0;  // "redirects": {"http"}
  std::vector<LatencySeries> upstream_reply_seconds;
  uint64_t connections_accepted = 0, connections_active = 0, connections_rejected = 0;  // "connections"
  uint64_t timeouts_header = 0, timeouts_idle = 0;                                      // "timeouts"
  uint64_t upstream_connect_errors = 0;
  uint64_t config_revision = 0, config_loads = 0, config_errors = 0;  // "config"
  uint64_t buffers_in_use = 0, buffers_peak = 0;                      // "buffers"
  bool operator==(const StatsReply&) const = default;
};

struct ConfigReply {
  uint64_t revision = 0;  // of the config now in force
  bool operator==(const ConfigReply&) const = default;
};

struct ErrorReply {
  std::string error;  // why the request failed (a rejected config: its first problem)
  bool operator==(const ErrorReply&) const = default;
};

struct HealthReply {
  std::string status;  // "ok"
  uint64_t revision = 0;
  bool operator==(const HealthReply&) const = default;
};

nlohmann::json toJson(const StatsReply& s);
nlohmann::json toJson(const ConfigReply& r);
nlohmann::json toJson(const ErrorReply& r);
nlohmann::json toJson(const HealthReply& r);

// EINVAL "membrane-proxy <what> reply: field <path> is missing" (or "is <type>,
// expected <type>"), with a hint that agent and proxy come from different builds.
Result<StatsReply> statsFromJson(const nlohmann::json& j);
Result<ConfigReply> configReplyFromJson(const nlohmann::json& j);
Result<ErrorReply> errorReplyFromJson(const nlohmann::json& j);
Result<HealthReply> healthReplyFromJson(const nlohmann::json& j);

}  // namespace membrane::proxy
