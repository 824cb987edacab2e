#include "src/daemon/cni_results.h"

#include <fmt/format.h>

#include "membrane/ipv4.h"

namespace membrane::daemon {

namespace {

// a-z, 0-9 and '-' kept, A-Z lowered, anything else '-'; no '-' at either
// end; at most 'max' characters.
std::string kubernetesName(const std::string& in, size_t max) {
  std::string out;
  for (char c : in) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    out.push_back(ok ? c : '-');
  }
  if (out.size() > max) out.resize(max);
  size_t first = out.find_first_not_of('-');
  if (first == std::string::npos) return "";
  size_t last = out.find_last_not_of('-');
  return out.substr(first, last - first + 1);
}

std::string cidr32(uint32_t ip) { return ipv4HostOrderToString(ip) + "/32"; }

}  // namespace

std::string cniEndpointName(const std::string& pod_name, const std::string& container_id) {
  std::string name = kubernetesName(pod_name, 63);
  if (!name.empty()) return name;
  std::string id = kubernetesName(container_id.substr(0, 12), 12);
  return id.empty() ? "cni" : "cni-" + id;
}

cni::AddAnswer cniAddAnswer(const endpoint::Endpoint& ep, uint32_t gateway) {
  cni::AddAnswer a;
  a.endpoint_id = ep.id;
  const std::string gw = ipv4HostOrderToString(gateway);
  a.result.interfaces = {
      cni::Interface{ep.host_ifname, endpoint::macToString(ep.host_mac), "", {}, "", ""},
      cni::Interface{ep.cni ? ep.cni->ifname : "eth0", endpoint::macToString(ep.mac), ep.netns_path, {}, "", ""},
  };
  a.result.ips = {cni::IpConfig{cidr32(ep.ipv4), gw, 1}};
  a.result.routes = {cni::Route{"0.0.0.0/0", gw, {}, {}, {}, {}, {}}};
  return a;
}

std::optional<std::string> cniCheckDifference(const endpoint::Endpoint& ep, const std::string& netns,
                                              const cni::CniResult& expected, uint32_t gateway) {
  const std::string ifname = ep.cni ? ep.cni->ifname : "eth0";
  if (netns != ep.netns_path)
    return fmt::format("CNI_NETNS is {}, the endpoint's interface is in {}", netns, ep.netns_path);
  std::optional<size_t> index;
  for (size_t i = 0; i < expected.interfaces.size(); ++i)
    if (expected.interfaces[i].name == ifname && expected.interfaces[i].sandbox == netns) index = i;
  if (!index) return fmt::format("prevResult lists no interface {} in {}", ifname, netns);
  const std::string mac = endpoint::macToString(ep.mac);
  const std::string& want_mac = expected.interfaces[*index].mac;
  if (!want_mac.empty() && want_mac != mac)
    return fmt::format("interface {}: MAC is {}, prevResult says {}", ifname, mac, want_mac);
  bool address = false;
  for (const auto& ip : expected.ips)
    if (ip.address == cidr32(ep.ipv4) && (!ip.interface || static_cast<size_t>(*ip.interface) == *index))
      address = true;
  if (!address)
    return fmt::format("address {} of {} is not in prevResult's ips for {}", cidr32(ep.ipv4), ifname, ifname);
  const std::string gw = ipv4HostOrderToString(gateway);
  bool route = false;
  for (const auto& r : expected.routes)
    if (r.dst == "0.0.0.0/0" && (r.gw.empty() || r.gw == gw)) route = true;
  if (!route) return fmt::format("prevResult has no default route via {}", gw);
  return std::nullopt;
}

}  // namespace membrane::daemon
