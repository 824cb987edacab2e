#include "src/kernel/fake/fake_pod_networks.h"

#include <arpa/inet.h>

#include <cerrno>

#include <fmt/format.h>

#include "membrane/ipv4.h"

namespace membrane::kernel {

bool FakePodNetworks::Pod::operator==(const Pod& o) const {
  return spec.netns_name == o.spec.netns_name && spec.adopt_netns_path == o.spec.adopt_netns_path &&
         spec.host_ifname == o.spec.host_ifname &&
         spec.pod_ifname == o.spec.pod_ifname && spec.ipv4_be == o.spec.ipv4_be &&
         spec.gateway_be == o.spec.gateway_be && spec.mtu == o.spec.mtu && net.netns_path == o.net.netns_path &&
         net.host_ifindex == o.net.host_ifindex && net.pod_ifindex == o.net.pod_ifindex &&
         net.host_mac == o.net.host_mac && net.pod_mac == o.net.pod_mac;
}

bool FakePodNetworks::linkExists(uint32_t ifindex) const {
  for (const auto& [_, p] : s_.pods)
    if (p.net.host_ifindex == ifindex) return true;
  return false;
}

Status FakePodNetworks::ensureHostDevice(const std::string& name, uint32_t gateway_be) {
  s_.host_devices[name] = gateway_be;
  return okStatus();
}

Status FakePodNetworks::removeHostDevice(const std::string& name) {
  s_.host_devices.erase(name);
  return okStatus();
}

Status FakePodNetworks::ensureUnreachableRoute(uint32_t cidr_be, uint8_t prefix_len) {
  s_.unreachable_routes.insert({cidr_be, prefix_len});
  return okStatus();
}

Status FakePodNetworks::removeUnreachableRoute(uint32_t cidr_be, uint8_t prefix_len) {
  s_.unreachable_routes.erase({cidr_be, prefix_len});
  return okStatus();
}

namespace {

const std::string& keyOf(const PodNetworkSpec& spec) {
  return spec.adopt_netns_path.empty() ? spec.netns_name : spec.adopt_netns_path;
}

}  // namespace

Result<PodNetwork> FakePodNetworks::createPodNetwork(const PodNetworkSpec& spec) {
  const std::string& key = keyOf(spec);
  const std::string what = "create pod network " + key;
  MB_TRY_CTX(validatePodNetworkSpec(spec), what);
  const bool adopted = !spec.adopt_netns_path.empty();
  if (adopted && !s_.runtime_netns.count(key))
    return Error(ENOENT, fmt::format("{}: open netns {}: {} does not exist", what, key, key));
  if (adopted && (s_.pods.count(key) || s_.runtime_links.count({key, spec.pod_ifname})))
    return Error(EEXIST, fmt::format("{}: interface {} already exists in {}", what, spec.pod_ifname, key));
  if (s_.pods.count(key)) return Error::fromErrno(EEXIST, fmt::format("{}: create namespace {}", what, key));
  std::set<uint32_t> used;
  for (const auto& [_, p] : s_.pods) {
    if (p.spec.host_ifname == spec.host_ifname)
      return Error::fromErrno(EEXIST, fmt::format("{}: create veth {}/{}", what, spec.host_ifname, spec.pod_ifname));
    used.insert(p.net.host_ifindex);
  }
  uint32_t ifindex = 100;
  while (used.count(ifindex)) ++ifindex;
  PodNetwork net;
  net.netns_path = adopted ? key : Netns::pathOf(spec.netns_name);
  net.host_ifindex = ifindex;
  net.pod_ifindex = 2;
  net.host_mac = {0x02, 0xfe, 0, 0, static_cast<uint8_t>(ifindex >> 8), static_cast<uint8_t>(ifindex)};
  net.pod_mac = {0x02, 0xaa, 0, 0, static_cast<uint8_t>(ifindex >> 8), static_cast<uint8_t>(ifindex)};
  s_.pods[key] = Pod{spec, net};
  return net;
}

Result<PodNetwork> FakePodNetworks::inspectPodNetwork(const PodNetworkSpec& spec) {
  const std::string& key = keyOf(spec);
  const std::string what = "inspect pod network " + key;
  auto it = s_.pods.find(key);
  if (it == s_.pods.end() || (!spec.adopt_netns_path.empty() && !s_.runtime_netns.count(key)))
    return Error::notFound(fmt::format("{}: namespace {} not found", what, key));
  if (it->second.spec.host_ifname != spec.host_ifname)
    return Error::notFound(fmt::format("{}: interface {} not found", what, spec.host_ifname));
  if (it->second.spec.ipv4_be != spec.ipv4_be)
    return Error::notFound(fmt::format("{}: address {} not found on {}", what, ipv4HostOrderToString(ntohl(spec.ipv4_be)),
                                       spec.pod_ifname));
  return it->second.net;
}

Status FakePodNetworks::deletePodNetwork(const std::string& netns_name, const std::string& host_ifname,
                                         uint32_t ipv4_be) {
  (void)ipv4_be;
  // The veth goes with either end: by namespace or by host interface name.
  for (auto it = s_.pods.begin(); it != s_.pods.end();) {
    if (it->first == netns_name || it->second.spec.host_ifname == host_ifname) {
      uint32_t ifindex = it->second.net.host_ifindex;
      it = s_.pods.erase(it);
      if (on_link_gone) on_link_gone(ifindex);
    } else {
      ++it;
    }
  }
  return okStatus();
}

Result<std::vector<uint32_t>> FakePodNetworks::hostAddresses() { return host_addresses; }

}  // namespace membrane::kernel
