// Datapath: loads membrane's BPF object (bpf/datapath.bpf.c), keeps its maps
// pinned under a bpffs directory, attaches the tc programs to pod veths and
// gives typed access to every map.
//
// Contract
// - Maps are pinned by name under DatapathOptions::bpf_root and REUSED when
//   already pinned: an agent restart keeps endpoints, policy, conntrack and
//   counters. A pinned map whose layout differs is refused with a message
//   naming it (layout changes get a new _vN name, see bpf/shared/datapath.h).
// - Programs stay attached (cls_bpf, fixed handle/priority) when the process
//   exits: enforcement continues with the last written maps. attach() with
//   BPF_TC_F_REPLACE atomically swaps in the new program on restart.
// - Byte order: addresses in *_be parameters and in the raw BPF structs are
//   network order; PolicyMapKey/PolicyMapValue use host order (converted
//   inside).
// - Thread safety: map operations are safe to call concurrently (each is a
//   syscall on a map fd; the policy shadow has its own lock); open/destruction
//   must not race with other calls.
// - Policy realization is incremental: the object keeps a shadow of every
//   endpoint's realized policy entries (read once from the pinned map in
//   open(), so a restarted agent diffs against what the kernel really holds)
//   and syncPolicy() compares against it instead of scanning the global map.
//   Hence ONE Datapath instance per bpf_root writes the policy map; a second
//   instance (tests) sees its own shadow, built at its open().
// - Errors carry context, e.g. "attach tc ingress on lxc1a2b: Operation not
//   permitted".
#pragma once

#include <atomic>
#include <compare>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "bpf/shared/datapath.h"
#include "membrane/mutex.h"
#include "membrane/result.h"
#include "src/kernel/datapath_maps.h"

struct membrane_datapath;  // generated skeleton (bpf/datapath.skel.h)
struct ring_buffer;        // libbpf

namespace membrane::kernel {

struct DatapathOptions {
  std::string bpf_root = "/sys/fs/bpf/membrane";
};

struct PolicyEntryStat {
  PolicyMapKey key;
  PolicyMapValue value;
  uint64_t packets = 0;  // summed over all possible CPUs
  uint64_t bytes = 0;
};

struct MetricsEntry {
  uint8_t reason = 0;     // 0 forwarded, else mb_drop_reason
  uint8_t direction = 0;  // mb_direction
  uint64_t packets = 0;   // summed over all possible CPUs
  uint64_t bytes = 0;
};

// A conntrack entry. key.flags & MB_CT_KEY_F_SERVICE marks a service
// entry ({client, VIP} -> entry.backend_ip/backend_port, entry.rev_nat_id =
// service id) rather than a flow; flows to a service are keyed by the
// backend (post-DNAT) and carry entry.rev_nat_id != 0.
struct CtFlow {
  mb_ct_key key;      // original direction, network order
  mb_ct_entry entry;
};

// Syscalls this object made on a BPF map since open(), as Cilium counts them
// for cilium_bpf_map_ops_total: operation "update", "delete", "lookup" or
// "getNextKey"; outcome "success" or "fail" (a getNextKey that ends the
// iteration, and a delete of a missing entry, count as "success").
// Counted maps: MB_MAP_POLICY, MB_MAP_ENDPOINTS, MB_MAP_ENDPOINTS_BY_IP,
// MB_MAP_IPCACHE.
struct MapOpCount {
  std::string map_name;
  std::string operation;
  std::string outcome;
  uint64_t count = 0;
};

// What the datapath reports as it goes, for the agent's metrics (the kernel
// module does not depend on metrics: the daemon adapts this to AgentMetrics).
// Called on the thread making the map call; implementations must be
// thread-safe and quick.
class DatapathObserver {
 public:
  virtual ~DatapathObserver() = default;
  // An ipcache write that took effect: type "upsert" or "delete".
  virtual void ipcacheEvent(std::string_view type) = 0;
  // One that did not: error "invalid_prefix" (prefix length > 32) or
  // "no_such_prefix" (a delete of an entry that is not there), Cilium's values.
  virtual void ipcacheError(std::string_view type, std::string_view error) = 0;
  // Whether to time map syscalls (cilium_bpf_syscall_duration_seconds is off
  // by default: no clock is read then). Asked once, at setObserver().
  virtual bool timeMapSyscalls() const = 0;
  // One timed map syscall (the ones MapOpCount counts), operation as there.
  virtual void mapSyscall(std::string_view operation, bool success, double seconds) = 0;
};

struct MapUsage {
  std::string name;   // MB_MAP_* name
  size_t entries = 0;
  size_t max_entries = 0;
};

// Memory the kernel charges for BPF objects (memlock, as bpftool's bytes_memlock).
struct BpfMemoryUsage {
  uint64_t maps_bytes = 0;
  uint64_t progs_bytes = 0;
};
// Every BPF map and program on the system, not only membrane's (Cilium's
// cilium_bpf_*_virtual_memory_max_bytes are system-wide too): walks the
// kernel's ids and reads each object's memlock from /proc/self/fdinfo.
// Objects that go away during the walk are skipped.
Result<BpfMemoryUsage> systemBpfMemory();

enum class Program { FromEndpoint, ToEndpoint };

// The Linux DatapathMaps (and more: events, services listing, CT GC, metrics).
class Datapath : public DatapathMaps {
 public:
  // Loads (verifies) the BPF object with its maps pinned under bpf_root,
  // reusing pinned maps. Creates bpf_root if needed. Fails with an
  // actionable message when bpffs is not mounted, when not privileged, or
  // when a pinned map is incompatible.
  static Result<std::unique_ptr<Datapath>> open(const DatapathOptions& options);
  ~Datapath() override;
  Datapath(const Datapath&) = delete;
  Datapath& operator=(const Datapath&) = delete;

  const std::string& bpfRoot() const { return bpf_root_; }

  // Ensures a clsact qdisc and attaches from_endpoint (ingress) and
  // to_endpoint (egress) with fixed handle/priority, replacing what is there.
  Status attach(uint32_t ifindex) override;
  // Removes both filters; succeeds if they (or the device) are already gone.
  Status detach(uint32_t ifindex);

  // config.svc_cidr/svc_cidr_len limit service lookups to that prefix
  // (0 = every destination is looked up: correct, slower).
  Status setConfig(const mb_datapath_config& config) override;
  Result<mb_datapath_config> config() override;

  // Writes the endpoint into both endpoint maps (by ifindex and by IPv4).
  Status upsertEndpoint(const mb_endpoint_info& endpoint) override;
  // Removes it from both maps; missing entries are not an error.
  Status deleteEndpoint(uint32_t ifindex, uint32_t ipv4_be) override;
  Result<std::vector<mb_endpoint_info>> listEndpoints() override;

  Status upsertIpcache(uint32_t ipv4_be, uint8_t prefix_len, uint32_t identity) override;
  Status deleteIpcache(uint32_t ipv4_be, uint8_t prefix_len) override;  // missing is ok
  using IpcacheEntry = kernel::IpcacheEntry;
  // Every IPv4 ipcache entry (one map walk; for reconciliation at start).
  Result<std::vector<IpcacheEntry>> listIpcache() override;

  // Brings ep_id's policy entries to `desired` by difference against the
  // realized shadow (no scan of the global map): writes new and changed
  // entries first, then deletes stale ones, so a packet never sees a state
  // that is neither the old nor the new policy for more than the entries in
  // flight (no flush). Unchanged entries cost no syscall and keep their
  // counters; changed entries keep theirs too (read-modify-write per CPU:
  // increments that land between the read and the write of that one entry
  // are lost). On error the shadow still matches the kernel: entries written
  // before the failure are recorded, the rest keep their previous state.
  Result<PolicySyncStats> syncPolicy(uint32_t ep_id,
                                     const std::map<PolicyMapKey, PolicyMapValue>& desired) override;
  // All entries of ep_id with counters summed over CPUs, sorted by key (one
  // lookup per realized entry of ep_id).
  Result<std::vector<PolicyEntryStat>> dumpPolicy(uint32_t ep_id);
  Status deletePolicy(uint32_t ep_id) override;
  // Endpoint ids that have realized policy entries (from the shadow).
  std::vector<uint32_t> policyEndpoints() const override;

  // Map syscall counters since open(), sorted by (map, operation, outcome).
  std::vector<MapOpCount> mapOps() const;
  // Reports ipcache events and (if it asks) map syscall timings to
  // `observer` from now on; nullptr stops. Call before other threads use
  // this object (the agent does, right after open()); `observer` must
  // outlive it or be replaced.
  void setObserver(DatapathObserver* observer);

  // Metrics map summed over CPUs, sorted by (reason, direction).
  Result<std::vector<MetricsEntry>> readMetrics();

  // Services (ClusterIP), load-balanced by from_endpoint (see
  // bpf/shared/datapath.h). Creates or replaces the backend set of
  // (vip, port, proto); proto must be IPPROTO_TCP or IPPROTO_UDP. An empty
  // set is allowed: packets to the VIP are then dropped with 158 "Service
  // backend not found". The service keeps its id across updates; a new one
  // gets the smallest free id. Update order: reverse-NAT entry, new backend
  // slots, the service entry with the new count, then stale slots, so a new
  // flow picks either an old or a new backend, never a hole. Established
  // flows keep their backend (conntrack); call flushCtFor(backend ip) when
  // a backend goes away for good.
  Status upsertService(uint32_t vip_be, uint16_t port, uint8_t proto,
                       const std::vector<Backend>& backends) override;
  // Removes the service, its backends and reverse-NAT entry and the
  // conntrack entries of its flows. A missing service is not an error.
  Status deleteService(uint32_t vip_be, uint16_t port, uint8_t proto) override;
  // All services, sorted by (vip, port, proto) in host order.
  Result<std::vector<ServiceInfo>> listServices();

  Result<std::vector<CtFlow>> listCt();
  // One GC pass, split by protocol as cilium_datapath_conntrack_gc_entries
  // is ({protocol="TCP"} and {protocol="non-TCP"}).
  struct CtGcResult {
    size_t tcp_alive = 0, tcp_deleted = 0;
    size_t other_alive = 0, other_deleted = 0;
    // The map walk (map_walk.h): restarts after an entry vanished under the
    // iterator, and key fallbacks by the protocol of the vanished entry.
    uint64_t interrupts = 0;
    uint64_t tcp_key_fallbacks = 0, other_key_fallbacks = 0;
    bool completed = true;  // false: the walk hit its bound before the end (entries may linger)
    size_t deleted() const { return tcp_deleted + other_deleted; }
  };
  // Deletes entries with expires_ns < now_boottime_ns in one walk of the map
  // (walkMap: safe against entries vanishing meanwhile); counts what it kept
  // and removed.
  Result<CtGcResult> gcCt(uint64_t now_boottime_ns);
  // Deletes entries with ipv4_be as source or destination, and service
  // entries that pin a flow to ipv4_be as backend.
  Status flushCtFor(uint32_t ipv4_be) override;

  // Entries vs capacity of the endpoint, ipcache, policy, conntrack,
  // metrics, service and backend maps (in that order).
  Result<std::vector<MapUsage>> mapUsage();

  int eventsFd() const;
  int programFd(Program program) const;  // for BPF_PROG_TEST_RUN and benchmarks

  // Unpins every map this object pins under bpf_root (and maps of earlier
  // layouts, e.g. mb_ct4_v1) and removes the directory. Missing
  // pins/directory are not an error.
  static Status removePins(const std::string& bpf_root);

 private:
  struct SkelDeleter {
    void operator()(membrane_datapath* skel) const;
  };
  Datapath(std::unique_ptr<membrane_datapath, SkelDeleter> skel, std::string bpf_root);
  // Fills policy_shadow_ from the pinned map (one scan, at open()).
  Status loadPolicyShadow();

  enum class MapId : uint8_t { Policy, Endpoints, EndpointsByIp, Ipcache, kCount };
  enum class MapOp : uint8_t { Update, Delete, Lookup, GetNextKey, kCount };
  // Runs one map syscall (`call` returns 0 or -errno), counts its outcome,
  // times it when the observer asks for it, and returns its result.
  template <typename Call>
  int mapCall(MapId map, MapOp op, Call&& call);
  void ipcacheEvent(std::string_view type, std::string_view error);

  std::unique_ptr<membrane_datapath, SkelDeleter> skel_;
  std::string bpf_root_;
  mutable Mutex policy_mu_;
  std::map<uint32_t, std::map<PolicyMapKey, PolicyMapValue>> policy_shadow_ GUARDED_BY(policy_mu_);  // ep_id -> realized entries
  // [map][op][0 success, 1 fail]
  std::atomic<uint64_t> ops_[static_cast<size_t>(MapId::kCount)][static_cast<size_t>(MapOp::kCount)][2] = {};
  DatapathObserver* observer_ = nullptr;  // set before concurrent use (setObserver)
  bool time_syscalls_ = false;
};

// Consumer of the events ring buffer. Move-only RAII owner of the libbpf
// ring_buffer. The callback runs on the thread calling poll()/consume().
class EventReader {
 public:
  using Callback = std::function<void(const mb_event&)>;

  static Result<EventReader> open(int events_fd, Callback callback);
  ~EventReader();
  EventReader(EventReader&&) noexcept;
  EventReader& operator=(EventReader&&) noexcept;
  EventReader(const EventReader&) = delete;
  EventReader& operator=(const EventReader&) = delete;

  // Waits up to timeout_ms for events and delivers them; returns how many.
  Result<int> poll(int timeout_ms);
  // Delivers what is available without waiting; returns how many.
  Result<int> consume();

 private:
  EventReader(ring_buffer* rb, std::unique_ptr<Callback> callback);
  ring_buffer* rb_ = nullptr;
  std::unique_ptr<Callback> callback_;  // heap: its address is libbpf's ctx
};

}  // namespace membrane::kernel
