// Agent API handlers for endpoints, identities, namespaces and the BPF maps
// behind them (GET/PUT/DELETE /v1/endpoint, /v1/identity, /v1/namespace,
// /v1/bpf/ct, /v1/bpf/policy).
#include "src/daemon/agent.h"
#include "src/daemon/agent_internal.h"
#include "src/daemon/api_errors.h"

#include <arpa/inet.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace membrane::daemon {

using nlohmann::json;
using api::Request;
using api::Response;

Response Agent::listEndpoints(const Request& req) {
  MutexLock lk(mu_);
  auto name = req.queryValue("name");
  auto ns = req.queryValue("namespace");
  json arr = json::array();
  for (const auto* ep : eps_->list()) {
    if (!name.empty() && ep->name != name) continue;
    if (!ns.empty() && ep->ns != ns) continue;
    arr.push_back(endpoint::toApiJson(*ep));
  }
  return Response::json(200, arr);
}

Response Agent::createEndpoint(const Request& req) {
  json body = json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object())
    return Response::error(400, "request body must be a JSON object {\"name\", \"namespace\", \"labels\"}");
  if (!body.contains("name") || !body["name"].is_string())
    return Response::error(400, "field 'name' (string) is required");
  std::string name = body["name"];
  std::string ns = body.value("namespace", "default");
  if (!body.value("namespace", json("default")).is_string()) return Response::error(400, "field 'namespace' must be a string");
  labels::LabelSet user;
  if (body.contains("labels")) {
    const auto& l = body["labels"];
    if (l.is_object()) {
      for (const auto& [k, v] : l.items()) {
        if (!v.is_string()) return Response::error(400, fmt::format("label '{}': value must be a string", k));
        auto lab = labels::parseLabel(k + "=" + v.get<std::string>());
        if (!lab) return Response::error(400, lab.error().message);
        user.add(*lab);
      }
    } else if (l.is_string()) {
      auto ls = labels::parseLabels(l.get<std::string>());
      if (!ls) return Response::error(400, ls.error().message);
      user = *ls;
    } else {
      return Response::error(400, "field 'labels' must be an object {\"key\": \"value\"} or a string \"k=v,k2=v2\"");
    }
  }
  std::vector<policy::NamedPort> named_ports;
  if (body.contains("named_ports")) {
    auto np = endpoint::parseNamedPorts(body["named_ports"]);
    if (!np) return Response::error(400, fmt::format("create endpoint {}/{}: {}", ns, name, np.error().message));
    named_ports = std::move(*np);
  }
  MutexLock change(change_mu_);
  MutexLock lk(mu_);
  auto ep = eps_->create(name, ns, user, named_ports);
  if (!ep) return errorResponse(ep.error());
  json created = endpoint::toApiJson(*ep);
  if (auto l7 = syncProxy(); !l7.ok()) spdlog::error("L7 proxy config after creating {}: {}", name, l7.error().message);
  return Response::json(201, created);
}

Response Agent::getEndpoint(const Request& req) {
  MutexLock lk(mu_);
  auto id = parseId(req.param("id"));
  if (!id) return Response::error(400, fmt::format("endpoint id '{}' is not a number", req.param("id")));
  const auto* ep = eps_->find(*id);
  if (!ep) return Response::error(404, fmt::format("endpoint {} not found", *id));
  return Response::json(200, endpoint::toApiJson(*ep));
}

Response Agent::deleteEndpoint(const Request& req) {
  MutexLock change(change_mu_);
  MutexLock lk(mu_);
  auto id = parseId(req.param("id"));
  if (!id) return Response::error(400, fmt::format("endpoint id '{}' is not a number", req.param("id")));
  auto st = eps_->remove(*id);
  if (!st.ok()) return errorResponse(st.error());
  if (auto l7 = syncProxy(); !l7.ok()) spdlog::error("L7 proxy config after deleting endpoint {}: {}", *id, l7.error().message);
  return Response::json(200, {{"deleted", *id}});
}

namespace {
json identityJson(const identity::Identity& id) {
  json labels = json::array();
  for (const auto& l : id.labels) labels.push_back(l.toString());
  return {{"id", id.id}, {"labels", labels}, {"reserved", id.reserved}, {"references", id.refs}};
}
}  // namespace

Response Agent::listIdentities(const Request&) {
  MutexLock lk(mu_);
  json arr = json::array();
  for (const auto& id : ids_.list()) arr.push_back(identityJson(id));
  return Response::json(200, arr);
}

Response Agent::getIdentity(const Request& req) {
  MutexLock lk(mu_);
  auto id = parseId(req.param("id"));
  if (!id) return Response::error(400, fmt::format("identity '{}' is not a number", req.param("id")));
  auto found = ids_.lookup(*id);
  if (!found) return Response::error(404, fmt::format("identity {} not found", *id));
  return Response::json(200, identityJson(*found));
}

Response Agent::listCt(const Request&) {
  auto flows = dp_->listCt();
  if (!flows) return errorResponse(flows.error());
  uint64_t now = boottimeNs();
  json arr = json::array();
  auto addr = [](uint32_t be, uint16_t port_be, uint8_t proto) {
    std::string ip = ipv4HostOrderToString(ntohl(be));
    return proto == IPPROTO_ICMP ? ip : fmt::format("{}:{}", ip, ntohs(port_be));
  };
  for (const auto& f : *flows) {
    json flags = json::array();
    if (f.entry.flags & MB_CT_F_RX_CLOSING) flags.push_back("rx_closing");
    if (f.entry.flags & MB_CT_F_TX_CLOSING) flags.push_back("tx_closing");
    if (f.entry.flags & MB_CT_F_SEEN_NON_SYN) flags.push_back("seen_non_syn");
    if (f.entry.flags & MB_CT_F_PROXY_REDIRECT) flags.push_back("proxy_redirect");
    arr.push_back({{"src", addr(f.key.saddr, f.key.sport, f.key.proto)},
                   {"dst", addr(f.key.daddr, f.key.dport, f.key.proto)},
                   {"proto", protoName(f.key.proto)},
                   {"expires_in_seconds", f.entry.expires_ns > now ? (f.entry.expires_ns - now) / 1000000000ULL : 0},
                   {"tx_packets", f.entry.tx_packets},
                   {"tx_bytes", f.entry.tx_bytes},
                   {"rx_packets", f.entry.rx_packets},
                   {"rx_bytes", f.entry.rx_bytes},
                   {"src_identity", f.entry.src_identity},
                   {"dst_identity", f.entry.dst_identity},
                   {"endpoint", f.entry.ep_id},
                   {"flags", flags}});
  }
  return Response::json(200, arr);
}

Response Agent::getBpfPolicy(const Request& req) {
  MutexLock lk(mu_);
  auto id = parseId(req.param("id"));
  if (!id) return Response::error(400, fmt::format("endpoint id '{}' is not a number", req.param("id")));
  if (!eps_->find(*id)) return Response::error(404, fmt::format("endpoint {} not found", *id));
  auto entries = dp_->dumpPolicy(*id);
  if (!entries) return errorResponse(entries.error());
  json arr = json::array();
  for (const auto& e : *entries) {
    json labels = json::array();
    if (e.key.identity == 0) {
      labels.push_back("reserved:unknown");
    } else if (auto ident = ids_.lookup(e.key.identity)) {
      for (const auto& l : ident->labels) labels.push_back(l.toString());
    }
    arr.push_back({{"direction", e.key.direction == MB_DIR_INGRESS ? "Ingress" : "Egress"},
                   {"identity", e.key.identity},
                   {"labels", labels},
                   {"port", e.key.dport},
                   {"proto", protoName(e.key.proto)},
                   {"deny", e.value.deny},
                   {"proxy_port", e.value.proxy_port},
                   {"packets", e.packets},
                   {"bytes", e.bytes},
                   {"policy", repo_.policyForCookie(e.value.cookie)}});
  }
  return Response::json(200, arr);
}

Response Agent::patchEndpointConfig(const Request& req) {
  auto id = parseId(req.param("id"));
  if (!id) return Response::error(400, fmt::format("endpoint id '{}' is not a number", req.param("id")));
  json body = json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object())
    return Response::error(400, "request body must be a JSON object, e.g. {\"PolicyAuditMode\": \"Enabled\"}");
  std::optional<bool> audit;
  bool set = false;
  for (const auto& [k, v] : body.items()) {
    if (k != "PolicyAuditMode")
      return Response::error(400, fmt::format("unknown endpoint option '{}' (supported: PolicyAuditMode)", k));
    std::string val = v.is_boolean() ? (v.get<bool>() ? "Enabled" : "Disabled") : v.is_string() ? v.get<std::string>() : "";
    if (val == "Enabled" || val == "true") audit = true;
    else if (val == "Disabled" || val == "false") audit = false;
    else if (val == "Default") audit = std::nullopt;
    else return Response::error(400, "PolicyAuditMode must be Enabled, Disabled or Default");
    set = true;
  }
  if (!set) return Response::error(400, "no option given (supported: PolicyAuditMode)");
  MutexLock change(change_mu_);
  MutexLock lk(mu_);
  auto st = eps_->setAuditMode(*id, audit);
  if (!st.ok()) return errorResponse(st.error());
  return Response::json(200, endpoint::toApiJson(*eps_->find(*id)));
}

Response Agent::listNamespaces(const Request&) {
  MutexLock lk(mu_);
  json arr = json::array();
  for (const auto& [ns, ls] : eps_->namespaces()) {
    // What policies see: Kubernetes' own name label is derived for every
    // namespace (labels::endpointLabels), so it is listed too, with the name.
    json labels = endpoint::namespaceLabelsJson(ns, ls);
    size_t pods = 0;
    for (const auto* ep : eps_->list())
      if (ep->ns == ns) ++pods;
    arr.push_back({{"name", ns}, {"labels", labels}, {"endpoints", pods}});
  }
  return Response::json(200, arr);
}

Response Agent::putNamespace(const Request& req) {
  json body = json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object() || !body.contains("labels") || !body["labels"].is_object())
    return Response::error(400, "request body must be {\"labels\": {\"key\": \"value\", ...}}");
  labels::LabelSet ls;
  for (const auto& [k, v] : body["labels"].items()) {
    if (!v.is_string()) return Response::error(400, fmt::format("label '{}': value must be a string", k));
    auto lab = labels::parseLabel(k + "=" + v.get<std::string>());
    if (!lab) return Response::error(400, lab.error().message);
    ls.add(*lab);
  }
  MutexLock change(change_mu_);
  MutexLock lk(mu_);
  const std::string ns = req.param("name");
  auto st = eps_->setNamespaceLabels(ns, ls);
  if (!st.ok()) return errorResponse(st.error());
  if (auto l7 = syncProxy(); !l7.ok()) spdlog::error("L7 proxy config after namespace labels: {}", l7.error().message);
  // The labels as stored and listed (the derived name label included), not an echo of the request.
  auto stored = eps_->namespaces();
  auto it = stored.find(ns);
  return Response::json(200, {{"name", ns},
                              {"labels", endpoint::namespaceLabelsJson(ns, it == stored.end() ? labels::LabelSet() : it->second)}});
}

}  // namespace membrane::daemon
