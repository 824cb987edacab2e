// PodNetworks: the pod network and host plumbing that endpoint::Manager and
// workload::Controller use, as an interface (tests use the in-memory fake in
// src/kernel/fake/ and inject failures with src/kernel/fake/faults.h).
//
// Contract: the Linux implementation forwards to the functions of
// src/kernel/netlink.h, whose contracts apply (addresses *_be in network
// order, all-or-nothing createPodNetwork, idempotent delete/ensure/remove,
// ENOENT naming the missing piece from inspectPodNetwork, EEXIST for a taken
// namespace or interface name). Thread safety: LinuxPodNetworks is stateless
// and safe from any thread (every call opens its own netlink socket); the
// fake is not thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "membrane/result.h"
#include "src/kernel/netlink.h"

namespace membrane::kernel {

class PodNetworks {
 public:
  virtual ~PodNetworks() = default;

  virtual Status ensureHostDevice(const std::string& name, uint32_t gateway_be) = 0;
  virtual Status removeHostDevice(const std::string& name) = 0;
  virtual Status ensureUnreachableRoute(uint32_t cidr_be, uint8_t prefix_len) = 0;
  virtual Status removeUnreachableRoute(uint32_t cidr_be, uint8_t prefix_len) = 0;

  virtual Result<PodNetwork> createPodNetwork(const PodNetworkSpec& spec) = 0;
  virtual Result<PodNetwork> inspectPodNetwork(const PodNetworkSpec& spec) = 0;
  virtual Status deletePodNetwork(const std::string& netns_name, const std::string& host_ifname, uint32_t ipv4_be) = 0;

  // Every IPv4 address of the calling thread's network namespace (network
  // order), the host's for the agent.
  virtual Result<std::vector<uint32_t>> hostAddresses() = 0;
};

// The real thing (netlink.h, getifaddrs). Stateless.
class LinuxPodNetworks final : public PodNetworks {
 public:
  Status ensureHostDevice(const std::string& name, uint32_t gateway_be) override;
  Status removeHostDevice(const std::string& name) override;
  Status ensureUnreachableRoute(uint32_t cidr_be, uint8_t prefix_len) override;
  Status removeUnreachableRoute(uint32_t cidr_be, uint8_t prefix_len) override;
  Result<PodNetwork> createPodNetwork(const PodNetworkSpec& spec) override;
  Result<PodNetwork> inspectPodNetwork(const PodNetworkSpec& spec) override;
  Status deletePodNetwork(const std::string& netns_name, const std::string& host_ifname, uint32_t ipv4_be) override;
  Result<std::vector<uint32_t>> hostAddresses() override;
};

// The process-wide LinuxPodNetworks (stateless, lives forever).
PodNetworks& linuxPodNetworks();

}  // namespace membrane::kernel
