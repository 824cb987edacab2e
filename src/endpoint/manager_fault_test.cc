// endpoint::Manager against the in-memory kernel fakes, with a failure
// injected at every kernel call and state-file write of each operation in turn (no root).
//
// For each operation: a reference run without faults counts its fallible
// kernel calls; then, for N = 1..count, a fresh world is built the same way,
// the Nth call fails with EIO, and the test checks what the manager promises
// for that operation (header contracts in manager.h): the error names the
// step, what must not change did not change, and a retry without faults
// gives exactly the reference result.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "membrane/identity.h"
#include "membrane/ipv4.h"
#include "membrane/labels.h"
#include "membrane/metrics.h"
#include "membrane/policy.h"
#include "membrane/policy_repository.h"
#include "src/endpoint/manager.h"
#include "src/endpoint/state_store.h"
#include "src/kernel/fake/describe.h"
#include "src/kernel/fake/fake_datapath_maps.h"
#include "src/kernel/fake/fake_pod_networks.h"
#include "src/kernel/fake/faults.h"

namespace membrane::endpoint {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

// empire pods: ingress from empire on 80/TCP, egress to 192.0.2.0/24 (a CIDR identity).
constexpr const char* kPolicy = R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: empire
  namespace: default
spec:
  endpointSelector:
    matchLabels:
      org: empire
  ingress:
  - fromEndpoints:
    - matchLabels:
        org: empire
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
  egress:
  - toCIDR:
    - 192.0.2.0/24
)";

// A second policy, for regeneration: alliance pods may reach empire's 443.
constexpr const char* kPolicy2 = R"(apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: alliance
  namespace: default
spec:
  endpointSelector:
    matchLabels:
      org: alliance
  egress:
  - toEndpoints:
    - matchLabels:
        org: empire
    toPorts:
    - ports:
      - port: "443"
        protocol: TCP
  - toCIDR:
    - 198.51.100.7/32
)";

labels::LabelSet userLabels(std::string_view text) { return labels::parseLabels(text).value(); }

using kernel::describe;
using kernel::withoutCreated;

// Everything a failed call must leave as it was (or a retry must complete).
struct Snapshot {
  std::string maps, net, files, endpoints, identities, namespaces;
  uint64_t generation = 0;
};

struct World {
  explicit World(const std::string& dir) : state_dir(dir) {
    net.on_link_gone = [this](uint32_t ifx) { maps.linkGone(ifx); };
    maps.setLinkExists([this](uint32_t ifx) { return net.linkExists(ifx); });
    net.host_addresses = {htonl(0x7f000001), htonl(0xc0a80105)};  // 127.0.0.1, 192.168.1.5
    auto p = policy::parsePolicies(kPolicy, "empire.yaml");
    MB_CHECK(p.ok());
    MB_CHECK(repo.import(p.policies).ok());
    restart();
  }
  // A new manager (and identity allocator) over the same kernel and state dir: an agent restart.
  void restart() {
    mgr.reset();
    ids = std::make_unique<identity::IdentityAllocator>();
    ManagerConfig mc;
    mc.state_dir = state_dir;
    mc.pod_cidr = Cidr4::parse("10.99.0.0/24").value();
    mc.host_device = "mbf_host";
    mc.bpf_root = "/sys/fs/bpf/membrane-fault-test";
    mc.unlocked = unlocked;
    mgr = std::make_unique<Manager>(mc, fdp, fnet, *ids, repo, metrics, files);
  }

  Snapshot snapshot() const {
    Snapshot s;
    s.maps = describe(maps.state());
    s.net = describe(net.state());
    std::vector<fs::path> paths;
    for (const auto& e : fs::recursive_directory_iterator(state_dir))
      if (e.is_regular_file()) paths.push_back(e.path());
    std::sort(paths.begin(), paths.end());
    for (const auto& p : paths) {
      auto text = readFile(p.string());
      s.files += fs::relative(p, state_dir).string() + ":\n" + (text ? *text : "unreadable") + "\n";
    }
    for (const auto* ep : mgr->list())
      s.endpoints += toApiJson(*ep).dump() + " ifindex " + std::to_string(ep->host_ifindex) + "\n";
    for (const auto& id : mgr->identities())
      s.identities += fmt::format("{} {} refs {}\n", id.id, id.labels.toString(), id.refs);
    for (const auto& [ns, ls] : mgr->namespaces()) s.namespaces += ns + " " + ls.toString() + "\n";
    s.generation = mgr->generation();
    return s;
  }

  std::string state_dir;
  kernel::FakeDatapathMaps maps;
  kernel::FakePodNetworks net;
  kernel::FaultInjector faults;
  kernel::FaultyDatapathMaps fdp{maps, faults};
  kernel::FaultyPodNetworks fnet{net, faults};
  kernel::FaultyStateFiles files{diskStateFiles(), faults};
  std::unique_ptr<identity::IdentityAllocator> ids;
  policy::Repository repo;
  metrics::AgentMetrics metrics;
  std::unique_ptr<Manager> mgr;
  UnlockedHook unlocked;  // ManagerConfig::unlocked of the next restart()
};

void expectSame(const Snapshot& a, const Snapshot& b, const std::string& why, bool ignore_created = false,
                bool check_generation = true) {
  auto n = [&](const std::string& s) { return ignore_created ? withoutCreated(s) : s; };
  EXPECT_EQ(a.maps, b.maps) << why;
  EXPECT_EQ(a.net, b.net) << why;
  EXPECT_EQ(n(a.files), n(b.files)) << why;
  EXPECT_EQ(n(a.endpoints), n(b.endpoints)) << why;
  EXPECT_EQ(a.identities, b.identities) << why;
  EXPECT_EQ(a.namespaces, b.namespaces) << why;
  if (check_generation) {
    EXPECT_EQ(a.generation, b.generation) << why;
  }
}

class ManagerFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/membrane-mgr-fault-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
  }
  void TearDown() override { fs::remove_all(root_); }

  // A fresh world in its own state dir, set up by `setup` without faults.
  std::unique_ptr<World> world(const std::function<void(World&)>& setup) {
    auto dir = fmt::format("{}/w{}", root_, ++worlds_);
    fs::create_directories(dir);
    auto w = std::make_unique<World>(dir);
    auto st = w->mgr->init();
    EXPECT_TRUE(st.ok()) << st.error().message;
    setup(*w);
    w->faults.clear();
    return w;
  }

  std::string root_;
  int worlds_ = 0;
};

Status createPod(World& w, const std::string& name, const std::string& user) {
  auto ep = w.mgr->create(name, "default", userLabels(user));
  if (!ep) return ep.error();
  return okStatus();
}

void basePods(World& w) {
  ASSERT_TRUE(createPod(w, "deathstar", "org=empire,class=deathstar").ok());
  ASSERT_TRUE(createPod(w, "xwing", "org=alliance,class=xwing").ok());
}

struct FaultCase {
  std::function<void(World&)> setup;
  std::function<Status(World&)> op;
  std::string context;  // the operation's context in every error
  // What a failed call promises; default: nothing observable changed.
  std::function<void(World&, const Snapshot& before, const std::string& why)> on_failure;
  // How to try again (default: the operation again).
  std::function<Status(World&)> retry;
  // Completes an operation that succeeded although a (best-effort) call
  // failed; default: the next regeneration.
  std::function<Status(World&)> complete;
};

// Runs c with each of its kernel calls failing in turn; returns the calls
// ("<n>:<method>") whose failure the operation tolerated (returned success).
std::vector<std::string> everyFault(ManagerFaultTest& t, const std::function<std::unique_ptr<World>(
                                                              const std::function<void(World&)>&)>& world,
                                    const FaultCase& c) {
  (void)t;
  std::vector<std::string> tolerated;
  Snapshot ref;
  size_t calls = 0;
  {
    auto w = world(c.setup);
    auto st = c.op(*w);
    EXPECT_TRUE(st.ok()) << st.error().message;
    calls = w->faults.calls().size();
    ref = w->snapshot();
  }
  EXPECT_GT(calls, 0u);
  for (size_t n = 1; n <= calls; ++n) {
    auto w = world(c.setup);
    const Snapshot before = w->snapshot();
    w->faults.failNth(n, EIO);
    Status st = c.op(*w);
    if (!w->faults.fired()) {
      ADD_FAILURE() << "call " << n << " of " << calls << " never happened (the operation is not deterministic)";
      continue;
    }
    const std::string method = *w->faults.fired();
    const std::string why = fmt::format("{}: fault at kernel call {} ({})", c.context, n, method);
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
      auto r = c.retry ? c.retry(*w) : c.op(*w);
      EXPECT_TRUE(r.ok()) << why << ": retry: " << r.error().message;
    } else {
      tolerated.push_back(fmt::format("{}:{}", n, method));
      auto r = c.complete ? c.complete(*w) : Status(w->mgr->regenerateAll().ok() ? okStatus() : Error(EIO, "regen"));
      EXPECT_TRUE(r.ok()) << why << ": completing: " << r.error().message;
    }
    expectSame(ref, w->snapshot(), why + ", then a retry without faults", /*ignore_created=*/true);
  }
  return tolerated;
}

#define WORLD [this](const std::function<void(World&)>& setup) { return world(setup); }

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : " ") + s;
  return out;
}

// The netlink steps of create and delete (kernel::PodNetworks) run inside
// ManagerConfig::unlocked, where the agent releases its state lock: the pod
// network appears (create) and disappears (delete) inside the hook, and the
// endpoint is listed only after it (create) / still, as disconnecting (delete).
TEST_F(ManagerFaultTest, PodNetworkStepsRunInsideTheUnlockedHook) {
  auto wp = world([](World&) {});
  World& w = *wp;
  struct Seen {
    size_t pods_before, pods_after, listed;
    std::string state;
  };
  std::vector<Seen> seen;
  w.unlocked = [&](const std::function<void()>& fn) {
    Seen s{w.net.state().pods.size(), 0, w.mgr->list().size(), ""};
    if (!w.mgr->list().empty()) s.state = std::string(toString(w.mgr->list().front()->state));
    fn();
    s.pods_after = w.net.state().pods.size();
    seen.push_back(s);
  };
  w.restart();
  ASSERT_TRUE(w.mgr->init().ok());
  ASSERT_TRUE(createPod(w, "deathstar", "org=empire,class=deathstar").ok());
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].pods_before, 0u);
  EXPECT_EQ(seen[0].pods_after, 1u);
  EXPECT_EQ(seen[0].listed, 0u);  // not listed before its network exists
  ASSERT_EQ(w.mgr->list().size(), 1u);
  ASSERT_TRUE(w.mgr->remove(w.mgr->list().front()->id).ok());
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1].pods_before, 1u);
  EXPECT_EQ(seen[1].pods_after, 0u);
  EXPECT_EQ(seen[1].listed, 1u);
  EXPECT_EQ(seen[1].state, "disconnecting");
  EXPECT_TRUE(w.mgr->list().empty());
}

TEST_F(ManagerFaultTest, CreateFailsAtEveryStepAndLeavesNothing) {
  FaultCase c;
  c.setup = basePods;
  c.op = [](World& w) { return createPod(w, "tiefighter", "org=empire,class=tiefighter"); };
  c.context = "create endpoint default/tiefighter";
  auto tolerated = everyFault(*this, WORLD, c);
  // The regeneration of the others after the endpoint exists is best effort
  // (manager.h): faults there are logged, and the next regeneration completes.
  EXPECT_EQ(joined(tolerated), "7:syncPolicy 8:syncPolicy 9:syncPolicy");
}

TEST_F(ManagerFaultTest, FirstCreateFailsAtEveryStepAndLeavesNothing) {
  FaultCase c;
  c.setup = [](World&) {};
  c.op = [](World& w) { return createPod(w, "deathstar", "org=empire,class=deathstar"); };
  c.context = "create endpoint default/deathstar";
  auto tolerated = everyFault(*this, WORLD, c);
  EXPECT_EQ(joined(tolerated), "7:syncPolicy");  // the best-effort regeneration after it
}

TEST_F(ManagerFaultTest, DeleteFailsAtEveryStepAndARetryFinishes) {
  FaultCase c;
  c.setup = basePods;
  c.op = [](World& w) { return w.mgr->remove(w.mgr->findByName("default", "deathstar")->id); };
  c.context = "delete endpoint 1";
  // A delete cannot be undone (the netns may be gone): the endpoint stays
  // listed, with its state file and identity, until a retry finishes it.
  c.on_failure = [](World& w, const Snapshot& before, const std::string& why) {
    const Snapshot now = w.snapshot();
    const auto* ep = w.mgr->findByName("default", "deathstar");
    ASSERT_NE(ep, nullptr) << why;
    EXPECT_EQ(ep->state, EndpointState::Disconnecting) << why;
    EXPECT_EQ(now.files, before.files) << why;
    EXPECT_EQ(now.identities, before.identities) << why;
    EXPECT_EQ(now.generation, before.generation) << why;
    EXPECT_EQ(w.mgr->list().size(), 2u) << why;
  };
  c.retry = [](World& w) { return w.mgr->remove(1); };
  auto tolerated = everyFault(*this, WORLD, c);
  EXPECT_EQ(joined(tolerated), "7:syncPolicy");  // the best-effort regeneration after it
}

TEST_F(ManagerFaultTest, RegenerateFailsAtEveryStepAndARetryFinishes) {
  FaultCase c;
  c.setup = [](World& w) {
    basePods(w);
    auto p = policy::parsePolicies(kPolicy2, "alliance.yaml");
    ASSERT_TRUE(p.ok());
    ASSERT_TRUE(w.repo.import(p.policies).ok());
  };
  c.op = [](World& w) -> Status {
    auto r = w.mgr->regenerateAll();
    if (!r.ok()) return r.error();
    return okStatus();
  };
  c.context = "";
  // Regeneration converges (writes by difference): a failed one leaves the
  // endpoint it failed on not-ready, the others realized; nothing is lost.
  c.on_failure = [](World& w, const Snapshot& before, const std::string& why) {
    const Snapshot now = w.snapshot();
    EXPECT_EQ(now.net, before.net) << why;
    EXPECT_EQ(now.files, before.files) << why;
    EXPECT_EQ(now.identities.empty(), false) << why;
    EXPECT_EQ(now.generation, before.generation) << why;
    EXPECT_EQ(w.mgr->list().size(), 2u) << why;
  };
  auto tolerated = everyFault(*this, WORLD, c);
  EXPECT_EQ(joined(tolerated), "");
}

// An endpoint a failed regeneration left not-ready is retried on its own
// (retryNotReady, called by the agent's workload loop), with back-off
// (1 s, 2 s, ... 30 s), not only at the next policy change.
TEST_F(ManagerFaultTest, NotReadyEndpointsAreRetriedWithBackoff) {
  auto w = world([](World& w) {
    basePods(w);
    auto p = policy::parsePolicies(kPolicy2, "alliance.yaml");
    ASSERT_TRUE(p.ok());
    ASSERT_TRUE(w.repo.import(p.policies).ok());
  });
  auto not_ready = [&] {
    size_t n = 0;
    for (const auto* ep : w->mgr->list()) n += ep->state == EndpointState::NotReady;
    return n;
  };
  const auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  auto nothing = w->mgr->retryNotReady(t0);  // nothing is not-ready: nothing runs
  ASSERT_TRUE(nothing.ok());
  EXPECT_EQ(*nothing, 0u);
  EXPECT_TRUE(w->faults.calls().empty());

  w->faults.failNth(1, EIO, "syncPolicy");
  ASSERT_FALSE(w->mgr->regenerateAll().ok());
  ASSERT_EQ(not_ready(), 1u);

  w->faults.failNth(1, EIO, "syncPolicy");  // the first retry fails too
  auto r = w->mgr->retryNotReady(t0);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message, HasSubstr("injected fault: syncPolicy"));
  EXPECT_EQ(not_ready(), 1u);
  w->faults.clear();
  r = w->mgr->retryNotReady(t0 + std::chrono::milliseconds(999));  // backing off for 1 s
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 0u);
  EXPECT_TRUE(w->faults.calls().empty()) << "ran during the back-off";
  EXPECT_EQ(not_ready(), 1u);

  r = w->mgr->retryNotReady(t0 + std::chrono::seconds(1));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r, 2u);  // every endpoint realized
  EXPECT_EQ(not_ready(), 0u);
  for (const auto* ep : w->mgr->list()) EXPECT_EQ(ep->state, EndpointState::Ready) << ep->name;
}

TEST_F(ManagerFaultTest, NamespaceRelabelFailsAtEveryStepAndChangesNothing) {
  FaultCase c;
  c.setup = basePods;
  c.op = [](World& w) { return w.mgr->setNamespaceLabels("default", userLabels("team=blue")); };
  c.context = "label namespace default";
  auto tolerated = everyFault(*this, WORLD, c);
  EXPECT_EQ(joined(tolerated), "");
}

TEST_F(ManagerFaultTest, RestoreFailsAtEveryStepAndARestartRestoresEverything) {
  FaultCase c;
  c.setup = [](World& w) {
    basePods(w);
    w.restart();
  };
  c.op = [](World& w) { return w.mgr->init(); };
  c.context = "";
  // A failed start changes no state file and no pod network; the next start
  // restores every endpoint.
  c.on_failure = [](World& w, const Snapshot& before, const std::string& why) {
    const Snapshot now = w.snapshot();
    EXPECT_EQ(now.net, before.net) << why;
    EXPECT_EQ(now.files, before.files) << why;
  };
  c.retry = [](World& w) {
    w.restart();
    return w.mgr->init();
  };
  c.complete = c.retry;
  auto tolerated = everyFault(*this, WORLD, c);
  // Listing the endpoint map for stale entries is best effort (logged; the next start retries).
  EXPECT_EQ(joined(tolerated), "10:listEndpoints");
}

// A state file that cannot be written (disk full) fails the operation that
// changes it, and the operation changes nothing (the loops above fail these
// writes too: "writeStateFile" is one of the steps they count).
TEST_F(ManagerFaultTest, FailedStateWritesFailTheOperationAndChangeNothing) {
  auto w = world(basePods);
  Snapshot before = w->snapshot();
  w->faults.failNth(1, ENOSPC, "writeStateFile");
  auto ep = w->mgr->create("tiefighter", "default", userLabels("org=empire"));
  ASSERT_FALSE(ep.ok());
  EXPECT_EQ(ep.error().code, ENOSPC);
  EXPECT_EQ(ep.error().message, "create endpoint default/tiefighter: save state: injected fault: writeStateFile call 1: "
                                "No space left on device");
  expectSame(before, w->snapshot(), "create");

  w->faults.failNth(1, ENOSPC, "writeStateFile");  // namespaces.json
  auto st = w->mgr->setNamespaceLabels("default", userLabels("team=blue"));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message, "label namespace default: injected fault: writeStateFile call 1: No space left on device");
  expectSame(before, w->snapshot(), "label namespace");

  w->faults.failNth(2, ENOSPC, "writeStateFile");  // the second pod's state file
  st = w->mgr->setNamespaceLabels("default", userLabels("team=blue"));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message,
            "label namespace default: save state of deathstar: injected fault: writeStateFile call 2: No space left on "
            "device");
  expectSame(before, w->snapshot(), "label namespace (endpoint state)");
  w->faults.clear();
  ASSERT_TRUE(w->mgr->setNamespaceLabels("default", userLabels("team=blue")).ok());
}

// Regression: a state file that init() skipped (damaged) was overwritten by
// the next endpoint created, which got the same lowest free id.
TEST_F(ManagerFaultTest, SkippedStateFileKeepsItsId) {
  auto w = world([](World&) {});
  const std::string damaged = w->state_dir + "/endpoints/1.json";
  ASSERT_TRUE(writeFileAtomic(damaged, "{ not json").ok());
  w->restart();
  auto st = w->mgr->init();
  ASSERT_TRUE(st.ok()) << st.error().message;
  auto ep = w->mgr->create("deathstar", "default", userLabels("org=empire"));
  ASSERT_TRUE(ep.ok()) << ep.error().message;
  EXPECT_EQ(ep->id, 2u);
  EXPECT_EQ(readFile(damaged).value(), "{ not json");
}

// Regression: an endpoint whose state file was read but whose network was
// incomplete (here: veth and netns of another pod network name gone) was
// skipped by init() and then never removed by removeAll (`membraned
// cleanup`): its netns outlived the agent.
TEST_F(ManagerFaultTest, CleanupRemovesWhatIsLeftOfAnUnrestoredEndpoint) {
  auto w = world(basePods);
  // deathstar's pod network loses its address (inspect: ENOENT), the netns stays.
  auto& pods = w->net.mutableState().pods;
  const std::string netns = w->mgr->findByName("default", "deathstar")->netns_name;
  ASSERT_EQ(pods.count(netns), 1u);
  pods.at(netns).spec.ipv4_be = htonl(0x0a6300fe);
  w->restart();
  auto st = w->mgr->init();
  ASSERT_TRUE(st.ok()) << st.error().message;
  ASSERT_EQ(w->mgr->list().size(), 1u);
  EXPECT_EQ(w->net.state().pods.count(netns), 1u);
  st = w->mgr->removeAll();
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(describe(w->net.state()), "");
  EXPECT_FALSE(fs::exists(w->state_dir + "/endpoints/1.json"));
  EXPECT_FALSE(fs::exists(w->state_dir + "/endpoints/2.json"));
}

// A restore that cannot tell whether a pod network exists (not ENOENT) fails
// the start instead of dropping that pod's map entries as stale.
TEST_F(ManagerFaultTest, TransientInspectFailureFailsTheStartAndKeepsTheMaps) {
  auto w = world([](World& w) {
    basePods(w);
    w.restart();
  });
  const std::string maps_before = describe(w->maps.state());
  w->faults.failNth(1, ENOBUFS, "inspectPodNetwork");
  auto st = w->mgr->init();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ENOBUFS);
  EXPECT_THAT(st.error().message, HasSubstr("restore " + w->state_dir + "/endpoints/1.json: restore endpoint "
                                            "default/deathstar: inspect its network: injected fault: "
                                            "inspectPodNetwork call 1"));
  EXPECT_EQ(describe(w->maps.state()), maps_before);
}

// ---------------------------------------------------------------------------
// Containers a runtime created (membrane-cni): the pod network goes into the
// runtime's namespace, which membrane never creates or removes.

constexpr const char* kRuntimeNetns = "/run/netns/netns-4f1c";

Result<Endpoint> createContainer(World& w, const std::string& container_id = "c0ffee", const std::string& ifname = "eth0",
                                 const std::string& netns = kRuntimeNetns, const std::string& name = "web-1") {
  return w.mgr->createForContainer(name, "default", userLabels("app=web"), CniAttachment{container_id, ifname, "membrane"},
                                   netns);
}

void runtimeNetns(World& w) {
  basePods(w);
  w.net.mutableState().runtime_netns.insert(kRuntimeNetns);
}

TEST_F(ManagerFaultTest, ContainerEndpointLivesInTheRuntimesNamespace) {
  auto w = world(runtimeNetns);
  auto ep = createContainer(*w);
  ASSERT_TRUE(ep.ok()) << ep.error().message;
  EXPECT_EQ(ep->netns_name, "");
  EXPECT_EQ(ep->netns_path, kRuntimeNetns);
  ASSERT_TRUE(ep->cni.has_value());
  EXPECT_EQ(*ep->cni, (CniAttachment{"c0ffee", "eth0", "membrane"}));
  EXPECT_EQ(ep->ipv4, 0x0a630004u);  // 10.99.0.4: after the gateway and the two pods
  EXPECT_EQ(ep->labels.toString(),
            "k8s:app=web,k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=default,"
            "k8s:io.cilium.k8s.policy.cluster=default,k8s:io.cilium.k8s.policy.serviceaccount=default,"
            "k8s:io.kubernetes.pod.namespace=default");
  const auto& pods = w->net.state().pods;
  ASSERT_EQ(pods.count(kRuntimeNetns), 1u);
  EXPECT_EQ(pods.at(kRuntimeNetns).spec.adopt_netns_path, kRuntimeNetns);
  EXPECT_EQ(pods.at(kRuntimeNetns).spec.pod_ifname, "eth0");
  EXPECT_EQ(pods.at(kRuntimeNetns).spec.host_ifname, ep->host_ifname);
  EXPECT_EQ(w->mgr->findByContainer("c0ffee", "eth0"), w->mgr->find(ep->id));
  EXPECT_EQ(w->mgr->findByContainer("c0ffee", "net1"), nullptr);
  EXPECT_TRUE(w->mgr->checkNetwork(ep->id).ok());

  // A restarted agent restores it from its state file, in the same namespace.
  w->restart();
  ASSERT_TRUE(w->mgr->init().ok());
  const Endpoint* restored = w->mgr->findByContainer("c0ffee", "eth0");
  ASSERT_NE(restored, nullptr);
  EXPECT_EQ(restored->netns_path, kRuntimeNetns);
  EXPECT_EQ(restored->host_ifname, ep->host_ifname);
  EXPECT_EQ(restored->identity, ep->identity);

  // Removing it takes the veth, never the runtime's namespace.
  ASSERT_TRUE(w->mgr->remove(restored->id).ok());
  EXPECT_EQ(w->net.state().pods.count(kRuntimeNetns), 0u);
  EXPECT_EQ(w->net.state().runtime_netns.count(kRuntimeNetns), 1u);
  EXPECT_EQ(w->mgr->findByContainer("c0ffee", "eth0"), nullptr);
}

TEST_F(ManagerFaultTest, BadContainerAddsChangeNothing) {
  auto w = world([](World& w) {
    runtimeNetns(w);
    ASSERT_TRUE(createContainer(w).ok());
    w.net.mutableState().runtime_netns.insert("/run/netns/other");
    w.net.mutableState().runtime_links.insert({"/run/netns/other", "eth0"});
  });
  const Snapshot before = w->snapshot();
  struct Case {
    std::function<Result<Endpoint>(World&)> add;
    int code;
    std::string message;
  };
  const Case cases[] = {
      {[](World& w) { return createContainer(w, "c0ffee", "eth0", kRuntimeNetns, "web-2"); }, EEXIST,
       "create endpoint default/web-2 for container c0ffee: the container already has eth0 (endpoint 3 "
       "default/web-1)"},
      {[](World& w) { return createContainer(w, "c2", "eth0", "/run/netns/gone"); }, EEXIST,
       "create endpoint default/web-1: an endpoint named web-1 already exists in namespace default (delete it first: "
       "membrane endpoint delete web-1 -n default)"},
      {[](World& w) { return createContainer(w, "c2", "eth0", "/run/netns/gone", "web-2"); }, ENOENT,
       "create endpoint default/web-2: create pod network /run/netns/gone: open netns /run/netns/gone: "
       "/run/netns/gone does not exist"},
      {[](World& w) { return createContainer(w, "c3", "eth0", "/run/netns/other", "web-3"); }, EEXIST,
       "create endpoint default/web-3: create pod network /run/netns/other: interface eth0 already exists in "
       "/run/netns/other"},
      {[](World& w) { return createContainer(w, "c4", "eth0", kRuntimeNetns, "Web_4"); }, EINVAL,
       "create endpoint default/Web_4 for container c4: pod name 'Web_4' contains 'W' (Kubernetes names: lowercase "
       "letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)"},
  };
  for (const auto& c : cases) {
    auto r = c.add(*w);
    ASSERT_FALSE(r.ok()) << c.message;
    EXPECT_EQ(r.error().code, c.code) << r.error().message;
    EXPECT_EQ(r.error().message, c.message);
    expectSame(before, w->snapshot(), c.message);
  }
}

TEST_F(ManagerFaultTest, CreateForContainerFailsAtEveryStepAndLeavesNothing) {
  FaultCase c;
  c.setup = runtimeNetns;
  c.op = [](World& w) {
    auto ep = createContainer(w);
    return ep.ok() ? okStatus() : Status(ep.error());
  };
  c.context = "create endpoint default/web-1";
  auto tolerated = everyFault(*this, WORLD, c);
  EXPECT_EQ(joined(tolerated), "7:syncPolicy 8:syncPolicy 9:syncPolicy");
}

TEST_F(ManagerFaultTest, ContainerWhoseNamespaceWentWhileTheAgentWasDownIsNotRestored) {
  auto w = world([](World& w) {
    runtimeNetns(w);
    ASSERT_TRUE(createContainer(w).ok());
    w.restart();
  });
  w->net.mutableState().runtime_netns.erase(kRuntimeNetns);
  ASSERT_TRUE(w->mgr->init().ok());
  EXPECT_EQ(w->mgr->findByContainer("c0ffee", "eth0"), nullptr);
  EXPECT_NE(w->mgr->findByName("default", "deathstar"), nullptr);
}

}  // namespace
}  // namespace membrane::endpoint
