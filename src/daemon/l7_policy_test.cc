// buildProxyConfig (pure): the Star Wars L7 policy and its neighbours become
// exactly the membrane-proxy config the proxy parses.
#include "src/daemon/l7_policy.h"

#include <arpa/inet.h>

#include <gtest/gtest.h>

#include "src/kernel/tproxy.h"
#include "src/proxy/config.h"

namespace membrane::daemon {
namespace {

using nlohmann::json;

labels::LabelSet pod(const std::string& text) {
  auto ls = labels::parseLabels(text + ",io.kubernetes.pod.namespace=default");
  EXPECT_TRUE(ls.ok());
  return *ls;
}

std::vector<policy::Policy> parse(const std::string& yaml) {
  auto r = policy::parsePolicies(yaml, "test.yaml");
  EXPECT_TRUE(r.ok()) << (r.diagnostics.empty() ? "" : r.diagnostics[0].message);
  return r.policies;
}

const char* kStarWars = R"(apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "rule1"
spec:
  endpointSelector:
    matchLabels: {org: empire, class: deathstar}
  ingress:
  - fromEndpoints:
    - matchLabels: {org: empire}
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http:
        - method: "POST"
          path: "/v1/request-landing"
  - fromEndpoints:
    - matchLabels: {class: xwing}
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
)";

struct World {
  labels::LabelSet deathstar = pod("org=empire,class=deathstar");
  labels::LabelSet tiefighter = pod("org=empire,class=tiefighter");
  labels::LabelSet xwing = pod("org=alliance,class=xwing");
  std::vector<identity::IdentityRef> refs() const { return {{256, &deathstar}, {257, &tiefighter}, {258, &xwing}}; }
  std::vector<L7Endpoint> eps() const {
    return {{0x0a000002, 256, deathstar}, {0x0a000003, 257, tiefighter}, {0x0a000004, 258, xwing}};
  }
};

TEST(L7PolicyTest, StarWarsIngressRulesPerPeerIdentity) {
  World w;
  json cfg = buildProxyConfig(7, {15001, 15002}, parse(kStarWars), w.eps(), w.refs(), {{0x0a000001, 1}});
  json want = json::parse(R"({
    "revision": 7,
    "listeners": [{"port": 15001, "direction": "ingress"}, {"port": 15002, "direction": "egress"}],
    "endpoints": [{"ip": "10.0.0.2", "egress": [], "ingress": [{"port": 80, "proto": "TCP", "rules": [
      {"method": "POST", "path": "/v1/request-landing", "host": "", "headers": [], "policy": "default/rule1",
       "allowed_identities": [256, 257]},
      {"method": "", "path": "", "host": "", "headers": [], "policy": "default/rule1", "allowed_identities": [258]}]}]}],
    "identities": {"10.0.0.1": 1, "10.0.0.2": 256, "10.0.0.3": 257, "10.0.0.4": 258},
    "prefixes": []})");
  EXPECT_EQ(cfg, want) << cfg.dump(2);
  EXPECT_EQ(countRedirects(cfg), 1u);
  // The proxy accepts it as is.
  auto parsed = proxy::ProxyConfig::parse(cfg.dump());
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  EXPECT_EQ((*parsed)->redirectCount(), 1u);
}

// headerMatches reach the proxy with Cilium's empty mismatch as DENY, and the
// proxy accepts what the policy parser accepted.
TEST(L7PolicyTest, HeaderMatchesAreShippedWithTheirActions) {
  World w;
  auto policies = parse(R"(apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "hm"
spec:
  endpointSelector:
    matchLabels: {class: deathstar}
  ingress:
  - fromEndpoints:
    - matchLabels: {org: empire}
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http:
        - path: "/v1/.*"
          headerMatches:
          - name: X-Token
            value: "t0k"
          - name: X-Via
            value: membrane
            mismatch: ADD
          - {name: X-Trace, mismatch: LOG}
)");
  json cfg = buildProxyConfig(1, {15001, 15002}, policies, w.eps(), w.refs(), {});
  json want = json::parse(R"([{"name": "X-Token", "value": "t0k", "mismatch": "DENY"},
                              {"name": "X-Via", "value": "membrane", "mismatch": "ADD"},
                              {"name": "X-Trace", "value": "", "mismatch": "LOG"}])");
  EXPECT_EQ(cfg["endpoints"][0]["ingress"][0]["rules"][0]["header_matches"], want) << cfg.dump(2);
  auto parsed = proxy::ProxyConfig::parse(cfg.dump());
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  const proxy::PortPolicy* pp = (*parsed)->find(htonl(0x0a000002), proxy::Direction::Ingress, 80);
  ASSERT_NE(pp, nullptr);
  EXPECT_TRUE(pp->has_edits);
}

TEST(L7PolicyTest, NoHttpRulesNoRedirects) {
  World w;
  auto pols = parse(R"(apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata: {name: l4}
spec:
  endpointSelector: {matchLabels: {class: deathstar}}
  ingress:
  - toPorts: [{ports: [{port: "80", protocol: TCP}]}]
)");
  json cfg = buildProxyConfig(1, {15001, 15002}, pols, w.eps(), w.refs(), {});
  EXPECT_EQ(cfg["endpoints"], json::array());
  EXPECT_EQ(countRedirects(cfg), 0u);
}

TEST(L7PolicyTest, EgressRulesAreKeyedByTheClientAndTheDestinationIdentity) {
  World w;
  auto pols = parse(R"(apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata: {name: out}
spec:
  endpointSelector: {matchLabels: {class: tiefighter}}
  egress:
  - toEndpoints: [{matchLabels: {class: deathstar}}]
    toPorts:
    - ports: [{port: "8080", protocol: TCP}]
      rules: {http: [{method: GET, path: "/v1/.*", headers: ["X-Ship: tie"]}]}
)");
  json cfg = buildProxyConfig(1, {15001, 15002}, pols, w.eps(), w.refs(), {});
  ASSERT_EQ(cfg["endpoints"].size(), 1u);
  EXPECT_EQ(cfg["endpoints"][0]["ip"], "10.0.0.3");
  EXPECT_EQ(cfg["endpoints"][0]["ingress"], json::array());
  EXPECT_EQ(cfg["endpoints"][0]["egress"],
            json::parse(R"([{"port": 8080, "proto": "TCP", "rules": [{"method": "GET", "path": "/v1/.*", "host": "",
              "headers": ["X-Ship: tie"], "policy": "default/out", "allowed_identities": [256]}]}])"));
}

// toCIDR peers: the rule is limited to the CIDR identity, and the config
// carries that identity's own prefix (its longest cidr: label) so the proxy
// can resolve the destination to it.
TEST(L7PolicyTest, EgressToCidrCarriesThePrefixIdentities) {
  World w;
  auto pols = parse(R"(apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata: {name: out}
spec:
  endpointSelector: {matchLabels: {class: tiefighter}}
  egress:
  - toCIDR: ["192.0.2.7/32"]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules: {http: [{method: GET, path: "/allowed"}]}
)");
  labels::LabelSet host32 = labels::cidrIdentityLabels("192.0.2.7/32");
  labels::LabelSet net16 = labels::cidrIdentityLabels("10.1.0.0/16");
  auto refs = w.refs();
  refs.push_back({identity::kLocalScopeFlag | 1, &host32});
  refs.push_back({identity::kLocalScopeFlag | 2, &net16});
  json cfg = buildProxyConfig(1, {15001, 15002}, pols, w.eps(), refs, {});
  EXPECT_EQ(cfg["prefixes"], json::parse(R"([{"cidr": "192.0.2.7/32", "identity": 16777217},
                                             {"cidr": "10.1.0.0/16", "identity": 16777218}])"));
  ASSERT_EQ(cfg["endpoints"].size(), 1u);
  EXPECT_EQ(cfg["endpoints"][0]["egress"],
            json::parse(R"([{"port": 80, "proto": "TCP", "rules": [{"method": "GET", "path": "/allowed", "host": "",
              "headers": [], "policy": "default/out", "allowed_identities": [16777217]}]}])"));
  auto parsed = proxy::ProxyConfig::parse(cfg.dump());
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  EXPECT_EQ((*parsed)->identityOf(inet_addr("192.0.2.7")), 16777217u);
  EXPECT_EQ((*parsed)->identityOf(inet_addr("10.1.3.4")), 16777218u);
  EXPECT_EQ((*parsed)->identityOf(inet_addr("192.0.2.8")), proxy::kWorldIdentity);
}

TEST(L7PolicyTest, PortRangeFlag) {
  auto ok = parseProxyPortRange("15001-15002");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->ingress, 15001);
  EXPECT_EQ(ok->egress, 15002);
  for (const char* bad : {"", "15001", "15001-15001", "0-2", "a-b", "15001-70000", "2-1"}) {
    auto r = parseProxyPortRange(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message.find("--proxy-port-range"), std::string::npos) << r.error().message;
  }
}

TEST(L7PolicyTest, TproxyConfigValidation) {
  kernel::TproxyConfig c;
  c.ports = {15001, 15002};
  EXPECT_TRUE(kernel::validateTproxyConfig(c).ok());
  auto bad = c;
  bad.table = 254;
  EXPECT_NE(kernel::validateTproxyConfig(bad).error().message.find("--proxy-route-table 254"), std::string::npos);
  bad = c;
  bad.rule_priority = 32766;
  EXPECT_FALSE(kernel::validateTproxyConfig(bad).ok());
  bad = c;
  bad.chain = std::string(29, 'X');
  EXPECT_NE(kernel::validateTproxyConfig(bad).error().message.find("--proxy-iptables-chain"), std::string::npos);
  EXPECT_EQ(kernel::toProxyMark(15001), 0x3a990200u);
}

}  // namespace
}  // namespace membrane::daemon
