#include "src/workload/manifest.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace membrane::workload {
namespace {

std::string readSource(const std::string& rel) {
  std::ifstream in(std::string(MEMBRANE_SOURCE_DIR) + "/" + rel);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string firstError(const ManifestResult& r) {
  return r.diagnostics.empty() ? "" : policy::formatDiagnostic(r.diagnostics[0]);
}

TEST(Manifest, StarWarsApp) {
  auto r = parseManifests(readSource("examples/starwars/http-sw-app.yaml"), "http-sw-app.yaml");
  ASSERT_TRUE(r.ok()) << firstError(r);
  const auto& m = r.manifests;
  ASSERT_EQ(m.services.size(), 1u);
  EXPECT_EQ(m.services[0].meta.name, "deathstar");
  EXPECT_EQ(m.services[0].meta.ns, "default");
  EXPECT_EQ(m.services[0].ports.at(0).port, 80);
  EXPECT_EQ(m.services[0].selector, (Labels{{"org", "empire"}, {"class", "deathstar"}}));
  ASSERT_EQ(m.deployments.size(), 1u);
  EXPECT_EQ(m.deployments[0].replicas, 2);
  EXPECT_EQ(m.deployments[0].spec.containers.at(0).image, "docker.io/cilium/starwars");
  EXPECT_EQ(m.deployments[0].template_labels.at("class"), "deathstar");
  ASSERT_EQ(m.pods.size(), 2u);
  EXPECT_EQ(m.pods[0].meta.name, "tiefighter");
  EXPECT_EQ(m.pods[1].meta.name, "xwing");
  EXPECT_EQ(m.pods[1].spec.restart_policy, "Always");
  EXPECT_TRUE(m.policies.empty());
}

// Cilium's service-account policies select the pod's account
// (spec.serviceAccountName, or the deprecated spec.serviceAccount; Kubernetes
// defaults it to "default"): parsed, validated with a location, persisted.
TEST(Manifest, ServiceAccountName) {
  auto parse = [](const std::string& spec_lines) {
    return parseManifests("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n" + spec_lines +
                              "  containers:\n  - name: c\n    image: tgraf/netperf\n",
                          "p.yaml");
  };
  const std::pair<std::string, std::string> accepted[] = {
      {"", "default"},
      {"  serviceAccountName: r2.d2-unit\n", "r2.d2-unit"},
      {"  serviceAccount: old\n", "old"},
      // Both: serviceAccountName wins, whatever the order (as in Kubernetes).
      {"  serviceAccountName: new\n  serviceAccount: old\n", "new"},
  };
  for (const auto& [lines, want] : accepted) {
    auto r = parse(lines);
    ASSERT_TRUE(r.ok()) << lines << firstError(r);
    EXPECT_EQ(r.manifests.pods.at(0).spec.service_account, want) << lines;
  }
  const std::string invalid = "is not a valid service account name (lowercase letters, digits, '-' and '.', "
                              "starting and ending with a letter or digit, at most 63 characters)";
  const std::string too_long(64, 'a');
  const std::pair<std::string, std::string> refused[] = {
      {"  serviceAccountName: Vader\n", "p.yaml:6:23: spec.serviceAccountName: 'Vader' " + invalid},
      {"  serviceAccountName: [a]\n", "p.yaml:6:23: spec.serviceAccountName: expected a string, got a list"},
      {"  serviceAccountName: " + too_long + "\n",
       "p.yaml:6:23: spec.serviceAccountName: '" + too_long + "' " + invalid},
  };
  for (const auto& [lines, want] : refused) {
    auto r = parse(lines);
    EXPECT_FALSE(r.ok()) << lines;
    EXPECT_EQ(firstError(r), want);
  }
  auto named = parse("  serviceAccountName: r2.d2-unit\n");

  // The state file keeps it; a state written before it existed reads "default".
  nlohmann::json j = named.manifests.pods.at(0);
  auto back = podFromJson(j, "pods[0]");
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->spec.service_account, "r2.d2-unit");
  j["spec"].erase("serviceAccountName");
  auto old_state = podFromJson(j, "pods[0]");
  ASSERT_TRUE(old_state.ok()) << old_state.error().message;
  EXPECT_EQ(old_state->spec.service_account, "default");
  j["spec"]["serviceAccountName"] = 7;
  EXPECT_FALSE(podFromJson(j, "pods[0]").ok());
}

// The same object twice in one file (issue 12): kubectl keeps the last;
// membrane refuses and names both places (the first would be dropped unseen).
TEST(Manifest, ObjectDefinedTwiceIsRefusedWithBothPlaces) {
  const std::string pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n"
                          "  containers:\n  - name: c\n    image: tgraf/netperf\n";
  auto r = parseManifests(pod + "---\n" + pod, "twice.yaml");
  EXPECT_FALSE(r.ok());
  ASSERT_EQ(r.diagnostics.size(), 1u);
  EXPECT_EQ(firstError(r),
            "twice.yaml:13:9: metadata.name: Pod default/p is defined twice (first at twice.yaml:4:9): kubectl would "
            "keep only the last definition; merge the two or rename one");
  const std::string ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n";
  auto n = parseManifests(ns + "---\n" + ns, "ns.yaml");
  EXPECT_EQ(firstError(n), "ns.yaml:9:9: metadata.name: Namespace team is defined twice (first at ns.yaml:4:9): "
                           "kubectl would keep only the last definition; merge the two or rename one");
  // A policy twice in a manifest file: the policy parser names both places.
  const std::string cnp = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: rule1\n"
                          "spec:\n  endpointSelector: {}\n";
  auto p = parseManifests(cnp + "---\n" + cnp, "rules.yaml");
  EXPECT_EQ(firstError(p).rfind("rules.yaml:11:9: metadata.name: CiliumNetworkPolicy default/rule1 is defined twice (first at "
                                "rules.yaml:4:9)", 0),
            0u)
      << firstError(p);
}

TEST(Manifest, PolicyDocumentsKeepTheirPositions) {
  auto r = parseManifests(readSource("examples/starwars/sw_l3_l4_policy.yaml"), "sw_l3_l4_policy.yaml");
  ASSERT_TRUE(r.ok()) << firstError(r);
  ASSERT_EQ(r.manifests.policies.size(), 1u);
  EXPECT_EQ(r.manifests.policies[0].kind, "CiliumNetworkPolicy");
  EXPECT_EQ(r.manifests.policies[0].name, "rule1");

  // A policy error in the second document is reported at the file's line.
  std::string text =
      "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n---\n"
      "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: p\nspec:\n"
      "  endpointSelector: {}\n  ingres: []\n";
  auto bad = parseManifests(text, "mixed.yaml");
  ASSERT_EQ(bad.diagnostics.size(), 1u);
  EXPECT_EQ(firstError(bad), "mixed.yaml:12:3: spec.ingres: unknown field 'ingres' (did you mean 'ingress'?)");
}

TEST(Manifest, UnknownFieldIsPreciseAndNothingIsReturned) {
  std::string text =
      "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ok\n---\n"
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: x\n"
      "    comand: [sleep, '1']\n";
  auto r = parseManifests(text, "pod.yaml");
  ASSERT_EQ(r.diagnostics.size(), 1u);
  EXPECT_EQ(firstError(r), "pod.yaml:14:5: spec.containers[0].comand: unknown field 'comand' (did you mean 'command'?)");
  EXPECT_TRUE(r.manifests.namespaces.empty());
}

// Issue 10: kubernetes.io/metadata.name is derived from a namespace's name.
// A Namespace exported from Kubernetes carries it with its name (accepted);
// another value is refused before anything is applied (the agent would refuse
// it half-way, after the policies of the same apply were imported).
TEST(Manifest, NamespaceNameLabelMustBeTheName) {
  auto exported = parseManifests(
      "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n    team: a\n"
      "    kubernetes.io/metadata.name: shop\n",
      "ns.yaml");
  ASSERT_TRUE(exported.diagnostics.empty()) << firstError(exported);
  ASSERT_EQ(exported.manifests.namespaces.size(), 1u);
  auto evil = parseManifests(
      "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n    team: a\n"
      "    kubernetes.io/metadata.name: evil\n",
      "ns.yaml");
  ASSERT_EQ(evil.diagnostics.size(), 1u);
  EXPECT_EQ(firstError(evil),
            "ns.yaml:7:34: metadata.labels.kubernetes.io/metadata.name: 'evil' must be the namespace's name 'shop' "
            "(the label is derived from the name; remove it or set it to 'shop')");
  EXPECT_TRUE(evil.manifests.namespaces.empty());
}

TEST(Manifest, UnknownKind) {
  auto r = parseManifests("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n", "cm.yaml");
  ASSERT_EQ(r.diagnostics.size(), 1u);
  EXPECT_EQ(firstError(r),
            "cm.yaml:2:7: kind: kind 'ConfigMap' is not supported (expected Namespace, Pod, Deployment, Service, "
            "CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy or NetworkPolicy)");
}

TEST(Manifest, JsonListAndServiceTargetPort) {
  std::string text = R"({"apiVersion": "v1", "kind": "List", "items": [
 {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
  "spec": {"selector": {"app": "web"}, "ports": [{"port": 8080, "targetPort": "http"}]}},
 {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"team": "a"}}}]})";
  auto r = parseManifests(text, "list.json");
  ASSERT_TRUE(r.ok()) << firstError(r);
  ASSERT_EQ(r.manifests.services.size(), 1u);
  EXPECT_EQ(r.manifests.services[0].meta.ns, "shop");
  EXPECT_EQ(r.manifests.services[0].ports[0].target_port, "http");
  ASSERT_EQ(r.manifests.namespaces.size(), 1u);
  EXPECT_EQ(r.manifests.namespaces[0].meta.labels.at("team"), "a");
}

// kubectl reads a YAML stream whose documents are JSON objects (with or
// without `---` between them): every document counts (issue 10: only the
// first one was applied, and apply said nothing about the others).
TEST(Manifest, JsonDocumentStream) {
  auto pod = [](const std::string& name) {
    return R"({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": ")" + name +
           R"("}, "spec": {"containers": [{"name": "c", "image": "i"}]}})";
  };
  const std::string cnp =
      "{\n\t\"apiVersion\": \"cilium.io/v2\", \"kind\": \"CiliumNetworkPolicy\",\n"
      "\t\"metadata\": {\"name\": \"j\"},\n\t\"spec\": {\"endpointSelector\": {}}\n}\n";
  auto r = parseManifests(pod("a") + "\n---\n" + pod("b") + "\n---\n" + cnp, "stream.json");
  ASSERT_TRUE(r.ok()) << firstError(r);
  ASSERT_EQ(r.manifests.pods.size(), 2u);
  EXPECT_EQ(r.manifests.pods[0].meta.name, "a");
  EXPECT_EQ(r.manifests.pods[1].meta.name, "b");
  ASSERT_EQ(r.manifests.policies.size(), 1u);
  EXPECT_EQ(r.manifests.policies[0].name, "j");

  // Concatenated JSON objects, no separator.
  auto cat = parseManifests(pod("a") + "\n" + pod("b") + "\n", "cat.json");
  ASSERT_TRUE(cat.ok()) << firstError(cat);
  ASSERT_EQ(cat.manifests.pods.size(), 2u);
  EXPECT_EQ(cat.manifests.pods[1].meta.name, "b");

  // YAML first, then a JSON document with tabs.
  auto mixed = parseManifests("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n" + cnp, "mixed.yaml");
  ASSERT_TRUE(mixed.ok()) << firstError(mixed);
  EXPECT_EQ(mixed.manifests.namespaces.size(), 1u);
  EXPECT_EQ(mixed.manifests.policies.size(), 1u);

  // An error in a later JSON document is reported at its own line.
  auto bad = parseManifests(pod("a") + "\n---\n" + pod("b") + "\n---\n" +
                                R"({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "c"}, "spec": {}})" + "\n",
                            "bad.json");
  ASSERT_EQ(bad.diagnostics.size(), 1u);
  EXPECT_EQ(firstError(bad), "bad.json:5:72: spec: missing required field 'containers'");
  EXPECT_TRUE(bad.manifests.pods.empty());
}

// `apply -n NS` puts a JSON policy without metadata.namespace into NS, as it
// does for YAML (it used to go to "default" without a word).
TEST(Manifest, JsonPolicyTakesTheNamespaceFlag) {
  const std::string cnp = R"({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "j"},)"
                          "\n"
                          R"( "spec": {"endpointSelector": {}}})"
                          "\n";
  auto r = parseManifests(cnp + "---\n" + cnp.substr(0, cnp.find("\"j\"")) + "\"k\"" + cnp.substr(cnp.find("\"j\"") + 3),
                          "p.json", "team-a");
  ASSERT_TRUE(r.ok()) << firstError(r);
  ASSERT_EQ(r.manifests.policies.size(), 2u);
  EXPECT_EQ(r.manifests.policies[0].ns, "team-a");
  EXPECT_EQ(r.manifests.policies[1].name, "k");
  EXPECT_EQ(r.manifests.policies[1].ns, "team-a");
  // In a JSON list too.
  auto list = parseManifests("[" + cnp + "]", "l.json", "team-a");
  ASSERT_TRUE(list.ok()) << firstError(list);
  ASSERT_EQ(list.manifests.policies.size(), 1u);
  EXPECT_EQ(list.manifests.policies[0].ns, "team-a");
}

TEST(Manifest, BadValues) {
  auto r = parseManifests(
      "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  replicas: two\n"
      "  selector:\n    matchLabels: {a: b}\n  template:\n    metadata:\n      labels: {a: b}\n"
      "    spec:\n      containers: [{name: c, image: i}]\n",
      "d.yaml");
  EXPECT_EQ(firstError(r), "d.yaml:6:13: spec.replicas: expected a number (0-100), got 'two'");
  auto sel = parseManifests(
      "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n"
      "  selector:\n    matchLabels: {a: b}\n  template:\n    metadata:\n      labels: {a: c}\n"
      "    spec:\n      containers: [{name: c, image: i}]\n",
      "d.yaml");
  ASSERT_FALSE(sel.ok());
  EXPECT_NE(firstError(sel).find("does not match the template's labels"), std::string::npos) << firstError(sel);
  auto rp = parseManifests(
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  restartPolicy: Sometimes\n"
      "  containers: [{name: c, image: i}]\n",
      "p.yaml");
  EXPECT_EQ(firstError(rp), "p.yaml:6:18: spec.restartPolicy: restartPolicy 'Sometimes' is not one of Always, OnFailure, Never");
}

TEST(Manifest, NamespaceFlagAndPolicies) {
  std::string pol = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: p\nspec:\n"
                    "  endpointSelector: {}\n";
  auto r = parseManifests(pol, "p.yaml", "team-a");
  ASSERT_TRUE(r.ok()) << firstError(r);
  ASSERT_EQ(r.manifests.policies.size(), 1u);
  EXPECT_EQ(r.manifests.policies[0].ns, "team-a");
  EXPECT_EQ(r.manifests.policy_text,
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  namespace: team-a\n  name: p\nspec:\n"
            "  endpointSelector: {}\n");
  auto plain = parseManifests(pol, "p.yaml");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain.manifests.policies[0].ns, "default");
  EXPECT_EQ(plain.manifests.policy_text, pol);
  // A namespace given in the file wins over -n.
  auto own = parseManifests("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: p\n"
                            "  namespace: b\nspec:\n  endpointSelector: {}\n", "p.yaml", "team-a");
  ASSERT_TRUE(own.ok());
  EXPECT_EQ(own.manifests.policies[0].ns, "b");
  // Errors still point at the file's own lines.
  auto bad = parseManifests(pol + "  ingres: []\n", "p.yaml", "team-a");
  EXPECT_EQ(firstError(bad), "p.yaml:7:3: spec.ingres: unknown field 'ingres' (did you mean 'ingress'?)");
  auto pod = parseManifests("apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec:\n"
                            "  containers: [{name: c, image: i}]\n",
                            "x.yaml", "team-a");
  ASSERT_TRUE(pod.ok()) << firstError(pod);
  EXPECT_EQ(pod.manifests.pods.at(0).meta.ns, "team-a");
}

// Whatever the input, a result (never a crash, hang or exception): the
// policy parser's fuzz corpus plus inputs that trip yaml-cpp.
TEST(Manifest, MalformedInputsGiveDiagnostics) {
  for (const char* text : {"{a: b},", "kind: [", "\t- x", "---\n---\n...\n", "[1, 2]", "{\"kind\": 3}",
                           "apiVersion: v1\nkind: Pod\nmetadata: []\n", "kind: List\nitems: 3\n"}) {
    auto r = parseManifests(text, "x.yaml");
    EXPECT_FALSE(r.ok()) << text;
  }
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(std::string(MEMBRANE_SOURCE_DIR) + "/src/policy/fuzz/corpus")) {
    std::ifstream in(e.path());
    std::stringstream ss;
    ss << in.rdbuf();
    auto r = parseManifests(ss.str(), e.path().filename().string());
    EXPECT_TRUE(r.ok() || !r.diagnostics.empty());
    ++files;
  }
  EXPECT_GT(files, 0u);
}

TEST(Manifest, EmptyInput) {
  auto r = parseManifests("# nothing\n", "e.yaml");
  EXPECT_EQ(firstError(r), "e.yaml:1:1: no object found");
}

}  // namespace
}  // namespace membrane::workload
