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

class PolicyCli : public PolicyRealization {
 protected:
  // "Revision: N\n" -> N
  static int revisionOf(const std::string& out) {
    std::smatch m;
    if (!std::regex_search(out, m, std::regex("Revision: (\\d+)"))) return -1;
    return std::stoi(m[1]);
  }
  std::string labelledPolicy(const std::string& name, const std::string& labels) {
    return fmt::format(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: {}\n  namespace: {}\n"
        "  labels: {{{}}}\nspec:\n  endpointSelector: {{matchLabels: {{app: web}}}}\n  ingress: [{{}}]\n",
        name, ns_, labels);
  }
};

TEST_F(PolicyCli, PolicyWaitReturnsOnceEnforcedAndTimesOutOnAFutureRevision) {
  createPod("web", "app=web");
  auto imp = importPolicy(webPolicy(ns_, "{port: \"80\", protocol: TCP}"));
  ASSERT_EQ(imp.exit_code, 0) << imp.err;
  const int rev = revisionOf(imp.out);
  ASSERT_EQ(rev, 2) << imp.out;
  auto w = cli({"policy", "wait", "2"});
  EXPECT_EQ(w.exit_code, 0) << w.err;
  EXPECT_EQ(w.out, "Policy revision 2 is enforced by every endpoint (current revision 2)\n");
  auto older = cli({"policy", "wait", "1", "--timeout", "5s"});
  EXPECT_EQ(older.exit_code, 0) << older.err;

  auto start = std::chrono::steady_clock::now();
  auto late = cli({"policy", "wait", "7", "--timeout", "1s"});
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(late.exit_code, 1);
  EXPECT_EQ(late.out, "");
  EXPECT_EQ(late.err, "revision 7 not reached within 1 s (current revision 2)\n");
  EXPECT_LT(took, std::chrono::seconds(5));

  auto bad = cli({"policy", "wait", "two"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_EQ(bad.err, "policy wait: revision 'two' is not a number (see 'membrane policy get')\n");
  bad = cli({"policy", "wait", "2", "--timeout", "soon"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_EQ(bad.err, "policy wait: --timeout 'soon' is not a duration up to 1h (e.g. 30s, 2m)\n");
}

TEST_F(PolicyCli, EndpointConfigShowsAndSetsPolicyAuditMode) {
  auto web = createPod("web", "app=web");
  auto show = cli({"endpoint", "config", "web", "-n", ns_});
  EXPECT_EQ(show.exit_code, 0) << show.err;
  EXPECT_EQ(show.out, "PolicyAuditMode          Default\n");

  auto set = cli({"endpoint", "config", "web", "-n", ns_, "PolicyAuditMode=Enabled"});
  EXPECT_EQ(set.exit_code, 0) << set.err;
  EXPECT_EQ(set.out, fmt::format("Endpoint {} configuration updated successfully\n", web.id));
  show = cli({"endpoint", "config", std::to_string(web.id)});
  EXPECT_EQ(show.out, "PolicyAuditMode          Enabled\n");
  // Audit only shows once a direction is enforced.
  ASSERT_EQ(importPolicy(webPolicy(ns_, "{port: \"80\", protocol: TCP}")).exit_code, 0);
  auto ep = nlohmann::json::parse(cli({"endpoint", "get", "web", "-n", ns_}).out);
  EXPECT_EQ(ep["policy"]["ingress"]["audit"], true) << ep.dump();
  EXPECT_EQ(metric("cilium_policy_endpoint_enforcement_status", {{"enforcement", "audit-ingress"}}), 1);

  auto bad = cli({"endpoint", "config", "web", "-n", ns_, "PolicyAuditMode=Maybe"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_EQ(bad.err, "PolicyAuditMode must be Enabled, Disabled or Default\n");
  bad = cli({"endpoint", "config", "web", "-n", ns_, "Debug=Enabled"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_EQ(bad.err, "unknown endpoint option 'Debug' (supported: PolicyAuditMode)\n");
  bad = cli({"endpoint", "config", "web", "-n", ns_, "PolicyAuditMode"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_EQ(bad.err, "endpoint config: 'PolicyAuditMode' is not Option=Value (e.g. PolicyAuditMode=Enabled)\n");
  show = cli({"endpoint", "config", "web", "-n", ns_});
  EXPECT_EQ(show.out, "PolicyAuditMode          Enabled\n");  // unchanged by the rejected calls

  ASSERT_EQ(cli({"endpoint", "config", "web", "-n", ns_, "PolicyAuditMode=Disabled"}).exit_code, 0);
  EXPECT_EQ(cli({"endpoint", "config", "web", "-n", ns_}).out, "PolicyAuditMode          Disabled\n");
  EXPECT_EQ(metric("cilium_policy_endpoint_enforcement_status", {{"enforcement", "ingress"}}), 1);
}

TEST_F(PolicyCli, NamespaceLabelAndList) {
  auto web = createPod("web", "app=web");
  const std::string header = fmt::format("{:<24} {:<10} {}\n", "NAME", "ENDPOINTS", "LABELS");
  auto list = cli({"namespace", "list"});
  EXPECT_EQ(list.exit_code, 0) << list.err;
  // Kubernetes' name label is derived for every namespace and policies select
  // on it, so the listing shows it (it used to print <none>).
  const std::string name_label = "kubernetes.io/metadata.name=" + ns_;
  EXPECT_EQ(list.out, header + fmt::format("{:<24} {:<10} {}\n", ns_, 1, name_label));

  auto l = cli({"namespace", "label", ns_, "team=red", "env=dev"});
  EXPECT_EQ(l.exit_code, 0) << l.err;
  EXPECT_EQ(l.out, "namespace/" + ns_ + " labeled\n");
  EXPECT_EQ(cli({"namespace", "list"}).out,
            header + fmt::format("{:<24} {:<10} env=dev,{},team=red\n", ns_, 1, name_label));
  // The pod moved to an identity that carries the namespace labels.
  auto ep = nlohmann::json::parse(cli({"endpoint", "get", "web", "-n", ns_}).out);
  EXPECT_NE(ep["identity"].get<uint32_t>(), web.identity);
  EXPECT_NE(ep.dump().find("k8s:io.cilium.k8s.namespace.labels.team=red"), std::string::npos) << ep.dump();

  auto clash = cli({"namespace", "label", ns_, "team=blue"});
  EXPECT_EQ(clash.exit_code, 1);
  EXPECT_EQ(clash.err, "namespace label: 'team' already has a value (red), and --overwrite is false; nothing changed\n");
  auto same = cli({"namespace", "label", ns_, "team=red"});
  EXPECT_EQ(same.out, "namespace/" + ns_ + " not labeled\n");
  ASSERT_EQ(cli({"namespace", "label", ns_, "team=blue", "--overwrite"}).exit_code, 0);
  ASSERT_EQ(cli({"namespace", "label", ns_, "env-"}).exit_code, 0);
  EXPECT_EQ(cli({"namespace", "list"}).out, header + fmt::format("{:<24} {:<10} {},team=blue\n", ns_, 1, name_label));
  auto bad = cli({"namespace", "label", ns_, "=x"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_EQ(bad.err, "namespace label: '=x' is neither k=v nor k- (remove)\n");

  // Issue 10: the name label is derived from the name. It used to be stored
  // and listed as `evil`. Refused by the CLI, by the API, and dropped from a
  // state file that holds one.
  const std::string listed = header + fmt::format("{:<24} {:<10} {},team=blue\n", ns_, 1, name_label);
  auto evil = cli({"namespace", "label", ns_, "kubernetes.io/metadata.name=evil", "--overwrite"});
  EXPECT_EQ(evil.exit_code, 1);
  EXPECT_EQ(evil.err, fmt::format("namespace label: kubernetes.io/metadata.name is derived from the namespace's name "
                                  "and is always '{}'; it cannot be set or removed; nothing changed\n",
                                  ns_));
  EXPECT_EQ(cli({"namespace", "label", ns_, "kubernetes.io/metadata.name-"}).exit_code, 1);
  auto api = run({"curl", "-sS", "--unix-socket", socket_, "-X", "PUT", "-w", "\n%{http_code}", "--data",
                  R"({"labels": {"team": "blue", "kubernetes.io/metadata.name": "evil"}})",
                  "http://localhost/v1/namespace/" + ns_});
  ASSERT_EQ(api.exit_code, 0) << api.err;
  const std::string derived_why = fmt::format(
      "label namespace {0}: label 'kubernetes.io/metadata.name=evil': kubernetes.io/metadata.name is derived from "
      "the namespace's name and is always '{0}'; it cannot be set or removed",
      ns_);
  EXPECT_EQ(api.out.substr(api.out.rfind('\n') + 1), "400") << api.out;
  EXPECT_NE(api.out.find(derived_why), std::string::npos) << api.out;
  EXPECT_EQ(cli({"namespace", "list"}).out, listed);

  // A state file written by an older agent that accepted it: dropped on load.
  ASSERT_EQ(stopAgent(), 0);
  const std::string ns_file = state_dir_ + "/namespaces.json";
  auto stored = nlohmann::json::parse(readFileOrEmpty(ns_file), nullptr, false);
  ASSERT_TRUE(stored.is_object()) << readFileOrEmpty(ns_file);
  stored[ns_]["kubernetes.io/metadata.name"] = "evil";
  ASSERT_EQ(run({"sh", "-c", "cat > " + ns_file}, std::chrono::seconds(5), stored.dump()).exit_code, 0);
  startAgent();
  EXPECT_EQ(cli({"namespace", "list"}).out, listed);
  auto after = nlohmann::json::parse(cli({"endpoint", "get", "web", "-n", ns_}).out, nullptr, false);
  EXPECT_NE(after.dump().find("k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=" + ns_),
            std::string::npos)
      << after.dump();
}

TEST_F(PolicyCli, PolicyDeleteByNameLabelsAndAll) {
  ASSERT_EQ(importPolicy(labelledPolicy("a", "team: red, env: prod") + "---\n" +
                         labelledPolicy("b", "team: red, env: dev") + "---\n" + labelledPolicy("c", "team: blue"))
                .exit_code,
            0);
  auto d = cli({"policy", "delete", "--labels", "team=red,env=dev"});
  EXPECT_EQ(d.exit_code, 0) << d.err;
  EXPECT_EQ(d.out, fmt::format("Deleted {}/b\nRevision: 3\n", ns_));
  auto none = cli({"policy", "delete", "--labels", "team=green"});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_EQ(none.err, "no policy has the labels k8s:team=green (see 'membrane policy get')\n");
  d = cli({"policy", "delete", "a", "-n", ns_});
  EXPECT_EQ(d.out, fmt::format("Deleted {}/a\nRevision: 4\n", ns_));
  auto both = cli({"policy", "delete", "c", "--all"});
  EXPECT_EQ(both.exit_code, 1);
  EXPECT_EQ(both.err, "policy delete: give exactly one of a policy NAME, --labels k=v[,k=v...] or --all\n");
  d = cli({"policy", "delete", "--all"});
  EXPECT_EQ(d.out, fmt::format("Deleted {}/c\nRevision: 5\n", ns_));
  EXPECT_EQ(metric("cilium_policy"), 0);
}

TEST_F(PolicyCli, HelpOfEveryNewCommand) {
  for (std::vector<std::string> cmd : {std::vector<std::string>{"policy", "wait", "--help"},
                                       {"policy", "delete", "--help"},
                                       {"endpoint", "config", "--help"},
                                       {"namespace", "label", "--help"},
                                       {"namespace", "list", "--help"}}) {
    auto h = cli(cmd);
    EXPECT_EQ(h.exit_code, 0) << cmd[1];
    EXPECT_NE(h.out.find("Example"), std::string::npos) << h.out;
  }
}

TEST_F(PolicyCli, EndpointNamedPortsAreValidatedAndRealized) {
  auto bad = cli({"endpoint", "create", "web", "-n", ns_, "--labels", "app=web", "--port", "http=99999/TCP"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_EQ(bad.err, fmt::format("create endpoint {}/web: named_ports[0].port: 99999 is out of range (1-65535)\n", ns_));
  bad = cli({"endpoint", "create", "web", "-n", ns_, "--labels", "app=web", "--port", "http=80", "--port", "http=81"});
  EXPECT_EQ(bad.err, fmt::format("create endpoint {}/web: named_ports[1].name: 'http' is given twice (port names are "
                                 "unique per pod)\n",
                                 ns_));
  bad = cli({"endpoint", "create", "web", "-n", ns_, "--port", "http:80"});
  EXPECT_EQ(bad.err, "--port 'http:80': expected NAME=PORT[/PROTOCOL], e.g. http=80/TCP\n");
  EXPECT_EQ(nlohmann::json::parse(cli({"endpoint", "list", "-o", "json"}).out).size(), 0u);  // nothing created

  auto ok = cli({"endpoint", "create", "web", "-n", ns_, "--labels", "app=web", "--port", "http=8080",
                 "--port", "dns=53/UDP", "-o", "json"});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(nlohmann::json::parse(ok.out)["named_ports"].dump(),
            R"([{"name":"http","port":8080,"protocol":"TCP"},{"name":"dns","port":53,"protocol":"UDP"}])");
  createPod("db", "app=db");
  // "port: http" on web resolves to web's 8080.
  auto imp = importPolicy(webPolicy(ns_, "{port: http}"));
  ASSERT_EQ(imp.exit_code, 0) << imp.err;
  auto g = nlohmann::json::parse(cli({"bpf", "policy", "get", "web", "-n", ns_, "-o", "json"}).out);
  ASSERT_EQ(g.size(), 1u) << g.dump();
  EXPECT_EQ(g[0]["port"], 8080);
  EXPECT_EQ(g[0]["proto"], "TCP");
}

}  // namespace
}  // namespace membrane::testing
