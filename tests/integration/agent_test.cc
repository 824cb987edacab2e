// Agent behaviour outside the Star Wars story: resource exhaustion, an
// unreachable agent, health.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <functional>

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

// A wrongly typed field in a restored state file (issue 10): the agent named
// neither file nor field, and policy.json's threw out of it (abort, exit 134).
// Now a damaged endpoint file is skipped with an error naming both (the
// other endpoints are restored); a damaged policy.json or namespaces.json
// refuses the start (exit 1) with the file, the field and what to do.
TEST_F(Agent, DamagedStateFileIsAClearErrorNotACrash) {
  startAgent();
  ASSERT_EQ(cli({"endpoint", "create", "pa", "-n", ns_, "--labels", "app=a"}).exit_code, 0);
  ASSERT_EQ(cli({"endpoint", "create", "pb", "-n", ns_, "--labels", "app=b"}).exit_code, 0);
  ASSERT_EQ(importPolicy(fmt::format("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: p\n"
                                     "  namespace: {}\nspec:\n  endpointSelector: {{}}\n  ingress:\n"
                                     "  - fromEndpoints: [{{}}]\n",
                                     ns_))
                .exit_code,
            0);
  ASSERT_EQ(cli({"namespace", "label", ns_, "team=red"}).exit_code, 0);
  ASSERT_EQ(stopAgent(), 0);

  auto edit = [](const std::string& path, const std::function<void(nlohmann::json&)>& change) {
    auto j = nlohmann::json::parse(readFileOrEmpty(path));
    const std::string before = j.dump();
    change(j);
    std::ofstream(path) << j.dump();
    return before;
  };
  auto restore = [](const std::string& path, const std::string& text) { std::ofstream(path) << text; };

  // policy.json: refused, nothing started.
  const std::string policy = state_dir_ + "/policy.json";
  std::string saved = edit(policy, [](nlohmann::json& j) { j["imports"][0]["content"] = 1; });
  auto r = run(agentArgs(), std::chrono::seconds(30));
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE((r.out + r.err).find(fmt::format("restore policies from {}: imports[0].content: expected a string, got a "
                                             "number; fix the field, or move the file away to start without policies",
                                             policy)),
            std::string::npos)
      << r.out << r.err;
  restore(policy, saved);

  // namespaces.json: refused.
  const std::string namespaces = state_dir_ + "/namespaces.json";
  saved = edit(namespaces, [&](nlohmann::json& j) { j[ns_]["team"] = 3; });
  r = run(agentArgs(), std::chrono::seconds(30));
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE((r.out + r.err).find(fmt::format("restore namespace labels: {}: {}.team: expected a string, got a number; "
                                             "fix the field, or move the file away to start without namespace labels",
                                             namespaces, ns_)),
            std::string::npos)
      << r.out << r.err;
  restore(namespaces, saved);

  // endpoints/<id>.json: that endpoint is skipped, the other one restored.
  const std::string bad = state_dir_ + "/endpoints/1.json";
  std::string bad_name;
  saved = edit(bad, [&](nlohmann::json& j) {
    bad_name = j.value("name", "");
    j["name"] = 42;
  });
  ASSERT_FALSE(bad_name.empty());
  startAgent();
  auto eps = nlohmann::json::parse(cli({"endpoint", "list", "-o", "json"}).out);
  ASSERT_EQ(eps.size(), 1u) << eps.dump();
  EXPECT_NE(eps[0].value("name", ""), bad_name);
  EXPECT_NE(readFileOrEmpty(dir_ + "/membraned.log")
                .find(fmt::format("level=error restore: {}: name: expected a string, got a number; endpoint skipped", bad)),
            std::string::npos)
      << readFileOrEmpty(dir_ + "/membraned.log");
  // Fixed and restarted, as the message says: both are back (and `membraned
  // cleanup`, which reads the same files, can remove the pod again).
  ASSERT_EQ(stopAgent(), 0);
  restore(bad, saved);
  startAgent();
  EXPECT_EQ(nlohmann::json::parse(cli({"endpoint", "list", "-o", "json"}).out).size(), 2u);
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

// A second agent on the same names, or a cleanup, while an agent runs: both
// refused with a message naming the running agent, and nothing of the
// running agent is touched (before: cleanup tore down its pods and the
// agent respawned its proxy).
TEST_F(Agent, ASecondAgentOrACleanupOnTheSameNamesIsRefused) {
  startAgent();
  ASSERT_FALSE(createPod("p1", "app=one").ip.empty());
  const std::string owner = fmt::format("state-dir {} is in use by another membraned: pid {} (", state_dir_, agent_->pid());
  auto second = run(agentArgs(), std::chrono::seconds(30));
  EXPECT_EQ(second.exit_code, 1) << second.out << second.err;
  EXPECT_NE(second.err.find(owner), std::string::npos) << second.err;
  auto args = agentArgs();
  args.insert(args.begin() + 1, "cleanup");
  auto cleanup = run(args, std::chrono::seconds(30));
  EXPECT_EQ(cleanup.exit_code, 1) << cleanup.out << cleanup.err;
  EXPECT_NE(cleanup.err.find("cleanup refused: " + owner), std::string::npos) << cleanup.err;
  // The running agent and its pod are as they were.
  EXPECT_EQ(cli({"status", "--brief"}).exit_code, 0);
  auto eps = nlohmann::json::parse(cli({"endpoint", "list", "-o", "json"}).out, nullptr, false);
  ASSERT_TRUE(eps.is_array());
  EXPECT_EQ(eps.size(), 1u);
  EXPECT_NE(run({"ip", "netns", "list"}).out.find(host_dev_ + "_" + ns_ + "_p1"), std::string::npos);
}

// A second agent on the host needs one flag: --instance NAME derives every
// per-agent name (instance.h), none of which collides with the first agent.
TEST_F(Agent, ASecondAgentNeedsOnlyTheInstanceFlag) {
  startAgent();
  const std::string name = fmt::format("t{}", getpid() % 100000);
  const std::vector<std::string> second{bin("membraned"), "--instance", name, "--lock-dir", dir_ + "/locks",
                                        "--enable-health-checking", "false"};
  auto cfg = run({bin("membraned"), "--instance", name, "--print-config"});
  ASSERT_EQ(cfg.exit_code, 0) << cfg.err;
  EXPECT_NE(cfg.out.find("--state-dir /var/lib/membrane-" + name + "\n"), std::string::npos) << cfg.out;
  const std::string sock = "/var/run/membrane-" + name + "/membrane.sock";
  struct Cleanup {
    std::vector<std::string> args;
    std::string name;
    ~Cleanup() {
      auto a = args;
      a.insert(a.begin() + 1, "cleanup");
      run(a, std::chrono::seconds(60));
      run({"rm", "-rf", "/var/run/membrane-" + name, "/var/lib/membrane-" + name});
    }
  } cleanup{second, name};
  Child agent2 = Child::spawn(second, dir_ + "/membraned2.log");
  ASSERT_TRUE(waitFor([&] { return run({bin("membrane"), "--socket", sock, "status", "--brief"}).exit_code == 0; },
                      std::chrono::seconds(30)))
      << readFileOrEmpty(dir_ + "/membraned2.log");
  // Both serve pods at the same time, each in its own pod CIDR.
  auto p2 = run({bin("membrane"), "--socket", sock, "endpoint", "create", "p2", "--labels", "app=two"});
  ASSERT_EQ(p2.exit_code, 0) << p2.out << p2.err;
  auto g = run({bin("membrane"), "--socket", sock, "endpoint", "get", "p2", "-o", "json"});
  auto j = nlohmann::json::parse(g.out, nullptr, false);
  if (j.is_array() && !j.empty()) j = j[0];
  ASSERT_TRUE(j.is_object()) << g.out << g.err;
  EXPECT_EQ(j.value("ipv4", "").rfind("10.201.", 0), 0u) << g.out;
  EXPECT_FALSE(createPod("p1", "app=one").ip.empty());
  EXPECT_EQ(cli({"status", "--brief"}).exit_code, 0);
  EXPECT_EQ(agent2.stop(SIGTERM, std::chrono::seconds(15)), 0) << readFileOrEmpty(dir_ + "/membraned2.log");
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
