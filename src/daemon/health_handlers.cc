// Agent: the health endpoint and prober (startHealth), GET /v1/health and
// GET /v1/healthz (which answers from a cache when the state lock stays busy).
#include "src/daemon/agent.h"
#include "src/daemon/agent_internal.h"

#include <arpa/inet.h>

#include "src/kernel/netns.h"

#include <fmt/format.h>

namespace membrane::daemon {

using nlohmann::json;
using api::Request;
using api::Response;

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

}  // namespace membrane::daemon
