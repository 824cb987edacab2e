// workload::Controller against the in-memory kernel fakes (no root): a pod's
// endpoint, process and ClusterIP service go through the kernel seams, and
// a spawn failure leaves no process behind.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>

#include "membrane/identity.h"
#include "membrane/metrics.h"
#include "membrane/policy_repository.h"
#include "src/endpoint/manager.h"
#include "src/endpoint/state_store.h"
#include "src/kernel/fake/fake_datapath_maps.h"
#include "src/kernel/fake/fake_pod_networks.h"
#include "src/kernel/fake/fake_process_runner.h"
#include "src/kernel/fake/faults.h"
#include "src/workload/controller.h"

namespace membrane::workload {
namespace {

namespace fs = std::filesystem;

constexpr const char* kManifest = R"(apiVersion: v1
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
---
apiVersion: v1
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

class ControllerFakeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/membrane-wl-fake-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    net_.on_link_gone = [this](uint32_t ifx) { maps_.linkGone(ifx); };
    endpoint::ManagerConfig mc;
    mc.state_dir = dir_;
    mc.pod_cidr = endpoint::Cidr4::parse("10.98.0.0/24").value();
    mc.host_device = "mbw_host";
    mgr_ = std::make_unique<endpoint::Manager>(mc, fdp_, fnet_, ids_, repo_, metrics_);
    auto st = mgr_->init();
    ASSERT_TRUE(st.ok()) << st.error().message;
    ControllerConfig cc{dir_, endpoint::Cidr4::parse("10.97.0.0/24").value(), "",
                        [this](std::string_view action, double delay) {
                          service_events_[std::string(action)]++;
                          service_delays_.push_back(delay);
                        }};
    cc.unlocked = [this](const std::function<void()>& fn) {
      const size_t before = procs_.state().size();
      fn();
      started_unlocked_ += procs_.state().size() - before;
    };
    wl_ = std::make_unique<Controller>(cc, *mgr_, fdp_, fnet_, fprocs_);
    st = wl_->init();
    ASSERT_TRUE(st.ok()) << st.error().message;
  }
  void TearDown() override {
    wl_.reset();
    mgr_.reset();
    fs::remove_all(dir_);
  }
  Manifests manifests() {
    auto r = parseManifests(kManifest, "deathstar.yaml");
    EXPECT_TRUE(r.ok());
    return r.manifests;
  }

  std::string dir_;
  kernel::FakeDatapathMaps maps_;
  kernel::FakePodNetworks net_;
  kernel::FakeProcessRunner procs_;
  kernel::FaultInjector faults_;
  kernel::FaultyDatapathMaps fdp_{maps_, faults_};
  kernel::FaultyPodNetworks fnet_{net_, faults_};
  kernel::FaultyProcessRunner fprocs_{procs_, faults_};
  identity::IdentityAllocator ids_;
  policy::Repository repo_;
  metrics::AgentMetrics metrics_;
  std::unique_ptr<endpoint::Manager> mgr_;
  std::unique_ptr<Controller> wl_;
  std::map<std::string, int> service_events_;  // cilium_services_events_total{action}
  std::vector<double> service_delays_;         // cilium_service_implementation_delay, one per event
  size_t started_unlocked_ = 0;                // processes started inside ControllerConfig::unlocked
};

// A pod's process starts with the caller's lock released (the agent's state
// lock: API readers answer while a reconcile waits for fork + exec).
TEST_F(ControllerFakeTest, PodProcessesStartInsideTheUnlockedHook) {
  ASSERT_TRUE(wl_->apply(manifests()).ok());
  ASSERT_EQ(procs_.state().size(), 1u);
  EXPECT_EQ(started_unlocked_, 1u);  // every start (apply, tick's restarts: one function) goes through it
}

TEST_F(ControllerFakeTest, PodAndServiceLifecycleThroughTheSeams) {
  auto r = wl_->apply(manifests());
  ASSERT_TRUE(r.ok()) << r.error().message;
  const auto* ep = mgr_->findByName("default", "deathstar");
  ASSERT_NE(ep, nullptr);
  ASSERT_EQ(procs_.state().size(), 1u);
  const auto& [pid, proc] = *procs_.state().begin();
  EXPECT_EQ(pid, 1000);
  EXPECT_EQ(proc.argv, (std::vector<std::string>{"sleep", "infinity"}));
  EXPECT_EQ(proc.netns_path, ep->netns_path);
  EXPECT_EQ(proc.hostname, "deathstar");
  // A backend once it listens on its port (readiness).
  ASSERT_EQ(maps_.state().services.size(), 1u);
  EXPECT_EQ(maps_.state().services.begin()->second.backends.size(), 0u);
  EXPECT_EQ(service_events_, (std::map<std::string, int>{{"update", 1}}));  // the frontend, no backend yet
  wl_->tick();
  EXPECT_EQ(service_events_, (std::map<std::string, int>{{"update", 1}}));  // nothing changed: nothing written
  procs_.listen(pid, 80);
  wl_->tick();
  EXPECT_EQ(service_events_, (std::map<std::string, int>{{"update", 2}}));  // the backend
  ASSERT_EQ(maps_.state().services.size(), 1u);
  const auto& [svc, backends] = *maps_.state().services.begin();
  EXPECT_EQ(std::get<1>(svc), 80);
  EXPECT_EQ(std::get<2>(svc), 6);
  ASSERT_EQ(backends.backends.size(), 1u);
  EXPECT_EQ(backends.backends[0].ip_be, htonl(ep->ipv4));
  EXPECT_EQ(backends.backends[0].port, 80);

  r = wl_->remove(manifests());
  ASSERT_TRUE(r.ok()) << r.error().message;
  wl_->tick();
  EXPECT_EQ(procs_.state().size(), 0u);  // stopped and reaped
  EXPECT_EQ(mgr_->list().size(), 0u);
  EXPECT_EQ(net_.state().pods.size(), 0u);
  EXPECT_EQ(maps_.state().services.size(), 0u);
  EXPECT_EQ(service_events_, (std::map<std::string, int>{{"update", 2}, {"delete", 1}}));
  // One implementation delay per datapath write, each from a change this test made moments before.
  ASSERT_EQ(service_delays_.size(), 3u);
  for (double d : service_delays_) EXPECT_TRUE(d >= 0 && d < 60) << d;
}

// stopWait(): what a caller waiting for its own stopping pods blocks on. The
// exit fd becomes readable when the process ends; recheck_at is the SIGKILL
// deadline; pods the caller did not name are not its business.
TEST_F(ControllerFakeTest, StopWaitBlocksOnTheNamedPodsExitFds) {
  auto t = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  wl_.reset();
  ControllerConfig cc{dir_, endpoint::Cidr4::parse("10.97.0.0/24").value(), "", {}, std::chrono::seconds(3)};
  cc.now = [&] { return t; };
  wl_ = std::make_unique<Controller>(cc, *mgr_, fdp_, fnet_, fprocs_);
  ASSERT_TRUE(wl_->init().ok());
  ASSERT_TRUE(wl_->apply(manifests()).ok());
  ASSERT_EQ(procs_.state().size(), 1u);
  const pid_t pid = procs_.state().begin()->first;
  procs_.ignore(pid, SIGTERM);

  EXPECT_TRUE(wl_->stopWait({"default/deathstar"}).done);  // not terminating: nothing to wait for
  ASSERT_TRUE(wl_->deletePod("default", "deathstar").ok());
  EXPECT_EQ(wl_->terminatingKeys(), std::set<std::string>{"default/deathstar"});
  EXPECT_TRUE(wl_->stopWait({"default/other"}).done);

  auto wait = wl_->stopWait({"default/deathstar"});
  EXPECT_FALSE(wait.done);
  EXPECT_EQ(wait.recheck_at, t + std::chrono::seconds(3));  // SIGKILL is due then
  ASSERT_EQ(wait.exit_fds.size(), 1u);
  pollfd pfd{wait.exit_fds[0].get(), POLLIN, 0};
  EXPECT_EQ(::poll(&pfd, 1, 0), 0) << "readable while the process runs";

  procs_.exit(pid, 0);  // it exits by itself after all
  EXPECT_EQ(::poll(&pfd, 1, 0), 1);
  wl_->finishTerminations();
  EXPECT_TRUE(wl_->stopWait({"default/deathstar"}).done);
  EXPECT_TRUE(wl_->terminatingKeys().empty());
}

// Issue 10: stopping a pod never blocks the caller. SIGTERM moves it to
// Terminating; finishTerminations() removes it once it exited, or SIGKILLs it
// after the grace period; its name is re-created only after that.
TEST_F(ControllerFakeTest, PodThatIgnoresSigtermTerminatesWithoutBlocking) {
  auto make = [&](std::chrono::milliseconds grace) {
    wl_.reset();
    ControllerConfig cc{dir_, endpoint::Cidr4::parse("10.97.0.0/24").value(), "", {}, grace};
    wl_ = std::make_unique<Controller>(cc, *mgr_, fdp_, fnet_, fprocs_);
    auto st = wl_->init();
    ASSERT_TRUE(st.ok()) << st.error().message;
  };
  make(std::chrono::hours(1));
  ASSERT_TRUE(wl_->apply(manifests()).ok());
  ASSERT_EQ(procs_.state().size(), 1u);
  const pid_t pid = procs_.state().begin()->first;
  procs_.ignore(pid, SIGTERM);

  ASSERT_TRUE(wl_->deletePod("default", "deathstar").ok());  // returns at once
  EXPECT_TRUE(wl_->terminating());
  auto pods = wl_->podsJson("default");
  ASSERT_EQ(pods.size(), 1u);
  EXPECT_EQ(pods[0]["status"], "Terminating");
  EXPECT_FALSE(pods[0]["ready"].get<bool>());
  EXPECT_TRUE(procs_.state().at(pid).running);
  EXPECT_NE(mgr_->findByName("default", "deathstar"), nullptr);  // the endpoint stays until the process is gone
  EXPECT_EQ(maps_.state().services.begin()->second.backends.size(), 0u);
  // Persisted: a restarted agent finishes it.
  auto state = Controller::parseState(endpoint::readFile(dir_ + "/workloads.json").value());
  ASSERT_TRUE(state.ok()) << state.error().message;
  EXPECT_EQ(state->terminating.size(), 1u);
  EXPECT_EQ(state->instances.size(), 0u);
  wl_->finishTerminations();  // within the grace period: nothing happens
  EXPECT_TRUE(wl_->terminating());

  // An agent restart (the process is no longer its child) with no grace
  // left: SIGKILL at the first round, removed at the next once it is gone.
  procs_.disown(pid);
  make(std::chrono::milliseconds(0));
  EXPECT_TRUE(wl_->terminating());  // restored from the state file
  wl_->finishTerminations();
  EXPECT_EQ(procs_.state().size(), 0u);  // killed (init reaps what is not our child)
  wl_->finishTerminations();
  EXPECT_FALSE(wl_->terminating());
  EXPECT_EQ(procs_.state().size(), 0u);
  EXPECT_EQ(mgr_->findByName("default", "deathstar"), nullptr);
  EXPECT_EQ(wl_->podsJson("default").size(), 0u);
}

TEST_F(ControllerFakeTest, SameNameIsRecreatedOnlyAfterTheOldPodIsGone) {
  ASSERT_TRUE(wl_->apply(manifests()).ok());
  const pid_t old_pid = procs_.state().begin()->first;
  procs_.ignore(old_pid, SIGTERM);
  auto m = manifests();
  m.pods.at(0).spec.containers.at(0).command = {"sleep", "1000"};  // a changed spec replaces the pod
  ASSERT_TRUE(wl_->apply(m).ok());
  EXPECT_TRUE(wl_->terminating());
  ASSERT_EQ(procs_.state().size(), 1u);  // only the old process: the new one waits for the name
  auto pods = wl_->podsJson("default");
  ASSERT_EQ(pods.size(), 1u);
  EXPECT_EQ(pods[0]["status"], "Terminating");
  procs_.exit(old_pid, 0);  // it goes after all
  wl_->finishTerminations();
  EXPECT_FALSE(wl_->terminating());
  ASSERT_EQ(procs_.state().size(), 1u);
  EXPECT_EQ(procs_.state().begin()->second.argv, (std::vector<std::string>{"sleep", "1000"}));
  pods = wl_->podsJson("default");
  ASSERT_EQ(pods.size(), 1u);
  EXPECT_EQ(pods[0]["status"], "Running");
}

TEST_F(ControllerFakeTest, SpawnFailureLeavesNoProcess) {
  faults_.failNth(1, ENOENT, "spawn");
  auto r = wl_->apply(manifests());
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_TRUE(faults_.fired().has_value());
  EXPECT_EQ(procs_.state().size(), 0u);
  auto pod = wl_->podJson("default", "deathstar");
  ASSERT_TRUE(pod.ok()) << pod.error().message;
  EXPECT_EQ(pod->dump().find("\"Failed\"") != std::string::npos, true) << pod->dump();
  EXPECT_EQ(wl_->removeAll().ok(), true);
  EXPECT_EQ(procs_.state().size(), 0u);
  EXPECT_EQ(net_.state().pods.size(), 0u);
}

}  // namespace
}  // namespace membrane::workload
