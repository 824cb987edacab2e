// DatapathMaps: the part of the datapath that endpoint::Manager and
// workload::Controller use (endpoint and policy maps, ipcache, conntrack
// flush, config, services, tc attach), as an interface, so that their
// lifecycles are tested without root against an in-memory fake
// (src/kernel/fake/) and with injected failures (src/kernel/fake/faults.h).
//
// Contract: as documented on kernel::Datapath, the Linux implementation
// (src/kernel/datapath.h), which the fake follows: byte order (*_be network
// order, PolicyMapKey/PolicyMapValue/ports host order), "missing is not an
// error" for deletes, syncPolicy's shadow that matches what was written even
// after a failure. Thread safety: per implementation (Datapath's map
// operations are safe concurrently; the fake is not).
#pragma once

#include <compare>
#include <cstdint>
#include <map>
#include <vector>

#include "bpf/shared/datapath.h"
#include "membrane/result.h"

namespace membrane::kernel {

// One policy map entry of an endpoint, host byte order.
struct PolicyMapKey {
  uint32_t identity = 0;   // peer identity; 0 = any
  uint16_t dport = 0;      // 0 = any
  uint8_t proto = 0;       // IPPROTO_*; 0 = any
  uint8_t direction = 0;   // MB_DIR_INGRESS / MB_DIR_EGRESS
  auto operator<=>(const PolicyMapKey&) const = default;
};

struct PolicyMapValue {
  bool deny = false;
  uint16_t proxy_port = 0;  // 0 = no L7 redirect
  uint32_t cookie = 0;      // rule attribution
  auto operator<=>(const PolicyMapValue&) const = default;
};

struct PolicySyncStats {
  size_t added = 0;
  size_t updated = 0;
  size_t deleted = 0;
  size_t unchanged = 0;
};

// One backend of a service. ip_be network order, port host order.
struct Backend {
  uint32_t ip_be = 0;
  uint16_t port = 0;
  auto operator<=>(const Backend&) const = default;
};

// A service as the datapath holds it; vip_be network order, port host order.
struct ServiceInfo {
  uint32_t vip_be = 0;
  uint16_t port = 0;
  uint8_t proto = 0;              // IPPROTO_TCP / IPPROTO_UDP
  uint16_t id = 0;                // service id = rev_nat_id (>= 1)
  std::vector<Backend> backends;  // in slot order
};

// One IPv4 ipcache entry.
struct IpcacheEntry {
  uint32_t ipv4_be = 0;
  uint8_t prefix_len = 0;
  uint32_t identity = 0;
};

class DatapathMaps {
 public:
  virtual ~DatapathMaps() = default;

  // tc programs on a pod's host-side veth (replacing what is there).
  virtual Status attach(uint32_t ifindex) = 0;

  virtual Status setConfig(const mb_datapath_config& config) = 0;
  virtual Result<mb_datapath_config> config() = 0;

  // Both endpoint maps (by ifindex and by IPv4); delete: missing is ok.
  virtual Status upsertEndpoint(const mb_endpoint_info& endpoint) = 0;
  virtual Status deleteEndpoint(uint32_t ifindex, uint32_t ipv4_be) = 0;
  virtual Result<std::vector<mb_endpoint_info>> listEndpoints() = 0;

  virtual Status upsertIpcache(uint32_t ipv4_be, uint8_t prefix_len, uint32_t identity) = 0;
  virtual Status deleteIpcache(uint32_t ipv4_be, uint8_t prefix_len) = 0;  // missing is ok
  virtual Result<std::vector<IpcacheEntry>> listIpcache() = 0;

  // ep_id's policy entries brought to `desired` by difference; on error the
  // entries written before the failure stay (and are known to the shadow).
  virtual Result<PolicySyncStats> syncPolicy(uint32_t ep_id,
                                             const std::map<PolicyMapKey, PolicyMapValue>& desired) = 0;
  virtual Status deletePolicy(uint32_t ep_id) = 0;
  // Endpoint ids with realized policy entries.
  virtual std::vector<uint32_t> policyEndpoints() const = 0;

  // Conntrack entries of ipv4_be (source, destination or service backend).
  virtual Status flushCtFor(uint32_t ipv4_be) = 0;

  // ClusterIP services: (vip, port, proto) -> backends; delete: missing is ok.
  virtual Status upsertService(uint32_t vip_be, uint16_t port, uint8_t proto,
                               const std::vector<Backend>& backends) = 0;
  virtual Status deleteService(uint32_t vip_be, uint16_t port, uint8_t proto) = 0;
};

}  // namespace membrane::kernel
