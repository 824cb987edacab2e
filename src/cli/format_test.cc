#include "src/cli/format.h"

#include <gtest/gtest.h>

namespace membrane::cli {
namespace {

Json endpoints() {
  return Json::parse(R"([
    {"id": 1204, "name": "xwing", "namespace": "default",
     "labels": ["k8s:org=alliance", "k8s:class=xwing"],
     "identity": 257, "ipv4": "10.200.0.7", "state": "ready",
     "policy": {"ingress": {"enforcing": false, "audit": false}, "egress": {"enforcing": true, "audit": true}, "revision": 3}},
    {"id": 1100, "name": "deathstar", "namespace": "default",
     "labels": ["k8s:class=deathstar", "k8s:io.kubernetes.pod.namespace=default", "k8s:org=empire"],
     "identity": 256, "ipv4": "10.200.0.5", "state": "ready",
     "policy": {"ingress": {"enforcing": true, "audit": false}, "egress": {"enforcing": false, "audit": false}, "revision": 3}}
  ])");
}

TEST(FormatTest, EndpointListTwoEndpoints) {
  EXPECT_EQ(formatEndpointList(endpoints()),
            "ENDPOINT   POLICY (ingress)   POLICY (egress)   IDENTITY   LABELS (source:key[=value])               IPv6   IPv4         STATUS\n"
            "           ENFORCEMENT        ENFORCEMENT\n"
            "1100       Enabled            Disabled          256        k8s:class=deathstar                              10.200.0.5   ready\n"
            "                                                           k8s:io.kubernetes.pod.namespace=default\n"
            "                                                           k8s:org=empire\n"
            "1204       Disabled           Audit             257        k8s:class=xwing                                  10.200.0.7   ready\n"
            "                                                           k8s:org=alliance\n");
}

TEST(FormatTest, EndpointListEmptyAndMalformed) {
  const std::string header =
      "ENDPOINT   POLICY (ingress)   POLICY (egress)   IDENTITY   LABELS (source:key[=value])   IPv6   IPv4   STATUS\n"
      "           ENFORCEMENT        ENFORCEMENT\n";
  EXPECT_EQ(formatEndpointList(Json::array()), header);
  EXPECT_EQ(formatEndpointList(Json::parse(R"({"not": "an array"})")), header);
  // Wrong field types print as empty/0 instead of throwing.
  EXPECT_NO_THROW(formatEndpointList(Json::parse(R"([{"id": "x", "labels": 5, "policy": []}])")));
}

TEST(FormatTest, IdentityList) {
  Json ids = Json::parse(R"([
    {"id": 257, "labels": ["k8s:org=alliance", "k8s:class=xwing"], "reserved": false},
    {"id": 1, "labels": ["reserved:host"], "reserved": true}])");
  EXPECT_EQ(formatIdentityList(ids),
            "ID    LABELS\n"
            "1     reserved:host\n"
            "257   k8s:class=xwing\n"
            "      k8s:org=alliance\n");
}

Json tcpEvent(const char* type) {
  return Json{{"type", type},
              {"time", "2026-11-24T19:21:03.123456Z"},
              {"reason", "Policy denied"},
              {"reason_code", 133},
              {"direction", "INGRESS"},
              {"endpoint", 1204},
              {"ifindex", 42},
              {"src_identity", 257},
              {"dst_identity", 256},
              {"dst_endpoint", 1100},
              {"src", "10.200.0.7:43122"},
              {"dst", "10.200.0.5:80"},
              {"proto", "TCP"},
              {"tcp_flags", "SYN"},
              {"len", 74}};
}

TEST(FormatTest, MonitorDrop) {
  EXPECT_EQ(formatEvent(tcpEvent("drop")),
            "xx drop (Policy denied) to endpoint 1100, ifindex 42, identity 257->256: "
            "10.200.0.7:43122 -> 10.200.0.5:80 tcp SYN");
}

TEST(FormatTest, MonitorPolicyVerdict) {
  Json ev = tcpEvent("policy-verdict");
  ev["verdict"] = "FORWARDED";
  ev["match"] = "L3-L4";
  EXPECT_EQ(formatEvent(ev),
            "Policy verdict log: local EP ID 1100, remote ID 257, proto 6, ingress, action allow, match L3-L4, "
            "10.200.0.7:43122 -> 10.200.0.5:80 tcp SYN");
  ev["verdict"] = "DROPPED";
  ev["match"] = "none";
  ev["direction"] = "EGRESS";
  ev["dst_identity"] = 2;
  EXPECT_EQ(formatEvent(ev),
            "Policy verdict log: local EP ID 1204, remote ID world, proto 6, egress, action deny, match none, "
            "10.200.0.7:43122 -> 10.200.0.5:80 tcp SYN");
  ev["verdict"] = "AUDIT";
  EXPECT_NE(formatEvent(ev).find(", action audit, "), std::string::npos);
}

TEST(FormatTest, MonitorTrace) {
  Json ev = tcpEvent("trace");
  ev["observation_point"] = "to-endpoint";
  ev["ct_state"] = "new";
  EXPECT_EQ(formatEvent(ev),
            "-> endpoint 1204, identity 257->256 state new ifindex 42: 10.200.0.7:43122 -> 10.200.0.5:80 tcp SYN");
  ev["observation_point"] = "to-stack";
  ev["ct_state"] = 2;  // numeric form from the datapath
  ev["tcp_flags"] = Json::array({"SYN", "ACK"});
  EXPECT_EQ(formatEvent(ev),
            "-> stack, identity 257->256 state reply ifindex 42: 10.200.0.7:43122 -> 10.200.0.5:80 tcp SYN, ACK");
}

TEST(FormatTest, MonitorIcmpDrop) {
  Json ev = tcpEvent("drop");
  ev["proto"] = "ICMP";
  ev["src"] = "10.200.0.7";
  ev["dst"] = "10.200.0.5";
  ev["icmp_type"] = 8;
  ev.erase("tcp_flags");
  EXPECT_EQ(formatEvent(ev),
            "xx drop (Policy denied) to endpoint 1100, ifindex 42, identity 257->256: 10.200.0.7 -> 10.200.0.5 "
            "EchoRequest");
  ev["icmp_type"] = "EchoReply";
  EXPECT_EQ(formatEvent(ev).substr(formatEvent(ev).rfind(':') + 2), "10.200.0.7 -> 10.200.0.5 EchoReply");
}

TEST(FormatTest, MonitorOtherTypes) {
  EXPECT_EQ(formatEvent(Json{{"type", "lost"}, {"lost", 12}}), "Lost 12 events");
  EXPECT_EQ(formatEvent(Json{{"type", "capture"}}), "");
  EXPECT_EQ(formatEvent(Json::array()), "");
}

TEST(FormatTest, MonitorL7RequestAndResponse) {
  Json req = Json::parse(R"({"type":"l7","l7_type":"request","direction":"ingress","verdict":"Denied",
    "method":"PUT","url":"/v1/exhaust-port",
    "src":{"ip":"10.200.0.3","port":41234,"identity":258,"endpoint":12,"labels":["k8s:class=tiefighter","k8s:org=empire"]},
    "dst":{"ip":"10.200.0.2","port":80,"identity":257,"endpoint":11,"labels":["k8s:class=deathstar"]}})");
  EXPECT_EQ(formatEvent(req),
            "<- Request http from 12 ([k8s:class=tiefighter k8s:org=empire]) to 11 ([k8s:class=deathstar]), "
            "identity 258->257, verdict Denied PUT http://10.200.0.2:80/v1/exhaust-port => 0");
  Json resp = req;
  resp["l7_type"] = "response";
  resp["status"] = 403;
  resp["latency_us"] = 812;
  EXPECT_EQ(formatEvent(resp),
            "<- Response http to 12 ([k8s:class=tiefighter k8s:org=empire]) from 11 ([k8s:class=deathstar]), "
            "identity 257->258, verdict Denied PUT http://10.200.0.2:80/v1/exhaust-port => 403, latency 812us");
  // Egress, an upstream error, and a source that is not a local endpoint.
  Json err = resp;
  err["direction"] = "egress";
  err["verdict"] = "Error";
  err["status"] = 503;
  err["error"] = "connect_failed";
  err["src"].erase("endpoint");
  err["src"]["labels"] = Json::array();
  EXPECT_EQ(formatEvent(err),
            "-> Response http to 0 ([]) from 11 ([k8s:class=deathstar]), identity 257->258, verdict Error PUT "
            "http://10.200.0.2:80/v1/exhaust-port => 503, latency 812us, error connect_failed");
  // The proxy's full URL (built from the Host header) is printed as given.
  Json named = req;
  named["url"] = "http://deathstar.default.svc.cluster.local/v1/exhaust-port";
  EXPECT_EQ(formatEvent(named),
            "<- Request http from 12 ([k8s:class=tiefighter k8s:org=empire]) to 11 ([k8s:class=deathstar]), "
            "identity 258->257, verdict Denied PUT http://deathstar.default.svc.cluster.local/v1/exhaust-port => 0");
}

TEST(FormatTest, BpfPolicyTable) {
  Json entries = Json::parse(R"([
    {"direction": "Ingress", "identity": 257, "labels": ["k8s:class=tiefighter", "k8s:org=empire"], "port": 80,
     "proto": "TCP", "deny": false, "proxy_port": 0, "packets": 4, "bytes": 296, "policy": "default/rule1"},
    {"direction": "Egress", "identity": 0, "labels": [], "port": 0, "proto": "ANY", "deny": false,
     "proxy_port": 0, "packets": 0, "bytes": 0, "policy": ""},
    {"direction": "Ingress", "identity": 2, "labels": ["reserved:world"], "port": 53, "proto": "UDP", "deny": true,
     "proxy_port": 15001, "packets": 1, "bytes": 60, "policy": "default/deny-world"}])");
  EXPECT_EQ(formatBpfPolicy(entries),
            "POLICY   DIRECTION   IDENTITY   LABELS (source:key[=value])   PORT/PROTO   PROXY PORT   BYTES   PACKETS   DERIVED FROM\n"
            "Allow    Ingress     257        k8s:class=tiefighter          80/TCP       NONE         296     4         default/rule1\n"
            "                                k8s:org=empire\n"
            "Allow    Egress      ANY        reserved:unknown              ANY          NONE         0       0\n"
            "Deny     Ingress     2          reserved:world                53/UDP       15001        60      1         default/deny-world\n");
  // Without policy names there is no DERIVED FROM column.
  Json one = Json::array({entries[1]});
  EXPECT_EQ(formatBpfPolicy(one),
            "POLICY   DIRECTION   IDENTITY   LABELS (source:key[=value])   PORT/PROTO   PROXY PORT   BYTES   PACKETS\n"
            "Allow    Egress      ANY        reserved:unknown              ANY          NONE         0       0\n");
}

TEST(FormatTest, StatusLines) {
  Json h = Json::parse(R"({"status": "ok", "version": "0.1.0", "revision": "abc1234", "uptime_seconds": 5,
    "endpoints": 3, "policy_revision": 2, "datapath": {"status": "ok", "bpf_root": "/sys/fs/bpf/membrane"},
    "pod_cidr": "10.200.0.0/16", "message": ""})");
  EXPECT_EQ(formatStatus(h),
            "KVStore:             Disabled\n"
            "Kubernetes:          Disabled\n"
            "membrane:            Ok   0.1.0 (abc1234)\n"
            "Datapath:            Ok   bpf-root /sys/fs/bpf/membrane\n"
            "IPv4 address pool:   10.200.0.0/16\n"
            "Endpoints:           3\n"
            "Policy revision:     2\n"
            "Cluster health:      Disabled\n");
  EXPECT_TRUE(statusOk(h));
  EXPECT_EQ(formatStatusBrief(h), "OK\n");
  h["status"] = "degraded";
  h["message"] = "1 endpoints not ready";
  EXPECT_FALSE(statusOk(h));
  EXPECT_EQ(formatStatusBrief(h), "Degraded: 1 endpoints not ready\n");
  EXPECT_NE(formatStatus(h).find("membrane:            Degraded   0.1.0 (abc1234)\n"), std::string::npos);
  EXPECT_NE(formatStatus(h).find("Message:             1 endpoints not ready\n"), std::string::npos);
}

TEST(FormatTest, MetricsCtPolicyDiagnostics) {
  Json m = Json::parse(R"([{"name": "cilium_drop_count_total", "labels": {"reason": "Policy denied", "direction": "INGRESS"}, "value": 3},
                           {"name": "cilium_policy", "labels": {}, "value": 2}])");
  std::regex re("drop");
  EXPECT_EQ(formatMetricList(m, &re),
            "Metric                    Labels                                   Value\n"
            "cilium_drop_count_total   direction=INGRESS reason=Policy denied   3.000000\n");
  EXPECT_EQ(formatMetricList(m, nullptr).substr(formatMetricList(m, nullptr).rfind("cilium_policy")),
            "cilium_policy                                                      2.000000\n");

  Json ct = Json::parse(R"([{"src": "10.200.0.7:43122", "dst": "10.200.0.5:80", "proto": "TCP", "expires_in_seconds": 21590,
    "tx_packets": 4, "tx_bytes": 260, "rx_packets": 3, "rx_bytes": 198, "src_identity": 257, "dst_identity": 256, "flags": []},
    {"src": "10.200.0.7", "dst": "10.200.0.5", "proto": "ICMP", "expires_in_seconds": 50, "tx_packets": 1, "tx_bytes": 84,
     "rx_packets": 0, "rx_bytes": 0, "src_identity": 257, "flags": ["seen_non_syn"]}])");
  EXPECT_EQ(formatCtList(ct),
            "TCP OUT 10.200.0.7:43122 -> 10.200.0.5:80 expires=21590 RxPackets=3 RxBytes=198 TxPackets=4 TxBytes=260 "
            "SourceSecurityID=257\n"
            "ICMP OUT 10.200.0.7 -> 10.200.0.5 expires=50 RxPackets=0 RxBytes=0 TxPackets=1 TxBytes=84 "
            "SourceSecurityID=257 Flags=seen_non_syn\n");

  EXPECT_EQ(formatPolicyGet(Json{{"revision", 4}, {"policies", Json::array({Json{{"name", "rule1"}}})}}),
            "[\n  {\n    \"name\": \"rule1\"\n  }\n]\nRevision: 4\n");

  Json err = Json::parse(R"({"error": "policy p.yaml rejected", "code": 400, "diagnostics": [
    {"file": "p.yaml", "line": 7, "column": 9, "path": "spec.ingress[0].toPorts[0].ports[0].port", "message": "port 70000 out of range"},
    {"file": "p.yaml", "line": 1, "column": 1, "path": "", "message": "unknown kind"}]})");
  EXPECT_EQ(formatDiagnostics(err),
            "p.yaml:7:9: spec.ingress[0].toPorts[0].ports[0].port: port 70000 out of range\n"
            "p.yaml:1:1: unknown kind\n");
}


TEST(FormatTest, ClusterHealthLineAndHealthStatus) {
  EXPECT_EQ(formatClusterHealthLine(Json::parse(
                R"({"reachable": 1, "total": 1, "probe_time": "2026-11-24T21:00:00Z", "interval_seconds": 60})")),
            "1/1 reachable (2026-11-24T21:00:00Z) (Probe interval: 60s)");
  EXPECT_EQ(formatClusterHealthLine(Json::parse(R"({"pending": true, "interval_seconds": 5})")),
            "Probe pending (Probe interval: 5s)");
  EXPECT_EQ(formatClusterHealthLine(Json()), "Disabled");

  EXPECT_EQ(formatRtt(315.254e-6), "315.254µs");
  EXPECT_EQ(formatRtt(0.0015), "1.5ms");
  EXPECT_EQ(formatRtt(2.0), "2s");
  EXPECT_EQ(formatRtt(4e-7), "400ns");
  // Rounded to the nearest nanosecond, halves away from zero, as Go rounds a
  // float to a Duration (clang-tidy bugprone-incorrect-roundings: +0.5 then truncate was wrong below 0).
  EXPECT_EQ(formatRtt(2.5e-9), "3ns");
  EXPECT_EQ(formatRtt(-1.5e-9), "-2ns");

  Json h = Json::parse(R"({"probe_time": "2026-11-24T21:00:00Z", "reachable": 0, "total": 1, "nodes": [
    {"name": "node1", "local": true,
     "host": {"address": "10.200.0.1", "reachable": true,
              "icmp": {"ok": true, "rtt_seconds": 0.000315254}, "http": {"ok": true, "rtt_seconds": 0.000368579}},
     "endpoint": {"address": "10.200.0.2", "reachable": false,
                  "icmp": {"ok": false, "rtt_seconds": 0, "error": "timeout after 1s"},
                  "http": {"ok": false, "rtt_seconds": 0, "error": "connect: Connection refused"}}}]})");
  EXPECT_EQ(formatHealthStatus(h, false),
            "Probe time:   2026-11-24T21:00:00Z\n"
            "Nodes:\n"
            "  node1 (localhost):\n"
            "    Host connectivity to 10.200.0.1:\n"
            "      ICMP to stack:   OK, RTT=315.254µs\n"
            "      HTTP to agent:   OK, RTT=368.579µs\n"
            "    Endpoint connectivity to 10.200.0.2:\n"
            "      ICMP to stack:   timeout after 1s\n"
            "      HTTP to agent:   connect: Connection refused\n");
  EXPECT_EQ(formatHealthStatus(h, true),
            "Probe time:   2026-11-24T21:00:00Z\n"
            "Nodes:\n"
            "  node1 (localhost): host OK, endpoint unreachable\n");
}

}  // namespace
}  // namespace membrane::cli
