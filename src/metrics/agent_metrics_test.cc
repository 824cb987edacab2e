#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "membrane/metrics.h"

namespace membrane::metrics {
namespace {

using Labels = std::map<std::string, std::string>;

std::vector<Sample> withPrefix(const std::vector<Sample>& all, const std::string& prefix) {
  std::vector<Sample> out;
  for (const auto& s : all)
    if (s.name.rfind(prefix, 0) == 0) out.push_back(s);
  return out;
}

const Sample* find(const std::vector<Sample>& all, const std::string& name, const Labels& labels) {
  for (const auto& s : all)
    if (s.name == name && s.labels == labels) return &s;
  return nullptr;
}

std::vector<DatapathCounter> fakeRows() {
  return {
      {133, 1, 5, 490},    // Policy denied, INGRESS
      {133, 1, 3, 294},    // the same key from another map row (e.g. another endpoint's program)
      {0, 2, 10, 1000},    // forwarded, EGRESS
      {181, 2, 2, 120},    // Policy denied by denylist, EGRESS
      {132, 2, 1, 60},     // Invalid source ip, EGRESS
  };
}

TEST(DatapathCollector, ExactSamplesFromFakeSource) {
  AgentMetrics m;
  m.registerDatapathSource([] { return Result<std::vector<DatapathCounter>>(fakeRows()); });
  auto all = m.samples();
  std::vector<Sample> expected = {
      {"cilium_drop_bytes_total", {{"direction", "EGRESS"}, {"reason", "Invalid source ip"}}, 60},
      {"cilium_drop_bytes_total", {{"direction", "EGRESS"}, {"reason", "Policy denied by denylist"}}, 120},
      {"cilium_drop_bytes_total", {{"direction", "INGRESS"}, {"reason", "Policy denied"}}, 784},
      {"cilium_drop_count_total", {{"direction", "EGRESS"}, {"reason", "Invalid source ip"}}, 1},
      {"cilium_drop_count_total", {{"direction", "EGRESS"}, {"reason", "Policy denied by denylist"}}, 2},
      {"cilium_drop_count_total", {{"direction", "INGRESS"}, {"reason", "Policy denied"}}, 8},
  };
  EXPECT_EQ(withPrefix(all, "cilium_drop_"), expected);
  std::vector<Sample> expected_fwd = {
      {"cilium_forward_bytes_total", {{"direction", "EGRESS"}}, 1000},
      {"cilium_forward_count_total", {{"direction", "EGRESS"}}, 10},
  };
  EXPECT_EQ(withPrefix(all, "cilium_forward_"), expected_fwd);

  const std::string text = m.renderText();
  EXPECT_THAT(text, testing::HasSubstr(
                        "# TYPE cilium_drop_count_total counter\n"));
  EXPECT_THAT(text, testing::HasSubstr(
                        "cilium_drop_count_total{direction=\"INGRESS\",reason=\"Policy denied\"} 8\n"));
  EXPECT_THAT(text, testing::HasSubstr("cilium_forward_count_total{direction=\"EGRESS\"} 10\n"));
  EXPECT_THAT(text, testing::HasSubstr("cilium_forward_bytes_total{direction=\"EGRESS\"} 1000\n"));
}

TEST(DatapathCollector, FailingSourceLeavesFamiliesOutAndRecovers) {
  AgentMetrics m;
  std::atomic<bool> fail{true};
  std::atomic<int> calls{0};
  m.registerDatapathSource([&]() -> Result<std::vector<DatapathCounter>> {
    ++calls;
    if (fail) return Error(EPERM, "read mb_metrics_v1: Operation not permitted");
    return fakeRows();
  });
  for (int i = 0; i < 2; ++i) {  // a streak: logged once, scraped twice
    auto all = m.samples();
    EXPECT_TRUE(withPrefix(all, "cilium_drop_").empty());
    EXPECT_TRUE(withPrefix(all, "cilium_forward_").empty());
    EXPECT_NE(find(all, "cilium_policy", {}), nullptr);  // the rest of the scrape is intact
  }
  const std::string text = m.renderText();
  EXPECT_THAT(text, testing::Not(testing::HasSubstr("cilium_drop_count_total")));
  EXPECT_THAT(text, testing::HasSubstr("cilium_version{"));
  EXPECT_EQ(calls, 3);

  fail = false;
  const Sample* s = nullptr;
  auto all = m.samples();
  s = find(all, "cilium_drop_count_total", {{"direction", "INGRESS"}, {"reason", "Policy denied"}});
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->value, 8);
}

TEST(DatapathCollector, ThrowingSourceIsAFailureNotACrash) {
  AgentMetrics m;
  m.registerDatapathSource([]() -> Result<std::vector<DatapathCounter>> { throw std::runtime_error("boom"); });
  auto all = m.samples();
  EXPECT_TRUE(withPrefix(all, "cilium_drop_").empty());
  EXPECT_NE(find(all, "cilium_endpoint_count", {}), nullptr);
}

TEST(DatapathCollector, UnregisteredOrUnregisteredAgainEmitsNothing) {
  AgentMetrics m;
  EXPECT_TRUE(withPrefix(m.samples(), "cilium_forward_").empty());
  m.registerDatapathSource([] { return Result<std::vector<DatapathCounter>>(fakeRows()); });
  EXPECT_FALSE(withPrefix(m.samples(), "cilium_forward_").empty());
  m.registerDatapathSource(nullptr);
  EXPECT_TRUE(withPrefix(m.samples(), "cilium_forward_").empty());
}

TEST(MapPressure, FromSourceAndFailure) {
  AgentMetrics m;
  bool fail = false;
  m.registerMapPressureSource([&]() -> Result<std::vector<MapPressure>> {
    if (fail) return Error(EIO, "nope");
    return std::vector<MapPressure>{{"mb_policy_v1", 0.125}, {"mb_ct4_v1", 0.5}};
  });
  auto all = withPrefix(m.samples(), "cilium_bpf_map_pressure");
  std::vector<Sample> expected = {
      {"cilium_bpf_map_pressure", {{"map_name", "mb_ct4_v1"}}, 0.5},
      {"cilium_bpf_map_pressure", {{"map_name", "mb_policy_v1"}}, 0.125},
  };
  EXPECT_EQ(all, expected);
  fail = true;
  EXPECT_TRUE(withPrefix(m.samples(), "cilium_bpf_map_pressure").empty());
}

// cilium_bpf_map_capacity: each map's size, except 65536 (Cilium leaves those out).
TEST(MapPressure, CapacityLeavesOut65536) {
  AgentMetrics m;
  m.registerMapPressureSource([]() -> Result<std::vector<MapPressure>> {
    return std::vector<MapPressure>{{"mb_policy_v1", 0.1, 16384}, {"mb_ct4_v1", 0.5, 65536}, {"mb_x", 0.0, 0}};
  });
  std::vector<Sample> expected = {{"cilium_bpf_map_capacity", {{"map_group", "mb_policy_v1"}}, 16384}};
  EXPECT_EQ(withPrefix(m.samples(), "cilium_bpf_map_capacity"), expected);
}

TEST(BpfMemory, FromSourceAndFailure) {
  AgentMetrics m;
  bool fail = false;
  m.registerBpfMemorySource([&]() -> Result<std::vector<BpfMemory>> {
    if (fail) return Error(EPERM, "no");
    return std::vector<BpfMemory>{{4096, 8192}};
  });
  std::vector<Sample> expected = {{"cilium_bpf_maps_virtual_memory_max_bytes", {}, 4096}};
  EXPECT_EQ(withPrefix(m.samples(), "cilium_bpf_maps_virtual_memory_max_bytes"), expected);
  expected = {{"cilium_bpf_progs_virtual_memory_max_bytes", {}, 8192}};
  EXPECT_EQ(withPrefix(m.samples(), "cilium_bpf_progs_virtual_memory_max_bytes"), expected);
  fail = true;
  EXPECT_TRUE(withPrefix(m.samples(), "cilium_bpf_maps_virtual_memory_max_bytes").empty());
}

TEST(AgentMetrics, NodesAndNodeEvents) {
  AgentMetrics m;
  m.setNodes(1);
  m.recordNodeEvent("add", "local");
  EXPECT_EQ(withPrefix(m.samples(), "cilium_nodes_all_num"), (std::vector<Sample>{{"cilium_nodes_all_num", {}, 1}}));
  EXPECT_EQ(withPrefix(m.samples(), "cilium_nodes_all_events_received_total"),
            (std::vector<Sample>{
                {"cilium_nodes_all_events_received_total", {{"event_type", "add"}, {"source", "local"}}, 1}}));
}

TEST(AgentMetrics, DefaultsAndTypedUpdates) {
  AgentMetrics m(BuildInfo{"0.1.0", "abc1234", "amd64"});
  auto all = m.samples();
  // Exposed from the start, at 0: snapshot gauges' known values, outcome
  // counters, health gauges.
  for (auto st : kEndpointStates) {
    const Sample* s = find(all, "cilium_endpoint_state", {{"endpoint_state", std::string(st)}});
    ASSERT_NE(s, nullptr) << st;
    EXPECT_EQ(s->value, 0);
  }
  for (auto e : kEnforcementStates)
    EXPECT_NE(find(all, "cilium_policy_endpoint_enforcement_status", {{"enforcement", std::string(e)}}), nullptr);
  for (auto t : kIdentityTypes) EXPECT_NE(find(all, "cilium_identity", {{"type", std::string(t)}}), nullptr);
  EXPECT_NE(find(all, "cilium_endpoint_regenerations_total", {{"outcome", "fail"}}), nullptr);
  EXPECT_NE(find(all, "cilium_policy_change_total", {{"outcome", "fail"}}), nullptr);
  // Cilium's LabelValueOutcomeFail is "fail": dashboards query outcome="fail" (issue 12).
  EXPECT_EQ(find(all, "cilium_policy_change_total", {{"outcome", "failure"}}), nullptr);
  EXPECT_NE(find(all, "cilium_unreachable_nodes", {}), nullptr);
  EXPECT_NE(find(all, "cilium_unreachable_health_endpoints", {}), nullptr);
  const Sample* v = find(all, "cilium_version", {{"version", "0.1.0"}, {"revision", "abc1234"}, {"arch", "amd64"}});
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->value, 1);
  // Histograms appear only once observed.
  EXPECT_TRUE(withPrefix(all, "cilium_endpoint_regeneration_time_stats_seconds").empty());

  m.setEndpointCount(3);
  m.setEndpointsRegenerating(1);
  m.setEndpointStates({{"ready", 2}, {"regenerating", 1}});
  m.setEndpointStates({{"ready", 3}});  // regenerating went back to 0
  m.recordEndpointRegeneration(true);
  m.recordEndpointRegeneration(true);
  m.recordEndpointRegeneration(false);
  m.setPolicyCount(2);
  m.setPolicyMaxRevision(7);
  m.recordPolicyChange(true);
  m.recordPolicyChange(false);
  m.setEnforcementStatus({{"ingress", 1}, {"none", 2}});
  m.setIdentities({{"node_local", 1}, {"cluster_local", 4}});
  m.setUnreachableNodes(1);
  m.setUnreachableHealthEndpoints(2);
  m.recordConntrackGc(CtFamily::Ipv4, CtProtocol::Tcp, true, 0.02, 40, 3);

  all = m.samples();
  auto value = [&](const std::string& name, const Labels& l) {
    const Sample* s = find(all, name, l);
    return s ? s->value : -1;
  };
  EXPECT_EQ(value("cilium_endpoint_count", {}), 3);
  EXPECT_EQ(value("cilium_endpoint_regenerating", {}), 1);
  EXPECT_EQ(value("cilium_endpoint_state", {{"endpoint_state", "ready"}}), 3);
  EXPECT_EQ(value("cilium_endpoint_state", {{"endpoint_state", "regenerating"}}), 0);
  EXPECT_EQ(value("cilium_endpoint_regenerations_total", {{"outcome", "success"}}), 2);
  EXPECT_EQ(value("cilium_endpoint_regenerations_total", {{"outcome", "fail"}}), 1);
  EXPECT_EQ(value("cilium_policy", {}), 2);
  EXPECT_EQ(value("cilium_policy_max_revision", {}), 7);
  EXPECT_EQ(value("cilium_policy_change_total", {{"outcome", "success"}}), 1);
  EXPECT_EQ(value("cilium_policy_change_total", {{"outcome", "fail"}}), 1);
  EXPECT_EQ(value("cilium_policy_import_errors_total", {}), 1);
  EXPECT_EQ(value("cilium_policy_endpoint_enforcement_status", {{"enforcement", "ingress"}}), 1);
  EXPECT_EQ(value("cilium_policy_endpoint_enforcement_status", {{"enforcement", "none"}}), 2);
  EXPECT_EQ(value("cilium_policy_endpoint_enforcement_status", {{"enforcement", "both"}}), 0);
  EXPECT_EQ(value("cilium_identity", {{"type", "cluster_local"}}), 4);
  EXPECT_EQ(value("cilium_identity", {{"type", "remote_node"}}), 0);
  EXPECT_EQ(value("cilium_unreachable_nodes", {}), 1);
  EXPECT_EQ(value("cilium_unreachable_health_endpoints", {}), 2);
  const Labels ct{{"family", "ipv4"}, {"protocol", "TCP"}};
  auto with = [](Labels l, const std::string& k, const std::string& v) {
    l[k] = v;
    return l;
  };
  EXPECT_EQ(value("cilium_datapath_conntrack_gc_runs_total", with(ct, "status", "completed")), 1);
  EXPECT_EQ(value("cilium_datapath_conntrack_gc_entries", with(ct, "status", "alive")), 40);
  EXPECT_EQ(value("cilium_datapath_conntrack_gc_entries", with(ct, "status", "deleted")), 3);
  EXPECT_EQ(value("cilium_datapath_conntrack_gc_duration_seconds_count", with(ct, "status", "completed")), 1);
  EXPECT_DOUBLE_EQ(value("cilium_datapath_conntrack_gc_duration_seconds_sum", with(ct, "status", "completed")),
                   0.02);
}

// Issue 12: the agent's own health under Cilium's names, exact values.
TEST(AgentMetrics, AgentControllersApiLogsAndIpam) {
  AgentMetrics m;
  auto value = [&](const std::string& name, const Labels& l) {
    auto all = m.samples();
    const Sample* s = find(all, name, l);
    return s ? s->value : -1;
  };
  // Present from the start, at 0 (alerts on increase() need the series).
  EXPECT_EQ(value("cilium_controllers_failing", {}), 0);
  EXPECT_EQ(value("cilium_controllers_runs_total", {{"status", "success"}}), 0);
  EXPECT_EQ(value("cilium_controllers_runs_total", {{"status", "failure"}}), 0);
  EXPECT_EQ(value("cilium_errors_warnings_total", {{"level", "WARN"}, {"subsystem", "daemon"}}), 0);
  EXPECT_EQ(value("cilium_errors_warnings_total", {{"level", "ERROR"}, {"subsystem", "daemon"}}), 0);
  for (auto src : kIdentityLabelSources) EXPECT_EQ(value("cilium_identity_label_sources", {{"source", std::string(src)}}), 0);

  m.declareController("a");
  m.declareController("b");
  m.recordControllerRun("a", false, 0.01);
  m.recordControllerRun("b", false, 0.01);
  EXPECT_EQ(value("cilium_controllers_failing", {}), 2);
  m.recordControllerRun("a", true, 0.02);  // a recovered: only b is failing
  EXPECT_EQ(value("cilium_controllers_failing", {}), 1);
  EXPECT_EQ(value("cilium_controllers_runs_total", {{"status", "success"}}), 1);
  EXPECT_EQ(value("cilium_controllers_runs_total", {{"status", "failure"}}), 2);
  EXPECT_EQ(value("cilium_controllers_runs_duration_seconds_count", {{"status", "failure"}}), 2);

  m.observeApiCall("/v1/endpoint/1204", "GET", 404, 0.002);
  m.observeApiCall("/v1/endpoint", "GET", 404, 0.002);
  m.observeApiCall("/v1/policy/wait", "GET", 200, 0.002);
  EXPECT_EQ(value("cilium_agent_api_process_time_seconds_count",
                  {{"path", "/v1/endpoint"}, {"method", "GET"}, {"return_code", "404"}}),
            2);
  EXPECT_EQ(value("cilium_agent_api_process_time_seconds_count",
                  {{"path", "/v1/policy"}, {"method", "GET"}, {"return_code", "200"}}),
            1);
  EXPECT_EQ(apiShortPath("/v1/endpoint/1204/config"), "/v1/endpoint");
  EXPECT_EQ(apiShortPath("/v1/healthz"), "/v1/healthz");
  EXPECT_EQ(apiShortPath("/"), "/");

  m.recordLogLine("WARN", "daemon");
  m.recordLogLine("WARN", "daemon");
  m.recordLogLine("ERROR", "daemon");
  EXPECT_EQ(value("cilium_errors_warnings_total", {{"level", "WARN"}, {"subsystem", "daemon"}}), 2);
  EXPECT_EQ(value("cilium_errors_warnings_total", {{"level", "ERROR"}, {"subsystem", "daemon"}}), 1);

  m.setBootstrapSeconds("overall", true, 1.5);
  m.setBootstrapSeconds("bpfBase", true, 0.25);
  EXPECT_EQ(value("cilium_agent_bootstrap_seconds", {{"scope", "overall"}, {"outcome", "success"}}), 1.5);
  EXPECT_EQ(value("cilium_agent_bootstrap_seconds", {{"scope", "bpfBase"}, {"outcome", "success"}}), 0.25);

  m.setIpv4Addresses(4, 254);
  EXPECT_EQ(value("cilium_ip_addresses", {{"family", "ipv4"}}), 4);
  EXPECT_EQ(value("cilium_ipam_capacity", {{"family", "ipv4"}}), 254);
  m.setIdentityLabelSources({{"k8s", 3}, {"reserved", 9}});
  m.setIdentityLabelSources({{"k8s", 2}, {"cidr", 1}});  // a snapshot: reserved back to 0
  EXPECT_EQ(value("cilium_identity_label_sources", {{"source", "k8s"}}), 2);
  EXPECT_EQ(value("cilium_identity_label_sources", {{"source", "cidr"}}), 1);
  EXPECT_EQ(value("cilium_identity_label_sources", {{"source", "reserved"}}), 0);
}

TEST(AgentMetrics, HistogramFlattensToBucketSumCount) {
  AgentMetrics m;
  m.observeRegenerationTime("total", true, 0.002);
  m.observeRegenerationTime("total", true, 0.5);
  auto got = withPrefix(m.samples(), "cilium_endpoint_regeneration_time_stats_seconds");
  const std::string n = "cilium_endpoint_regeneration_time_stats_seconds";
  auto b = [&](const char* le, double v) {
    return Sample{n + "_bucket", {{"le", le}, {"scope", "total"}, {"status", "success"}}, v};
  };
  std::vector<Sample> expected = {
      b("1e-05", 0), b("0.0001", 0), b("0.001", 0), b("0.01", 1), b("0.1", 1),
      b("1", 2),     b("10", 2),     b("100", 2),   b("+Inf", 2),
      {n + "_sum", {{"scope", "total"}, {"status", "success"}}, 0.502},
      {n + "_count", {{"scope", "total"}, {"status", "success"}}, 2},
  };
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].name, expected[i].name) << i;
    EXPECT_EQ(got[i].labels, expected[i].labels) << i;
    EXPECT_DOUBLE_EQ(got[i].value, expected[i].value) << i;
  }
  // The text format spells `le` the same way samples() does.
  const std::string text = m.renderText();
  EXPECT_THAT(text, testing::HasSubstr(n + "_bucket{scope=\"total\",status=\"success\",le=\"1e-05\"} 0\n"));
  EXPECT_THAT(text, testing::HasSubstr(n + "_bucket{scope=\"total\",status=\"success\",le=\"0.01\"} 1\n"));
  EXPECT_THAT(text, testing::HasSubstr(n + "_bucket{scope=\"total\",status=\"success\",le=\"+Inf\"} 2\n"));
  EXPECT_THAT(text, testing::HasSubstr(n + "_count{scope=\"total\",status=\"success\"} 2\n"));
}

TEST(ProcessMetrics, PresentAndPlausible) {
  AgentMetrics m;
  auto all = m.samples();
  auto value = [&](const std::string& name) {
    const Sample* s = find(all, name, {});
    EXPECT_NE(s, nullptr) << name;
    return s ? s->value : -1;
  };
  EXPECT_GE(value("cilium_process_open_fds"), 3);  // stdin, stdout, stderr at least
  EXPECT_GE(value("cilium_process_max_fds"), value("cilium_process_open_fds"));
  EXPECT_GT(value("cilium_process_resident_memory_bytes"), 0);
  EXPECT_GT(value("cilium_process_virtual_memory_bytes"), value("cilium_process_resident_memory_bytes"));
  EXPECT_GE(value("cilium_process_cpu_seconds_total"), 0);
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  const double start = value("cilium_process_start_time_seconds");
  EXPECT_LE(start, now + 1);  // btime and starttime have tick/second granularity
  EXPECT_GT(start, now - 3600);
}

// Runs `promtool check metrics` (the real one) on `text`; returns exit status
// and everything promtool printed.
std::pair<int, std::string> promtoolCheckMetrics(const std::string& text) {
  auto dir = std::filesystem::temp_directory_path() /
             ("membrane-metrics-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto file = dir / "metrics.txt";
  std::ofstream(file) << text;
  std::string cmd = "/usr/bin/promtool check metrics < '" + file.string() + "' 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string out;
  if (p != nullptr) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  }
  int status = p != nullptr ? ::pclose(p) : -1;
  std::filesystem::remove_all(dir);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST(Promtool, FullyPopulatedOutputPassesCheckMetrics) {
  ASSERT_TRUE(std::filesystem::exists("/usr/bin/promtool"));
  AgentMetrics m;
  m.setEndpointCount(3);
  m.setEndpointsRegenerating(1);
  m.setEndpointStates({{"ready", 2}, {"regenerating", 1}});
  m.recordEndpointRegeneration(true);
  m.recordEndpointRegeneration(false);
  m.observeRegenerationTime("total", true, 0.01);
  m.observeRegenerationTime("policyCalculation", true, 0.001);
  m.observeRegenerationTime("mapSync", false, 0.003);
  m.setPolicyCount(4);
  m.setPolicyMaxRevision(9);
  m.recordPolicyChange(true);
  m.recordPolicyChange(false);
  m.setEnforcementStatus({{"ingress", 1}, {"both", 1}});
  m.setIdentities({{"node_local", 1}, {"cluster_local", 3}, {"remote_node", 1}});
  m.setUnreachableNodes(0);
  m.setUnreachableHealthEndpoints(1);
  m.recordConntrackGc(CtFamily::Ipv4, CtProtocol::Tcp, true, 0.02, 40, 3);
  m.recordConntrackGc(CtFamily::Ipv4, CtProtocol::NonTcp, false, 0.5, 7, 0);
  m.registerDatapathSource([] { return Result<std::vector<DatapathCounter>>(fakeRows()); });
  m.registerMapPressureSource(
      [] { return Result<std::vector<MapPressure>>(std::vector<MapPressure>{{"mb_policy_v1", 0.2}}); });
  m.setBootstrapSeconds("overall", true, 0.4);
  m.observeApiCall("/v1/endpoint/12", "GET", 200, 0.001);
  m.recordLogLine("WARN", "daemon");
  m.declareController("ct-map-gc");
  m.recordControllerRun("ct-map-gc", false, 0.2);
  m.setIpv4Addresses(4, 254);
  m.setIdentityLabelSources({{"k8s", 3}, {"reserved", 8}});
  m.setNodes(1);
  m.recordNodeEvent("add", "local");
  m.registerBpfMemorySource([] { return Result<std::vector<BpfMemory>>(std::vector<BpfMemory>{{4096, 8192}}); });
  m.registerMapPressureSource([] {
    return Result<std::vector<MapPressure>>(std::vector<MapPressure>{{"mb_policy_v1", 0.2, 16384}});
  });

  const std::string text = m.renderText();
  for (const char* name :
       {"cilium_endpoint_count", "cilium_endpoint_regenerating", "cilium_endpoint_state",
        "cilium_endpoint_regenerations_total", "cilium_endpoint_regeneration_time_stats_seconds_bucket",
        "cilium_policy ", "cilium_policy_max_revision", "cilium_policy_change_total",
        "cilium_policy_import_errors_total", "cilium_policy_endpoint_enforcement_status", "cilium_identity{",
        "cilium_version{", "cilium_unreachable_nodes", "cilium_unreachable_health_endpoints",
        "cilium_datapath_conntrack_gc_runs_total", "cilium_datapath_conntrack_gc_entries",
        "cilium_datapath_conntrack_gc_duration_seconds_bucket", "cilium_drop_count_total",
        "cilium_drop_bytes_total", "cilium_forward_count_total", "cilium_forward_bytes_total",
        "cilium_bpf_map_pressure", "cilium_process_cpu_seconds_total", "cilium_process_open_fds",
        "cilium_process_max_fds", "cilium_process_resident_memory_bytes",
        "cilium_process_virtual_memory_bytes", "cilium_process_start_time_seconds", "cilium_agent_bootstrap_seconds{",
        "cilium_agent_api_process_time_seconds_bucket{", "cilium_errors_warnings_total{", "cilium_controllers_runs_total{",
        "cilium_controllers_runs_duration_seconds_bucket{", "cilium_controllers_failing ", "cilium_ip_addresses{",
        "cilium_ipam_capacity{", "cilium_identity_label_sources{", "cilium_nodes_all_num ",
        "cilium_nodes_all_events_received_total{", "cilium_bpf_maps_virtual_memory_max_bytes ",
        "cilium_bpf_progs_virtual_memory_max_bytes ", "cilium_bpf_map_capacity{"})
    EXPECT_THAT(text, testing::HasSubstr(std::string("\n") + name)) << name;

  // promtool exits 1 when it cannot parse the input and 3 when it has lint
  // complaints: the whole exposition must be clean (cilium_endpoint_count is
  // exposed untyped for that reason, see agent_metrics.cc).
  EXPECT_THAT(text, testing::HasSubstr("# TYPE cilium_endpoint_count untyped\ncilium_endpoint_count 3\n"));
  EXPECT_THAT(text, testing::HasSubstr("# TYPE cilium_endpoint gauge\ncilium_endpoint 3\n"));
  auto [rc, out] = promtoolCheckMetrics(text);
  EXPECT_EQ(out, "") << "--- input ---\n" << text;
  EXPECT_EQ(rc, 0) << out;
}

TEST(Promtool, ShippedScrapeConfigIsValid) {
  // ctest sets MEMBRANE_SOURCE_DIR; the build's own path lets the binary run alone too.
  const char* src = std::getenv("MEMBRANE_SOURCE_DIR");
  if (src == nullptr) src = MEMBRANE_TEST_SOURCE_DIR;
  std::string path = std::string(src) + "/deploy/prometheus/prometheus.yml";
  std::string cmd = "/usr/bin/promtool check config '" + path + "' 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = ::pclose(p);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << out;
  EXPECT_THAT(out, testing::HasSubstr("SUCCESS"));
}

// --metrics-legacy-names: the Cilium <= 1.4 names dashboard 6658 queries,
// copies of the modern series, clean for promtool; absent by default.
TEST(AgentMetrics, LegacyNamesAreCopiesBehindTheFlag) {
  AgentMetrics m;
  m.setPolicyCount(5);
  m.recordPolicyChange(false);
  m.recordEndpointRegeneration(true);
  m.recordEndpointRegeneration(false);
  m.recordEndpointRegeneration(true);
  m.setIdentities({{"cluster_local", 3}, {"node_local", 2}});
  for (const char* legacy : {"cilium_policy_count", "cilium_policy_import_errors", "cilium_endpoint_regenerations",
                             "cilium_identity_count"}) {
    for (const auto& s : m.samples()) EXPECT_NE(s.name, legacy) << "exported without the flag";
  }
  m.setLegacyNames(true);
  auto all = m.samples();
  auto value = [&](const std::string& name, const Labels& l) {
    const Sample* s = find(all, name, l);
    return s ? s->value : -1;
  };
  EXPECT_EQ(value("cilium_policy_count", {}), 5);
  EXPECT_EQ(value("cilium_policy_import_errors", {}), 1);
  EXPECT_EQ(value("cilium_endpoint_regenerations", {{"outcome", "success"}}), 2);
  EXPECT_EQ(value("cilium_endpoint_regenerations", {{"outcome", "fail"}}), 1);
  EXPECT_EQ(value("cilium_identity_count", {}), 5);
  EXPECT_EQ(value("cilium_policy", {}), 5);  // the modern series stay
  const std::string text = m.renderText();
  EXPECT_THAT(text, testing::HasSubstr("# TYPE cilium_policy_import_errors untyped\ncilium_policy_import_errors 1\n"));
  auto [rc, out] = promtoolCheckMetrics(text);
  EXPECT_EQ(out, "") << text;
  EXPECT_EQ(rc, 0) << out;

  // --metrics -NAME leaves out the family and its legacy copy: the user
  // asked for the data to go, not for one of its names.
  ASSERT_TRUE(m.enableMetrics({"-cilium_policy,-cilium_identity"}).ok());
  all = m.samples();
  EXPECT_EQ(value("cilium_policy", {}), -1);
  EXPECT_EQ(value("cilium_policy_count", {}), -1);
  EXPECT_EQ(value("cilium_identity_count", {}), -1);
  EXPECT_EQ(value("cilium_policy_import_errors", {}), 1);  // the others stay
}

TEST(Promtool, TheCheckIsRealBrokenTextFails) {
  auto [rc, out] = promtoolCheckMetrics("# TYPE x counter\nx{a=\"b\" 1\n");
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out, "");
}

TEST(AgentMetrics, ConcurrentUpdatesAndScrapes) {
  AgentMetrics m;
  m.registerDatapathSource([] { return Result<std::vector<DatapathCounter>>(fakeRows()); });
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&m, t] {
      for (int i = 0; i < 500; ++i) {
        m.recordEndpointRegeneration(true);
        m.setEndpointStates({{"ready", i}, {t % 2 ? "regenerating" : "restoring", 1}});
        m.observeRegenerationTime(t % 2 ? "total" : "mapSync", true, 0.001);
        if (i % 100 == 0) (void)m.renderText();
      }
    });
  for (auto& th : threads) th.join();
  auto all = m.samples();
  const Sample* s = find(all, "cilium_endpoint_regenerations_total", {{"outcome", "success"}});
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->value, 2000);
  s = find(all, "cilium_endpoint_state", {{"endpoint_state", "ready"}});
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->value, 499);
}

}  // namespace
}  // namespace membrane::metrics

namespace membrane::metrics {
namespace {

// Issue 12 item 2: the families added last, exact values.
TEST(AgentMetrics, IdentityTriggerServiceIpcacheAndConntrackWalk) {
  AgentMetrics m;
  auto all = m.samples();
  auto value = [&](const std::string& name, const Labels& l) {
    const Sample* s = find(all, name, l);
    return s ? s->value : -1;
  };
  // Present from the start at 0 (rate() and histogram_quantile() see the first event).
  EXPECT_EQ(value("cilium_policy_incremental_update_duration_count", {{"scope", "global"}}), 0);
  EXPECT_EQ(value("cilium_service_implementation_delay_count", {{"action", "update"}}), 0);
  EXPECT_EQ(value("cilium_triggers_policy_update_call_duration_seconds_count", {{"type", "duration"}}), 0);
  EXPECT_EQ(value("cilium_triggers_policy_update_folds", {}), 0);
  for (auto c : kSelectorClasses) EXPECT_EQ(value("cilium_policy_selector_match_count_max", {{"class", std::string(c)}}), 0);
  EXPECT_EQ(value("cilium_datapath_conntrack_dump_resets_total",
                  {{"area", "conntrack"}, {"name", "dump_interrupts"}, {"family", "ipv4"}}), -1);  // first GC pass

  m.observePolicyIncrementalUpdate(0.003);
  m.observePolicyIncrementalUpdate(0.5);
  m.setSelectorMatchCountMax({{"other", 3}, {"world", 1}});
  m.observeServiceImplementationDelay("update", 0.25);
  m.recordPolicyUpdateTrigger(kTriggerPolicyAdded);
  m.recordPolicyUpdateTrigger(kTriggerPolicyAdded);
  m.recordPolicyUpdateTrigger(kTriggerIdentities);
  m.observePolicyUpdateRun(0.02, 0.001, 0);
  m.recordIpcacheEvent("upsert");
  m.recordIpcacheEvent("upsert");
  m.recordIpcacheError("delete", "no_such_prefix");
  m.recordConntrackWalk(CtFamily::Ipv4, 2, 1, 0);
  m.recordConntrackWalk(CtFamily::Ipv4, 1, 0, 3);
  all = m.samples();
  EXPECT_EQ(value("cilium_policy_incremental_update_duration_count", {{"scope", "global"}}), 2);
  EXPECT_DOUBLE_EQ(value("cilium_policy_incremental_update_duration_sum", {{"scope", "global"}}), 0.503);
  EXPECT_EQ(value("cilium_policy_incremental_update_duration_bucket", {{"scope", "global"}, {"le", "0.01"}}), 1);
  EXPECT_EQ(value("cilium_policy_selector_match_count_max", {{"class", "other"}}), 3);
  EXPECT_EQ(value("cilium_policy_selector_match_count_max", {{"class", "world"}}), 1);
  EXPECT_EQ(value("cilium_policy_selector_match_count_max", {{"class", "cluster"}}), 0);
  EXPECT_EQ(value("cilium_service_implementation_delay_count", {{"action", "update"}}), 1);
  EXPECT_DOUBLE_EQ(value("cilium_service_implementation_delay_sum", {{"action", "update"}}), 0.25);
  EXPECT_EQ(value("cilium_service_implementation_delay_count", {{"action", "delete"}}), 0);
  EXPECT_EQ(value("cilium_triggers_policy_update_total", {{"reason", "policy rules added"}}), 2);
  EXPECT_EQ(value("cilium_triggers_policy_update_total", {{"reason", "one or more identities created or deleted"}}), 1);
  EXPECT_EQ(value("cilium_triggers_policy_update_call_duration_seconds_count", {{"type", "duration"}}), 1);
  EXPECT_DOUBLE_EQ(value("cilium_triggers_policy_update_call_duration_seconds_sum", {{"type", "duration"}}), 0.02);
  EXPECT_DOUBLE_EQ(value("cilium_triggers_policy_update_call_duration_seconds_sum", {{"type", "latency"}}), 0.001);
  EXPECT_EQ(value("cilium_triggers_policy_update_folds", {}), 0);
  EXPECT_EQ(value("cilium_ipcache_events_total", {{"type", "upsert"}}), 2);
  EXPECT_EQ(value("cilium_ipcache_errors_total", {{"type", "delete"}, {"error", "no_such_prefix"}}), 1);
  EXPECT_EQ(value("cilium_datapath_conntrack_dump_resets_total",
                  {{"area", "conntrack"}, {"name", "dump_interrupts"}, {"family", "ipv4"}}), 3);
  EXPECT_EQ(value("cilium_datapath_conntrack_gc_key_fallbacks_total", {{"family", "ipv4"}, {"protocol", "TCP"}}), 1);
  EXPECT_EQ(value("cilium_datapath_conntrack_gc_key_fallbacks_total", {{"family", "ipv4"}, {"protocol", "non-TCP"}}),
            3);
  // The 6658-era name of the same counter, only with --metrics-legacy-names.
  EXPECT_EQ(value("cilium_datapath_errors_total", {{"area", "conntrack"}, {"name", "dump_interrupts"}, {"family", "ipv4"}}),
            -1);
  m.setLegacyNames(true);
  all = m.samples();
  EXPECT_EQ(value("cilium_datapath_errors_total", {{"area", "conntrack"}, {"name", "dump_interrupts"}, {"family", "ipv4"}}),
            3);
  auto [rc, out] = promtoolCheckMetrics(m.renderText());
  EXPECT_EQ(out, "");
  EXPECT_EQ(rc, 0);
}

// --metrics, Cilium's +NAME/-NAME list: the syscall histogram is off until enabled.
TEST(AgentMetrics, MetricsOptionEnablesDisablesAndRejectsUnknownNames) {
  AgentMetrics m;
  EXPECT_FALSE(m.bpfSyscallDurationEnabled());
  m.observeBpfSyscall("update", true, 2e-6);  // ignored while off
  EXPECT_TRUE(withPrefix(m.samples(), "cilium_bpf_syscall_duration_seconds").empty());

  auto bad = m.enableMetrics({"+cilium_bpf_syscall_duration_second"});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, EINVAL);
  EXPECT_THAT(bad.error().message, testing::HasSubstr("unknown metric \"cilium_bpf_syscall_duration_second\""));
  auto no_sign = m.enableMetrics({"cilium_policy"});
  ASSERT_FALSE(no_sign.ok());
  EXPECT_THAT(no_sign.error().message, testing::HasSubstr("must be +NAME (enable) or -NAME (disable)"));
  EXPECT_FALSE(m.bpfSyscallDurationEnabled());  // a failed call changes nothing

  ASSERT_TRUE(m.enableMetrics({"+cilium_bpf_syscall_duration_seconds -cilium_identity_label_sources,-cilium_policy"}).ok());
  EXPECT_TRUE(m.bpfSyscallDurationEnabled());
  m.observeBpfSyscall("update", true, 2e-6);
  m.observeBpfSyscall("update", true, 3e-6);
  m.observeBpfSyscall("getNextKey", false, 1e-3);
  auto all = m.samples();
  auto value = [&](const std::string& name, const Labels& l) {
    const Sample* s = find(all, name, l);
    return s ? s->value : -1;
  };
  EXPECT_EQ(value("cilium_bpf_syscall_duration_seconds_count", {{"operation", "update"}, {"outcome", "success"}}), 2);
  EXPECT_DOUBLE_EQ(value("cilium_bpf_syscall_duration_seconds_sum", {{"operation", "update"}, {"outcome", "success"}}),
                   5e-6);
  EXPECT_EQ(value("cilium_bpf_syscall_duration_seconds_bucket",
                  {{"operation", "update"}, {"outcome", "success"}, {"le", "4e-06"}}), 2);
  EXPECT_EQ(value("cilium_bpf_syscall_duration_seconds_count", {{"operation", "getNextKey"}, {"outcome", "fail"}}), 1);
  EXPECT_TRUE(withPrefix(all, "cilium_identity_label_sources").empty());
  EXPECT_EQ(value("cilium_policy", {}), -1);
  EXPECT_EQ(value("cilium_policy_max_revision", {}), 0);  // only the named family goes
  auto [rc, out] = promtoolCheckMetrics(m.renderText());
  EXPECT_EQ(out, "");
  EXPECT_EQ(rc, 0);
}

// knownFamilies() is what --metrics validates against: every family a fully
// populated scrape contains must be in it.
TEST(AgentMetrics, KnownFamiliesCoverEveryExposedFamily) {
  AgentMetrics m;
  ASSERT_TRUE(m.enableMetrics({"+cilium_bpf_syscall_duration_seconds"}).ok());
  m.setLegacyNames(true);
  m.observeBpfSyscall("update", true, 1e-6);
  m.recordConntrackGc(CtFamily::Ipv4, CtProtocol::Tcp, true, 0.01, 1, 0);
  m.recordConntrackWalk(CtFamily::Ipv4, 0, 0, 0);
  m.recordIpcacheEvent("upsert");
  m.recordIpcacheError("delete", "no_such_prefix");
  m.recordPolicyUpdateTrigger(kTriggerPolicyAdded);
  m.observeRegenerationTime("total", true, 0.1);
  m.setBootstrapSeconds("overall", true, 1);
  m.observeApiCall("/v1/healthz", "GET", 200, 0.001);
  m.recordNodeEvent(kNodeEventAdd, "local");
  m.observeNodeConnectivityLatency("node", "icmp", 0.001);
  m.setNodeConnectivityStatus("node", 1, 0, 0);
  m.registerDatapathSource([] { return Result<std::vector<DatapathCounter>>(fakeRows()); });
  m.registerMapPressureSource([] {
    return Result<std::vector<MapPressure>>(std::vector<MapPressure>{{"mb_policy_v1", 0.2, 16384}});
  });
  m.registerMapOpsSource([] { return Result<std::vector<MapOps>>(std::vector<MapOps>{{"mb_policy_v1", "update", "success", 1}}); });
  m.registerBpfMemorySource([] { return Result<std::vector<BpfMemory>>(std::vector<BpfMemory>{{1, 2}}); });
  m.registerL7Source([] {
    L7Stats s;
    s.redirects_http = 1;
    s.upstream_reply_seconds.push_back({"", "http", "totalTime", {}, 1, 0.1});
    return Result<std::vector<L7Stats>>(std::vector<L7Stats>{s});
  });
  const std::string text = m.renderText();
  const auto& known = AgentMetrics::knownFamilies();
  std::set<std::string> seen;
  for (const auto& line : [&] {
         std::vector<std::string> v;
         std::istringstream in(text);
         for (std::string l; std::getline(in, l);)
           if (l.rfind("# TYPE ", 0) == 0) v.push_back(l.substr(7, l.find(' ', 7) - 7));
         return v;
       }())
    seen.insert(line);
  for (const auto& f : seen) EXPECT_TRUE(std::binary_search(known.begin(), known.end(), f)) << f;
  EXPECT_EQ(seen.size(), known.size());  // and nothing in the list that cannot appear
  // Every family at once, the new histograms' _bucket/_sum/_count and the
  // legacy copies included, is clean for promtool.
  auto [rc, out] = promtoolCheckMetrics(text);
  EXPECT_EQ(out, "") << "--- input ---\n" << text;
  EXPECT_EQ(rc, 0) << out;
}

}  // namespace
}  // namespace membrane::metrics
