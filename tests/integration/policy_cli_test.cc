// Policy realization and the policy-related CLI end to end: membraned, the
// membrane CLI, real pods (netns + veth), exact outputs and exact metric deltas.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <regex>
#include <string>

#include "tests/integration/agent_fixture.h"

namespace membrane::testing {
namespace {

std::string webPolicy(const std::string& ns, const std::string& ports) {
  return fmt::format(R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: web-from-db
  namespace: {}
spec:
  endpointSelector:
    matchLabels:
      app: web
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: db
    toPorts:
    - ports: [{}]
)",
                     ns, ports);
}

class PolicyRealization : public AgentFixture {
 protected:
  void SetUp() override {
    AgentFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    startAgent();
  }
  double policyOps(const std::string& op) {
    return metric("cilium_bpf_map_ops_total", {{"map_name", "mb_policy_v1"}, {"operation", op}, {"outcome", "success"}});
  }
  double endpointOps(const std::string& op) {
    return metric("cilium_bpf_map_ops_total", {{"map_name", "mb_lxc_v1"}, {"operation", op}, {"outcome", "success"}});
  }
};

// Issue 3 "no full-map rewrites for small changes": a one-port change to a
// policy selecting N endpoints writes exactly one entry per selected endpoint
// and touches nothing else (no scan, no rewrite of unchanged entries, no
// endpoint map write, other endpoints untouched).
TEST_F(PolicyRealization, OneRuleChangeWritesOnlyTheNewEntries) {
  constexpr int kWeb = 3;
  for (int i = 0; i < kWeb; ++i) createPod(fmt::format("web-{}", i), "app=web");
  createPod("db", "app=db");
  ASSERT_EQ(importPolicy(webPolicy(ns_, "{port: \"80\", protocol: TCP}")).exit_code, 0);

  const double upd = policyOps("update"), del = policyOps("delete"), look = policyOps("lookup"),
               next = policyOps("getNextKey"), ep_upd = endpointOps("update");
  auto r = importPolicy(webPolicy(ns_, "{port: \"80\", protocol: TCP}, {port: \"8080\", protocol: TCP}"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(policyOps("update") - upd, kWeb);  // {db, 8080/TCP, ingress} on each web pod
  EXPECT_EQ(policyOps("delete") - del, 0);
  EXPECT_EQ(policyOps("lookup") - look, 0);
  EXPECT_EQ(policyOps("getNextKey") - next, 0);
  EXPECT_EQ(endpointOps("update") - ep_upd, 0);  // enforcement flags unchanged

  // Back to port 80 only: exactly one delete per web pod.
  const double upd2 = policyOps("update"), del2 = policyOps("delete");
  ASSERT_EQ(importPolicy(webPolicy(ns_, "{port: \"80\", protocol: TCP}")).exit_code, 0);
  EXPECT_EQ(policyOps("update") - upd2, 0);
  EXPECT_EQ(policyOps("delete") - del2, kWeb);

  // The entries really are in the kernel map.
  auto g = cli({"bpf", "policy", "get", "web-1", "-n", ns_, "-o", "json"});
  ASSERT_EQ(g.exit_code, 0) << g.err;
  auto j = nlohmann::json::parse(g.out);
  ASSERT_EQ(j.size(), 1u) << g.out;
  EXPECT_EQ(j[0]["port"], 80);
  EXPECT_EQ(j[0]["policy"], ns_ + "/web-from-db");
}

}  // namespace
}  // namespace membrane::testing
