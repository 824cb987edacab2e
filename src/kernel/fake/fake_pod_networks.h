// FakePodNetworks: an in-memory PodNetworks for tests without root.
//
// Pod networks are records keyed by namespace name (the path for an adopted
// namespace, which must be in State::runtime_netns); host-side interfaces get
// the lowest free ifindex (from 100) and MACs derived from it, so a rolled
// back and retried creation gets the same values as a first-time one and
// tests compare states whole. Follows netlink.h: EEXIST for a taken
// namespace or interface name, ENOENT from inspect naming the missing piece,
// idempotent deletes and ensures. on_link_gone runs for every host interface
// that goes (wire it to FakeDatapathMaps::linkGone). Not thread-safe.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "src/kernel/pod_networks.h"

namespace membrane::kernel {

class FakePodNetworks final : public PodNetworks {
 public:
  struct Pod {
    PodNetworkSpec spec;
    PodNetwork net;
    bool operator==(const Pod& o) const;
  };
  struct State {
    std::map<std::string, uint32_t> host_devices;             // name -> gateway_be
    std::set<std::pair<uint32_t, uint8_t>> unreachable_routes;  // (cidr_be, len)
    std::map<std::string, Pod> pods;                           // by netns name, or path when adopted
    // Namespaces a container runtime made (PodNetworkSpec::adopt_netns_path
    // targets) and interfaces already in them (path, ifname): tests add them.
    std::set<std::string> runtime_netns;
    std::set<std::pair<std::string, std::string>> runtime_links;
    bool operator==(const State&) const = default;
  };

  const State& state() const { return s_; }
  State& mutableState() { return s_; }
  // The addresses hostAddresses() returns (network order).
  std::vector<uint32_t> host_addresses;
  std::function<void(uint32_t ifindex)> on_link_gone;
  // True while a pod's host interface with this ifindex exists.
  bool linkExists(uint32_t ifindex) const;

  Status ensureHostDevice(const std::string& name, uint32_t gateway_be) override;
  Status removeHostDevice(const std::string& name) override;
  Status ensureUnreachableRoute(uint32_t cidr_be, uint8_t prefix_len) override;
  Status removeUnreachableRoute(uint32_t cidr_be, uint8_t prefix_len) override;
  Result<PodNetwork> createPodNetwork(const PodNetworkSpec& spec) override;
  Result<PodNetwork> inspectPodNetwork(const PodNetworkSpec& spec) override;
  Status deletePodNetwork(const std::string& netns_name, const std::string& host_ifname, uint32_t ipv4_be) override;
  Result<std::vector<uint32_t>> hostAddresses() override;

 private:
  State s_;
};

}  // namespace membrane::kernel
