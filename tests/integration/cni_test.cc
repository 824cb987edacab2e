// membrane-cni against a real membraned (issue 14): the plugin binary run as
// a container runtime runs it (CNI_* environment, config on stdin) on network
// namespaces the test creates the way a runtime does (`ip netns add`), then
// the result JSON, the kernel state and the datapath (pings allowed and
// denied by policy, exact drop counts).
#include <algorithm>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tests/integration/agent_fixture.h"

namespace membrane::testing {
namespace {

using Json = nlohmann::json;

// Ingress to the deathstar only from org=empire (any protocol: ICMP included).
constexpr const char* kEmpireOnly = R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: empire-only
  namespace: {ns}
spec:
  endpointSelector:
    matchLabels:
      class: deathstar
  ingress:
  - fromEndpoints:
    - matchLabels:
        org: empire
)";

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

class CniTest : public AgentFixture {
 protected:
  void TearDown() override {
    // The agent's cleanup removes the endpoints (veths); the namespaces are
    // the "runtime's": this test made them, this test removes them.
    AgentFixture::TearDown();
    for (const auto& n : netns_) run({"ip", "netns", "delete", n});
  }

  // A runtime's namespace: /run/netns/<name>, named after the test's pid.
  std::string runtimeNetns(const std::string& tag) {
    std::string name = fmt::format("mbcni-{}-{}", ::getpid(), tag);
    netns_.push_back(name);
    auto r = run({"ip", "netns", "add", name});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return name;
  }
  static std::string pathOf(const std::string& netns) { return "/run/netns/" + netns; }

  std::string conf(const std::string& extra = "") const {
    return fmt::format(R"({{"cniVersion": "1.0.0", "name": "membrane", "type": "membrane-cni",
                           "membrane": {{"socket": "{}", "timeoutSeconds": 10}}{}}})",
                       socket_, extra.empty() ? "" : ", " + extra);
  }

  // membrane-cni with a runtime's environment (nothing else inherited).
  RunResult cni(const std::string& command, const std::string& container, const std::string& netns,
                const std::string& stdin_text, const std::string& labels = "") {
    std::vector<std::string> argv{"env", "-i", "CNI_COMMAND=" + command, "CNI_CONTAINERID=" + container,
                                  "CNI_IFNAME=eth0", "CNI_PATH=/usr/lib/cni",
                                  fmt::format("CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={}{}", ns_,
                                              container, labels.empty() ? "" : ";MEMBRANE_LABELS=" + labels)};
    if (!netns.empty()) argv.push_back("CNI_NETNS=" + pathOf(netns));
    argv.push_back(bin("membrane-cni"));
    return run(argv, std::chrono::seconds(30), stdin_text);
  }

  RunResult inNetns(const std::string& netns, const std::vector<std::string>& cmd) {
    std::vector<std::string> argv{"ip", "netns", "exec", netns};
    argv.insert(argv.end(), cmd.begin(), cmd.end());
    return run(argv, std::chrono::seconds(30));
  }

  // The endpoint listed under this name in the test's namespace (null if none).
  Json endpoint(const std::string& name) {
    auto list = cli({"endpoint", "list", "-o", "json"});
    for (const auto& ep : Json::parse(list.out))
      if (ep["name"] == name && ep["namespace"] == ns_) return ep;
    return nullptr;
  }

  std::vector<std::string> netns_;
};

TEST_F(CniTest, AddCheckDelOfARuntimesContainer) {
  startAgent();
  const std::string rt = runtimeNetns("a");

  auto add = cni("ADD", "web", rt, conf(), "app:web,tier:front");
  ASSERT_EQ(add.exit_code, 0) << add.out << add.err;
  const Json result = Json::parse(add.out);
  const Json ep = endpoint("web");
  ASSERT_FALSE(ep.is_null()) << cli({"endpoint", "list"}).out;
  // The gateway: the pod CIDR's first address ("10.a.b.0/24" -> "10.a.b.1").
  const std::string ip = ep["ipv4"], gw = pod_cidr_.substr(0, pod_cidr_.rfind(".")) + ".1";
  const std::string mac = trim(inNetns(rt, {"cat", "/sys/class/net/eth0/address"}).out);
  EXPECT_EQ(result, Json::parse(fmt::format(R"({{"cniVersion": "1.0.0", "dns": {{}},
      "interfaces": [{{"name": "{}", "mac": "{}"}}, {{"name": "eth0", "mac": "{}", "sandbox": "{}"}}],
      "ips": [{{"address": "{}/32", "gateway": "{}", "interface": 1}}],
      "routes": [{{"dst": "0.0.0.0/0", "gw": "{}"}}]}})",
                                            ep["interface"]["host"].get<std::string>(),
                                            ep["interface"]["host_mac"].get<std::string>(), mac, pathOf(rt), ip, gw,
                                            gw)));
  EXPECT_EQ(ep["netns"], pathOf(rt));
  EXPECT_EQ(ep["cni"], Json::parse(R"({"container_id": "web", "ifname": "eth0", "network": "membrane"})"));
  const auto& labels = ep["labels"];
  EXPECT_NE(std::find(labels.begin(), labels.end(), "k8s:app=web"), labels.end()) << labels.dump();
  EXPECT_NE(std::find(labels.begin(), labels.end(), "k8s:tier=front"), labels.end()) << labels.dump();
  EXPECT_EQ(trim(inNetns(rt, {"ip", "-4", "route", "show", "default"}).out), "default via " + gw + " dev eth0");

  // A second ADD is refused and changes nothing.
  auto again = cni("ADD", "web", rt, conf(), "app:web");
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_EQ(Json::parse(again.out)["code"], 101) << again.out;
  EXPECT_EQ(endpoint("web")["id"], ep["id"]);
  EXPECT_EQ(trim(inNetns(rt, {"sh", "-c", "ip -o link show | wc -l"}).out), "2");  // lo, eth0

  // CHECK with ADD's result: fine; survives an agent restart.
  const std::string with_prev = conf("\"prevResult\": " + result.dump());
  auto check = cni("CHECK", "web", rt, with_prev);
  EXPECT_EQ(check.exit_code, 0) << check.out;
  EXPECT_EQ(check.out, "");
  EXPECT_EQ(stopAgent(), 0);
  startAgent();
  check = cni("CHECK", "web", rt, with_prev);
  EXPECT_EQ(check.exit_code, 0) << check.out;
  // A missing address is a difference CHECK reports.
  ASSERT_EQ(inNetns(rt, {"ip", "addr", "del", ip + "/32", "dev", "eth0"}).exit_code, 0);
  check = cni("CHECK", "web", rt, with_prev);
  EXPECT_EQ(check.exit_code, 1);
  EXPECT_EQ(Json::parse(check.out)["code"], 100) << check.out;
  EXPECT_NE(check.out.find("eth0 lacks address " + ip), std::string::npos) << check.out;

  // DEL: the endpoint and its veth go, the runtime's namespace stays; twice is fine.
  auto del = cni("DEL", "web", rt, with_prev);
  EXPECT_EQ(del.exit_code, 0) << del.out;
  EXPECT_EQ(del.out, "");
  EXPECT_TRUE(endpoint("web").is_null());
  EXPECT_NE(run({"ip", "link", "show", ep["interface"]["host"].get<std::string>()}).exit_code, 0);
  EXPECT_EQ(trim(inNetns(rt, {"sh", "-c", "ip -o link show | wc -l"}).out), "1");  // lo only
  EXPECT_EQ(trim(run({"ip", "-4", "route", "show", ip + "/32"}).out), "");
  del = cni("DEL", "web", "", with_prev);
  EXPECT_EQ(del.exit_code, 0) << del.out;
  EXPECT_EQ(cni("DEL", "never-added", rt, conf()).exit_code, 0);
}

TEST_F(CniTest, BadAddsLeaveNothingBehind) {
  startAgent();
  const std::string rt = runtimeNetns("b");
  ASSERT_EQ(Json::parse(cli({"endpoint", "list", "-o", "json"}).out).size(), 0u);
  auto gone = cni("ADD", "c1", "mbcni-nonexistent", conf());
  EXPECT_EQ(gone.exit_code, 1);
  EXPECT_EQ(Json::parse(gone.out)["code"], 4) << gone.out;
  // An interface of that name already in the namespace.
  // A veth pair: some kernels here have no dummy driver.
  ASSERT_EQ(inNetns(rt, {"ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"}).exit_code, 0);
  auto taken = cni("ADD", "c2", rt, conf());
  EXPECT_EQ(taken.exit_code, 1);
  EXPECT_EQ(Json::parse(taken.out)["code"], 101) << taken.out;
  EXPECT_NE(taken.out.find("interface eth0 already exists in " + pathOf(rt)), std::string::npos) << taken.out;
  EXPECT_EQ(Json::parse(cli({"endpoint", "list", "-o", "json"}).out).size(), 0u);
  // The agent down: try again later, nothing created.
  ASSERT_EQ(inNetns(rt, {"ip", "link", "del", "eth0"}).exit_code, 0);
  EXPECT_EQ(stopAgent(), 0);
  auto down = cni("ADD", "c3", rt, conf());
  EXPECT_EQ(down.exit_code, 1);
  EXPECT_EQ(Json::parse(down.out)["code"], 11) << down.out;
  EXPECT_EQ(trim(inNetns(rt, {"sh", "-c", "ip -o link show | wc -l"}).out), "1");
  startAgent();
}

// A runtime's container and a membrane pod under one policy: exact drops.
TEST_F(CniTest, PolicyBetweenARuntimesContainersAndAPod) {
  startAgent();
  const Pod deathstar = createPod("deathstar", "org=empire,class=deathstar");
  const std::string rebel = runtimeNetns("rebel"), trooper = runtimeNetns("trooper");
  ASSERT_EQ(cni("ADD", "rebel", rebel, conf(), "org:alliance").exit_code, 0);
  ASSERT_EQ(cni("ADD", "trooper", trooper, conf(), "org:empire").exit_code, 0);

  auto open = inNetns(rebel, {"ping", "-c", "2", "-i", "0.2", "-W", "2", deathstar.ip});
  EXPECT_NE(open.out.find("2 packets transmitted, 2 received"), std::string::npos) << open.out;

  auto imp = importPolicy(withNs(kEmpireOnly, ns_));
  ASSERT_EQ(imp.exit_code, 0) << imp.out << imp.err;
  const std::map<std::string, std::string> denied{{"direction", "INGRESS"}, {"reason", "Policy denied"}};
  const double before = metric("cilium_drop_count_total", denied);
  auto ping = inNetns(rebel, {"ping", "-c", "5", "-i", "0.2", "-W", "1", deathstar.ip});
  EXPECT_NE(ping.out.find("5 packets transmitted, 0 received"), std::string::npos) << ping.out;
  EXPECT_TRUE(waitFor([&] { return metric("cilium_drop_count_total", denied) == before + 5; }, std::chrono::seconds(5)))
      << metric("cilium_drop_count_total", denied) - before;
  auto ok = inNetns(trooper, {"ping", "-c", "3", "-i", "0.2", "-W", "2", deathstar.ip});
  EXPECT_NE(ok.out.find("3 packets transmitted, 3 received"), std::string::npos) << ok.out;
  EXPECT_EQ(metric("cilium_drop_count_total", denied), before + 5);
}

}  // namespace
}  // namespace membrane::testing
