#include "src/daemon/l7_policy.h"

#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "membrane/ipv4.h"
#include "membrane/policy_repository.h"

namespace membrane::daemon {
namespace {

using nlohmann::json;

json identitiesJson(const std::set<uint32_t>& ids) {
  json a = json::array();
  if (ids.count(0)) return a;  // every peer
  for (uint32_t id : ids) a.push_back(id);
  return a;
}

json httpRuleJson(const policy::HttpRule& h, const std::string& policy_name, const std::set<uint32_t>& ids) {
  json r = {{"method", h.method},   {"path", h.path},         {"host", h.host},
            {"headers", h.headers}, {"policy", policy_name}, {"allowed_identities", identitiesJson(ids)}};
  if (!h.header_matches.empty()) {
    json matches = json::array();
    for (const auto& m : h.header_matches)  // Cilium's "" (deny on mismatch) is the proxy's DENY
      matches.push_back({{"name", m.name}, {"value", m.value}, {"mismatch", m.mismatch.empty() ? "DENY" : m.mismatch}});
    r["header_matches"] = std::move(matches);
  }
  return r;
}

}  // namespace

json buildProxyConfig(uint64_t revision, const L7Ports& ports, const std::vector<policy::Policy>& policies,
                      const std::vector<L7Endpoint>& endpoints, const std::vector<identity::IdentityRef>& identities,
                      const std::vector<std::pair<uint32_t, uint32_t>>& extra_identities,
                      const std::map<uint32_t, std::vector<policy::NamedPort>>& named_ports) {
  // Peer identity -> the named ports its endpoints declare (egress named ports).
  policy::NamedPorts named;
  static const std::vector<policy::NamedPort> kNone;
  auto declared = [&](uint32_t ipv4) -> const std::vector<policy::NamedPort>& {
    auto it = named_ports.find(ipv4);
    return it == named_ports.end() ? kNone : it->second;
  };
  for (const auto& ep : endpoints) {
    auto& v = named.by_identity[ep.identity];
    v.insert(v.end(), declared(ep.ipv4).begin(), declared(ep.ipv4).end());
  }
  for (auto& [id, v] : named.by_identity) {
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
  }
  policy::SelectionCache selections;  // policies and identities are the same for every endpoint
  json eps = json::array();
  for (const auto& ep : endpoints) {
    named.subject = declared(ep.ipv4);
    const auto resolved = policy::resolvePolicies(policies, ep.labels, identities, named, &selections);
    json dirs = {{"ingress", json::array()}, {"egress", json::array()}};
    for (const auto& [where, rules] : resolved.l7) {
      json arr = json::array();
      for (const auto& r : rules) arr.push_back(httpRuleJson(r.http, r.policy, r.peers));
      dirs[where.direction == 1 ? "ingress" : "egress"].push_back(
          {{"port", where.port}, {"proto", "TCP"}, {"rules", std::move(arr)}});
    }
    if (dirs["ingress"].empty() && dirs["egress"].empty()) continue;
    eps.push_back({{"ip", ipv4HostOrderToString(ep.ipv4)}, {"ingress", dirs["ingress"]}, {"egress", dirs["egress"]}});
  }
  json ids = json::object();
  for (const auto& [ip, id] : extra_identities) ids[ipv4HostOrderToString(ip)] = id;
  for (const auto& ep : endpoints) ids[ipv4HostOrderToString(ep.ipv4)] = ep.identity;
  // CIDR identities (local scope) as the ipcache LPM holds them: each one's own
  // prefix is its longest `cidr:` label (the others are the covering prefixes).
  json prefixes = json::array();
  for (const auto& ref : identities) {
    if (!identity::isLocalScope(ref.id) || !ref.labels) continue;
    const std::string* best = nullptr;
    int best_len = -1;
    for (const auto& l : *ref.labels) {
      if (l.source != labels::kSourceCidr) continue;
      auto slash = l.key.find('/');
      if (slash == std::string::npos) continue;
      int len = std::atoi(l.key.c_str() + slash + 1);
      if (len > best_len) best = &l.key, best_len = len;
    }
    if (best) prefixes.push_back({{"cidr", *best}, {"identity", ref.id}});
  }
  return {{"revision", revision},
          {"listeners", json::array({{{"port", ports.ingress}, {"direction", "ingress"}},
                                     {{"port", ports.egress}, {"direction", "egress"}}})},
          {"endpoints", eps},
          {"identities", ids},
          {"prefixes", prefixes}};
}

Result<L7Ports> parseProxyPortRange(const std::string& range) {
  auto bad = [&](const char* why) {
    return Error::invalid(fmt::format("--proxy-port-range '{}': {} (expected START-END, e.g. 15001-15002, with "
                                      "1 <= START < END <= 65535)",
                                      range, why));
  };
  auto dash = range.find('-');
  if (dash == std::string::npos) return bad("no '-'");
  auto num = [](const std::string& s) -> long {
    if (s.empty() || s.size() > 5 || s.find_first_not_of("0123456789") != std::string::npos) return -1;
    return std::stol(s);
  };
  long a = num(range.substr(0, dash)), b = num(range.substr(dash + 1));
  if (a < 1 || b < 1 || a > 65535 || b > 65535) return bad("ports must be numbers in 1..65535");
  if (b < a + 1) return bad("needs at least two ports (ingress and egress listeners)");
  return L7Ports{static_cast<uint16_t>(a), static_cast<uint16_t>(a + 1)};
}

size_t countRedirects(const json& config) {
  size_t n = 0;
  for (const auto& ep : config.value("endpoints", json::array()))
    n += ep.value("ingress", json::array()).size() + ep.value("egress", json::array()).size();
  return n;
}

}  // namespace membrane::daemon
