// EndpointPolicy::l7: the HTTP rule sets the proxy enforces, resolved by the
// engine together with the map entries (issue 10: L7 policy resolved once).
#include <gtest/gtest.h>

#include "membrane/identity.h"
#include "membrane/policy_repository.h"
#include "src/policy/test_util.h"

namespace membrane::policy {
namespace {

using labels::LabelSet;
using testing::allDiagnostics;

constexpr uint8_t kTcp = 6, kUdp = 17, kIn = 1, kEg = 2;

LabelSet pod(std::string_view ns, std::string_view user) {
  return labels::endpointLabels(ns, labels::parseLabels(user).value());
}

class ResolveL7 : public ::testing::Test {
 protected:
  void SetUp() override {
    web_id = ids.allocate(web)->id;
    api_id = ids.allocate(api)->id;
    db_id = ids.allocate(db)->id;
  }
  void import(const std::string& yaml) {
    auto p = parsePolicies(yaml, "t.yaml");
    ASSERT_TRUE(p.ok()) << allDiagnostics(p);
    auto r = repo.import(p.policies);
    ASSERT_TRUE(r.ok()) << r.error().message;
  }
  identity::IdentityAllocator ids;
  Repository repo;
  LabelSet web = pod("x", "app=web"), api = pod("x", "app=api"), db = pod("x", "app=db");
  uint32_t web_id = 0, api_id = 0, db_id = 0;
};

HttpRule http(std::string method, std::string path) {
  HttpRule h;
  h.method = std::move(method);
  h.path = std::move(path);
  return h;
}

TEST_F(ResolveL7, HttpRulesPerPortWithPeersAndL4OnlyAllow) {
  import(R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: api}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}, {port: "8080", protocol: TCP}]
      rules:
        http:
        - {method: GET, path: "/a"}
        - method: POST
          headerMatches: [{name: X-Token, value: s3cret}, {name: X-Trace, value: "1", mismatch: LOG}]
  - fromEndpoints: [{matchLabels: {app: db}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  - toPorts: [{ports: [{port: "53", protocol: UDP}]}]
  egress:
  - toEntities: [all]
    toPorts: [{ports: [{port: "443", protocol: TCP}], rules: {http: [{path: "/x"}]}}]
)");
  auto ep = repo.resolve(web, ids.refs());
  HttpRule post = http("POST", "");
  post.header_matches = {{"X-Token", "s3cret", ""}, {"X-Trace", "1", "LOG"}};
  const std::vector<L7Rule> api_rules = {{http("GET", "/a"), "x/p", {api_id}}, {post, "x/p", {api_id}}};
  std::vector<L7Rule> at80 = api_rules;
  at80.push_back({HttpRule{}, "x/p", {db_id}});  // db: L4-only allow on the L7 port
  const std::map<L7Port, std::vector<L7Rule>> want = {
      {{kIn, 80}, at80},
      {{kIn, 8080}, api_rules},
      {{kEg, 443}, {{http("", "/x"), "x/p", {0}}}},
  };
  EXPECT_EQ(ep.l7, want);
  // The same resolution's entries redirect exactly those ports.
  const uint32_t cookie = repo.policies()[0].cookie;
  EXPECT_EQ(verdict(ep, api_id, kTcp, 80, kIn), (Verdict{VerdictKind::Allowed, 1, cookie, true}));
  EXPECT_EQ(verdict(ep, db_id, kTcp, 80, kIn), (Verdict{VerdictKind::Allowed, 0, cookie, true}));  // not redirected
  EXPECT_EQ(verdict(ep, api_id, kTcp, 443, kEg), (Verdict{VerdictKind::Allowed, 1, cookie, true}));
  EXPECT_EQ(verdict(ep, api_id, kUdp, 53, kIn), (Verdict{VerdictKind::Allowed, 0, cookie, true}));
  // Not selected: no rule sets.
  EXPECT_TRUE(repo.resolve(api, ids.refs()).l7.empty());
}

TEST_F(ResolveL7, DenyTakesPrecedenceOverTheRedirect) {
  import(R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: api}}, {matchLabels: {app: db}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}], rules: {http: [{method: GET}]}}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: db}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
)");
  auto ep = repo.resolve(web, ids.refs());
  const uint32_t cookie = repo.policies()[0].cookie;
  // The rule set names both peers; the entries deny db before any redirect.
  EXPECT_EQ(ep.l7, (std::map<L7Port, std::vector<L7Rule>>{{{kIn, 80}, {{http("GET", ""), "x/p", {api_id, db_id}}}}}));
  EXPECT_EQ(verdict(ep, db_id, kTcp, 80, kIn), (Verdict{VerdictKind::Denied, 0, cookie, true}));
  EXPECT_EQ(verdict(ep, api_id, kTcp, 80, kIn), (Verdict{VerdictKind::Allowed, 1, cookie, true}));
}

TEST_F(ResolveL7, NamedPortsResolveLikeTheEntries) {
  import(R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: api}}]
    toPorts: [{ports: [{port: http}], rules: {http: [{path: "/in"}]}}]
  egress:
  - toEndpoints: [{matchLabels: {app: api}}, {matchLabels: {app: db}}]
    toPorts: [{ports: [{port: svc, protocol: TCP}], rules: {http: [{path: "/out"}]}}]
  - toEndpoints: [{matchLabels: {app: db}}]
    toPorts: [{ports: [{port: svc}]}]
)");
  NamedPorts named;
  named.subject = {{"http", 8080, kTcp}};
  named.by_identity[api_id] = {{"svc", 9000, kTcp}};
  named.by_identity[db_id] = {{"svc", 9000, kTcp}, {"svc", 9001, kUdp}};
  auto ep = repo.resolve(web, ids.refs(), named);
  const std::map<L7Port, std::vector<L7Rule>> want = {
      {{kIn, 8080}, {{http("", "/in"), "x/p", {api_id}}}},
      {{kEg, 9000}, {{http("", "/out"), "x/p", {api_id, db_id}}, {HttpRule{}, "x/p", {db_id}}}},
  };
  EXPECT_EQ(ep.l7, want);
  const uint32_t cookie = repo.policies()[0].cookie;
  EXPECT_EQ(verdict(ep, api_id, kTcp, 8080, kIn), (Verdict{VerdictKind::Allowed, 1, cookie, true}));
  EXPECT_EQ(verdict(ep, api_id, kTcp, 9000, kEg), (Verdict{VerdictKind::Allowed, 1, cookie, true}));
  // Without the subject's port named http there is no ingress rule set.
  named.subject.clear();
  EXPECT_EQ(repo.resolve(web, ids.refs(), named).l7.count(L7Port{kIn, 8080}), 0u);
}

}  // namespace
}  // namespace membrane::policy
