// Cilium peer rules: which peers an ingress/egress (deny) item selects:
// endpoints, entities, CIDR and CIDRSet (also NetworkPolicy's ipBlock);
// recognised but unimplemented peer kinds (fromRequires, toFQDNs, ...) are
// reported as not supported.
#include <arpa/inet.h>

#include <algorithm>
#include <variant>

#include <fmt/format.h>

#include "src/policy/parser_internal.h"

namespace membrane::policy::detail {

namespace {

// The netmask of a prefix length 0-32, host byte order.
uint32_t prefixMask(int len) { return len == 0 ? 0 : ~uint32_t{0} << (32 - len); }

// Parses "a.b.c.d[/n]" into a normalized network. Returns an error message on failure.
std::variant<std::pair<uint32_t, int>, std::string> parseCidr(std::string_view text) {
  std::string s(text);
  if (s.find(':') != std::string::npos) return fmt::format("IPv6 CIDR '{}' is not supported yet", text);
  int len = 32;
  std::string addr = s;
  if (auto slash = s.find('/'); slash != std::string::npos) {
    addr = s.substr(0, slash);
    std::string plen = s.substr(slash + 1);
    if (!isDigits(plen) || plen.size() > 2 || std::stoi(plen) > 32)
      return fmt::format("invalid CIDR '{}': prefix length must be 0-32", text);
    len = std::stoi(plen);
  }
  in_addr a{};
  if (inet_pton(AF_INET, addr.c_str(), &a) != 1)
    return fmt::format("invalid CIDR '{}': '{}' is not an IPv4 address", text, addr);
  uint32_t host = ntohl(a.s_addr);
  return std::make_pair(host & prefixMask(len), len);
}

std::string formatCidr(uint32_t net, int len) {
  return fmt::format("{}.{}.{}.{}/{}", net >> 24, (net >> 16) & 0xff, (net >> 8) & 0xff, net & 0xff, len);
}

// Cilium adds the policy's namespace to peer selectors of namespaced
// policies unless they say which namespace they mean. Selectors on
// reserved labels are left alone: reserved identities have no namespace.
void scopePeerSelector(Selector& sel, const std::string& ns) {
  if (ns.empty()) return;
  if (sel.constrains(labels::kSourceK8s, labels::kPodNamespaceLabel) || sel.mentionsReserved()) return;
  sel.addMatchLabel(labels::kSourceK8s, labels::kPodNamespaceLabel, ns);
}

}  // namespace

bool Parser::peerRule(const YAML::Node& n, const std::string& path, Direction dir, bool deny, const Policy& p,
                      PeerRule& pr) {
  const bool in = dir == Direction::Ingress;
  ObjectSpec spec;
  if (in) {
    spec.known = {"fromEndpoints", "fromEntities", "fromCIDR", "fromCIDRSet", "toPorts"};
    spec.known.push_back("icmps");
    spec.unsupported = {{"fromRequires", ""}, {"fromGroups", ""}, {"fromNodes", ""}};
    if (!deny) spec.unsupported.push_back({"authentication", ""});
  } else {
    spec.known = {"toEndpoints", "toEntities", "toCIDR", "toCIDRSet", "toPorts"};
    spec.known.push_back("icmps");
    spec.unsupported = {{"toRequires", ""}, {"toServices", ""}, {"toGroups", ""}, {"toNodes", ""}};
    if (!deny) {
      spec.unsupported.push_back({"toFQDNs", ""});
      spec.unsupported.push_back({"authentication", ""});
    }
  }
  auto f = fields(n, path, spec);
  if (!f) return false;
  bool ok = true;
  const std::string eps = in ? "fromEndpoints" : "toEndpoints";
  const std::string ents = in ? "fromEntities" : "toEntities";
  const std::string cidr = in ? "fromCIDR" : "toCIDR";
  const std::string cidrset = in ? "fromCIDRSet" : "toCIDRSet";
  if (auto it = f->find(eps); it != f->end()) {
    const YAML::Node& l = it->second.value;
    const std::string lpath = join(path, eps);
    if (!isList(l, lpath)) return false;
    for (size_t i = 0; i < l.size(); ++i) {
      auto sel = selector(l[i], index(lpath, i));
      if (!sel) {
        ok = false;
        continue;
      }
      scopePeerSelector(*sel, p.namespace_name);
      pr.endpoints.push_back(std::move(*sel));
    }
  }
  if (auto it = f->find(ents); it != f->end()) ok &= entities(it->second.value, join(path, ents), pr);
  if (auto it = f->find(cidr); it != f->end()) {
    const YAML::Node& l = it->second.value;
    const std::string lpath = join(path, cidr);
    if (!isList(l, lpath)) return false;
    for (size_t i = 0; i < l.size(); ++i) {
      auto s = string(l[i], index(lpath, i));
      auto c = s ? cidrRule(l[i], index(lpath, i), *s) : std::nullopt;
      if (c) pr.cidrs.push_back(std::move(*c));
      else ok = false;
    }
  }
  if (auto it = f->find(cidrset); it != f->end()) {
    const YAML::Node& l = it->second.value;
    const std::string lpath = join(path, cidrset);
    if (!isList(l, lpath)) return false;
    for (size_t i = 0; i < l.size(); ++i) {
      auto c = cidrSet(l[i], index(lpath, i), {{"cidr", "except"}, {{"cidrGroupRef", ""}, {"cidrGroupSelector", ""}}},
                       "cidr");
      if (c) pr.cidrs.push_back(std::move(*c));
      else ok = false;
    }
  }
  if (auto it = f->find("toPorts"); it != f->end()) ok &= toPorts(it->second.value, join(path, "toPorts"), deny, pr);
  if (auto it = f->find("icmps"); it != f->end()) ok &= icmps(it->second.value, join(path, "icmps"), pr);
  return ok;
}

bool Parser::entities(const YAML::Node& n, const std::string& path, PeerRule& pr) {
  if (!isList(n, path)) return false;
  static const std::vector<std::pair<std::string_view, Entity>> kEntities = {
      {"all", Entity::All},          {"world", Entity::World},          {"world-ipv4", Entity::World},
      {"world-ipv6", Entity::World}, {"cluster", Entity::Cluster},      {"host", Entity::Host},
      {"init", Entity::Init},        {"health", Entity::Health},        {"remote-node", Entity::RemoteNode},
      {"unmanaged", Entity::Unmanaged}, {"kube-apiserver", Entity::KubeApiserver}, {"none", Entity::None}};
  bool ok = true;
  for (size_t i = 0; i < n.size(); ++i) {
    auto s = string(n[i], index(path, i));
    if (!s) {
      ok = false;
      continue;
    }
    auto it = std::find_if(kEntities.begin(), kEntities.end(), [&](const auto& e) { return e.first == *s; });
    if (it != kEntities.end()) {
      if (std::find(pr.entities.begin(), pr.entities.end(), it->second) == pr.entities.end())
        pr.entities.push_back(it->second);
      continue;
    }
    if (*s == "ingress") {
      error(n[i], index(path, i), "entity 'ingress' is not supported yet");
    } else {
      std::vector<std::string_view> names;
      for (const auto& e : kEntities) names.push_back(e.first);
      auto sug = suggest(*s, names);
      error(n[i], index(path, i),
            sug ? fmt::format("unknown entity '{}' (did you mean '{}'?)", *s, *sug)
                : fmt::format("unknown entity '{}' (expected one of all, world, cluster, host, init, health, "
                              "remote-node, unmanaged, kube-apiserver, none)",
                              *s));
    }
    ok = false;
  }
  return ok;
}

std::optional<std::pair<uint32_t, int>> Parser::network(const YAML::Node& at, const std::string& path,
                                                        const std::string& text) {
  auto parsed = parseCidr(text);
  if (auto* msg = std::get_if<std::string>(&parsed)) {
    error(at, path, *msg);
    return std::nullopt;
  }
  return std::get<0>(parsed);
}

std::optional<CidrRule> Parser::cidrRule(const YAML::Node& at, const std::string& path, const std::string& text) {
  auto parsed = network(at, path, text);
  if (!parsed) return std::nullopt;
  auto [net, len] = *parsed;
  return CidrRule{formatCidr(net, len), {}};
}

std::optional<CidrRule> Parser::cidrSet(const YAML::Node& n, const std::string& path, const ObjectSpec& spec,
                                        std::string_view cidr_field) {
  auto f = fields(n, path, spec);
  if (!f) return std::nullopt;
  auto it = f->find(cidr_field);
  if (it == f->end()) {
    error(n, join(path, cidr_field), fmt::format("missing required field '{}'", cidr_field));
    return std::nullopt;
  }
  const std::string cpath = join(path, cidr_field);
  auto s = string(it->second.value, cpath);
  if (!s) return std::nullopt;
  auto parsed = network(it->second.value, cpath, *s);
  if (!parsed) return std::nullopt;
  auto [net, len] = *parsed;
  CidrRule out{formatCidr(net, len), {}};
  if (auto e = f->find("except"); e != f->end()) {
    const YAML::Node& l = e->second.value;
    const std::string epath = join(path, "except");
    if (!isList(l, epath)) return std::nullopt;
    for (size_t i = 0; i < l.size(); ++i) {
      auto es = string(l[i], index(epath, i));
      if (!es) return std::nullopt;
      auto ep = network(l[i], index(epath, i), *es);
      if (!ep) return std::nullopt;
      auto [enet, elen] = *ep;
      if (elen < len || (enet & prefixMask(len)) != net) {
        error(l[i], index(epath, i),
              fmt::format("except '{}' is not contained in '{}'", *es, out.cidr));
        return std::nullopt;
      }
      out.except.push_back(formatCidr(enet, elen));
    }
  }
  return out;
}

}  // namespace membrane::policy::detail
