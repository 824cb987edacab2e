#include <gtest/gtest.h>

#include "membrane/identity.h"
#include "membrane/policy_repository.h"
#include "src/policy/test_util.h"

namespace membrane::policy {
namespace {

using labels::LabelSet;
using testing::allDiagnostics;
using testing::readSourceFile;

constexpr uint8_t kTcp = 6, kUdp = 17, kIn = 1, kEg = 2;

LabelSet pod(std::string_view ns, std::string_view user) {
  return labels::endpointLabels(ns, labels::parseLabels(user).value());
}

std::vector<Policy> parse(const std::string& text) {
  auto r = parsePolicies(text, "t.yaml");
  EXPECT_TRUE(r.ok()) << allDiagnostics(r);
  return r.policies;
}

// The Star Wars demo: tiefighter 256, xwing 257, deathstar 258, all in "default".
class StarWars : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(ids.allocate(tiefighter)->id, 256u);
    ASSERT_EQ(ids.allocate(xwing)->id, 257u);
    ASSERT_EQ(ids.allocate(deathstar)->id, 258u);
  }
  EndpointPolicy resolve(const LabelSet& subject) { return repo.resolve(subject, ids.refs()); }
  void import(const std::string& file) {
    auto r = repo.import(parse(readSourceFile("examples/starwars/" + file)));
    ASSERT_TRUE(r.ok()) << r.error().message;
  }

  identity::IdentityAllocator ids;
  Repository repo;
  LabelSet tiefighter = pod("default", "org=empire,class=tiefighter");
  LabelSet xwing = pod("default", "org=alliance,class=xwing");
  LabelSet deathstar = pod("default", "org=empire,class=deathstar");
};

TEST_F(StarWars, L3L4) {
  import("sw_l3_l4_policy.yaml");
  const uint32_t cookie = repo.policies()[0].cookie;
  ASSERT_NE(cookie, 0u);
  auto ep = resolve(deathstar);
  EXPECT_TRUE(ep.ingress_enforced);
  EXPECT_FALSE(ep.egress_enforced);
  std::map<PolicyKey, PolicyEntry> want = {{{256, 80, kTcp, kIn}, {false, 0, cookie}},
                                           {{258, 80, kTcp, kIn}, {false, 0, cookie}}};
  EXPECT_EQ(ep.entries, want);
  EXPECT_EQ(ep.ingress_rules, std::vector<std::string>{"default/rule1"});
  EXPECT_TRUE(ep.egress_rules.empty());
  EXPECT_EQ(verdict(ep, 256, kTcp, 80, kIn), (Verdict{VerdictKind::Allowed, 0, cookie, true}));
  EXPECT_EQ(verdict(ep, 257, kTcp, 80, kIn).kind, VerdictKind::Dropped);
  EXPECT_EQ(verdict(ep, 256, kTcp, 443, kIn).kind, VerdictKind::Dropped);
  EXPECT_EQ(verdict(ep, 256, kUdp, 80, kIn).kind, VerdictKind::Dropped);
  EXPECT_EQ(verdict(ep, 257, kTcp, 80, kEg).kind, VerdictKind::Allowed);  // egress not enforced
  EXPECT_EQ(repo.policyForCookie(cookie), "default/rule1");

  // The policy does not select the ships.
  auto tf = resolve(tiefighter);
  EXPECT_FALSE(tf.ingress_enforced);
  EXPECT_TRUE(tf.entries.empty());
}

TEST_F(StarWars, L7NeedsProxy) {
  import("sw_l3_l4_l7_policy.yaml");
  auto ep = resolve(deathstar);
  const uint32_t cookie = repo.policies()[0].cookie;
  std::map<PolicyKey, PolicyEntry> want = {{{256, 80, kTcp, kIn}, {false, 1, cookie}},
                                           {{258, 80, kTcp, kIn}, {false, 1, cookie}}};
  EXPECT_EQ(ep.entries, want);
}

TEST_F(StarWars, DenyPolicyMakesEmpireDefaultDeny) {
  import("sw_deny_policy.yaml");
  for (const auto* subject : {&tiefighter, &deathstar}) {
    auto ep = resolve(*subject);
    EXPECT_TRUE(ep.ingress_enforced);
    EXPECT_FALSE(ep.egress_enforced);
    EXPECT_TRUE(ep.entries.empty());  // `ingress: [{}]` allows nothing
    EXPECT_EQ(verdict(ep, 257, kTcp, 80, kIn).kind, VerdictKind::Dropped);
  }
  auto xw = resolve(xwing);
  EXPECT_FALSE(xw.ingress_enforced);
  import("sw_l3_l4_policy.yaml");
  auto ep = resolve(deathstar);
  EXPECT_EQ(ep.entries.size(), 2u);
  EXPECT_EQ(ep.ingress_rules, (std::vector<std::string>{"default/empire-default-deny", "default/rule1"}));
  EXPECT_EQ(verdict(ep, 256, kTcp, 80, kIn).kind, VerdictKind::Allowed);
}

TEST(Resolve, NamespaceScoping) {
  identity::IdentityAllocator ids;
  LabelSet a_empire = pod("a", "org=empire"), b_empire = pod("b", "org=empire");
  LabelSet a_target = pod("a", "app=target"), b_target = pod("b", "app=target");
  const uint32_t ida = ids.allocate(a_empire)->id, idb = ids.allocate(b_empire)->id;
  ASSERT_TRUE(ids.allocate(a_target).ok());
  ASSERT_TRUE(ids.allocate(b_target).ok());
  auto policies = parse(R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: a}
spec:
  endpointSelector: {matchLabels: {app: target}}
  ingress:
  - fromEndpoints: [{matchLabels: {org: empire}}]
  - fromEndpoints: [{}]
    toPorts: [{ports: [{port: "22", protocol: TCP}]}]
  - fromEndpoints: [{matchLabels: {org: empire, k8s:io.kubernetes.pod.namespace: b}}]
    toPorts: [{ports: [{port: "53", protocol: UDP}]}]
)");
  auto in_b = resolvePolicies(policies, b_target, ids.refs());
  EXPECT_FALSE(in_b.ingress_enforced);
  EXPECT_TRUE(in_b.entries.empty());
  auto in_a = resolvePolicies(policies, a_target, ids.refs());
  EXPECT_TRUE(in_a.ingress_enforced);
  const uint32_t a_tgt = ids.lookup(a_target)->id;
  std::map<PolicyKey, PolicyEntry> want = {
      {{ida, 0, 0, kIn}, {}},             // org=empire in a only
      {{a_tgt, 22, kTcp, kIn}, {}},       // {} = every pod of namespace a
      {{idb, 53, kUdp, kIn}, {}},         // explicit namespace b
  };
  EXPECT_EQ(in_a.entries, want);
}

TEST(Resolve, EntitiesAndCidrs) {
  identity::IdentityAllocator ids;
  const uint32_t p1 = ids.allocate(pod("x", "app=one"))->id;
  auto policies = parse(R"(apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: cw}
spec:
  endpointSelector: {}
  egress:
  - toEntities: [cluster]
  - toEntities: [world]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
  - toCIDR: [0.0.0.0/0, 10.0.0.0/8]
    toPorts: [{ports: [{port: "53"}]}]
  ingress:
  - fromEntities: [all]
    toPorts: [{ports: [{port: "8080", endPort: 8081, protocol: TCP}]}]
)");
  auto ep = resolvePolicies(policies, pod("x", "app=one"), ids.refs());
  EXPECT_TRUE(ep.ingress_enforced);
  EXPECT_TRUE(ep.egress_enforced);
  std::map<PolicyKey, PolicyEntry> want;
  for (uint32_t id : {1u, 3u, 4u, 5u, 6u, 7u, p1}) want[{id, 0, 0, kEg}] = {};
  want[{2, 443, kTcp, kEg}] = {};
  for (uint8_t proto : {kTcp, kUdp, uint8_t{132}}) want[{2, 53, proto, kEg}] = {};
  want[{0, 8080, kTcp, kIn}] = {};
  want[{0, 8081, kTcp, kIn}] = {};
  EXPECT_EQ(ep.entries, want);  // 10.0.0.0/8: no CIDR identity known, nothing selected
  EXPECT_FALSE(ep.proto_wildcard);
  EXPECT_EQ(cidrPrefixes(policies), (std::set<std::string>{"10.0.0.0/8"}));
}

// CIDR identities as the agent allocates them (local scope, labels from
// labels::cidrIdentityLabels).
struct CidrIds {
  std::vector<std::pair<uint32_t, LabelSet>> owned;
  uint32_t add(const std::string& prefix) {
    uint32_t id = identity::kLocalScopeFlag | static_cast<uint32_t>(owned.size() + 1);
    owned.emplace_back(id, labels::cidrIdentityLabels(prefix));
    return id;
  }
  std::vector<IdentityRef> refs(const identity::IdentityAllocator& ids) const {
    auto out = ids.refs();
    for (const auto& [id, l] : owned) out.push_back(IdentityRef{id, &l});
    return out;
  }
};

TEST(Resolve, CidrExceptSelectsCidrIdentitiesByLabel) {
  identity::IdentityAllocator ids;
  const uint32_t pod_id = ids.allocate(pod("default", "app=a"))->id;
  auto policies = parse(R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p}
spec:
  endpointSelector: {}
  egress:
  - toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: other, namespace: elsewhere}
spec:
  endpointSelector: {}
  egress:
  - toCIDR: [10.5.0.0/16]
)");
  EXPECT_EQ(cidrPrefixes(policies), (std::set<std::string>{"10.0.0.0/8", "10.1.0.0/16", "10.5.0.0/16"}));
  CidrIds cidr;
  std::map<std::string, uint32_t> id;
  for (const auto& p : cidrPrefixes(policies)) id[p] = cidr.add(p);
  const auto refs = cidr.refs(ids);
  auto ep = resolvePolicies(policies, pod("default", "app=a"), refs);
  EXPECT_TRUE(ep.egress_enforced);
  std::map<PolicyKey, PolicyEntry> want = {{{id["10.0.0.0/8"], 0, 0, kEg}, {}}, {{id["10.5.0.0/16"], 0, 0, kEg}, {}}};
  EXPECT_EQ(ep.entries, want);
  EXPECT_EQ(verdict(ep, id["10.1.0.0/16"], kTcp, 80, kEg).kind, VerdictKind::Dropped);
  EXPECT_EQ(verdict(ep, 2, kTcp, 80, kEg).kind, VerdictKind::Dropped);  // world outside 10/8
  EXPECT_EQ(verdict(ep, pod_id, kTcp, 80, kEg).kind, VerdictKind::Dropped);

  // Entities: world includes CIDR identities, cluster does not; a wildcard
  // endpoint selector never reaches them; 0.0.0.0/0 = world + every CIDR id.
  auto ents = parse(R"(apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: e}
spec:
  endpointSelector: {}
  egress:
  - toEntities: [world]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
  - toEntities: [cluster]
  - toEndpoints: [{}]
    toPorts: [{ports: [{port: "22", protocol: TCP}]}]
  - toCIDRSet: [{cidr: 0.0.0.0/0, except: [10.5.0.0/16]}]
    toPorts: [{ports: [{port: "53", protocol: UDP}]}]
)");
  auto e = resolvePolicies(ents, pod("default", "app=a"), refs);
  for (const auto& [p, i] : id) {
    EXPECT_EQ(verdict(e, i, kTcp, 443, kEg).kind, VerdictKind::Allowed) << p;
    EXPECT_EQ(verdict(e, i, kTcp, 22, kEg).kind, VerdictKind::Dropped) << p;
    EXPECT_EQ(verdict(e, i, kTcp, 80, kEg).kind, VerdictKind::Dropped) << p;
    EXPECT_EQ(verdict(e, i, kUdp, 53, kEg).kind, p == "10.5.0.0/16" ? VerdictKind::Dropped : VerdictKind::Allowed) << p;
  }
  EXPECT_EQ(verdict(e, 2, kUdp, 53, kEg).kind, VerdictKind::Allowed);
  EXPECT_EQ(verdict(e, pod_id, kTcp, 80, kEg).kind, VerdictKind::Allowed);
  EXPECT_EQ(verdict(e, pod_id, kUdp, 53, kEg).kind, VerdictKind::Allowed);
}

TEST(Resolve, ProtocolOnlyRulesAndProtoWildcard) {
  identity::IdentityAllocator ids;
  const uint32_t x = ids.allocate(pod("default", "role=x"))->id;
  const uint32_t y = ids.allocate(pod("default", "role=y"))->id;
  auto policies = parse(R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p}
spec:
  endpointSelector: {}
  ingress:
  - toPorts: [{ports: [{protocol: UDP}]}]
  - fromEndpoints: [{matchLabels: {role: x}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}, {protocol: SCTP}]}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {role: y}}]
    toPorts: [{ports: [{port: "53", protocol: UDP}]}]
)");
  auto ep = resolvePolicies(policies, pod("default", "role=z"), ids.refs());
  EXPECT_TRUE(ep.proto_wildcard);
  std::map<PolicyKey, PolicyEntry> want = {
      {{0, 0, kUdp, kIn}, {}},
      {{x, 0, 132, kIn}, {}},
      {{x, 80, kTcp, kIn}, {}},
      {{y, 53, kUdp, kIn}, {true, 0, 0}},
  };
  EXPECT_EQ(ep.entries, want);
  EXPECT_EQ(verdict(ep, y, kUdp, 53, kIn).kind, VerdictKind::Denied);
  EXPECT_EQ(verdict(ep, y, kUdp, 54, kIn).kind, VerdictKind::Allowed);
  EXPECT_EQ(verdict(ep, 2, kUdp, 9999, kIn).kind, VerdictKind::Allowed);
  EXPECT_EQ(verdict(ep, x, 132, 9999, kIn).kind, VerdictKind::Allowed);
  EXPECT_EQ(verdict(ep, y, 132, 9999, kIn).kind, VerdictKind::Dropped);
  EXPECT_EQ(verdict(ep, x, kTcp, 81, kIn).kind, VerdictKind::Dropped);
  // Without the flag the datapath never probes tiers 3-4.
  EndpointPolicy no_flag = ep;
  no_flag.proto_wildcard = false;
  EXPECT_EQ(verdict(no_flag, 2, kUdp, 9999, kIn).kind, VerdictKind::Dropped);

  // A protocol-only deny beats a port allow for the same peer.
  auto deny = parse(R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: d}
spec:
  endpointSelector: {}
  ingress:
  - toPorts: [{ports: [{port: "53", protocol: ANY}]}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {role: x}}]
    toPorts: [{ports: [{protocol: UDP}]}]
)");
  auto d = resolvePolicies(deny, pod("default", "role=z"), ids.refs());
  EXPECT_TRUE(d.proto_wildcard);
  EXPECT_EQ(verdict(d, x, kUdp, 53, kIn).kind, VerdictKind::Denied);
  EXPECT_EQ(verdict(d, x, kTcp, 53, kIn).kind, VerdictKind::Allowed);
  EXPECT_EQ(verdict(d, y, kUdp, 53, kIn).kind, VerdictKind::Allowed);
  EXPECT_EQ(d.entries.at({x, 53, kUdp, kIn}), (PolicyEntry{true, 0, 0}));
}

TEST(Resolve, NetworkPolicyPortWithoutNumberIsProtocolOnly) {
  identity::IdentityAllocator ids;
  auto policies = parse(R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np}
spec:
  podSelector: {}
  ingress:
  - ports: [{protocol: UDP}, {}]
)");
  auto ep = resolvePolicies(policies, pod("default", "a=b"), ids.refs());
  std::map<PolicyKey, PolicyEntry> want = {{{0, 0, kUdp, kIn}, {}}, {{0, 0, kTcp, kIn}, {}}};
  EXPECT_EQ(ep.entries, want);
  EXPECT_TRUE(ep.proto_wildcard);
}

TEST(Resolve, IcmpTypes) {
  identity::IdentityAllocator ids;
  const uint32_t x = ids.allocate(pod("default", "role=x"))->id;
  auto policies = parse(R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p}
spec:
  endpointSelector: {}
  ingress:
  - fromEndpoints: [{matchLabels: {role: x}}]
    icmps: [{fields: [{type: 8, family: IPv4}, {type: EchoRequest}, {type: TimeExceeded}]}]
  - icmps: [{fields: [{type: "3"}]}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
)");
  auto ep = resolvePolicies(policies, pod("default", "role=z"), ids.refs());
  std::map<PolicyKey, PolicyEntry> want = {
      {{x, 8, 1, kIn}, {}}, {{x, 11, 1, kIn}, {}}, {{0, 3, 1, kIn}, {}}, {{0, 80, kTcp, kIn}, {}}};
  EXPECT_EQ(ep.entries, want);
  EXPECT_FALSE(ep.proto_wildcard);
  EXPECT_EQ(verdict(ep, x, 1, 8, kIn).kind, VerdictKind::Allowed);
  EXPECT_EQ(verdict(ep, x, 1, 0, kIn).kind, VerdictKind::Dropped);
  EXPECT_EQ(verdict(ep, 2, 1, 3, kIn).kind, VerdictKind::Allowed);
  EXPECT_EQ(verdict(ep, 2, 1, 8, kIn).kind, VerdictKind::Dropped);
}

TEST(Resolve, DenyWinsOverMoreSpecificLookups) {
  identity::IdentityAllocator ids;
  const uint32_t x = ids.allocate(pod("default", "role=bad"))->id;
  const uint32_t y = ids.allocate(pod("default", "role=good"))->id;
  auto policies = parse(R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p}
spec:
  endpointSelector: {}
  ingress:
  - toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {role: bad}}]
)");
  auto ep = resolvePolicies(policies, pod("default", "role=good"), ids.refs());
  std::map<PolicyKey, PolicyEntry> want = {
      {{0, 80, kTcp, kIn}, {false, 0, 0}},
      {{x, 0, 0, kIn}, {true, 0, 0}},
      {{x, 80, kTcp, kIn}, {true, 0, 0}},  // else (0,80,TCP) would be hit first
  };
  EXPECT_EQ(ep.entries, want);
  EXPECT_EQ(verdict(ep, x, kTcp, 80, kIn).kind, VerdictKind::Denied);
  EXPECT_EQ(verdict(ep, y, kTcp, 80, kIn).kind, VerdictKind::Allowed);
  EXPECT_EQ(verdict(ep, y, kTcp, 81, kIn).kind, VerdictKind::Dropped);
}

TEST(Resolve, DenyWithoutDefaultDenyAddsAllowAll) {
  identity::IdentityAllocator ids;
  auto policies = parse(R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p}
spec:
  endpointSelector: {}
  enableDefaultDeny: {egress: false}
  egressDeny:
  - toEntities: [world]
)");
  auto ep = resolvePolicies(policies, pod("default", "a=b"), ids.refs());
  EXPECT_FALSE(ep.egress_enforced);
  EXPECT_FALSE(ep.ingress_enforced);
  std::map<PolicyKey, PolicyEntry> want = {{{0, 0, 0, kEg}, {false, 0, 0}}, {{2, 0, 0, kEg}, {true, 0, 0}}};
  EXPECT_EQ(ep.entries, want);
  EXPECT_EQ(verdict(ep, 2, kTcp, 443, kEg).kind, VerdictKind::Denied);
  EXPECT_EQ(verdict(ep, 1, kTcp, 443, kEg).kind, VerdictKind::Allowed);
}

TEST(Resolve, WildcardSelectorNeverReachesReservedIdentities) {
  identity::IdentityAllocator ids;
  auto policies = parse(R"(apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: p}
spec:
  endpointSelector: {}
  ingress:
  - fromEndpoints: [{}]
  - fromEndpoints: [{matchLabels: {"reserved:host": ""}}]
    toPorts: [{ports: [{port: "9090", protocol: TCP}]}]
)");
  const uint32_t p1 = ids.allocate(pod("default", "a=b"))->id;
  auto ep = resolvePolicies(policies, pod("default", "a=b"), ids.refs());
  std::map<PolicyKey, PolicyEntry> want = {{{p1, 0, 0, kIn}, {}}, {{1, 9090, kTcp, kIn}, {}}};
  EXPECT_EQ(ep.entries, want);
}

TEST(Resolve, NetworkPolicyEmptyRuleAllowsAllAndPolicyTypes) {
  identity::IdentityAllocator ids;
  auto policies = parse(R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress:
  - {}
)");
  auto ep = resolvePolicies(policies, pod("default", "a=b"), ids.refs());
  EXPECT_TRUE(ep.ingress_enforced);
  EXPECT_TRUE(ep.egress_enforced);
  std::map<PolicyKey, PolicyEntry> want = {{{0, 0, 0, kIn}, {}}};
  EXPECT_EQ(ep.entries, want);
  EXPECT_EQ(verdict(ep, 2, kUdp, 53, kEg).kind, VerdictKind::Dropped);
}

}  // namespace
}  // namespace membrane::policy

namespace membrane::policy {
namespace {

// Named ports (Kubernetes NetworkPolicyPort.port as a string; Cilium toPorts
// port names): "ingress: the selected pod's container port of that name;
// egress: the port of that name on each destination pod".
class NamedPortsResolve : public ::testing::Test {
 protected:
  void SetUp() override {
    web_id = ids.allocate(web)->id;
    api_id = ids.allocate(api)->id;
    db_id = ids.allocate(db)->id;
  }
  void import(const std::string& yaml) {
    auto r = repo.import(parse(yaml));
    ASSERT_TRUE(r.ok()) << r.error().message;
  }
  identity::IdentityAllocator ids;
  Repository repo;
  LabelSet web = pod("x", "app=web"), api = pod("x", "app=api"), db = pod("x", "app=db");
  uint32_t web_id = 0, api_id = 0, db_id = 0;
};

TEST_F(NamedPortsResolve, IngressUsesTheSubjectsOwnPort) {
  import(R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: x}
spec:
  podSelector: {}
  ingress:
  - from: [{podSelector: {matchLabels: {app: api}}}]
    ports: [{port: http}]
)");
  const uint32_t cookie = repo.policies()[0].cookie;
  NamedPorts web_ports{{{"http", 8080, kTcp}, {"metrics", 9090, kTcp}}, {}};
  auto ep = repo.resolve(web, ids.refs(), web_ports);
  EXPECT_TRUE(ep.ingress_enforced);
  EXPECT_EQ(ep.entries, (std::map<PolicyKey, PolicyEntry>{{{api_id, 8080, kTcp, kIn}, {false, 0, cookie}}}));
  // A pod without a port named http is selected (default deny) but opens nothing.
  auto other = repo.resolve(db, ids.refs(), NamedPorts{{{"https", 443, kTcp}}, {}});
  EXPECT_TRUE(other.ingress_enforced);
  EXPECT_TRUE(other.entries.empty());
  // NetworkPolicy ports default to TCP: a UDP port of that name does not match.
  auto udp = repo.resolve(db, ids.refs(), NamedPorts{{{"http", 80, kUdp}}, {}});
  EXPECT_TRUE(udp.entries.empty());
}

TEST_F(NamedPortsResolve, EgressUsesEachPeersPortAndPeersWithoutItContributeNothing) {
  import(R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: cnp, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEndpoints: [{matchLabels: {app: api}}, {matchLabels: {app: db}}]
    toPorts: [{ports: [{port: svc}]}]
)");
  const uint32_t cookie = repo.policies()[0].cookie;
  NamedPorts named;
  // Two api pods (one identity) declare svc differently: both count. db has no svc.
  named.by_identity[api_id] = {{"svc", 8000, kTcp}, {"svc", 8001, kTcp}};
  named.by_identity[db_id] = {{"pg", 5432, kTcp}};
  named.by_identity[web_id] = {{"svc", 7000, kUdp}};  // not selected as a peer
  auto ep = repo.resolve(web, ids.refs(), named);
  EXPECT_TRUE(ep.egress_enforced);
  EXPECT_EQ(ep.entries, (std::map<PolicyKey, PolicyEntry>{{{api_id, 8000, kTcp, kEg}, {false, 0, cookie}},
                                                          {{api_id, 8001, kTcp, kEg}, {false, 0, cookie}}}));
  EXPECT_EQ(verdict(ep, api_id, kTcp, 8000, kEg).kind, VerdictKind::Allowed);
  EXPECT_EQ(verdict(ep, db_id, kTcp, 5432, kEg).kind, VerdictKind::Dropped);
  EXPECT_EQ(verdict(ep, api_id, kTcp, 7000, kEg).kind, VerdictKind::Dropped);
}

TEST_F(NamedPortsResolve, NamedDenyAndAnyPeer) {
  import(R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: cnp, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEntities: [all]
  egressDeny:
  - toPorts: [{ports: [{port: admin, protocol: TCP}]}]
)");
  NamedPorts named;
  named.by_identity[api_id] = {{"admin", 9000, kTcp}};
  named.by_identity[db_id] = {{"admin", 9001, kUdp}};  // protocol TCP required: no match
  auto ep = repo.resolve(web, ids.refs(), named);
  EXPECT_EQ(verdict(ep, api_id, kTcp, 9000, kEg).kind, VerdictKind::Denied);
  EXPECT_EQ(verdict(ep, api_id, kTcp, 9001, kEg).kind, VerdictKind::Allowed);
  EXPECT_EQ(verdict(ep, db_id, kUdp, 9001, kEg).kind, VerdictKind::Allowed);
  EXPECT_EQ(verdict(ep, db_id, kTcp, 9000, kEg).kind, VerdictKind::Allowed);
}

TEST(PortName, IanaSvcNameRules) {
  EXPECT_TRUE(validatePortName("http").ok());
  EXPECT_TRUE(validatePortName("h2c-8080").ok());
  EXPECT_TRUE(validatePortName("a23456789012345").ok());
  EXPECT_FALSE(validatePortName("a234567890123456").ok());
  EXPECT_FALSE(validatePortName("8080").ok());
  EXPECT_FALSE(validatePortName("-http").ok());
  EXPECT_FALSE(validatePortName("http-").ok());
  EXPECT_FALSE(validatePortName("ht--tp").ok());
  EXPECT_FALSE(validatePortName("HTTP").ok());
  EXPECT_FALSE(validatePortName("").ok());
  EXPECT_EQ(validatePortName("ht--tp").error().message,
            "port name 'ht--tp' is invalid: it contains '--' (IANA_SVC_NAME: 1-15 characters a-z, 0-9, '-', at least "
            "one letter, no '-' at either end, no '--')");
}

}  // namespace
}  // namespace membrane::policy
