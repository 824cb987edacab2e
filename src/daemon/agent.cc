#include "src/daemon/agent.h"
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

uint64_t boottimeNs() {
  timespec bt{};
  clock_gettime(CLOCK_BOOTTIME, &bt);
  return static_cast<uint64_t>(bt.tv_sec) * 1000000000ULL + static_cast<uint64_t>(bt.tv_nsec);
}

std::string defaultProxyBinary() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "membrane-proxy";
  std::string self(buf, static_cast<size_t>(n));
  auto slash = self.rfind('/');
  return (slash == std::string::npos ? std::string(".") : self.substr(0, slash)) + "/membrane-proxy";
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
// Health: an endpoint with identity 4 answering ICMP and GET /hello on 4240,
// the node answering GET /hello on its (gateway) address, and a prober.

Status Agent::startHealth() {
  uint32_t health_ip_be = 0;
  std::string netns_name;
  uint32_t gateway_be = 0;
  {
    MutexLock change(change_mu_);
    MutexLock lk(mu_);
    auto ep = eps_->ensureHealthEndpoint();
    if (!ep) return ep.error();
    health_ip_be = htonl(ep->ipv4);
    netns_name = ep->netns_name;
    gateway_be = htonl(eps_->config().pod_cidr.network + 1);
  }
  // A socket belongs to the netns it is created in: create the endpoint's
  // listener on a thread inside its netns, serve it from an ordinary thread.
  auto ns = kernel::Netns::open(netns_name);
  if (!ns) return ns.error();
  auto fd = ns->run([] { return health::listenTcp(health::kHealthPort); });
  if (!fd) return fd.error().wrap("health endpoint listener");
  auto srv = health::HelloServer::start(std::move(*fd));
  if (!srv) return srv.error();
  hello_endpoint_ = std::move(*srv);
  // The node side listens on the gateway address only, so agents with
  // different pod CIDRs on one machine never collide on 4240.
  {
    UniqueFd hfd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    int one = 1;
    ::setsockopt(hfd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(health::kHealthPort);
    a.sin_addr.s_addr = gateway_be;
    if (::bind(hfd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(hfd.get(), 64) != 0)
      return Error::fromErrno(errno, fmt::format("health: listen on {}:{}", ipv4HostOrderToString(ntohl(gateway_be)),
                                                 health::kHealthPort));
    auto hs = health::HelloServer::start(std::move(hfd));
    if (!hs) return hs.error();
    hello_host_ = std::move(*hs);
  }
  metrics::AgentMetrics* m = metrics_.get();
  health_ = std::make_unique<health::HealthChecker>(
      [gateway_be, health_ip_be] {
        return std::vector<health::NodeTarget>{{"localhost", gateway_be, health_ip_be}};
      },
      [m](const health::HealthReport& r) {
        // A round that probed every target is a successful run, whatever it found.
        m->recordControllerRun(kControllerHealth, true, r.round_seconds);
        m->setUnreachableNodes(r.unreachableNodes());
        m->setUnreachableHealthEndpoints(r.unreachableHealthEndpoints());
        int node_ok = 0, node_bad = 0, ep_ok = 0, ep_bad = 0, ep_unknown = 0;
        for (const auto& n : r.nodes) {
          (n.host.reachable() ? node_ok : node_bad)++;
          if (!n.endpoint) ep_unknown++;
          else (n.endpoint->reachable() ? ep_ok : ep_bad)++;
          auto lat = [m](const char* type, const health::PathStatus& p) {
            if (p.icmp.ok) m->observeNodeConnectivityLatency(type, "icmp", p.icmp.rtt_seconds);
            if (p.http.ok) m->observeNodeConnectivityLatency(type, "http", p.http.rtt_seconds);
          };
          lat("node", n.host);
          if (n.endpoint) lat("endpoint", *n.endpoint);
        }
        m->setNodeConnectivityStatus("node", node_ok, node_bad, 0);
        m->setNodeConnectivityStatus("endpoint", ep_ok, ep_bad, ep_unknown);
      },
      std::chrono::seconds(cfg_.health_check_interval_seconds));
  health_->start();
  return okStatus();
}

namespace {
json probeJson(const health::ProbeResult& p) {
  json j = {{"ok", p.ok}, {"rtt_seconds", p.rtt_seconds}};
  if (!p.ok) j["error"] = p.error;
  return j;
}
json pathJson(const health::PathStatus& p) {
  return {{"address", p.address}, {"icmp", probeJson(p.icmp)}, {"http", probeJson(p.http)}, {"reachable", p.reachable()}};
}
}  // namespace

Response Agent::healthStatus(const Request& req) {
  if (!health_) return Response::error(404, "health checking is disabled (membraned --enable-health-checking=false)");
  auto rep = req.queryValue("probe") == "true" ? std::optional<health::HealthReport>(health_->probeNow()) : health_->last();
  if (!rep) return Response::json(200, {{"nodes", json::array()}, {"probe_time", ""}});
  json nodes = json::array();
  for (const auto& n : rep->nodes) {
    json j = {{"name", n.name}, {"local", n.local}, {"host", pathJson(n.host)}};
    if (n.endpoint) j["endpoint"] = pathJson(*n.endpoint);
    nodes.push_back(j);
  }
  std::time_t t = std::chrono::system_clock::to_time_t(rep->probe_time);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  int total = static_cast<int>(rep->nodes.size());
  return Response::json(200, {{"probe_time", buf},
                              {"interval_seconds", rep->interval.count()},
                              {"reachable", rep->healthyNodes()},
                              {"total", total},
                              {"nodes", nodes}});
}

// ---------------------------------------------------------------------------
// L7 proxy: host plumbing, the proxy process, its config.

Status Agent::startProxy() {
  // The proxy first: it refuses a control socket another agent's proxy serves,
  // before anything node-global is touched.
  auto pm = ProxyManager::start(proxyManagerConfig(cfg_));
  if (!pm) return pm.error();
  auto wake = Wakeup::create();
  if (!wake) return wake.error().wrap("L7 access-log relay");
  accesslog_wake_ = std::make_unique<Wakeup>(std::move(*wake));
  auto sup_wake = Wakeup::create();
  if (!sup_wake) return sup_wake.error().wrap("L7 proxy supervisor");
  supervisor_wake_ = std::make_unique<Wakeup>(std::move(*sup_wake));
  // Before any monitor client or proxy restart: the relay waits for these.
  const Wakeup* w = accesslog_wake_.get();
  hub_.setOnChange([w] { w->notify(); });
  (*pm)->setOnStart([w] { w->notify(); });
  {
    MutexLock lk(mu_);  // proxy_ is read under mu_ by every handler
    proxy_ = std::move(*pm);
  }
  MB_TRY(kernel::installTproxy(tproxyConfig(cfg_, l7_ports_)));
  // The proxy keeps counting across agent restarts; /metrics reads it at scrape time.
  const ProxyManager* px = proxy_.get();
  metrics_->registerL7Source([px]() -> Result<std::vector<metrics::L7Stats>> {
    auto st = px->stats();
    if (!st) return st.error();
    metrics::L7Stats s;
    s.received = st->received;
    s.forwarded = st->forwarded;
    s.denied = st->denied;
    s.parse_errors = st->parse_errors;
    s.redirects_http = st->redirects_http;
    for (const auto& h : st->upstream_reply_seconds)
      s.upstream_reply_seconds.push_back({h.error, h.protocol_l7, h.scope, h.buckets, h.count, h.sum});
    return std::vector<metrics::L7Stats>{s};
  });
  MutexLock change(change_mu_);
  MutexLock lk(mu_);
  return syncProxy();
}

// A dead proxy means L7 traffic fails closed (no listener): bring it back
// with the current config as soon as it exits. The thread blocks on the
// proxy's pidfd (no clock); only while no proxy runs (a start failed) does
// it retry, every second.
void Agent::proxySupervisorLoop() {
  while (!stopping_) {
    auto exit_fd = proxy_->exitFd();
    pollfd p[2] = {{supervisor_wake_->fd(), POLLIN, 0}, {exit_fd ? exit_fd->get() : -1, POLLIN, 0}};
    while (::poll(p, 2, exit_fd ? -1 : 1000) < 0 && errno == EINTR) {
    }
    if (p[0].revents) supervisor_wake_->drain();
    if (stopping_) break;
    const auto t0 = std::chrono::steady_clock::now();
    bool ok = true;
    if (!proxy_->running()) {
      MutexLock change(change_mu_);
      MutexLock lk(mu_);
      if (!proxy_->running()) {  // a change may have restarted it meanwhile
        if (auto st = syncProxy(); !st.ok()) {
          spdlog::error("L7 proxy restart: {}", st.error().message);
          ok = false;
        }
      }
    }
    metrics_->recordControllerRun(kControllerProxy, ok, secondsSince(t0));
  }
}

json Agent::proxyStatusJson() {
  if (!proxy_) return {{"status", "disabled"}};
  bool up = proxy_->running();
  return {{"status", up ? "ok" : "down"},
          {"pid", proxy_->pid()},
          {"ip", ipv4HostOrderToString(eps_->config().pod_cidr.network + 1)},
          {"redirects", proxy_redirects_.load()},
          {"ports", fmt::format("{}-{}", l7_ports_.ingress, l7_ports_.egress)},
          {"control_socket", cfg_.proxy_control_socket}};
}

Agent::ProxyPlan Agent::planProxy() {
  ProxyPlan plan;
  std::vector<L7Endpoint> eps;
  std::map<uint32_t, std::vector<policy::NamedPort>> named_ports;
  for (const auto* ep : eps_->list()) {
    eps.push_back({ep->ipv4, ep->identity, ep->labels});
    if (!ep->named_ports.empty()) named_ports[ep->ipv4] = ep->named_ports;
    L7Peer& p = plan.peers[ep->ipv4];
    p.id = ep->id;
    for (const auto& l : ep->labels) p.labels.push_back(l.toString());
  }
  // The node's own address (gateway) is the host identity, as in the ipcache.
  std::vector<std::pair<uint32_t, uint32_t>> extra{
      {eps_->config().pod_cidr.network + 1, static_cast<uint32_t>(labels::Reserved::Host)}};
  plan.config =
      buildProxyConfig(++proxy_revision_, l7_ports_, repo_.policies(), eps, eps_->identityRefs(), extra, named_ports);
  // Host -> pod traffic to an ingress L7 port is hair-pinned back into the
  // stack through the pod's veth with the node's own source address; the
  // kernel drops that as a martian unless the veth accepts local sources
  // (from_endpoint's anti-spoofing already stops pods from using them).
  std::set<std::string> l7_ips;
  for (const auto& e : plan.config["endpoints"])
    if (!e["ingress"].empty()) l7_ips.insert(e["ip"].get<std::string>());
  for (const auto* ep : eps_->list())
    if (l7_ips.count(ipv4HostOrderToString(ep->ipv4)) && !ep->host_ifname.empty())
      plan.accept_local.push_back("/proc/sys/net/ipv4/conf/" + ep->host_ifname + "/accept_local");
  return plan;
}

Status Agent::realizeProxy(ProxyPlan plan) {
  MB_TRY(proxy_->ensureRunning());
  MB_TRY(proxy_->push(plan.config));
  proxy_redirects_ = countRedirects(plan.config);
  {
    MutexLock lk(l7_peers_mu_);
    l7_peers_ = std::move(plan.peers);
  }
  for (const auto& path : plan.accept_local) {
    if (FILE* f = std::fopen(path.c_str(), "w")) {
      std::fputs("1", f);
      std::fclose(f);
    } else {
      spdlog::warn("L7: cannot set {} (host -> pod L7 traffic will be dropped): {}", path, membrane::errnoText(errno));
    }
  }
  return okStatus();
}

Status Agent::syncProxy() {
  if (!proxy_) return okStatus();
  ProxyPlan plan = planProxy();
  // The slow part without the state lock: readers go on; writers wait for
  // the change lock, which the caller holds.
  MutexUnlock unlocked(mu_);
  return realizeProxy(std::move(plan));
}

// The proxy's access log, relayed to `membrane monitor --type l7`: one
// long-lived stream while someone watches l7 events, woken (accesslog_wake_)
// by monitor clients coming and going, by a restarted proxy and by stop().
void Agent::accessLogLoop() {
  proxy_->relayAccessLog(*accesslog_wake_, {[this] { return stopping_.load(); }, [this] { return accessLogWanted(); },
                                            [this](std::string_view line) { publishAccessLogLine(line); },
                                            [this](bool live) { setAccessLogLive(live); }});
}

bool Agent::accessLogWanted() {
  // Under l7_relay_mu_: a client that monitor() finds "live" is one the relay
  // still serves; once the relay decides nobody wants l7 events, new clients
  // wait (l7_pending_) for its next stream.
  MutexLock lk(l7_relay_mu_);
  const bool wanted = hub_.wants("l7");
  if (!wanted) l7_relay_live_ = false;
  return wanted;
}

void Agent::setAccessLogLive(bool live) {
  MutexLock lk(l7_relay_mu_);
  l7_relay_live_ = live;
  if (!live) return;
  for (const auto& s : l7_pending_) hub_.resume(s, kMonitorSubscribed);
  l7_pending_.clear();
}

void Agent::publishAccessLogLine(std::string_view line) {
  json j = json::parse(line, nullptr, false);
  if (!j.is_object()) return;
  // Name the local endpoints on both sides (Cilium: "from 0 ([labels]) to 2756 ([labels])").
  auto enrich = [&](const char* side) {
    if (!j.contains(side) || !j[side].is_object()) return;
    in_addr a{};
    if (inet_pton(AF_INET, j[side].value("ip", "").c_str(), &a) != 1) return;
    MutexLock lk(l7_peers_mu_);
    auto it = l7_peers_.find(ntohl(a.s_addr));
    j[side]["endpoint"] = it == l7_peers_.end() ? 0 : it->second.id;
    j[side]["labels"] = it == l7_peers_.end() ? std::vector<std::string>{} : it->second.labels;
  };
  enrich("src");
  enrich("dst");
  hub_.publish("l7", j.dump(-1, ' ', false, json::error_handler_t::replace));
}

// ---------------------------------------------------------------------------
// Background work.

void Agent::eventLoop() {
  auto reader = kernel::EventReader::open(dp_->eventsFd(), [this](const mb_event& ev) {
    json j = kernel::eventToJson(ev, boot_to_real_ns_);
    std::string type = j.value("type", "");
    if (type == "policy-verdict" || type == "drop") {
      // Attribution (Cilium users keep asking for it): which policy allowed
      // or denied the flow, or that nothing matched ("default deny").
      if (ev.cookie != 0) {
        MutexLock lk(cookie_mu_);
        auto it = cookie_names_.find(ev.cookie);
        if (it != cookie_names_.end()) {
          auto slash = it->second.find('/');
          j["policy"] = slash == std::string::npos
                            ? json{{"name", it->second}, {"namespace", ""}}
                            : json{{"name", it->second.substr(slash + 1)}, {"namespace", it->second.substr(0, slash)}};
        }
      } else if (type == "policy-verdict" || ev.subtype == MB_DROP_POLICY) {
        j["policy"] = {{"name", "default deny"}, {"namespace", ""}};
      }
    }
    hub_.publish(type, j.dump());
  });
  if (!reader) {
    spdlog::error("event reader: {} (monitor will show nothing)", reader.error().message);
    return;
  }
  while (!stopping_) {
    auto n = reader->poll(200);
    if (!n.ok() && n.error().code != EINTR) {
      spdlog::error("event reader: {}", n.error().message);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
}

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
  std::map<uint32_t, std::string> names;
  for (const auto& p : repo_.policies()) names[p.cookie] = p.displayName();
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
  api_->routeStream("GET", "/v1/monitor",
                    [this](const Request& r, std::shared_ptr<api::StreamWriter> w) { monitor(r, std::move(w)); });
}

Response Agent::healthz(const Request&) {
  // A slow operation (a pod that ignores SIGTERM, a proxy restart) may hold
  // mu_ for seconds; health checks must not see a healthy agent as dead. So
  // wait only briefly, then answer with the last figures and say how old they
  // are ("busy_seconds": how long this call found the lock taken).
  const auto asked = std::chrono::steady_clock::now();
  if (!mu_.try_lock_for(kHealthzLockWait)) {
    {
      MutexLock c(healthz_cache_mu_);
      if (!healthz_cache_.is_null()) {
        json j = healthz_cache_;
        const auto now = std::chrono::steady_clock::now();
        j["busy_seconds"] = std::chrono::duration<double>(now - asked).count();
        j["figures_age_seconds"] = std::chrono::duration<double>(now - healthz_cache_at_).count();
        return Response::json(200, j);
      }
    }
    mu_.lock();  // nothing cached yet (the API serves only after init)
  }
  MutexLock lk(mu_, std::adopt_lock);
  size_t not_ready = 0;
  for (const auto* ep : eps_->list())
    if (ep->state != endpoint::EndpointState::Ready) ++not_ready;
  const std::string held = heldMessage();
  std::string status = not_ready || !held.empty() ? "degraded" : "ok";
  std::string message = not_ready ? fmt::format("{} endpoints not ready", not_ready) : "";
  if (!held.empty()) message += (message.empty() ? "" : "; ") + held;
  json clusterHealth = nullptr;
  if (health_) {
    if (auto rep = health_->last()) {
      int total = static_cast<int>(rep->nodes.size());
      std::time_t t = std::chrono::system_clock::to_time_t(rep->probe_time);
      std::tm tm{};
      gmtime_r(&t, &tm);
      char buf[32];
      std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
      clusterHealth = {{"reachable", rep->healthyNodes()},
                       {"total", total},
                       {"probe_time", buf},
                       {"interval_seconds", cfg_.health_check_interval_seconds}};
    } else {
      clusterHealth = {{"pending", true}, {"interval_seconds", cfg_.health_check_interval_seconds}};
    }
  }
  auto up = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_).count();
  json j = {{"status", status},
            {"version", MEMBRANE_VERSION_STRING},
            {"revision", MEMBRANE_REVISION_STRING},
            {"uptime_seconds", up},
            {"endpoints", eps_->list().size()},
            {"policy_revision", repo_.revision()},
            {"datapath", {{"status", "ok"}, {"bpf_root", cfg_.bpf_root}}},
            {"pod_cidr", cfg_.pod_cidr},
            {"enforcement", cfg_.enable_policy},
            {"audit", cfg_.policy_audit_mode},
            {"cluster_health", clusterHealth},
            {"proxy", proxyStatusJson()},
            {"policy_held", held_.size()},
            {"message", message}};
  {
    MutexLock c(healthz_cache_mu_);
    healthz_cache_ = j;
    healthz_cache_at_ = std::chrono::steady_clock::now();
  }
  return Response::json(200, j);
}

Response Agent::listEndpoints(const Request& req) {
  MutexLock lk(mu_);
  auto name = req.queryValue("name");
  auto ns = req.queryValue("namespace");
  json arr = json::array();
  for (const auto* ep : eps_->list()) {
    if (!name.empty() && ep->name != name) continue;
    if (!ns.empty() && ep->ns != ns) continue;
    arr.push_back(endpoint::toApiJson(*ep));
  }
  return Response::json(200, arr);
}

Response Agent::createEndpoint(const Request& req) {
  json body = json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object())
    return Response::error(400, "request body must be a JSON object {\"name\", \"namespace\", \"labels\"}");
  if (!body.contains("name") || !body["name"].is_string())
    return Response::error(400, "field 'name' (string) is required");
  std::string name = body["name"];
  std::string ns = body.value("namespace", "default");
  if (!body.value("namespace", json("default")).is_string()) return Response::error(400, "field 'namespace' must be a string");
  labels::LabelSet user;
  if (body.contains("labels")) {
    const auto& l = body["labels"];
    if (l.is_object()) {
      for (const auto& [k, v] : l.items()) {
        if (!v.is_string()) return Response::error(400, fmt::format("label '{}': value must be a string", k));
        auto lab = labels::parseLabel(k + "=" + v.get<std::string>());
        if (!lab) return Response::error(400, lab.error().message);
        user.add(*lab);
      }
    } else if (l.is_string()) {
      auto ls = labels::parseLabels(l.get<std::string>());
      if (!ls) return Response::error(400, ls.error().message);
      user = *ls;
    } else {
      return Response::error(400, "field 'labels' must be an object {\"key\": \"value\"} or a string \"k=v,k2=v2\"");
    }
  }
  std::vector<policy::NamedPort> named_ports;
  if (body.contains("named_ports")) {
    auto np = endpoint::parseNamedPorts(body["named_ports"]);
    if (!np) return Response::error(400, fmt::format("create endpoint {}/{}: {}", ns, name, np.error().message));
    named_ports = std::move(*np);
  }
  MutexLock change(change_mu_);
  MutexLock lk(mu_);
  auto ep = eps_->create(name, ns, user, named_ports);
  if (!ep) return errorResponse(ep.error());
  json created = endpoint::toApiJson(*ep);
  if (auto l7 = syncProxy(); !l7.ok()) spdlog::error("L7 proxy config after creating {}: {}", name, l7.error().message);
  return Response::json(201, created);
}

Response Agent::getEndpoint(const Request& req) {
  MutexLock lk(mu_);
  auto id = parseId(req.param("id"));
  if (!id) return Response::error(400, fmt::format("endpoint id '{}' is not a number", req.param("id")));
  const auto* ep = eps_->find(*id);
  if (!ep) return Response::error(404, fmt::format("endpoint {} not found", *id));
  return Response::json(200, endpoint::toApiJson(*ep));
}

Response Agent::deleteEndpoint(const Request& req) {
  MutexLock change(change_mu_);
  MutexLock lk(mu_);
  auto id = parseId(req.param("id"));
  if (!id) return Response::error(400, fmt::format("endpoint id '{}' is not a number", req.param("id")));
  auto st = eps_->remove(*id);
  if (!st.ok()) return errorResponse(st.error());
  if (auto l7 = syncProxy(); !l7.ok()) spdlog::error("L7 proxy config after deleting endpoint {}: {}", *id, l7.error().message);
  return Response::json(200, {{"deleted", *id}});
}

namespace {
json identityJson(const identity::Identity& id) {
  json labels = json::array();
  for (const auto& l : id.labels) labels.push_back(l.toString());
  return {{"id", id.id}, {"labels", labels}, {"reserved", id.reserved}, {"references", id.refs}};
}
}  // namespace

Response Agent::listIdentities(const Request&) {
  MutexLock lk(mu_);
  json arr = json::array();
  for (const auto& id : ids_.list()) arr.push_back(identityJson(id));
  return Response::json(200, arr);
}

Response Agent::getIdentity(const Request& req) {
  MutexLock lk(mu_);
  auto id = parseId(req.param("id"));
  if (!id) return Response::error(400, fmt::format("identity '{}' is not a number", req.param("id")));
  auto found = ids_.lookup(*id);
  if (!found) return Response::error(404, fmt::format("identity {} not found", *id));
  return Response::json(200, identityJson(*found));
}

Response Agent::getPolicy(const Request&) {
  MutexLock lk(mu_);
  json arr = json::array();
  for (const auto& p : repo_.policies()) arr.push_back(policy::toJson(p));
  return Response::json(200, {{"revision", repo_.revision()}, {"policies", arr}});
}

Response Agent::listMetrics(const Request&) {
  json arr = json::array();
  for (const auto& s : metrics_->samples()) arr.push_back({{"name", s.name}, {"labels", s.labels}, {"value", s.value}});
  return Response::json(200, arr);
}

Response Agent::listCt(const Request&) {
  auto flows = dp_->listCt();
  if (!flows) return errorResponse(flows.error());
  uint64_t now = boottimeNs();
  json arr = json::array();
  auto addr = [](uint32_t be, uint16_t port_be, uint8_t proto) {
    std::string ip = ipv4HostOrderToString(ntohl(be));
    return proto == IPPROTO_ICMP ? ip : fmt::format("{}:{}", ip, ntohs(port_be));
  };
  for (const auto& f : *flows) {
    json flags = json::array();
    if (f.entry.flags & MB_CT_F_RX_CLOSING) flags.push_back("rx_closing");
    if (f.entry.flags & MB_CT_F_TX_CLOSING) flags.push_back("tx_closing");
    if (f.entry.flags & MB_CT_F_SEEN_NON_SYN) flags.push_back("seen_non_syn");
    if (f.entry.flags & MB_CT_F_PROXY_REDIRECT) flags.push_back("proxy_redirect");
    arr.push_back({{"src", addr(f.key.saddr, f.key.sport, f.key.proto)},
                   {"dst", addr(f.key.daddr, f.key.dport, f.key.proto)},
                   {"proto", protoName(f.key.proto)},
                   {"expires_in_seconds", f.entry.expires_ns > now ? (f.entry.expires_ns - now) / 1000000000ULL : 0},
                   {"tx_packets", f.entry.tx_packets},
                   {"tx_bytes", f.entry.tx_bytes},
                   {"rx_packets", f.entry.rx_packets},
                   {"rx_bytes", f.entry.rx_bytes},
                   {"src_identity", f.entry.src_identity},
                   {"dst_identity", f.entry.dst_identity},
                   {"endpoint", f.entry.ep_id},
                   {"flags", flags}});
  }
  return Response::json(200, arr);
}

Response Agent::getBpfPolicy(const Request& req) {
  MutexLock lk(mu_);
  auto id = parseId(req.param("id"));
  if (!id) return Response::error(400, fmt::format("endpoint id '{}' is not a number", req.param("id")));
  if (!eps_->find(*id)) return Response::error(404, fmt::format("endpoint {} not found", *id));
  auto entries = dp_->dumpPolicy(*id);
  if (!entries) return errorResponse(entries.error());
  json arr = json::array();
  for (const auto& e : *entries) {
    json labels = json::array();
    if (e.key.identity == 0) {
      labels.push_back("reserved:unknown");
    } else if (auto ident = ids_.lookup(e.key.identity)) {
      for (const auto& l : ident->labels) labels.push_back(l.toString());
    }
    arr.push_back({{"direction", e.key.direction == MB_DIR_INGRESS ? "Ingress" : "Egress"},
                   {"identity", e.key.identity},
                   {"labels", labels},
                   {"port", e.key.dport},
                   {"proto", protoName(e.key.proto)},
                   {"deny", e.value.deny},
                   {"proxy_port", e.value.proxy_port},
                   {"packets", e.packets},
                   {"bytes", e.bytes},
                   {"policy", repo_.policyForCookie(e.value.cookie)}});
  }
  return Response::json(200, arr);
}

Response Agent::patchEndpointConfig(const Request& req) {
  auto id = parseId(req.param("id"));
  if (!id) return Response::error(400, fmt::format("endpoint id '{}' is not a number", req.param("id")));
  json body = json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object())
    return Response::error(400, "request body must be a JSON object, e.g. {\"PolicyAuditMode\": \"Enabled\"}");
  std::optional<bool> audit;
  bool set = false;
  for (const auto& [k, v] : body.items()) {
    if (k != "PolicyAuditMode")
      return Response::error(400, fmt::format("unknown endpoint option '{}' (supported: PolicyAuditMode)", k));
    std::string val = v.is_boolean() ? (v.get<bool>() ? "Enabled" : "Disabled") : v.is_string() ? v.get<std::string>() : "";
    if (val == "Enabled" || val == "true") audit = true;
    else if (val == "Disabled" || val == "false") audit = false;
    else if (val == "Default") audit = std::nullopt;
    else return Response::error(400, "PolicyAuditMode must be Enabled, Disabled or Default");
    set = true;
  }
  if (!set) return Response::error(400, "no option given (supported: PolicyAuditMode)");
  MutexLock change(change_mu_);
  MutexLock lk(mu_);
  auto st = eps_->setAuditMode(*id, audit);
  if (!st.ok()) return errorResponse(st.error());
  return Response::json(200, endpoint::toApiJson(*eps_->find(*id)));
}

Response Agent::listNamespaces(const Request&) {
  MutexLock lk(mu_);
  json arr = json::array();
  for (const auto& [ns, ls] : eps_->namespaces()) {
    // What policies see: Kubernetes' own name label is derived for every
    // namespace (labels::endpointLabels), so it is listed too, with the name.
    json labels = endpoint::namespaceLabelsJson(ns, ls);
    size_t pods = 0;
    for (const auto* ep : eps_->list())
      if (ep->ns == ns) ++pods;
    arr.push_back({{"name", ns}, {"labels", labels}, {"endpoints", pods}});
  }
  return Response::json(200, arr);
}

Response Agent::putNamespace(const Request& req) {
  json body = json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object() || !body.contains("labels") || !body["labels"].is_object())
    return Response::error(400, "request body must be {\"labels\": {\"key\": \"value\", ...}}");
  labels::LabelSet ls;
  for (const auto& [k, v] : body["labels"].items()) {
    if (!v.is_string()) return Response::error(400, fmt::format("label '{}': value must be a string", k));
    auto lab = labels::parseLabel(k + "=" + v.get<std::string>());
    if (!lab) return Response::error(400, lab.error().message);
    ls.add(*lab);
  }
  MutexLock change(change_mu_);
  MutexLock lk(mu_);
  const std::string ns = req.param("name");
  auto st = eps_->setNamespaceLabels(ns, ls);
  if (!st.ok()) return errorResponse(st.error());
  if (auto l7 = syncProxy(); !l7.ok()) spdlog::error("L7 proxy config after namespace labels: {}", l7.error().message);
  // The labels as stored and listed (the derived name label included), not an echo of the request.
  auto stored = eps_->namespaces();
  auto it = stored.find(ns);
  return Response::json(200, {{"name", ns},
                              {"labels", endpoint::namespaceLabelsJson(ns, it == stored.end() ? labels::LabelSet() : it->second)}});
}

Response Agent::tracePolicy(const Request& req) {
  MutexLock lk(mu_);
  std::string ns = req.queryValue("namespace");
  if (ns.empty()) ns = "default";
  // One side: an endpoint (its labels) or a label list (as a pod with those labels in ns would have).
  std::vector<policy::NamedPort> dst_ports;  // named ports resolve against the destination endpoint's
  const endpoint::Manager& eps = *eps_;       // mu_ is held for the whole call
  auto side = [&](const char* what) -> Result<labels::LabelSet> {
    std::string ep_key = std::string(what) + "_endpoint", labels_key = std::string(what) + "_labels";
    bool has_ep = req.hasQuery(ep_key), has_labels = req.hasQuery(labels_key);
    if (has_ep == has_labels)
      return Error::invalid(fmt::format("give exactly one of {} and {}", ep_key, labels_key));
    if (has_ep) {
      std::string v = req.queryValue(ep_key);
      const endpoint::Endpoint* ep = nullptr;
      if (auto id = parseId(v)) ep = eps.find(*id);
      if (!ep) ep = eps.findByName(ns, v);
      if (!ep) return Error::notFound(fmt::format("endpoint '{}' not found in namespace {}", v, ns));
      if (std::string_view(what) == "dst") dst_ports = ep->named_ports;
      return ep->labels;
    }
    auto ls = labels::parseLabels(req.queryValue(labels_key));
    if (!ls) return ls.error();
    return eps.podLabels(ns, *ls);
  };
  auto src = side("src");
  if (!src) return errorResponse(src.error());
  auto dst = side("dst");
  if (!dst) return errorResponse(dst.error());
  std::optional<policy::PortProto> port;
  if (req.hasQuery("dport")) {
    auto pp = policy::parsePortProto(req.queryValue("dport"));
    if (!pp) return errorResponse(pp.error());
    port = *pp;
  }
  auto result = policy::trace(repo_.policies(), *src, *dst, eps_->identityRefs(), port, dst_ports);
  return Response::json(200, policy::toJson(result));
}

void Agent::waitPolicy(const Request& req, std::shared_ptr<api::PendingResponse> reply) {
  std::string rev_s = req.queryValue("revision");
  auto rev = parseId(rev_s);
  if (!rev) {
    reply->complete(Response::error(400, fmt::format("revision '{}' is not a number", rev_s)));
    return;
  }
  int timeout_s = 30;
  if (req.hasQuery("timeout")) {
    auto t = parseId(req.queryValue("timeout"));
    if (!t || *t > 3600) {
      reply->complete(Response::error(400, "timeout must be a number of seconds (<= 3600)"));
      return;
    }
    timeout_s = static_cast<int>(*t);
  }
  MutexLock lk(mu_);
  uint64_t realized = realizedRevision();
  if (realized >= *rev) {
    reply->complete(Response::json(200, {{"revision", repo_.revision()}, {"realized", realized}}));
    return;
  }
  if (timeout_s == 0 || stopping_) {
    reply->complete(policyWaitExpired(*rev, timeout_s));
    return;
  }
  // Waiters whose client left are dropped here and in notifyPolicyWaiters().
  std::erase_if(policy_waiters_, [](const PolicyWaiter& w) { return !w.reply->pending(); });
  policy_waiters_.push_back({*rev, reply});
  policy_waiting_ = true;
  // The expiry runs on an API worker; the API server is stopped (its workers
  // joined) before the agent goes away.
  reply->expireAfter(std::chrono::seconds(timeout_s), [this, rev = *rev, timeout_s] {
    MutexLock lk(mu_);
    return policyWaitExpired(rev, timeout_s);
  });
}

uint64_t Agent::realizedRevision() {
  uint64_t realized = std::min(repo_.revision(), committed_revision_);
  for (const auto* ep : eps_->list()) realized = std::min<uint64_t>(realized, ep->policy_revision);
  return realized;
}

Response Agent::policyWaitExpired(uint64_t rev, int timeout_s) {
  uint64_t realized = realizedRevision();
  if (realized >= rev) return Response::json(200, {{"revision", repo_.revision()}, {"realized", realized}});
  if (rev > repo_.revision())
    return Response::error(408, fmt::format("revision {} not reached within {} s (current revision {})", rev, timeout_s,
                                            repo_.revision()));
  return Response::error(408, fmt::format("revision {} not realized by every endpoint within {} s", rev, timeout_s));
}

void Agent::notifyPolicyWaiters() {
  MutexLock lk(mu_);
  if (policy_waiters_.empty()) return;
  const uint64_t realized = realizedRevision(), revision = repo_.revision();
  std::erase_if(policy_waiters_, [&](const PolicyWaiter& w) {
    if (!w.reply->pending()) return true;
    if (realized < w.revision) return false;
    w.reply->complete(Response::json(200, {{"revision", revision}, {"realized", realized}}));
    return true;
  });
  policy_waiting_ = !policy_waiters_.empty();
}

void Agent::monitor(const Request& req, std::shared_ptr<api::StreamWriter> out) {
  std::set<std::string> types;
  for (const auto& t : req.queryValues("type")) {
    if (t != "drop" && t != "policy-verdict" && t != "trace" && t != "l7") {
      out->push(json({{"type", "error"}, {"error", fmt::format("unknown event type '{}' (drop, policy-verdict, trace, l7)", t)}}).dump());
      out->close();
      return;
    }
    types.insert(t);
  }
  if (stopping_) {
    out->close();
    return;
  }
  // Paused until the datapath produces what this client asked for
  // (syncEventFlags), then {"type":"subscribed"} goes first: the CLI prints
  // its "Listening for events" banner on it, so every event caused after the
  // banner is shown (a script can wait for the banner instead of sleeping).
  // A client of l7 events also waits until the proxy logs every request to
  // the relay (setAccessLogLive).
  auto sub = hub_.subscribePaused(types, out);
  // Runs once, on an API worker, when the client leaves (noticed at once by
  // the API loop), the stream is closed or the agent stops; inline if that
  // already happened. The callback holds 'sub' (and so the stream) until then.
  out->onClose([this, sub] {
    hub_.unsubscribe(sub);
    {
      MutexLock lk(l7_relay_mu_);
      std::erase(l7_pending_, sub);
    }
    syncEventFlags();
  });
  syncEventFlags();
  if (proxy_ && sub->wants("l7")) {
    MutexLock lk(l7_relay_mu_);
    if (!l7_relay_live_) {
      l7_pending_.push_back(sub);
      return;
    }
  }
  hub_.resume(sub, kMonitorSubscribed);
}

void Agent::syncEventFlags() {
  std::lock_guard lk(event_flags_mu_);
  auto dc = dp_->config();
  if (!dc) {
    spdlog::warn("monitor: {}", dc.error().message);
    return;
  }
  uint32_t flags = dc->flags & ~(MB_CFG_F_TRACE_EVENTS | MB_CFG_F_NO_ALLOWED_VERDICTS);
  if (cfg_.trace_events && hub_.wants("trace")) flags |= MB_CFG_F_TRACE_EVENTS;
  if (!hub_.wants("policy-verdict")) flags |= MB_CFG_F_NO_ALLOWED_VERDICTS;
  if (flags == dc->flags) return;
  dc->flags = flags;
  if (auto st = dp_->setConfig(*dc); !st.ok()) spdlog::warn("monitor: {}", st.error().message);
}

}  // namespace membrane::daemon
