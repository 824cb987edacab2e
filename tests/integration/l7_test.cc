// L7 (HTTP) policy end to end: the Star Wars L7 policy on real pods, with the
// real deathstar server, membraned + membrane-proxy + TPROXY plumbing, real
// traffic through the transparent path, and exact outcomes (bodies, status
// codes, the client IP the server sees, metric deltas, monitor lines).
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <signal.h>

#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "tests/integration/agent_fixture.h"

namespace membrane::testing {
namespace {

// The Star Wars L7 policy is examples/starwars/sw_l3_l4_l7_policy.yaml itself.

// Egress L7 on tiefighter: only GET /v1 to deathstar:80.
const char* kEgressL7Policy = R"(apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "tiefighter-egress"
  namespace: "{ns}"
spec:
  endpointSelector:
    matchLabels:
      class: tiefighter
  egress:
  - toEndpoints:
    - matchLabels:
        class: deathstar
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
      rules:
        http:
        - method: "GET"
          path: "/v1"
        - method: "POST"
          path: "/v1/request-landing"
)";

// The node itself may call deathstar's landing API (and nothing else).
const char* kHostL7Policy = R"(apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "host-landing"
  namespace: "{ns}"
spec:
  endpointSelector:
    matchLabels:
      class: deathstar
  ingress:
  - fromEntities:
    - host
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
      rules:
        http:
        - method: "POST"
          path: "/v1/request-landing"
)";

// An L7 port on deathstar where nothing listens: the proxy's upstream is refused.
const char* kDeadPortPolicy = R"(apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "rule2"
  namespace: "{ns}"
spec:
  endpointSelector:
    matchLabels:
      class: deathstar
  ingress:
  - fromEndpoints:
    - matchLabels:
        org: empire
    toPorts:
    - ports:
      - port: "81"
        protocol: TCP
      rules:
        http:
        - method: "GET"
)";

// Requests on ONE keep-alive connection (http.client), printing "status body" per
// request. With a trigger file, waits for it after the first request.
std::string keepAliveScript(const std::string& ip, const std::vector<std::pair<std::string, std::string>>& reqs,
                            const std::string& trigger = "") {
  std::string py = fmt::format(
      "import http.client, os, sys, time\n"
      "c = http.client.HTTPConnection('{}', 80, timeout=10)\n"
      "def req(m, p):\n"
      "    c.request(m, p, body=b'' if m in ('POST','PUT') else None)\n"
      "    r = c.getresponse()\n"
      "    print(r.status, repr(r.read().decode()), flush=True)\n",
      ip);
  for (size_t i = 0; i < reqs.size(); ++i) {
    py += fmt::format("req('{}', '{}')\n", reqs[i].first, reqs[i].second);
    if (i == 0 && !trigger.empty())
      py += fmt::format(
          "print('waiting', flush=True)\n"
          "t0 = time.time()\n"
          "while not os.path.exists('{}') and time.time() - t0 < 60: time.sleep(0.05)\n",
          trigger);
  }
  return py;
}

size_t countJson(const std::string& text) {
  size_t n = 0;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (nlohmann::json::parse(line, nullptr, false).is_object()) ++n;
  return n;
}

class L7 : public AgentFixture {
 protected:
  void SetUp() override {
    AgentFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    // Short enough for the slowloris test; every other request's headers
    // arrive in one segment.
    extra_agent_args_ = {"--proxy-header-timeout-ms", "2000", "--proxy-idle-timeout-ms", "60000"};
    startAgent();
    if (HasFatalFailure()) return;
    deathstar_ = createPod("deathstar", "org=empire,class=deathstar");
    tiefighter_ = createPod("tiefighter", "org=empire,class=tiefighter");
    xwing_ = createPod("xwing", "org=alliance,class=xwing");
    ASSERT_FALSE(deathstar_.ip.empty());
    children_.push_back(Child::spawn({bin("membrane"), "--socket", socket_, "exec", "-n", ns_, "deathstar", "--",
                                      "python3", "-u", source_dir_ + "/examples/starwars/deathstar.py", "80"},
                                     dir_ + "/deathstar.log"));
    ASSERT_TRUE(waitFor([&] { return curl("tiefighter", "POST", "/v1/request-landing", 2).exit_code == 0; },
                        std::chrono::seconds(15)))
        << readFileOrEmpty(dir_ + "/deathstar.log");
    auto imp = importPolicy(exampleInNamespace("starwars/sw_l3_l4_l7_policy.yaml"));
    ASSERT_EQ(imp.exit_code, 0) << imp.out << imp.err;
  }

  // curl printing the body then "|<status>".
  RunResult curl(const std::string& ship, const std::string& method, const std::string& path, int max_time,
                 int port = 80, const std::string& host = "") {
    std::vector<std::string> argv{"curl", "-s", "--max-time", std::to_string(max_time), "-X", method, "-w", "|%{http_code}"};
    if (!host.empty()) argv.insert(argv.end(), {"-H", "Host: " + host});
    argv.push_back(fmt::format("http://{}:{}{}", deathstar_.ip, port, path));
    return execIn(ship, argv);
  }

  Pod deathstar_, tiefighter_, xwing_;
};

TEST_F(L7, StarWarsVerdictsThroughTheTransparentProxy) {
  const std::map<std::string, std::string> http{{"protocol_l7", "http"}};
  auto l7 = [&](const char* rule) { return metric("cilium_policy_l7_total", {{"proxy_type", "http"}, {"rule", rule}}); };
  const double received = metric("cilium_policy_l7_received_total"), forwarded = metric("cilium_policy_l7_forwarded_total"),
               denied = metric("cilium_policy_l7_denied_total"), parse_errors = metric("cilium_policy_l7_parse_errors_total"),
               rule_denied = l7("denied"), rule_forwarded = l7("forwarded"), rule_received = l7("received");
  const std::map<std::string, std::string> upstream_ok{{"error", ""}, {"protocol_l7", "http"}, {"scope", "upstreamTime"}};
  const double replies = metric("cilium_proxy_upstream_reply_seconds_count", upstream_ok);
  // One redirect: deathstar, ingress, port 80.
  EXPECT_EQ(metric("cilium_proxy_redirects", http), 1);
  auto status = cli({"status"});
  std::string gw = pod_cidr_.substr(0, pod_cidr_.rfind('.')) + ".1";
  std::string pid = readFileOrEmpty(state_dir_ + "/proxy.pid");
  pid.erase(pid.find_last_not_of("\n") + 1);
  EXPECT_NE(status.out.find(fmt::format("OK, ip {}, 1 redirects active on ports {}-{}, pid {}\n", gw, proxy_port_,
                                        proxy_port_ + 1, pid)),
            std::string::npos)
      << status.out;

  auto landed = curl("tiefighter", "POST", "/v1/request-landing", 5);
  EXPECT_EQ(landed.exit_code, 0) << landed.err;
  EXPECT_EQ(landed.out, "Ship landed\n|200");

  auto api = curl("tiefighter", "GET", "/v1", 5);
  EXPECT_EQ(api.out, "Access denied\r\n|403");
  auto exhaust = curl("tiefighter", "PUT", "/v1/exhaust-port", 5);
  EXPECT_EQ(exhaust.out, "Access denied\r\n|403");

  // xwing is still dropped at L3/L4: its connection never opens.
  auto x = curl("xwing", "POST", "/v1/request-landing", 2);
  EXPECT_EQ(x.exit_code, 28) << x.out << x.err;

  // The server saw tiefighter's own pod IP (transparent upstream), once per
  // allowed request, and never the denied ones.
  std::string log = readFileOrEmpty(dir_ + "/deathstar.log");
  EXPECT_NE(log.find(fmt::format("deathstar: {} \"POST /v1/request-landing HTTP/1.1\" 200", tiefighter_.ip)),
            std::string::npos)
      << log;
  EXPECT_EQ(log.find("exhaust-port"), std::string::npos) << log;
  EXPECT_EQ(log.find("\"GET /v1 "), std::string::npos) << log;

  // Exact deltas: 3 requests parsed, 1 forwarded, 2 denied, no parse error;
  // one upstream reply timed (the forwarded request). xwing never reached L7.
  EXPECT_EQ(metric("cilium_policy_l7_received_total"), received + 3);
  EXPECT_EQ(metric("cilium_policy_l7_forwarded_total"), forwarded + 1);
  EXPECT_EQ(metric("cilium_policy_l7_denied_total"), denied + 2);
  EXPECT_EQ(metric("cilium_policy_l7_parse_errors_total"), parse_errors);
  EXPECT_EQ(l7("received"), rule_received + 3);
  EXPECT_EQ(l7("forwarded"), rule_forwarded + 1);
  EXPECT_EQ(l7("denied"), rule_denied + 2);
  EXPECT_EQ(metric("cilium_proxy_upstream_reply_seconds_count", upstream_ok), replies + 1);

  // The exposition stays clean for promtool.
  std::ofstream(dir_ + "/metrics.txt") << scrape();
  auto check = run({"sh", "-c", "promtool check metrics < " + dir_ + "/metrics.txt"});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;

  // Every family exposed here (agent, datapath, health and L7 families are all
  // present after this scenario) is documented in docs/metrics.md with its type:
  // a table row "| `name` | <type> ...".
  std::string doc = readFileOrEmpty(source_dir_ + "/docs/metrics.md");
  ASSERT_FALSE(doc.empty());
  std::istringstream exposition(scrape());
  std::string line;
  int families = 0;
  std::regex type_line(R"(^# TYPE (\S+) (\S+)$)");
  while (std::getline(exposition, line)) {
    std::smatch m;
    if (!std::regex_match(line, m, type_line)) continue;
    ++families;
    const std::string name = m[1], type = m[2];
    std::regex row("\\| `" + name + "` \\| " + type + "[ |]");
    EXPECT_TRUE(std::regex_search(doc, row))
        << name << " (" << type << ") is exposed on /metrics but docs/metrics.md has no row \"| `" << name
        << "` | " << type << " ...\"";
  }
  EXPECT_GE(families, 30) << "too few # TYPE lines parsed";
}

TEST_F(L7, MonitorShowsRequestAndResponseLines) {
  children_.push_back(Child::spawn({bin("membrane"), "--socket", socket_, "monitor", "--type", "l7"},
                                   dir_ + "/monitor.log"));
  children_.push_back(Child::spawn({bin("membrane"), "--socket", socket_, "monitor", "--type", "l7", "--json"},
                                   dir_ + "/monitor.json"));
  ASSERT_TRUE(waitForMonitorListening(dir_ + "/monitor.log")) << readFileOrEmpty(dir_ + "/monitor.log");
  ASSERT_TRUE(waitForMonitorListening(dir_ + "/monitor.json")) << readFileOrEmpty(dir_ + "/monitor.json");
  // The URL comes from the Host header, like Cilium's (the seed's service
  // name); curl's own Host for the IP URL is the IP (port 80 is the default).
  std::string service = fmt::format("deathstar.{}.svc.cluster.local", ns_);
  EXPECT_EQ(curl("tiefighter", "PUT", "/v1/exhaust-port", 5, 80, service).out, "Access denied\r\n|403");
  EXPECT_EQ(curl("tiefighter", "POST", "/v1/request-landing", 5).out, "Ship landed\n|200");
  // The event lines (not the banner), latency masked.
  auto lines = [&] {
    std::string out, line;
    std::istringstream in(readFileOrEmpty(dir_ + "/monitor.log"));
    while (std::getline(in, line))
      if (line.rfind("<- ", 0) == 0) out += line + "\n";
    return std::regex_replace(out, std::regex("latency [0-9]+us"), "latency Nus");
  };
  auto labels = [&](const std::string& cls) {
    return fmt::format(
        "[k8s:class={0} k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name={1} "
        "k8s:io.cilium.k8s.policy.cluster=default k8s:io.cilium.k8s.policy.serviceaccount=default "
        "k8s:io.kubernetes.pod.namespace={1} k8s:org=empire]",
        cls, ns_);
  };
  std::string from = fmt::format("{} ({})", tiefighter_.id, labels("tiefighter"));
  std::string to = fmt::format("{} ({})", deathstar_.id, labels("deathstar"));
  std::string named = "http://" + service;
  std::string by_ip = "http://" + deathstar_.ip;
  std::string want =
      fmt::format("<- Request http from {0} to {1}, identity {2}->{3}, verdict Denied PUT {4}/v1/exhaust-port => 0\n"
                  "<- Response http to {0} from {1}, identity {3}->{2}, verdict Denied PUT {4}/v1/exhaust-port => 403, "
                  "latency Nus\n"
                  "<- Request http from {0} to {1}, identity {2}->{3}, verdict Forwarded POST {5}/v1/request-landing => 0\n"
                  "<- Response http to {0} from {1}, identity {3}->{2}, verdict Forwarded POST {5}/v1/request-landing => "
                  "200, latency Nus\n",
                  from, to, tiefighter_.identity, deathstar_.identity, named, by_ip);
  EXPECT_TRUE(waitFor([&] { return lines() == want; }, std::chrono::seconds(5))) << lines() << "\nwant:\n" << want;
  // --json: the same 4 events, as objects.
  EXPECT_TRUE(waitFor([&] { return countJson(readFileOrEmpty(dir_ + "/monitor.json")) == 4; }, std::chrono::seconds(5)))
      << readFileOrEmpty(dir_ + "/monitor.json");
  std::istringstream in(readFileOrEmpty(dir_ + "/monitor.json"));
  std::string line;
  std::vector<nlohmann::json> evs;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object()) evs.push_back(j);
  }
  ASSERT_EQ(evs.size(), 4u);
  EXPECT_EQ(evs[0]["type"], "l7");
  EXPECT_EQ(evs[0]["l7_type"], "request");
  EXPECT_EQ(evs[0]["verdict"], "Denied");
  EXPECT_EQ(evs[0]["method"], "PUT");
  EXPECT_EQ(evs[0]["url"], named + "/v1/exhaust-port");
  EXPECT_EQ(evs[2]["url"], by_ip + "/v1/request-landing");
  EXPECT_EQ(evs[0]["src"]["ip"], tiefighter_.ip);
  EXPECT_EQ(evs[0]["src"]["identity"], tiefighter_.identity);
  EXPECT_EQ(evs[0]["src"]["endpoint"], tiefighter_.id);
  EXPECT_EQ(evs[0]["dst"]["endpoint"], deathstar_.id);
  EXPECT_EQ(evs[1]["status"], 403);
  EXPECT_EQ(evs[3]["status"], 200);
  EXPECT_EQ(evs[3]["verdict"], "Forwarded");
}

TEST_F(L7, DeniedThenAllowedOnOneKeepAliveConnection) {
  auto r = execIn("tiefighter",
                  {"python3", "-c",
                   keepAliveScript(deathstar_.ip, {{"PUT", "/v1/exhaust-port"}, {"POST", "/v1/request-landing"},
                                                   {"GET", "/v1"}, {"POST", "/v1/request-landing"}})});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "403 'Access denied\\r\\n'\n"
            "200 'Ship landed\\n'\n"
            "403 'Access denied\\r\\n'\n"
            "200 'Ship landed\\n'\n");
}

TEST_F(L7, AgentRestartKeepsProxyAndOpenConnection) {
  std::string pid_before = readFileOrEmpty(state_dir_ + "/proxy.pid");
  ASSERT_FALSE(pid_before.empty());
  std::string trigger = dir_ + "/go";
  children_.push_back(Child::spawn(
      {bin("membrane"), "--socket", socket_, "exec", "-n", ns_, "tiefighter", "--", "python3", "-c",
       keepAliveScript(deathstar_.ip,
                       {{"POST", "/v1/request-landing"}, {"PUT", "/v1/exhaust-port"}, {"POST", "/v1/request-landing"}},
                       trigger)},
      dir_ + "/keepalive.log"));
  ASSERT_TRUE(waitFor([&] { return readFileOrEmpty(dir_ + "/keepalive.log").find("waiting") != std::string::npos; },
                      std::chrono::seconds(10)))
      << readFileOrEmpty(dir_ + "/keepalive.log");

  const double received = metric("cilium_policy_l7_received_total");
  const double forwarded = metric("cilium_policy_l7_forwarded_total");
  EXPECT_EQ(stopAgent(), 0);
  startAgent();
  // The same proxy process was adopted, not replaced, and its counters carry on.
  EXPECT_EQ(readFileOrEmpty(state_dir_ + "/proxy.pid"), pid_before);
  EXPECT_EQ(metric("cilium_policy_l7_received_total"), received);
  EXPECT_EQ(metric("cilium_policy_l7_forwarded_total"), forwarded);

  std::ofstream(trigger) << "go";
  ASSERT_TRUE(waitFor([&] { return readFileOrEmpty(dir_ + "/keepalive.log").find("waiting\n403") != std::string::npos &&
                                   readFileOrEmpty(dir_ + "/keepalive.log").size() > 60; },
                      std::chrono::seconds(10)))
      << readFileOrEmpty(dir_ + "/keepalive.log");
  EXPECT_TRUE(waitFor([&] { return readFileOrEmpty(dir_ + "/keepalive.log") ==
                                   "200 'Ship landed\\n'\nwaiting\n403 'Access denied\\r\\n'\n200 'Ship landed\\n'\n"; },
                      std::chrono::seconds(5)))
      << readFileOrEmpty(dir_ + "/keepalive.log");

  // Enforcement continues for new connections too; the counters went on from where they were.
  EXPECT_EQ(curl("tiefighter", "PUT", "/v1/exhaust-port", 5).out, "Access denied\r\n|403");
  EXPECT_EQ(curl("tiefighter", "POST", "/v1/request-landing", 5).out, "Ship landed\n|200");
  EXPECT_EQ(metric("cilium_policy_l7_received_total"), received + 4);
  EXPECT_EQ(metric("cilium_policy_l7_forwarded_total"), forwarded + 2);
}

TEST_F(L7, AgentRestartsAProxyThatDied) {
  pid_t old_pid = std::atoi(readFileOrEmpty(state_dir_ + "/proxy.pid").c_str());
  ASSERT_GT(old_pid, 1);
  // The proxy was started by the agent this test started.
  ASSERT_EQ(kill(old_pid, SIGKILL), 0);
  // Within a few seconds the agent notices, starts a new one and gives it the config.
  ASSERT_TRUE(waitFor(
      [&] {
        pid_t p = std::atoi(readFileOrEmpty(state_dir_ + "/proxy.pid").c_str());
        return p > 1 && p != old_pid && curl("tiefighter", "POST", "/v1/request-landing", 2).out == "Ship landed\n|200";
      },
      std::chrono::seconds(15)))
      << readFileOrEmpty(state_dir_ + "/proxy.log");
  const double denied = metric("cilium_policy_l7_denied_total");
  EXPECT_EQ(curl("tiefighter", "PUT", "/v1/exhaust-port", 5).out, "Access denied\r\n|403");
  EXPECT_EQ(metric("cilium_policy_l7_denied_total"), denied + 1);
  EXPECT_EQ(metric("cilium_proxy_redirects", {{"protocol_l7", "http"}}), 1);
}

TEST_F(L7, EgressRulesOnTheClient) {
  auto imp = importPolicy(withNs(kEgressL7Policy, ns_));
  ASSERT_EQ(imp.exit_code, 0) << imp.out << imp.err;
  EXPECT_EQ(metric("cilium_proxy_redirects", {{"protocol_l7", "http"}}), 2);  // deathstar ingress + tiefighter egress
  const double denied = metric("cilium_policy_l7_denied_total"), forwarded = metric("cilium_policy_l7_forwarded_total");
  // Egress rules at tiefighter AND ingress rules at deathstar: the egress proxy applies both.
  EXPECT_EQ(curl("tiefighter", "POST", "/v1/request-landing", 5).out, "Ship landed\n|200");  // both allow
  EXPECT_EQ(curl("tiefighter", "GET", "/v1", 5).out, "Access denied\r\n|403");            // ingress denies
  EXPECT_EQ(curl("tiefighter", "PUT", "/v1/exhaust-port", 5).out, "Access denied\r\n|403");  // egress denies
  EXPECT_EQ(metric("cilium_policy_l7_denied_total"), denied + 2);
  EXPECT_EQ(metric("cilium_policy_l7_forwarded_total"), forwarded + 1);

  // Without deathstar's ingress L7 policy, egress alone decides.
  auto del = cli({"policy", "delete", "rule1", "-n", ns_});
  ASSERT_EQ(del.exit_code, 0) << del.out << del.err;
  EXPECT_EQ(metric("cilium_proxy_redirects", {{"protocol_l7", "http"}}), 1);
  auto api = curl("tiefighter", "GET", "/v1", 5);
  EXPECT_EQ(api.out.substr(0, 1), "{") << api.out;
  EXPECT_EQ(api.out.substr(api.out.size() - 4), "|200") << api.out;
  EXPECT_EQ(curl("tiefighter", "PUT", "/v1/exhaust-port", 5).out, "Access denied\r\n|403");
  EXPECT_EQ(metric("cilium_policy_l7_denied_total"), denied + 3);
  EXPECT_EQ(metric("cilium_policy_l7_forwarded_total"), forwarded + 2);
  // xwing has no egress policy and deathstar no ingress policy any more: plain L3/L4 path.
  EXPECT_EQ(curl("xwing", "PUT", "/v1/exhaust-port", 5).out, "Panic: deathstar exploded\n|503");
  // The server saw tiefighter's own address through the egress proxy, in both phases.
  std::string log = readFileOrEmpty(dir_ + "/deathstar.log");
  EXPECT_NE(log.find(fmt::format("deathstar: {} \"POST /v1/request-landing HTTP/1.1\" 200", tiefighter_.ip)),
            std::string::npos)
      << log;
  EXPECT_NE(log.find(fmt::format("deathstar: {} \"GET /v1 HTTP/1.1\" 200", tiefighter_.ip)), std::string::npos) << log;
}

// A peer outside the cluster: a netns this test creates, behind a veth from
// the host, at a /30 of 198.18.0.0/15 (benchmarking range, never routed
// anywhere real) derived from the pid, with a default route via the host
// and forwarding on the host side of its link.
// Removed (netns and link) when it goes out of scope, also on failure.
struct WorldPeer {
  std::string ns, hdev, wdev, host_ip, ip;
  WorldPeer() {
    const int pid = getpid();
    ns = fmt::format("mbw-{}", pid);
    hdev = fmt::format("mbw{}h", pid % 100000);
    wdev = fmt::format("mbw{}w", pid % 100000);
    const int a = (pid / 64) % 256, b = (pid % 64) * 4;
    host_ip = fmt::format("198.18.{}.{}", a, b + 1);
    ip = fmt::format("198.18.{}.{}", a, b + 2);
  }
  ~WorldPeer() {
    run({"ip", "link", "del", hdev});
    run({"ip", "netns", "del", ns});
  }
  void create() {
    for (const auto& argv : std::vector<std::vector<std::string>>{
             {"ip", "netns", "add", ns},
             {"ip", "link", "add", hdev, "type", "veth", "peer", "name", wdev},
             {"ip", "link", "set", wdev, "netns", ns},
             {"ip", "addr", "add", host_ip + "/30", "dev", hdev},
             {"ip", "link", "set", hdev, "up"},
             {"ip", "-n", ns, "addr", "add", ip + "/30", "dev", wdev},
             {"ip", "-n", ns, "link", "set", wdev, "up"},
             {"ip", "-n", ns, "link", "set", "lo", "up"},
             {"ip", "-n", ns, "route", "add", "default", "via", host_ip},
             // Packets from this peer to pods are forwarded by the host: on
             // for this link only (IPv4 checks the ingress device), gone with it.
             {"sysctl", "-qw", "net.ipv4.conf." + hdev + ".forwarding=1"}}) {
      auto r = run(argv);
      ASSERT_EQ(r.exit_code, 0) << fmt::format("{}", fmt::join(argv, " ")) << ": " << r.out << r.err;
    }
  }
  std::vector<std::string> exec(std::vector<std::string> argv) const {
    argv.insert(argv.begin(), {"ip", "netns", "exec", ns});
    return argv;
  }
};

// An egress HTTP rule whose peer is a CIDR outside the cluster: the server
// lives in a WorldPeer. The proxy resolves the destination to the prefix's
// CIDR identity (config "prefixes"), so the rule applies: GET /allowed
// reaches the real server, GET /other is denied by the proxy.
TEST_F(L7, EgressToCidrAndWorldPeersOutsideTheCluster) {
  WorldPeer world;
  world.create();
  if (HasFatalFailure()) return;
  const std::string world_ip = world.ip, wns = world.ns;
  const std::string server =
      "import http.server\n"
      "class H(http.server.BaseHTTPRequestHandler):\n"
      "    def do_GET(self):\n"
      "        b = ('world ' + self.client_address[0] + ' ' + self.path + '\\n').encode()\n"
      "        self.send_response(200); self.send_header('Content-Length', str(len(b))); self.end_headers()\n"
      "        self.wfile.write(b)\n"
      "http.server.HTTPServer(('0.0.0.0', 80), H).serve_forever()\n";
  children_.push_back(Child::spawn(world.exec({"python3", "-u", "-c", server}), dir_ + "/world.log"));
  ASSERT_TRUE(waitFor([&] { return run(world.exec({"curl", "-s", "--max-time", "1", "http://127.0.0.1/x"})).exit_code == 0; },
                      std::chrono::seconds(10)))
      << readFileOrEmpty(dir_ + "/world.log");
  // xwing may GET `path` on port 80 of the peers `peer` (a YAML list item) selects.
  auto egressHttp = [&](const std::string& name, const std::string& peer, const std::string& path) {
    return importPolicy(fmt::format(R"(apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "{}"
  namespace: "{}"
spec:
  endpointSelector:
    matchLabels:
      class: xwing
  egress:
  - {}
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
      rules:
        http:
        - method: "GET"
          path: "{}"
)",
                                    name, ns_, peer, path));
  };
  auto imp = egressHttp("to-world", fmt::format("toCIDR: [\"{}/32\"]", world_ip), "/allowed");
  ASSERT_EQ(imp.exit_code, 0) << imp.out << imp.err;
  const double denied = metric("cilium_policy_l7_denied_total"), forwarded = metric("cilium_policy_l7_forwarded_total");
  auto get = [&](const std::string& path) {
    return execIn("xwing", {"curl", "-s", "--max-time", "5", "-w", "|%{http_code}", "http://" + world_ip + path});
  };
  EXPECT_EQ(get("/allowed").out, fmt::format("world {} /allowed\n|200", xwing_.ip));  // the real server, pod's source
  EXPECT_EQ(get("/other").out, "Access denied\r\n|403");
  EXPECT_EQ(metric("cilium_policy_l7_denied_total"), denied + 1);
  EXPECT_EQ(metric("cilium_policy_l7_forwarded_total"), forwarded + 1);

  // The same rules under `toEntities: [world]`: the server's address has no
  // CIDR identity now, so it is reserved:world (2) in the datapath and in the
  // proxy (longest-prefix match falls back to world).
  ASSERT_EQ(cli({"policy", "delete", "to-world", "-n", ns_}).exit_code, 0);
  imp = egressHttp("to-world-entity", "toEntities: [world]", "/entity");
  ASSERT_EQ(imp.exit_code, 0) << imp.out << imp.err;
  EXPECT_EQ(get("/entity").out, fmt::format("world {} /entity\n|200", xwing_.ip));
  EXPECT_EQ(get("/allowed").out, "Access denied\r\n|403");  // the old rule is gone with its policy
  EXPECT_EQ(metric("cilium_policy_l7_denied_total"), denied + 2);
  EXPECT_EQ(metric("cilium_policy_l7_forwarded_total"), forwarded + 2);
}

// Ingress HTTP rules for a client outside the cluster (fromCIDR): the proxy
// judges the request for the client's CIDR identity (1 << 24 | n) and marks
// its upstream with it; the datapath must read that identity whole. It read
// 16 bits, so 0x01000001 became 1 (the host), which this policy does not
// allow: the allowed request was dropped on its way to the pod.
TEST_F(L7, IngressFromCidrPeerOutsideTheCluster) {
  WorldPeer world;
  world.create();
  if (HasFatalFailure()) return;
  auto imp = importPolicy(fmt::format(R"(apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "from-world"
  namespace: "{}"
spec:
  endpointSelector:
    matchLabels:
      class: deathstar
  ingress:
  - fromCIDR: ["{}/32"]
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
      rules:
        http:
        - method: "POST"
          path: "/v1/request-landing"
)",
                                      ns_, world.ip));
  ASSERT_EQ(imp.exit_code, 0) << imp.out << imp.err;
  const double denied = metric("cilium_policy_l7_denied_total"), forwarded = metric("cilium_policy_l7_forwarded_total");
  auto curlFromWorld = [&](const std::string& method, const std::string& path) {
    return run(world.exec({"curl", "-s", "--max-time", "5", "-X", method, "-w", "|%{http_code}",
                           fmt::format("http://{}:80{}", deathstar_.ip, path)}));
  };
  EXPECT_EQ(curlFromWorld("POST", "/v1/request-landing").out, "Ship landed\n|200");
  EXPECT_EQ(curlFromWorld("PUT", "/v1/exhaust-port").out, "Access denied\r\n|403");
  EXPECT_EQ(metric("cilium_policy_l7_forwarded_total"), forwarded + 1);
  EXPECT_EQ(metric("cilium_policy_l7_denied_total"), denied + 1);
  // The server saw the world client's own address (transparent upstream).
  std::string log = readFileOrEmpty(dir_ + "/deathstar.log");
  EXPECT_NE(log.find(fmt::format("deathstar: {} \"POST /v1/request-landing HTTP/1.1\" 200", world.ip)),
            std::string::npos)
      << log;
}

TEST_F(L7, HostToPodThroughTheIngressProxy) {
  auto imp = importPolicy(withNs(kHostL7Policy, ns_));
  ASSERT_EQ(imp.exit_code, 0) << imp.out << imp.err;
  const double denied = metric("cilium_policy_l7_denied_total"), forwarded = metric("cilium_policy_l7_forwarded_total");
  auto hostCurl = [&](const std::string& method, const std::string& path) {
    return run({"curl", "-s", "--max-time", "5", "-X", method, "-w", "|%{http_code}",
                fmt::format("http://{}:80{}", deathstar_.ip, path)});
  };
  EXPECT_EQ(hostCurl("POST", "/v1/request-landing").out, "Ship landed\n|200");
  EXPECT_EQ(hostCurl("PUT", "/v1/exhaust-port").out, "Access denied\r\n|403");
  EXPECT_EQ(metric("cilium_policy_l7_denied_total"), denied + 1);
  EXPECT_EQ(metric("cilium_policy_l7_forwarded_total"), forwarded + 1);
  // The server saw the node's (gateway) address.
  std::string gw = pod_cidr_.substr(0, pod_cidr_.rfind('.')) + ".1";
  std::string log = readFileOrEmpty(dir_ + "/deathstar.log");
  EXPECT_NE(log.find(fmt::format("deathstar: {} \"POST /v1/request-landing HTTP/1.1\" 200", gw)), std::string::npos)
      << log;
}

TEST_F(L7, UnreachableUpstreamGets503WithTheErrorLabel) {
  auto imp = importPolicy(withNs(kDeadPortPolicy, ns_));
  ASSERT_EQ(imp.exit_code, 0) << imp.out << imp.err;
  const std::map<std::string, std::string> failed{{"error", "connect_failed"}, {"protocol_l7", "http"},
                                                  {"scope", "totalTime"}};
  const double before = metric("cilium_proxy_upstream_reply_seconds_count", failed);
  const double forwarded = metric("cilium_policy_l7_forwarded_total");
  auto r = curl("tiefighter", "GET", "/", 5, 81);
  EXPECT_EQ(r.out.substr(r.out.size() - 4), "|503") << r.out;
  EXPECT_EQ(metric("cilium_proxy_upstream_reply_seconds_count", failed), before + 1);
  EXPECT_EQ(metric("cilium_proxy_upstream_reply_seconds_count",
                   {{"error", "connect_failed"}, {"protocol_l7", "http"}, {"scope", "upstreamTime"}}),
            before + 1);
  // The allowed request counts as forwarded (the policy let it through).
  EXPECT_EQ(metric("cilium_policy_l7_forwarded_total"), forwarded + 1);
  // Port 80 is unaffected.
  EXPECT_EQ(curl("tiefighter", "POST", "/v1/request-landing", 5).out, "Ship landed\n|200");
}

TEST_F(L7, MalformedRequestGets400AndCloseAndCountsAParseError) {
  const double parse_errors = metric("cilium_policy_l7_parse_errors_total");
  const double received = metric("cilium_policy_l7_received_total");
  // Raw bytes on one connection: the answer, then EOF (the proxy closed it).
  auto r = execIn("tiefighter",
                  {"python3", "-c",
                   fmt::format("import socket\n"
                               "s = socket.create_connection(('{}', 80), timeout=5)\n"
                               "s.sendall(b'BREW /pot HTCPCP/1.0 bogus\\r\\n\\r\\n')\n"
                               "data = b''\n"
                               "while True:\n"
                               "    b = s.recv(4096)\n"
                               "    if not b: break\n"
                               "    data += b\n"
                               "print(data.split(b'\\r\\n')[0].decode())\n",
                               deathstar_.ip)});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "HTTP/1.1 400 Bad Request\n");
  EXPECT_EQ(metric("cilium_policy_l7_parse_errors_total"), parse_errors + 1);
  EXPECT_EQ(metric("cilium_policy_l7_received_total"), received);
  EXPECT_EQ(metric("cilium_policy_l7_total", {{"proxy_type", "http"}, {"rule", "parse_errors"}}), parse_errors + 1);
  // Nothing reached the server.
  EXPECT_EQ(readFileOrEmpty(dir_ + "/deathstar.log").find("BREW"), std::string::npos);
}

// Slowloris through the real path (TPROXY): headers one byte per second are
// cut by the header timeout (--proxy-header-timeout-ms 2000, given to
// membrane-proxy by the agent): 408 and close, counted from the first byte
// (trickling does not extend it); the next normal request is served.
TEST_F(L7, SlowlorisIsCutByTheHeaderTimeout) {
  std::string py = fmt::format(
      "import socket, time\n"
      "s = socket.create_connection(('{}', 80), timeout=10)\n"
      "t0 = time.time(); got = b''\n"
      "for b in b'GET /v1 HTTP/1.1\\r\\nHost: deathstar\\r\\nX-Slow: aaaaaaaaaaaaaaaa\\r\\n':\n"
      "    try: s.send(bytes([b]))\n"
      "    except OSError: break\n"
      "    s.settimeout(1.0)\n"
      "    try:\n"
      "        d = s.recv(4096)\n"
      "    except socket.timeout:\n"
      "        continue\n"
      "    got += d\n"
      "    break\n"
      "s.settimeout(5)\n"
      "while True:\n"
      "    d = s.recv(4096)\n"
      "    if not d: break\n"
      "    got += d\n"
      "dt = time.time() - t0\n"
      "print(got.split(b'\\r\\n')[0].decode(), 'closed', 'in-time' if 1.5 <= dt < 5 else 'late %.2f' % dt)\n",
      deathstar_.ip);
  auto r = execIn("tiefighter", {"python3", "-c", py});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "HTTP/1.1 408 Request Timeout closed in-time\n") << r.err;
  EXPECT_EQ(curl("tiefighter", "POST", "/v1/request-landing", 5).out, "Ship landed\n|200");
}

// 10,000 idle connections from a pod through TPROXY are all held by the proxy
// (connections.active exact) and the next normal request is still served.
TEST_F(L7, ManyIdleConnectionsDoNotExhaustTheProxy) {
  constexpr int kIdle = 10000;
  std::string trigger = dir_ + "/idle-go";
  std::string py = fmt::format(
      "import resource, socket, time, http.client, os\n"
      "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
      "resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))\n"
      "conns = [socket.create_connection(('{0}', 80), timeout=10) for _ in range({1})]\n"
      "c = http.client.HTTPConnection('{0}', 80, timeout=10)\n"
      "c.request('POST', '/v1/request-landing', body=b'')\n"
      "r = c.getresponse()\n"
      "print(len(conns), r.status, repr(r.read().decode()), flush=True)\n"
      "t0 = time.time()\n"
      "while not os.path.exists('{2}') and time.time() - t0 < 20: time.sleep(0.05)\n",
      deathstar_.ip, kIdle, trigger);
  children_.push_back(Child::spawn(
      {bin("membrane"), "--socket", socket_, "exec", "-n", ns_, "tiefighter", "--", "python3", "-c", py},
      dir_ + "/idle.log"));
  ASSERT_TRUE(waitFor([&] { return readFileOrEmpty(dir_ + "/idle.log").find('\n') != std::string::npos; },
                      std::chrono::seconds(20)))
      << readFileOrEmpty(dir_ + "/idle.log");
  EXPECT_EQ(readFileOrEmpty(dir_ + "/idle.log"), "10000 200 'Ship landed\\n'\n");
  // The proxy holds every one of them (plus the request's connection).
  auto active = [&] {
    auto r = run({"curl", "-s", "--max-time", "2", "--unix-socket", proxy_socket_, "http://x/v1/stats"});
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    return j.is_object() ? j["connections"]["active"].get<int64_t>() : -1;
  };
  EXPECT_TRUE(waitFor([&] { return active() == kIdle + 1; }, std::chrono::seconds(5))) << active();
  std::ofstream(trigger) << "go";
  // Once the pod closes them the proxy lets go of every one.
  EXPECT_TRUE(waitFor([&] { return active() == 0; }, std::chrono::seconds(10))) << active();
  EXPECT_EQ(curl("tiefighter", "PUT", "/v1/exhaust-port", 5).out, "Access denied\r\n|403");
}

}  // namespace
}  // namespace membrane::testing
