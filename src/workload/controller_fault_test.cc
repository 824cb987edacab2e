// workload::Controller against the in-memory kernel fakes, with a failure
// injected at every kernel call and state-file write of each operation in
// turn (no root).
//
// For each operation: a reference run without faults counts the operation's
// fallible calls (pod networks, datapath maps, process spawns, state files)
// and then settles (the clock moves on, tick() runs); then, for N = 1..count,
// a fresh world is built the same way and the Nth call fails with EIO. What
// the controller promises (controller.h, "Failures"): a call that fails
// changes nothing (the fakes, every state file, the controller's and the
// endpoint manager's views are as before) and a retry succeeds; a call that
// succeeds although a step failed leaves nothing half done (no endpoint
// without its pod, no process without its pod) and tick() finishes it. Either
// way the settled world equals the reference.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include <fmt/format.h>

#include "membrane/identity.h"
#include "membrane/metrics.h"
#include "membrane/policy_repository.h"
#include "src/endpoint/manager.h"
#include "src/endpoint/state_store.h"
#include "src/kernel/fake/describe.h"
#include "src/kernel/fake/fake_datapath_maps.h"
#include "src/kernel/fake/fake_pod_networks.h"
#include "src/kernel/fake/fake_process_runner.h"
#include "src/kernel/fake/faults.h"
#include "src/workload/controller.h"

namespace membrane::workload {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kPod = R"(apiVersion: v1
kind: Pod
metadata:
  name: deathstar
  namespace: default
  labels:
    org: empire
spec:
  containers:
  - name: c
    image: busybox
    command: ["sleep", "infinity"]
    ports:
    - containerPort: 80
)";

constexpr const char* kService = R"(apiVersion: v1
kind: Service
metadata:
  name: deathstar
  namespace: default
spec:
  selector:
    org: empire
  ports:
  - port: 80
)";

std::string deployment(int replicas) {
  return fmt::format(R"(apiVersion: apps/v1
kind: Deployment
metadata:
  name: tiefighter
  namespace: default
spec:
  replicas: {}
  selector:
    matchLabels:
      org: empire
  template:
    metadata:
      labels:
        org: empire
    spec:
      containers:
      - name: c
        image: busybox
        command: ["sleep", "infinity"]
        ports:
        - containerPort: 80
)",
                     replicas);
}

Manifests manifests(const std::string& yaml) {
  auto r = parseManifests(yaml, "test.yaml");
  MB_CHECK(r.ok());
  return r.manifests;
}

// Everything a failed call must leave as it was (or a settled retry must complete).
struct Snapshot {
  std::string maps, net, procs, files, endpoints, pods, deployments, services;
};

struct World {
  explicit World(const std::string& dir) : state_dir(dir) {
    net.on_link_gone = [this](uint32_t ifx) { maps.linkGone(ifx); };
    maps.setLinkExists([this](uint32_t ifx) { return net.linkExists(ifx); });
    net.host_addresses = {htonl(0x7f000001)};
    restartManager();
    restartController();
  }
  // An agent restart: a new endpoint manager over the same kernel and state dir.
  void restartManager() {
    wl.reset();
    mgr.reset();
    ids = std::make_unique<identity::IdentityAllocator>();
    endpoint::ManagerConfig mc;
    mc.state_dir = state_dir;
    mc.pod_cidr = endpoint::Cidr4::parse("10.96.0.0/24").value();
    mc.host_device = "mbc_host";
    mgr = std::make_unique<endpoint::Manager>(mc, fdp, fnet, *ids, repo, metrics, files);
  }
  // A new controller (not initialized).
  void restartController() {
    wl.reset();
    ControllerConfig cc;
    cc.state_dir = state_dir;
    cc.service_cidr = endpoint::Cidr4::parse("10.95.0.0/24").value();
    cc.now = [this] { return now; };
    // Names by rule: the lowest free one (the controller skips taken names;
    // each call starts counting again), so a retried creation gets the name
    // the reference run got.
    cc.name_suffix = [this] { return fmt::format("{:05d}", suffix++); };
    wl = std::make_unique<Controller>(cc, *mgr, fdp, fnet, fprocs, files);
  }
  // Runs one top-level call.
  template <typename F>
  auto call(F&& f) {
    suffix = 0;
    return f();
  }
  // What an agent does between calls: time passes and tick() runs (enough for
  // a create retry (5 s), back-offs and stop grace periods (3 s)). The
  // regeneration completes what a best-effort one after an endpoint's
  // creation left not-ready (endpoint::Manager::create); the agent runs one
  // on the next policy change.
  void settle() {
    for (int i = 0; i < 3; ++i) {
      now += std::chrono::seconds(10);
      call([&] { wl->tick(); });
    }
    MB_CHECK(mgr->regenerateAll().ok());
  }

  Snapshot snapshot() const {
    Snapshot s;
    s.maps = kernel::describe(maps.state());
    s.net = kernel::describe(net.state());
    s.procs = kernel::describe(procs.state());
    std::vector<fs::path> paths;
    for (const auto& e : fs::recursive_directory_iterator(state_dir))
      if (e.is_regular_file()) paths.push_back(e.path());
    std::sort(paths.begin(), paths.end());
    for (const auto& p : paths) {
      auto text = endpoint::readFile(p.string());
      s.files += fs::relative(p, state_dir).string() + ":\n" + (text ? *text : "unreadable") + "\n";
    }
    for (const auto* ep : mgr->list()) s.endpoints += endpoint::toApiJson(*ep).dump() + "\n";
    for (const auto& p : wl->podsJson("")) s.pods += p.dump() + "\n";
    s.deployments = wl->deploymentsJson("").dump();
    s.services = wl->servicesJson("").dump();
    // Each world has its own state dir.
    for (std::string* t : {&s.net, &s.procs, &s.files, &s.endpoints, &s.pods})
      for (size_t at; (at = t->find(state_dir)) != std::string::npos;) t->replace(at, state_dir.size(), "$STATE");
    return s;
  }

  std::string state_dir;
  Clock::time_point now = Clock::time_point() + std::chrono::hours(1);
  int suffix = 0;
  kernel::FakeDatapathMaps maps;
  kernel::FakePodNetworks net;
  kernel::FakeProcessRunner procs;
  kernel::FaultInjector faults;
  kernel::FaultyDatapathMaps fdp{maps, faults};
  kernel::FaultyPodNetworks fnet{net, faults};
  kernel::FaultyProcessRunner fprocs{procs, faults};
  kernel::FaultyStateFiles files{endpoint::diskStateFiles(), faults};
  std::unique_ptr<identity::IdentityAllocator> ids;
  policy::Repository repo;
  metrics::AgentMetrics metrics;
  std::unique_ptr<endpoint::Manager> mgr;
  std::unique_ptr<Controller> wl;
};

void expectSame(const Snapshot& a, const Snapshot& b, const std::string& why, bool ignore_created = false) {
  auto n = [&](const std::string& s) { return ignore_created ? kernel::withoutCreated(s) : s; };
  EXPECT_EQ(a.maps, b.maps) << why;
  EXPECT_EQ(a.net, b.net) << why;
  EXPECT_EQ(a.procs, b.procs) << why;
  EXPECT_EQ(n(a.files), n(b.files)) << why;
  EXPECT_EQ(n(a.endpoints), n(b.endpoints)) << why;
  EXPECT_EQ(n(a.pods), n(b.pods)) << why;
  EXPECT_EQ(n(a.deployments), n(b.deployments)) << why;
  EXPECT_EQ(n(a.services), n(b.services)) << why;
}

// Nothing half done: every endpoint belongs to a listed pod (and each listed
// pod that is not a creation failure has its endpoint), every running
// process is a listed pod's (and each running pod's process runs), every pod
// network is an endpoint's.
void expectWhole(World& w, const std::string& why) {
  std::set<std::string> endpoints, pods;
  std::set<int64_t> running, pids;
  for (const auto* ep : w.mgr->list()) endpoints.insert(ep->ns + "/" + ep->name);
  for (const auto& p : w.wl->podsJson("")) {
    if (p["status"] == "CreateContainerError") continue;
    pods.insert(p["namespace"].get<std::string>() + "/" + p["name"].get<std::string>());
    // A terminating pod's process got SIGTERM: it may be gone already (not reaped yet).
    if (p["pid"].get<int64_t>() > 0 && p["status"] != "Terminating") pids.insert(p["pid"].get<int64_t>());
  }
  for (const auto& [pid, proc] : w.procs.state())
    if (proc.running) running.insert(pid);
  EXPECT_EQ(endpoints, pods) << why;
  EXPECT_EQ(running, pids) << why;
  // A delete that failed halfway leaves its endpoint disconnecting, with or
  // without its network, until a retry (endpoint::Manager::remove).
  std::set<std::string> networks, live, all;
  for (const auto& [netns, pod] : w.net.state().pods) networks.insert(netns);
  for (const auto* ep : w.mgr->list()) {
    all.insert(ep->netns_name);
    if (ep->state != endpoint::EndpointState::Disconnecting) live.insert(ep->netns_name);
  }
  EXPECT_TRUE(std::includes(networks.begin(), networks.end(), live.begin(), live.end())) << why;
  EXPECT_TRUE(std::includes(all.begin(), all.end(), networks.begin(), networks.end())) << why;
}

// A start that failed counts as a restart (as in Kubernetes) and leaves its
// error in the pod's log; the retried start comes after the other pods' and
// gets another pid. Those are the differences a spawn fault leaves once settled.
void forgetFailedStart(Snapshot& s) {
  std::vector<std::string> procs;
  std::istringstream lines(std::regex_replace(s.procs, std::regex(R"(process \d+ start \d+ )"), "process "));
  for (std::string line; std::getline(lines, line);) procs.push_back(line);
  std::sort(procs.begin(), procs.end());
  s.procs.clear();
  for (const auto& line : procs) s.procs += line + "\n";
  for (std::string* t : {&s.files, &s.pods}) {
    *t = std::regex_replace(*t, std::regex(R"re("(pid|start_time)":\s*\d+)re"), R"("$1":_)");
    *t = std::regex_replace(*t, std::regex(R"("restarts":\s*\d+)"), R"("restarts":_)");
    *t = std::regex_replace(*t, std::regex(R"("last_exit(_code)?":\s*-?\d+)"), R"("last_exit":_)");
    *t = std::regex_replace(*t, std::regex(R"("status":"CrashLoopBackOff")"), R"("status":"Running")");
    *t = std::regex_replace(*t, std::regex("pods/[^/\n]+/log:\nmembrane: injected fault: spawn call \\d+: Input/output error\n\n"), "");
  }
}

struct FaultCase {
  std::function<void(World&)> setup;
  std::function<Status(World&)> op;
  std::string context;  // in the error of a failed call
  // What a failed call leaves; default: nothing changed.
  std::function<void(World&, const Snapshot& before, const std::string& why)> on_failure;
  // How to try again (default: the operation again).
  std::function<Status(World&)> retry;
  // What the settled world must be when it may differ from the reference
  // (default: the reference).
  std::function<void(World&, const std::string& why)> settled;
};

class ControllerFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/membrane-wl-fault-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
  }
  void TearDown() override { fs::remove_all(root_); }

  std::unique_ptr<World> world(const std::function<void(World&)>& setup) {
    auto dir = fmt::format("{}/w{}", root_, ++worlds_);
    fs::create_directories(dir);
    auto w = std::make_unique<World>(dir);
    auto st = w->mgr->init();
    EXPECT_TRUE(st.ok()) << st.error().message;
    st = w->call([&] { return w->wl->init(); });
    EXPECT_TRUE(st.ok()) << st.error().message;
    setup(*w);
    w->faults.clear();
    return w;
  }

  // Runs c with each of its fallible calls failing in turn; returns the calls
  // ("<n>:<method>") whose failure the operation tolerated (returned success).
  std::vector<std::string> everyFault(const FaultCase& c) {
    std::vector<std::string> tolerated;
    Snapshot ref;
    size_t calls = 0;
    {
      auto w = world(c.setup);
      auto st = w->call([&] { return c.op(*w); });
      EXPECT_TRUE(st.ok()) << st.error().message;
      calls = w->faults.calls().size();
      w->settle();
      ref = w->snapshot();
    }
    EXPECT_GT(calls, 0u);
    for (size_t n = 1; n <= calls; ++n) {
      auto w = world(c.setup);
      const Snapshot before = w->snapshot();
      w->faults.failNth(n, EIO);
      Status st = w->call([&] { return c.op(*w); });
      if (!w->faults.fired()) {
        ADD_FAILURE() << "call " << n << " of " << calls << " never happened (the operation is not deterministic)";
        continue;
      }
      const std::string method = *w->faults.fired();
      const std::string why = fmt::format("{}: fault at call {} ({})", c.context, n, method);
      w->faults.clear();
      if (!st.ok()) {
        EXPECT_EQ(st.error().code, EIO) << why;
        EXPECT_THAT(st.error().message, HasSubstr(c.context)) << why;
        EXPECT_THAT(st.error().message, HasSubstr(fmt::format("injected fault: {} call {}", method, n))) << why;
        if (c.on_failure) {
          c.on_failure(*w, before, why);
        } else {
          expectSame(before, w->snapshot(), why);
        }
        auto r = w->call([&] { return c.retry ? c.retry(*w) : c.op(*w); });
        EXPECT_TRUE(r.ok()) << why << ": retry: " << r.error().message;
      } else {
        tolerated.push_back(fmt::format("{}:{}", n, method));
        expectWhole(*w, why);
      }
      w->settle();
      if (c.settled) {
        c.settled(*w, why + ", then settled");
        continue;
      }
      Snapshot now = w->snapshot();
      Snapshot want = ref;
      if (method == "spawn") {
        forgetFailedStart(now);
        forgetFailedStart(want);
      }
      expectSame(want, now, why + ", then settled", /*ignore_created=*/true);
    }
    return tolerated;
  }

  std::string root_;
  int worlds_ = 0;
};

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : " ") + s;
  return out;
}

Status applied(World& w, const std::string& yaml) {
  auto r = w.wl->apply(manifests(yaml));
  return r.ok() ? okStatus() : Status(r.error());
}

// The pods' processes listen on their ports: ready, so service backends.
void listenAll(World& w) {
  std::vector<pid_t> pids;
  for (const auto& [pid, p] : w.procs.state())
    if (p.running && !p.listening.count(80)) pids.push_back(pid);
  for (pid_t pid : pids) w.procs.listen(pid, 80);
}

Status ticked(World& w) {
  w.wl->tick();
  return okStatus();
}

TEST_F(ControllerFaultTest, ApplyPodAndServiceFailsAtEveryStep) {
  FaultCase c;
  c.setup = [](World&) {};
  c.op = [](World& w) { return applied(w, std::string(kPod) + "---\n" + kService); };
  c.context = "save";
  auto tolerated = everyFault(c);
  // The save of the desired state fails the call; what the reconcile cannot
  // do (the pod's endpoint, its process, the service frontend, the runtime
  // record) is retried by tick().
  EXPECT_EQ(joined(tolerated), "2:createPodNetwork 3:syncPolicy 4:upsertEndpoint 5:upsertIpcache 6:attach 7:writeStateFile 8:syncPolicy 9:spawn 10:upsertService 11:writeStateFile");
}

TEST_F(ControllerFaultTest, ApplyDeploymentFailsAtEveryStep) {
  FaultCase c;
  c.setup = [](World&) {};
  c.op = [](World& w) { return applied(w, deployment(2)); };
  c.context = "save";
  auto tolerated = everyFault(c);
  EXPECT_EQ(joined(tolerated), "2:createPodNetwork 3:syncPolicy 4:upsertEndpoint 5:upsertIpcache 6:attach 7:writeStateFile 8:syncPolicy 9:spawn 10:createPodNetwork 11:syncPolicy 12:upsertEndpoint 13:upsertIpcache 14:attach 15:writeStateFile 16:spawn 17:writeStateFile");
}

TEST_F(ControllerFaultTest, ScaleDeploymentUpFailsAtEveryStep) {
  FaultCase c;
  c.setup = [](World& w) { ASSERT_TRUE(w.call([&] { return applied(w, deployment(1)); }).ok()); };
  c.op = [](World& w) { return applied(w, deployment(3)); };
  c.context = "save";
  auto tolerated = everyFault(c);
  EXPECT_EQ(joined(tolerated), "2:createPodNetwork 3:syncPolicy 4:upsertEndpoint 5:upsertIpcache 6:attach 7:writeStateFile 8:spawn 9:createPodNetwork 10:syncPolicy 11:upsertEndpoint 12:upsertIpcache 13:attach 14:writeStateFile 15:spawn 16:writeStateFile");
}

TEST_F(ControllerFaultTest, ScaleDeploymentDownFailsAtEveryStep) {
  FaultCase c;
  c.setup = [](World& w) { ASSERT_TRUE(w.call([&] { return applied(w, deployment(3)); }).ok()); };
  c.op = [](World& w) { return applied(w, deployment(1)); };
  c.context = "save";
  auto tolerated = everyFault(c);
  EXPECT_EQ(joined(tolerated), "2:writeStateFile");
}

TEST_F(ControllerFaultTest, ApplyServiceOverReadyPodsFailsAtEveryStep) {
  FaultCase c;
  c.setup = [](World& w) {
    ASSERT_TRUE(w.call([&] { return applied(w, deployment(2)); }).ok());
    listenAll(w);
    w.settle();
  };
  c.op = [](World& w) { return applied(w, std::string(kService)); };
  c.context = "save";
  auto tolerated = everyFault(c);
  EXPECT_EQ(joined(tolerated), "2:upsertService 3:writeStateFile");
}

TEST_F(ControllerFaultTest, DeleteFailsAtEveryStep) {
  FaultCase c;
  c.setup = [](World& w) {
    ASSERT_TRUE(w.call([&] { return applied(w, std::string(kPod) + "---\n" + kService + "---\n" + deployment(1)); }).ok());
    listenAll(w);
    w.settle();
  };
  c.op = [](World& w) {
    auto r = w.wl->remove(manifests(std::string(kPod) + "---\n" + kService + "---\n" + deployment(1)));
    return r.ok() ? okStatus() : Status(r.error());
  };
  c.context = "save";
  auto tolerated = everyFault(c);
  EXPECT_EQ(joined(tolerated), "2:deleteService 3:writeStateFile");
}

TEST_F(ControllerFaultTest, DeletePodFailsAtEveryStep) {
  FaultCase c;
  c.setup = [](World& w) {
    ASSERT_TRUE(w.call([&] { return applied(w, std::string(kPod) + "---\n" + deployment(1)); }).ok());
  };
  c.op = [](World& w) { return w.wl->deletePod("default", "deathstar"); };
  c.context = "delete pod default/deathstar";
  auto tolerated = everyFault(c);
  EXPECT_EQ(joined(tolerated), "2:writeStateFile");
}

TEST_F(ControllerFaultTest, DeleteDeploymentPodFailsAtEveryStepAndItIsReplaced) {
  FaultCase c;
  c.setup = [](World& w) {
    ASSERT_TRUE(w.call([&] { return applied(w, std::string(kPod) + "---\n" + deployment(1)); }).ok());
  };
  c.op = [](World& w) { return w.wl->deletePod("default", "tiefighter-00000"); };
  c.context = "delete pod default/tiefighter-00000";
  // The replacement's name and address depend on whether it was created
  // while the old pod still held them (the reference) or after (a retry):
  // one replacement, running, whatever it is called.
  c.settled = [](World& w, const std::string& why) {
    expectWhole(w, why);
    auto pods = w.wl->podsJson("default");
    ASSERT_EQ(pods.size(), 2u) << why << pods.dump();
    EXPECT_EQ(pods[0]["name"], "deathstar") << why;
    EXPECT_EQ(pods[1]["owner"], "tiefighter") << why;
    for (const auto& p : pods) EXPECT_EQ(p["status"], "Running") << why << p.dump();
    EXPECT_EQ(w.mgr->list().size(), 2u) << why;
    EXPECT_EQ(w.procs.state().size(), 2u) << why;
    auto state = Controller::parseState(endpoint::readFile(w.state_dir + "/workloads.json").value());
    ASSERT_TRUE(state.ok()) << why;
    EXPECT_EQ(state->instances.size(), 2u) << why;
    EXPECT_EQ(state->terminating.size(), 0u) << why;
  };
  auto tolerated = everyFault(c);
  EXPECT_EQ(joined(tolerated), "2:createPodNetwork 3:syncPolicy 4:upsertEndpoint 5:upsertIpcache 6:attach 7:writeStateFile 8:spawn 9:writeStateFile");
}

TEST_F(ControllerFaultTest, FinishTerminationsFailsAtEveryStep) {
  FaultCase c;
  c.setup = [](World& w) {
    ASSERT_TRUE(w.call([&] { return applied(w, std::string(kPod) + "---\n" + kService + "---\n" + deployment(1)); }).ok());
    listenAll(w);
    w.settle();
    ASSERT_TRUE(w.call([&] { return w.wl->deletePod("default", "deathstar"); }).ok());
    ASSERT_TRUE(w.call([&] { return w.wl->deletePod("default", "tiefighter-00000"); }).ok());
  };
  c.op = [](World& w) {
    w.wl->finishTerminations();
    return okStatus();
  };
  c.context = "finish terminations";
  auto tolerated = everyFault(c);
  EXPECT_EQ(joined(tolerated), "1:deleteIpcache 2:deleteEndpoint 3:deletePolicy 4:flushCtFor 5:deletePodNetwork 6:removeStateFile 7:deleteIpcache 8:deleteEndpoint 9:deletePolicy 10:flushCtFor 11:deletePodNetwork 12:removeStateFile 13:writeStateFile");
}

TEST_F(ControllerFaultTest, RestartOfACrashedPodFailsAtEveryStep) {
  FaultCase c;
  c.setup = [](World& w) {
    ASSERT_TRUE(w.call([&] { return applied(w, std::string(kPod) + "---\n" + kService); }).ok());
    listenAll(w);
    w.settle();
    w.procs.exit(w.procs.state().begin()->first, 1);
    w.call([&] { w.wl->tick(); });  // reaped: Waiting, restarted after 1 s
    w.now += std::chrono::seconds(2);
  };
  c.op = ticked;
  c.context = "tick";
  auto tolerated = everyFault(c);
  EXPECT_EQ(joined(tolerated), "1:spawn 2:writeStateFile");
}

TEST_F(ControllerFaultTest, RestoreFailsAtEveryStepAndANewStartRestores) {
  FaultCase c;
  c.setup = [](World& w) {
    ASSERT_TRUE(w.call([&] { return applied(w, std::string(kPod) + "---\n" + kService + "---\n" + deployment(2)); }).ok());
    listenAll(w);
    w.settle();
    // The agent restarts: the pods' processes outlive it.
    for (const auto& [pid, p] : w.procs.state()) w.procs.disown(pid);
    w.restartManager();
    ASSERT_TRUE(w.mgr->init().ok());
    w.restartController();
  };
  c.op = [](World& w) { return w.wl->init(); };
  c.context = "";
  c.on_failure = [](World& w, const Snapshot& before, const std::string& why) {
    const Snapshot now = w.snapshot();
    EXPECT_EQ(now.files, before.files) << why;
    EXPECT_EQ(now.procs, before.procs) << why;
    EXPECT_EQ(now.net, before.net) << why;
  };
  c.retry = [](World& w) {
    w.restartController();
    return w.wl->init();
  };
  auto tolerated = everyFault(c);
  EXPECT_EQ(joined(tolerated), "4:upsertService");
}

// Issue 10: a pod phase the controller does not know (a hand edit, a newer
// agent's file) fails the start with the file and the field, and the file is
// left as it was.
TEST_F(ControllerFaultTest, UnknownPodPhaseInTheStateFileNamesFileAndField) {
  auto w = world([](World& w) { ASSERT_TRUE(w.call([&] { return applied(w, kPod); }).ok()); });
  const std::string path = w->state_dir + "/workloads.json";
  auto j = nlohmann::json::parse(endpoint::readFile(path).value());
  ASSERT_EQ(j["instances"][0]["phase"], "Running");
  EXPECT_EQ(w->wl->podJson("default", "deathstar").value()["phase"], "Running");
  j["instances"][0]["phase"] = "Evicted";
  ASSERT_TRUE(endpoint::writeFileAtomic(path, j.dump(1)).ok());
  w->restartController();
  auto st = w->wl->init();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, EINVAL);
  EXPECT_THAT(st.error().message,
              ::testing::StartsWith(path + ": instances[0].phase: unknown pod phase 'Evicted' (expected Pending, "
                                           "Running, Waiting, Succeeded or Failed); fix the field"));
  EXPECT_EQ(endpoint::readFile(path).value(), j.dump(1));
}

}  // namespace
}  // namespace membrane::workload
