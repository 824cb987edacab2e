// Manifests end to end (issue 5): `membrane apply` of the seed's Star Wars
// app, pods as processes, the ClusterIP service by name from inside a pod,
// eBPF load balancing over both deathstar replicas and after a pod is
// replaced, agent restart with running pods, logs, restarts, and a round
// trip that leaves nothing behind. Everything runs in the test's own
// Kubernetes namespace (it<pid>) so netns names never collide with other
// agents on the machine.
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <regex>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "src/api/http_client.h"
#include "tests/integration/agent_fixture.h"

namespace membrane::testing {
namespace {

using nlohmann::json;

// A process that runs (a zombie waiting for its new parent to reap it does not).
bool running(int pid) {
  if (kill(pid, 0) != 0) return false;
  std::string stat = readFileOrEmpty(fmt::format("/proc/{}/stat", pid));
  auto rp = stat.rfind(')');
  return rp != std::string::npos && rp + 2 < stat.size() && stat[rp + 2] != 'Z';
}

class ManifestsTest : public AgentFixture {
 protected:
  json getJson(const std::vector<std::string>& args) {
    std::vector<std::string> a = args;
    a.insert(a.end(), {"-n", ns_, "-o", "json"});
    auto r = cli(a);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    json j = json::parse(r.out, nullptr, false);
    return j.is_discarded() ? json::array() : j;
  }
  json pods() { return getJson({"get", "pods"}); }
  // Waits until exactly n pods exist and all are Running and ready.
  bool waitPodsReady(size_t n) {
    return waitFor(
        [&] {
          auto p = pods();
          if (p.size() != n) return false;
          for (const auto& x : p)
            if (!x.value("ready", false) || x.value("status", "") != "Running") return false;
          return true;
        },
        std::chrono::seconds(20));
  }
  std::vector<std::string> deathstars() {
    std::vector<std::string> out;
    for (const auto& p : pods())
      if (p.value("name", "").rfind("deathstar-", 0) == 0) out.push_back(p["name"]);
    return out;
  }
  // Requests the deathstar's server logged for POST /v1/request-landing.
  int landings(const std::string& pod) {
    auto r = cli({"logs", pod, "-n", ns_});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    int n = 0;
    std::istringstream in(r.out);
    std::string line;
    while (std::getline(in, line))
      if (line.find("\"POST /v1/request-landing HTTP/1.1\" 200") != std::string::npos) ++n;
    return n;
  }
  std::string writeFile(const std::string& name, const std::string& text) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }
  std::string app() { return source_dir_ + "/examples/starwars/http-sw-app.yaml"; }
};

TEST_F(ManifestsTest, StarWarsAppServiceLoadBalancingRestartAndRoundTrip) {
  startAgent();
  auto ap = cli({"apply", "-n", ns_, "-f", app()});
  ASSERT_EQ(ap.exit_code, 0) << ap.err;
  EXPECT_EQ(ap.out,
            "service/deathstar created\ndeployment.apps/deathstar created\npod/tiefighter created\npod/xwing created\n");
  ASSERT_TRUE(waitPodsReady(4)) << pods().dump(1);
  ASSERT_EQ(deathstars().size(), 2u);

  // Pod commands do not inherit the agent's blocked SIGTERM (else delete waits for SIGKILL).
  for (const auto& p : pods()) {
    std::string status = readFileOrEmpty(fmt::format("/proc/{}/status", p["pid"].get<int>()));
    EXPECT_NE(status.find("SigBlk:\t0000000000000000\n"), std::string::npos) << p["name"] << status;
  }

  // exec sees the pod as its command does: hostname and /etc/hosts.
  EXPECT_EQ(execIn("tiefighter", {"hostname"}).out, "tiefighter\n");

  // The seed's command, verbatim but for the namespace.
  const std::string fqdn = fmt::format("deathstar.{}.svc.cluster.local", ns_);
  auto land = execIn("tiefighter", {"curl", "-s", "--max-time", "5", "-XPOST", fqdn + "/v1/request-landing"});
  EXPECT_EQ(land.exit_code, 0) << land.err;
  EXPECT_EQ(land.out, "Ship landed\n");
  auto xw = execIn("xwing", {"curl", "-s", "--max-time", "5", "-XPOST", "deathstar/v1/request-landing"});
  EXPECT_EQ(xw.out, "Ship landed\n");

  // The service as `get` shows it: a ClusterIP from --service-cidr, both replicas as backends.
  auto svcs = getJson({"get", "services"});
  ASSERT_EQ(svcs.size(), 1u);
  std::string vip = svcs[0]["spec"]["clusterIP"];
  EXPECT_EQ(vip, service_cidr_.substr(0, service_cidr_.rfind('.')) + ".1");
  std::set<std::string> want_backends, have_backends;
  for (const auto& p : pods())
    if (p["name"].get<std::string>().rfind("deathstar-", 0) == 0) want_backends.insert(p["ip"].get<std::string>() + ":80");
  for (const auto& b : svcs[0]["status"]["backends"]) have_backends.insert(b["backend"]);
  EXPECT_EQ(have_backends, want_backends);

  // Load balancing: every request lands on exactly one replica, and both get
  // some (random choice per connection: P(one gets none of 40) = 2^-39).
  auto ds = deathstars();
  int before0 = landings(ds[0]), before1 = landings(ds[1]);
  const int kRequests = 40;
  int ok = 0;
  for (int i = 0; i < kRequests; ++i)
    ok += execIn("tiefighter", {"curl", "-s", "--max-time", "5", "-XPOST", "deathstar/v1/request-landing"}).out ==
          "Ship landed\n";
  EXPECT_EQ(ok, kRequests);
  int got0 = landings(ds[0]) - before0, got1 = landings(ds[1]) - before1;
  EXPECT_EQ(got0 + got1, kRequests) << got0 << " + " << got1;
  EXPECT_GE(got0, 1);
  EXPECT_GE(got1, 1);
  std::fprintf(stderr, "load balancing over %d requests: %s=%d %s=%d\n", kRequests, ds[0].c_str(), got0, ds[1].c_str(), got1);

  // logs -f follows: a request straight to one replica's pod IP shows up in
  // the running `logs -f` (which printed the earlier lines first).
  {
    std::string ip;
    for (const auto& p : pods())
      if (p["name"] == ds[1]) ip = p["ip"];
    Child follow = Child::spawn({bin("membrane"), "--socket", socket_, "logs", "-f", "-n", ns_, ds[1]}, dir_ + "/follow.log");
    auto countIn = [&](const std::string& text) {
      int n = 0;
      for (size_t pos = 0; (pos = text.find("\"POST /v1/request-landing HTTP/1.1\" 200", pos)) != std::string::npos; ++pos) ++n;
      return n;
    };
    const int already = landings(ds[1]);
    ASSERT_TRUE(waitFor([&] { return countIn(readFileOrEmpty(dir_ + "/follow.log")) == already; }, std::chrono::seconds(5)));
    EXPECT_EQ(execIn("tiefighter", {"curl", "-s", "--max-time", "5", "-XPOST", ip + "/v1/request-landing"}).out,
              "Ship landed\n");
    EXPECT_TRUE(waitFor([&] { return countIn(readFileOrEmpty(dir_ + "/follow.log")) == already + 1; },
                        std::chrono::seconds(5)))
        << readFileOrEmpty(dir_ + "/follow.log");
    follow.stop();
  }

  // A deleted replica is replaced; the backends follow.
  auto del = cli({"delete", "pod", ds[0], "-n", ns_});
  ASSERT_EQ(del.exit_code, 0) << del.err;
  ASSERT_TRUE(waitFor(
      [&] {
        auto now = deathstars();
        return now.size() == 2 && std::find(now.begin(), now.end(), ds[0]) == now.end();
      },
      std::chrono::seconds(20)));
  ASSERT_TRUE(waitPodsReady(4));
  ASSERT_TRUE(waitFor(
      [&] {
        std::set<std::string> want, have;
        for (const auto& p : pods())
          if (p["name"].get<std::string>().rfind("deathstar-", 0) == 0) want.insert(p["ip"].get<std::string>() + ":80");
        json svc = getJson({"get", "services"});  // kept: the loop below refers into it
        for (const auto& b : svc[0]["status"]["backends"]) have.insert(b["backend"]);
        return want == have;
      },
      std::chrono::seconds(10)))
      << pods().dump(1) << getJson({"get", "services"}).dump(1);
  auto ds2 = deathstars();
  int b0 = landings(ds2[0]), b1 = landings(ds2[1]);
  const int kAfter = 20;
  ok = 0;
  for (int i = 0; i < kAfter; ++i)
    ok += execIn("tiefighter", {"curl", "-s", "--max-time", "5", "-XPOST", fqdn + "/v1/request-landing"}).out ==
          "Ship landed\n";
  EXPECT_EQ(ok, kAfter);
  EXPECT_EQ(landings(ds2[0]) - b0 + landings(ds2[1]) - b1, kAfter);

  // A service added later resolves in pods that already run (their hosts
  // file is rewritten in place under the bind mount), with port -> targetPort.
  std::string svc2 = writeFile("svc2.yaml",
                               "apiVersion: v1\nkind: Service\nmetadata:\n  name: deathstar-alt\nspec:\n"
                               "  selector: {org: empire, class: deathstar}\n  ports:\n  - port: 8080\n"
                               "    targetPort: 80\n");
  ASSERT_EQ(cli({"apply", "-n", ns_, "-f", svc2}).exit_code, 0);
  ASSERT_TRUE(waitFor([&] {
    return execIn("tiefighter", {"curl", "-s", "--max-time", "2", "-XPOST", "deathstar-alt:8080/v1/request-landing"}).out ==
           "Ship landed\n";
  }, std::chrono::seconds(10)));
  ASSERT_EQ(cli({"delete", "-n", ns_, "-f", svc2}).exit_code, 0);
  auto gone = execIn("tiefighter", {"curl", "-s", "--max-time", "2", "deathstar-alt:8080/v1"});
  EXPECT_EQ(gone.exit_code, 6) << gone.out;  // curl: could not resolve host

  // Scale by re-apply: 3 replicas, then back to 2 (the original pods stay).
  std::string text = readFileOrEmpty(app());
  std::string scaled = std::regex_replace(text, std::regex("replicas: 2"), "replicas: 3");
  ASSERT_NE(scaled, text);
  auto sc = cli({"apply", "-n", ns_, "-f", writeFile("scaled.yaml", scaled)});
  EXPECT_EQ(sc.out, "service/deathstar configured\ndeployment.apps/deathstar configured\npod/tiefighter configured\n"
                    "pod/xwing configured\n");
  ASSERT_TRUE(waitPodsReady(5));
  ASSERT_EQ(cli({"apply", "-n", ns_, "-f", app()}).exit_code, 0);
  ASSERT_TRUE(waitPodsReady(4));
  auto ds3 = deathstars();
  std::sort(ds2.begin(), ds2.end());
  EXPECT_EQ(ds3, ds2);

  // Policy through apply: the backend's ingress policy sees the client pod's
  // identity behind the ClusterIP (xwing dropped, tiefighter lands).
  // The seed's policy file as written; -n puts it in the test's namespace.
  std::string pol = source_dir_ + "/examples/starwars/sw_l3_l4_policy.yaml";
  auto pa = cli({"apply", "-n", ns_, "-f", pol});
  ASSERT_EQ(pa.exit_code, 0) << pa.err;
  // kubectl's words: "created" on first import, "configured" when it replaces.
  EXPECT_EQ(pa.out, "ciliumnetworkpolicy.cilium.io/rule1 created\n");
  auto pa2 = cli({"apply", "-n", ns_, "-f", pol});
  ASSERT_EQ(pa2.exit_code, 0) << pa2.err;
  EXPECT_EQ(pa2.out, "ciliumnetworkpolicy.cilium.io/rule1 configured\n");
  auto denied = execIn("xwing", {"curl", "-s", "--max-time", "2", "-XPOST", fqdn + "/v1/request-landing"});
  EXPECT_EQ(denied.exit_code, 28) << denied.out;  // curl: operation timed out (the SYN was dropped)
  EXPECT_EQ(denied.out, "");
  land = execIn("tiefighter", {"curl", "-s", "--max-time", "5", "-XPOST", fqdn + "/v1/request-landing"});
  EXPECT_EQ(land.out, "Ship landed\n");
  auto pd = cli({"delete", "-n", ns_, "-f", pol});
  EXPECT_EQ(pd.exit_code, 0) << pd.err;
  EXPECT_EQ(pd.out, "ciliumnetworkpolicy.cilium.io \"rule1\" deleted\n");
  xw = execIn("xwing", {"curl", "-s", "--max-time", "5", "-XPOST", fqdn + "/v1/request-landing"});
  EXPECT_EQ(xw.out, "Ship landed\n");

  // Agent restart: the pods keep running (same pids) and are re-adopted.
  std::map<std::string, int> pids;
  for (const auto& p : pods()) pids[p["name"]] = p["pid"];
  EXPECT_EQ(stopAgent(), 0);
  for (const auto& [name, pid] : pids) EXPECT_TRUE(running(pid)) << name << " died with the agent";
  startAgent();
  ASSERT_TRUE(waitPodsReady(4));
  for (const auto& p : pods()) {
    EXPECT_EQ(p["pid"].get<int>(), pids[p["name"]]) << p.dump();
    EXPECT_EQ(p["restarts"].get<int>(), 0) << p.dump();
  }
  land = execIn("tiefighter", {"curl", "-s", "--max-time", "5", "-XPOST", fqdn + "/v1/request-landing"});
  EXPECT_EQ(land.out, "Ship landed\n");

  // Round trip: get -o json shows what apply made; delete leaves nothing.
  EXPECT_EQ(getJson({"get", "deployments"}).size(), 1u);
  auto rm = cli({"delete", "-n", ns_, "-f", app()});
  ASSERT_EQ(rm.exit_code, 0) << rm.err;
  EXPECT_EQ(rm.out, "pod \"tiefighter\" deleted\npod \"xwing\" deleted\ndeployment.apps \"deathstar\" deleted\n"
                    "service \"deathstar\" deleted\n");
  EXPECT_EQ(pods(), json::array());
  EXPECT_EQ(getJson({"get", "services"}), json::array());
  EXPECT_EQ(getJson({"get", "deployments"}), json::array());
  auto eps = cli({"endpoint", "list", "-o", "json"});
  EXPECT_EQ(json::parse(eps.out, nullptr, false), json::array()) << eps.out;
  for (const auto& [name, pid] : pids) EXPECT_FALSE(running(pid)) << name << " (pid " << pid << ") still runs";
  auto netns = run({"ip", "netns", "list"});
  EXPECT_EQ(netns.out.find(host_dev_ + "_" + ns_ + "_"), std::string::npos) << netns.out;
}

TEST_F(ManifestsTest, UnknownFieldIsRejectedWithItsPositionAndNothingIsApplied) {
  startAgent();
  std::string path = writeFile("bad.yaml",
                               "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n"
                               "  ports: [{port: 80}]\n---\n"
                               "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n"
                               "  containers:\n  - name: web\n    image: docker.io/cilium/starwars\n"
                               "    imagePullPolcy: Always\n");
  auto r = cli({"apply", "-n", ns_, "-f", path});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, fmt::format("manifests rejected, nothing applied: {0}:18:5: spec.containers[0].imagePullPolcy: "
                               "unknown field 'imagePullPolcy' (did you mean 'imagePullPolicy'?)\n"
                               "{0}:18:5: spec.containers[0].imagePullPolcy: unknown field 'imagePullPolcy' (did you "
                               "mean 'imagePullPolicy'?)\n",
                               path));
  EXPECT_EQ(pods(), json::array());
  EXPECT_EQ(getJson({"get", "services"}), json::array());

  // An image that is not built in, without a command: told how to fix it, nothing applied.
  path = writeFile("nginx.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n"
                                 "  containers:\n  - name: web\n    image: nginx:1.25\n");
  r = cli({"apply", "-n", ns_, "-f", path});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err,
            fmt::format("manifests rejected, nothing applied: {}: Pod {}/web: container 'web': image 'nginx:1.25' is not "
                        "built into membrane, which runs commands on the node and does not pull images; give the "
                        "command to run with `command:` (and `args:`), e.g. command: [\"python3\", \"-m\", "
                        "\"http.server\", \"80\"] (built-in images: cilium/starwars, tgraf/netperf, cilium/json-mock)\n",
                        path, ns_));
  EXPECT_EQ(pods(), json::array());
}

TEST_F(ManifestsTest, CrashingCommandIsRestartedPerPolicyAndCounted) {
  startAgent();
  // Fails twice (exit 3), then succeeds: OnFailure restarts it exactly twice.
  std::string counter = dir_ + "/runs";
  std::string path = writeFile(
      "crash.yaml",
      fmt::format("apiVersion: v1\nkind: Pod\nmetadata:\n  name: crasher\nspec:\n  restartPolicy: OnFailure\n"
                  "  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c]\n"
                  "    args: ['n=$(( $(cat {0} 2>/dev/null || echo 0) + 1 )); echo $n > {0}; echo run $n; "
                  "[ $n -ge 3 ] || exit 3']\n",
                  counter));
  auto r = cli({"apply", "-n", ns_, "-f", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(waitFor([&] { auto p = pods(); return p.size() == 1 && p[0]["status"] == "Completed"; },
                      std::chrono::seconds(20)))
      << pods().dump(1);
  auto p = pods()[0];
  EXPECT_EQ(p["restarts"].get<int>(), 2);
  EXPECT_EQ(p["last_exit_code"].get<int>(), 0);
  EXPECT_EQ(cli({"logs", "crasher", "-n", ns_}).out, "run 1\nrun 2\nrun 3\n");
  auto table = cli({"get", "pods", "-n", ns_});
  EXPECT_TRUE(std::regex_search(table.out, std::regex("\ncrasher +0/1 +Completed +2 +[0-9]+s\n"))) << table.out;
  EXPECT_EQ(cli({"delete", "-n", ns_, "-f", path}).exit_code, 0);
  EXPECT_EQ(pods(), json::array());
}

// A Namespace with labels in the saved state: the agent restores it on start
// and `membraned cleanup` (the fixture's TearDown) reads it. Both iterated the
// labels of a destroyed temporary (ASan: stack-use-after-scope on every start).
TEST_F(ManifestsTest, NamespaceLabelsSurviveRestartAndCleanup) {
  startAgent();
  std::string path = writeFile(
      "ns.yaml", fmt::format("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {0}\n  labels: {{team: red}}\n---\n"
                             "apiVersion: v1\nkind: Pod\nmetadata:\n  name: client\n  namespace: {0}\nspec:\n"
                             "  containers:\n  - name: c\n    image: tgraf/netperf\n",
                             ns_));
  auto r = cli({"apply", "-f", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(waitPodsReady(1));
  const std::string row = fmt::format("{} +Active +1 +kubernetes.io/metadata.name={},team=red\n", ns_, ns_);
  auto before = cli({"get", "namespaces"});
  EXPECT_EQ(before.exit_code, 0) << before.err;
  EXPECT_TRUE(std::regex_search(before.out, std::regex(row))) << before.out;
  EXPECT_EQ(stopAgent(), 0);
  startAgent();
  ASSERT_TRUE(waitPodsReady(1));
  auto after = cli({"get", "namespaces"});
  EXPECT_EQ(after.exit_code, 0) << after.err;
  EXPECT_TRUE(std::regex_search(after.out, std::regex(row))) << after.out;
}

}  // namespace
}  // namespace membrane::testing

namespace membrane::testing {
namespace {

// Issue 12: Cilium's service-account policies (9 of the policy files in
// Cilium's repository select io.cilium.k8s.policy.serviceaccount). Pods carry
// it from spec.serviceAccountName ("default" when absent; a metadata label
// cannot fake it), so a deny rule on an account denies, with an exact count,
// instead of selecting nothing and failing open.
TEST_F(ManifestsTest, ServiceAccountPolicyDeniesByAccountWithExactDropCount) {
  startAgent();
  const std::string pod =
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {0}\n  labels: {{{1}}}\nspec:\n{2}"
      "  containers:\n  - name: c\n    image: tgraf/netperf\n";
  std::string path = writeFile(
      "sa-pods.yaml",
      fmt::format(fmt::runtime(pod), "target", "app: target", "  serviceAccountName: deathstar\n") + "---\n" +
          fmt::format(fmt::runtime(pod), "rebel", "app: client", "  serviceAccount: rebels\n") + "---\n" +
          // Claims the rebels' account by a label: the spec's account wins.
          fmt::format(fmt::runtime(pod), "trooper", "'io.cilium.k8s.policy.serviceaccount': rebels", ""));
  auto r = cli({"apply", "-n", ns_, "-f", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(waitPodsReady(3));
  auto labelsOf = [&](const std::string& name) {
    auto g = cli({"endpoint", "get", name, "-n", ns_, "-o", "json"});
    json j = json::parse(g.out, nullptr, false);
    if (j.is_array() && !j.empty()) j = j[0];
    return j.is_object() ? j.value("labels", json::array()).dump() : g.out + g.err;
  };
  EXPECT_NE(labelsOf("target").find("k8s:io.cilium.k8s.policy.serviceaccount=deathstar"), std::string::npos)
      << labelsOf("target");
  EXPECT_NE(labelsOf("rebel").find("k8s:io.cilium.k8s.policy.serviceaccount=rebels"), std::string::npos)
      << labelsOf("rebel");
  EXPECT_NE(labelsOf("trooper").find("k8s:io.cilium.k8s.policy.serviceaccount=default"), std::string::npos)
      << labelsOf("trooper");

  // Everything in the namespace may reach the target, except the rebels' account.
  auto imp = importPolicy(fmt::format(
      "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: sa-deny\n  namespace: {}\n"
      "spec:\n  endpointSelector:\n    matchLabels:\n      io.cilium.k8s.policy.serviceaccount: deathstar\n"
      "  ingress:\n  - fromEndpoints:\n    - {{}}\n"
      "  ingressDeny:\n  - fromEndpoints:\n    - matchLabels:\n        io.cilium.k8s.policy.serviceaccount: rebels\n",
      ns_));
  ASSERT_EQ(imp.exit_code, 0) << imp.out << imp.err;
  std::string target_ip;
  for (const auto& p : pods())
    if (p.value("name", "") == "target") target_ip = p.value("ip", "");
  ASSERT_FALSE(target_ip.empty()) << pods().dump(1);

  const std::map<std::string, std::string> denied{{"direction", "INGRESS"}, {"reason", "Policy denied by denylist"}};
  const double before = metric("cilium_drop_count_total", denied);
  auto ping = execIn("rebel", {"ping", "-c", "4", "-i", "0.2", "-W", "1", target_ip});
  EXPECT_NE(ping.exit_code, 0) << ping.out;
  EXPECT_TRUE(waitFor([&] { return metric("cilium_drop_count_total", denied) == before + 4; }, std::chrono::seconds(5)))
      << metric("cilium_drop_count_total", denied) - before;
  // The default account (with the faked label) is allowed, and adds no drop.
  auto ok = execIn("trooper", {"ping", "-c", "2", "-i", "0.2", "-W", "2", target_ip});
  EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err;
  EXPECT_EQ(metric("cilium_drop_count_total", denied), before + 4);

  // A bad account name is refused with its location; nothing is applied.
  std::string bad = writeFile("bad-sa.yaml", fmt::format(fmt::runtime(pod), "bad", "app: x", "  serviceAccountName: Not_Valid\n"));
  auto br = cli({"apply", "-n", ns_, "-f", bad});
  EXPECT_NE(br.exit_code, 0);
  EXPECT_NE(br.err.find("bad-sa.yaml:7:23: spec.serviceAccountName: 'Not_Valid' is not a valid service account name"),
            std::string::npos)
      << br.err;
  EXPECT_EQ(pods().size(), 3u);
}

// Issue 10: a slow operation must not make a healthy agent look dead, nor
// stall the API. A pod that ignores SIGTERM keeps `delete pod` busy for 3 s
// (until SIGKILL); the wait holds no agent lock, so during it GET /v1/healthz
// (`membrane status`) and GET /v1/endpoint answer within 100 ms, and healthz
// never has to fall back to its cached figures.
TEST_F(ManifestsTest, ApiAnswersPromptlyWhileAPodIgnoresSigterm) {
  startAgent();
  std::string path = writeFile(
      "stubborn.yaml",
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stubborn\nspec:\n  containers:\n  - name: c\n"
      "    image: busybox\n    command: [sh, -c]\n    args: ['trap \"\" TERM; exec sleep 120']\n");
  ASSERT_EQ(cli({"apply", "-n", ns_, "-f", path}).exit_code, 0);
  ASSERT_TRUE(waitFor([&] { auto p = pods(); return p.size() == 1 && p[0]["status"] == "Running"; },
                      std::chrono::seconds(20)))
      << pods().dump(1);

  const auto t_delete = std::chrono::steady_clock::now();
  Child del = Child::spawn({bin("membrane"), "--socket", socket_, "delete", "pod", "stubborn", "-n", ns_},
                           dir_ + "/delete.log");
  // The delete is in progress: the pod shows as Terminating, as kubectl shows it.
  ASSERT_TRUE(waitFor([&] { auto p = pods(); return p.size() == 1 && p[0]["status"] == "Terminating"; },
                      std::chrono::seconds(3)))
      << pods().dump(1);
  api::HttpClient client(socket_, std::chrono::seconds(5));
  for (int i = 0; i < 5; ++i) {
    for (const char* target : {"/v1/healthz", "/v1/endpoint"}) {
      auto t0 = std::chrono::steady_clock::now();
      auto r = client.request("GET", target);
      auto took = std::chrono::steady_clock::now() - t0;
      ASSERT_TRUE(r.ok()) << r.error().message;
      EXPECT_EQ(r->status, 200) << target;
      EXPECT_LT(took, std::chrono::milliseconds(100))
          << target << " took " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms";
      if (std::string(target) == "/v1/healthz") {
        auto j = nlohmann::json::parse(r->body);
        EXPECT_EQ(j["status"], "ok") << r->body;
        EXPECT_FALSE(j.contains("busy_seconds")) << "healthz found the agent lock taken: " << r->body;
      }
    }
  }
  // Signal 0: nothing sent, only waits (up to 10 s) for the delete's exit code.
  EXPECT_EQ(del.stop(0, std::chrono::seconds(10)), 0) << readFileOrEmpty(dir_ + "/delete.log");
  const auto took = std::chrono::steady_clock::now() - t_delete;
  EXPECT_EQ(readFileOrEmpty(dir_ + "/delete.log"), "pod \"stubborn\" deleted\n");
  EXPECT_GE(took, std::chrono::milliseconds(2900)) << "the pod got its 3 s grace period before SIGKILL";
  EXPECT_EQ(pods().size(), 0u);
}

// A delete waits for the pods it stops, not for another call's slow stop:
// with "stubborn" (ignores SIGTERM) terminating, deleting "quick" (stops on
// SIGTERM) answers as soon as quick is gone.
TEST_F(ManifestsTest, DeleteWaitsOnlyForItsOwnPods) {
  startAgent();
  std::string path = writeFile(
      "two.yaml",
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stubborn\nspec:\n  containers:\n  - name: c\n"
      "    image: busybox\n    command: [sh, -c]\n    args: ['trap \"\" TERM; exec sleep 120']\n"
      "---\n"
      "apiVersion: v1\nkind: Pod\nmetadata:\n  name: quick\nspec:\n  containers:\n  - name: c\n"
      "    image: busybox\n    command: [sleep, '120']\n");
  ASSERT_EQ(cli({"apply", "-n", ns_, "-f", path}).exit_code, 0);
  ASSERT_TRUE(waitFor(
      [&] {
        auto p = pods();
        return p.size() == 2 && p[0]["status"] == "Running" && p[1]["status"] == "Running";
      },
      std::chrono::seconds(20)))
      << pods().dump(1);

  const auto t_stubborn = std::chrono::steady_clock::now();
  Child del = Child::spawn({bin("membrane"), "--socket", socket_, "delete", "pod", "stubborn", "-n", ns_},
                           dir_ + "/delete.log");
  auto status_of = [&](const std::string& name) {
    for (const auto& p : pods())
      if (p["name"] == name) return p["status"].get<std::string>();
    return std::string("<gone>");
  };
  ASSERT_TRUE(waitFor([&] { return status_of("stubborn") == "Terminating"; }, std::chrono::seconds(3)))
      << pods().dump(1);

  const auto t_quick = std::chrono::steady_clock::now();
  auto r = cli({"delete", "pod", "quick", "-n", ns_});
  const auto quick_took = std::chrono::steady_clock::now() - t_quick;
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out, "pod \"quick\" deleted\n");
  EXPECT_EQ(status_of("quick"), "<gone>");
  EXPECT_EQ(status_of("stubborn"), "Terminating") << "quick's delete answered after stubborn's stop";
  EXPECT_LT(quick_took, std::chrono::milliseconds(1500))
      << "deleting quick took " << std::chrono::duration_cast<std::chrono::milliseconds>(quick_took).count()
      << " ms: it waited for stubborn's grace period";

  EXPECT_EQ(del.stop(0, std::chrono::seconds(10)), 0) << readFileOrEmpty(dir_ + "/delete.log");
  EXPECT_GE(std::chrono::steady_clock::now() - t_stubborn, std::chrono::milliseconds(2900));
  EXPECT_EQ(pods().size(), 0u);
}

}  // namespace
}  // namespace membrane::testing
