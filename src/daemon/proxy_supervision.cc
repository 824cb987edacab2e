// Agent: the L7 proxy's supervision — start or adopt it, restart it when it
// dies (pidfd), plan its config under the state lock and push it without,
// and relay its access log to `membrane monitor --type l7`.
#include "src/daemon/agent.h"
#include "src/daemon/agent_internal.h"

#include <arpa/inet.h>
#include <poll.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace membrane::daemon {

using nlohmann::json;

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
  proxy_generation_ = eps_->generation();
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

}  // namespace membrane::daemon
