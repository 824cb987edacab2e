// Brute force: for many random rule sets, the first-match datapath lookup over
// the resolved entries (verdict(), six tiers) must give, for every identity x
// protocol x port x direction, exactly the verdict of a direct evaluation of
// the rules: deny if any deny rule matches, else allow if any allow rule
// matches (proxy if a matching allow has HTTP rules), else drop when enforced.
// Rules include protocol-only ports, ICMP types and CIDR peers over CIDR
// identities.
#include <random>

#include <gtest/gtest.h>

#include "membrane/identity.h"
#include "membrane/policy_repository.h"

namespace membrane::policy {
namespace {

using labels::LabelSet;

constexpr uint32_t kUnknownIdentity = 999;  // an identity the resolver has never seen

struct Universe {
  identity::IdentityAllocator ids;
  std::vector<IdentityRef> refs;
};

bool peerMatches(const PeerRule& pr, uint32_t id, const std::vector<IdentityRef>& refs) {
  if (pr.endpoints.empty() && pr.entities.empty() && pr.cidrs.empty())
    return !pr.to_ports.empty() || !pr.icmp_types.empty();
  const LabelSet* labels = nullptr;
  for (const auto& r : refs)
    if (r.id == id) labels = r.labels;
  const bool local = id >= identity::kLocalScopeFlag;
  const bool cidr_id = local && labels != nullptr && labels->find("reserved", "world") != nullptr;
  for (const auto& sel : pr.endpoints) {
    if (!labels) continue;
    if (id < 256 && !sel.mentionsReserved()) continue;
    if (local && !sel.mentionsReserved() && !sel.mentionsSource("cidr")) continue;
    if (sel.matches(*labels)) return true;
  }
  for (Entity e : pr.entities) {
    switch (e) {
      case Entity::All: return true;
      case Entity::World: if (id == 2 || cidr_id) return true; break;
      case Entity::Host: if (id == 1) return true; break;
      case Entity::Health: if (id == 4) return true; break;
      case Entity::Cluster:
        if ((id != 2 && id >= 1 && id <= 7) || (id >= 256 && !local && labels != nullptr)) return true;
        break;
      default: break;
    }
  }
  for (const auto& c : pr.cidrs) {
    if (c.cidr == "0.0.0.0/0" && id == 2) return true;
    if (!cidr_id || labels->find("cidr", c.cidr) == nullptr) continue;
    bool excepted = false;
    for (const auto& e : c.except) excepted |= labels->find("cidr", e) != nullptr;
    if (!excepted) return true;
  }
  return false;
}

// Whether the rule's ports match, and whether an HTTP rule applies.
std::pair<bool, bool> portMatches(const PeerRule& pr, uint8_t proto, uint16_t port) {
  if (pr.to_ports.empty() && pr.icmp_types.empty()) return {true, false};
  bool match = false, proxy = false;
  // ICMP type 0 is Cilium's "port 0": every ICMP type.
  for (uint8_t t : pr.icmp_types)
    if (proto == 1 && (port == t || t == 0)) match = true;
  for (const auto& rule : pr.to_ports) {
    if (rule.ports.empty()) match = true;
    for (const auto& pp : rule.ports) {
      if (pp.port == 0) {
        if (pp.protocol == Protocol::Any || proto == static_cast<uint8_t>(pp.protocol)) match = true;
        continue;
      }
      uint16_t last = pp.end_port ? pp.end_port : pp.port;
      bool proto_ok = pp.protocol == Protocol::Any ? (proto == 6 || proto == 17 || proto == 132)
                                                   : proto == static_cast<uint8_t>(pp.protocol);
      if (proto_ok && port >= pp.port && port <= last) {
        match = true;
        if (!rule.http.empty() && proto == 6) proxy = true;
      }
    }
  }
  return {match, proxy};
}

Verdict semantic(const std::vector<Policy>& policies, const LabelSet& subject, const std::vector<IdentityRef>& refs,
                 uint32_t id, uint8_t proto, uint16_t port, uint8_t dir) {
  bool enforced = false, denied = false, allowed = false, proxy = false;
  for (const auto& p : policies) {
    for (const auto& r : p.rules) {
      if (!r.endpoint_selector.matches(subject)) continue;
      const bool in = dir == 1;
      if (in ? r.has_ingress && r.default_deny_ingress.value_or(true) : r.has_egress && r.default_deny_egress.value_or(true))
        enforced = true;
      for (const auto& pr : in ? r.ingress_deny : r.egress_deny)
        if (peerMatches(pr, id, refs) && portMatches(pr, proto, port).first) denied = true;
      for (const auto& pr : in ? r.ingress : r.egress) {
        if (!peerMatches(pr, id, refs)) continue;
        auto [m, px] = portMatches(pr, proto, port);
        if (m) {
          allowed = true;
          proxy |= px;
        }
      }
    }
  }
  if (denied) return Verdict{VerdictKind::Denied, 0, 0, true};
  if (allowed) return Verdict{VerdictKind::Allowed, static_cast<uint16_t>(proxy ? 1 : 0), 0, true};
  return Verdict{enforced ? VerdictKind::Dropped : VerdictKind::Allowed, 0, 0, false};
}

class RandomRules {
 public:
  explicit RandomRules(uint32_t seed) : rng_(seed) {}

  int pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }

  Selector selector() {
    Selector s;
    switch (pick(7)) {
      case 0: break;  // {}
      case 1: s.addMatchLabel("any", "org", pick(2) ? "a" : "b"); break;
      case 2: s.addMatchLabel("k8s", "class", pick(2) ? "x" : "y"); break;
      case 3: s.match_expressions.push_back({"any", "class", SelectorOp::NotIn, {"x"}}); break;
      case 4: s.addMatchLabel("reserved", "host", ""); break;
      case 5: s.addMatchLabel("reserved", "world", ""); break;
      case 6: s.addMatchLabel("cidr", "10.0.0.0/8", ""); break;
    }
    return s;
  }

  PortRule portRule(bool allow_l7) {
    PortRule r;
    int n = pick(3);
    for (int i = 0; i < n; ++i) {
      static const Protocol protos[] = {Protocol::TCP, Protocol::UDP, Protocol::Any};
      PortProtocol pp;
      switch (pick(7)) {
        case 0: pp = {80, 0, protos[pick(3)], ""}; break;
        case 1: pp = {443, 0, protos[pick(3)], ""}; break;
        case 2: pp = {53, 0, protos[pick(3)], ""}; break;
        case 3: pp = {8080, 8082, protos[pick(3)], ""}; break;
        case 4: pp = {0, 0, Protocol::Any, ""}; break;
        case 5: pp = {0, 0, pick(2) ? Protocol::TCP : Protocol::UDP, ""}; break;  // protocol-only
        case 6: pp = {0, 0, Protocol::ICMP, ""}; break;
      }
      r.ports.push_back(pp);
    }
    // As the parser requires: L7 rules only with explicit, non-zero TCP/ANY ports.
    bool l7_ok = !r.ports.empty() && std::all_of(r.ports.begin(), r.ports.end(), [](const auto& p) {
      return p.port != 0 && (p.protocol == Protocol::TCP || p.protocol == Protocol::Any);
    });
    if (allow_l7 && l7_ok && pick(3) == 0) r.http.push_back(HttpRule{"GET", "/", "", {}, {}});
    return r;
  }

  PeerRule peerRule(bool deny) {
    PeerRule pr;
    int kind = pick(4);
    if (kind == 0 || kind == 3) {
      int n = 1 + pick(2);
      for (int i = 0; i < n; ++i) pr.endpoints.push_back(selector());
    }
    if (kind == 1 || kind == 3) {
      static const Entity ents[] = {Entity::All, Entity::World, Entity::Host, Entity::Cluster, Entity::Health};
      pr.entities.push_back(ents[pick(5)]);
    }
    if (kind == 2) {
      static const CidrRule cidrs[] = {{"0.0.0.0/0", {}},           {"0.0.0.0/0", {"10.0.0.0/8"}},
                                       {"10.0.0.0/8", {}},          {"10.0.0.0/8", {"10.1.0.0/16"}},
                                       {"10.5.0.0/16", {}},         {"192.168.0.0/16", {}}};
      int n = pick(3);
      for (int i = 0; i < n; ++i) pr.cidrs.push_back(cidrs[pick(6)]);
    }
    int nports = pick(3);
    for (int i = 0; i < nports; ++i) pr.to_ports.push_back(portRule(!deny));
    if (pick(4) == 0) {
      static const uint8_t types[] = {8, 3, 0};
      pr.icmp_types.push_back(types[pick(3)]);
    }
    return pr;
  }

  Policy policy(uint32_t cookie) {
    Policy p;
    p.kind = Kind::CiliumClusterwideNetworkPolicy;
    p.name = "p" + std::to_string(cookie);
    p.cookie = cookie;
    int nrules = 1 + pick(2);
    for (int i = 0; i < nrules; ++i) {
      Rule r;
      if (pick(4) == 0) r.endpoint_selector.addMatchLabel("any", "org", "b");  // sometimes not selecting
      for (auto [list, deny] : {std::pair{&r.ingress, false}, {&r.ingress_deny, true}, {&r.egress, false},
                                {&r.egress_deny, true}}) {
        int n = pick(3);
        for (int j = 0; j < n; ++j) list->push_back(peerRule(deny));
      }
      r.has_ingress = !r.ingress.empty() || !r.ingress_deny.empty();
      r.has_egress = !r.egress.empty() || !r.egress_deny.empty();
      if (pick(4) == 0) r.default_deny_ingress = pick(2) == 0;
      if (pick(4) == 0) r.default_deny_egress = pick(2) == 0;
      p.rules.push_back(std::move(r));
    }
    return p;
  }

 private:
  std::mt19937 rng_;
};

TEST(DenyPrecedence, FirstMatchEntriesEqualSemanticVerdict) {
  identity::IdentityAllocator ids;
  std::vector<uint32_t> universe = {1, 2, 3, 4, 5, 6, 7, kUnknownIdentity};
  for (const char* l : {"org=a,class=x", "org=a,class=y", "org=b,class=x", "org=b,class=y", "org=c"})
    universe.push_back(ids.allocate(labels::endpointLabels("default", labels::parseLabels(l).value()))->id);
  // CIDR identities as the agent allocates them.
  std::vector<std::pair<uint32_t, LabelSet>> cidr_ids;
  for (const char* p : {"10.0.0.0/8", "10.1.0.0/16", "10.5.0.0/16", "192.168.0.0/16"})
    cidr_ids.emplace_back(identity::kLocalScopeFlag | static_cast<uint32_t>(cidr_ids.size() + 1),
                          labels::cidrIdentityLabels(p));
  auto refs = ids.refs();
  for (const auto& [id, l] : cidr_ids) {
    refs.push_back(IdentityRef{id, &l});
    universe.push_back(id);
  }
  const LabelSet subject = labels::endpointLabels("default", labels::parseLabels("org=a,class=z").value());
  const uint8_t protos[] = {6, 17, 132, 1};
  const uint16_t ports[] = {0, 3, 8, 22, 53, 80, 443, 8079, 8080, 8081, 8082, 8083};

  size_t checked = 0, entries = 0, denied = 0, allowed_proxy = 0, wildcard = 0, cidr_allowed = 0, icmp_allowed = 0;
  for (uint32_t seed = 1; seed <= 600; ++seed) {
    RandomRules gen(seed);
    std::vector<Policy> policies;
    int n = 1 + gen.pick(3);
    for (int i = 0; i < n; ++i) policies.push_back(gen.policy(static_cast<uint32_t>(i + 1)));
    const EndpointPolicy ep = resolvePolicies(policies, subject, refs);
    entries += ep.entries.size();
    wildcard += ep.proto_wildcard;
    for (uint8_t dir : {uint8_t{1}, uint8_t{2}}) {
      for (uint32_t id : universe) {
        for (uint8_t proto : protos) {
          for (uint16_t port : ports) {
            Verdict want = semantic(policies, subject, refs, id, proto, port, dir);
            Verdict got = verdict(ep, id, proto, port, dir);
            ASSERT_EQ(got.kind, want.kind) << "seed " << seed << " dir " << int(dir) << " id " << id << " proto "
                                           << int(proto) << " port " << port;
            ASSERT_EQ(got.proxy_port_needed, want.proxy_port_needed)
                << "seed " << seed << " dir " << int(dir) << " id " << id << " proto " << int(proto) << " port " << port;
            // Attribution: a deny always names its policy (only the allow-all
            // filler of a non-enforced direction carries cookie 0).
            if (got.kind == VerdictKind::Denied) {
              EXPECT_NE(got.cookie, 0u) << "seed " << seed;
            }
            ++checked;
            denied += want.kind == VerdictKind::Denied;
            allowed_proxy += want.proxy_port_needed != 0;
            const bool allowed_by_rule = want.kind == VerdictKind::Allowed && want.matched;
            cidr_allowed += allowed_by_rule && id >= identity::kLocalScopeFlag;
            icmp_allowed += allowed_by_rule && proto == 1 && (port == 8 || port == 3);
          }
        }
      }
    }
  }
  // The generator must actually exercise deny and L7 paths.
  EXPECT_GT(denied, checked / 20);
  EXPECT_GT(allowed_proxy, 100u);
  EXPECT_GT(wildcard, 50u);
  EXPECT_GT(cidr_allowed, 100u);
  EXPECT_GT(icmp_allowed, 100u);
  RecordProperty("checked", std::to_string(checked));
  RecordProperty("entries", std::to_string(entries));
}

}  // namespace
}  // namespace membrane::policy
