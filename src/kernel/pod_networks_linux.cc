#include <ifaddrs.h>
#include <netinet/in.h>

#include <cerrno>

#include "src/kernel/pod_networks.h"

namespace membrane::kernel {

Status LinuxPodNetworks::ensureHostDevice(const std::string& name, uint32_t gateway_be) {
  return kernel::ensureHostDevice(name, gateway_be);
}
Status LinuxPodNetworks::removeHostDevice(const std::string& name) { return kernel::removeHostDevice(name); }
Status LinuxPodNetworks::ensureUnreachableRoute(uint32_t cidr_be, uint8_t prefix_len) {
  return kernel::ensureUnreachableRoute(cidr_be, prefix_len);
}
Status LinuxPodNetworks::removeUnreachableRoute(uint32_t cidr_be, uint8_t prefix_len) {
  return kernel::removeUnreachableRoute(cidr_be, prefix_len);
}
Result<PodNetwork> LinuxPodNetworks::createPodNetwork(const PodNetworkSpec& spec) {
  return kernel::createPodNetwork(spec);
}
Result<PodNetwork> LinuxPodNetworks::inspectPodNetwork(const PodNetworkSpec& spec) {
  return kernel::inspectPodNetwork(spec);
}
Status LinuxPodNetworks::deletePodNetwork(const std::string& netns_name, const std::string& host_ifname,
                                          uint32_t ipv4_be) {
  return kernel::deletePodNetwork(netns_name, host_ifname, ipv4_be);
}

Result<std::vector<uint32_t>> LinuxPodNetworks::hostAddresses() {
  ifaddrs* ifa = nullptr;
  if (getifaddrs(&ifa) != 0) return Error::fromErrno(errno, "list host addresses");
  std::vector<uint32_t> out;
  for (auto* p = ifa; p; p = p->ifa_next)
    if (p->ifa_addr && p->ifa_addr->sa_family == AF_INET)
      out.push_back(reinterpret_cast<sockaddr_in*>(p->ifa_addr)->sin_addr.s_addr);
  freeifaddrs(ifa);
  return out;
}

PodNetworks& linuxPodNetworks() {
  static LinuxPodNetworks instance;
  return instance;
}

}  // namespace membrane::kernel
