#include "src/daemon/l7_policy.h"

#include <arpa/inet.h>

#include <map>
#include <set>

#include <fmt/format.h>

#include "src/policy/resolve_internal.h"

namespace membrane::daemon {
namespace {

using nlohmann::json;
namespace detail = policy::detail;

std::string ipString(uint32_t host_order) {
  in_addr a{htonl(host_order)};
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

// The TCP ports (L4 keys with a port) of a peer rule that carry HTTP rules.
std::set<uint16_t> l7Ports(const policy::PeerRule& pr) {
  std::set<uint16_t> out;
  for (const auto& [l4, proxy] : detail::l4Keys(pr))
    if (proxy) out.insert(static_cast<uint16_t>(l4 & 0xffff));
  return out;
}

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
                      const std::vector<std::pair<uint32_t, uint32_t>>& extra_identities) {
  json eps = json::array();
  for (const auto& ep : endpoints) {
    json dirs = json::object();
    for (int d = 0; d < 2; ++d) {
      const bool ingress = d == 0;
      // port -> rules (in policy order); a port appears once any rule gives it HTTP rules.
      std::map<uint16_t, json> by_port;
      auto sections = [&](const policy::Rule& r) -> const std::vector<policy::PeerRule>& {
        return ingress ? r.ingress : r.egress;
      };
      for (const auto& p : policies)
        for (const auto& r : p.rules) {
          if (!r.endpoint_selector.matches(ep.labels)) continue;
          for (const auto& pr : sections(r))
            for (uint16_t port : l7Ports(pr)) by_port.emplace(port, json::array());
        }
      if (by_port.empty()) {
        dirs[ingress ? "ingress" : "egress"] = json::array();
        continue;
      }
      for (const auto& p : policies)
        for (const auto& r : p.rules) {
          if (!r.endpoint_selector.matches(ep.labels)) continue;
          for (const auto& pr : sections(r)) {
            const auto ids = detail::peerIdentities(pr, identities);
            if (ids.empty()) continue;
            for (auto& [port, rules] : by_port) {
              bool covered_l4 = false;
              for (const auto& [l4, proxy] : detail::l4Keys(pr)) {
                if (!detail::l4Covers(l4, IPPROTO_TCP, port)) continue;
                if (!proxy || (l4 & 0xffff) != port) covered_l4 = true;
              }
              for (const auto& tp : pr.to_ports) {
                if (tp.http.empty()) continue;
                bool has = false;
                for (const auto& pp : tp.ports)
                  if ((pp.protocol == policy::Protocol::TCP || pp.protocol == policy::Protocol::Any) && pp.port <= port &&
                      port <= (pp.end_port ? pp.end_port : pp.port))
                    has = true;
                if (!has) continue;
                for (const auto& h : tp.http) rules.push_back(httpRuleJson(h, p.displayName(), ids));
              }
              if (covered_l4) rules.push_back(httpRuleJson(policy::HttpRule{}, p.displayName(), ids));
            }
          }
        }
      json arr = json::array();
      for (auto& [port, rules] : by_port) arr.push_back({{"port", port}, {"proto", "TCP"}, {"rules", rules}});
      dirs[ingress ? "ingress" : "egress"] = arr;
    }
    if (dirs["ingress"].empty() && dirs["egress"].empty()) continue;
    eps.push_back({{"ip", ipString(ep.ipv4)}, {"ingress", dirs["ingress"]}, {"egress", dirs["egress"]}});
  }
  json ids = json::object();
  for (const auto& [ip, id] : extra_identities) ids[ipString(ip)] = id;
  for (const auto& ep : endpoints) ids[ipString(ep.ipv4)] = ep.identity;
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
