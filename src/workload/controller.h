// Workload controller: the desired state of `membrane apply` (Pods,
// Deployments, Services, Namespaces) and the loop that makes the node match
// it — endpoints (via the endpoint manager), pod processes (src/kernel
// pod_process), ClusterIP services in the datapath, and each pod's
// /etc/hosts with the services' names.
//
// Contract
// - Not thread-safe: the agent calls everything under its lock.
// - Nothing waits for a process: a pod that goes away (delete, a changed
//   spec, scale-down, its owner deleted) gets SIGTERM and moves to the
//   terminating set; finishTerminations() (tick, and the agent while an API
//   call waits for it WITHOUT the agent lock) removes it once its process has
//   exited, or SIGKILLs it after ControllerConfig::stop_grace. A name whose
//   old pod is still terminating is re-created only after that. A pod whose
//   removal fails (its endpoint) stays terminating and is retried.
// - apply()/remove() take validated manifests (validate() first: it checks
//   what the parser cannot, e.g. an image that is not built in and has no
//   command) and change the desired state, persist it
//   (<state_dir>/workloads.json, atomically) and reconcile once.
// - Failures (tested with a fault injected at every kernel call and state
//   write: controller_fault_test.cc). apply(), remove() and deletePod() change
//   nothing when they fail: the desired state (and namespace labels) is
//   changed and saved before any pod, process or service is touched, and a
//   failure up to there undoes it. What the reconcile after that cannot do is
//   not an error of the call but retried by tick(), leaving nothing half
//   done: a pod whose creation fails has no endpoint and is listed as
//   CreateContainerError (retried every 5 s); a process that fails to start
//   is Failed and restarted with back-off (a restart, as in Kubernetes); a
//   service frontend that cannot be written or deleted is retried. The
//   runtime record saved after the reconcile (pids, phases) is retried by
//   tick() when its save fails. init() that fails leaves the kernel and the
//   state file as they were, and a new controller's init() retries.
// - tick() (every ~250 ms) reaps and restarts processes per restartPolicy
//   with back-off (1 s doubling to 30 s), keeps Deployments at their replica
//   count (a deleted pod is recreated under a new name), follows readiness
//   into the service backends and rewrites hosts files that changed (in
//   place: the pods' bind mounts pin the inode).
// - Pod processes are their own session leaders: they keep running when the
//   agent stops and init() re-adopts them (pid + start time from the state
//   file). removeAll() (membraned cleanup) stops them all.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string_view>
#include <tuple>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "membrane/labels.h"
#include "membrane/result.h"
#include "membrane/unique_fd.h"
#include "membrane/unlocked.h"
#include "src/endpoint/ipam.h"
#include "src/endpoint/state_store.h"
#include "src/workload/manifest.h"

namespace membrane::kernel {
class DatapathMaps;
class PodNetworks;
class ProcessRunner;
}
namespace membrane::endpoint {
class Manager;
}

namespace membrane::workload {

struct ControllerConfig {
  std::string state_dir;
  endpoint::Cidr4 service_cidr;
  std::string deathstar_script;  // the bundled cilium/starwars server
  // Called for every service frontend written to the datapath ("update") or
  // removed from it ("delete"): cilium_services_events_total{action}, with the
  // seconds since the change that caused it was seen (the service applied or
  // deleted, a backend pod becoming ready, unready or gone):
  // cilium_service_implementation_delay{action}. May be empty.
  std::function<void(std::string_view action, double delay_seconds)> on_service_event;
  // How long a pod has between SIGTERM and SIGKILL (Kubernetes'
  // terminationGracePeriodSeconds; membrane's pods have 3 s).
  std::chrono::milliseconds stop_grace{3000};
  // Tests: the clock of back-offs, retries and grace periods (empty: steady_clock),
  // and the suffix of a Deployment's pod names (empty: 5 random characters).
  std::function<std::chrono::steady_clock::time_point()> now{};
  std::function<std::string()> name_suffix{};
  // Runs fn with the caller's lock released (membrane/unlocked.h), around
  // the one step of a reconcile that waits on another process: a pod process
  // start (fork, setns, exec, confirmed over a pipe). The endpoint manager
  // gets the same hook for its netlink steps (ManagerConfig::unlocked).
  UnlockedHook unlocked{};
};

// A pod's phase as membrane tracks it: Kubernetes' PodPhase words, plus
// Waiting (crashed, backing off before a restart: CrashLoopBackOff in the
// listing). The API's "phase" and workloads.json spell them as toString() does.
enum class PodPhase { Pending, Running, Waiting, Succeeded, Failed };
std::string_view toString(PodPhase p);
// The word back to the phase; EINVAL naming the known words otherwise.
Result<PodPhase> parsePodPhase(std::string_view s);

// The command a container runs: its command+args, or a built-in image's.
// EINVAL with how to fix it for any other image without `command`.
Result<std::vector<std::string>> resolveCommand(const Container& c, const std::string& deathstar_script);
// Ports the built-in image listens on even when the manifest does not say so.
std::vector<uint16_t> impliedPorts(const Container& c);

class Controller {
 public:
  // dp, net, procs: the kernel (kernel::Datapath, kernel::linuxPodNetworks(),
  // kernel::linuxProcessRunner()) or the fakes of src/kernel/fake/ in tests;
  // files: where workloads.json is written (a fault-injecting wrapper in
  // tests); every argument must outlive the controller.
  Controller(ControllerConfig cfg, endpoint::Manager& eps, kernel::DatapathMaps& dp, kernel::PodNetworks& net,
             kernel::ProcessRunner& procs, endpoint::StateFiles& files = endpoint::diskStateFiles());
  ~Controller();

  // Service CIDR route and datapath config, state restore, process adoption, one reconcile.
  Status init();
  // Only reads the state (for removeAll in `membraned cleanup`). EINVAL
  // naming the file and the field when workloads.json is damaged (then
  // nothing is loaded: a partly read state would drop pods and services).
  Status load();

  Status validate(const Manifests& m) const;
  // Returns "kind/ns/name configured|created|unchanged" lines.
  Result<std::vector<std::string>> apply(const Manifests& m);
  // Returns "kind/ns/name deleted" lines; objects not present are skipped.
  Result<std::vector<std::string>> remove(const Manifests& m);
  // Deletes one pod (kubectl delete pod): a Deployment replaces it.
  Status deletePod(const std::string& ns, const std::string& name);

  void tick();

  // Pods that got SIGTERM and whose process has not exited yet.
  bool terminating() const { return !terminating_.empty(); }
  // Their "ns/name" keys. A caller that compares the set before and after
  // its change knows which pods it began stopping (stopWait).
  std::set<std::string> terminatingKeys() const;
  // What a caller waiting for the pods `keys` to be gone blocks on, with
  // its own lock released: the exit fds (kernel::ProcessRunner::exitFd) of
  // those still running, and the time (this controller's clock) by which it
  // must call finishTerminations() again whatever happens: the earliest
  // SIGKILL deadline, or a short retry for a pod whose process is gone but
  // whose removal failed. done: none of `keys` is terminating.
  struct StopWait {
    bool done = false;
    std::vector<UniqueFd> exit_fds;
    std::chrono::steady_clock::time_point recheck_at = std::chrono::steady_clock::time_point::max();
  };
  StopWait stopWait(const std::set<std::string>& keys);
  std::chrono::milliseconds stopGrace() const { return cfg_.stop_grace; }
  // Removes the terminating pods whose process exited (SIGKILL for those past
  // stop_grace), then re-creates what waited for their names. Never blocks
  // for long (a SIGKILLed child is reaped at once).
  void finishTerminations();

  nlohmann::json podsJson(const std::string& ns) const;  // ns "" = all
  nlohmann::json deploymentsJson(const std::string& ns) const;
  nlohmann::json servicesJson(const std::string& ns) const;
  Result<nlohmann::json> podJson(const std::string& ns, const std::string& name) const;
  Result<std::string> logFile(const std::string& ns, const std::string& name) const;

  Status removeAll();

 private:
  struct Instance {
    std::string ns, name, owner;  // owner: Deployment name, "" for a bare Pod
    Labels labels;
    PodSpec spec;
    std::vector<std::string> argv;
    uint32_t endpoint_id = 0;
    uint32_t ip = 0;  // host order
    pid_t pid = 0;
    uint64_t start_time = 0;
    bool own_child = false;  // started by this agent run (waitpid), else adopted
    int restarts = 0;
    int last_exit = -1;
    PodPhase phase = PodPhase::Pending;
    bool ready = false;
    std::string created;
    uint64_t seq = 0;  // creation order (timestamps tie within a second): scale-down removes the newest
    std::chrono::steady_clock::time_point next_start{};
    std::chrono::steady_clock::time_point started_at{};
    std::string hosts_written;
    std::chrono::steady_clock::time_point stop_deadline{};  // terminating: SIGKILL after this
    std::string stop_error;  // terminating: why the last removal failed (retried)
  };
  struct Service {
    ServiceObject obj;
    uint32_t cluster_ip = 0;  // host order
    std::string created;
    bool fresh = true;  // not yet written by this agent run: write whatever the datapath holds
    std::map<std::pair<uint16_t, uint8_t>, std::vector<std::pair<uint32_t, uint16_t>>> synced;  // what the datapath has
  };

 public:
  // What workloads.json holds. parseState checks every field: EINVAL naming
  // it ("instances[0].pid: expected a number ..."), never an exception. Pure.
  struct State {
    std::map<std::string, PodObject> pods;
    std::map<std::string, DeploymentObject> deployments;
    std::map<std::string, Service> services;
    std::map<std::string, Labels> namespaces;
    std::map<std::string, Instance> instances;
    std::map<std::string, Instance> terminating;  // "terminating" in the file: SIGTERM sent, not gone yet
    uint64_t next_seq = 1;
  };
  static Result<State> parseState(std::string_view text);

 private:
  std::string podDir(const Instance& i) const;
  std::chrono::steady_clock::time_point now() const;
  Status save() const;
  // save() after a reconcile (pids, phases, service frontends): a failure is
  // logged and retried by tick().
  void saveRuntime();
  // What apply/remove change, for undoing a change whose save failed.
  struct Desired {
    std::map<std::string, PodObject> pods;
    std::map<std::string, DeploymentObject> deployments;
    std::map<std::string, Service> services;
    std::map<std::string, Labels> namespaces;
  };
  Desired desired() const { return {pods_, deployments_, services_, namespaces_}; }
  void setDesired(Desired d);
  // Labels namespace ns had in the endpoint manager (for an undo).
  labels::LabelSet namespaceLabels(const std::string& ns) const;
  void restoreNamespaceLabels(const std::vector<std::pair<std::string, labels::LabelSet>>& before);
  Status createInstance(Instance inst);
  Status startProcess(Instance& inst);
  // Starts the pod's termination (SIGTERM, into terminating_) or, without a
  // live process, removes it at once (a removal that fails leaves it in
  // terminating_, retried by finishTerminations()).
  void destroyInstance(const std::string& key);
  bool processAlive(Instance& inst);
  Status removeInstanceResources(const Instance& inst);  // endpoint, pod dir
  void reconcile();
  void superviseProcesses();
  void syncServices();
  void syncHosts();
  Result<uint32_t> allocateClusterIp() const;
  std::string hostsFor(const Instance& inst) const;
  static std::string key(const std::string& ns, const std::string& name) { return ns + "/" + name; }

  ControllerConfig cfg_;
  endpoint::Manager& eps_;
  kernel::DatapathMaps& dp_;
  kernel::PodNetworks& net_;
  kernel::ProcessRunner& procs_;
  endpoint::StateFiles& files_;
  bool unsaved_ = false;  // workloads.json is behind (a failed save, a frontend written by tick())
  std::string save_error_;  // of the last save (logged once)
  // Frontends (vip host order, port, proto) of deleted services whose delete
  // failed: retried by syncServices(); their addresses are not handed out.
  std::set<std::tuple<uint32_t, uint16_t, uint8_t>> stale_frontends_;
  std::map<std::string, PodObject> pods_;               // ns/name -> bare pods
  std::map<std::string, DeploymentObject> deployments_;  // ns/name
  std::map<std::string, Service> services_;              // ns/name
  // When a change that can move service backends was first seen and not yet
  // written by syncServices() (cilium_service_implementation_delay).
  std::optional<std::chrono::steady_clock::time_point> services_changed_at_;
  void serviceInputsChanged();
  std::map<std::string, Labels> namespaces_;             // applied Namespace objects
  std::map<std::string, Instance> instances_;            // ns/name -> running pods
  std::map<std::string, Instance> terminating_;          // ns/name -> pods stopping (see the contract)
  uint64_t next_seq_ = 1;
  // Pods whose creation failed (e.g. the name's netns is taken): retried
  // every 5 s, reported by get pods, logged when the message changes.
  struct CreateFailure {
    std::chrono::steady_clock::time_point retry;
    std::string message;
    std::string owner;
  };
  std::map<std::string, CreateFailure> create_failures_;
  bool mayCreate(const std::string& k) const;
  void createFailed(const std::string& k, const std::string& owner, const std::string& message);
};

}  // namespace membrane::workload
