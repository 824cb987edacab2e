// Decoding of datapath events (struct mb_event from the ring buffer) into
// the Event JSON object of docs/api.md. Pure: no kernel access, no root.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "bpf/shared/datapath.h"

namespace membrane::kernel {

// CLOCK_REALTIME - CLOCK_BOOTTIME in ns, to turn mb_event.ts_ns into wall time.
int64_t boottimeToRealtimeOffsetNs();

// Event JSON: type drop|policy-verdict|trace, time (RFC 3339, microseconds,
// UTC), direction, endpoint, ifindex, identities, dst_endpoint (only if
// local), src/dst as "ip:port" (no port for ICMP, which adds icmp_type),
// proto ("TCP", "UDP", "ICMP", "SCTP" or the number), tcp_flags ("SYN, ACK";
// TCP with flags only), len. drop adds reason/reason_code; policy-verdict
// adds verdict, match and cookie; trace adds observation_point.
nlohmann::json eventToJson(const mb_event& event, int64_t boottime_to_realtime_offset_ns);

// "SYN, ACK" etc.; empty for no flags.
std::string tcpFlagsString(uint8_t flags);
// "FORWARDED", "DROPPED", "AUDIT", "REDIRECTED" (else the number).
std::string verdictString(uint8_t verdict);
// "L3-Only", "L3-L4", "L4-Only", "all", "L3-Proto", "Proto-Only", "none".
std::string matchTypeString(uint8_t match_type);
// "to-endpoint", "to-stack", "from-endpoint", "to-proxy" (else the number).
std::string observationPointString(uint8_t point);

}  // namespace membrane::kernel
