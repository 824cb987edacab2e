// EndpointManager: the life of pods (endpoints) on this node.
//
// Creating an endpoint is a sequence of kernel steps (netns, veth, addresses,
// routes, BPF map entries, tc programs) run under a rollback guard: if any
// step fails, every earlier step is undone and the error says which step
// failed. Policy changes reach the kernel only through regenerate(): the pure
// policy engine computes each endpoint's desired map state, and the datapath
// writes the difference (never a flush).
//
// Not thread-safe: the agent serializes every call with its own lock.
#pragma once

#include <array>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "membrane/identity.h"
#include "membrane/policy.h"
#include "membrane/policy_repository.h"
#include "membrane/result.h"
#include "membrane/unlocked.h"
#include "src/endpoint/endpoint.h"
#include "src/endpoint/ipam.h"
#include "src/endpoint/state_store.h"

namespace membrane::kernel {
class DatapathMaps;
class PodNetworks;
struct PodNetworkSpec;
}
namespace membrane::metrics {
class AgentMetrics;
}

namespace membrane::endpoint {

enum class EnforcementMode { Default, Always, Never };

struct ManagerConfig {
  std::string state_dir;   // endpoint state files go to <state_dir>/endpoints/<id>.json
  Cidr4 pod_cidr;
  std::string host_device;
  EnforcementMode mode = EnforcementMode::Default;
  bool audit = false;
  std::string bpf_root;    // salt for interface names, so two agents never collide
  // L7 proxy listener ports written into policy entries with L7 rules (0 = none).
  uint16_t proxy_port_ingress = 0;
  uint16_t proxy_port_egress = 0;
  // Runs the netlink steps of create() and remove() (a pod's netns, veth,
  // addresses and routes: kernel::PodNetworks) with the caller's lock
  // released (membrane/unlocked.h). Inside, the manager touches none of its
  // state: the new endpoint is not listed yet (its address and identity are
  // already taken), a removed one is listed as disconnecting.
  UnlockedHook unlocked{};
};

struct RegenerationStats {
  size_t endpoints = 0;
  size_t entries_written = 0;
  size_t entries_deleted = 0;
  double seconds = 0;
};

class Manager {
 public:
  // dp and net: the kernel (kernel::Datapath, kernel::linuxPodNetworks()) or
  // the fakes of src/kernel/fake/ in tests; files: where state files are
  // written (a fault-injecting wrapper in tests); every argument must outlive
  // the manager.
  Manager(ManagerConfig cfg, kernel::DatapathMaps& dp, kernel::PodNetworks& net, identity::IdentityAllocator& ids,
          const policy::Repository& repo, metrics::AgentMetrics& metrics, StateFiles& files = diskStateFiles());
  ~Manager();

  // Host side (gateway device, unreachable route for the pod CIDR, datapath
  // config, host addresses in the ipcache), then restores endpoints from the
  // state directory and reconciles the maps by difference. A state file that
  // cannot be read, or whose pod network is gone (ENOENT), is skipped and
  // kept (its id is not reused); any other error while inspecting a pod
  // network fails init() (the pinned maps keep enforcing; a restart retries)
  // rather than dropping a live pod's map entries as stale.
  Status init();

  // Creates a pod: validates, then netns + veth + IP + identity + maps +
  // programs; all or nothing. EEXIST for a taken name, ENOSPC for an
  // exhausted CIDR, EINVAL for bad labels or names. On failure nothing of it
  // remains (maps, pod network, identity, address, state file) and the error
  // names the failed step. Once the endpoint exists, the regeneration of the
  // others (a new identity, named ports) is best effort: its failure is logged
  // and the next regenerateAll() completes it.
  // named_ports: the pod's container ports (validated: parseNamedPorts); named
  // ports in policies resolve against them.
  Result<Endpoint> create(const std::string& name, const std::string& ns, const labels::LabelSet& user_labels,
                          const std::vector<policy::NamedPort>& named_ports = {});
  // A container that a runtime created (membrane-cni ADD, docs/cni.md): as
  // create(), but the veth's pod end is cni.ifname inside the runtime's
  // namespace at netns_path, which is entered, never created or removed. All
  // or nothing as create(). EEXIST when (container_id, ifname) already has an
  // endpoint (nothing changes), when the name is taken in the namespace, or
  // when cni.ifname exists in netns_path; ENOENT when netns_path does not
  // exist; ENOSPC for an exhausted CIDR; EINVAL for bad names or labels.
  Result<Endpoint> createForContainer(const std::string& name, const std::string& ns,
                                      const labels::LabelSet& user_labels, const CniAttachment& cni,
                                      const std::string& netns_path);
  // The endpoint of a runtime's container interface, or nullptr.
  const Endpoint* findByContainer(const std::string& container_id, const std::string& ifname) const;
  // Checks the endpoint's pod network against the kernel (netns, veth up and
  // paired, address, routes as created): ENOENT naming the first missing
  // piece, or the kernel's error. Changes nothing.
  Status checkNetwork(uint32_t id);
  // The node's health endpoint (like cilium-health's): labels {reserved:health},
  // identity 4, namespace "". Created once; restored like any endpoint.
  Result<Endpoint> ensureHealthEndpoint();
  const Endpoint* healthEndpoint() const;
  // Removes every trace of the endpoint (maps, CT entries, veth, netns, route, state file).
  // Every step is attempted; when one fails the first error is returned and
  // the endpoint stays listed in state "disconnecting" with its state file,
  // identity and address (regeneration skips it), so a retry finishes it.
  Status remove(uint32_t id);

  const Endpoint* find(uint32_t id) const;
  const Endpoint* findByName(const std::string& ns, const std::string& name) const;
  std::vector<const Endpoint*> list() const;
  // Changes whenever an endpoint appears or goes, or an endpoint's identity
  // changes (the IP -> identity map that the L7 proxy needs). Callers compare
  // it with the value they last acted on: O(1) instead of walking list().
  uint64_t generation() const { return generation_; }

  // Labels of a Kubernetes namespace (`membrane namespace label`). They are
  // part of the identity of every pod in it (Cilium's
  // k8s:io.cilium.k8s.namespace.labels.<k>=<v>), so changing them moves those
  // pods to new identities and re-realizes policy. Persisted.
  // kubernetes.io/metadata.name is derived from the name, not stored: EINVAL
  // if given with another value (namespaceLabelsToStore), nothing changes.
  // All or nothing: on any failure (identity, ipcache, files, regeneration)
  // every pod keeps its identity, the ipcache, state files, namespaces.json
  // and generation() are as before, and the previous policy is realized again.
  Status setNamespaceLabels(const std::string& ns, const labels::LabelSet& ns_labels);
  // Each namespace's stored labels (the derived name label not included:
  // namespaceLabelsJson adds it).
  std::map<std::string, labels::LabelSet> namespaces() const;

  // Per-endpoint PolicyAuditMode (std::nullopt = follow --policy-audit-mode);
  // re-realizes that endpoint's flags and persists the choice.
  Status setAuditMode(uint32_t id, std::optional<bool> audit);

  // Recomputes every endpoint's policy and writes the map differences. An
  // endpoint whose write fails is left "not-ready" (its maps partly updated),
  // the others are realized; the first error is returned, and the next call
  // converges.
  Result<RegenerationStats> regenerateAll();
  // regenerateAll() as a run of Cilium's policy update trigger: because
  // policy (reason metrics::kTriggerPolicyAdded/Deleted) or identities
  // (metrics::kTriggerIdentities) changed. Counts
  // cilium_triggers_policy_update_total{reason} and times the run
  // (cilium_triggers_policy_update_call_duration_seconds; folds 0: every
  // request runs at once, none is merged); an identity change's run is also
  // cilium_policy_incremental_update_duration.
  Result<RegenerationStats> triggerPolicyUpdate(std::string_view reason);
  // Retries regenerateAll() while an endpoint is not-ready (a write failed),
  // so that it converges without waiting for the next policy change. Runs at
  // once the first time, then backs off after each failure (1 s, doubling to
  // 30 s; `now` is the caller's steady clock). Returns how many endpoints a
  // run realized, 0 when nothing ran (none not-ready, or backing off), or
  // the run's error.
  Result<size_t> retryNotReady(std::chrono::steady_clock::time_point now);

  // Policy hold: the agent could not load a stored policy on start, so the
  // policy set is incomplete. While `reason` is non-empty no endpoint is
  // realized from it: regeneration leaves every existing endpoint's policy
  // and flags as the kernel holds them (restored endpoints are re-attached
  // only), and create(), setAuditMode() and setNamespaceLabels() fail with
  // EAGAIN and the reason. An empty reason lifts the hold (the caller then
  // calls regenerateAll()).
  void setPolicyHold(std::string reason) { policy_hold_ = std::move(reason); }
  const std::string& policyHold() const { return policy_hold_; }

  // Known identities, reserved ones included (for `identity list` and policy resolution).
  std::vector<identity::Identity> identities() const;

  // Deletes every endpoint and the host-side objects (membraned cleanup).
  Status removeAll();

  const ManagerConfig& config() const { return cfg_; }
  // Every pod's gateway (host order): the pod CIDR's first address.
  uint32_t gateway() const { return ipam_.gateway(); }
  // Every identity policy resolution selects from (allocated, reserved, CIDR);
  // valid until the next endpoint or policy change.
  std::vector<identity::IdentityRef> identityRefs() const { return allRefs(); }
  // Identity labels a pod with these user labels would have in namespace ns.
  labels::LabelSet podLabels(const std::string& ns, const labels::LabelSet& user) const { return labelsFor(ns, user); }

 private:
  // A runtime's container (createForContainer): where its pod network goes.
  struct Adoption {
    CniAttachment cni;
    std::string netns_path;
  };
  Result<Endpoint> createEndpoint(const std::string& name, const std::string& ns, const labels::LabelSet& user_labels,
                                  bool health, const std::vector<policy::NamedPort>& named_ports = {},
                                  const Adoption* adopt = nullptr);
  // The pod network spec of an endpoint (its own netns, or the runtime's).
  kernel::PodNetworkSpec podNetworkSpec(const Endpoint& ep) const;
  // Peers' named ports per identity (union over endpoints), plus `extra`'s
  // (an endpoint being created, not yet in eps_).
  std::map<uint32_t, std::vector<policy::NamedPort>> namedPortsByIdentity(const Endpoint* extra = nullptr) const;
  // Endpoints with the same identity labels resolve to the same policy: one
  // regenerateAll() resolves each distinct label set once (cache per call).
  // The key includes the endpoint's own named ports (ingress named ports resolve against them).
  // Peer selections (which identities each peer rule selects) are shared by all of them.
  struct ResolveCache {
    std::map<std::pair<labels::LabelSet, std::vector<policy::NamedPort>>, policy::EndpointPolicy> by_subject;
    policy::SelectionCache selections;
  };
  Status regenerate(Endpoint& ep, const std::vector<identity::IdentityRef>& refs,
                    const std::map<uint32_t, std::vector<policy::NamedPort>>& peer_ports, ResolveCache* cache = nullptr);
  Status writeState(const Endpoint& ep);
  // *transient: the pod network could not be inspected (an error other than ENOENT).
  Status restoreOne(Endpoint ep, bool* transient);
  Status syncHostIpcache();
  void updateMetrics();
  uint32_t nextId() const;
  uint32_t endpointFlags(const Endpoint& ep) const;
  
  ManagerConfig cfg_;
  kernel::DatapathMaps& dp_;
  kernel::PodNetworks& net_;
  identity::IdentityAllocator& ids_;
  const policy::Repository& repo_;
  metrics::AgentMetrics& metrics_;
  StateFiles& files_;
  Ipam ipam_;
  std::map<uint32_t, Endpoint> eps_;
  // Endpoints read from a state file that init() could not restore (kept for removeAll).
  std::map<uint32_t, Endpoint> unrestored_;
  uint64_t generation_ = 0;  // see generation()
  // What the endpoint maps hold per endpoint id, as last written by this
  // manager, so a regeneration that changes nothing writes nothing. Only a
  // cache: an entry must go whenever the map entry may be gone (remove, a
  // rolled-back create), or a later write of the same id is skipped and the
  // endpoint has no map entry (drop 203). The whole record is compared, so a
  // new veth (ifindex, MACs) under a reused id and identity is written anyway.
  struct WrittenEndpoint {
    uint32_t identity = 0;
    uint32_t flags = 0;
    uint32_t ifindex = 0;
    uint32_t ipv4 = 0;  // host byte order
    std::array<uint8_t, 6> mac{};
    std::array<uint8_t, 6> host_mac{};
    bool operator==(const WrittenEndpoint&) const = default;
  };
  std::map<uint32_t, WrittenEndpoint> written_ep_;
  std::map<std::string, labels::LabelSet> ns_labels_;  // namespace -> its labels (user-given)
  std::string policy_hold_;
  // retryNotReady()'s back-off: no run before next_retry_; backoff_ 0 = none yet.
  std::chrono::steady_clock::time_point next_retry_{};
  std::chrono::milliseconds retry_backoff_{0};  // see setPolicyHold()
  Status heldError(const std::string& what) const;
  // CIDR identities (Cilium's local scope, 1<<24 | n): one per prefix that a
  // policy mentions, labelled with every covering prefix (cidr:…) and
  // reserved:world, and written to the ipcache LPM as prefix -> identity.
  struct CidrIdentity {
    uint32_t id = 0;
    labels::LabelSet labels;
  };
  std::map<std::string, CidrIdentity> cidr_ids_;
  Status syncCidrIdentities();
  bool cidr_reconciled_ = false;  // stale CIDR entries of a previous run removed
  // Every identity policy resolution selects from: allocated, reserved, CIDR.
  std::vector<identity::IdentityRef> allRefs() const;
  labels::LabelSet labelsFor(const std::string& ns, const labels::LabelSet& user) const;
  Status saveNamespaces();
};

}  // namespace membrane::endpoint
