// Policy trace: the datapath's verdict (resolution + first-match lookup) with
// a rule-by-rule explanation computed from the same peer/port matching.
#include "membrane/policy_trace.h"

#include <algorithm>
#include <cctype>

#include <fmt/format.h>

#include "membrane/policy_json.h"
#include "membrane/policy_repository.h"
#include "src/policy/resolve_internal.h"

namespace membrane::policy {

namespace {

using identity::IdentityRef;
using labels::LabelSet;

// The identity packets of `l` carry: a known identity with exactly these
// labels, a reserved number, or an unused number of the right scope.
uint32_t identityFor(const LabelSet& l, const std::vector<IdentityRef>& known, std::vector<IdentityRef>& extra) {
  for (const auto& ref : known)
    if (ref.labels != nullptr && *ref.labels == l) return ref.id;
  for (const auto& ref : extra)
    if (ref.labels != nullptr && *ref.labels == l) return ref.id;
  if (auto r = labels::reservedFor(l)) return static_cast<uint32_t>(*r);
  auto used = [&](uint32_t id) {
    auto is = [&](const IdentityRef& r) { return r.id == id; };
    return std::any_of(known.begin(), known.end(), is) || std::any_of(extra.begin(), extra.end(), is);
  };
  const bool cidr = l.hasSource(labels::kSourceCidr);
  uint32_t id = cidr ? identity::kMaxLocal : identity::kMaxAllocated;
  while (used(id)) --id;
  extra.push_back(IdentityRef{id, &l});
  return id;
}

std::string portText(const PortProtocol& pp) {
  if (!pp.name.empty()) return fmt::format("{}/{} (named port)", pp.name, protocolName(pp.protocol));
  if (pp.port == 0) return pp.protocol == Protocol::Any ? "any" : fmt::format("any/{}", protocolName(pp.protocol));
  if (pp.end_port) return fmt::format("{}-{}/{}", pp.port, pp.end_port, protocolName(pp.protocol));
  return fmt::format("{}/{}", pp.port, protocolName(pp.protocol));
}

std::string icmpText(uint8_t type) {
  auto name = icmpTypeName(type);
  if (type == 0) return "ICMP (all types: type 0)";
  return name.empty() ? fmt::format("ICMP type {}", type) : fmt::format("ICMP type {} ({})", type, name);
}

std::string portsText(const PeerRule& pr) {
  if (pr.to_ports.empty() && pr.icmp_types.empty()) return "";
  std::vector<std::string> items;
  for (const auto& rule : pr.to_ports) {
    if (rule.ports.empty()) items.push_back("any");
    for (const auto& pp : rule.ports) items.push_back(portText(pp) + (rule.http.empty() ? "" : " with HTTP rules"));
  }
  for (uint8_t t : pr.icmp_types) items.push_back(icmpText(t));
  return "[" + fmt::format("{}", fmt::join(items, ", ")) + "]";
}

std::string peersText(const PeerRule& pr) {
  std::vector<std::string> parts;
  for (const auto& sel : pr.endpoints) parts.push_back("labels " + toJson(sel).dump());
  if (!pr.entities.empty()) {
    std::vector<std::string> names;
    for (Entity e : pr.entities) names.emplace_back(entityName(e));
    parts.push_back(fmt::format("entities [{}]", fmt::join(names, ", ")));
  }
  for (const auto& c : pr.cidrs)
    parts.push_back(c.except.empty() ? "CIDR " + c.cidr
                                     : fmt::format("CIDR {} except [{}]", c.cidr, fmt::join(c.except, ", ")));
  if (parts.empty())
    return pr.to_ports.empty() && pr.icmp_types.empty() ? "nothing (empty rule)" : "any peer";
  return fmt::format("{}", fmt::join(parts, "; "));
}

std::string labelList(const LabelSet& l, std::string_view sep) {
  std::vector<std::string> items;
  for (const auto& x : l) items.push_back(x.toString());
  return fmt::format("[{}]", fmt::join(items, sep));
}

TraceDirection traceDirection(const std::vector<Policy>& policies, Direction dir, const LabelSet& subject,
                              const LabelSet& peer, uint32_t peer_id, const std::vector<IdentityRef>& all,
                              const std::optional<PortProto>& port, const std::vector<NamedPort>& dst_ports) {
  TraceDirection out;
  out.direction = dir;
  out.subject = subject;
  out.peer = peer;
  out.peer_identity = peer_id;
  const bool in = dir == Direction::Ingress;
  const uint8_t proto = port ? static_cast<uint8_t>(port->protocol) : 0;

  struct Hit {
    const Policy* policy;
    std::string rule;
    bool deny;
    bool unrestricted_ports;
  };
  std::vector<Hit> hits;
  for (const auto& p : policies) {
    for (size_t ri = 0; ri < p.rules.size(); ++ri) {
      const Rule& r = p.rules[ri];
      ++out.rules_total;
      if (!(in ? r.has_ingress : r.has_egress) || !r.endpoint_selector.matches(subject)) continue;
      TraceRule tr;
      tr.policy = p.displayName();
      tr.kind = p.kind;
      tr.rule_index = ri;
      tr.selector = toJson(r.endpoint_selector).dump();
      const std::pair<const char*, const std::vector<PeerRule>*> sections[] = {
          {in ? "ingressDeny" : "egressDeny", in ? &r.ingress_deny : &r.egress_deny},
          {in ? "ingress" : "egress", in ? &r.ingress : &r.egress}};
      for (const auto& [name, list] : sections) {
        const bool deny = std::string_view(name).ends_with("Deny");
        for (size_t i = 0; i < list->size(); ++i) {
          const PeerRule& pr = (*list)[i];
          TracePeerRule t;
          t.section = name;
          t.index = i;
          t.deny = deny;
          t.peers = peersText(pr);
          t.ports = portsText(pr);
          const auto ids = detail::peerIdentities(pr, all);
          t.peer_match = ids.count(0) || ids.count(peer_id);
          const auto keys = detail::l4Keys(pr);
          // A named port covers the packet when dst declares that name for this port/protocol.
          auto named_covers = [&] {
            for (const auto& rule : pr.to_ports)
              for (const auto& pp : rule.ports) {
                if (pp.name.empty()) continue;
                for (const auto& np : dst_ports)
                  if (np.name == pp.name && np.proto == proto && np.port == port->port &&
                      (pp.protocol == Protocol::Any || static_cast<uint8_t>(pp.protocol) == np.proto))
                    return true;
              }
            return false;
          };
          t.port_match = !port ||
                         std::any_of(keys.begin(), keys.end(),
                                     [&](const auto& k) { return detail::l4Covers(k.first, proto, port->port); }) ||
                         named_covers();
          if (t.matches())
            hits.push_back(Hit{&p, fmt::format("{}[{}]", name, i), deny,
                               keys.size() == 1 && keys[0].first == detail::kAnyL4});
          tr.peer_rules.push_back(std::move(t));
        }
      }
      out.rules.push_back(std::move(tr));
    }
  }

  NamedPorts named;
  if (in) named.subject = dst_ports;
  else named.by_identity[peer_id] = dst_ports;
  const EndpointPolicy ep = resolvePolicies(policies, subject, all, named);
  out.enforced = in ? ep.ingress_enforced : ep.egress_enforced;
  uint32_t cookie = 0;
  if (port) {
    Verdict v = verdict(ep, peer_id, proto, port->port, in ? 1 : 2);
    cookie = v.cookie;
    switch (v.kind) {
      case VerdictKind::Denied: out.verdict = TraceVerdict::Denied; break;
      case VerdictKind::Dropped: out.verdict = TraceVerdict::DefaultDenied; break;
      case VerdictKind::Allowed: {
        bool by_rule = std::any_of(hits.begin(), hits.end(), [](const Hit& h) { return !h.deny; });
        out.verdict = by_rule ? TraceVerdict::Allowed : TraceVerdict::NotEnforced;
        break;
      }
    }
  } else {
    // L3 only: a deny on every port of the peer, else any allow of the peer.
    if (std::any_of(hits.begin(), hits.end(), [](const Hit& h) { return h.deny && h.unrestricted_ports; }))
      out.verdict = TraceVerdict::Denied;
    else if (std::any_of(hits.begin(), hits.end(), [](const Hit& h) { return !h.deny; }))
      out.verdict = TraceVerdict::Allowed;
    else
      out.verdict = out.enforced ? TraceVerdict::DefaultDenied : TraceVerdict::NotEnforced;
  }
  if (out.verdict == TraceVerdict::Allowed || out.verdict == TraceVerdict::Denied) {
    const bool deny = out.verdict == TraceVerdict::Denied;
    const Hit* best = nullptr;
    for (const auto& h : hits) {
      if (h.deny != deny || (deny && !port && !h.unrestricted_ports)) continue;
      // Prefer the policy whose entry the datapath hit (its cookie).
      if (best == nullptr || (cookie != 0 && h.policy->cookie == cookie && best->policy->cookie != cookie)) best = &h;
    }
    if (best != nullptr) {
      out.decided_by = best->policy->displayName();
      out.decided_rule = best->rule;
    }
  }
  return out;
}

void formatDirection(std::string& s, const TraceDirection& d, bool l3_only) {
  const bool in = d.direction == Direction::Ingress;
  const char* dir = in ? "ingress" : "egress";
  s += fmt::format("Resolving {} policy for {}\n", dir, labelList(d.subject, " "));
  for (const auto& r : d.rules) {
    std::string which = fmt::format("{} {}", kindName(r.kind), r.policy);
    if (r.rule_index > 0) which += fmt::format(", specs[{}]", r.rule_index);
    s += fmt::format("* Rule {} ({}): selected\n", r.selector, which);
    if (r.peer_rules.empty()) s += fmt::format("    No {} rules: only turns on default deny\n", dir);
    for (const auto& p : r.peer_rules) {
      s += fmt::format("    {} {} {}{}  [{}[{}]]\n", p.deny ? "Denies" : "Allows", in ? "from" : "to", p.peers,
                       p.ports.empty() ? "" : " on ports " + p.ports, p.section, p.index);
      if (!p.peer_match) {
        s += fmt::format("      No label match for {}\n", labelList(d.peer, " "));
        continue;
      }
      s += "      Found all required labels\n";
      if (!l3_only && !p.port_match) s += "      Port does not match\n";
    }
  }
  s += fmt::format("{}/{} rules selected\n", d.rules.size(), d.rules_total);
  const std::string Dir = in ? "Ingress" : "Egress";
  switch (d.verdict) {
    case TraceVerdict::Denied:
      s += fmt::format("Found deny rule: {} {}\n", d.decided_by, d.decided_rule);
      s += fmt::format("{} verdict: denied (deny rule of {})\n", Dir, d.decided_by);
      break;
    case TraceVerdict::Allowed:
      s += fmt::format("Found allow rule: {} {}\n", d.decided_by, d.decided_rule);
      s += fmt::format("{} verdict: allowed (by {})\n", Dir, d.decided_by);
      break;
    case TraceVerdict::DefaultDenied:
      s += "Found no allow rule\n";
      s += fmt::format("{} verdict: denied (default deny)\n", Dir);
      break;
    case TraceVerdict::NotEnforced:
      s += d.rules.empty() ? fmt::format("No rule selects it for {}: {} policy not enforced\n", dir, dir)
                           : fmt::format("No default deny for {} and no deny rule matches\n", dir);
      s += fmt::format("{} verdict: allowed (not enforced)\n", Dir);
      break;
  }
}

nlohmann::json directionJson(const TraceDirection& d) {
  nlohmann::json rules = nlohmann::json::array();
  for (const auto& r : d.rules) {
    nlohmann::json peers = nlohmann::json::array();
    for (const auto& p : r.peer_rules)
      peers.push_back({{"section", p.section}, {"index", p.index}, {"deny", p.deny}, {"peers", p.peers},
                       {"ports", p.ports}, {"peer_match", p.peer_match}, {"port_match", p.port_match}});
    rules.push_back({{"policy", r.policy}, {"kind", std::string(kindName(r.kind))}, {"rule", r.rule_index},
                     {"selector", nlohmann::json::parse(r.selector, nullptr, false)}, {"peer_rules", std::move(peers)}});
  }
  return {{"verdict", std::string(traceVerdictName(d.verdict))},
          {"allowed", d.allowed()},
          {"enforced", d.enforced},
          {"peer_identity", d.peer_identity},
          {"decided_by", d.decided_by},
          {"decided_rule", d.decided_rule},
          {"rules_total", d.rules_total},
          {"rules", std::move(rules)}};
}

}  // namespace

Result<PortProto> parsePortProto(std::string_view text) {
  auto fail = [&](std::string_view why) {
    return Error::invalid(fmt::format("port '{}': {} (expected PORT[/PROTOCOL], e.g. 80/TCP)", text, why));
  };
  std::string_view num = text, proto = "TCP";
  if (auto slash = text.find('/'); slash != std::string_view::npos) {
    num = text.substr(0, slash);
    proto = text.substr(slash + 1);
  }
  if (num.empty() || num.size() > 5 || !std::all_of(num.begin(), num.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return fail("not a number");
  const unsigned long n = std::stoul(std::string(num));
  if (n > 65535) return fail("out of range (0-65535)");
  std::string up(proto);
  std::transform(up.begin(), up.end(), up.begin(), [](unsigned char c) { return std::toupper(c); });
  PortProto p;
  p.port = static_cast<uint16_t>(n);
  if (up == "TCP") p.protocol = Protocol::TCP;
  else if (up == "UDP") p.protocol = Protocol::UDP;
  else if (up == "SCTP") p.protocol = Protocol::SCTP;
  else if (up == "ICMP") p.protocol = Protocol::ICMP;
  else return fail(fmt::format("protocol '{}' must be TCP, UDP, SCTP or ICMP", proto));
  if (p.protocol == Protocol::ICMP && n > 255) return fail("ICMP type out of range (0-255)");
  return p;
}

std::string formatPortProto(const PortProto& p) { return fmt::format("{}/{}", p.port, protocolName(p.protocol)); }

std::string_view traceVerdictName(TraceVerdict v) {
  switch (v) {
    case TraceVerdict::Allowed: return "allowed";
    case TraceVerdict::Denied: return "denied";
    case TraceVerdict::DefaultDenied: return "default-denied";
    case TraceVerdict::NotEnforced: return "not-enforced";
  }
  return "?";
}

TraceResult trace(const std::vector<Policy>& policies, const LabelSet& src, const LabelSet& dst,
                  const std::vector<IdentityRef>& identities, std::optional<PortProto> port,
                  const std::vector<NamedPort>& dst_ports) {
  TraceResult r;
  r.src = src;
  r.dst = dst;
  r.port = port;
  std::vector<IdentityRef> extra;
  const uint32_t src_id = identityFor(r.src, identities, extra);
  const uint32_t dst_id = identityFor(r.dst, identities, extra);
  std::vector<IdentityRef> all = identities;
  all.insert(all.end(), extra.begin(), extra.end());
  r.egress = traceDirection(policies, Direction::Egress, r.src, r.dst, dst_id, all, port, dst_ports);
  r.ingress = traceDirection(policies, Direction::Ingress, r.dst, r.src, src_id, all, port, dst_ports);
  return r;
}

std::string formatTrace(const TraceResult& r) {
  std::string s = "----------------------------------------------------------------\n";
  s += fmt::format("Tracing From: {} => To: {} Ports: [{}]\n\n", labelList(r.src, ", "), labelList(r.dst, ", "),
                   r.port ? formatPortProto(*r.port) : "0/ANY");
  formatDirection(s, r.egress, !r.port);
  s += "\n";
  formatDirection(s, r.ingress, !r.port);
  s += fmt::format("\nFinal verdict: {}\n", r.allowed() ? "ALLOWED" : "DENIED");
  if (!r.port) s += "(L3 only: no port given; add --dport PORT/PROTO for the verdict the datapath gives)\n";
  return s;
}

nlohmann::json toJson(const TraceResult& r) {
  auto labelsJson = [](const LabelSet& l) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& x : l) a.push_back(x.toString());
    return a;
  };
  nlohmann::json j = {{"text", formatTrace(r)},
                      {"verdict", r.allowed() ? "allowed" : "denied"},
                      {"src", labelsJson(r.src)},
                      {"dst", labelsJson(r.dst)},
                      {"egress", directionJson(r.egress)},
                      {"ingress", directionJson(r.ingress)}};
  if (r.port) j["dport"] = formatPortProto(*r.port);
  return j;
}

}  // namespace membrane::policy
