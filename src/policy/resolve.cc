// Resolution: policies + identities -> first-match-complete map entries.
//
// Every (peer, L4) pair a rule allows or denies is an "atom" keyed like a map
// entry: identity (0 = any) x L4 (proto/port, proto/any port, or any). A
// packet (i, proto, port) is matched by exactly the atoms at the six keys the
// datapath probes (bpf/shared/datapath.h), so its semantic verdict is
//   V = deny if any atom at those keys denies, else allow if any allows
//       (proxy if any allowing atom has L7), else miss.
// The datapath takes the FIRST key that exists, so we write an entry at a key
// whenever V there differs from what the first-match lookup would find
// without it.
//
// Which keys can need an entry: for a packet, let J be the join (most
// specific combination) of the atom keys among its six probes; they all
// generalize J, so V(packet) = V(J), and every entry among the probes is
// itself a join of such atoms, hence a generalization of J, probed in the same
// relative order. So it suffices that lookup(J) = V(J) for every join J of
// compatible atoms. Identities join as {0, i}; L4s as the chain
// any < proto/* < proto/port. The joins are therefore: the atom keys, plus
// (i, l) for an atom l at id 0 when i has an atom at a generalization of l
// (e.g. deny (X,*) + allow (*,TCP/80) => entry deny (X,TCP/80)). Keys are
// visited from least to most specific (L4 level, then id 0 before i) so the
// fallback of each key is final when it is considered.
#include <netinet/in.h>

#include <algorithm>
#include <set>

#include "membrane/policy_repository.h"
#include "src/policy/resolve_internal.h"

namespace membrane::policy {

namespace detail {

namespace {

bool isCidrIdentity(const IdentityRef& ref) {
  return identity::isLocalScope(ref.id) && ref.labels != nullptr &&
         ref.labels->find(labels::kSourceReserved, labels::reservedName(labels::Reserved::World)) != nullptr;
}

bool selectsIdentity(const Selector& sel, const IdentityRef& ref) {
  if (ref.labels == nullptr) return false;
  // Reserved identities are reached through entities or explicit reserved:
  // keys; CIDR identities through CIDR rules, entities, or cidr:/reserved: keys.
  if (ref.id < identity::kMinAllocated && !sel.mentionsReserved()) return false;
  if (identity::isLocalScope(ref.id) && !sel.mentionsReserved() && !sel.mentionsSource(labels::kSourceCidr))
    return false;
  return sel.matches(*ref.labels);
}

bool cidrSelects(const CidrRule& c, const IdentityRef& ref) {
  if (!isCidrIdentity(ref)) return false;
  if (ref.labels->find(labels::kSourceCidr, c.cidr) == nullptr) return false;
  for (const auto& e : c.except)
    if (ref.labels->find(labels::kSourceCidr, e) != nullptr) return false;
  return true;
}

void addEntity(Entity e, const std::vector<IdentityRef>& identities, std::set<uint32_t>& out) {
  using labels::Reserved;
  auto add = [&](Reserved r) { out.insert(static_cast<uint32_t>(r)); };
  switch (e) {
    case Entity::All: out.insert(0); break;
    case Entity::World:
      add(Reserved::World);
      for (const auto& ref : identities)
        if (isCidrIdentity(ref)) out.insert(ref.id);
      break;
    case Entity::Host: add(Reserved::Host); break;
    case Entity::Init: add(Reserved::Init); break;
    case Entity::Health: add(Reserved::Health); break;
    case Entity::RemoteNode: add(Reserved::RemoteNode); break;
    case Entity::Unmanaged: add(Reserved::Unmanaged); break;
    case Entity::KubeApiserver: add(Reserved::KubeApiserver); break;
    case Entity::None: break;
    case Entity::Cluster:
      // Every reserved identity but world, plus every cluster-scope identity
      // (local-scope CIDR identities are outside the cluster).
      for (Reserved r : {Reserved::Host, Reserved::Unmanaged, Reserved::Health, Reserved::Init,
                         Reserved::RemoteNode, Reserved::KubeApiserver})
        add(r);
      for (const auto& ref : identities)
        if (ref.id >= identity::kMinAllocated && !identity::isLocalScope(ref.id)) out.insert(ref.id);
      break;
  }
}

}  // namespace

std::set<uint32_t> peerIdentities(const PeerRule& pr, const std::vector<IdentityRef>& identities) {
  std::set<uint32_t> ids;
  // No peer field at all: ports alone make an L4-only rule; nothing at all allows nothing.
  if (pr.endpoints.empty() && pr.entities.empty() && pr.cidrs.empty()) {
    if (!pr.to_ports.empty() || !pr.icmp_types.empty()) ids.insert(0);
    return ids;
  }
  for (Entity e : pr.entities) addEntity(e, identities, ids);
  if (ids.count(0)) return {0};
  for (const auto& sel : pr.endpoints)
    for (const auto& ref : identities)
      if (selectsIdentity(sel, ref)) ids.insert(ref.id);
  for (const auto& c : pr.cidrs) {
    // Addresses in no policy prefix map to world: they are inside 0.0.0.0/0
    // and never inside an except (excepts are policy prefixes).
    if (c.cidr == "0.0.0.0/0") ids.insert(static_cast<uint32_t>(labels::Reserved::World));
    for (const auto& ref : identities)
      if (cidrSelects(c, ref)) ids.insert(ref.id);
  }
  return ids;
}

std::vector<std::pair<L4, bool>> l4Keys(const PeerRule& pr) {
  std::vector<std::pair<L4, bool>> out;
  if (pr.to_ports.empty() && pr.icmp_types.empty()) {
    out.emplace_back(kAnyL4, false);
    return out;
  }
  for (const auto& rule : pr.to_ports) {
    const bool l7 = !rule.http.empty();
    if (rule.ports.empty()) out.emplace_back(kAnyL4, false);
    for (const auto& pp : rule.ports) {
      auto add = [&](Protocol p, uint16_t port) {
        out.emplace_back(makeL4(static_cast<uint8_t>(p), port), l7 && p == Protocol::TCP);
      };
      if (!pp.name.empty()) continue;  // named: resolved per endpoint (resolvePolicies), never "all ports"
      if (pp.port == 0) {
        if (pp.protocol == Protocol::Any) out.emplace_back(kAnyL4, false);
        else add(pp.protocol, 0);  // protocol-only: every port of it
        continue;
      }
      uint32_t last = pp.end_port ? pp.end_port : pp.port;
      for (uint32_t port = pp.port; port <= last; ++port) {
        // Cilium expands ANY with a port to TCP, UDP and SCTP.
        if (pp.protocol == Protocol::Any) {
          add(Protocol::TCP, static_cast<uint16_t>(port));
          add(Protocol::UDP, static_cast<uint16_t>(port));
          add(Protocol::SCTP, static_cast<uint16_t>(port));
        } else {
          add(pp.protocol, static_cast<uint16_t>(port));
        }
      }
    }
  }
  for (uint8_t type : pr.icmp_types) out.emplace_back(makeL4(static_cast<uint8_t>(Protocol::ICMP), type), false);
  return out;
}

}  // namespace detail

namespace {

using detail::kAnyL4;
using detail::L4;
using detail::protoOnly;

int level(L4 l4) { return l4 == kAnyL4 ? 0 : ((l4 & 0xffff) == 0 ? 1 : 2); }

struct Agg {
  bool deny = false;
  bool allow = false;
  bool proxy = false;
  uint32_t deny_cookie = 0;
  uint32_t allow_cookie = 0;
};

enum class V { Miss, Allow, Deny };
struct Value {
  V v = V::Miss;
  bool proxy = false;
  uint32_t cookie = 0;
  bool same(const Value& o) const { return v == o.v && proxy == o.proxy; }
};

using Key = std::pair<uint32_t, L4>;
using AtomMap = std::map<Key, Agg>;

struct DirectionState {
  AtomMap atoms;
  bool enforced = false;
};

// The datapath's probe order for a packet whose most specific key is (id, l4):
// L4 specificity first, then identity before "any identity". Duplicates
// (id 0, ICMP type 0 = proto-only) removed.
size_t probes(uint32_t id, L4 l4, Key (&out)[6]) {
  size_t n = 0;
  auto push = [&](uint32_t i, L4 l) {
    for (size_t k = 0; k < n; ++k)
      if (out[k] == Key{i, l}) return;
    out[n++] = Key{i, l};
  };
  const L4 chain[3] = {l4, protoOnly(l4), kAnyL4};
  for (L4 l : chain) {
    push(id, l);
    push(0, l);
  }
  return n;
}

// The identities `pr` selects, memoized in `selections` when given (else in `own`).
const std::set<uint32_t>& selected(const PeerRule& pr, const std::vector<IdentityRef>& identities,
                                   SelectionCache* selections, std::set<uint32_t>& own) {
  if (!selections) return own = detail::peerIdentities(pr, identities);
  auto it = selections->peers.find(&pr);
  if (it == selections->peers.end()) it = selections->peers.emplace(&pr, detail::peerIdentities(pr, identities)).first;
  return it->second;
}

void collect(const PeerRule& pr, bool deny, uint32_t cookie, const std::vector<IdentityRef>& identities,
             const NamedPorts& named, bool ingress, SelectionCache* selections, DirectionState& st) {
  std::set<uint32_t> own;
  const std::set<uint32_t>& ids = selected(pr, identities, selections, own);
  if (ids.empty()) return;
  auto add = [&](uint32_t id, L4 l4, bool proxy) {
    Agg& a = st.atoms[{id, l4}];
    if (deny) {
      if (!a.deny) a.deny_cookie = cookie;
      a.deny = true;
    } else {
      if (!a.allow) a.allow_cookie = cookie;
      a.allow = true;
      a.proxy |= proxy;
    }
  };
  for (const auto& [l4, proxy] : detail::l4Keys(pr))
    for (uint32_t id : ids) add(id, l4, proxy);

  // Named ports, as Kubernetes and Cilium resolve them: ingress -> the
  // subject's own port of that name; egress -> each peer identity's port of
  // that name (a peer without it contributes nothing). A protocol in the
  // rule must match the declared one; ANY takes the declared protocol.
  for (const auto& rule : pr.to_ports) {
    const bool l7 = !rule.http.empty();
    for (const auto& pp : rule.ports) {
      if (pp.name.empty()) continue;
      auto each = [&](const std::vector<NamedPort>& declared, auto&& fn) {
        for (const auto& np : declared)
          if (np.name == pp.name && (pp.protocol == Protocol::Any || np.proto == static_cast<uint8_t>(pp.protocol)))
            fn(detail::makeL4(np.proto, np.port), l7 && np.proto == static_cast<uint8_t>(Protocol::TCP));
      };
      if (ingress) {
        each(named.subject, [&](L4 l4, bool proxy) {
          for (uint32_t id : ids) add(id, l4, proxy);
        });
        continue;
      }
      auto peer = [&](uint32_t id, const std::vector<NamedPort>& declared) {
        each(declared, [&](L4 l4, bool proxy) { add(id, l4, proxy); });
      };
      if (ids.count(0)) {
        for (const auto& [id, declared] : named.by_identity) peer(id, declared);
      } else {
        for (uint32_t id : ids)
          if (auto it = named.by_identity.find(id); it != named.by_identity.end()) peer(id, it->second);
      }
    }
  }
}

Value semantic(const AtomMap& atoms, uint32_t id, L4 l4) {
  Key keys[6];
  const size_t nk = probes(id, l4, keys);
  const Agg* found[6] = {};
  size_t n = 0;
  // Most specific first, so the cookie is the most specific rule's.
  for (size_t k = 0; k < nk; ++k) {
    auto it = atoms.find(keys[k]);
    if (it != atoms.end()) found[n++] = &it->second;
  }
  for (size_t k = 0; k < n; ++k)
    if (found[k]->deny) return Value{V::Deny, false, found[k]->deny_cookie};
  Value v;
  for (size_t k = 0; k < n; ++k) {
    if (!found[k]->allow) continue;
    if (v.v == V::Miss) v = Value{V::Allow, false, found[k]->allow_cookie};
    v.proxy |= found[k]->proxy;
  }
  return v;
}

void emit(const DirectionState& st, uint8_t dir, std::map<PolicyKey, PolicyEntry>& entries) {
  auto keyOf = [&](uint32_t id, L4 l4) {
    return PolicyKey{id, static_cast<uint16_t>(l4 & 0xffff), static_cast<uint8_t>(l4 >> 16), dir};
  };
  auto lookup = [&](uint32_t id, L4 l4) -> Value {
    Key keys[6];
    const size_t n = probes(id, l4, keys);
    for (size_t k = 0; k < n; ++k) {
      auto it = entries.find(keyOf(keys[k].first, keys[k].second));
      if (it != entries.end()) return Value{it->second.deny ? V::Deny : V::Allow, it->second.proxy_port_needed != 0, 0};
    }
    return Value{};
  };

  // Candidate keys: the joins of compatible atoms (see the file comment).
  std::map<uint32_t, std::vector<L4>> by_id;  // atoms' L4s per identity, ascending
  for (const auto& [k, agg] : st.atoms) by_id[k.first].push_back(k.second);
  std::vector<Key> candidates;
  static const std::vector<L4> kNone;
  const std::vector<L4>& at_zero = by_id.count(0) ? by_id.at(0) : kNone;
  for (L4 l : at_zero) candidates.emplace_back(0, l);
  for (const auto& [id, own] : by_id) {
    if (id == 0) continue;
    for (L4 l : own) candidates.emplace_back(id, l);
    const bool own_any = own.front() == kAnyL4;  // sorted: kAnyL4 first if present
    std::set<L4> own_protos;
    for (L4 l : own)
      if (level(l) == 1) own_protos.insert(l);
    if (!own_any && own_protos.empty()) continue;
    for (L4 l : at_zero) {
      if (l == kAnyL4 || std::binary_search(own.begin(), own.end(), l)) continue;
      if (own_any || (level(l) == 2 && own_protos.count(protoOnly(l)))) candidates.emplace_back(id, l);
    }
  }
  std::stable_sort(candidates.begin(), candidates.end(), [](const Key& a, const Key& b) {
    return std::make_pair(level(a.second), a.first != 0) < std::make_pair(level(b.second), b.first != 0);
  });
  for (const auto& [id, l4] : candidates) {
    if (entries.count(keyOf(id, l4))) continue;
    Value want = semantic(st.atoms, id, l4);
    if (want.v == V::Miss || want.same(lookup(id, l4))) continue;
    entries[keyOf(id, l4)] = PolicyEntry{want.v == V::Deny, static_cast<uint16_t>(want.proxy ? 1 : 0), want.cookie};
  }
}

// The TCP ports a named `ports[]` item resolves to, each with the peers it
// holds for, as collect() resolves named ports: ingress -> the subject's own
// port for every peer in `ids`; egress -> each peer identity's own port.
std::vector<std::pair<uint16_t, std::set<uint32_t>>> namedTcpPorts(const PortProtocol& pp,
                                                                   const std::set<uint32_t>& ids,
                                                                   const NamedPorts& named, bool ingress) {
  std::vector<std::pair<uint16_t, std::set<uint32_t>>> out;
  constexpr uint8_t kTcp = static_cast<uint8_t>(Protocol::TCP);
  auto tcp = [&](const NamedPort& np) {
    return np.name == pp.name && np.proto == kTcp && (pp.protocol == Protocol::Any || pp.protocol == Protocol::TCP);
  };
  if (ingress) {
    for (const auto& np : named.subject)
      if (tcp(np) && !ids.empty()) out.emplace_back(np.port, ids);
    return out;
  }
  for (const auto& [id, declared] : named.by_identity) {
    if (!ids.count(0) && !ids.count(id)) continue;
    for (const auto& np : declared)
      if (tcp(np)) out.emplace_back(np.port, std::set<uint32_t>{id});
  }
  return out;
}

// EndpointPolicy::l7 for one direction (see its contract).
void resolveL7(const std::vector<Policy>& policies, const labels::LabelSet& subject,
               const std::vector<IdentityRef>& identities, const NamedPorts& named, SelectionCache* selections,
               bool ingress, std::map<L7Port, std::vector<L7Rule>>& out) {
  const uint8_t dir = ingress ? 1 : 2;
  auto sections = [&](const Rule& r) -> const std::vector<PeerRule>& { return ingress ? r.ingress : r.egress; };
  // The ports first: a port is there once any rule gives it HTTP rules.
  std::map<uint16_t, std::vector<L7Rule>> by_port;
  for (const auto& p : policies)
    for (const auto& r : p.rules) {
      if (!r.endpoint_selector.matches(subject)) continue;
      for (const auto& pr : sections(r)) {
        for (const auto& [l4, proxy] : detail::l4Keys(pr))
          if (proxy) by_port.try_emplace(static_cast<uint16_t>(l4 & 0xffff));
        bool named_l7 = false;
        for (const auto& tp : pr.to_ports)
          for (const auto& pp : tp.ports) named_l7 |= !tp.http.empty() && !pp.name.empty();
        if (!named_l7) continue;
        std::set<uint32_t> own;
        const auto& ids = selected(pr, identities, selections, own);
        for (const auto& tp : pr.to_ports)
          for (const auto& pp : tp.ports)
            if (!tp.http.empty() && !pp.name.empty())
              for (const auto& [port, peers] : namedTcpPorts(pp, ids, named, ingress)) by_port.try_emplace(port);
      }
    }
  if (by_port.empty()) return;
  for (const auto& p : policies)
    for (const auto& r : p.rules) {
      if (!r.endpoint_selector.matches(subject)) continue;
      for (const auto& pr : sections(r)) {
        std::set<uint32_t> own;
        const auto& ids = selected(pr, identities, selections, own);
        if (ids.empty()) continue;
        for (auto& [port, rules] : by_port) {
          // Peers this peer rule allows the port to at L3/L4 without HTTP rules.
          bool covered_l4 = false;
          for (const auto& [l4, proxy] : detail::l4Keys(pr)) {
            if (!detail::l4Covers(l4, IPPROTO_TCP, port)) continue;
            if (!proxy || (l4 & 0xffff) != port) covered_l4 = true;
          }
          std::set<uint32_t> covered_named;
          for (const auto& tp : pr.to_ports) {
            std::set<uint32_t> peers;  // of the named ports of this item naming `port`
            bool has = false;          // a numeric port of this item covers `port`
            for (const auto& pp : tp.ports) {
              if (!pp.name.empty()) {
                for (const auto& [np, who] : namedTcpPorts(pp, ids, named, ingress))
                  if (np == port) peers.insert(who.begin(), who.end());
                continue;
              }
              if ((pp.protocol == Protocol::TCP || pp.protocol == Protocol::Any) && pp.port <= port &&
                  port <= (pp.end_port ? pp.end_port : pp.port))
                has = true;
            }
            if (tp.http.empty()) {
              covered_named.insert(peers.begin(), peers.end());
              continue;
            }
            if (!has && peers.empty()) continue;
            for (const auto& h : tp.http) rules.push_back(L7Rule{h, p.displayName(), has ? ids : peers});
          }
          if (covered_l4) rules.push_back(L7Rule{HttpRule{}, p.displayName(), ids});
          else if (!covered_named.empty()) rules.push_back(L7Rule{HttpRule{}, p.displayName(), covered_named});
        }
      }
    }
  for (auto& [port, rules] : by_port) out[L7Port{dir, port}] = std::move(rules);
}

}  // namespace

EndpointPolicy resolvePolicies(const std::vector<Policy>& policies, const labels::LabelSet& subject,
                               const std::vector<IdentityRef>& identities, const NamedPorts& named,
                               SelectionCache* selections) {
  EndpointPolicy out;
  DirectionState in, eg;
  for (const auto& p : policies) {
    bool selects_in = false, selects_eg = false;
    for (const auto& r : p.rules) {
      if (!r.endpoint_selector.matches(subject)) continue;
      if (r.has_ingress) {
        selects_in = true;
        if (r.default_deny_ingress.value_or(true)) in.enforced = true;
      }
      if (r.has_egress) {
        selects_eg = true;
        if (r.default_deny_egress.value_or(true)) eg.enforced = true;
      }
      for (const auto& pr : r.ingress) collect(pr, false, p.cookie, identities, named, true, selections, in);
      for (const auto& pr : r.ingress_deny) collect(pr, true, p.cookie, identities, named, true, selections, in);
      for (const auto& pr : r.egress) collect(pr, false, p.cookie, identities, named, false, selections, eg);
      for (const auto& pr : r.egress_deny) collect(pr, true, p.cookie, identities, named, false, selections, eg);
    }
    auto push = [](std::vector<std::string>& v, std::string name) {
      if (std::find(v.begin(), v.end(), name) == v.end()) v.push_back(std::move(name));
    };
    if (selects_in) push(out.ingress_rules, p.displayName());
    if (selects_eg) push(out.egress_rules, p.displayName());
  }
  out.ingress_enforced = in.enforced;
  out.egress_enforced = eg.enforced;
  for (DirectionState* st : {&in, &eg}) {
    // Rules apply but the direction is not default-deny (deny-only rules,
    // enableDefaultDeny: false): what no entry matches is allowed. Say so in
    // the map itself, so a miss always means drop.
    if (!st->enforced && !st->atoms.empty()) {
      Agg& all = st->atoms[{0, kAnyL4}];
      all.allow = true;
    }
    emit(*st, st == &in ? 1 : 2, out.entries);
  }
  resolveL7(policies, subject, identities, named, selections, true, out.l7);
  resolveL7(policies, subject, identities, named, selections, false, out.l7);
  out.proto_wildcard = std::any_of(out.entries.begin(), out.entries.end(),
                                   [](const auto& e) { return e.first.proto != 0 && e.first.dport == 0; });
  return out;
}

std::set<std::string> cidrPrefixes(const std::vector<Policy>& policies) {
  std::set<std::string> out;
  auto add = [&](const std::vector<PeerRule>& prs) {
    for (const auto& pr : prs)
      for (const auto& c : pr.cidrs) {
        out.insert(c.cidr);
        out.insert(c.except.begin(), c.except.end());
      }
  };
  for (const auto& p : policies)
    for (const auto& r : p.rules) {
      add(r.ingress);
      add(r.ingress_deny);
      add(r.egress);
      add(r.egress_deny);
    }
  out.erase("0.0.0.0/0");
  return out;
}

Verdict verdict(const EndpointPolicy& ep, uint32_t identity, uint8_t proto, uint16_t dport, uint8_t direction) {
  const PolicyKey order[] = {{identity, dport, proto, direction}, {0, dport, proto, direction},
                             {identity, 0, proto, direction},     {0, 0, proto, direction},
                             {identity, 0, 0, direction},         {0, 0, 0, direction}};
  for (size_t i = 0; i < 6; ++i) {
    if ((i == 2 || i == 3) && !ep.proto_wildcard) continue;
    auto it = ep.entries.find(order[i]);
    if (it == ep.entries.end()) continue;
    const PolicyEntry& e = it->second;
    return Verdict{e.deny ? VerdictKind::Denied : VerdictKind::Allowed, e.deny ? uint16_t{0} : e.proxy_port_needed,
                   e.cookie, true};
  }
  const bool enforced = direction == 1 ? ep.ingress_enforced : ep.egress_enforced;
  return Verdict{enforced ? VerdictKind::Dropped : VerdictKind::Allowed, 0, 0, false};
}

}  // namespace membrane::policy
