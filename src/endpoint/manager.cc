#include "src/endpoint/manager.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <functional>
#include <optional>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "bpf/shared/datapath.h"
#include "membrane/metrics.h"
#include "membrane/rfc3339.h"
#include "src/endpoint/state_store.h"
#include "src/kernel/datapath_maps.h"
#include "src/kernel/netlink.h"
#include "src/kernel/pod_networks.h"
#include "src/kernel/netns.h"

namespace membrane::endpoint {
namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Runs the undo steps of a multi-step setup in reverse order unless dismissed.
class Rollback {
 public:
  ~Rollback() {
    if (armed_)
      for (auto it = steps_.rbegin(); it != steps_.rend(); ++it) (*it)();
  }
  void add(std::function<void()> undo) { steps_.push_back(std::move(undo)); }
  void dismiss() { armed_ = false; }
  // Undoes now (and not again at destruction).
  void run() {
    if (armed_)
      for (auto it = steps_.rbegin(); it != steps_.rend(); ++it) (*it)();
    armed_ = false;
  }

 private:
  std::vector<std::function<void()>> steps_;
  bool armed_ = true;
};

void logIfError(const Status& st, const char* what) {
  if (!st.ok()) spdlog::warn("{}: {}", what, st.error().message);
}

// "<prefix>_<ns>_<pod>", the prefix naming the agent: two agents on one host
// (tests, a second agent with its own --host-device) can both run pod "xwing"
// in namespace "default" without taking each other's netns. The default agent
// keeps "membrane" so its names stay membrane_<ns>_<pod>. '_' cannot appear in
// Kubernetes names, so the last two '_'-separated parts are always ns and pod
// and the mapping stays unambiguous whatever the host device is called.
// Restored endpoints keep the netns_name recorded in their state file.
std::string netnsNameFor(const std::string& host_device, const std::string& ns, const std::string& name) {
  const std::string prefix = host_device.empty() || host_device == "membrane_host" ? "membrane" : host_device;
  return fmt::format("{}_{}_{}", prefix, ns, name);
}

kernel::PolicyMapKey toMapKey(const policy::PolicyKey& k) {
  kernel::PolicyMapKey m{};
  m.identity = k.identity;
  m.dport = k.dport;
  m.proto = k.proto;
  m.direction = k.direction;
  return m;
}

kernel::PolicyMapValue toMapValue(const policy::PolicyEntry& e, const policy::PolicyKey& k, const ManagerConfig& cfg) {
  kernel::PolicyMapValue v{};
  v.deny = e.deny;
  // L7 rules: the proxy listener of the entry's direction (docs/l7.md).
  if (!e.deny && e.proxy_port_needed)
    v.proxy_port = k.direction == static_cast<uint8_t>(policy::Direction::Ingress) ? cfg.proxy_port_ingress
                                                                                    : cfg.proxy_port_egress;
  v.cookie = e.cookie;
  return v;
}

}  // namespace

Manager::Manager(ManagerConfig cfg, kernel::DatapathMaps& dp, kernel::PodNetworks& net,
                 identity::IdentityAllocator& ids, const policy::Repository& repo, metrics::AgentMetrics& metrics,
                 StateFiles& files)
    : cfg_(std::move(cfg)),
      dp_(dp),
      net_(net),
      ids_(ids),
      repo_(repo),
      metrics_(metrics),
      files_(files),
      ipam_(cfg_.pod_cidr) {}

Manager::~Manager() = default;

Status Manager::init() {
  uint32_t gw_be = htonl(ipam_.gateway());
  MB_TRY_CTX(net_.ensureHostDevice(cfg_.host_device, gw_be), "set up host device " + cfg_.host_device);
  MB_TRY_CTX(net_.ensureUnreachableRoute(htonl(cfg_.pod_cidr.network), cfg_.pod_cidr.prefix_len),
             "install unreachable route for " + cfg_.pod_cidr.toString());

  mb_datapath_config dc{};
  // Event flags (trace, allowed verdicts) belong to the agent, which flips
  // them as monitor clients come and go: none until someone watches.
  dc.flags = MB_CFG_F_NO_ALLOWED_VERDICTS | (cfg_.mode == EnforcementMode::Always ? MB_CFG_F_POLICY_ALWAYS : 0) |
             (cfg_.mode == EnforcementMode::Never ? MB_CFG_F_POLICY_NEVER : 0);  // audit is per endpoint (flags), so that an endpoint can opt out
  dc.host_ipv4 = gw_be;
  dc.pod_cidr = htonl(cfg_.pod_cidr.network);
  dc.pod_cidr_len = cfg_.pod_cidr.prefix_len;
  MB_TRY_CTX(dp_.setConfig(dc), "write datapath config");
  MB_TRY(syncHostIpcache());

  // Namespace labels first: they are part of the endpoints' identities. The
  // agent refuses to start on a damaged file before calling init()
  // (Agent::init); here (also `membraned cleanup`) the endpoints are restored
  // without the labels.
  if (auto ns = readNamespaceState(cfg_.state_dir + "/namespaces.json"); ns.ok())
    ns_labels_ = std::move(*ns);
  else
    spdlog::error("restore: {}; namespaces restored without labels", ns.error().message);

  // Restore endpoints recorded in the state directory. A damaged file is
  // skipped (its datapath entries are removed below as stale), the others are
  // restored: one bad file must not take every pod's network down.
  MB_TRY(makeDirs(cfg_.state_dir + "/endpoints"));
  MB_ASSIGN(auto files, listFiles(cfg_.state_dir + "/endpoints", ".json"));
  for (const auto& f : files) {
    auto ep = readEndpointState(f);
    if (!ep) {
      spdlog::error("restore: {}; endpoint skipped (its pod has no network until the file is fixed and the agent "
                    "restarted, or the pod is re-created)",
                    ep.error().message);
      continue;
    }
    bool transient = false;
    auto st = restoreOne(*ep, &transient);
    // The kernel could not say whether the pod's network exists (not ENOENT):
    // skipping the endpoint would remove its map entries below as stale and
    // cut a running pod off. Fail the start instead (the pinned maps keep
    // enforcing); the next start retries.
    if (!st.ok() && transient) return st.error().wrap("restore " + f);
    if (!st.ok()) {
      spdlog::warn("restore {}: {}", f, st.error().message);
      unrestored_.emplace(ep->id, std::move(*ep));  // for removeAll (membraned cleanup)
    }
  }

  // Endpoint map entries whose endpoint was not restored are stale: remove them
  // (their veths are gone or no longer ours).
  auto listed = dp_.listEndpoints();
  if (!listed) spdlog::warn("restore: {}; stale endpoint map entries stay until the next start", listed.error().message);
  if (listed.ok()) {
    std::set<uint32_t> known;
    for (const auto& [id, ep] : eps_) known.insert(ep.host_ifindex);
    for (const auto& info : *listed)
      if (!known.count(info.ifindex)) {
        spdlog::info("removing stale datapath endpoint {} (ifindex {})", info.ep_id, info.ifindex);
        logIfError(dp_.deleteEndpoint(info.ifindex, info.ipv4), "remove stale endpoint");
        logIfError(dp_.deletePolicy(info.ep_id), "remove stale policy");
        logIfError(dp_.deleteIpcache(info.ipv4, 32), "remove stale ipcache entry");
      }
  }
  // Policy entries of endpoint ids that no longer exist (e.g. removed while
  // the agent was down) are stale too.
  for (uint32_t ep_id : dp_.policyEndpoints())
    if (!eps_.count(ep_id)) {
      spdlog::info("removing stale policy entries of endpoint {}", ep_id);
      logIfError(dp_.deletePolicy(ep_id), "remove stale policy");
    }
  if (auto r = regenerateAll(); !r.ok()) return r.error().wrap("initial regeneration");
  updateMetrics();
  return okStatus();
}

Status Manager::syncHostIpcache() {
  // Traffic from the host stack into a pod carries a host address as source:
  // map every local IPv4 address to the reserved host identity (1).
  MB_ASSIGN(auto addrs, net_.hostAddresses());
  for (uint32_t be : addrs) {
    if (cfg_.pod_cidr.contains(ntohl(be)) && ntohl(be) != ipam_.gateway()) continue;
    MB_TRY_CTX(dp_.upsertIpcache(be, 32, MB_ID_HOST), "ipcache: host address");
  }
  return dp_.upsertIpcache(htonl(ipam_.gateway()), 32, MB_ID_HOST);
}

labels::LabelSet Manager::labelsFor(const std::string& ns, const labels::LabelSet& user) const {
  auto it = ns_labels_.find(ns);
  return labels::endpointLabels(ns, user, it == ns_labels_.end() ? labels::LabelSet() : it->second);
}

std::map<std::string, labels::LabelSet> Manager::namespaces() const {
  std::map<std::string, labels::LabelSet> out = ns_labels_;
  for (const auto& [_, ep] : eps_) out.try_emplace(ep.ns);
  return out;
}

Status Manager::saveNamespaces() {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [ns, ls] : ns_labels_) {
    nlohmann::json labels = nlohmann::json::object();
    for (const auto& l : ls) labels[l.key] = l.value;
    j[ns] = labels;
  }
  return files_.write(cfg_.state_dir + "/namespaces.json", j.dump(2) + "\n");
}

Status Manager::setNamespaceLabels(const std::string& ns, const labels::LabelSet& ns_labels) {
  MB_TRY_CTX(validateName("namespace", ns), "label namespace");
  const std::string what = "label namespace " + ns;
  MB_TRY(heldError(what));
  auto stored = namespaceLabelsToStore(ns, ns_labels);
  if (!stored) return stored.error().wrap(what);
  // All or nothing: a relabel that failed halfway left some pods on new
  // identities and others on old ones (and ipcache entries naming released
  // identities), with the namespace's labels not saved. Every step registers
  // its undo; a failure anywhere, the final regeneration included, restores
  // the previous labels, identities, ipcache entries and files and realizes
  // the previous policy again.
  struct Move {
    Endpoint* ep;
    Endpoint old;  // as before the relabel
  };
  // Declared before `undo`, whose steps hold references into it (and run at
  // its destruction); not resized after the loop below.
  std::vector<Move> moves;
  Rollback undo;
  const auto previous = ns_labels_;
  undo.add([this, previous] { ns_labels_ = previous; });
  ns_labels_[ns] = std::move(*stored);
  undo.add([&moves] {
    for (auto& m : moves) {
      m.ep->labels = m.old.labels;
      m.ep->identity = m.old.identity;
    }
  });
  // New identities first (the old ones stay held until the end).
  for (auto& [id, ep] : eps_) {
    if (ep.ns != ns || ep.health || ep.state == EndpointState::Disconnecting) continue;
    labels::LabelSet next = labelsFor(ns, ep.user_labels);
    if (next == ep.labels) continue;
    auto ident = ids_.allocate(next);
    if (!ident) return ident.error().wrap(fmt::format("{}: new identity for {}", what, ep.name));
    undo.add([this, n = ident->id] { ids_.release(n); });
    moves.push_back(Move{&ep, ep});
    ep.labels = std::move(next);
    ep.identity = ident->id;
  }
  // Point the ipcache at the new identities, so that the pods are never without one.
  for (auto& m : moves) {
    MB_TRY_CTX(dp_.upsertIpcache(htonl(m.ep->ipv4), 32, m.ep->identity),
               fmt::format("{}: ipcache entry of {}", what, m.ep->name));
    undo.add([this, &m] {
      logIfError(dp_.upsertIpcache(htonl(m.old.ipv4), 32, m.old.identity), "rollback ipcache");
    });
  }
  const std::string ns_file = cfg_.state_dir + "/namespaces.json";
  const bool had_ns_file = ::access(ns_file.c_str(), F_OK) == 0;
  MB_TRY_CTX(saveNamespaces(), what);
  undo.add([this, previous, had_ns_file, ns_file] {
    auto now = std::move(ns_labels_);
    ns_labels_ = previous;
    logIfError(had_ns_file ? saveNamespaces() : files_.remove(ns_file), "rollback namespaces.json");
    ns_labels_ = std::move(now);
  });
  for (auto& m : moves) {
    MB_TRY_CTX(writeState(*m.ep), fmt::format("{}: save state of {}", what, m.ep->name));
    undo.add([this, &m] { logIfError(writeState(m.old), "rollback endpoint state"); });
  }
  // Old identities go before the regeneration, so that no policy keeps
  // selecting a number nobody holds; a rollback takes them back.
  for (auto& m : moves) {
    ids_.release(m.old.identity);
    undo.add([this, &m] { logIfError(ids_.restore(m.old.identity, m.old.labels), "rollback identity"); });
  }
  auto r = triggerPolicyUpdate(metrics::kTriggerIdentities);
  if (!r.ok()) {
    undo.run();
    // The previous policy, realized again (the failed run wrote part of the new one).
    if (auto again = regenerateAll(); !again.ok())
      spdlog::error("{}: rollback regeneration: {}", what, again.error().message);
    return r.error().wrap(what);
  }
  undo.dismiss();
  if (!moves.empty()) ++generation_;
  return okStatus();
}

Status Manager::restoreOne(Endpoint ep, bool* transient) {
  ep.labels = ep.health ? labels::reservedLabels(labels::Reserved::Health) : labelsFor(ep.ns, ep.user_labels);
  MB_TRY_CTX(ipam_.reserve(ep.ipv4), "restore endpoint " + ep.name);
  auto net = net_.inspectPodNetwork(podNetworkSpec(ep));
  if (!net) {
    *transient = net.error().code != ENOENT;
    ipam_.release(ep.ipv4);
    return net.error().wrap(fmt::format("restore endpoint {}/{}: {}", ep.ns, ep.name,
                                        *transient ? "inspect its network" : "its network is gone"));
  }
  // Reserved identities (the health endpoint's 4) are fixed, not restored.
  auto st = ep.health ? okStatus() : ids_.restore(ep.identity, ep.labels);
  if (!st.ok()) {
    ipam_.release(ep.ipv4);
    return st.error().wrap(fmt::format("restore endpoint {}/{}: identity {}", ep.ns, ep.name, ep.identity));
  }
  ep.netns_path = net->netns_path;
  ep.host_ifindex = net->host_ifindex;
  ep.mac = net->pod_mac;
  ep.host_mac = net->host_mac;
  ep.state = EndpointState::Restoring;
  uint32_t id = ep.id;
  eps_.emplace(id, std::move(ep));
  ++generation_;
  spdlog::info("restored endpoint {} {}/{}", id, eps_[id].ns, eps_[id].name);
  return okStatus();
}

uint32_t Manager::nextId() const {
  // Lowest free id from 1, like Cilium's endpoint IDs (16 bits). An id whose
  // state file exists is not free either: a file that init() skipped
  // (damaged, or its endpoint could not be restored) is kept for the
  // operator, and writing a new endpoint over it destroyed it.
  uint32_t id = 1;
  while (eps_.count(id) || ::access(fmt::format("{}/endpoints/{}.json", cfg_.state_dir, id).c_str(), F_OK) == 0) ++id;
  return id;
}

uint32_t Manager::endpointFlags(const Endpoint& ep) const {
  uint32_t f = 0;
  if (ep.ingress_enforced) f |= MB_EP_F_INGRESS_ENFORCED;
  if (ep.egress_enforced) f |= MB_EP_F_EGRESS_ENFORCED;
  if (ep.ingress_audit) f |= MB_EP_F_INGRESS_AUDIT;
  if (ep.egress_audit) f |= MB_EP_F_EGRESS_AUDIT;
  if (ep.proto_wildcard) f |= MB_EP_F_PROTO_WILDCARD;
  return f;
}

std::vector<identity::Identity> Manager::identities() const {
  auto out = ids_.list();
  for (const auto& [prefix, c] : cidr_ids_) out.push_back(identity::Identity{c.id, c.labels, 0, false});
  return out;
}

std::vector<identity::IdentityRef> Manager::allRefs() const {
  auto refs = ids_.refs();
  for (const auto& [prefix, c] : cidr_ids_) refs.push_back(identity::IdentityRef{c.id, &c.labels});
  return refs;
}

namespace {
// "a.b.c.d[/len]" of a policy CIDR, any length 0..32 (Cidr4::parse is the
// pod-CIDR parser and accepts only /8../30: a /32 toCIDR peer must parse here).
std::optional<std::pair<uint32_t, uint8_t>> policyPrefix(const std::string& prefix) {
  auto slash = prefix.find('/');
  auto ip = parseIpv4(prefix.substr(0, slash));
  int len = slash == std::string::npos ? 32 : std::atoi(prefix.c_str() + slash + 1);
  if (!ip.ok() || len < 0 || len > 32) return std::nullopt;  // IPv6 or malformed: the parser rejects these
  return std::pair<uint32_t, uint8_t>{*ip, static_cast<uint8_t>(len)};
}
}  // namespace

Status Manager::syncCidrIdentities() {
  std::set<std::string> want = policy::cidrPrefixes(repo_.policies());
  // Remove prefixes no policy mentions any more.
  for (auto it = cidr_ids_.begin(); it != cidr_ids_.end();) {
    if (want.count(it->first)) {
      ++it;
      continue;
    }
    if (auto p = policyPrefix(it->first))
      logIfError(dp_.deleteIpcache(htonl(p->first), p->second), "remove CIDR identity");
    it = cidr_ids_.erase(it);
  }
  // At the first sync after a start, CIDR entries that a previous run wrote
  // (local-scope identities) and that no current policy wants are stale:
  // remove them, or those addresses would keep an identity no policy knows
  // and match neither their CIDR rule nor `world`.
  if (!cidr_reconciled_) {
    std::set<std::pair<uint32_t, uint8_t>> wanted;
    for (const auto& prefix : want)
      if (auto p = policyPrefix(prefix)) {
        uint32_t mask = p->second == 0 ? 0 : ~uint32_t{0} << (32 - p->second);
        wanted.insert({htonl(p->first & mask), p->second});  // as stored: host bits zero
      }
    auto listed = dp_.listIpcache();
    if (!listed) return listed.error().wrap("list ipcache for stale CIDR identities");
    for (const auto& e : *listed)
      if ((e.identity & identity::kLocalScopeFlag) && !wanted.count({e.ipv4_be, e.prefix_len})) {
        spdlog::info("removing stale CIDR ipcache entry {}/{} (identity {})", ipv4HostOrderToString(ntohl(e.ipv4_be)),
                     e.prefix_len, e.identity);
        logIfError(dp_.deleteIpcache(e.ipv4_be, e.prefix_len), "remove stale CIDR identity");
      }
    cidr_reconciled_ = true;
  }
  std::set<uint32_t> used;
  for (const auto& [_, c] : cidr_ids_) used.insert(c.id);
  uint32_t next = 1;
  for (const auto& prefix : want) {
    if (cidr_ids_.count(prefix)) continue;
    auto p = policyPrefix(prefix);
    if (!p) continue;
    while (used.count(identity::kLocalScopeFlag | next)) ++next;
    CidrIdentity c{identity::kLocalScopeFlag | next, labels::cidrIdentityLabels(prefix)};
    used.insert(c.id);
    MB_TRY_CTX(dp_.upsertIpcache(htonl(p->first), p->second, c.id), "ipcache entry for CIDR " + prefix);
    cidr_ids_.emplace(prefix, std::move(c));
  }
  return okStatus();
}


Status Manager::writeState(const Endpoint& ep) {
  return files_.write(fmt::format("{}/endpoints/{}.json", cfg_.state_dir, ep.id), toStateJson(ep).dump(2) + "\n");
}

Result<Endpoint> Manager::create(const std::string& name, const std::string& ns, const labels::LabelSet& user_labels,
                                 const std::vector<policy::NamedPort>& named_ports) {
  const std::string what = fmt::format("create endpoint {}/{}", ns, name);
  MB_TRY_CTX(validateName("pod name", name), what);
  MB_TRY_CTX(validateName("namespace", ns), what);
  return createEndpoint(name, ns, user_labels, false, named_ports);
}

Result<Endpoint> Manager::createForContainer(const std::string& name, const std::string& ns,
                                             const labels::LabelSet& user_labels, const CniAttachment& cni,
                                             const std::string& netns_path) {
  const std::string what = fmt::format("create endpoint {}/{} for container {}", ns, name, cni.container_id);
  MB_TRY_CTX(validateName("pod name", name), what);
  MB_TRY_CTX(validateName("namespace", ns), what);
  if (const Endpoint* ep = findByContainer(cni.container_id, cni.ifname))
    return Error::exists(fmt::format("{}: the container already has {} (endpoint {} {}/{})", what, cni.ifname, ep->id,
                                     ep->ns, ep->name));
  Adoption adopt{cni, netns_path};
  return createEndpoint(name, ns, user_labels, false, {}, &adopt);
}

const Endpoint* Manager::findByContainer(const std::string& container_id, const std::string& ifname) const {
  for (const auto& [_, ep] : eps_)
    if (ep.cni && ep.cni->container_id == container_id && ep.cni->ifname == ifname) return &ep;
  return nullptr;
}

kernel::PodNetworkSpec Manager::podNetworkSpec(const Endpoint& ep) const {
  kernel::PodNetworkSpec spec;
  spec.netns_name = ep.netns_name;
  spec.host_ifname = ep.host_ifname;
  spec.ipv4_be = htonl(ep.ipv4);
  spec.gateway_be = htonl(ipam_.gateway());
  if (ep.cni) {
    spec.adopt_netns_path = ep.netns_path;
    spec.pod_ifname = ep.cni->ifname;
  }
  return spec;
}

Status Manager::checkNetwork(uint32_t id) {
  const Endpoint* ep = find(id);
  if (!ep) return Error::notFound(fmt::format("endpoint {} not found", id));
  MB_ASSIGN(auto net, net_.inspectPodNetwork(podNetworkSpec(*ep)));
  if (net.host_ifindex != ep->host_ifindex)
    return Error::notFound(fmt::format("{} has ifindex {}, the endpoint was created with {}", ep->host_ifname,
                                       net.host_ifindex, ep->host_ifindex));
  if (net.pod_mac != ep->mac)
    return Error::notFound(fmt::format("the pod interface's MAC is {}, the endpoint was created with {}",
                                       macToString(net.pod_mac), macToString(ep->mac)));
  return okStatus();
}

Result<Endpoint> Manager::ensureHealthEndpoint() {
  if (const auto* ep = healthEndpoint()) return *ep;
  return createEndpoint("membrane-health", "", labels::LabelSet(), true);
}

const Endpoint* Manager::healthEndpoint() const {
  for (const auto& [_, ep] : eps_)
    if (ep.health) return &ep;
  return nullptr;
}

Result<Endpoint> Manager::createEndpoint(const std::string& name, const std::string& ns,
                                         const labels::LabelSet& user_labels, bool health,
                                         const std::vector<policy::NamedPort>& named_ports, const Adoption* adopt) {
  const std::string what = fmt::format("create endpoint {}/{}", ns, name);
  MB_TRY(heldError(what));
  if (findByName(ns, name))
    return Error::exists(fmt::format("{}: an endpoint named {} already exists in namespace {} (delete it first: "
                                     "membrane endpoint delete {} -n {})",
                                     what, name, ns, name, ns));
  if (eps_.size() >= MB_ENDPOINTS_MAX - 1)
    return Error(ENOSPC, fmt::format("{}: endpoint limit {} reached", what, MB_ENDPOINTS_MAX - 1));

  auto t0 = Clock::now();
  Rollback undo;
  Endpoint ep;
  ep.id = nextId();
  ep.name = name;
  ep.ns = ns;
  ep.user_labels = user_labels;
  ep.health = health;
  ep.named_ports = named_ports;
  ep.labels = health ? labels::reservedLabels(labels::Reserved::Health) : labelsFor(ns, user_labels);
  ep.created = nowRfc3339();
  // The health endpoint's netns is named after the host device, which is unique per agent.
  ep.netns_name = health ? "membrane-health-" + cfg_.host_device : netnsNameFor(cfg_.host_device, ns, name);
  ep.netns_path = kernel::Netns::pathOf(ep.netns_name);
  ep.host_ifname = kernel::hostIfnameFor(ns, name, cfg_.bpf_root);
  if (adopt) {
    // The runtime's namespace: not named by membrane, never removed by it.
    ep.cni = adopt->cni;
    ep.netns_name.clear();
    ep.netns_path = adopt->netns_path;
    // ':' cannot occur in Kubernetes names: never the name of a pod's veth.
    ep.host_ifname = kernel::hostIfnameFor("cni:" + adopt->cni.container_id, adopt->cni.ifname, cfg_.bpf_root);
  }

  MB_ASSIGN(ep.ipv4, ipam_.allocate());
  undo.add([this, ip = ep.ipv4] { ipam_.release(ip); });

  ep.state = EndpointState::WaitingForIdentity;
  auto ident = ids_.allocate(ep.labels);
  if (!ident) return ident.error().wrap(what + ": allocate identity");
  ep.identity = ident->id;
  undo.add([this, id = ep.identity] { ids_.release(id); });

  kernel::PodNetworkSpec spec = podNetworkSpec(ep);
  auto net = runUnlocked(cfg_.unlocked, [&] { return net_.createPodNetwork(spec); });
  if (!net) return net.error().wrap(what);
  undo.add([this, spec] {
    logIfError(net_.deletePodNetwork(spec.netns_name, spec.host_ifname, spec.ipv4_be), "rollback pod network");
    // Once the programs were attached, the pod may have sent packets: its
    // flows must not outlive it (the address is handed out again). After the
    // veth is gone, so no new entry appears meanwhile.
    logIfError(dp_.flushCtFor(spec.ipv4_be), "rollback conntrack entries");
  });
  ep.netns_path = net->netns_path;
  ep.host_ifindex = net->host_ifindex;
  ep.mac = net->pod_mac;
  ep.host_mac = net->host_mac;

  // Policy entries and endpoint flags first, programs last: the endpoint is
  // enforced from its very first packet.
  ep.state = EndpointState::Regenerating;
  auto refs = allRefs();
  undo.add([this, id = ep.id] { logIfError(dp_.deletePolicy(id), "rollback policy entries"); });
  // Registered before regenerate(), which writes the endpoint maps last: a
  // failure anywhere after that write must remove the entry. The cache of
  // written entries goes with it, whatever the delete's outcome (forgetting
  // only costs a write): a stale cache entry made the retry of a failed create
  // (same id, same identity) skip the write and drop every packet (203).
  undo.add([this, id = ep.id, ifx = ep.host_ifindex, ip = htonl(ep.ipv4)] {
    written_ep_.erase(id);
    logIfError(dp_.deleteEndpoint(ifx, ip), "rollback endpoint map");
  });
  MB_TRY_CTX(regenerate(ep, refs, namedPortsByIdentity(&ep)), what);
  MB_TRY_CTX(dp_.upsertIpcache(htonl(ep.ipv4), 32, ep.identity), what + ": ipcache");
  undo.add([this, ip = htonl(ep.ipv4)] { logIfError(dp_.deleteIpcache(ip, 32), "rollback ipcache"); });
  MB_TRY_CTX(dp_.attach(ep.host_ifindex), what + ": attach BPF programs to " + ep.host_ifname);
  ep.state = EndpointState::Ready;
  // writeFileAtomic can fail after the rename (fsync of the directory): the
  // file must not survive, or the next start restores an endpoint that was
  // never created. A file that was there before (an endpoint whose restore
  // failed, kept for the operator) is not ours to remove.
  const std::string state_file = fmt::format("{}/endpoints/{}.json", cfg_.state_dir, ep.id);
  if (::access(state_file.c_str(), F_OK) != 0)
    undo.add([this, state_file] { logIfError(files_.remove(state_file), "rollback state file"); });
  MB_TRY_CTX(writeState(ep), what + ": save state");
  undo.dismiss();

  uint32_t id = ep.id;
  eps_.emplace(id, ep);
  ++generation_;
  metrics_.observeRegenerationTime("total", true, secondsSince(t0));
  metrics_.recordEndpointRegeneration(true);
  spdlog::info("endpoint {} {}/{} created: identity {}, ipv4 {}, interface {}", id, ns, name, ep.identity,
               ipv4HostOrderToString(ep.ipv4), ep.host_ifname);

  // Other endpoints' rules may select the new identity (an identity that
  // other pods already hold changes nothing for anyone else).
  // Its named ports change what other endpoints' egress rules resolve to.
  if (ident->refs == 1 || !named_ports.empty()) {
    if (auto r = ident->refs == 1 ? triggerPolicyUpdate(metrics::kTriggerIdentities) : regenerateAll(); !r.ok())
      spdlog::warn("regenerate after create: {}", r.error().message);
  } else {
    updateMetrics();
  }
  return eps_.at(id);
}

Status Manager::remove(uint32_t id) {
  auto it = eps_.find(id);
  if (it == eps_.end()) return Error::notFound(fmt::format("endpoint {} not found", id));
  Endpoint& ep = it->second;
  ep.state = EndpointState::Disconnecting;
  uint32_t ip_be = htonl(ep.ipv4);
  // Map entries first (the veth, and with it the programs, goes next), keep going on errors so that
  // every trace is attempted, report the first failure.
  Status first;
  auto note = [&](Status st) {
    if (!st.ok() && first.ok()) first = st;
  };
  note(dp_.deleteIpcache(ip_be, 32));
  note(dp_.deleteEndpoint(ep.host_ifindex, ip_be));
  note(dp_.deletePolicy(ep.id));
  note(dp_.flushCtFor(ip_be));
  note(runUnlocked(cfg_.unlocked, [&] { return net_.deletePodNetwork(ep.netns_name, ep.host_ifname, ip_be); }));
  // The map entry may be gone whatever the outcome: forget what was written.
  written_ep_.erase(id);
  // The state file goes last, and only when everything else is gone.
  if (first.ok()) note(files_.remove(fmt::format("{}/endpoints/{}.json", cfg_.state_dir, ep.id)));
  if (!first.ok()) {
    // Nothing here can be undone (the netns may be gone): the endpoint stays
    // listed as disconnecting, with its state file, identity and address, so
    // that a retry (or `membraned cleanup`) finishes the job. Forgetting it
    // leaked whatever the failed step left (an ipcache entry with a released
    // identity, a netns) with nothing left to remove it.
    spdlog::warn("endpoint {} {}/{}: delete incomplete, kept for a retry: {}", id, ep.ns, ep.name,
                 first.error().message);
    return first.error().wrap(fmt::format("delete endpoint {}", id));
  }
  ids_.release(ep.identity);
  const bool identity_gone = !ids_.lookup(ep.identity).has_value();
  const bool others_change = identity_gone || !ep.named_ports.empty();
  ipam_.release(ep.ipv4);
  spdlog::info("endpoint {} {}/{} deleted", id, ep.ns, ep.name);
  eps_.erase(it);
  ++generation_;
  // Other endpoints' entries can only change when an identity disappears:
  // a pod sharing its identity with others changes no selector's result.
  if (others_change) {
    // Only named ports changed: not a run of the policy trigger (no identity, no rule changed).
    if (auto r = identity_gone ? triggerPolicyUpdate(metrics::kTriggerIdentities) : regenerateAll(); !r.ok())
      spdlog::warn("regenerate after delete: {}", r.error().message);
  } else {
    updateMetrics();
  }
  return okStatus();
}

const Endpoint* Manager::find(uint32_t id) const {
  auto it = eps_.find(id);
  return it == eps_.end() ? nullptr : &it->second;
}

const Endpoint* Manager::findByName(const std::string& ns, const std::string& name) const {
  for (const auto& [_, ep] : eps_)
    if (ep.ns == ns && ep.name == name) return &ep;
  return nullptr;
}

std::vector<const Endpoint*> Manager::list() const {
  std::vector<const Endpoint*> out;
  for (const auto& [_, ep] : eps_) out.push_back(&ep);
  return out;
}

std::map<uint32_t, std::vector<policy::NamedPort>> Manager::namedPortsByIdentity(const Endpoint* extra) const {
  std::map<uint32_t, std::vector<policy::NamedPort>> out;
  auto add = [&](const Endpoint& ep) {
    if (ep.named_ports.empty()) return;
    auto& v = out[ep.identity];
    for (const auto& np : ep.named_ports)
      if (std::find(v.begin(), v.end(), np) == v.end()) v.push_back(np);
  };
  for (const auto& [_, ep] : eps_) add(ep);
  if (extra) add(*extra);
  return out;
}

Status Manager::regenerate(Endpoint& ep, const std::vector<identity::IdentityRef>& refs,
                           const std::map<uint32_t, std::vector<policy::NamedPort>>& peer_ports, ResolveCache* cache) {
  // Held: the kernel keeps this endpoint's last realized policy (see setPolicyHold).
  if (!policy_hold_.empty()) return okStatus();
  auto t0 = Clock::now();
  policy::NamedPorts named{ep.named_ports, peer_ports};
  policy::EndpointPolicy resolved;
  const policy::EndpointPolicy* polp = nullptr;
  if (cache) {
    auto key = std::make_pair(ep.labels, ep.named_ports);
    auto it = cache->by_subject.find(key);
    if (it == cache->by_subject.end())
      it = cache->by_subject.emplace(std::move(key), repo_.resolve(ep.labels, refs, named, &cache->selections)).first;
    polp = &it->second;
  } else {
    resolved = repo_.resolve(ep.labels, refs, named);
    polp = &resolved;
  }
  const policy::EndpointPolicy& pol = *polp;
  // Cilium splits policyCalculation into selector and endpoint parts; here one
  // resolution computes both, so the endpoint part is the whole of it (the
  // dashboard's "Policy Calculation Time" reads endpointPolicyCalculation).
  const double calc = secondsSince(t0);
  metrics_.observeRegenerationTime("policyCalculation", true, calc);
  metrics_.observeRegenerationTime("endpointPolicyCalculation", true, calc);

  ep.ingress_enforced = cfg_.mode == EnforcementMode::Always || (cfg_.mode == EnforcementMode::Default && pol.ingress_enforced);
  ep.egress_enforced = cfg_.mode == EnforcementMode::Always || (cfg_.mode == EnforcementMode::Default && pol.egress_enforced);
  bool audit = ep.audit_mode.value_or(cfg_.audit);
  ep.ingress_audit = audit && ep.ingress_enforced;
  ep.egress_audit = audit && ep.egress_enforced;
  ep.proto_wildcard = pol.proto_wildcard;
  ep.ingress_policies = pol.ingress_rules;
  ep.egress_policies = pol.egress_rules;

  std::map<kernel::PolicyMapKey, kernel::PolicyMapValue> desired;
  for (const auto& [k, v] : pol.entries) desired.emplace(toMapKey(k), toMapValue(v, k, cfg_));

  auto t1 = Clock::now();
  auto synced = dp_.syncPolicy(ep.id, desired);
  if (!synced) {
    metrics_.observeRegenerationTime("mapSync", false, secondsSince(t1));
    metrics_.recordEndpointRegeneration(false);
    return synced.error().wrap(fmt::format("sync policy map of endpoint {}", ep.id));
  }
  // Flags after entries: turning enforcement on only once the allows are in place.
  const WrittenEndpoint want{ep.identity, endpointFlags(ep), ep.host_ifindex, ep.ipv4, ep.mac, ep.host_mac};
  auto written = written_ep_.find(ep.id);
  if (written == written_ep_.end() || written->second != want) {
    mb_endpoint_info info{};
    info.ep_id = ep.id;
    info.identity = ep.identity;
    info.ifindex = ep.host_ifindex;
    info.flags = want.flags;
    info.ipv4 = htonl(ep.ipv4);
    std::copy(ep.mac.begin(), ep.mac.end(), info.mac);
    std::copy(ep.host_mac.begin(), ep.host_mac.end(), info.node_mac);
    written_ep_.erase(ep.id);  // unknown until the write succeeds
    MB_TRY_CTX(dp_.upsertEndpoint(info), fmt::format("write endpoint {} to the datapath", ep.id));
    written_ep_[ep.id] = want;
  }
  metrics_.observeRegenerationTime("mapSync", true, secondsSince(t1));
  ep.policy_revision = repo_.revision();
  return okStatus();
}

Status Manager::heldError(const std::string& what) const {
  if (policy_hold_.empty()) return okStatus();
  return Error(EAGAIN, fmt::format("{}: not possible while policy is held: {}", what, policy_hold_));
}

Status Manager::setAuditMode(uint32_t id, std::optional<bool> audit) {
  MB_TRY(heldError(fmt::format("set PolicyAuditMode of endpoint {}", id)));
  auto it = eps_.find(id);
  if (it == eps_.end()) return Error::notFound(fmt::format("endpoint {} not found", id));
  Endpoint& ep = it->second;
  auto previous = ep.audit_mode;
  ep.audit_mode = audit;
  auto refs = allRefs();
  auto st = regenerate(ep, refs, namedPortsByIdentity());
  if (!st.ok()) {
    ep.audit_mode = previous;
    return st.error().wrap(fmt::format("endpoint {} config", id));
  }
  MB_TRY_CTX(writeState(ep), fmt::format("endpoint {} config: save state", id));
  updateMetrics();
  return okStatus();
}

Result<RegenerationStats> Manager::triggerPolicyUpdate(std::string_view reason) {
  const auto requested = Clock::now();
  metrics_.recordPolicyUpdateTrigger(reason);
  // Synchronous under the caller's lock: the latency is only the time to get
  // here, and no second request can be folded into this run.
  const auto t0 = Clock::now();
  auto r = regenerateAll();
  const double took = secondsSince(t0);
  metrics_.observePolicyUpdateRun(took, std::chrono::duration<double>(t0 - requested).count(), 0);
  if (reason == metrics::kTriggerIdentities && r.ok()) metrics_.observePolicyIncrementalUpdate(took);
  return r;
}

Result<size_t> Manager::retryNotReady(std::chrono::steady_clock::time_point now) {
  const bool any = std::any_of(eps_.begin(), eps_.end(),
                               [](const auto& kv) { return kv.second.state == EndpointState::NotReady; });
  if (!any) {
    retry_backoff_ = std::chrono::milliseconds(0);
    return size_t{0};
  }
  if (retry_backoff_.count() > 0 && now < next_retry_) return size_t{0};
  auto r = regenerateAll();
  if (r.ok()) {
    retry_backoff_ = std::chrono::milliseconds(0);
    return r->endpoints;
  }
  retry_backoff_ = std::min<std::chrono::milliseconds>(
      retry_backoff_.count() == 0 ? std::chrono::seconds(1) : retry_backoff_ * 2, std::chrono::seconds(30));
  next_retry_ = now + retry_backoff_;
  return r.error().wrap(fmt::format("retry not-ready endpoints (next in {} ms)", retry_backoff_.count()));
}

Result<RegenerationStats> Manager::regenerateAll() {
  auto t0 = Clock::now();
  RegenerationStats stats;
  // Held: the ipcache's CIDR entries stay too (a held policy's CIDR rules
  // match on them; removing them would change what its entries select).
  if (policy_hold_.empty()) MB_TRY_CTX(syncCidrIdentities(), "CIDR identities");
  auto refs = allRefs();
  const auto peer_ports = namedPortsByIdentity();
  ResolveCache cache;
  Status first;
  for (auto& [id, ep] : eps_) {
    // A delete that failed halfway: its entries must not come back.
    if (ep.state == EndpointState::Disconnecting) continue;
    const EndpointState prev = ep.state;
    ep.state = EndpointState::Regenerating;
    auto st = regenerate(ep, refs, peer_ports, &cache);
    if (!st.ok()) {
      ep.state = EndpointState::NotReady;
      spdlog::error("{}", st.error().message);
      if (first.ok()) first = st;
      continue;
    }
    if (prev == EndpointState::Restoring) {
      // A restored endpoint gets its programs re-attached (replacing the old agent's instance atomically).
      auto at = dp_.attach(ep.host_ifindex);
      if (!at.ok()) {
        ep.state = EndpointState::NotReady;
        if (first.ok()) first = at;
        continue;
      }
    }
    ep.state = EndpointState::Ready;
    metrics_.recordEndpointRegeneration(true);
    ++stats.endpoints;
  }
  stats.seconds = secondsSince(t0);
  // cilium_policy_selector_match_count_max{class}: every peer selector the
  // resolution used, with what it selected. Cilium's classes: "world" for a
  // selector selecting outside the cluster (world or a CIDR identity),
  // "cluster" for one selecting the node's reserved identities (toEntities:
  // host, health, ...), "fqdn" (membrane has no toFQDNs), "other" for the
  // rest (label selectors of pods).
  if (policy_hold_.empty()) {
    std::map<std::string, int> max_by_class;
    for (const auto& [rule, ids] : cache.selections.peers) {
      const char* cls = "other";
      for (uint32_t id : ids) {
        if (id == MB_ID_WORLD || identity::isLocalScope(id)) {
          cls = "world";
          break;
        }
        if (id < identity::kMinAllocated) cls = "cluster";
      }
      int& m = max_by_class[cls];
      m = std::max(m, static_cast<int>(ids.size()));
    }
    metrics_.setSelectorMatchCountMax(max_by_class);
  }
  updateMetrics();
  if (!first.ok()) return first.error();
  return stats;
}

void Manager::updateMetrics() {
  metrics_.setEndpointCount(static_cast<int64_t>(eps_.size()));
  std::map<std::string, int> states, enforcement;
  int regenerating = 0;
  for (const auto& [_, ep] : eps_) {
    states[std::string(toString(ep.state))]++;
    if (ep.state == EndpointState::Regenerating) ++regenerating;
    std::string e = ep.ingress_enforced && ep.egress_enforced ? "both"
                    : ep.ingress_enforced                     ? "ingress"
                    : ep.egress_enforced                      ? "egress"
                                                              : "none";
    if ((ep.ingress_audit || ep.egress_audit) && e != "none") e = "audit-" + e;
    enforcement[e]++;
  }
  metrics_.setEndpointsRegenerating(regenerating);
  metrics_.setEndpointStates(states);
  metrics_.setEnforcementStatus(enforcement);
  std::map<std::string, int> idtypes, sources;
  for (const auto& id : identities()) {
    // CIDR identities are node-local (local scope), as on Cilium.
    if (id.id & identity::kLocalScopeFlag)
      idtypes["node_local"]++;
    else if (!id.reserved)
      idtypes["cluster_local"]++;
    std::set<std::string> mine;
    for (const auto& l : id.labels) mine.insert(l.source);
    for (const auto& s : mine) sources[s]++;
  }
  metrics_.setIdentities(idtypes);
  metrics_.setIdentityLabelSources(sources);
  // The node's router address (the gateway on the host device) counts as
  // allocated, as Cilium counts cilium_host's; network and broadcast are not usable.
  const uint64_t size = ipam_.cidr().size();
  metrics_.setIpv4Addresses(static_cast<int64_t>(ipam_.used()) + 1, static_cast<int64_t>(size > 2 ? size - 2 : 0));
}

Status Manager::removeAll() {
  Status first;
  std::vector<uint32_t> ids;
  for (const auto& [id, _] : eps_) ids.push_back(id);
  for (uint32_t id : ids) {
    auto st = remove(id);
    if (!st.ok() && first.ok()) first = st;
  }
  // Endpoints whose state file init() could read but not restore (their
  // network was incomplete): remove what is left of them, or their netns and
  // veth outlive the agent with nothing that knows their names.
  for (const auto& [id, ep] : unrestored_) {
    if (eps_.count(id)) continue;
    uint32_t ip_be = htonl(ep.ipv4);
    auto st = net_.deletePodNetwork(ep.netns_name, ep.host_ifname, ip_be);
    if (st.ok()) st = dp_.deletePolicy(id);
    if (st.ok()) st = files_.remove(fmt::format("{}/endpoints/{}.json", cfg_.state_dir, id));
    if (!st.ok() && first.ok()) first = st.error().wrap(fmt::format("remove unrestored endpoint {} {}/{}", id, ep.ns, ep.name));
  }
  unrestored_.clear();
  auto st = net_.removeUnreachableRoute(htonl(cfg_.pod_cidr.network), cfg_.pod_cidr.prefix_len);
  if (!st.ok() && first.ok()) first = st;
  st = net_.removeHostDevice(cfg_.host_device);
  if (!st.ok() && first.ok()) first = st;
  return first;
}

}  // namespace membrane::endpoint
