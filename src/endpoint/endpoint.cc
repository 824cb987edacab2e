#include "src/endpoint/endpoint.h"

#include <fmt/format.h>

#include "src/endpoint/ipam.h"
#include "src/endpoint/state_json.h"
#include "src/endpoint/state_store.h"

namespace membrane::endpoint {

std::string macToString(const std::array<uint8_t, 6>& m) {
  return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]);
}

namespace {
const state::Names<EndpointState, 7> kEndpointStates{"endpoint state",
                                                     {{{EndpointState::Creating, "creating"},
                                                       {EndpointState::WaitingForIdentity, "waiting-for-identity"},
                                                       {EndpointState::Regenerating, "regenerating"},
                                                       {EndpointState::Ready, "ready"},
                                                       {EndpointState::Disconnecting, "disconnecting"},
                                                       {EndpointState::Restoring, "restoring"},
                                                       {EndpointState::NotReady, "not-ready"}}}};

nlohmann::json labelList(const labels::LabelSet& ls) {
  auto arr = nlohmann::json::array();
  for (const auto& l : ls) arr.push_back(l.toString());
  return arr;
}

nlohmann::json cniJson(const std::optional<CniAttachment>& cni) {
  if (!cni) return nullptr;
  return {{"container_id", cni->container_id}, {"ifname", cni->ifname}, {"network", cni->network}};
}
}  // namespace

std::string_view toString(EndpointState s) { return kEndpointStates.toString(s); }
Result<EndpointState> parseEndpointState(std::string_view s) { return kEndpointStates.parse(s); }

nlohmann::json toApiJson(const Endpoint& ep) {
  return {
      {"id", ep.id},
      {"name", ep.name},
      {"namespace", ep.ns},
      {"labels", labelList(ep.labels)},
      {"identity", ep.identity},
      {"ipv4", ipv4HostOrderToString(ep.ipv4)},
      {"state", toString(ep.state)},
      {"policy",
       {{"ingress", {{"enforcing", ep.ingress_enforced}, {"audit", ep.ingress_audit}, {"policies", ep.ingress_policies}}},
        {"egress", {{"enforcing", ep.egress_enforced}, {"audit", ep.egress_audit}, {"policies", ep.egress_policies}}},
        {"revision", ep.policy_revision}}},
      {"config", {{"PolicyAuditMode", ep.audit_mode ? (*ep.audit_mode ? "Enabled" : "Disabled") : "Default"}}},
      {"netns", ep.netns_path},
      {"interface",
       {{"host", ep.host_ifname},
        {"ifindex", ep.host_ifindex},
        {"mac", macToString(ep.mac)},
        {"host_mac", macToString(ep.host_mac)}}},
      {"named_ports", namedPortsJson(ep.named_ports)},
      {"created", ep.created},
      {"cni", cniJson(ep.cni)},
  };
}

nlohmann::json namedPortsJson(const std::vector<policy::NamedPort>& ports) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& p : ports)
    out.push_back({{"name", p.name},
                   {"port", p.port},
                   {"protocol", p.proto == 17 ? "UDP" : p.proto == 132 ? "SCTP" : "TCP"}});
  return out;
}

Result<std::vector<policy::NamedPort>> parseNamedPorts(const nlohmann::json& j) {
  const char* shape = " (expected [{\"name\": \"http\", \"port\": 80, \"protocol\": \"TCP\"}, ...])";
  if (!j.is_array()) return Error::invalid(std::string("named_ports must be a list") + shape);
  std::vector<policy::NamedPort> out;
  for (size_t i = 0; i < j.size(); ++i) {
    const auto& item = j[i];
    const std::string where = fmt::format("named_ports[{}]", i);
    if (!item.is_object()) return Error::invalid(where + " must be an object" + shape);
    for (const auto& [k, _] : item.items())
      if (k != "name" && k != "port" && k != "protocol")
        return Error::invalid(fmt::format("{}: unknown field '{}' (name, port, protocol)", where, k));
    if (!item.contains("name") || !item["name"].is_string())
      return Error::invalid(where + ".name (string) is required" + shape);
    policy::NamedPort np;
    np.name = item["name"].get<std::string>();
    if (auto st = policy::validatePortName(np.name); !st.ok()) return st.error().wrap(where + ".name");
    if (!item.contains("port") || !item["port"].is_number_integer())
      return Error::invalid(where + ".port (number) is required" + shape);
    const int64_t port = item["port"].get<int64_t>();
    if (port < 1 || port > 65535)
      return Error::invalid(fmt::format("{}.port: {} is out of range (1-65535)", where, port));
    np.port = static_cast<uint16_t>(port);
    const std::string proto = item.value("protocol", nlohmann::json("TCP")).is_string()
                                  ? item.value("protocol", std::string("TCP"))
                                  : std::string("?");
    if (proto == "TCP") np.proto = 6;
    else if (proto == "UDP") np.proto = 17;
    else if (proto == "SCTP") np.proto = 132;
    else return Error::invalid(fmt::format("{}.protocol: '{}' must be TCP, UDP or SCTP", where, proto));
    for (const auto& seen : out)
      if (seen.name == np.name)
        return Error::invalid(fmt::format("{}.name: '{}' is given twice (port names are unique per pod)", where, np.name));
    out.push_back(std::move(np));
  }
  return out;
}

nlohmann::json toStateJson(const Endpoint& ep) {
  nlohmann::json user = nlohmann::json::object();
  for (const auto& l : ep.user_labels) user[l.key] = l.value;
  return {{"version", 1},
          {"id", ep.id},
          {"name", ep.name},
          {"namespace", ep.ns},
          {"user_labels", user},
          {"identity", ep.identity},
          {"ipv4", ipv4HostOrderToString(ep.ipv4)},
          {"netns_name", ep.netns_name},
          {"host_ifname", ep.host_ifname},
          {"health", ep.health},
          {"audit_mode", ep.audit_mode ? nlohmann::json(*ep.audit_mode) : nlohmann::json()},
          {"named_ports", namedPortsJson(ep.named_ports)},
          {"created", ep.created},
          // The runtime's namespace: netns_name is empty for these.
          {"netns_path", ep.netns_path},
          {"cni", cniJson(ep.cni)}};
}

Result<Endpoint> fromStateJson(const nlohmann::json& j) {
  // Every field checked (a state file can be damaged or edited by hand): the
  // error names the field, nothing throws.
  Endpoint ep;
  if (!j.is_object()) return state::typeError("", "an object", j);
  MB_ASSIGN(ep.id, state::field<uint32_t>(j, "", "id"));
  MB_ASSIGN(ep.name, state::field<std::string>(j, "", "name"));
  MB_ASSIGN(ep.ns, state::field<std::string>(j, "", "namespace"));
  MB_ASSIGN(auto user, (state::field<std::map<std::string, std::string>>(j, "", "user_labels")));
  for (const auto& [k, v] : user) ep.user_labels.add("k8s", k, v);
  ep.labels = labels::endpointLabels(ep.ns, ep.user_labels);
  MB_ASSIGN(ep.identity, state::field<uint32_t>(j, "", "identity"));
  MB_ASSIGN(auto ipv4, state::field<std::string>(j, "", "ipv4"));
  auto ip = parseIpv4(ipv4);
  if (!ip) return ip.error().wrap("ipv4");
  ep.ipv4 = *ip;
  MB_ASSIGN(ep.netns_name, state::field<std::string>(j, "", "netns_name"));
  MB_ASSIGN(ep.host_ifname, state::field<std::string>(j, "", "host_ifname"));
  MB_ASSIGN(ep.created, state::field<std::string>(j, "", "created", ""));
  MB_ASSIGN(ep.health, state::field<bool>(j, "", "health", false));
  if (ep.health) ep.labels = labels::reservedLabels(labels::Reserved::Health);
  MB_ASSIGN(auto audit, state::field<nlohmann::json>(j, "", "audit_mode", nullptr));
  if (audit.is_boolean()) ep.audit_mode = audit.get<bool>();
  else if (!audit.is_null()) return state::typeError("audit_mode", "true, false or null", audit);
  if (j.contains("named_ports")) {
    auto np = parseNamedPorts(j["named_ports"]);
    if (!np) return np.error();
    ep.named_ports = std::move(*np);
  }
  // Absent in files of agents before membrane-cni (membrane's own pods).
  MB_ASSIGN(auto cni, state::field<nlohmann::json>(j, "", "cni", nullptr));
  if (!cni.is_null()) {
    CniAttachment a;
    MB_ASSIGN(a.container_id, state::field<std::string>(cni, "cni", "container_id"));
    MB_ASSIGN(a.ifname, state::field<std::string>(cni, "cni", "ifname"));
    MB_ASSIGN(a.network, state::field<std::string>(cni, "cni", "network"));
    ep.cni = std::move(a);
    MB_ASSIGN(ep.netns_path, state::field<std::string>(j, "", "netns_path"));
  }
  ep.state = EndpointState::Restoring;
  return ep;
}

Result<Endpoint> readEndpointState(const std::string& path) {
  MB_ASSIGN(auto text, readFile(path));
  auto j = state::parseObject(text);
  if (!j) return j.error().wrap(path);
  auto ep = fromStateJson(*j);
  if (!ep) return ep.error().wrap(path);
  return ep;
}

Result<std::map<std::string, labels::LabelSet>> readNamespaceState(const std::string& path) {
  std::map<std::string, labels::LabelSet> out;
  auto text = readFile(path);
  if (!text) {
    if (text.error().code == ENOENT) return out;  // no namespace was ever labeled
    return text.error();
  }
  auto j = state::parseObject(*text);
  if (!j) return j.error().wrap(path);
  auto m = state::as<std::map<std::string, std::map<std::string, std::string>>>(*j, "");
  if (!m) return m.error().wrap(path);
  for (const auto& [ns, ls] : *m) {
    labels::LabelSet set;
    for (const auto& [k, v] : ls)
      if (k != labels::kNamespaceNameLabel) set.add("k8s", k, v);
    out[ns] = std::move(set);
  }
  return out;
}

Result<labels::LabelSet> namespaceLabelsToStore(const std::string& ns, const labels::LabelSet& given) {
  labels::LabelSet out;
  for (const auto& l : given) {
    if (l.key != labels::kNamespaceNameLabel) {
      out.add(l);
      continue;
    }
    if (l.value != ns)
      return Error::invalid(fmt::format(
          "label '{}={}': {} is derived from the namespace's name and is always '{}'; it cannot be set or removed",
          l.key, l.value, l.key, ns));
  }
  return out;
}

nlohmann::json namespaceLabelsJson(const std::string& ns, const labels::LabelSet& stored) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& l : stored) out[l.key] = l.value;
  out[std::string(labels::kNamespaceNameLabel)] = ns;  // last: derived, a stored copy never shows
  return out;
}

Status validateName(const std::string& what, const std::string& name) {
  auto bad = [&](const std::string& why) {
    return Error::invalid(fmt::format("{} '{}' {} (Kubernetes names: lowercase letters, digits and '-', starting "
                                      "and ending with a letter or digit, at most 63 characters)",
                                      what, name, why));
  };
  if (name.empty()) return bad("is empty");
  if (name.size() > 63) return bad("is longer than 63 characters");
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return bad(fmt::format("contains '{}'", c));
  if (name.front() == '-' || name.back() == '-') return bad("must start and end with a letter or digit");
  return okStatus();
}

}  // namespace membrane::endpoint
