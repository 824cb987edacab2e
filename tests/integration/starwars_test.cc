// The seed's L3/L4 scenario end to end, as a user runs it: membraned, the
// membrane CLI, three pods in real network namespaces, an HTTP server in
// deathstar, real traffic, and exact metric deltas on /metrics.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <signal.h>

#include <fstream>
#include <optional>
#include <regex>
#include <sstream>
#include <thread>

#include "bpf/shared/datapath.h"
#include "tests/integration/agent_fixture.h"

namespace membrane::testing {
namespace {

const char* kL3L4Policy = R"(apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "rule1"
  namespace: "{ns}"
spec:
  description: "L3-L4 policy to restrict deathstar access to empire ships only"
  endpointSelector:
    matchLabels:
      org: empire
      class: deathstar
  ingress:
  - fromEndpoints:
    - matchLabels:
        org: empire
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
      - port: "9000"
        protocol: TCP
)";

size_t countLines(const std::string& text, const std::string& needle) {
  size_t n = 0;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (line.find(needle) != std::string::npos) ++n;
  return n;
}

class StarWars : public AgentFixture {
 protected:
  void SetUp() override {
    AgentFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    startAgent();
    if (HasFatalFailure()) return;
    deathstar_ = createPod("deathstar", "org=empire,class=deathstar");
    tiefighter_ = createPod("tiefighter", "org=empire,class=tiefighter");
    xwing_ = createPod("xwing", "org=alliance,class=xwing");
    ASSERT_FALSE(deathstar_.ip.empty());
    // deathstar's HTTP API on :80, as in the demo.
    children_.push_back(Child::spawn({bin("membrane"), "--socket", socket_, "exec", "-n", ns_, "deathstar", "--",
                                      "python3", source_dir_ + "/examples/starwars/deathstar.py", "80"},
                                     dir_ + "/deathstar.log"));
    ASSERT_TRUE(waitFor([&] { return land("tiefighter", 2).exit_code == 0; }, std::chrono::seconds(15)))
        << readFileOrEmpty(dir_ + "/deathstar.log");
  }

  RunResult land(const std::string& ship, int max_time) {
    return execIn(ship, {"curl", "-s", "--max-time", std::to_string(max_time), "-XPOST",
                         fmt::format("http://{}/v1/request-landing", deathstar_.ip)});
  }

  // One UDP datagram to deathstar:5353 and its echo; true if the echo came back.
  bool udpEcho(const std::string& ship) {
    auto r = execIn(ship, {"python3", "-c",
                           fmt::format("import socket\n"
                                       "s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)\n"
                                       "s.sendto(b'hello', ('{}', 5353))\n"
                                       "print(s.recvfrom(100)[0].decode())\n",
                                       deathstar_.ip)});
    return r.exit_code == 0 && r.out == "hello\n";
  }
  void startUdpEcho() {
    children_.push_back(Child::spawn(
        {bin("membrane"), "--socket", socket_, "exec", "-n", ns_, "deathstar", "--", "python3", "-c",
         "import socket\n"
         "s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 5353))\n"
         "while True:\n"
         "  d,a=s.recvfrom(100); s.sendto(d,a)\n"},
        dir_ + "/udp-echo.log"));
  }

  Pod deathstar_, tiefighter_, xwing_;
};

TEST_F(StarWars, NoPolicyBothShipsLand) {
  auto t = land("tiefighter", 5);
  EXPECT_EQ(t.exit_code, 0);
  EXPECT_EQ(t.out, "Ship landed\n");
  auto x = land("xwing", 5);
  EXPECT_EQ(x.exit_code, 0);
  EXPECT_EQ(x.out, "Ship landed\n");
  // UDP and ICMP flow too, and replies come back through conntrack.
  startUdpEcho();
  EXPECT_TRUE(waitFor([&] { return udpEcho("xwing"); }, std::chrono::seconds(5)));
  auto ping = execIn("tiefighter", {"ping", "-c", "3", "-i", "0.2", "-W", "1", deathstar_.ip});
  EXPECT_NE(ping.out.find("3 packets transmitted, 3 received"), std::string::npos) << ping.out;
  // Nothing enforced yet.
  auto list = cli({"endpoint", "list", "-o", "json"});
  auto j = nlohmann::json::parse(list.out);
  for (const auto& ep : j) EXPECT_FALSE(ep["policy"]["ingress"]["enforcing"].get<bool>()) << ep.dump();
}

TEST_F(StarWars, L3L4PolicyDropsXwingWithExactCounts) {
  auto imp = importPolicy(withNs(kL3L4Policy, ns_));
  ASSERT_EQ(imp.exit_code, 0) << imp.out << imp.err;
  EXPECT_NE(imp.out.find("Revision: 2"), std::string::npos) << imp.out;  // a fresh agent is at 1, as Cilium

  // tiefighter still lands.
  auto t = land("tiefighter", 5);
  EXPECT_EQ(t.exit_code, 0) << t.err;
  EXPECT_EQ(t.out, "Ship landed\n");

  // Every drop is reported by the monitor with both identities.
  children_.push_back(Child::spawn({bin("membrane"), "--socket", socket_, "monitor", "--type", "drop", "--json"},
                                   dir_ + "/monitor.log"));
  ASSERT_TRUE(waitForMonitorListening(dir_ + "/monitor.log")) << readFileOrEmpty(dir_ + "/monitor.log");

  const std::map<std::string, std::string> ingress_denied{{"direction", "INGRESS"}, {"reason", "Policy denied"}};
  double before = metric("cilium_drop_count_total", ingress_denied);
  double bytes_before = metric("cilium_drop_bytes_total", ingress_denied);

  // 5 denied pings: exactly 5 drops at deathstar's ingress, 98 bytes each as tc sees them
  // (14 Ethernet + 20 IPv4 + 8 ICMP + 56 payload).
  auto ping = execIn("xwing", {"ping", "-c", "5", "-i", "0.2", "-W", "1", deathstar_.ip});
  EXPECT_NE(ping.exit_code, 0);
  EXPECT_NE(ping.out.find("5 packets transmitted, 0 received"), std::string::npos) << ping.out;
  EXPECT_TRUE(waitFor([&] { return metric("cilium_drop_count_total", ingress_denied) == before + 5; },
                      std::chrono::seconds(5)))
      << "drop count " << metric("cilium_drop_count_total", ingress_denied) << " expected " << before + 5;
  EXPECT_EQ(metric("cilium_drop_bytes_total", ingress_denied), bytes_before + 5 * 98);

  // xwing's landing request hangs (times out), as in the demo.
  auto x = land("xwing", 2);
  EXPECT_EQ(x.exit_code, 28) << x.out << x.err;  // curl: operation timed out
  EXPECT_EQ(x.out, "");

  // The monitor saw the 5 ICMP drops with xwing -> deathstar identities.
  EXPECT_TRUE(waitFor(
      [&] {
        auto log = readFileOrEmpty(dir_ + "/monitor.log");
        return countLines(log, "\"proto\":\"ICMP\"") >= 5;
      },
      std::chrono::seconds(5)));
  auto log = readFileOrEmpty(dir_ + "/monitor.log");
  size_t icmp_drops = 0;
  std::istringstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    auto ev = nlohmann::json::parse(line, nullptr, false);
    if (ev.is_discarded() || ev.value("type", "") != "drop") continue;
    EXPECT_EQ(ev.value("reason", ""), "Policy denied");
    EXPECT_EQ(ev.value("direction", ""), "INGRESS");
    EXPECT_EQ(ev.value("src_identity", 0u), xwing_.identity);
    EXPECT_EQ(ev.value("dst_identity", 0u), deathstar_.identity);
    if (ev.value("proto", "") == "ICMP") ++icmp_drops;
  }
  EXPECT_EQ(icmp_drops, 5u) << log;

  // endpoint list: deathstar enforces ingress, the ships enforce nothing.
  auto list = cli({"endpoint", "list", "-o", "json"});
  auto eps = nlohmann::json::parse(list.out);
  for (const auto& ep : eps) {
    bool is_deathstar = ep["name"] == "deathstar";
    EXPECT_EQ(ep["policy"]["ingress"]["enforcing"].get<bool>(), is_deathstar) << ep.dump();
    EXPECT_FALSE(ep["policy"]["egress"]["enforcing"].get<bool>());
  }
  auto text = cli({"endpoint", "list"});
  EXPECT_EQ(text.exit_code, 0);
  EXPECT_NE(text.out.find("Enabled"), std::string::npos) << text.out;

  // Per-entry counters: the allow entry for tiefighter saw tiefighter's traffic.
  auto bpf = cli({"bpf", "policy", "get", "deathstar", "-n", ns_, "-o", "json"});
  ASSERT_EQ(bpf.exit_code, 0) << bpf.err;
  auto entries = nlohmann::json::parse(bpf.out);
  bool found = false;
  for (const auto& e : entries)
    if (e["identity"] == tiefighter_.identity && e["port"] == 80) {
      found = true;
      EXPECT_GT(e["packets"].get<uint64_t>(), 0u);
    }
  EXPECT_TRUE(found) << bpf.out;

  // policy trace explains both verdicts, naming the policy.
  auto tx = cli({"policy", "trace", "-n", ns_, "--src-endpoint", "xwing", "--dst-endpoint", "deathstar", "--dport", "80/TCP"});
  EXPECT_EQ(tx.exit_code, 0) << tx.err;
  EXPECT_NE(tx.out.find("Final verdict: DENIED"), std::string::npos) << tx.out;
  auto tt = cli({"policy", "trace", "-n", ns_, "--src-endpoint", "tiefighter", "--dst-endpoint", "deathstar", "--dport", "80/TCP"});
  EXPECT_EQ(tt.exit_code, 0) << tt.err;
  EXPECT_NE(tt.out.find("Final verdict: ALLOWED"), std::string::npos) << tt.out;
  EXPECT_NE(tt.out.find(ns_ + "/rule1"), std::string::npos) << tt.out;

  // The exposition is clean for promtool.
  std::ofstream(dir_ + "/metrics.txt") << scrape();
  auto check = run({"sh", "-c", "promtool check metrics < " + dir_ + "/metrics.txt"});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  EXPECT_EQ(metric("cilium_endpoint_count"), 3);
  // The agent's own health under Cilium's names (issue 12): three pods plus
  // the router address of a /24; no periodic task failing; one API call
  // counted per request, by short path and return code.
  EXPECT_EQ(metric("cilium_ip_addresses", {{"family", "ipv4"}}), 4);
  EXPECT_EQ(metric("cilium_ipam_capacity", {{"family", "ipv4"}}), 254);
  EXPECT_EQ(metric("cilium_controllers_failing"), 0);
  EXPECT_GT(metric("cilium_controllers_runs_total", {{"status", "success"}}), 0);
  EXPECT_GT(metric("cilium_agent_bootstrap_seconds", {{"scope", "overall"}, {"outcome", "success"}}), 0);
  const std::map<std::string, std::string> get_ep{{"path", "/v1/endpoint"}, {"method", "GET"}, {"return_code", "200"}};
  const double calls = metric("cilium_agent_api_process_time_seconds_count", get_ep);
  ASSERT_EQ(cli({"endpoint", "get", "xwing", "-n", ns_}).exit_code, 0);
  EXPECT_EQ(metric("cilium_agent_api_process_time_seconds_count", get_ep), calls + 1);
  EXPECT_EQ(metric("cilium_policy_max_revision"), 2);
  EXPECT_EQ(metric("cilium_policy_change_total", {{"outcome", "success"}}), 1);

  // UDP is not in the policy: even empire ships are denied, with an exact count.
  startUdpEcho();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  double drops = metric("cilium_drop_count_total", ingress_denied);
  EXPECT_FALSE(udpEcho("tiefighter"));
  EXPECT_TRUE(waitFor([&] { return metric("cilium_drop_count_total", ingress_denied) == drops + 1; },
                      std::chrono::seconds(3)));

  // Deleting the policy restores reachability.
  auto del = cli({"policy", "delete", "rule1", "-n", ns_});
  EXPECT_EQ(del.exit_code, 0) << del.err;
  EXPECT_EQ(land("xwing", 5).out, "Ship landed\n");
  EXPECT_TRUE(udpEcho("tiefighter"));
}

// Events nobody reads are not produced: the datapath config's event flags
// follow the monitor clients (no allowed-flow verdicts until a client asks
// for policy verdicts, and again none after it leaves).
TEST_F(StarWars, AllowedFlowVerdictsOnlyWhileAMonitorClientWatches) {
  const std::string map = bpf_root_ + "/mb_config_v1";
  auto flags = [&]() -> int64_t {
    auto j = nlohmann::json::parse(run({"bpftool", "-j", "map", "lookup", "pinned", map, "key", "0", "0", "0", "0"}).out,
                                   nullptr, false);
    if (!j.is_object() || !j.contains("value") || j["value"].size() < 4) return -1;
    int64_t f = 0;
    for (int i = 3; i >= 0; --i) f = (f << 8) | std::stoll(j["value"][i].get<std::string>(), nullptr, 16);
    return f;
  };
  constexpr int64_t kQuiet = MB_CFG_F_NO_ALLOWED_VERDICTS;
  ASSERT_TRUE(waitFor([&] { return flags() >= 0 && (flags() & kQuiet); }, std::chrono::seconds(5))) << flags();
  ASSERT_EQ(importPolicy(withNs(kL3L4Policy, ns_)).exit_code, 0);
  std::optional<Child> mon(Child::spawn(
      {bin("membrane"), "--socket", socket_, "monitor", "--type", "policy-verdict", "--json"}, dir_ + "/verdicts.log"));
  ASSERT_TRUE(waitFor([&] { return flags() >= 0 && !(flags() & kQuiet); }, std::chrono::seconds(5))) << flags();
  ASSERT_EQ(land("tiefighter", 5).out, "Ship landed\n");  // a new, allowed flow
  EXPECT_TRUE(waitFor([&] { return readFileOrEmpty(dir_ + "/verdicts.log").find("FORWARDED") != std::string::npos; },
                      std::chrono::seconds(5)))
      << readFileOrEmpty(dir_ + "/verdicts.log");
  mon->stop(SIGTERM);
  mon.reset();
  EXPECT_TRUE(waitFor([&] { return flags() >= 0 && (flags() & kQuiet); }, std::chrono::seconds(5))) << flags();
}

TEST_F(StarWars, EndpointDeleteRemovesEveryTrace) {
  auto ep = nlohmann::json::parse(cli({"endpoint", "get", "xwing", "-n", ns_, "-o", "json"}).out);
  // Pod netns names carry the agent's prefix (its --host-device): <dev>_<ns>_<pod>.
  std::string netns = host_dev_ + "_" + ns_ + "_xwing";
  EXPECT_EQ(ep.value("netns", ""), "/var/run/netns/" + netns);
  std::string host_if = ep["interface"]["host"];
  ASSERT_FALSE(host_if.empty());
  auto ids_before = nlohmann::json::parse(cli({"identity", "list", "-o", "json"}).out);
  auto del = cli({"endpoint", "delete", "xwing", "-n", ns_});
  ASSERT_EQ(del.exit_code, 0) << del.err;
  EXPECT_EQ(run({"ip", "netns", "list"}).out.find(netns), std::string::npos);
  EXPECT_NE(run({"ip", "link", "show", host_if}).exit_code, 0);
  EXPECT_EQ(run({"ip", "route", "show", xwing_.ip}).out, "");
  auto ids_after = nlohmann::json::parse(cli({"identity", "list", "-o", "json"}).out);
  EXPECT_EQ(ids_after.size() + 1, ids_before.size());  // xwing's identity was its alone
  for (const auto& id : ids_after) EXPECT_NE(id["id"].get<uint32_t>(), xwing_.identity);
  EXPECT_EQ(metric("cilium_endpoint_count"), 2);
  // Its address is unreachable now (the pod CIDR's unreachable route), never routed elsewhere.
  auto route = run({"ip", "route", "get", xwing_.ip});
  EXPECT_NE(route.exit_code, 0);
  // The name can be reused, and the new pod works.
  auto again = createPod("xwing", "org=alliance,class=xwing");
  EXPECT_EQ(again.identity, xwing_.identity);
  EXPECT_EQ(land("xwing", 5).out, "Ship landed\n");
}

TEST_F(StarWars, BadInputChangesNothing) {
  ASSERT_EQ(importPolicy(withNs(kL3L4Policy, ns_)).exit_code, 0);
  double failures = metric("cilium_policy_change_total", {{"outcome", "fail"}});
  // An unknown field: rejected with file, line and field path; the running policy stays.
  std::string bad = withNs(kL3L4Policy, ns_);
  bad = std::regex_replace(bad, std::regex("fromEndpoints"), "fromEndpoint");
  auto r = importPolicy(bad);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(".yaml:13:5: spec.ingress[0].fromEndpoint: unknown field 'fromEndpoint' (did you "
                       "mean 'fromEndpoints'?)"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(metric("cilium_policy_change_total", {{"outcome", "fail"}}), failures + 1);
  EXPECT_EQ(metric("cilium_policy_max_revision"), 2);
  EXPECT_EQ(land("xwing", 2).exit_code, 28);          // still denied
  EXPECT_EQ(land("tiefighter", 5).out, "Ship landed\n");  // still allowed

  // A taken name: clear error, nothing left behind. Only this agent's netns
  // (named <host-device>_<ns>_<pod>) and the veths whose peer lives in one
  // count: other agents on the host may create and remove their own meanwhile.
  const std::string mine = host_dev_ + "_";
  auto ourNetns = [&] {
    std::string out;
    std::istringstream in(run({"ip", "netns", "list"}).out);
    for (std::string line; std::getline(in, line);)
      if (line.rfind(mine, 0) == 0) out += line + "\n";
    return out;
  };
  auto ourVeths = [&] { return countLines(run({"ip", "-o", "link", "show"}).out, "link-netns " + mine); };
  auto netns_before = ourNetns();
  auto links_before = ourVeths();
  ASSERT_GT(links_before, 0);
  auto dup = cli({"endpoint", "create", "xwing", "-n", ns_, "--labels", "org=alliance"});
  EXPECT_EQ(dup.exit_code, 1);
  EXPECT_NE(dup.err.find("already exists"), std::string::npos) << dup.err;
  auto badlabel = cli({"endpoint", "create", "ywing", "-n", ns_, "--labels", "org=@x"});
  EXPECT_EQ(badlabel.exit_code, 1);
  EXPECT_NE(badlabel.err.find("@x"), std::string::npos) << badlabel.err;
  EXPECT_EQ(ourNetns(), netns_before);
  EXPECT_EQ(ourVeths(), links_before);

  // Unknown ids and bad JSON on the API: 4xx, the agent keeps running.
  auto unknown = cli({"endpoint", "get", "65000"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("not found"), std::string::npos) << unknown.err;
  auto curl = run({"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", socket_, "-X", "PUT",
                   "-d", "{not json", "http://localhost/v1/endpoint"});
  EXPECT_EQ(curl.out, "400");
  EXPECT_EQ(cli({"status", "--brief"}).exit_code, 0);
}

TEST_F(StarWars, EstablishedConnectionSurvivesAgentRestart) {
  ASSERT_EQ(importPolicy(withNs(kL3L4Policy, ns_)).exit_code, 0);
  // An echo server in deathstar on :9000 and a client in tiefighter that
  // sends a line every 100 ms over ONE connection and logs each echo.
  children_.push_back(Child::spawn(
      {bin("membrane"), "--socket", socket_, "exec", "-n", ns_, "deathstar", "--", "python3", "-u", "-c",
       "import socket\n"
       "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
       "s.bind(('0.0.0.0', 9000)); s.listen(1); c,_=s.accept()\n"
       "f=c.makefile('rwb', buffering=0)\n"
       "for line in f: c.sendall(line)\n"},
      dir_ + "/echo-server.log"));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  children_.push_back(Child::spawn(
      {bin("membrane"), "--socket", socket_, "exec", "-n", ns_, "tiefighter", "--", "python3", "-u", "-c",
       fmt::format("import socket, time, sys\n"
                   "c=socket.create_connection(('{}', 9000), timeout=5)\n"
                   "f=c.makefile('rb')\n"
                   "for i in range(100000):\n"
                   "  c.sendall(b'%d\\n' % i)\n"
                   "  assert f.readline() == b'%d\\n' % i\n"
                   "  print('ok', i, flush=True)\n"
                   "  time.sleep(0.1)\n",
                   deathstar_.ip)},
      dir_ + "/echo-client.log"));
  auto echoes = [&] { return countLines(readFileOrEmpty(dir_ + "/echo-client.log"), "ok "); };
  ASSERT_TRUE(waitFor([&] { return echoes() >= 5; }, std::chrono::seconds(10)))
      << readFileOrEmpty(dir_ + "/echo-client.log");

  // Agent down: the connection goes on, xwing stays denied.
  EXPECT_EQ(stopAgent(), 0);
  size_t at_stop = echoes();
  EXPECT_TRUE(waitFor([&] { return echoes() >= at_stop + 5; }, std::chrono::seconds(10)));
  // `membrane exec` needs the agent to find the pod; use the netns directly while it is down.
  auto xd = run({"ip", "netns", "exec", host_dev_ + "_" + ns_ + "_xwing", "ping", "-c", "2", "-i", "0.2", "-W", "1",
                 deathstar_.ip});
  EXPECT_NE(xd.out.find("2 packets transmitted, 0 received"), std::string::npos) << xd.out << xd.err;

  // Agent back: endpoints restored, the same connection still echoes.
  startAgent();
  size_t at_start = echoes();
  EXPECT_TRUE(waitFor([&] { return echoes() >= at_start + 5; }, std::chrono::seconds(10)))
      << readFileOrEmpty(dir_ + "/echo-client.log");
  EXPECT_EQ(readFileOrEmpty(dir_ + "/echo-client.log").find("Error"), std::string::npos);
  auto list = nlohmann::json::parse(cli({"endpoint", "list", "-o", "json"}).out);
  EXPECT_EQ(list.size(), 3u);
  for (const auto& ep : list) EXPECT_EQ(ep["state"], "ready") << ep.dump();
  for (const auto& ep : list) {
    if (ep["name"] == "deathstar") {
      EXPECT_EQ(ep["identity"].get<uint32_t>(), deathstar_.identity);
    }
  }
  EXPECT_EQ(land("xwing", 2).exit_code, 28);
  EXPECT_EQ(land("tiefighter", 5).out, "Ship landed\n");
}

}  // namespace
}  // namespace membrane::testing
