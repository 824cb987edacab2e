// FakeDatapathMaps: an in-memory DatapathMaps for tests without root.
//
// Holds what the BPF maps would hold, as plain values that tests compare
// whole (State, operator==). Semantics follow kernel::Datapath: deletes of
// missing entries succeed, syncPolicy writes the difference, attach() needs a
// live link (attachable(), ENODEV otherwise) and a link that goes away takes
// its attachment with it (linkGone(), which FakePodNetworks calls).
// Not thread-safe.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <tuple>
#include <utility>
#include <vector>

#include "src/kernel/datapath_maps.h"

namespace membrane::kernel {

class FakeDatapathMaps final : public DatapathMaps {
 public:
  struct Service {
    std::vector<Backend> backends;
    bool operator==(const Service&) const = default;
  };
  struct State {
    mb_datapath_config config{};
    std::map<uint32_t, mb_endpoint_info> endpoints;                        // by ifindex
    std::map<std::pair<uint32_t, uint8_t>, uint32_t> ipcache;              // (ipv4_be, len) -> identity
    std::map<uint32_t, std::map<PolicyMapKey, PolicyMapValue>> policy;     // ep_id -> entries
    std::map<std::tuple<uint32_t, uint16_t, uint8_t>, Service> services;   // (vip_be, port, proto)
    std::set<uint32_t> attached;                                           // ifindexes with programs
    std::set<uint32_t> ct_ips;                                             // addresses with CT entries
    bool operator==(const State& o) const;
  };

  const State& state() const { return s_; }
  State& mutableState() { return s_; }
  // A link is gone (its tc programs with it).
  void linkGone(uint32_t ifindex) { s_.attached.erase(ifindex); }
  // attach() fails with ENODEV unless this says the link exists (default: every link).
  void setLinkExists(std::function<bool(uint32_t)> f) { link_exists_ = std::move(f); }

  Status attach(uint32_t ifindex) override;
  Status setConfig(const mb_datapath_config& config) override;
  Result<mb_datapath_config> config() override;
  Status upsertEndpoint(const mb_endpoint_info& endpoint) override;
  Status deleteEndpoint(uint32_t ifindex, uint32_t ipv4_be) override;
  Result<std::vector<mb_endpoint_info>> listEndpoints() override;
  Status upsertIpcache(uint32_t ipv4_be, uint8_t prefix_len, uint32_t identity) override;
  Status deleteIpcache(uint32_t ipv4_be, uint8_t prefix_len) override;
  Result<std::vector<IpcacheEntry>> listIpcache() override;
  Result<PolicySyncStats> syncPolicy(uint32_t ep_id, const std::map<PolicyMapKey, PolicyMapValue>& desired) override;
  Status deletePolicy(uint32_t ep_id) override;
  std::vector<uint32_t> policyEndpoints() const override;
  Status flushCtFor(uint32_t ipv4_be) override;
  Status upsertService(uint32_t vip_be, uint16_t port, uint8_t proto, const std::vector<Backend>& backends) override;
  Status deleteService(uint32_t vip_be, uint16_t port, uint8_t proto) override;

 private:
  State s_;
  std::function<bool(uint32_t)> link_exists_;
};

}  // namespace membrane::kernel
