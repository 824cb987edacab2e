#include "membrane/policy_trace.h"

#include <gtest/gtest.h>

#include "membrane/identity.h"
#include "membrane/policy_repository.h"
#include "src/policy/test_util.h"

namespace membrane::policy {
namespace {

using labels::LabelSet;
using testing::allDiagnostics;
using testing::readSourceFile;

LabelSet pod(std::string_view ns, std::string_view user) {
  return labels::endpointLabels(ns, labels::parseLabels(user).value());
}

class StarWarsTrace : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(ids.allocate(tiefighter).ok());
    ASSERT_TRUE(ids.allocate(xwing).ok());
    ASSERT_TRUE(ids.allocate(deathstar).ok());
  }
  void import(const std::string& file) {
    auto p = parsePolicies(readSourceFile("examples/starwars/" + file), file);
    ASSERT_TRUE(p.ok()) << allDiagnostics(p);
    ASSERT_TRUE(repo.import(p.policies).ok());
  }
  TraceResult run(const LabelSet& src, const LabelSet& dst, std::optional<PortProto> port) {
    return trace(repo.policies(), src, dst, ids.refs(), port);
  }

  identity::IdentityAllocator ids;
  Repository repo;
  LabelSet tiefighter = pod("default", "org=empire,class=tiefighter");
  LabelSet xwing = pod("default", "org=alliance,class=xwing");
  LabelSet deathstar = pod("default", "org=empire,class=deathstar");
  const PortProto http{80, Protocol::TCP};
};

TEST_F(StarWarsTrace, XwingDeniedByDefaultDeny) {
  import("sw_l3_l4_policy.yaml");
  auto r = run(xwing, deathstar, http);
  EXPECT_FALSE(r.allowed());
  EXPECT_EQ(r.egress.verdict, TraceVerdict::NotEnforced);
  EXPECT_TRUE(r.egress.rules.empty());
  EXPECT_EQ(r.ingress.verdict, TraceVerdict::DefaultDenied);
  EXPECT_TRUE(r.ingress.enforced);
  ASSERT_EQ(r.ingress.rules.size(), 1u);
  EXPECT_EQ(r.ingress.rules[0].policy, "default/rule1");
  ASSERT_EQ(r.ingress.rules[0].peer_rules.size(), 1u);
  EXPECT_FALSE(r.ingress.rules[0].peer_rules[0].peer_match);
  EXPECT_TRUE(r.ingress.rules[0].peer_rules[0].port_match);
  EXPECT_EQ(r.ingress.decided_by, "");

  const std::string text = formatTrace(r);
  const std::string xw = "[k8s:class=xwing k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=default "
                         "k8s:io.cilium.k8s.policy.cluster=default k8s:io.cilium.k8s.policy.serviceaccount=default "
                         "k8s:io.kubernetes.pod.namespace=default "
                         "k8s:org=alliance]";
  const std::string want_ingress =
      "Resolving ingress policy for [k8s:class=deathstar "
      "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=default k8s:io.cilium.k8s.policy.cluster=default "
      "k8s:io.cilium.k8s.policy.serviceaccount=default "
      "k8s:io.kubernetes.pod.namespace=default k8s:org=empire]\n"
      "* Rule {\"matchLabels\":{\"any:class\":\"deathstar\",\"any:org\":\"empire\","
      "\"k8s:io.kubernetes.pod.namespace\":\"default\"}} (CiliumNetworkPolicy default/rule1): selected\n"
      "    Allows from labels {\"matchLabels\":{\"any:org\":\"empire\",\"k8s:io.kubernetes.pod.namespace\":\"default\"}}"
      " on ports [80/TCP]  [ingress[0]]\n"
      "      No label match for " + xw + "\n"
      "1/1 rules selected\n"
      "Found no allow rule\n"
      "Ingress verdict: denied (default deny)\n";
  EXPECT_NE(text.find(want_ingress), std::string::npos) << text;
  EXPECT_NE(text.find("Tracing From: [k8s:class=xwing, "), std::string::npos) << text;
  EXPECT_NE(text.find("] Ports: [80/TCP]\n"), std::string::npos) << text;
  EXPECT_NE(text.find("Egress verdict: allowed (not enforced)\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\nFinal verdict: DENIED\n"), std::string::npos) << text;

  auto j = toJson(r);
  EXPECT_EQ(j["text"], text);
  EXPECT_EQ(j["verdict"], "denied");
  EXPECT_EQ(j["dport"], "80/TCP");
  EXPECT_EQ(j["ingress"]["verdict"], "default-denied");
  EXPECT_EQ(j["ingress"]["rules"][0]["policy"], "default/rule1");
  EXPECT_EQ(j["ingress"]["rules"][0]["peer_rules"][0]["peer_match"], false);
  EXPECT_EQ(j["egress"]["verdict"], "not-enforced");
  EXPECT_EQ(j["ingress"]["peer_identity"], ids.lookup(xwing)->id);
}

TEST_F(StarWarsTrace, TiefighterAllowedByRule1) {
  import("sw_l3_l4_policy.yaml");
  auto r = run(tiefighter, deathstar, http);
  EXPECT_TRUE(r.allowed());
  EXPECT_EQ(r.ingress.verdict, TraceVerdict::Allowed);
  EXPECT_EQ(r.ingress.decided_by, "default/rule1");
  EXPECT_EQ(r.ingress.decided_rule, "ingress[0]");
  const std::string text = formatTrace(r);
  EXPECT_NE(text.find("      Found all required labels\n1/1 rules selected\nFound allow rule: default/rule1 ingress[0]\n"
                      "Ingress verdict: allowed (by default/rule1)\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("\nFinal verdict: ALLOWED\n"), std::string::npos) << text;

  // Another port: the label matches, the port does not -> default deny.
  auto other = run(tiefighter, deathstar, PortProto{443, Protocol::TCP});
  EXPECT_EQ(other.ingress.verdict, TraceVerdict::DefaultDenied);
  EXPECT_NE(formatTrace(other).find("      Found all required labels\n      Port does not match\n"), std::string::npos);
  // L3 only: rule1 allows the tiefighter (on 80/TCP).
  auto l3 = run(tiefighter, deathstar, std::nullopt);
  EXPECT_EQ(l3.ingress.verdict, TraceVerdict::Allowed);
  EXPECT_NE(formatTrace(l3).find("Ports: [0/ANY]"), std::string::npos);
  EXPECT_EQ(toJson(l3).contains("dport"), false);
}

TEST_F(StarWarsTrace, DenyAcrossPoliciesNamesThePolicy) {
  import("sw_l3_l4_policy.yaml");
  auto deny = parsePolicies(R"(apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: no-tiefighters}
spec:
  endpointSelector: {matchLabels: {class: deathstar}}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {class: tiefighter}}]
)", "d.yaml");
  ASSERT_TRUE(deny.ok()) << allDiagnostics(deny);
  ASSERT_TRUE(repo.import(deny.policies).ok());
  auto r = run(tiefighter, deathstar, http);
  EXPECT_EQ(r.ingress.verdict, TraceVerdict::Denied);
  EXPECT_EQ(r.ingress.decided_by, "no-tiefighters");
  EXPECT_EQ(r.ingress.decided_rule, "ingressDeny[0]");
  EXPECT_EQ(r.ingress.rules.size(), 2u);
  EXPECT_NE(formatTrace(r).find("Ingress verdict: denied (deny rule of no-tiefighters)\n"), std::string::npos);
  // Same verdict without a port: the deny covers every port.
  EXPECT_EQ(run(tiefighter, deathstar, std::nullopt).ingress.verdict, TraceVerdict::Denied);
}

TEST_F(StarWarsTrace, EgressToWorldCidr) {
  auto p = parsePolicies(R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: out}
spec:
  endpointSelector: {matchLabels: {class: xwing}}
  egress:
  - toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]
    toPorts: [{ports: [{protocol: UDP}]}]
)", "o.yaml");
  ASSERT_TRUE(p.ok()) << allDiagnostics(p);
  ASSERT_TRUE(repo.import(p.policies).ok());
  // Labels of a CIDR identity unknown to the allocator: traced with a temporary one.
  auto r = run(xwing, labels::cidrIdentityLabels("10.0.0.0/8"), PortProto{53, Protocol::UDP});
  EXPECT_EQ(r.egress.verdict, TraceVerdict::Allowed);
  EXPECT_EQ(r.egress.decided_by, "default/out");
  EXPECT_TRUE(identity::isLocalScope(r.egress.peer_identity));
  EXPECT_EQ(run(xwing, labels::cidrIdentityLabels("10.1.0.0/16"), PortProto{53, Protocol::UDP}).egress.verdict,
            TraceVerdict::DefaultDenied);
  EXPECT_EQ(run(xwing, labels::cidrIdentityLabels("10.0.0.0/8"), PortProto{53, Protocol::TCP}).egress.verdict,
            TraceVerdict::DefaultDenied);
  EXPECT_EQ(run(xwing, labels::reservedLabels(labels::Reserved::World), PortProto{53, Protocol::UDP}).egress.verdict,
            TraceVerdict::DefaultDenied);
}

TEST(PortProto, Parse) {
  EXPECT_EQ(parsePortProto("80/TCP").value(), (PortProto{80, Protocol::TCP}));
  EXPECT_EQ(parsePortProto("53/udp").value(), (PortProto{53, Protocol::UDP}));
  EXPECT_EQ(parsePortProto("8080").value(), (PortProto{8080, Protocol::TCP}));
  EXPECT_EQ(parsePortProto("8/ICMP").value(), (PortProto{8, Protocol::ICMP}));
  EXPECT_EQ(formatPortProto(PortProto{80, Protocol::TCP}), "80/TCP");
  EXPECT_EQ(parsePortProto("70000/TCP").error().message,
            "port '70000/TCP': out of range (0-65535) (expected PORT[/PROTOCOL], e.g. 80/TCP)");
  EXPECT_EQ(parsePortProto("http").error().message,
            "port 'http': not a number (expected PORT[/PROTOCOL], e.g. 80/TCP)");
  EXPECT_EQ(parsePortProto("80/ANY").error().message,
            "port '80/ANY': protocol 'ANY' must be TCP, UDP, SCTP or ICMP (expected PORT[/PROTOCOL], e.g. 80/TCP)");
}

}  // namespace
}  // namespace membrane::policy

namespace membrane::policy {
namespace {

TEST(NamedPortTrace, ResolvesAgainstTheDestinationsPorts) {
  identity::IdentityAllocator ids;
  LabelSet web = labels::endpointLabels("x", labels::parseLabels("app=web").value());
  LabelSet api = labels::endpointLabels("x", labels::parseLabels("app=api").value());
  ASSERT_TRUE(ids.allocate(web).ok());
  ASSERT_TRUE(ids.allocate(api).ok());
  Repository repo;
  auto p = parsePolicies(R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: x}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress, Egress]
  ingress:
  - ports: [{port: http}]
  egress:
  - ports: [{port: http}]
)",
                         "np.yaml");
  ASSERT_TRUE(p.ok()) << testing::allDiagnostics(p);
  ASSERT_TRUE(repo.import(p.policies).ok());
  const std::vector<NamedPort> http8080{{"http", 8080, 6}};
  // api -> web:8080, web declares http=8080: its ingress allows.
  auto in = trace(repo.policies(), api, web, ids.refs(), PortProto{8080, Protocol::TCP}, http8080);
  EXPECT_EQ(in.ingress.verdict, TraceVerdict::Allowed);
  auto other = trace(repo.policies(), api, web, ids.refs(), PortProto{80, Protocol::TCP}, http8080);
  EXPECT_EQ(other.ingress.verdict, TraceVerdict::DefaultDenied);
  // web -> api:8080: web's egress resolves http on api (the destination).
  auto eg = trace(repo.policies(), web, api, ids.refs(), PortProto{8080, Protocol::TCP}, http8080);
  EXPECT_EQ(eg.egress.verdict, TraceVerdict::Allowed);
  auto none = trace(repo.policies(), web, api, ids.refs(), PortProto{8080, Protocol::TCP}, {});
  EXPECT_EQ(none.egress.verdict, TraceVerdict::DefaultDenied);
}

}  // namespace
}  // namespace membrane::policy
