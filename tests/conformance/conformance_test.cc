// Policy conformance suite (issue 3): one isolated membraned, namespaces
// x, y, z with pods a, b, c each, every pod serving TCP and UDP on ports 80
// and 81. For each case: delete every policy, import the case's policies,
// probe every pair (9x9, self included) on every port in parallel, and
// compare the whole reachability matrix with the expected one, which is
// written from the Kubernetes NetworkPolicy and Cilium documentation (the
// rule each case checks is cited next to it), never computed by the engine.
//
// Pods:        x/a x/b x/c  y/a y/b y/c  z/a z/b z/c
//   labels     pod=<a|b|c>; a and b also app=web
//   named ports (as the Kubernetes e2e netpol pods): a, b serve-80-tcp, serve-81-tcp,
//              serve-80-udp, serve-81-udp; c only serve-80-tcp and serve-80-udp
// Namespaces:  x: ns=x, team=blue   y: ns=y, team=red   z: ns=z
// (the real namespace names carry the pid so parallel runs never collide;
// policies say {x}, {y}, {z} for them and {cidr} for the pod CIDR).
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <thread>

#include "tests/conformance/matrix.h"
#include "tests/integration/agent_fixture.h"

namespace membrane::testing::conformance {
namespace {

const std::vector<std::string> kNamespaces = {"x", "y", "z"};
const std::vector<std::string> kPodNames = {"a", "b", "c"};
const std::vector<std::string> kPorts = {"tcp/80", "tcp/81", "udp/80", "udp/81"};
const std::map<std::string, std::string> kNamespaceLabels = {
    {"x", R"({"labels":{"ns":"x","team":"blue"}})"},
    {"y", R"({"labels":{"ns":"y","team":"red"}})"},
    {"z", R"({"labels":{"ns":"z"}})"},
};
// Ports 20000.. are below the ephemeral range; every probe of every round
// gets its own source port so no probe can ride a conntrack entry of an
// earlier one (an allowed flow's entry would otherwise let a later, denied
// probe with the same 5-tuple through, as in Cilium).
constexpr int kSportBase = 20000;
constexpr int kSportStride = 50;  // >= targets x ports per prober
constexpr int kRounds = 250;      // 20000 + 250 * 50 stays below the ephemeral range (32768)

struct DropCheck {
  std::string reason;     // cilium_drop_count_total{reason=...}
  std::string direction;  // INGRESS | EGRESS
};

struct Case {
  std::string name;
  std::string yaml;  // policies to import; "" = none
  Expectation allowed;
  std::vector<std::string> ports = kPorts;
  std::optional<DropCheck> drops;  // exact drop counter delta to assert
  std::string disabled;            // non-empty: registered as DISABLED_ with this reason
};

// Probe results: the observed matrix and, per cell, what the prober said.
struct Observation {
  Matrix matrix;
  std::map<std::tuple<PodName, PodName, std::string>, std::pair<int, std::string>> detail;  // packets, text
};

std::vector<PodName> allPods() {
  std::vector<PodName> v;
  for (const auto& ns : kNamespaces)
    for (const auto& p : kPodNames) v.push_back({ns, p});
  return v;
}

// The shared cluster: an AgentFixture used for the whole suite.
class Cluster : public AgentFixture {
 public:
  void TestBody() override {}

  // Agent, namespaces with labels, pods, servers; true when all of it is up.
  bool up() {
    AgentFixture::SetUp();
    if (HasFatalFailure()) return false;
    startAgent();
    if (HasFatalFailure()) return false;
    for (const auto& ns : kNamespaces) {
      auto r = curl("PUT", "/v1/namespace/" + realNs(ns), kNamespaceLabels.at(ns));
      if (r.exit_code != 0 || r.out.find("\"labels\"") == std::string::npos) {
        ADD_FAILURE() << "namespace labels for " << ns << ": " << r.out << r.err;
        return false;
      }
    }
    for (const auto& pod : allPods()) {
      std::string labels = "pod=" + pod.pod + (pod.pod == "c" ? "" : ",app=web");
      std::vector<std::string> create{"endpoint", "create", pod.pod, "-n", realNs(pod.ns), "--labels", labels,
                                      "--port", "serve-80-tcp=80/TCP", "--port", "serve-80-udp=80/UDP"};
      if (pod.pod != "c") create.insert(create.end(), {"--port", "serve-81-tcp=81/TCP", "--port", "serve-81-udp=81/UDP"});
      auto r = cli(create);
      if (r.exit_code != 0) {
        ADD_FAILURE() << "endpoint create " << pod.str() << ": " << r.out << r.err;
        return false;
      }
      auto g = cli({"endpoint", "get", pod.pod, "-n", realNs(pod.ns), "-o", "json"});
      auto j = nlohmann::json::parse(g.out, nullptr, false);
      if (j.is_array() && !j.empty()) j = j[0];
      if (!j.is_object() || j.value("ipv4", "").empty()) {
        ADD_FAILURE() << "endpoint get " << pod.str() << ": " << g.out << g.err;
        return false;
      }
      ips_[pod] = j.value("ipv4", "");
      ids_[pod] = j.value("id", 0u);
      // Namespace labels are part of the identity (docs/api.md, PUT /v1/namespace).
      std::string dumped = j.dump();
      for (const auto& want : {"io.cilium.k8s.namespace.labels.ns=" + pod.ns,
                               "io.kubernetes.pod.namespace=" + realNs(pod.ns)})
        if (dumped.find(want) == std::string::npos) {
          ADD_FAILURE() << pod.str() << " lacks label " << want << ": " << dumped;
          return false;
        }
      children_.push_back(Child::spawn({bin("membrane"), "--socket", socket_, "exec", "-n", realNs(pod.ns), pod.pod,
                                        "--", "python3", "-u", source_dir_ + "/tests/conformance/server.py", pod.str(),
                                        "80", "81"},
                                       fmt::format("{}/server-{}-{}.log", dir_, pod.ns, pod.pod)));
    }
    // Servers are up when a pod of each namespace answers everything.
    Matrix all = Matrix::expected(allPods(), kPorts, [](const Flow&) { return true; });
    bool ok = waitFor([&] { return probe(kPorts).matrix.diff(all).empty(); }, std::chrono::seconds(30));
    if (!ok) ADD_FAILURE() << "servers did not answer:\n" << Matrix::explain(all, probe(kPorts).matrix);
    return ok;
  }

  void down() { AgentFixture::TearDown(); }

  // Restarts membraned with extra flags (none: as the fixture starts it);
  // the pods and their servers survive the restart.
  bool restartWith(const std::vector<std::string>& extra) {
    stopAgent();
    auto args = agentArgs();
    args.insert(args.end(), extra.begin(), extra.end());
    agent_ = Child::spawn(args, dir_ + "/membraned.log");
    return waitFor([&] { return cli({"status", "--brief"}, std::chrono::seconds(5)).exit_code == 0; },
                   std::chrono::seconds(20));
  }

  using AgentFixture::cli;
  using AgentFixture::dir;
  using AgentFixture::metric;

  std::string realNs(const std::string& short_ns) const { return fmt::format("{}-{}", short_ns, getpid()); }
  uint32_t endpointId(const PodName& p) const { return ids_.at(p); }

  RunResult curl(const std::string& method, const std::string& path, const std::string& body = "") {
    std::vector<std::string> argv{"curl", "-s", "-S", "--unix-socket", socket_, "-X", method};
    if (!body.empty()) argv.insert(argv.end(), {"-H", "Content-Type: application/json", "-d", body});
    argv.push_back("http://localhost" + path);
    return run(argv, std::chrono::seconds(40));
  }

  std::string substitute(std::string text) const {
    for (const auto& ns : kNamespaces) text = std::regex_replace(text, std::regex("\\{" + ns + "\\}"), realNs(ns));
    return std::regex_replace(text, std::regex("\\{cidr\\}"), pod_cidr_);
  }

  // Waits until every endpoint enforces at least `revision`.
  ::testing::AssertionResult waitRevision(long revision) {
    auto r = curl("GET", fmt::format("/v1/policy/wait?revision={}&timeout=20", revision));
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    if (r.exit_code != 0 || !j.is_object() || j.value("realized", 0L) < revision)
      return ::testing::AssertionFailure() << "policy wait " << revision << ": " << r.out << r.err;
    return ::testing::AssertionSuccess();
  }

  static std::optional<long> revisionOf(const std::string& out) {
    std::smatch m;
    if (!std::regex_search(out, m, std::regex("Revision: (\\d+)"))) return std::nullopt;
    return std::stol(m[1]);
  }

  ::testing::AssertionResult deleteAllPolicies() {
    auto r = cli({"policy", "delete", "--all"});
    auto rev = revisionOf(r.out);
    if (r.exit_code != 0 || !rev) return ::testing::AssertionFailure() << "policy delete --all: " << r.out << r.err;
    return waitRevision(*rev);
  }

  ::testing::AssertionResult deletePolicy(const std::string& name, const std::string& short_ns) {
    auto r = cli({"policy", "delete", name, "-n", realNs(short_ns)});
    auto rev = revisionOf(r.out);
    if (r.exit_code != 0 || !rev) return ::testing::AssertionFailure() << "policy delete " << name << ": " << r.out << r.err;
    return waitRevision(*rev);
  }

  ::testing::AssertionResult importPolicies(const std::string& yaml) {
    auto r = importPolicy(substitute(yaml));
    auto rev = revisionOf(r.out);
    if (r.exit_code != 0 || !rev)
      return ::testing::AssertionFailure() << "policy import: " << r.out << r.err << "\n" << substitute(yaml);
    return waitRevision(*rev);
  }

  // One prober per source pod, all at once; each probes every target on
  // every port concurrently (1 s timeout; TCP connect 0.8 s, below the 1 s
  // initial SYN RTO, so a denied TCP probe normally sends exactly one SYN).
  Observation probe(const std::vector<std::string>& ports) {
    const auto pods = allPods();
    int round = round_++;
    std::vector<std::string> targets;
    for (const auto& p : pods) targets.push_back(p.str() + "=" + ips_.at(p));
    std::vector<RunResult> results(pods.size());
    std::vector<std::thread> threads;
    for (size_t i = 0; i < pods.size(); ++i) {
      threads.emplace_back([&, i] {
        std::vector<std::string> cmd{"python3", source_dir_ + "/tests/conformance/prober.py", "--sport-base",
                                     std::to_string(kSportBase + (round % kRounds) * kSportStride), "--ports",
                                     fmt::format("{}", fmt::join(ports, ","))};
        cmd.insert(cmd.end(), targets.begin(), targets.end());
        std::vector<std::string> args{"exec", "-n", realNs(pods[i].ns), pods[i].pod, "--"};
        args.insert(args.end(), cmd.begin(), cmd.end());
        results[i] = cli(args, std::chrono::seconds(30));
      });
    }
    for (auto& t : threads) t.join();
    Observation obs{Matrix(pods, ports), {}};
    std::map<std::string, PodName> by_name;
    for (const auto& p : pods) by_name[p.str()] = p;
    for (size_t i = 0; i < pods.size(); ++i) {
      std::istringstream in(results[i].out);
      std::string line;
      while (std::getline(in, line)) {
        std::istringstream f(line);
        std::string to, port, verdict, detail;
        int packets = 0;
        f >> to >> port >> verdict >> packets;
        std::getline(f >> std::ws, detail);
        if (!by_name.count(to)) continue;
        obs.matrix.set(pods[i], by_name[to], port, verdict == "OK");
        obs.detail[{pods[i], by_name[to], port}] = {packets, detail};
      }
      if (results[i].exit_code != 0)
        ADD_FAILURE() << "prober in " << pods[i].str() << " exited " << results[i].exit_code << ": " << results[i].err;
    }
    return obs;
  }

  std::map<PodName, std::string> ips_;
  std::map<PodName, uint32_t> ids_;
  std::atomic<int> round_{0};
};

class Conformance : public ::testing::Test {
 public:
  static void SetUpTestSuite() {
    if (geteuid() != 0) return;
    cluster_ = std::make_unique<Cluster>();
    ready_ = cluster_->up();
    if (!ready_) ADD_FAILURE() << "conformance cluster did not come up; see " << cluster_->dir();
  }
  static void TearDownTestSuite() {
    if (!cluster_) return;
    // The fixture keeps its directory only when the suite-level result
    // failed; keep the agent log of any failed case somewhere stable.
    if (any_failed_)
      run({"cp", cluster_->dir() + "/membraned.log", fmt::format("/tmp/membrane-conformance-{}.log", getpid())});
    cluster_->down();
    cluster_.reset();
  }

 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (BPF, network namespaces)";
    ASSERT_TRUE(ready_) << "conformance cluster is not up";
    ASSERT_TRUE(c().deleteAllPolicies());
  }
  void TearDown() override {
    if (HasFailure()) any_failed_ = true;
  }

  Cluster& c() { return *cluster_; }

  // Probes and compares with the expectation; returns the observation.
  Observation expectMatrix(const Expectation& allowed, const std::vector<std::string>& ports = kPorts) {
    Matrix want = Matrix::expected(allPods(), ports, allowed);
    Observation got = c().probe(ports);
    auto diff = want.diff(got.matrix);
    if (!diff.empty()) {
      std::string cells;
      for (const auto& f : diff) {
        auto it = got.detail.find({f.from, f.to, f.port});
        cells += fmt::format("  {} -> {} {}: expected {}, prober said {}\n", f.from.str(), f.to.str(), f.port,
                             want.get(f.from, f.to, f.port) ? "allowed" : "denied",
                             it == got.detail.end() ? "nothing" : it->second.second);
      }
      ADD_FAILURE() << diff.size() << " cells differ:\n" << Matrix::explain(want, got.matrix) << cells;
    }
    return got;
  }

  double drops(const DropCheck& d) {
    return c().metric("cilium_drop_count_total", {{"direction", d.direction}, {"reason", d.reason}});
  }

  // Every packet of every denied probe is one drop with this reason and direction.
  void expectDrops(const DropCheck& d, double before, const Observation& got) {
    double want = before;
    for (const auto& [key, v] : got.detail)
      if (!got.matrix.get(std::get<0>(key), std::get<1>(key), std::get<2>(key))) want += v.first;
    bool ok = waitFor([&] { return drops(d) == want; }, std::chrono::seconds(3));
    EXPECT_TRUE(ok) << "cilium_drop_count_total{direction=\"" << d.direction << "\",reason=\"" << d.reason
                    << "\"} is " << drops(d) << ", expected " << want << " (" << want - before
                    << " packets of denied probes)";
  }

  void runCase(const Case& k) {
    if (!k.yaml.empty()) {
      ASSERT_TRUE(c().importPolicies(k.yaml));
    }
    std::optional<double> before;
    if (k.drops) before = drops(*k.drops);
    auto got = expectMatrix(k.allowed, k.ports);
    if (k.drops) expectDrops(*k.drops, *before, got);
  }

  static inline std::unique_ptr<Cluster> cluster_;
  static inline bool ready_ = false;
  static inline bool any_failed_ = false;
};

// ---- The case table -------------------------------------------------------
// Self cells are always allowed (see Matrix::expected); expectations below
// only describe traffic between distinct pods.

// Rows name only the fields they need (designated initializers); gcc 12
// warns about the defaulted rest, which is the point of the defaults.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
const std::vector<Case>& cases() {
  static const std::vector<Case> k = {
      {
          // k8s NetworkPolicy docs, "Isolated and Non-isolated Pods": by default
          // pods are non-isolated; they accept traffic from any source.
          .name = "NoPolicyAllowsEverything",
          .yaml = "",
          .allowed = [](const Flow&) { return true; },
      },
      {
          // k8s docs, "Default policies / Default deny all ingress traffic": a
          // policy selecting all pods of a namespace with policyTypes [Ingress]
          // and no rules isolates them; other namespaces are untouched.
          .name = "DefaultDenyIngressNetworkPolicy",
          .yaml = R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-ingress
  namespace: "{x}"
spec:
  podSelector: {}
  policyTypes:
  - Ingress
)",
          .allowed = [](const Flow& f) { return !f.toIs("x/*"); },
          .drops = DropCheck{"Policy denied", "INGRESS"},
      },
      {
          // Cilium docs, Policy Language, "Ingress/Egress Default Deny": a rule
          // selecting an endpoint with an ingress section, here the empty
          // rule `ingress: [{}]`, puts it into default deny for ingress.
          .name = "DefaultDenyIngressCiliumEmptyRule",
          .yaml = R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: deny-all-ingress
  namespace: "{x}"
spec:
  endpointSelector: {}
  ingress:
  - {}
)",
          .allowed = [](const Flow& f) { return !f.toIs("x/*"); },
      },
      {
          // k8s docs, NetworkPolicy resource: a `podSelector` peer "selects
          // particular Pods in the same namespace as the NetworkPolicy".
          .name = "AllowFromSameNamespace",
          .yaml = R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-same-namespace
  namespace: "{x}"
spec:
  podSelector: {}
  ingress:
  - from:
    - podSelector: {}
)",
          .allowed = [](const Flow& f) { return !f.toIs("x/*") || f.fromIs("x/*"); },
      },
      {
          // k8s docs: a `namespaceSelector` peer "selects particular namespaces
          // for which all Pods should be allowed as ingress sources" (and not
          // the policy's own namespace unless it matches).
          .name = "AllowFromNamespaceSelector",
          .yaml = R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-from-y
  namespace: "{x}"
spec:
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector:
        matchLabels:
          ns: y
)",
          .allowed = [](const Flow& f) { return !f.toIs("x/*") || f.fromIs("y/*"); },
      },
      {
          // k8s docs, "namespaceSelector and podSelector": a single from entry
          // with both "selects particular Pods within particular namespaces".
          .name = "PodAndNamespaceSelectorInOnePeer",
          .yaml = R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: one-peer
  namespace: "{x}"
spec:
  podSelector:
    matchLabels:
      pod: a
  ingress:
  - from:
    - namespaceSelector:
        matchLabels:
          ns: y
      podSelector:
        matchLabels:
          pod: b
)",
          .allowed = [](const Flow& f) { return !f.toIs("x/a") || f.fromIs("y/b"); },
      },
      {
          // k8s docs, same section: two elements in `from` are ORed: pods of
          // the selected namespace, or pods matching podSelector in the
          // policy's own namespace.
          .name = "PodAndNamespaceSelectorInTwoPeers",
          .yaml = R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: two-peers
  namespace: "{x}"
spec:
  podSelector:
    matchLabels:
      pod: a
  ingress:
  - from:
    - namespaceSelector:
        matchLabels:
          ns: y
    - podSelector:
        matchLabels:
          pod: b
)",
          .allowed = [](const Flow& f) { return !f.toIs("x/a") || f.fromIs("y/*") || f.fromIs("x/b"); },
      },
      {
          // k8s docs, NetworkPolicySpec ingress: a rule without `from` matches
          // all sources; `ports` restricts it to the listed port/protocol.
          .name = "SinglePort",
          .yaml = R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: tcp-80-only
  namespace: "{x}"
spec:
  podSelector:
    matchLabels:
      pod: a
  ingress:
  - ports:
    - port: 80
      protocol: TCP
)",
          .allowed = [](const Flow& f) { return !f.toIs("x/a") || f.on("tcp/80"); },
      },
      {
          // k8s docs, "Targeting a range of ports": `endPort` makes port..endPort
          // inclusive; Cilium PortProtocol.endPort has the same meaning. The
          // three ranges each cut our ports differently.
          .name = "EndPortRanges",
          .yaml = R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: tcp-80-81
  namespace: "{x}"
spec:
  podSelector:
    matchLabels:
      pod: a
  ingress:
  - ports:
    - port: 80
      endPort: 81
      protocol: TCP
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: tcp-70-80
  namespace: "{x}"
spec:
  podSelector:
    matchLabels:
      pod: c
  ingress:
  - ports:
    - port: 70
      endPort: 80
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: udp-81-82
  namespace: "{x}"
spec:
  endpointSelector:
    matchLabels:
      pod: b
  ingress:
  - toPorts:
    - ports:
      - port: "81"
        endPort: 82
        protocol: UDP
)",
          .allowed =
              [](const Flow& f) {
                if (f.toIs("x/a")) return f.on("tcp/*");
                if (f.toIs("x/b")) return f.on("udp/81");
                if (f.toIs("x/c")) return f.on("tcp/80");  // NetworkPolicyPort protocol defaults to TCP
                return true;
              },
      },
      {
          // k8s docs, NetworkPolicyPort: "port ... If this field is not
          // provided, this matches all port names and numbers" of the protocol.
          .name = "ProtocolOnlyNetworkPolicy",
          .yaml = R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: udp-only
  namespace: "{x}"
spec:
  podSelector:
    matchLabels:
      pod: a
  ingress:
  - ports:
    - protocol: UDP
)",
          .allowed = [](const Flow& f) { return !f.toIs("x/a") || f.on("udp/*"); },
      },
      {
          // Cilium docs, Layer 4 examples / PortProtocol: a port rule with only
          // a protocol (port omitted) allows every port of that protocol.
          .name = "ProtocolOnlyCiliumPortRule",
          .yaml = R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: udp-only
  namespace: "{x}"
spec:
  endpointSelector:
    matchLabels:
      pod: a
  ingress:
  - toPorts:
    - ports:
      - protocol: UDP
)",
          .allowed = [](const Flow& f) { return !f.toIs("x/a") || f.on("udp/*"); },
      },
      {
          // k8s docs, "Default deny all egress traffic" and NetworkPolicyEgressRule:
          // traffic must match both `to` and `ports` of one rule. x/b is
          // egress-isolated with no rule; x/a may only reach y/a on TCP 80 and UDP 81.
          .name = "EgressDefaultDenyAndAllowSpecific",
          .yaml = R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: egress-to-y-a
  namespace: "{x}"
spec:
  podSelector:
    matchLabels:
      pod: a
  policyTypes:
  - Egress
  egress:
  - to:
    - namespaceSelector:
        matchLabels:
          ns: y
      podSelector:
        matchLabels:
          pod: a
    ports:
    - port: 80
      protocol: TCP
    - port: 81
      protocol: UDP
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-egress
  namespace: "{x}"
spec:
  podSelector:
    matchLabels:
      pod: b
  policyTypes:
  - Egress
)",
          .allowed =
              [](const Flow& f) {
                if (f.fromIs("x/b")) return false;
                if (f.fromIs("x/a")) return f.toIs("y/a") && (f.on("tcp/80") || f.on("udp/81"));
                return true;  // replies to x/a's and x/b's peers are not egress from them
              },
          .drops = DropCheck{"Policy denied", "EGRESS"},
      },
      {
          // Cilium docs, Policy Language: ingress and egress sections of one rule
          // each put the endpoint into default deny for their direction, and a
          // fromEndpoints selector without a namespace means the policy's own
          // namespace (Kubernetes "Namespaces" section).
          .name = "EgressAndIngressTogether",
          .yaml = R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: both-directions
  namespace: "{x}"
spec:
  endpointSelector:
    matchLabels:
      pod: a
  ingress:
  - fromEndpoints:
    - matchLabels:
        pod: b
  egress:
  - toEndpoints:
    - matchLabels:
        k8s:io.kubernetes.pod.namespace: "{z}"
)",
          .allowed =
              [](const Flow& f) {
                if (f.toIs("x/a") && !f.fromIs("x/b")) return false;
                if (f.fromIs("x/a") && !f.toIs("z/*")) return false;
                return true;
              },
      },
      {
          // Cilium docs, "Deny Policies": deny rules take precedence over allow
          // rules regardless of CNP, CCNP or Kubernetes NetworkPolicy, and such
          // drops are counted as "Policy denied by denylist" (reason 181).
          // An NP allows everything into x and a CCNP explicitly allows y; the
          // CNP denies y entirely and z on TCP 81.
          .name = "DenyWinsOverAllowAcrossKinds",
          .yaml = R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-all-ingress
  namespace: "{x}"
spec:
  podSelector: {}
  ingress:
  - {}
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: allow-y-into-x
spec:
  endpointSelector:
    matchLabels:
      k8s:io.kubernetes.pod.namespace: "{x}"
  ingress:
  - fromEndpoints:
    - matchLabels:
        k8s:io.kubernetes.pod.namespace: "{y}"
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: deny-y-and-z-81
  namespace: "{x}"
spec:
  endpointSelector: {}
  ingressDeny:
  - fromEndpoints:
    - matchLabels:
        k8s:io.kubernetes.pod.namespace: "{y}"
  - fromEndpoints:
    - matchLabels:
        k8s:io.kubernetes.pod.namespace: "{z}"
    toPorts:
    - ports:
      - port: "81"
        protocol: TCP
)",
          .allowed =
              [](const Flow& f) { return !(f.toIs("x/*") && (f.fromIs("y/*") || (f.fromIs("z/*") && f.on("tcp/81")))); },
          .drops = DropCheck{"Policy denied by denylist", "INGRESS"},
      },
      {
          // k8s docs: "Network policies do not conflict; they are additive ...
          // the union of what all applicable policies allow"; Cilium docs: the
          // rule model is an allow-list, union of all matching rules.
          .name = "UnionOfSeveralPolicies",
          .yaml = R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: y-on-tcp-80
  namespace: "{x}"
spec:
  podSelector:
    matchLabels:
      pod: a
  ingress:
  - from:
    - namespaceSelector:
        matchLabels:
          ns: y
    ports:
    - port: 80
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: z-on-udp-81
  namespace: "{x}"
spec:
  podSelector:
    matchLabels:
      pod: a
  ingress:
  - from:
    - namespaceSelector:
        matchLabels:
          ns: z
    ports:
    - port: 81
      protocol: UDP
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: b-on-tcp-81
  namespace: "{x}"
spec:
  endpointSelector:
    matchLabels:
      pod: a
  ingress:
  - fromEndpoints:
    - matchLabels:
        pod: b
    toPorts:
    - ports:
      - port: "81"
        protocol: TCP
)",
          .allowed =
              [](const Flow& f) {
                if (!f.toIs("x/a")) return true;
                return (f.fromIs("y/*") && f.on("tcp/80")) || (f.fromIs("z/*") && f.on("udp/81")) ||
                       (f.fromIs("x/b") && f.on("tcp/81"));
              },
      },
      {
          // Cilium docs, CiliumClusterwideNetworkPolicy: not namespaced; its
          // endpointSelector selects pods of every namespace and a fromEndpoints
          // selector without a namespace label matches pods of every namespace.
          .name = "ClusterwidePolicySelectsAllNamespaces",
          .yaml = R"(apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: a-only-from-b
spec:
  endpointSelector:
    matchLabels:
      pod: a
  ingress:
  - fromEndpoints:
    - matchLabels:
        pod: b
)",
          .allowed = [](const Flow& f) { return !f.toIs("*/a") || f.fromIs("*/b"); },
      },
      {
          // Cilium docs, "Entities Based": `cluster` is every endpoint inside the
          // local cluster (pods included); `world` is everything outside the
          // cluster (so no pod); `all` is every entity.
          .name = "FromEntitiesClusterWorldAll",
          .yaml = R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: entities
  namespace: "{x}"
specs:
- endpointSelector:
    matchLabels:
      pod: a
  ingress:
  - fromEntities:
    - cluster
- endpointSelector:
    matchLabels:
      pod: b
  ingress:
  - fromEntities:
    - world
- endpointSelector:
    matchLabels:
      pod: c
  ingress:
  - fromEntities:
    - all
)",
          .allowed = [](const Flow& f) { return !f.toIs("x/b"); },
      },
      {
          // k8s LabelSelector docs (matchExpressions operators In, NotIn,
          // Exists, DoesNotExist; requirements are ANDed), used as podSelector,
          // namespaceSelector and Cilium endpoint selectors.
          .name = "MatchExpressions",
          .yaml = R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: in-exists-doesnotexist
  namespace: "{x}"
spec:
  podSelector:
    matchExpressions:
    - key: pod
      operator: In
      values: [a, b]
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions:
        - key: team
          operator: Exists
      podSelector:
        matchExpressions:
        - key: app
          operator: DoesNotExist
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: notin-exists
  namespace: "{y}"
spec:
  podSelector:
    matchExpressions:
    - key: pod
      operator: NotIn
      values: [a]
  ingress:
  - from:
    - podSelector:
        matchExpressions:
        - key: app
          operator: Exists
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: cilium-expressions
  namespace: "{z}"
spec:
  endpointSelector:
    matchExpressions:
    - key: pod
      operator: NotIn
      values: [a, b]
  ingress:
  - fromEndpoints:
    - matchExpressions:
      - key: k8s:io.kubernetes.pod.namespace
        operator: In
        values: ["{x}", "{z}"]
      - key: app
        operator: Exists
)",
          .allowed =
              [](const Flow& f) {
                if (f.toIs("x/a") || f.toIs("x/b")) return f.fromIs("x/c") || f.fromIs("y/c");
                if (f.toIs("y/b") || f.toIs("y/c")) return f.fromIs("y/a") || f.fromIs("y/b");
                if (f.toIs("z/c")) return (f.fromIs("x/*") || f.fromIs("z/*")) && !f.fromIs("*/c");
                return true;
              },
      },
      {
          // Cilium docs, "CIDR based": CIDR rules do not apply to traffic where
          // both sides are managed by Cilium; a pod is matched by its endpoint
          // identity, so fromCIDR/toCIDR covering the pod CIDR allow no pod.
          .name = "CidrRulesDoNotSelectPods",
          .yaml = R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: cidr
  namespace: "{x}"
specs:
- endpointSelector:
    matchLabels:
      pod: a
  ingress:
  - fromCIDR:
    - "{cidr}"
- endpointSelector:
    matchLabels:
      pod: b
  egress:
  - toCIDRSet:
    - cidr: "{cidr}"
)",
          .allowed = [](const Flow& f) { return !f.toIs("x/a") && !f.fromIs("x/b"); },
      },
      {
          // Cilium docs, "ICMP/ICMPv6": `icmps` fields allow the listed ICMP
          // types; the endpoint is in ingress default deny for everything else.
          .name = "IcmpTypes",
          .yaml = R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: ping-only
  namespace: "{x}"
spec:
  endpointSelector:
    matchLabels:
      pod: a
  ingress:
  - icmps:
    - fields:
      - type: 8
        family: IPv4
)",
          .allowed = [](const Flow& f) { return !f.toIs("x/a") || f.on("icmp"); },
          .ports = {"tcp/80", "udp/81", "icmp"},
      },
      {
          // Cilium docs, Policy Language "enableDefaultDeny": a rule with
          // enableDefaultDeny.ingress false does not put the endpoint into
          // default deny; it only adds allows.
          .name = "EnableDefaultDenyFalse",
          .yaml = R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: no-default-deny
  namespace: "{x}"
spec:
  endpointSelector:
    matchLabels:
      pod: a
  enableDefaultDeny:
    ingress: false
  ingress:
  - fromEndpoints:
    - matchLabels:
        pod: b
)",
          .allowed = [](const Flow&) { return true; },
      },
      {
          // k8s docs, "Default deny all ingress and all egress traffic": with
          // policyTypes [Ingress, Egress] and no rules, the namespace's pods
          // neither receive nor send.
          .name = "DefaultDenyIngressAndEgress",
          .yaml = R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-all
  namespace: "{z}"
spec:
  podSelector: {}
  policyTypes:
  - Ingress
  - Egress
)",
          .allowed = [](const Flow& f) { return !f.toIs("z/*") && !f.fromIs("z/*"); },
      },
      {
          // Cilium docs, PortProtocol.protocol: ANY (or empty) matches every
          // L4 protocol on the port.
          .name = "AnyProtocol",
          .yaml = R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: port-80-any
  namespace: "{x}"
spec:
  endpointSelector:
    matchLabels:
      pod: a
  ingress:
  - toPorts:
    - ports:
      - port: "80"
        protocol: ANY
)",
          .allowed = [](const Flow& f) { return !f.toIs("x/a") || f.on("*/80"); },
      },
      {
          // Cilium docs, "Deny Policies": egressDeny wins over any egress allow
          // (here toEntities all), only for the flows it names; counted as
          // "Policy denied by denylist" at egress.
          .name = "EgressDenyWinsOverAllow",
          .yaml = R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: egress-all-but-z-udp-80
  namespace: "{x}"
spec:
  endpointSelector: {}
  egress:
  - toEntities:
    - all
  egressDeny:
  - toEndpoints:
    - matchLabels:
        k8s:io.kubernetes.pod.namespace: "{z}"
    toPorts:
    - ports:
      - port: "80"
        protocol: UDP
)",
          .allowed = [](const Flow& f) { return !(f.fromIs("x/*") && f.toIs("z/*") && f.on("udp/80")); },
          .drops = DropCheck{"Policy denied by denylist", "EGRESS"},
      },
      {
          // Cilium docs, Policy Language "Selectors": label keys may carry a
          // source prefix; `k8s:` matches only Kubernetes labels, `any:` (the
          // default) matches every source. Pod labels are k8s-sourced.
          .name = "LabelSourcePrefixes",
          .yaml = R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: prefixes
  namespace: "{x}"
specs:
- endpointSelector:
    matchLabels:
      any:pod: a
  ingress:
  - fromEndpoints:
    - matchLabels:
        k8s:pod: b
- endpointSelector:
    matchLabels:
      k8s:pod: b
  ingress:
  - fromEndpoints:
    - matchLabels:
        any:pod: c
)",
          .allowed =
              [](const Flow& f) {
                if (f.toIs("x/a")) return f.fromIs("x/b");
                if (f.toIs("x/b")) return f.fromIs("x/c");
                return true;
              },
      },
      {
          // k8s docs, NetworkPolicyPort: "port ... This can either be a
          // numerical or named port on a pod"; for ingress the name is looked
          // up in the selected pod's containers: x/a and x/b declare
          // serve-81-tcp (81), x/c does not, so x/c is isolated and opens nothing.
          .name = "NamedPortIngressResolvesOnTheSelectedPod",
          .yaml = R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: named-ingress
  namespace: "{x}"
spec:
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector: {}
    ports:
    - port: serve-81-tcp
)",
          .allowed =
              [](const Flow& f) {
                if (f.toIs("x/a") || f.toIs("x/b")) return f.on("tcp/81");
                return !f.toIs("x/c");
              },
      },
      {
          // Same rule, egress: the name is resolved on each destination pod
          // (Cilium resolves named ports per peer identity); a destination
          // without a port of that name (every c) is not reachable through it.
          .name = "NamedPortEgressResolvesOnEachPeer",
          .yaml = R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: named-egress
  namespace: "{y}"
spec:
  podSelector:
    matchLabels:
      pod: a
  policyTypes:
  - Egress
  egress:
  - to:
    - namespaceSelector: {}
    ports:
    - port: serve-81-tcp
      protocol: TCP
)",
          .allowed =
              [](const Flow& f) {
                if (f.fromIs("y/a")) return f.on("tcp/81") && !f.toIs("*/c");
                return true;
              },
      },
  };
  return k;
}
#pragma GCC diagnostic pop

class TableCase : public Conformance {
 public:
  explicit TableCase(size_t i) : index_(i) {}
  void TestBody() override { runCase(cases()[index_]); }

 private:
  size_t index_;
};

// Registers one test per table row (in table order, before the TEST_Fs
// below); a row with a `disabled` reason is registered as DISABLED_.
const bool kRegistered = [] {
  for (size_t i = 0; i < cases().size(); ++i) {
    const auto& k = cases()[i];
    std::string name = (k.disabled.empty() ? "" : "DISABLED_") + k.name;
    ::testing::RegisterTest("Conformance", name.c_str(), nullptr, nullptr, __FILE__, __LINE__,
                            [i]() -> Conformance* { return new TableCase(i); });
  }
  return true;
}();

// ---- Cases with several steps ---------------------------------------------

// k8s docs: policies are additive and isolation lasts while a policy selects
// the pod; Cilium: deleting a policy bumps the revision and the endpoint
// leaves default deny. Deleting one policy restores exactly its part.
TEST_F(Conformance, DeletionRestoresReachability) {
  ASSERT_TRUE(c().importPolicies(R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: deny-x
  namespace: "{x}"
spec:
  endpointSelector: {}
  ingress:
  - {}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-y
  namespace: "{y}"
spec:
  podSelector: {}
  policyTypes: [Ingress]
)"));
  expectMatrix([](const Flow& f) { return !f.toIs("x/*") && !f.toIs("y/*"); });
  ASSERT_TRUE(c().deletePolicy("deny-x", "x"));
  expectMatrix([](const Flow& f) { return !f.toIs("y/*"); });
  ASSERT_TRUE(c().deletePolicy("deny-y", "y"));
  expectMatrix([](const Flow&) { return true; });
}

// Cilium docs, "Policy Audit Mode": with audit mode on an endpoint, would-be
// drops are forwarded (and reported as AUDIT), never dropped.
TEST_F(Conformance, AuditModeForwardsWouldBeDrops) {
  uint32_t id = c().endpointId({"x", "a"});
  auto on = c().curl("PATCH", fmt::format("/v1/endpoint/{}/config", id), R"({"PolicyAuditMode":"Enabled"})");
  ASSERT_EQ(on.exit_code, 0) << on.err;
  ASSERT_NE(on.out.find("\"id\""), std::string::npos) << on.out;
  ASSERT_TRUE(c().importPolicies(R"(apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-ingress
  namespace: "{x}"
spec:
  podSelector: {}
  policyTypes: [Ingress]
)"));
  // x/a audits, x/b and x/c enforce.
  expectMatrix([](const Flow& f) { return !(f.toIs("x/b") || f.toIs("x/c")); });
  auto off = c().curl("PATCH", fmt::format("/v1/endpoint/{}/config", id), R"({"PolicyAuditMode":"Default"})");
  ASSERT_EQ(off.exit_code, 0) << off.err;
  expectMatrix([](const Flow& f) { return !f.toIs("x/*"); });
}

// Cilium docs, "Policy Enforcement Modes": `always` enforces on every endpoint
// even when no rule selects it; `never` disables enforcement even when rules
// select it. Each needs the agent restarted with the flag (the pods survive
// a restart), so this runs last and puts the agent back as it was.
TEST_F(Conformance, EnablePolicyAlwaysAndNever) {
  auto restartWith = [&](const std::vector<std::string>& extra) { return c().restartWith(extra); };
  ASSERT_TRUE(restartWith({"--enable-policy", "always"}));
  ASSERT_TRUE(c().deleteAllPolicies());
  expectMatrix([](const Flow&) { return false; });

  ASSERT_TRUE(restartWith({"--enable-policy", "never"}));
  ASSERT_TRUE(c().importPolicies(R"(apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: deny-everything
spec:
  endpointSelector: {}
  ingress:
  - {}
  egress:
  - {}
)"));
  expectMatrix([](const Flow&) { return true; });

  // Cilium docs, "Policy Audit Mode" (agent-wide --policy-audit-mode): the
  // same deny-everything policy (policies survive restarts in the state dir)
  // would drop everything, but every would-be drop is forwarded.
  ASSERT_TRUE(restartWith({"--policy-audit-mode"}));
  expectMatrix([](const Flow&) { return true; });

  ASSERT_TRUE(restartWith({}));
  expectMatrix([](const Flow&) { return false; });
  ASSERT_TRUE(c().deleteAllPolicies());
  expectMatrix([](const Flow&) { return true; });
}

}  // namespace
}  // namespace membrane::testing::conformance
