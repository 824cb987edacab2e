// The control socket's typed replies: what the proxy writes the agent reads
// back exactly, and a renamed or mistyped field is an error naming it.
#include "src/proxy/control_protocol.h"

#include <gtest/gtest.h>

#include "src/proxy/stats.h"

namespace membrane::proxy {
namespace {

using nlohmann::json;

StatsReply sample() {
  StatsReply s;
  s.received = 11, s.forwarded = 7, s.denied = 3, s.parse_errors = 1, s.redirects_http = 2;
  s.upstream_reply_seconds = {{"", "http", "totalTime", {{0.005, 4}, {0.01, 6}}, 7, 0.25},
                              {"timeout", "http", "upstreamTime", {{0.005, 0}, {10, 1}}, 1, 30.5}};
  s.connections_accepted = 9, s.connections_active = 2, s.connections_rejected = 1;
  s.timeouts_header = 4, s.timeouts_idle = 5, s.upstream_connect_errors = 6;
  s.config_revision = 12, s.config_loads = 13, s.config_errors = 14;
  s.buffers_in_use = 15, s.buffers_peak = 16;
  return s;
}

TEST(ControlProtocol, StatsRoundTripThroughText) {
  const StatsReply s = sample();
  auto back = statsFromJson(json::parse(toJson(s).dump()));
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(*back, s);
}

TEST(ControlProtocol, StatsWireNamesAreFixed) {
  // The JSON the agent has always read (and docs/l7.md shows).
  EXPECT_EQ(toJson(sample()).dump(),
            R"({"buffers":{"in_use":15,"peak":16},"config":{"errors":14,"loads":13,"revision":12},)"
            R"("connections":{"accepted":9,"active":2,"rejected":1},"denied":3,"forwarded":7,"parse_errors":1,)"
            R"("received":11,"redirects":{"http":2},"timeouts":{"header":4,"idle":5},"upstream_connect_errors":6,)"
            R"("upstream_reply_seconds":[{"buckets":[{"count":4,"le":0.005},{"count":6,"le":0.01}],"count":7,)"
            R"("error":"","protocol_l7":"http","scope":"totalTime","sum":0.25},{"buckets":[{"count":0,"le":0.005},)"
            R"({"count":1,"le":10.0}],"count":1,"error":"timeout","protocol_l7":"http","scope":"upstreamTime",)"
            R"("sum":30.5}]})");
}

TEST(ControlProtocol, ProxyStatsSnapshotRoundTrips) {
  ProxyStats live;
  live.received = 5;
  live.redirects_http = 1;
  live.observe(UpstreamError::Reset, Scope::TotalTime, std::chrono::milliseconds(20));
  const StatsReply snap = live.snapshot();
  ASSERT_EQ(snap.upstream_reply_seconds.size(), 3u);  // the two error "" series, then upstream_reset totalTime
  EXPECT_EQ(snap.upstream_reply_seconds[2].error, "upstream_reset");
  EXPECT_EQ(snap.upstream_reply_seconds[2].buckets[2], (std::pair<double, uint64_t>{0.025, 1}));
  auto back = statsFromJson(live.toJson());
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(*back, snap);
  EXPECT_EQ(back->received, 5u);
}

TEST(ControlProtocol, RenamedFieldIsAnErrorNotZero) {
  json j = toJson(sample());
  j["recieved"] = j["received"];
  j.erase("received");
  auto r = statsFromJson(j);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EINVAL);
  EXPECT_EQ(r.error().message,
            "membrane-proxy /v1/stats reply: field received is missing (are membraned and membrane-proxy from the "
            "same build? restart membrane-proxy after an upgrade)");

  json nested = toJson(sample());
  nested["connections"].erase("accepted");
  nested["connections"]["accepts"] = 9;
  auto n = statsFromJson(nested);
  ASSERT_FALSE(n.ok());
  EXPECT_NE(n.error().message.find("field connections.accepted is missing"), std::string::npos) << n.error().message;

  json bucket = toJson(sample());
  bucket["upstream_reply_seconds"][1]["buckets"][0].erase("le");
  auto b = statsFromJson(bucket);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.error().message.find("field upstream_reply_seconds[1].buckets[0].le is missing"), std::string::npos)
      << b.error().message;
}

TEST(ControlProtocol, MistypedFieldIsAnError) {
  json j = toJson(sample());
  j["denied"] = "3";
  auto r = statsFromJson(j);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("field denied is string, expected an unsigned integer"), std::string::npos)
      << r.error().message;
  j = toJson(sample());
  j["denied"] = -1;
  EXPECT_FALSE(statsFromJson(j).ok());
  j = toJson(sample());
  j["redirects"] = 2;
  r = statsFromJson(j);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("field redirects is number, expected an object"), std::string::npos)
      << r.error().message;
  r = statsFromJson(json::array());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("field (the reply) is array, expected object"), std::string::npos)
      << r.error().message;
}

TEST(ControlProtocol, SmallRepliesRoundTripAndRejectRenames) {
  EXPECT_EQ(*configReplyFromJson(toJson(ConfigReply{42})), ConfigReply{42});
  EXPECT_EQ(*healthReplyFromJson(toJson(HealthReply{"ok", 3})), (HealthReply{"ok", 3}));
  EXPECT_EQ(*errorReplyFromJson(json{{"error", "bad port"}, {"code", 400}}), ErrorReply{"bad port"});
  EXPECT_EQ(toJson(ConfigReply{42}).dump(), R"({"revision":42})");
  auto c = configReplyFromJson(json{{"rev", 42}});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find("membrane-proxy PUT /v1/config reply: field revision is missing"),
            std::string::npos);
  EXPECT_FALSE(healthReplyFromJson(json{{"status", "ok"}}).ok());
  EXPECT_FALSE(errorReplyFromJson(json{{"message", "x"}}).ok());
}

}  // namespace
}  // namespace membrane::proxy
