// Issue 12 item 4: every label value membrane emits, pinned per family, as
// audited against Cilium's source (docs/metrics.md, "Label values"). The test
// drives every path that creates a series -- the typed methods with the
// values the agent's callers pass (the constants of membrane/metrics.h), and
// the scrape-time sources with every row kind -- and compares the label
// values a scrape then contains with the table. Renaming a value, or emitting
// a new one, fails here first.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>

#include "membrane/metrics.h"

namespace membrane::metrics {
namespace {

using Values = std::set<std::string>;
using Table = std::map<std::string, std::map<std::string, Values>>;  // family -> label -> values

void emitEverything(AgentMetrics& m) {
  m.recordEndpointRegeneration(true);
  m.recordEndpointRegeneration(false);
  for (const char* scope : {"total", "policyCalculation", "endpointPolicyCalculation", "mapSync"}) {
    m.observeRegenerationTime(scope, true, 0.001);
    m.observeRegenerationTime(scope, false, 0.001);
  }
  m.recordPolicyChange(true);
  m.recordPolicyChange(false);
  m.observePolicyImplementationDelay(kPolicySourceApi, 0.001);
  m.setNodeConnectivityStatus("node", 1, 0, 0);
  m.setNodeConnectivityStatus("endpoint", 1, 0, 0);
  for (const char* type : {"node", "endpoint"})
    for (const char* proto : {"icmp", "http"}) m.observeNodeConnectivityLatency(type, proto, 0.001);
  for (auto p : {CtProtocol::Tcp, CtProtocol::NonTcp}) {
    m.recordConntrackGc(CtFamily::Ipv4, p, true, 0.01, 1, 0);
    m.recordConntrackGc(CtFamily::Ipv4, p, false, 0.01, 1, 0);
  }
  m.recordConntrackWalk(CtFamily::Ipv4, 1, 1, 1);
  for (const char* scope :
       {"earlyInit", "bpfBase", "restore", "workloadsInit", "proxyStart", "healthCheck", "initAPI", "overall"})
    m.setBootstrapSeconds(scope, true, 0.1);
  m.recordLogLine(kLogLevelWarning, "daemon");
  m.recordLogLine(kLogLevelError, "daemon");
  m.recordControllerRun("ct-map-gc", true, 0.01);
  m.recordControllerRun("ct-map-gc", false, 0.01);
  m.recordNodeEvent(kNodeEventAdd, "local");
  m.recordNodeEvent(kNodeEventDelete, "local");
  for (const char* action : {"update", "delete"}) {
    m.recordServiceEvent(action);
    m.observeServiceImplementationDelay(action, 0.01);
  }
  m.observePolicyIncrementalUpdate(0.01);
  for (auto reason : {kTriggerPolicyAdded, kTriggerPolicyDeleted, kTriggerIdentities})
    m.recordPolicyUpdateTrigger(reason);
  m.observePolicyUpdateRun(0.01, 0.0, 0);
  m.recordIpcacheEvent("upsert");
  m.recordIpcacheEvent("delete");
  m.recordIpcacheError("upsert", "invalid_prefix");
  m.recordIpcacheError("delete", "invalid_prefix");
  m.recordIpcacheError("delete", "no_such_prefix");
  ASSERT_TRUE(m.enableMetrics({"+cilium_bpf_syscall_duration_seconds"}).ok());
  for (const char* op : {"update", "delete", "lookup", "getNextKey"}) {
    m.observeBpfSyscall(op, true, 1e-5);
    m.observeBpfSyscall(op, false, 1e-5);
  }
  m.setLegacyNames(true);
  // Every row kind of the scrape-time sources: drop codes of each direction, forwards.
  m.registerDatapathSource([] {
    return Result<std::vector<DatapathCounter>>(std::vector<DatapathCounter>{
        {0, 1, 1, 1}, {0, 2, 1, 1}, {133, 1, 1, 1}, {181, 2, 1, 1}, {132, 2, 1, 1}, {133, 0, 1, 1}});
  });
  m.registerMapOpsSource([] {
    std::vector<MapOps> rows;
    for (const char* map : {"mb_policy_v1", "mb_lxc_v1", "mb_lxcip_v1", "mb_ipcache_v1"})
      for (const char* op : {"update", "delete", "lookup", "getNextKey"})
        for (const char* outcome : {"success", "fail"}) rows.push_back({map, op, outcome, 1});
    return Result<std::vector<MapOps>>(rows);
  });
  m.registerL7Source([] {
    L7Stats s;
    for (const char* err : {"", "connect_failed", "upstream_reset", "timeout"})
      for (const char* scope : {"upstreamTime", "totalTime"}) s.upstream_reply_seconds.push_back({err, "http", scope, {}, 1, 0.1});
    return Result<std::vector<L7Stats>>(std::vector<L7Stats>{s});
  });
}

TEST(LabelValues, EveryFamilyEmitsExactlyCiliumsValues) {
  AgentMetrics m(BuildInfo{"1.0.0", "abc", "linux/amd64"});
  emitEverything(m);
  const Values ok_fail = {"success", "fail"};
  const Values status_sf = {"success", "failure"};  // Cilium's controller and regeneration "status"
  const Values ct_status = {"completed", "uncompleted"};
  const Values ct_proto = {"TCP", "non-TCP"};
  const Values ipv4 = {"ipv4"};
  const Values maps = {"mb_policy_v1", "mb_lxc_v1", "mb_lxcip_v1", "mb_ipcache_v1"};
  const Values ops = {"update", "delete", "lookup", "getNextKey"};
  const Table want = {
      {"cilium_agent_bootstrap_seconds",
       {{"scope", {"earlyInit", "bpfBase", "restore", "workloadsInit", "proxyStart", "healthCheck", "initAPI",
                   "overall"}},
        {"outcome", {"success"}}}},
      {"cilium_bpf_map_ops_total", {{"map_name", maps}, {"operation", ops}, {"outcome", ok_fail}}},
      {"cilium_bpf_syscall_duration_seconds_count", {{"operation", ops}, {"outcome", ok_fail}}},
      {"cilium_controllers_runs_total", {{"status", status_sf}}},
      {"cilium_datapath_conntrack_dump_resets_total",
       {{"area", {"conntrack"}}, {"name", {"dump_interrupts"}}, {"family", ipv4}}},
      {"cilium_datapath_errors_total", {{"area", {"conntrack"}}, {"name", {"dump_interrupts"}}, {"family", ipv4}}},
      {"cilium_datapath_conntrack_gc_key_fallbacks_total", {{"family", ipv4}, {"protocol", ct_proto}}},
      {"cilium_datapath_conntrack_gc_runs_total", {{"family", ipv4}, {"protocol", ct_proto}, {"status", ct_status}}},
      {"cilium_datapath_conntrack_gc_entries",
       {{"family", ipv4}, {"protocol", ct_proto}, {"status", {"alive", "deleted"}}}},
      {"cilium_drop_count_total",
       {{"reason", {"Policy denied", "Policy denied by denylist", "Invalid source ip"}},
        {"direction", {"INGRESS", "EGRESS", "UNKNOWN"}}}},
      {"cilium_forward_count_total", {{"direction", {"INGRESS", "EGRESS"}}}},
      {"cilium_endpoint_regeneration_time_stats_seconds_count",
       {{"scope", {"total", "policyCalculation", "endpointPolicyCalculation", "mapSync"}}, {"status", status_sf}}},
      {"cilium_endpoint_regenerations_total", {{"outcome", ok_fail}}},
      {"cilium_endpoint_regenerations", {{"outcome", ok_fail}}},
      {"cilium_endpoint_state",
       {{"endpoint_state", {"creating", "waiting-for-identity", "not-ready", "waiting-to-regenerate", "regenerating",
                            "restoring", "ready", "disconnecting", "disconnected", "invalid"}}}},
      {"cilium_errors_warnings_total", {{"level", {"WARN", "ERROR"}}, {"subsystem", {"daemon"}}}},
      {"cilium_identity", {{"type", {"node_local", "cluster_local", "remote_node"}}}},
      {"cilium_identity_label_sources", {{"source", {"k8s", "reserved", "cidr"}}}},
      {"cilium_ip_addresses", {{"family", ipv4}}},
      {"cilium_ipam_capacity", {{"family", ipv4}}},
      {"cilium_ipcache_events_total", {{"type", {"upsert", "delete"}}}},
      {"cilium_ipcache_errors_total", {{"type", {"upsert", "delete"}}, {"error", {"invalid_prefix", "no_such_prefix"}}}},
      {"cilium_node_health_connectivity_status",
       {{"type", {"node", "endpoint"}}, {"status", {"reachable", "unreachable", "unknown"}}}},
      {"cilium_node_health_connectivity_latency_seconds_count",
       {{"type", {"node", "endpoint"}}, {"protocol", {"icmp", "http"}}, {"address_type", {"primary"}}}},
      {"cilium_nodes_all_events_received_total", {{"event_type", {"add", "delete"}}, {"source", {"local"}}}},
      {"cilium_policy_change_total", {{"outcome", ok_fail}}},
      {"cilium_policy_endpoint_enforcement_status",
       {{"enforcement", {"none", "ingress", "egress", "both", "audit-ingress", "audit-egress", "audit-both"}}}},
      {"cilium_policy_implementation_delay_count", {{"source", {"api"}}}},
      {"cilium_policy_incremental_update_duration_count", {{"scope", {"global"}}}},
      {"cilium_policy_l7_total",
       {{"rule", {"received", "forwarded", "denied", "parse_errors"}}, {"proxy_type", {"http"}}}},
      {"cilium_policy_selector_match_count_max", {{"class", {"world", "cluster", "fqdn", "other"}}}},
      {"cilium_proxy_redirects", {{"protocol_l7", {"http"}}}},
      {"cilium_proxy_upstream_reply_seconds_count",
       {{"error", {"", "connect_failed", "upstream_reset", "timeout"}},
        {"protocol_l7", {"http"}},
        {"scope", {"upstreamTime", "totalTime"}}}},
      {"cilium_service_implementation_delay_count", {{"action", {"update", "delete"}}}},
      {"cilium_services_events_total", {{"action", {"update", "delete"}}}},
      {"cilium_triggers_policy_update_call_duration_seconds_count", {{"type", {"duration", "latency"}}}},
      {"cilium_triggers_policy_update_total",
       {{"reason", {"policy rules added", "policy rules deleted", "one or more identities created or deleted"}}}},
      {"cilium_version", {{"version", {"1.0.0"}}, {"revision", {"abc"}}, {"arch", {"linux/amd64"}}}},
  };
  Table got;
  for (const auto& s : m.samples()) {
    if (!want.count(s.name)) continue;
    for (const auto& [label, value] : s.labels) got[s.name][label].insert(value);
  }
  for (const auto& [family, labels] : want) EXPECT_EQ(got[family], labels) << family;
}

}  // namespace
}  // namespace membrane::metrics
