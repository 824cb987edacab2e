#include "src/kernel/events.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdio>
#include <ctime>

#include "membrane/drop_reason.h"
#include "membrane/rfc3339.h"

namespace membrane::kernel {
namespace {

constexpr int64_t kNsPerSec = 1000000000;

std::string addr(uint32_t ipv4_be, uint16_t port_be, bool with_port) {
  char buf[INET_ADDRSTRLEN] = {};
  in_addr a{};
  a.s_addr = ipv4_be;
  inet_ntop(AF_INET, &a, buf, sizeof(buf));
  std::string s = buf;
  if (with_port) s += ":" + std::to_string(ntohs(port_be));
  return s;
}

}  // namespace

int64_t boottimeToRealtimeOffsetNs() {
  struct timespec real {}, boot {};
  clock_gettime(CLOCK_REALTIME, &real);
  clock_gettime(CLOCK_BOOTTIME, &boot);
  return (real.tv_sec - boot.tv_sec) * kNsPerSec + (real.tv_nsec - boot.tv_nsec);
}

std::string tcpFlagsString(uint8_t flags) {
  static constexpr struct {
    uint8_t bit;
    const char* name;
  } kFlags[] = {{0x02, "SYN"}, {0x01, "FIN"}, {0x04, "RST"}, {0x08, "PSH"},
                {0x10, "ACK"}, {0x20, "URG"}, {0x40, "ECE"}, {0x80, "CWR"}};
  std::string s;
  for (const auto& f : kFlags) {
    if (!(flags & f.bit)) continue;
    if (!s.empty()) s += ", ";
    s += f.name;
  }
  return s;
}

std::string verdictString(uint8_t verdict) {
  switch (verdict) {
    case MB_VERDICT_FORWARDED: return "FORWARDED";
    case MB_VERDICT_DROPPED: return "DROPPED";
    case MB_VERDICT_AUDIT: return "AUDIT";
    case MB_VERDICT_REDIRECTED: return "REDIRECTED";
    default: return std::to_string(verdict);
  }
}

std::string matchTypeString(uint8_t match_type) {
  switch (match_type) {
    case MB_MATCH_L3_ONLY: return "L3-Only";
    case MB_MATCH_L3_L4: return "L3-L4";
    case MB_MATCH_L4_ONLY: return "L4-Only";
    case MB_MATCH_ALL: return "all";
    case MB_MATCH_L3_PROTO: return "L3-Proto";
    case MB_MATCH_PROTO_ONLY: return "Proto-Only";
    default: return "none";
  }
}

std::string observationPointString(uint8_t point) {
  switch (point) {
    case MB_TRACE_TO_ENDPOINT: return "to-endpoint";
    case MB_TRACE_TO_STACK: return "to-stack";
    case MB_TRACE_FROM_ENDPOINT: return "from-endpoint";
    case MB_TRACE_TO_PROXY: return "to-proxy";
    default: return std::to_string(point);
  }
}

nlohmann::json eventToJson(const mb_event& e, int64_t boottime_to_realtime_offset_ns) {
  nlohmann::json j;
  switch (e.type) {
    case MB_EVENT_DROP: j["type"] = "drop"; break;
    case MB_EVENT_POLICY_VERDICT: j["type"] = "policy-verdict"; break;
    case MB_EVENT_TRACE: j["type"] = "trace"; break;
    default: j["type"] = std::to_string(e.type); break;
  }
  j["time"] = rfc3339Micros(static_cast<int64_t>(e.ts_ns) + boottime_to_realtime_offset_ns);
  if (e.type == MB_EVENT_DROP) {
    j["reason"] = dropReasonString(e.subtype);
    j["reason_code"] = e.subtype;
  } else if (e.type == MB_EVENT_POLICY_VERDICT) {
    j["verdict"] = verdictString(e.subtype);
    j["match"] = matchTypeString(e.match_type);
    j["cookie"] = e.cookie;
  } else if (e.type == MB_EVENT_TRACE) {
    j["observation_point"] = observationPointString(e.subtype);
  }
  j["direction"] = directionString(e.direction);
  j["endpoint"] = e.ep_id;
  j["ifindex"] = e.ifindex;
  j["src_identity"] = e.src_identity;
  j["dst_identity"] = e.dst_identity;
  if (e.dst_ep_id != 0) j["dst_endpoint"] = e.dst_ep_id;
  const bool ports = e.proto == IPPROTO_TCP || e.proto == IPPROTO_UDP || e.proto == IPPROTO_SCTP;
  j["src"] = addr(e.saddr, e.sport, ports);
  j["dst"] = addr(e.daddr, e.dport, ports);
  switch (e.proto) {
    case IPPROTO_TCP: j["proto"] = "TCP"; break;
    case IPPROTO_UDP: j["proto"] = "UDP"; break;
    case IPPROTO_ICMP: j["proto"] = "ICMP"; break;
    case IPPROTO_SCTP: j["proto"] = "SCTP"; break;
    default: j["proto"] = e.proto; break;
  }
  if (e.proto == IPPROTO_TCP && e.tcp_flags != 0) j["tcp_flags"] = tcpFlagsString(e.tcp_flags);
  if (e.proto == IPPROTO_ICMP) j["icmp_type"] = e.icmp_type;
  j["len"] = e.len;
  return j;
}

}  // namespace membrane::kernel
