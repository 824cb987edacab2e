// Agent metrics under Cilium's names, types, labels and label values, so that
// dashboards and alerts written for Cilium keep working (DESIGN.md §1, §6;
// reference/cilium-facts.md §1). docs/metrics.md describes every metric.
//
// AgentMetrics declares each metric once. Other modules update it through the
// typed methods below; the datapath counters and map pressure are not pushed
// but pulled from registered sources at scrape time, so /metrics shows exactly
// what the kernel counted. MetricsServer serves the result on /metrics.
//
// Thread-safety: every AgentMetrics method may be called concurrently from any
// thread, including while a scrape is running. Sources are called on the
// scraping thread (civetweb worker, /v1/metrics handler, tests).
//
// prometheus-cpp and civetweb stay out of this header (pimpl): many modules
// include it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "membrane/result.h"

namespace membrane::metrics {

// One (reason, direction) row of the per-CPU metrics map, already summed over
// CPUs. reason 0 = forwarded; otherwise a Cilium drop reason code
// (bpf/shared/datapath.h). direction is an mb_direction value.
struct DatapathCounter {
  uint8_t reason = 0;
  uint8_t direction = 0;
  uint64_t packets = 0;
  uint64_t bytes = 0;
};

// Fill ratio (entries / max entries, 0..1) of one BPF map, and its size.
struct MapPressure {
  std::string map_name;
  double ratio = 0;
  uint64_t max_entries = 0;  // cilium_bpf_map_capacity{map_group=map_name}; 0 = not exported
};

// Memory the kernel charges for every BPF map and program on the system
// (what `bpftool map|prog show` reports as bytes_memlock, summed).
struct BpfMemory {
  uint64_t maps_bytes = 0;
  uint64_t progs_bytes = 0;
};
using BpfMemorySource = std::function<Result<std::vector<BpfMemory>>()>;

// Called at every scrape, on the scraping thread, possibly by two concurrent
// scrapes at once; must be quick and must not call back into AgentMetrics.
// An Error (or an exception) makes the scrape omit the families it feeds
// (logged once per failure streak); the rest of the scrape is unaffected.
using DatapathSource = std::function<Result<std::vector<DatapathCounter>>()>;

// The L7 proxy's counters (membrane-proxy GET /v1/stats), read at scrape
// time: the proxy keeps counting across agent restarts, the agent only reads.
struct L7UpstreamHistogram {
  std::string error;  // "" answered; connect_failed, upstream_reset, timeout
  std::string protocol_l7 = "http";
  std::string scope;  // upstreamTime | totalTime
  std::vector<std::pair<double, uint64_t>> buckets;  // (le, cumulative count), ascending, without +Inf
  uint64_t count = 0;
  double sum = 0;
};
struct L7Stats {
  uint64_t received = 0, forwarded = 0, denied = 0, parse_errors = 0;
  uint64_t redirects_http = 0;
  std::vector<L7UpstreamHistogram> upstream_reply_seconds;
};
// Feeds cilium_policy_l7_{received,forwarded,denied,parse_errors}_total,
// cilium_policy_l7_total{rule,proxy_type="http"}, cilium_proxy_redirects{protocol_l7}
// and cilium_proxy_upstream_reply_seconds{error,protocol_l7,scope}. One row.
using L7Source = std::function<Result<std::vector<L7Stats>>()>;
using MapPressureSource = std::function<Result<std::vector<MapPressure>>()>;

// Cumulative count of BPF map syscalls (cilium_bpf_map_ops_total).
struct MapOps {
  std::string map_name;
  std::string operation;  // update, delete, lookup, getNextKey
  std::string outcome;    // success, fail
  uint64_t count = 0;
};
using MapOpsSource = std::function<Result<std::vector<MapOps>>()>;

// One exposed sample, flattened as in the text format: histogram series appear
// as <name>_bucket (with an `le` label), <name>_sum and <name>_count; counter
// names already end in _total. Used by GET /v1/metrics and `membrane metrics list`.
struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;

  bool operator==(const Sample&) const = default;
};

// Label values of the snapshot gauges that are always exposed (0 when absent
// from a snapshot), in Cilium's spelling.
inline constexpr std::string_view kEndpointStates[] = {
    "creating", "waiting-for-identity", "not-ready", "waiting-to-regenerate", "regenerating",
    "restoring", "ready", "disconnecting", "disconnected", "invalid"};
inline constexpr std::string_view kEnforcementStates[] = {
    "none", "ingress", "egress", "both", "audit-ingress", "audit-egress", "audit-both"};
inline constexpr std::string_view kIdentityTypes[] = {"node_local", "cluster_local",
                                                      "remote_node"};
// cilium_identity_label_sources{source}: the sources membrane's identities use.
inline constexpr std::string_view kIdentityLabelSources[] = {"k8s", "reserved", "cidr"};
// cilium_policy_selector_match_count_max{class}: Cilium's selector classes.
inline constexpr std::string_view kSelectorClasses[] = {"world", "cluster", "fqdn", "other"};
// cilium_errors_warnings_total{level}: Cilium's level names since it logs
// through slog (1.18: "WARN", "ERROR"; logrus-era agents wrote "warning",
// "error").
inline constexpr std::string_view kLogLevelWarning = "WARN";
inline constexpr std::string_view kLogLevelError = "ERROR";
// cilium_policy_implementation_delay{source} of a change made over the API
// (Cilium's source.LocalAPI).
inline constexpr std::string_view kPolicySourceApi = "api";
// cilium_nodes_all_events_received_total{event_type}: Cilium's node manager
// counts a node added or updated as "add", a removal as "delete".
inline constexpr std::string_view kNodeEventAdd = "add";
inline constexpr std::string_view kNodeEventDelete = "delete";
// cilium_triggers_policy_update_total{reason}: Cilium's reason strings.
inline constexpr std::string_view kTriggerPolicyAdded = "policy rules added";
inline constexpr std::string_view kTriggerPolicyDeleted = "policy rules deleted";
inline constexpr std::string_view kTriggerIdentities = "one or more identities created or deleted";
// "/v1/endpoint/1204" -> "/v1/endpoint" (cilium_agent_api_process_time_seconds{path}).
std::string apiShortPath(std::string_view path);

// `family` / `protocol` labels of the conntrack GC metrics.
enum class CtFamily { Ipv4, Ipv6 };          // "ipv4", "ipv6"
enum class CtProtocol { Tcp, NonTcp };       // "TCP", "non-TCP"

// cilium_version labels. Defaults: the build's version and git revision, and
// Go's GOOS/GOARCH of the build ("linux/amd64", "linux/arm64", ...).
struct BuildInfo {
  std::string version;
  std::string revision;
  std::string arch;
  static BuildInfo current();
};

class AgentMetrics {
 public:
  explicit AgentMetrics(BuildInfo build = BuildInfo::current());
  ~AgentMetrics();
  AgentMetrics(const AgentMetrics&) = delete;
  AgentMetrics& operator=(const AgentMetrics&) = delete;

  // --- endpoints -----------------------------------------------------------
  // cilium_endpoint_count.
  void setEndpointCount(int64_t n);
  // cilium_endpoint_regenerating.
  void setEndpointsRegenerating(int64_t n);
  // cilium_endpoint_state{endpoint_state}: replaces the whole snapshot. Every
  // state of kEndpointStates is exposed, 0 when absent; a state not in that
  // list is exposed as given (and stays, at 0, once it disappears).
  void setEndpointStates(const std::map<std::string, int>& count_by_state);
  // cilium_endpoint_regenerations_total{outcome="success"|"fail"}.
  void recordEndpointRegeneration(bool success);
  // cilium_endpoint_regeneration_time_stats_seconds{scope,status="success"|"failure"}.
  // scope: Cilium's scope names, e.g. "total", "policyCalculation", "mapSync".
  void observeRegenerationTime(std::string_view scope, bool success, double seconds);

  // --- policy --------------------------------------------------------------
  // cilium_policy: number of policy rules loaded.
  void setPolicyCount(int64_t n);
  // cilium_policy_max_revision.
  void setPolicyMaxRevision(uint64_t revision);
  // membrane_policy_held: stored policy imports that no longer load on start
  // (Agent::loadPolicyState); while > 0 enforcement is held.
  void setPolicyHeld(int64_t n);
  // cilium_policy_change_total{outcome="success"|"fail"}; a failure also
  // counts cilium_policy_import_errors_total (as Cilium does for imports).
  void recordPolicyChange(bool success);
  // cilium_policy_implementation_delay{source}: seconds from a policy change
  // arriving (source kPolicySourceApi, "api", for the REST API) to its map entries being
  // written for every endpoint.
  void observePolicyImplementationDelay(std::string_view source, double seconds);
  // cilium_policy_endpoint_enforcement_status{enforcement}: whole snapshot,
  // like setEndpointStates (known values: kEnforcementStates).
  void setEnforcementStatus(const std::map<std::string, int>& count_by_enforcement);

  // --- identities ----------------------------------------------------------
  // cilium_identity{type}: whole snapshot (known values: kIdentityTypes).
  void setIdentities(const std::map<std::string, int>& count_by_type);

  // --- health (set by the health module; 0 until then) ----------------------
  void setUnreachableNodes(int64_t n);
  void setUnreachableHealthEndpoints(int64_t n);
  // cilium_node_health_connectivity_status{type="node"|"endpoint",status=
  // "reachable"|"unreachable"|"unknown"}: number of nodes in each status.
  void setNodeConnectivityStatus(std::string_view type, int reachable, int unreachable, int unknown);
  // cilium_node_health_connectivity_latency_seconds{type,protocol="icmp"|"http",address_type="primary"}.
  void observeNodeConnectivityLatency(std::string_view type, std::string_view protocol, double seconds);

  // --- conntrack GC --------------------------------------------------------
  // One GC pass: cilium_datapath_conntrack_gc_runs_total and
  // cilium_datapath_conntrack_gc_duration_seconds, status "completed" or
  // "uncompleted" (Cilium's values), and
  // cilium_datapath_conntrack_gc_entries{status="alive"|"deleted"} set to the
  // pass's result.
  void recordConntrackGc(CtFamily family, CtProtocol protocol, bool completed, double seconds,
                         uint64_t alive, uint64_t deleted);
  // The map walk of one GC pass:
  // cilium_datapath_conntrack_dump_resets_total{area="conntrack",
  // name="dump_interrupts",family} += restarts (an entry vanished under the
  // iterator and the walk continued from wherever the kernel put it, possibly
  // the map's start), and
  // cilium_datapath_conntrack_gc_key_fallbacks_total{family,protocol} +=
  // fallbacks (the walk went back to the previous key instead). Adding 0
  // creates the series, so both exist from the first pass.
  void recordConntrackWalk(CtFamily family, uint64_t restarts, uint64_t tcp_fallbacks, uint64_t other_fallbacks);

  // --- the agent itself -----------------------------------------------------
  // cilium_agent_bootstrap_seconds{scope,outcome="success"|"fail"}: how long
  // one phase of the agent's start took (Cilium's scope names: "earlyInit",
  // "bpfBase", "restore", "workloadsInit", "proxyStart", "healthCheck",
  // "initAPI", "overall").
  void setBootstrapSeconds(std::string_view scope, bool success, double seconds);
  // cilium_agent_api_process_time_seconds{path,method,return_code}: one API
  // call answered. path is cut after its second component, as Cilium cuts it
  // ("/v1/endpoint/1204" -> "/v1/endpoint"), so ids never become series.
  void observeApiCall(std::string_view path, std::string_view method, int return_code, double seconds);
  // cilium_errors_warnings_total{level=kLogLevelWarning|kLogLevelError,subsystem}:
  // one log line at that level.
  void recordLogLine(std::string_view level, std::string_view subsystem);
  // One run of a named periodic task ("controller", as Cilium calls them):
  // cilium_controllers_runs_total{status="success"|"failure"},
  // cilium_controllers_runs_duration_seconds{status}, and
  // cilium_controllers_failing = controllers whose last run failed.
  void recordControllerRun(std::string_view controller, bool success, double seconds);
  // The controllers a start registers, so cilium_controllers_failing counts
  // from 0 (not only after a first run).
  void declareController(std::string_view controller);

  // --- nodes -----------------------------------------------------------------
  // cilium_nodes_all_num: nodes this agent knows (itself included).
  void setNodes(int64_t n);
  // cilium_nodes_all_events_received_total{event_type=kNodeEventAdd|kNodeEventDelete,source}:
  // one node event (source "local" for the agent's own node).
  void recordNodeEvent(std::string_view event_type, std::string_view source);

  // --- services --------------------------------------------------------------
  // cilium_services_events_total{action="update"|"delete"}: one service
  // frontend written to or removed from the datapath. Both always present.
  void recordServiceEvent(std::string_view action);
  // cilium_service_implementation_delay{action="update"|"delete"}: seconds
  // from the change of a service or of its backends (a manifest applied, a
  // backend pod becoming ready or going away) to its datapath entries being
  // written. Both actions always present.
  void observeServiceImplementationDelay(std::string_view action, double seconds);

  // --- policy updates caused by identities and the policy trigger ------------
  // cilium_policy_incremental_update_duration{scope="global"}: seconds for a
  // newly learned (or vanished) identity to reach every endpoint's policy
  // map. Always present.
  void observePolicyIncrementalUpdate(double seconds);
  // cilium_policy_selector_match_count_max{class}: the most identities one
  // selector of the loaded policy selects, per class (kSelectorClasses,
  // always present); whole snapshot.
  void setSelectorMatchCountMax(const std::map<std::string, int>& max_by_class);
  // cilium_triggers_policy_update_total{reason}: one request to regenerate
  // every endpoint because policy or identities changed (Cilium's reason
  // strings, e.g. "policy rules added").
  void recordPolicyUpdateTrigger(std::string_view reason);
  // One run of that regeneration:
  // cilium_triggers_policy_update_call_duration_seconds{type="duration"} its
  // run time, {type="latency"} the time from the request to the run's start,
  // and cilium_triggers_policy_update_folds = requests merged into the run
  // beyond the first (Cilium's trigger semantics).
  void observePolicyUpdateRun(double duration_seconds, double latency_seconds, int folds);

  // --- ipcache -----------------------------------------------------------------
  // cilium_ipcache_events_total{type="upsert"|"delete"}: an ipcache entry
  // written or removed. cilium_ipcache_errors_total{type,error}: a write
  // that did not take effect, with Cilium's error values ("invalid_prefix",
  // "no_such_prefix", ...).
  void recordIpcacheEvent(std::string_view type);
  void recordIpcacheError(std::string_view type, std::string_view error);

  // --- BPF syscalls (off by default: enableMetrics) ----------------------------
  // True when cilium_bpf_syscall_duration_seconds is enabled; callers skip
  // timing otherwise, so the default costs nothing.
  bool bpfSyscallDurationEnabled() const;
  // cilium_bpf_syscall_duration_seconds{operation,outcome="success"|"fail"};
  // ignored unless enabled.
  void observeBpfSyscall(std::string_view operation, bool success, double seconds);

  // --- IPAM ----------------------------------------------------------------
  // cilium_ip_addresses{family="ipv4"}: allocated addresses (the pods' and
  // the node's router address on the host device, as Cilium counts
  // cilium_host's); cilium_ipam_capacity{family="ipv4"}: addresses the pod
  // CIDR can hand out (all but network and broadcast).
  void setIpv4Addresses(int64_t allocated, int64_t capacity);
  // cilium_identity_label_sources{source}: identities with at least one
  // label of that source ("k8s", "reserved", "cidr", ...); whole snapshot.
  void setIdentityLabelSources(const std::map<std::string, int>& count_by_source);

  // --- scrape-time sources ---------------------------------------------------
  // Feeds cilium_drop_count_total / cilium_drop_bytes_total{reason,direction}
  // and cilium_forward_count_total / cilium_forward_bytes_total{direction}.
  // Replaces any previous source; an empty function unregisters.
  void registerDatapathSource(DatapathSource source);
  // Feeds cilium_bpf_map_pressure{map_name} and cilium_bpf_map_capacity{map_group}
  // (maps of 65536 entries are not emitted, as Cilium does). Same rules.
  void registerMapPressureSource(MapPressureSource source);
  // Feeds cilium_bpf_maps_virtual_memory_max_bytes and
  // cilium_bpf_progs_virtual_memory_max_bytes (one row). Same rules.
  void registerBpfMemorySource(BpfMemorySource source);
  // Feeds cilium_bpf_map_ops_total{map_name,operation,outcome}. Same rules.
  void registerMapOpsSource(MapOpsSource source);
  // Feeds the L7 families (see L7Source). Same rules.
  void registerL7Source(L7Source source);

  // --- legacy names ------------------------------------------------------------
  // Also expose the Cilium <= 1.4 names of renamed series (grafana.com
  // dashboard 6658, old alert rules), copied from the modern series at every
  // scrape: cilium_policy_count (= cilium_policy), cilium_policy_import_errors
  // (= cilium_policy_import_errors_total), cilium_endpoint_regenerations{outcome}
  // (= cilium_endpoint_regenerations_total), cilium_identity_count (the sum of
  // cilium_identity). The old counters had no _total suffix; they are exposed
  // untyped so that `promtool check metrics` stays clean (PromQL reads them alike).
  // Also cilium_datapath_errors_total{area,name,family} (Cilium <= 1.9, dashboard
  // 6658's "Datapath Errors"), which counted the same conntrack dump
  // interrupts under the same labels: a copy of
  // cilium_datapath_conntrack_dump_resets_total.
  void setLegacyNames(bool on);

  // --- --metrics: Cilium's list of metrics to enable or disable ----------------
  // Each item is "+NAME" (enable a metric that is off by default: only
  // cilium_bpf_syscall_duration_seconds is) or "-NAME" (leave that family out
  // of every scrape); items may also be separated by spaces or commas within
  // one string, as Helm passes them. NAME is a family name as exposed
  // (histograms without _bucket/_sum/_count). Fails with EINVAL, changing
  // nothing, on an item without +/- or a name membrane does not export.
  // Call before the metrics are served.
  Status enableMetrics(const std::vector<std::string>& items);
  // Every family name membrane can expose (legacy names and off-by-default
  // ones included), sorted: what --metrics accepts.
  static const std::vector<std::string>& knownFamilies();

  // --- output ----------------------------------------------------------------
  // The /metrics body (Prometheus text format 0.0.4): every family, sorted by
  // name, including cilium_process_* read from /proc/self. Families without a
  // sample are left out, as Prometheus' Go client does.
  std::string renderText() const;
  // The same samples, flattened (see Sample), with families and series in
  // the same order; a histogram series gives its _bucket samples (le
  // ascending, ending with "+Inf"), then _sum, then _count.
  std::vector<Sample> samples() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// HTTP server for GET /metrics (civetweb, the server prometheus-cpp's Exposer
// uses, with our own handler so that the body is exactly renderText()).
// Serves until destroyed; `metrics` must outlive it. Destruction stops the
// civetweb threads and can take up to 2 s (its accept loop polls every 2 s).
// Any path other than /metrics gets 404.
class MetricsServer {
 public:
  // addr: ":9962" (all interfaces), "127.0.0.1:9962", port 0 = any free port.
  // Returns nullptr (not an error) for "" (metrics disabled). Fails cleanly,
  // without throwing, on a malformed address or a port in use.
  static Result<std::unique_ptr<MetricsServer>> start(const std::string& addr,
                                                      AgentMetrics& metrics);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // The TCP port actually listened on (useful with port 0).
  int port() const;

  struct Impl;

 private:
  explicit MetricsServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace membrane::metrics
