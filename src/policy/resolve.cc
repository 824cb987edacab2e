// Resolution: policies + identities -> first-match-complete map entries.
//
// Every (peer, port) pair a rule allows or denies is an "atom" keyed like a
// map entry: identity (0 = any) x L4 (proto/port, or any). A packet
// (i, proto, port) is matched by exactly the atoms at the four keys the
// datapath probes, so its semantic verdict is
//   V(i,l4) = deny if any of agg(i,l4), agg(0,l4), agg(i,*), agg(0,*) denies,
//             else allow if any allows (proxy if any allowing atom has L7), else miss.
// The datapath takes the FIRST key that exists, so we write an entry at a
// key whenever V there differs from what the first-match lookup would find
// without it. Keys are visited from least to most specific so the fallback is
// known. Only keys combining existing atoms can differ from their fallback:
// (i,*) and (0,l4) need an atom there; (i,l4) needs one there or atoms at both
// (i,*) and (0,l4) (e.g. deny (X,*) + allow (*,TCP/80) => deny (X,TCP/80)).
#include <algorithm>
#include <set>

#include "membrane/policy_repository.h"

namespace membrane::policy {

namespace {

using L4 = uint32_t;  // proto << 16 | port; 0 = any
constexpr L4 kAnyL4 = 0;
L4 makeL4(uint8_t proto, uint16_t port) { return (uint32_t{proto} << 16) | port; }

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

using AtomMap = std::map<std::pair<uint32_t, L4>, Agg>;

struct DirectionState {
  AtomMap atoms;
  bool enforced = false;
};

bool selectsIdentity(const Selector& sel, const IdentityRef& ref) {
  if (ref.labels == nullptr) return false;
  // Reserved identities are reached through entities or explicit reserved: keys.
  if (ref.id < identity::kMinAllocated && !sel.mentionsReserved()) return false;
  return sel.matches(*ref.labels);
}

void addEntity(Entity e, const std::vector<IdentityRef>& identities, std::set<uint32_t>& out) {
  using labels::Reserved;
  auto add = [&](Reserved r) { out.insert(static_cast<uint32_t>(r)); };
  switch (e) {
    case Entity::All: out.insert(0); break;
    case Entity::World: add(Reserved::World); break;
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
        if (ref.id >= identity::kMinAllocated && ref.id < identity::kLocalScopeFlag) out.insert(ref.id);
      break;
  }
}

// The L4 keys of a peer rule, with their proxy flag.
std::vector<std::pair<L4, bool>> l4Keys(const PeerRule& pr) {
  std::vector<std::pair<L4, bool>> out;
  if (pr.to_ports.empty()) {
    out.emplace_back(kAnyL4, false);
    return out;
  }
  for (const auto& rule : pr.to_ports) {
    const bool l7 = !rule.http.empty();
    if (rule.ports.empty()) out.emplace_back(kAnyL4, false);
    for (const auto& pp : rule.ports) {
      if (pp.port == 0) {  // the parser only lets protocol ANY through without a port
        out.emplace_back(kAnyL4, false);
        continue;
      }
      uint32_t last = pp.end_port ? pp.end_port : pp.port;
      for (uint32_t port = pp.port; port <= last; ++port) {
        auto add = [&](Protocol p) {
          out.emplace_back(makeL4(static_cast<uint8_t>(p), static_cast<uint16_t>(port)), l7 && p == Protocol::TCP);
        };
        // Cilium expands ANY with a port to TCP, UDP and SCTP.
        if (pp.protocol == Protocol::Any) {
          add(Protocol::TCP);
          add(Protocol::UDP);
          add(Protocol::SCTP);
        } else {
          add(pp.protocol);
        }
      }
    }
  }
  return out;
}

void collect(const PeerRule& pr, bool deny, uint8_t dir, uint32_t cookie, const std::vector<IdentityRef>& identities,
             DirectionState& st, std::vector<CidrPeer>& cidr_peers) {
  std::set<uint32_t> ids;
  for (const auto& sel : pr.endpoints)
    for (const auto& ref : identities)
      if (selectsIdentity(sel, ref)) ids.insert(ref.id);
  for (Entity e : pr.entities) addEntity(e, identities, ids);
  for (const auto& c : pr.cidrs) {
    if (c.cidr == "0.0.0.0/0" && c.except.empty()) {
      ids.insert(static_cast<uint32_t>(labels::Reserved::World));
    } else {
      cidr_peers.push_back(CidrPeer{c, dir, deny, pr.to_ports, cookie});
    }
  }
  // No peer field at all: ports alone make an L4-only rule; nothing at all allows nothing.
  if (pr.endpoints.empty() && pr.entities.empty() && pr.cidrs.empty()) {
    if (pr.to_ports.empty()) return;
    ids.insert(0);
  }
  if (ids.empty()) return;
  for (const auto& [l4, proxy] : l4Keys(pr)) {
    for (uint32_t id : ids) {
      Agg& a = st.atoms[{id, l4}];
      if (deny) {
        if (!a.deny) a.deny_cookie = cookie;
        a.deny = true;
      } else {
        if (!a.allow) a.allow_cookie = cookie;
        a.allow = true;
        a.proxy |= proxy;
      }
    }
  }
}

Value semantic(const AtomMap& atoms, uint32_t id, L4 l4) {
  const Agg* found[4] = {};
  size_t n = 0;
  auto probe = [&](uint32_t i, L4 l) {
    auto it = atoms.find({i, l});
    if (it == atoms.end()) return;
    for (size_t k = 0; k < n; ++k)
      if (found[k] == &it->second) return;
    found[n++] = &it->second;
  };
  // Most specific first, so the cookie is the most specific rule's.
  probe(id, l4);
  probe(0, l4);
  probe(id, kAnyL4);
  probe(0, kAnyL4);
  Value v;
  for (size_t k = 0; k < n; ++k) {
    if (found[k]->deny) {
      return Value{V::Deny, false, found[k]->deny_cookie};
    }
  }
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
    // First match in datapath order among entries emitted so far.
    const std::pair<uint32_t, L4> order[] = {{id, l4}, {0, l4}, {id, kAnyL4}, {0, kAnyL4}};
    for (const auto& [i, l] : order) {
      auto it = entries.find(keyOf(i, l));
      if (it != entries.end()) return Value{it->second.deny ? V::Deny : V::Allow, it->second.proxy_port_needed != 0, 0};
    }
    return Value{};
  };
  auto consider = [&](uint32_t id, L4 l4) {
    if (entries.count(keyOf(id, l4))) return;
    Value want = semantic(st.atoms, id, l4);
    if (want.v == V::Miss || want.same(lookup(id, l4))) return;
    entries[keyOf(id, l4)] = PolicyEntry{want.v == V::Deny, static_cast<uint16_t>(want.proxy ? 1 : 0), want.cookie};
  };

  consider(0, kAnyL4);
  std::vector<uint32_t> l3_ids;   // ids with an atom at (id, *)
  std::vector<L4> l4_only;        // l4s with an atom at (0, l4)
  for (const auto& [k, agg] : st.atoms) {
    if (k.first != 0 && k.second == kAnyL4) l3_ids.push_back(k.first);
    if (k.first == 0 && k.second != kAnyL4) l4_only.push_back(k.second);
  }
  for (uint32_t id : l3_ids) consider(id, kAnyL4);
  for (L4 l4 : l4_only) consider(0, l4);
  for (const auto& [k, agg] : st.atoms)
    if (k.first != 0 && k.second != kAnyL4) consider(k.first, k.second);
  for (uint32_t id : l3_ids)
    for (L4 l4 : l4_only) consider(id, l4);
}

}  // namespace

EndpointPolicy resolvePolicies(const std::vector<Policy>& policies, const labels::LabelSet& subject,
                               const std::vector<IdentityRef>& identities) {
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
      for (const auto& pr : r.ingress) collect(pr, false, 1, p.cookie, identities, in, out.cidr_peers);
      for (const auto& pr : r.ingress_deny) collect(pr, true, 1, p.cookie, identities, in, out.cidr_peers);
      for (const auto& pr : r.egress) collect(pr, false, 2, p.cookie, identities, eg, out.cidr_peers);
      for (const auto& pr : r.egress_deny) collect(pr, true, 2, p.cookie, identities, eg, out.cidr_peers);
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
  return out;
}

Verdict verdict(const EndpointPolicy& ep, uint32_t identity, uint8_t proto, uint16_t dport, uint8_t direction) {
  const PolicyKey order[] = {{identity, dport, proto, direction},
                             {0, dport, proto, direction},
                             {identity, 0, 0, direction},
                             {0, 0, 0, direction}};
  for (const auto& k : order) {
    auto it = ep.entries.find(k);
    if (it == ep.entries.end()) continue;
    const PolicyEntry& e = it->second;
    return Verdict{e.deny ? VerdictKind::Denied : VerdictKind::Allowed, e.deny ? uint16_t{0} : e.proxy_port_needed,
                   e.cookie, true};
  }
  const bool enforced = direction == 1 ? ep.ingress_enforced : ep.egress_enforced;
  return Verdict{enforced ? VerdictKind::Dropped : VerdictKind::Allowed, 0, 0, false};
}

}  // namespace membrane::policy
