#include "src/kernel/events.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <regex>

#include "membrane/rfc3339.h"
#include "src/kernel/packet_builder.h"

namespace membrane::kernel {
namespace {

// 2026-11-24T19:21:03.123456789Z as realtime = boottime + offset.
constexpr int64_t kRealtimeNs = 1795548063123456789LL;
constexpr uint64_t kBootNs = 5000000000ULL;
constexpr int64_t kOffset = kRealtimeNs - static_cast<int64_t>(kBootNs);

mb_event baseEvent() {
  mb_event e{};
  e.direction = MB_DIR_INGRESS;
  e.ep_id = 1204;
  e.ifindex = 42;
  e.src_identity = 257;
  e.dst_identity = 256;
  e.dst_ep_id = 1100;
  e.saddr = ipv4Be("10.200.0.7");
  e.daddr = ipv4Be("10.200.0.5");
  e.sport = htons(43122);
  e.dport = htons(80);
  e.proto = IPPROTO_TCP;
  e.tcp_flags = 0x02;
  e.len = 74;
  e.ts_ns = kBootNs;
  return e;
}

TEST(EventsTest, DropMatchesApiExample) {
  mb_event e = baseEvent();
  e.type = MB_EVENT_DROP;
  e.subtype = MB_DROP_POLICY;
  auto want = nlohmann::json::parse(R"({"type": "drop", "time": "2026-11-24T19:21:03.123456Z",
    "reason": "Policy denied", "reason_code": 133, "direction": "INGRESS", "endpoint": 1204,
    "ifindex": 42, "src_identity": 257, "dst_identity": 256, "dst_endpoint": 1100,
    "src": "10.200.0.7:43122", "dst": "10.200.0.5:80", "proto": "TCP", "tcp_flags": "SYN",
    "len": 74})");
  EXPECT_EQ(eventToJson(e, kOffset), want);
}

TEST(EventsTest, PolicyVerdict) {
  mb_event e = baseEvent();
  e.type = MB_EVENT_POLICY_VERDICT;
  e.subtype = MB_VERDICT_FORWARDED;
  e.match_type = MB_MATCH_L3_L4;
  e.direction = MB_DIR_EGRESS;
  e.cookie = 7;
  e.tcp_flags = 0x12;
  e.dst_ep_id = 0;
  auto want = nlohmann::json::parse(R"({"type": "policy-verdict",
    "time": "2026-11-24T19:21:03.123456Z", "verdict": "FORWARDED", "match": "L3-L4", "cookie": 7,
    "direction": "EGRESS", "endpoint": 1204, "ifindex": 42, "src_identity": 257,
    "dst_identity": 256, "src": "10.200.0.7:43122", "dst": "10.200.0.5:80", "proto": "TCP",
    "tcp_flags": "SYN, ACK", "len": 74})");
  EXPECT_EQ(eventToJson(e, kOffset), want);
}

TEST(EventsTest, TraceIcmpHasNoPorts) {
  mb_event e = baseEvent();
  e.type = MB_EVENT_TRACE;
  e.subtype = MB_TRACE_TO_STACK;
  e.proto = IPPROTO_ICMP;
  e.icmp_type = 8;
  e.sport = e.dport = htons(99);
  e.tcp_flags = 0;
  e.len = 98;
  auto want = nlohmann::json::parse(R"({"type": "trace", "time": "2026-11-24T19:21:03.123456Z",
    "observation_point": "to-stack", "direction": "INGRESS", "endpoint": 1204, "ifindex": 42,
    "src_identity": 257, "dst_identity": 256, "dst_endpoint": 1100, "src": "10.200.0.7",
    "dst": "10.200.0.5", "proto": "ICMP", "icmp_type": 8, "len": 98})");
  EXPECT_EQ(eventToJson(e, kOffset), want);
}

TEST(EventsTest, UnknownProtoIsNumberWithoutPorts) {
  mb_event e = baseEvent();
  e.type = MB_EVENT_DROP;
  e.subtype = MB_DROP_POLICY_DENY;
  e.proto = 47;
  auto j = eventToJson(e, kOffset);
  EXPECT_EQ(j["proto"], 47);
  EXPECT_EQ(j["src"], "10.200.0.7");
  EXPECT_EQ(j["reason"], "Policy denied by denylist");
  EXPECT_FALSE(j.contains("tcp_flags"));
}

TEST(EventsTest, Strings) {
  EXPECT_EQ(tcpFlagsString(0x11), "FIN, ACK");
  EXPECT_EQ(tcpFlagsString(0), "");
  EXPECT_EQ(verdictString(MB_VERDICT_AUDIT), "AUDIT");
  EXPECT_EQ(matchTypeString(MB_MATCH_L4_ONLY), "L4-Only");
  EXPECT_EQ(matchTypeString(MB_MATCH_L3_ONLY), "L3-Only");
  EXPECT_EQ(matchTypeString(MB_MATCH_ALL), "all");
  EXPECT_EQ(matchTypeString(MB_MATCH_L3_PROTO), "L3-Proto");
  EXPECT_EQ(matchTypeString(MB_MATCH_PROTO_ONLY), "Proto-Only");
  EXPECT_EQ(matchTypeString(MB_MATCH_NONE), "none");
}

// The one microsecond formatter (membrane/rfc3339.h) that events and the
// proxy's access log share.
TEST(Rfc3339Micros, FormatsUtcToTheMicrosecond) {
  EXPECT_EQ(rfc3339Micros(0), "1970-01-01T00:00:00.000000Z");
  EXPECT_EQ(rfc3339Micros(1764012063123456789), "2025-11-24T19:21:03.123456Z");
  EXPECT_EQ(rfc3339Micros(-1000), "1969-12-31T23:59:59.999999Z");  // rounds down, not toward zero
  EXPECT_TRUE(std::regex_match(nowRfc3339Micros(), std::regex(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z)")))
      << nowRfc3339Micros();
}

}  // namespace
}  // namespace membrane::kernel
