// Agent: membraned's parts wired together.
//
//   api (unix socket) ──> endpoint manager ──> identity allocator
//          │                    │
//          └──> policy repository ──(pure resolve)──> datapath map writer ──> kernel
//   kernel ring buffer ──> event thread ──> monitor hub ──> `membrane monitor`
//   kernel per-CPU maps ──(read at scrape)──> /metrics
//
// Two locks order the agent's state (the endpoint manager, identity
// allocator and policy repository are not thread-safe by design):
//   change_mu_  serialises every CHANGE (policy import/delete, endpoint and
//               namespace changes, workload apply/delete and the workload
//               loop's tick, proxy starts). It is held across the slow steps
//               of a change: the L7 proxy push and restart, /proc writes,
//               the state file's write.
//   mu_         guards the state itself; every reader and writer holds it,
//               but only for in-memory work and fast map syscalls. A change
//               releases it (MutexUnlock) around its slow steps, so readers
//               (status, healthz, endpoint/policy/identity listings) answer
//               while a proxy push or restart is in progress.
// Order: change_mu_ before mu_. Because every writer holds change_mu_,
// a change that released mu_ finds the state as it left it; readers may see
// a change's intermediate state (policy wait does not: it answers only for
// committed revisions). Scrapes read BPF maps directly, without either lock.
// Who holds what is annotated for clang's thread-safety analysis
// (GUARDED_BY / REQUIRES / EXCLUDES), checked as an error in the sanitizer
// builds of `make test`.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <set>
#include <vector>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "membrane/identity.h"
#include "membrane/metrics.h"
#include "membrane/policy.h"
#include "membrane/policy_json.h"
#include "membrane/policy_repository.h"
#include "membrane/policy_trace.h"
#include "membrane/result.h"
#include "membrane/mutex.h"
#include "src/api/http_server.h"
#include "src/daemon/config.h"
#include "src/daemon/l7_policy.h"
#include "src/daemon/log_metrics.h"
#include "src/daemon/proxy_manager.h"
#include "src/kernel/tproxy.h"
#include "src/daemon/monitor_hub.h"
#include "src/health/health.h"
#include "src/endpoint/manager.h"
#include "src/kernel/datapath.h"
#include "src/workload/controller.h"

#ifndef MEMBRANE_VERSION_STRING
#define MEMBRANE_VERSION_STRING "0.1.0"
#endif

namespace membrane::daemon {

inline double secondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Names of the agent's periodic tasks (cilium_controllers_*: Cilium's
// "controllers"; only their count and outcomes are exported).
inline constexpr const char* kControllerCtGc = "ct-map-gc";
inline constexpr const char* kControllerWorkloads = "workload-reconcile";
inline constexpr const char* kControllerProxy = "proxy-supervisor";
inline constexpr const char* kControllerHealth = "cilium-health-probe";

class Agent {
 public:
  // Brings the agent up: bpffs, datapath (reusing pinned maps), state restore,
  // metrics server, API socket, background threads. Any failure stops and
  // undoes what was started, with an error that says what to do.
  static Result<std::unique_ptr<Agent>> start(const Config& cfg);
  // `membraned cleanup`: removes every endpoint, pin, route, device and state file.
  static Status cleanup(const Config& cfg);

  ~Agent();
  // Stops the API and threads. BPF programs and pinned maps stay: enforcement continues.
  void stop();

 private:
  explicit Agent(const Config& cfg);
  Status init();
  void registerRoutes();
  void eventLoop();
  void gcLoop();
  // Policy changes and their state file (src/daemon/policy_handlers.cc).
  Status loadPolicyState() REQUIRES(mu_);
  // Writes policy.json with mu_ released around the write (and fsync).
  Status savePolicyState() REQUIRES(change_mu_, mu_);
  void updatePolicyMetrics() REQUIRES(mu_);
  // A stored import that no longer loads (loadPolicyState): kept as stored,
  // with the keys ("Kind/ns/name") still waiting for a fix or a delete.
  struct HeldImport {
    nlohmann::json import;
    std::string error;
    std::set<std::string> keys;
  };
  // Everything a policy change may alter before it is committed.
  struct PolicySnapshot {
    policy::Repository repo;
    nlohmann::json imports;
    std::vector<HeldImport> held;
  };
  PolicySnapshot policySnapshot() const REQUIRES(mu_);
  // Realize (unless held) and persist the current policy; the error names the step.
  // reason: the policy update trigger's (metrics::kTriggerPolicy*).
  Status commitPolicyChange(std::string_view reason) REQUIRES(change_mu_, mu_);
  // Puts `before` back and realizes it again.
  Status rollbackPolicyChange(PolicySnapshot before) REQUIRES(change_mu_, mu_);
  // commit, or roll back and answer with what failed.
  api::Response finishPolicyChange(PolicySnapshot before, const std::string& what, std::string_view reason,
                                   std::chrono::steady_clock::time_point t0, nlohmann::json ok_body)
      REQUIRES(change_mu_, mu_);
  std::string heldMessage() const REQUIRES(mu_);  // "" when nothing is held
  void applyHold() REQUIRES(mu_);                 // held_ -> endpoint manager hold + metric

  // Handlers (take mu_ themselves; the API server calls them without it).
  api::Response healthz(const api::Request& req) EXCLUDES(mu_);
  api::Response listEndpoints(const api::Request& req) EXCLUDES(mu_);
  api::Response createEndpoint(const api::Request& req) EXCLUDES(mu_);
  api::Response getEndpoint(const api::Request& req) EXCLUDES(mu_);
  api::Response deleteEndpoint(const api::Request& req) EXCLUDES(mu_);
  api::Response listIdentities(const api::Request& req) EXCLUDES(mu_);
  api::Response getIdentity(const api::Request& req) EXCLUDES(mu_);
  api::Response getPolicy(const api::Request& req) EXCLUDES(mu_);
  api::Response importPolicy(const api::Request& req) EXCLUDES(mu_);
  api::Response deletePolicy(const api::Request& req) EXCLUDES(mu_);
  api::Response listMetrics(const api::Request& req) EXCLUDES(mu_);
  api::Response listCt(const api::Request& req) EXCLUDES(mu_);
  api::Response getBpfPolicy(const api::Request& req) EXCLUDES(mu_);
  api::Response patchEndpointConfig(const api::Request& req) EXCLUDES(mu_);
  api::Response listNamespaces(const api::Request& req) EXCLUDES(mu_);
  api::Response healthStatus(const api::Request& req) EXCLUDES(mu_);
  api::Response tracePolicy(const api::Request& req) EXCLUDES(mu_);
  Status startHealth() EXCLUDES(mu_);
  api::Response putNamespace(const api::Request& req) EXCLUDES(mu_);
  // membrane-cni's API (src/daemon/cni_handlers.cc; contract: src/cni/agent_api.h).
  api::Response cniAdd(const api::Request& req) EXCLUDES(mu_);
  api::Response cniDel(const api::Request& req) EXCLUDES(mu_);
  api::Response cniCheck(const api::Request& req) EXCLUDES(mu_);
  api::Response cniGc(const api::Request& req) EXCLUDES(mu_);
  // GET /v1/policy/wait: answers at once when realized, else registers a
  // waiter (holding no thread) that notifyPolicyWaiters() or its timeout completes.
  void waitPolicy(const api::Request& req, std::shared_ptr<api::PendingResponse> reply) EXCLUDES(mu_);
  // Completes the waiters whose revision every endpoint now realizes (takes
  // mu_: call without it). Called wherever the policy revision or the
  // endpoint set may have changed.
  void notifyPolicyWaiters() EXCLUDES(mu_);
  // The lowest policy revision every endpoint realizes (caller holds mu_).
  uint64_t realizedRevision() REQUIRES(mu_);
  // The answer of a wait whose time ran out (caller holds mu_).
  api::Response policyWaitExpired(uint64_t rev, int timeout_s) REQUIRES(mu_);
  void refreshCookieNames() REQUIRES(mu_) EXCLUDES(cookie_mu_);
  // Workloads (src/daemon/workload_handlers.cc): membrane apply/delete/get/logs.
  Status startWorkloads() EXCLUDES(mu_);     // the controller and its restore (init), no thread yet
  void startWorkloadLoop();    // the tick thread, once the proxy is up
  // ControllerConfig::unlocked and ManagerConfig::unlocked: fn (a pod
  // process start, a pod network's netlink calls) with mu_ released. The
  // controller and the endpoint manager call it from inside their own calls,
  // which all run under change_mu_ and mu_ (change_mu_ keeps every other
  // writer out meanwhile; readers may run). The analysis cannot follow the
  // std::function hooks, so the requirement is stated here. (At init, before
  // any other thread runs, the controller's restore calls it with mu_ alone.)
  void runWithoutStateLock(const std::function<void()>& fn) REQUIRES(mu_);
  void workloadLoop() EXCLUDES(mu_);
  api::Response applyManifests(const api::Request& req) EXCLUDES(mu_);
  api::Response deleteManifests(const api::Request& req) EXCLUDES(mu_);
  api::Response listPods(const api::Request& req) EXCLUDES(mu_);
  api::Response deletePod(const api::Request& req) EXCLUDES(mu_);
  api::Response listDeployments(const api::Request& req) EXCLUDES(mu_);
  api::Response listServices(const api::Request& req) EXCLUDES(mu_);
  // Until `pods` ("ns/name", those a workload change began stopping) are
  // gone (bounded by their grace period), without holding mu_ while waiting.
  void awaitPodStops(const std::set<std::string>& pods) EXCLUDES(change_mu_, mu_);
  // L7: the proxy config computed from policies + endpoints (planProxy, under
  // mu_), pushed with mu_ released (realizeProxy: a restart of a dead proxy,
  // the push, the veths' accept_local). Callers hold the change lock, which
  // also orders the pushes (revisions only go up).
  struct L7Peer {
    uint32_t id = 0;
    std::vector<std::string> labels;
  };
  struct ProxyPlan {
    nlohmann::json config;
    std::map<uint32_t, L7Peer> peers;  // endpoint IP (host order) -> id, labels
    std::vector<std::string> accept_local;  // /proc/sys paths to set to 1
  };
  ProxyPlan planProxy() REQUIRES(mu_);
  Status realizeProxy(ProxyPlan plan) REQUIRES(change_mu_) EXCLUDES(mu_, l7_peers_mu_);
  Status syncProxy() REQUIRES(change_mu_, mu_) EXCLUDES(l7_peers_mu_);
  Status startProxy() EXCLUDES(mu_);
  void accessLogLoop();
  // GET /v1/monitor: subscribes the stream to the hub and returns; the
  // stream's onClose unsubscribes (client gone, agent stopping).
  void monitor(const api::Request& req, std::shared_ptr<api::StreamWriter> out);
  // Sets the datapath's event flags from what monitor clients want now
  // (MB_CFG_F_TRACE_EVENTS, MB_CFG_F_NO_ALLOWED_VERDICTS): events nobody
  // reads are not produced. Takes only event_flags_mu_ (not mu_).
  void syncEventFlags();

  Config cfg_;
  // The change lock (see the header comment): taken before mu_.
  Mutex change_mu_;
  // The state lock (see the header comment). Timed so that GET /v1/healthz
  // can stop waiting for a slow operation and answer from healthz_cache_
  // (membrane::TimedMutex, not std::timed_mutex: see mutex.h).
  TimedMutex mu_;
  static constexpr std::chrono::milliseconds kHealthzLockWait{50};
  Mutex healthz_cache_mu_;
  nlohmann::json healthz_cache_ GUARDED_BY(healthz_cache_mu_);  // the last answer computed under mu_
  std::chrono::steady_clock::time_point healthz_cache_at_ GUARDED_BY(healthz_cache_mu_);
  std::mutex event_flags_mu_;  // serialises syncEventFlags' read-modify-write of the config map
  std::unique_ptr<kernel::Datapath> dp_;
  identity::IdentityAllocator ids_ GUARDED_BY(mu_);
  policy::Repository repo_ GUARDED_BY(mu_);
  std::unique_ptr<metrics::AgentMetrics> metrics_;
  class DatapathMetrics;  // kernel::DatapathObserver -> metrics_ (agent.cc)
  std::unique_ptr<DatapathMetrics> dp_observer_;
  std::unique_ptr<endpoint::Manager> eps_ PT_GUARDED_BY(mu_);  // set once in init()
  std::unique_ptr<metrics::MetricsServer> metrics_server_;
  std::unique_ptr<api::HttpServer> api_;
  MonitorHub hub_;
  std::unique_ptr<health::HelloServer> hello_endpoint_;  // in the health endpoint's netns
  std::unique_ptr<health::HelloServer> hello_host_;      // on the node's (gateway) address
  std::unique_ptr<health::HealthChecker> health_;
  std::unique_ptr<workload::Controller> workloads_ PT_GUARDED_BY(mu_);  // set once in init()
  std::thread workload_thread_;
  // Imports as given (source name + text) so that a restart re-parses exactly what the user wrote.
  nlohmann::json policy_imports_ GUARDED_BY(mu_) = nlohmann::json::array();
  std::vector<HeldImport> held_ GUARDED_BY(mu_);  // see HeldImport; non-empty = policy enforcement held
  // GET /v1/policy/wait requests not answered yet (guarded by mu_);
  // policy_waiting_ mirrors !empty() so handlers skip mu_ when nobody waits.
  struct PolicyWaiter {
    uint64_t revision;
    std::shared_ptr<api::PendingResponse> reply;
  };
  std::vector<PolicyWaiter> policy_waiters_ GUARDED_BY(mu_);
  std::atomic<bool> policy_waiting_{false};
  std::atomic<bool> stopping_{false};
  std::thread event_thread_;
  std::thread gc_thread_;
  std::mutex gc_mu_;
  std::condition_variable gc_cv_;
  int64_t boot_to_real_ns_ = 0;
  // cookie -> "ns/name" for event attribution, read by the event thread
  // without taking mu_ (the repository is not thread-safe).
  Mutex cookie_mu_;
  std::map<uint32_t, std::string> cookie_names_ GUARDED_BY(cookie_mu_);
  std::chrono::steady_clock::time_point started_;
  // L7 proxy (null when --enable-l7-proxy=false).
  std::unique_ptr<ProxyManager> proxy_;
  L7Ports l7_ports_;
  uint64_t proxy_revision_ GUARDED_BY(mu_) = 0;
  // eps_->generation() of the last config planned for the proxy: the
  // workload loop syncs only when the endpoint set changed since.
  uint64_t proxy_generation_ GUARDED_BY(mu_) = ~uint64_t{0};
  std::atomic<size_t> proxy_redirects_{0};  // in the last config the proxy accepted
  // The policy revision of the last change that completed (realized, pushed,
  // persisted): GET /v1/policy/wait never answers for a change in progress,
  // which may still be rolled back.
  uint64_t committed_revision_ GUARDED_BY(mu_) = 0;
  nlohmann::json proxyStatusJson() REQUIRES(mu_);  // GET /v1/healthz "proxy"
  std::thread accesslog_thread_;
  std::unique_ptr<Wakeup> accesslog_wake_;  // set by startProxy, before the relay thread and any monitor client
  // Restarts a dead proxy as soon as it exits (blocks on its pidfd and on
  // supervisor_wake_, which stop() notifies).
  std::thread proxy_supervisor_thread_;
  std::unique_ptr<Wakeup> supervisor_wake_;  // set by startProxy
  void proxySupervisorLoop() EXCLUDES(change_mu_, mu_);
  // Endpoint IP (host order) -> {id, labels} for l7 monitor events; written by
  // realizeProxy, read by the access-log thread.
  Mutex l7_peers_mu_;
  std::map<uint32_t, L7Peer> l7_peers_ GUARDED_BY(l7_peers_mu_);
  void publishAccessLogLine(std::string_view line) EXCLUDES(l7_peers_mu_);
  // The relay's stream from the proxy started (every request is logged to
  // it) or ended; starting resumes the l7 monitor clients held in l7_pending_.
  void setAccessLogLive(bool live) EXCLUDES(l7_relay_mu_);
  bool accessLogWanted() EXCLUDES(l7_relay_mu_);  // the relay's wanted() hook
  static constexpr const char* kMonitorSubscribed = R"({"type":"subscribed"})";  // a monitor stream's first line
  Mutex l7_relay_mu_;  // before the hub's lock
  bool l7_relay_live_ GUARDED_BY(l7_relay_mu_) = false;
  std::vector<std::shared_ptr<MonitorHub::Subscription>> l7_pending_ GUARDED_BY(l7_relay_mu_);
  bool stopped_ = false;
};

}  // namespace membrane::daemon
