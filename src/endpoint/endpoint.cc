#include "src/endpoint/endpoint.h"

#include <fmt/format.h>

#include "src/endpoint/ipam.h"

namespace membrane::endpoint {

std::string macToString(const std::array<uint8_t, 6>& m) {
  return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]);
}

namespace {
nlohmann::json labelList(const labels::LabelSet& ls) {
  auto arr = nlohmann::json::array();
  for (const auto& l : ls) arr.push_back(l.toString());
  return arr;
}
}  // namespace

nlohmann::json toApiJson(const Endpoint& ep) {
  return {
      {"id", ep.id},
      {"name", ep.name},
      {"namespace", ep.ns},
      {"labels", labelList(ep.labels)},
      {"identity", ep.identity},
      {"ipv4", ipv4ToString(ep.ipv4)},
      {"state", ep.state},
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
          {"ipv4", ipv4ToString(ep.ipv4)},
          {"netns_name", ep.netns_name},
          {"host_ifname", ep.host_ifname},
          {"health", ep.health},
          {"audit_mode", ep.audit_mode ? nlohmann::json(*ep.audit_mode) : nlohmann::json()},
          {"named_ports", namedPortsJson(ep.named_ports)},
          {"created", ep.created}};
}

Result<Endpoint> fromStateJson(const nlohmann::json& j) {
  try {
    Endpoint ep;
    ep.id = j.at("id").get<uint32_t>();
    ep.name = j.at("name").get<std::string>();
    ep.ns = j.at("namespace").get<std::string>();
    for (const auto& [k, v] : j.at("user_labels").items()) ep.user_labels.add("k8s", k, v.get<std::string>());
    ep.labels = labels::endpointLabels(ep.ns, ep.user_labels);
    ep.identity = j.at("identity").get<uint32_t>();
    auto ip = parseIpv4(j.at("ipv4").get<std::string>());
    if (!ip) return ip.error();
    ep.ipv4 = *ip;
    ep.netns_name = j.at("netns_name").get<std::string>();
    ep.host_ifname = j.at("host_ifname").get<std::string>();
    ep.created = j.value("created", "");
    ep.health = j.value("health", false);
    if (ep.health) ep.labels = labels::reservedLabels(labels::Reserved::Health);
    if (j.contains("audit_mode") && j["audit_mode"].is_boolean()) ep.audit_mode = j["audit_mode"].get<bool>();
    if (j.contains("named_ports")) {
      auto np = parseNamedPorts(j["named_ports"]);
      if (!np) return np.error().wrap("endpoint state");
      ep.named_ports = std::move(*np);
    }
    ep.state = kStateRestoring;
    return ep;
  } catch (const std::exception& e) {
    return Error::invalid(std::string("endpoint state: ") + e.what());
  }
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
