// Agent behaviour outside the Star Wars story: resource exhaustion, an
// unreachable agent, health.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fstream>

#include "tests/integration/agent_fixture.h"

namespace membrane::testing {
namespace {

class Agent : public AgentFixture {};

TEST_F(Agent, ExhaustedPodCidrIsAClearErrorAndLeavesNothing) {
  // A /29 has 8 addresses: network, gateway and broadcast are never handed out.
  int pid = getpid();
  pod_cidr_ = fmt::format("10.{}.{}.248/29", 240 + (pid / 256) % 10, pid % 256);
  startAgent();
  for (int i = 0; i < 5; ++i) {
    auto r = cli({"endpoint", "create", fmt::format("pod{}", i), "-n", ns_, "--labels", "app=x"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  auto netns_before = run({"ip", "netns", "list"}).out;
  auto links_before = run({"ip", "-o", "link", "show"}).out;
  auto full = cli({"endpoint", "create", "pod5", "-n", ns_, "--labels", "app=x"});
  EXPECT_EQ(full.exit_code, 1);
  EXPECT_NE(full.err.find(fmt::format("pod CIDR {} is exhausted", pod_cidr_)), std::string::npos) << full.err;
  EXPECT_EQ(run({"ip", "netns", "list"}).out, netns_before);
  EXPECT_EQ(run({"ip", "-o", "link", "show"}).out.size(), links_before.size());
  auto list = nlohmann::json::parse(cli({"endpoint", "list", "-o", "json"}).out);
  EXPECT_EQ(list.size(), 5u);
  EXPECT_EQ(metric("cilium_endpoint_count"), 5);
  // Deleting one frees its address for the next pod.
  ASSERT_EQ(cli({"endpoint", "delete", "pod2", "-n", ns_}).exit_code, 0);
  EXPECT_EQ(cli({"endpoint", "create", "pod5", "-n", ns_, "--labels", "app=x"}).exit_code, 0);
}

TEST_F(Agent, StaleCidrIpcacheEntriesAreRemovedAtStart) {
  // A CIDR identity (local scope, 1<<24 | n) that a previous run left in the
  // pinned ipcache while no policy mentions its prefix any more (an older
  // agent did not remove /32 entries): at start the agent removes it, and
  // keeps the entries of a CIDR that a policy still wants.
  startAgent();
  const std::string pol = dir_ + "/cidr.yaml";
  {
    std::ofstream f(pol);
    f << fmt::format(R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: cidr, namespace: {}}}
spec:
  endpointSelector: {{matchLabels: {{app: x}}}}
  egress:
  - toCIDR: ["198.19.7.0/24"]
)",
                     ns_);
  }
  ASSERT_EQ(cli({"policy", "import", pol}).exit_code, 0);
  ASSERT_EQ(stopAgent(), 0);
  const std::string map = bpf_root_ + "/mb_ipcache_v1";
  auto dump = [&] { return run({"bpftool", "-j", "map", "dump", "pinned", map}).out; };
  // 198.19.9.9/32 -> identity 0x01000063: key = prefixlen 32+32, pad, cluster, family 4, ip;
  // value = identity (little endian), then 8 zero bytes.
  auto add = run({"bpftool", "map", "update", "pinned", map, "key", "hex", "40", "00", "00", "00", "00", "00", "00",
                  "04", "c6", "13", "09", "09", "00", "00", "00", "00", "00", "00", "00", "00", "00", "00", "00", "00",
                  "value", "hex", "63", "00", "00", "01", "00", "00", "00", "00", "00", "00", "00", "00"});
  ASSERT_EQ(add.exit_code, 0) << add.err;
  ASSERT_NE(dump().find("\"ip\":[151589830,"), std::string::npos);  // 198.19.9.9 as a little-endian u32
  startAgent();
  auto after = dump();
  EXPECT_EQ(after.find("\"ip\":[151589830,"), std::string::npos) << after;  // the stale entry is gone
  EXPECT_NE(after.find("\"ip\":[463814,"), std::string::npos) << after;     // 198.19.7.0/24 is still wanted
  EXPECT_NE(readFileOrEmpty(dir_ + "/membraned.log").find("removing stale CIDR ipcache entry 198.19.9.9/32"),
            std::string::npos);
}

TEST_F(Agent, CliSaysHowToStartAnAgentThatIsNotRunning) {
  auto r = cli({"endpoint", "list"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot reach membraned at " + socket_), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("Start it with 'membraned'"), std::string::npos) << r.err;
  EXPECT_EQ(cli({"status"}).exit_code, 1);
}

TEST_F(Agent, StatusMetricsAndIdentities) {
  startAgent();
  auto st = cli({"status"});
  EXPECT_EQ(st.exit_code, 0);
  EXPECT_NE(st.out.find(pod_cidr_), std::string::npos) << st.out;
  // Reserved identities with Cilium's numbers.
  auto ids = nlohmann::json::parse(cli({"identity", "list", "-o", "json"}).out);
  std::map<uint32_t, std::string> reserved;
  for (const auto& id : ids)
    if (id["reserved"].get<bool>()) reserved[id["id"].get<uint32_t>()] = id["labels"][0];
  EXPECT_EQ(reserved, (std::map<uint32_t, std::string>{{1, "reserved:host"},
                                                       {2, "reserved:world"},
                                                       {3, "reserved:unmanaged"},
                                                       {4, "reserved:health"},
                                                       {5, "reserved:init"},
                                                       {6, "reserved:remote-node"},
                                                       {7, "reserved:kube-apiserver"}}));
  // Two pods with equal labels share one identity, allocated from 256.
  ASSERT_EQ(cli({"endpoint", "create", "a", "-n", ns_, "--labels", "app=web"}).exit_code, 0);
  ASSERT_EQ(cli({"endpoint", "create", "b", "-n", ns_, "--labels", "app=web"}).exit_code, 0);
  auto eps = nlohmann::json::parse(cli({"endpoint", "list", "-o", "json"}).out);
  ASSERT_EQ(eps.size(), 2u);
  EXPECT_EQ(eps[0]["identity"], eps[1]["identity"]);
  EXPECT_GE(eps[0]["identity"].get<uint32_t>(), 256u);
  // The metrics every dashboard of the seed needs are there, and /v1/metrics agrees with /metrics.
  std::string text = scrape();
  for (const char* name : {"cilium_endpoint_count 2", "cilium_endpoint_state{endpoint_state=\"ready\"} 2",
                           "cilium_policy_max_revision 1", "cilium_identity{type=\"cluster_local\"} 1",
                           "cilium_version{", "cilium_process_open_fds", "cilium_bpf_map_pressure{map_name=\"mb_policy_v1\"}",
                           "cilium_endpoint_regeneration_time_stats_seconds_bucket{"})
    EXPECT_NE(text.find(name), std::string::npos) << name << "\n" << text;
  auto list = cli({"metrics", "list", "-p", "cilium_endpoint_count"});
  EXPECT_EQ(list.exit_code, 0);
  EXPECT_NE(list.out.find("cilium_endpoint_count"), std::string::npos) << list.out;
  // Bad API input: 4xx with a message.
  auto curl = run({"curl", "-s", "--unix-socket", socket_, "-X", "PUT", "-d", "{\"name\": 5}",
                   "http://localhost/v1/endpoint"});
  EXPECT_NE(curl.out.find("\"code\":400"), std::string::npos) << curl.out;
  auto nf = run({"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", socket_,
                 "http://localhost/v1/identity/99999"});
  EXPECT_EQ(nf.out, "404");
}

TEST_F(Agent, HealthEndpointAndConnectivityMetrics) {
  health_ = true;  // probes every second (the fixture passes --health-check-interval 1)
  startAgent();
  auto eps = nlohmann::json::parse(cli({"endpoint", "list", "-o", "json"}).out);
  ASSERT_EQ(eps.size(), 1u);
  EXPECT_EQ(eps[0]["identity"], 4);
  EXPECT_EQ(eps[0]["labels"], nlohmann::json::array({"reserved:health"}));
  std::string netns = "membrane-health-" + host_dev_;
  EXPECT_TRUE(waitFor([&] { return scrape().find("cilium_node_health_connectivity_status{status=\"reachable\",type=\"endpoint\"} 1") != std::string::npos; },
                      std::chrono::seconds(10)))
      << scrape();
  EXPECT_EQ(metric("cilium_unreachable_nodes"), 0);
  EXPECT_EQ(metric("cilium_unreachable_health_endpoints"), 0);
  auto health = nlohmann::json::parse(run({"curl", "-s", "--unix-socket", socket_, "http://localhost/v1/health"}).out);
  EXPECT_EQ(health["reachable"], 1);
  EXPECT_EQ(health["nodes"][0]["endpoint"]["http"]["ok"], true) << health.dump();
  EXPECT_EQ(health["nodes"][0]["host"]["icmp"]["ok"], true) << health.dump();
  // The CLI views of the same result: `health status` per path, the status line.
  auto hs = cli({"health", "status"});
  ASSERT_EQ(hs.exit_code, 0) << hs.err;
  EXPECT_NE(hs.out.find("Nodes:\n"), std::string::npos) << hs.out;
  EXPECT_NE(hs.out.find("(localhost):\n    Host connectivity to "), std::string::npos) << hs.out;
  EXPECT_NE(hs.out.find("    Endpoint connectivity to " + eps[0]["ipv4"].get<std::string>() + ":\n"
                        "      ICMP to stack:   OK, RTT="),
            std::string::npos)
      << hs.out;
  EXPECT_NE(hs.out.find("      HTTP to agent:   OK, RTT="), std::string::npos) << hs.out;
  auto st = cli({"status"});
  EXPECT_NE(st.out.find("Cluster health:      1/1 reachable ("), std::string::npos) << st.out;
  EXPECT_NE(st.out.find(") (Probe interval: 1s)\n"), std::string::npos) << st.out;

  // Take the health endpoint down (drop everything inside its netns): the metric flips, then back.
  auto down = run({"ip", "netns", "exec", netns, "iptables", "-I", "INPUT", "-j", "DROP"});
  ASSERT_EQ(down.exit_code, 0) << down.err;
  EXPECT_TRUE(waitFor([&] { return metric("cilium_unreachable_health_endpoints") == 1; }, std::chrono::seconds(10)));
  EXPECT_EQ(metric("cilium_unreachable_nodes"), 0);
  EXPECT_NE(cli({"health", "status", "--succinct"}).out.find(" (localhost): host OK, endpoint unreachable\n"),
            std::string::npos);
  EXPECT_NE(cli({"status"}).out.find("Cluster health:      0/1 reachable ("), std::string::npos);
  auto up = run({"ip", "netns", "exec", netns, "iptables", "-D", "INPUT", "-j", "DROP"});
  ASSERT_EQ(up.exit_code, 0) << up.err;
  EXPECT_TRUE(waitFor([&] { return metric("cilium_unreachable_health_endpoints") == 0; }, std::chrono::seconds(10)));
}

}  // namespace
}  // namespace membrane::testing
