#include "membrane/policy_json.h"

namespace membrane::policy {

using nlohmann::json;

namespace {

std::string opName(SelectorOp op) {
  switch (op) {
    case SelectorOp::In: return "In";
    case SelectorOp::NotIn: return "NotIn";
    case SelectorOp::Exists: return "Exists";
    case SelectorOp::DoesNotExist: return "DoesNotExist";
  }
  return "?";
}

json labelsJson(const labels::LabelSet& set) {
  json out = json::array();
  for (const auto& l : set) out.push_back({{"key", l.key}, {"source", l.source}, {"value", l.value}});
  return out;
}

json portRuleJson(const PortRule& pr) {
  json out = json::object();
  json ports = json::array();
  for (const auto& p : pr.ports) {
    json j = {{"port", p.name.empty() ? std::to_string(p.port) : p.name},
              {"protocol", std::string(protocolName(p.protocol))}};
    if (p.end_port) j["endPort"] = p.end_port;
    ports.push_back(std::move(j));
  }
  if (!ports.empty()) out["ports"] = std::move(ports);
  if (!pr.http.empty()) {
    json http = json::array();
    for (const auto& h : pr.http) {
      json j = json::object();
      if (!h.method.empty()) j["method"] = h.method;
      if (!h.path.empty()) j["path"] = h.path;
      if (!h.host.empty()) j["host"] = h.host;
      if (!h.headers.empty()) j["headers"] = h.headers;
      if (!h.header_matches.empty()) {
        json hm = json::array();
        for (const auto& m : h.header_matches) {
          json e = {{"name", m.name}};
          if (!m.value.empty()) e["value"] = m.value;
          if (!m.mismatch.empty()) e["mismatch"] = m.mismatch;
          hm.push_back(std::move(e));
        }
        j["headerMatches"] = std::move(hm);
      }
      http.push_back(std::move(j));
    }
    out["rules"] = {{"http", std::move(http)}};
  }
  return out;
}

json peerJson(const PeerRule& pr, bool ingress) {
  json out = json::object();
  const char* eps = ingress ? "fromEndpoints" : "toEndpoints";
  const char* ents = ingress ? "fromEntities" : "toEntities";
  const char* cidrs = ingress ? "fromCIDRSet" : "toCIDRSet";
  if (!pr.endpoints.empty()) {
    out[eps] = json::array();
    for (const auto& s : pr.endpoints) out[eps].push_back(toJson(s));
  }
  if (!pr.entities.empty()) {
    out[ents] = json::array();
    for (Entity e : pr.entities) out[ents].push_back(std::string(entityName(e)));
  }
  if (!pr.cidrs.empty()) {
    out[cidrs] = json::array();
    for (const auto& c : pr.cidrs) {
      json j = {{"cidr", c.cidr}};
      if (!c.except.empty()) j["except"] = c.except;
      out[cidrs].push_back(std::move(j));
    }
  }
  if (!pr.to_ports.empty()) {
    out["toPorts"] = json::array();
    for (const auto& p : pr.to_ports) out["toPorts"].push_back(portRuleJson(p));
  }
  if (!pr.icmp_types.empty()) {
    json fields = json::array();
    for (uint8_t t : pr.icmp_types) fields.push_back({{"family", "IPv4"}, {"type", t}});
    out["icmps"] = json::array({{{"fields", std::move(fields)}}});
  }
  return out;
}

}  // namespace

json toJson(const Selector& s) {
  json out = json::object();
  if (!s.match_labels.empty()) {
    out["matchLabels"] = json::object();
    for (const auto& r : s.match_labels) out["matchLabels"][r.source + ":" + r.key] = r.values.front();
  }
  if (!s.match_expressions.empty()) {
    out["matchExpressions"] = json::array();
    for (const auto& r : s.match_expressions) {
      json j = {{"key", r.source + ":" + r.key}, {"operator", opName(r.op)}};
      if (!r.values.empty()) j["values"] = r.values;
      out["matchExpressions"].push_back(std::move(j));
    }
  }
  return out;
}

json toJson(const Rule& r) {
  json out = json::object();
  out["endpointSelector"] = toJson(r.endpoint_selector);
  const std::pair<const char*, const std::vector<PeerRule>*> sections[] = {
      {"ingress", &r.ingress}, {"ingressDeny", &r.ingress_deny}, {"egress", &r.egress}, {"egressDeny", &r.egress_deny}};
  for (const auto& [name, list] : sections) {
    if (list->empty()) continue;
    const bool ingress = name[0] == 'i';
    out[name] = json::array();
    for (const auto& pr : *list) out[name].push_back(peerJson(pr, ingress));
  }
  if (r.default_deny_ingress || r.default_deny_egress) {
    json d = json::object();
    if (r.default_deny_ingress) d["ingress"] = *r.default_deny_ingress;
    if (r.default_deny_egress) d["egress"] = *r.default_deny_egress;
    out["enableDefaultDeny"] = std::move(d);
  }
  if (!r.description.empty()) out["description"] = r.description;
  out["labels"] = labelsJson(r.labels);
  return out;
}

json toJson(const Policy& p) {
  json out = {{"kind", std::string(kindName(p.kind))}, {"name", p.name}, {"namespace", p.namespace_name},
              {"cookie", p.cookie}};
  if (!p.labels.empty()) out["labels"] = labelsJson(p.labels);
  out["rules"] = json::array();
  for (const auto& r : p.rules) out["rules"].push_back(toJson(r));
  return out;
}

}  // namespace membrane::policy
