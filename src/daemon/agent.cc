#include "src/daemon/agent.h"
#include "src/daemon/agent_internal.h"
#include "src/daemon/api_errors.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/vfs.h>
#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <set>
#include <ctime>
#include <regex>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "bpf/shared/datapath.h"
#include "membrane/drop_reason.h"
#include "src/daemon/policy_state.h"
#include "src/endpoint/ipam.h"
#include "src/endpoint/state_store.h"
#include "src/kernel/events.h"
#include "src/kernel/netns.h"
#include "src/kernel/pod_networks.h"
#include "src/kernel/process_runner.h"

#ifndef BPF_FS_MAGIC
#define BPF_FS_MAGIC 0xcafe4a11
#endif

namespace membrane::daemon {
namespace {

using nlohmann::json;
using api::Request;
using api::Response;

Status ensureBpffs() {
  struct statfs st {};
  if (statfs("/sys/fs/bpf", &st) == 0 && static_cast<unsigned long>(st.f_type) == BPF_FS_MAGIC) return okStatus();
  ::mkdir("/sys/fs/bpf", 0755);
  if (mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") != 0)
    return Error::fromErrno(errno, "mount bpffs on /sys/fs/bpf (needed for pinned maps; try: mount -t bpf bpf /sys/fs/bpf)");
  return okStatus();
}

int64_t bootToRealtimeOffsetNs() {
  timespec rt{}, bt{};
  clock_gettime(CLOCK_REALTIME, &rt);
  clock_gettime(CLOCK_BOOTTIME, &bt);
  return (rt.tv_sec - bt.tv_sec) * 1000000000LL + (rt.tv_nsec - bt.tv_nsec);
}

std::string defaultProxyBinary() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "membrane-proxy";
  std::string self(buf, static_cast<size_t>(n));
  auto slash = self.rfind('/');
  return (slash == std::string::npos ? std::string(".") : self.substr(0, slash)) + "/membrane-proxy";
}

// A scrape-time source that calls `fn` at most once per `interval` and
// answers with its last result in between (an error is not cached: the next
// scrape tries again). Safe for concurrent scrapes.
template <class T>
std::function<Result<T>()> cachedFor(std::chrono::seconds interval, std::function<Result<T>()> fn) {
  struct Cache {
    std::mutex mu;
    std::chrono::steady_clock::time_point at{};
    T value{};
  };
  auto cache = std::make_shared<Cache>();
  return [interval, fn = std::move(fn), cache]() -> Result<T> {
    std::lock_guard lk(cache->mu);
    const auto now = std::chrono::steady_clock::now();
    if (cache->at != std::chrono::steady_clock::time_point{} && now - cache->at < interval) return cache->value;
    auto fresh = fn();
    if (!fresh) return fresh.error();
    cache->value = std::move(*fresh);
    cache->at = now;
    return cache->value;
  };
}

}  // namespace

uint64_t boottimeNs() {
  timespec bt{};
  clock_gettime(CLOCK_BOOTTIME, &bt);
  return static_cast<uint64_t>(bt.tv_sec) * 1000000000ULL + static_cast<uint64_t>(bt.tv_nsec);
}

ProxyManagerConfig proxyManagerConfig(const Config& cfg) {
  ProxyManagerConfig pc;
  pc.binary = cfg.proxy_binary.empty() ? defaultProxyBinary() : cfg.proxy_binary;
  pc.control_socket = cfg.proxy_control_socket;
  pc.pidfile = cfg.state_dir + "/proxy.pid";
  pc.log_file = cfg.state_dir + "/proxy.log";
  pc.header_timeout_ms = cfg.proxy_header_timeout_ms;
  pc.idle_timeout_ms = cfg.proxy_idle_timeout_ms;
  pc.escaped_slashes = cfg.proxy_escaped_slashes;
  return pc;
}

kernel::TproxyConfig tproxyConfig(const Config& cfg, const L7Ports& ports) {
  kernel::TproxyConfig t;
  t.table = cfg.proxy_route_table;
  t.rule_priority = cfg.proxy_rule_priority;
  t.chain = cfg.proxy_iptables_chain;
  if (ports.ingress) t.ports = {ports.ingress, ports.egress};
  return t;
}

const char* protoName(uint8_t p) {
  switch (p) {
    case IPPROTO_TCP: return "TCP";
    case IPPROTO_UDP: return "UDP";
    case IPPROTO_ICMP: return "ICMP";
    case IPPROTO_SCTP: return "SCTP";
    case 0: return "ANY";
    default: return "?";
  }
}

std::optional<uint32_t> parseId(const std::string& s) {
  if (s.empty() || s.size() > 9) return std::nullopt;
  uint32_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint32_t>(c - '0');
  }
  return v;
}

// The datapath's reports, as metrics (the kernel module knows no AgentMetrics).
class Agent::DatapathMetrics final : public kernel::DatapathObserver {
 public:
  explicit DatapathMetrics(metrics::AgentMetrics& m) : m_(m) {}
  void ipcacheEvent(std::string_view type) override { m_.recordIpcacheEvent(type); }
  void ipcacheError(std::string_view type, std::string_view error) override { m_.recordIpcacheError(type, error); }
  bool timeMapSyscalls() const override { return m_.bpfSyscallDurationEnabled(); }
  void mapSyscall(std::string_view operation, bool success, double seconds) override {
    m_.observeBpfSyscall(operation, success, seconds);
  }

 private:
  metrics::AgentMetrics& m_;
};

Agent::Agent(const Config& cfg) : cfg_(cfg), started_(std::chrono::steady_clock::now()) {}

Agent::~Agent() { stop(); }

Result<std::unique_ptr<Agent>> Agent::start(const Config& cfg) {
  std::unique_ptr<Agent> a(new Agent(cfg));
  auto st = a->init();
  if (!st.ok()) {
    a->stop();
    return st.error();
  }
  return a;
}

Status Agent::init() {
  // cilium_agent_bootstrap_seconds: each phase's time, under Cilium's scope names.
  using Clock = std::chrono::steady_clock;
  const auto t_start = Clock::now();
  auto cidr = endpoint::Cidr4::parse(cfg_.pod_cidr);
  if (!cidr) return cidr.error().wrap("--pod-cidr");
  MB_TRY(ensureBpffs());
  MB_TRY_CTX(endpoint::makeDirs(cfg_.state_dir), "--state-dir");
  boot_to_real_ns_ = bootToRealtimeOffsetNs();
  const double early_init = secondsSince(t_start);

  const auto t_bpf = Clock::now();
  kernel::DatapathOptions dopt;
  dopt.bpf_root = cfg_.bpf_root;
  auto dp = kernel::Datapath::open(dopt);
  if (!dp) return dp.error().wrap("load BPF datapath");
  dp_ = std::move(*dp);
  const double bpf_base = secondsSince(t_bpf);

  metrics_ = std::make_unique<metrics::AgentMetrics>();
  metrics_->setLegacyNames(cfg_.metrics_legacy_names);
  MB_TRY(metrics_->enableMetrics(cfg_.metrics));
  dp_observer_ = std::make_unique<DatapathMetrics>(*metrics_);
  dp_->setObserver(dp_observer_.get());
  metrics_->setBootstrapSeconds("earlyInit", true, early_init);
  metrics_->setBootstrapSeconds("bpfBase", true, bpf_base);
  logMetricsSink()->attach(metrics_.get());
  for (const char* c : {kControllerCtGc, kControllerWorkloads, kControllerProxy, kControllerHealth})
    metrics_->declareController(c);
  kernel::Datapath* dpp = dp_.get();
  metrics_->registerDatapathSource([dpp]() -> Result<std::vector<metrics::DatapathCounter>> {
    auto rows = dpp->readMetrics();
    if (!rows) return rows.error();
    std::vector<metrics::DatapathCounter> out;
    out.reserve(rows->size());
    for (const auto& r : *rows) out.push_back({r.reason, r.direction, r.packets, r.bytes});
    return out;
  });
  // Map pressure needs an entry count per map, i.e. a walk over every map
  // (conntrack included: O(entries) syscalls); the system-wide BPF memory a
  // walk over every map and program id. A scrape every few seconds from
  // several Prometheus servers must not turn into continuous walks, so each
  // runs at most once per 5 s and scrapes in between get the last result
  // (these move slowly; Cilium also updates them periodically, not per scrape).
  constexpr auto kWalkInterval = std::chrono::seconds(5);
  metrics_->registerMapPressureSource(cachedFor<std::vector<metrics::MapPressure>>(kWalkInterval, [dpp]()
      -> Result<std::vector<metrics::MapPressure>> {
    auto usage = dpp->mapUsage();
    if (!usage) return usage.error();
    std::vector<metrics::MapPressure> out;
    for (const auto& u : *usage)
      if (u.max_entries > 0) out.push_back({u.name, static_cast<double>(u.entries) / u.max_entries, u.max_entries});
    return out;
  }));
  metrics_->registerBpfMemorySource(cachedFor<std::vector<metrics::BpfMemory>>(kWalkInterval, []()
      -> Result<std::vector<metrics::BpfMemory>> {
    auto u = kernel::systemBpfMemory();
    if (!u) return u.error();
    return std::vector<metrics::BpfMemory>{{u->maps_bytes, u->progs_bytes}};
  }));
  // One node: this one, known from the start (the cluster mode adds the others).
  metrics_->setNodes(1);
  metrics_->recordNodeEvent(metrics::kNodeEventAdd, "local");

  metrics_->registerMapOpsSource([dpp]() -> Result<std::vector<metrics::MapOps>> {
    std::vector<metrics::MapOps> out;
    for (const auto& o : dpp->mapOps()) out.push_back({o.map_name, o.operation, o.outcome, o.count});
    return out;
  });

  endpoint::ManagerConfig mc;
  mc.state_dir = cfg_.state_dir;
  mc.pod_cidr = *cidr;
  mc.host_device = cfg_.host_device;
  mc.mode = cfg_.enable_policy == "always"  ? endpoint::EnforcementMode::Always
            : cfg_.enable_policy == "never" ? endpoint::EnforcementMode::Never
                                            : endpoint::EnforcementMode::Default;
  mc.audit = cfg_.policy_audit_mode;
  mc.bpf_root = cfg_.bpf_root;
  if (cfg_.enable_l7_proxy) {
    auto ports = parseProxyPortRange(cfg_.proxy_port_range);
    if (!ports) return ports.error();
    l7_ports_ = *ports;
    mc.proxy_port_ingress = l7_ports_.ingress;
    mc.proxy_port_egress = l7_ports_.egress;
  }
  // Netlink steps of endpoint create/delete run with mu_ released (every
  // caller holds change_mu_: see runWithoutStateLock).
  mc.unlocked = [this](const std::function<void()>& fn) NO_THREAD_SAFETY_ANALYSIS { runWithoutStateLock(fn); };
  const auto t_restore = Clock::now();
  {
    // No other thread runs yet; the lock is for the analysis (ids_ and repo_
    // are guarded, and the manager keeps references to them).
    MutexLock lk(mu_);
    eps_ = std::make_unique<endpoint::Manager>(mc, *dp_, kernel::linuxPodNetworks(), ids_, repo_, *metrics_);
    MB_TRY_CTX(loadPolicyState(), "restore policies from " + cfg_.state_dir + "/policy.json");
    // Namespace labels are part of every pod's identity there: a damaged
    // file refuses the start (eps_->init() would go on without the labels).
    if (auto ns = endpoint::readNamespaceState(cfg_.state_dir + "/namespaces.json"); !ns)
      return Error::invalid(fmt::format("restore namespace labels: {}; fix the field, or move the file away to start "
                                        "without namespace labels",
                                        ns.error().message));
    MB_TRY_CTX(eps_->init(), "restore endpoints");
    updatePolicyMetrics();
    refreshCookieNames();
  }
  metrics_->setBootstrapSeconds("restore", true, secondsSince(t_restore));
  const auto t_workloads = Clock::now();
  MB_TRY_CTX(startWorkloads(), "workloads (--service-cidr " + cfg_.service_cidr + ")");
  metrics_->setBootstrapSeconds("workloadsInit", true, secondsSince(t_workloads));
  if (cfg_.enable_l7_proxy) {
    const auto t_proxy = Clock::now();
    MB_TRY_CTX(startProxy(), "L7 proxy (--enable-l7-proxy=false disables it)");
    metrics_->setBootstrapSeconds("proxyStart", true, secondsSince(t_proxy));
  }
  startWorkloadLoop();

  if (cfg_.enable_health_checking) {
    const auto t_health = Clock::now();
    MB_TRY_CTX(startHealth(), "health checking (--enable-health-checking=false disables it)");
    metrics_->setBootstrapSeconds("healthCheck", true, secondsSince(t_health));
  }

  const auto t_api = Clock::now();
  auto ms = metrics::MetricsServer::start(cfg_.prometheus_serve_addr, *metrics_);
  if (!ms) return ms.error();
  metrics_server_ = std::move(*ms);

  api_ = std::make_unique<api::HttpServer>(cfg_.api_socket);
  registerRoutes();
  MB_TRY_CTX(api_->start(), "serve API on " + cfg_.api_socket);
  metrics_->setBootstrapSeconds("initAPI", true, secondsSince(t_api));

  syncEventFlags();  // nobody watches yet
  event_thread_ = std::thread([this] { eventLoop(); });
  if (proxy_) {
    accesslog_thread_ = std::thread([this] { accessLogLoop(); });
    proxy_supervisor_thread_ = std::thread([this] { proxySupervisorLoop(); });
  }
  gc_thread_ = std::thread([this] { gcLoop(); });
  metrics_->setBootstrapSeconds("overall", true, secondsSince(t_start));
  return okStatus();
}

void Agent::stop() {
  if (stopped_) return;
  stopped_ = true;
  stopping_ = true;
  if (accesslog_wake_) accesslog_wake_->notify();
  if (supervisor_wake_) supervisor_wake_->notify();
  if (health_) health_->stop();
  gc_cv_.notify_all();
  hub_.closeAll();
  if (api_) api_->stop();
  if (event_thread_.joinable()) event_thread_.join();
  if (accesslog_thread_.joinable()) accesslog_thread_.join();
  if (proxy_supervisor_thread_.joinable()) proxy_supervisor_thread_.join();
  if (gc_thread_.joinable()) gc_thread_.join();
  if (workload_thread_.joinable()) workload_thread_.join();
  logMetricsSink()->detach();  // every thread that logs is joined (health_ stopped above)
  metrics_server_.reset();
  // The datapath object goes, the programs and pinned maps stay in the kernel.
}

Status Agent::cleanup(const Config& cfg) {
  // Bring up just enough to know and remove what exists; no API, no metrics.
  auto cidr = endpoint::Cidr4::parse(cfg.pod_cidr);
  if (!cidr) return cidr.error().wrap("--pod-cidr");
  MB_TRY(ensureBpffs());
  kernel::DatapathOptions dopt;
  dopt.bpf_root = cfg.bpf_root;
  auto dp = kernel::Datapath::open(dopt);
  if (!dp) return dp.error().wrap("load BPF datapath");
  identity::IdentityAllocator ids;
  policy::Repository repo;
  metrics::AgentMetrics metrics;
  endpoint::ManagerConfig mc;
  mc.state_dir = cfg.state_dir;
  mc.pod_cidr = *cidr;
  mc.host_device = cfg.host_device;
  mc.bpf_root = cfg.bpf_root;
  endpoint::Manager mgr(mc, **dp, kernel::linuxPodNetworks(), ids, repo, metrics);
  auto st = mgr.init();
  if (!st.ok()) spdlog::warn("cleanup: {}", st.error().message);
  Status first = okStatus();
  if (auto svc = endpoint::Cidr4::parse(cfg.service_cidr); svc.ok()) {
    // Pod processes first (they run in the endpoints' namespaces), services, route.
    workload::Controller wl({cfg.state_dir, *svc, "", {}}, mgr, **dp, kernel::linuxPodNetworks(),
                            kernel::linuxProcessRunner());
    if (auto ld = wl.load(); !ld.ok()) spdlog::warn("cleanup: {}", ld.error().message);
    first = wl.removeAll();
  } else {
    first = svc.error().wrap("--service-cidr");
  }
  if (auto st2 = mgr.removeAll(); !st2.ok() && first.ok()) first = st2;
  dp->reset();
  auto pins = kernel::Datapath::removePins(cfg.bpf_root);
  if (!pins.ok() && first.ok()) first = pins;
  if (cfg.enable_l7_proxy) {
    (void)ProxyManager::stopAndRemove(proxyManagerConfig(cfg));
    auto ports = parseProxyPortRange(cfg.proxy_port_range);
    auto tp = removeTproxy(tproxyConfig(cfg, ports.ok() ? *ports : L7Ports{}));
    if (!tp.ok() && first.ok()) first = tp;
    ::unlink((cfg.state_dir + "/proxy.log").c_str());
  }
  endpoint::removeFile(cfg.state_dir + "/policy.json").ok();
  ::rmdir((cfg.state_dir + "/endpoints").c_str());
  ::rmdir(cfg.state_dir.c_str());
  return first;
}

// ---------------------------------------------------------------------------
// Background work.

void Agent::gcLoop() {
  while (!stopping_) {
    {
      std::unique_lock lk(gc_mu_);
      gc_cv_.wait_for(lk, std::chrono::seconds(cfg_.ct_gc_interval_seconds), [this] { return stopping_.load(); });
    }
    if (stopping_) break;
    auto t0 = std::chrono::steady_clock::now();
    auto gc = dp_->gcCt(boottimeNs());
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    metrics_->recordControllerRun(kControllerCtGc, gc.ok(), secs);
    if (!gc) {
      spdlog::warn("conntrack GC: {}", gc.error().message);
      metrics_->recordConntrackGc(metrics::CtFamily::Ipv4, metrics::CtProtocol::Tcp, false, secs, 0, 0);
      metrics_->recordConntrackGc(metrics::CtFamily::Ipv4, metrics::CtProtocol::NonTcp, false, secs, 0, 0);
    } else {
      metrics_->recordConntrackGc(metrics::CtFamily::Ipv4, metrics::CtProtocol::Tcp, gc->completed, secs,
                                  gc->tcp_alive, gc->tcp_deleted);
      metrics_->recordConntrackGc(metrics::CtFamily::Ipv4, metrics::CtProtocol::NonTcp, gc->completed, secs,
                                  gc->other_alive, gc->other_deleted);
      metrics_->recordConntrackWalk(metrics::CtFamily::Ipv4, gc->interrupts, gc->tcp_key_fallbacks,
                                    gc->other_key_fallbacks);
      if (gc->deleted()) spdlog::debug("conntrack GC: {} expired entries deleted", gc->deleted());
    }
  }
}

void Agent::refreshCookieNames() {
  // Every cookie the repository knows: loaded policies and held ones (whose
  // entries stay in the kernel).
  std::map<uint32_t, std::string> names;
  for (const auto& [key, cookie] : repo_.cookies()) names[cookie] = repo_.policyForCookie(cookie);
  MutexLock lk(cookie_mu_);
  // Keep names of removed policies: events in flight may still carry their cookies.
  for (auto& [c, n] : names) cookie_names_[c] = n;
}

void Agent::updatePolicyMetrics() {
  size_t rules = 0;
  for (const auto& p : repo_.policies()) rules += p.rules.size();
  metrics_->setPolicyCount(static_cast<int64_t>(rules));
  metrics_->setPolicyMaxRevision(repo_.revision());
}

// ---------------------------------------------------------------------------
// API.

void Agent::registerRoutes() {
  auto bind = [this](Response (Agent::*fn)(const Request&)) {
    return [this, fn](const Request& r) {
      const auto t0 = std::chrono::steady_clock::now();
      Response resp = (this->*fn)(r);
      metrics_->observeApiCall(r.path, r.method, resp.status, secondsSince(t0));
      // A handler may have moved the policy revision or the endpoint set
      // (import, delete, endpoint create/delete, apply): answer the
      // GET /v1/policy/wait requests it satisfied.
      if (policy_waiting_) notifyPolicyWaiters();
      return resp;
    };
  };
  api_->route("GET", "/v1/healthz", bind(&Agent::healthz));
  api_->route("GET", "/v1/endpoint", bind(&Agent::listEndpoints));
  api_->route("PUT", "/v1/endpoint", bind(&Agent::createEndpoint));
  api_->route("GET", "/v1/endpoint/{id}", bind(&Agent::getEndpoint));
  api_->route("DELETE", "/v1/endpoint/{id}", bind(&Agent::deleteEndpoint));
  api_->route("GET", "/v1/identity", bind(&Agent::listIdentities));
  api_->route("GET", "/v1/identity/{id}", bind(&Agent::getIdentity));
  api_->route("GET", "/v1/policy", bind(&Agent::getPolicy));
  api_->route("PUT", "/v1/policy", bind(&Agent::importPolicy));
  api_->route("DELETE", "/v1/policy", bind(&Agent::deletePolicy));
  api_->route("GET", "/v1/metrics", bind(&Agent::listMetrics));
  api_->route("GET", "/v1/bpf/ct", bind(&Agent::listCt));
  api_->route("GET", "/v1/bpf/policy/{id}", bind(&Agent::getBpfPolicy));
  api_->route("PATCH", "/v1/endpoint/{id}/config", bind(&Agent::patchEndpointConfig));
  api_->route("GET", "/v1/policy/wait",
              [this](const Request& r, std::shared_ptr<api::PendingResponse> p) { waitPolicy(r, std::move(p)); });
  api_->route("GET", "/v1/namespace", bind(&Agent::listNamespaces));
  api_->route("GET", "/v1/health", bind(&Agent::healthStatus));
  api_->route("GET", "/v1/policy/trace", bind(&Agent::tracePolicy));
  api_->route("PUT", "/v1/namespace/{name}", bind(&Agent::putNamespace));
  api_->route("PUT", "/v1/apply", bind(&Agent::applyManifests));
  api_->route("PUT", "/v1/delete", bind(&Agent::deleteManifests));
  api_->route("GET", "/v1/pods", bind(&Agent::listPods));
  api_->route("DELETE", "/v1/pods/{namespace}/{name}", bind(&Agent::deletePod));
  api_->route("GET", "/v1/deployments", bind(&Agent::listDeployments));
  api_->route("GET", "/v1/services", bind(&Agent::listServices));
  api_->route("PUT", "/v1/cni/add", bind(&Agent::cniAdd));
  api_->route("PUT", "/v1/cni/del", bind(&Agent::cniDel));
  api_->route("PUT", "/v1/cni/check", bind(&Agent::cniCheck));
  api_->route("PUT", "/v1/cni/gc", bind(&Agent::cniGc));
  api_->routeStream("GET", "/v1/monitor",
                    [this](const Request& r, std::shared_ptr<api::StreamWriter> w) { monitor(r, std::move(w)); });
}

Response Agent::listMetrics(const Request&) {
  json arr = json::array();
  for (const auto& s : metrics_->samples()) arr.push_back({{"name", s.name}, {"labels", s.labels}, {"value", s.value}});
  return Response::json(200, arr);
}

}  // namespace membrane::daemon
