#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <utility>

#include <spdlog/spdlog.h>

#include "membrane/metrics.h"
#include "src/metrics/collectors.h"

#ifndef MEMBRANE_VERSION_STRING
#define MEMBRANE_VERSION_STRING "unknown"
#endif
#ifndef MEMBRANE_REVISION_STRING
#define MEMBRANE_REVISION_STRING "unknown"
#endif

namespace membrane::metrics {
namespace {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;
using prometheus::MetricFamily;

// Cilium's cilium_version{arch}: Go's GOOS/GOARCH ("linux/amd64").
constexpr const char* goArch() {
#if defined(__x86_64__)
  return "linux/amd64";
#elif defined(__aarch64__)
  return "linux/arm64";
#elif defined(__i386__)
  return "linux/386";
#elif defined(__arm__)
  return "linux/arm";
#elif defined(__riscv) && __riscv_xlen == 64
  return "linux/riscv64";
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  return "linux/ppc64le";
#elif defined(__s390x__)
  return "linux/s390x";
#else
  return "linux/unknown";
#endif
}

// Cilium: ExponentialBuckets(10e-6, 10, 8), written as literals so that the
// `le` values are exact decimal strings (1e-05 … 100).
const Histogram::BucketBoundaries kRegenerationBuckets = {1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100};
// Go's prometheus.DefBuckets (Cilium's conntrack GC histogram sets none).
// cilium_node_health_connectivity_latency_seconds: 1 ms doubling up to ~8 s.
const Histogram::BucketBoundaries kHealthLatencyBuckets = {.001, .002, .004, .008, .016, .032, .064,
                                                           .128, .256, .512, 1.024, 2.048, 4.096, 8.192};
const Histogram::BucketBoundaries kDefaultBuckets = {.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};
// cilium_bpf_syscall_duration_seconds: a map syscall takes microseconds, so
// Prometheus' default buckets (5 ms and up) would put every one in the first;
// 1 µs to ~1 s in factors of 4 instead.
const Histogram::BucketBoundaries kSyscallBuckets = {1e-6,      4e-6,      1.6e-5,   6.4e-5,  2.56e-4,
                                                     1.024e-3,  4.096e-3,  1.6384e-2, 6.5536e-2, 2.62144e-1,
                                                     1.048576};

constexpr const char* kSyscallDurationFamily = "cilium_bpf_syscall_duration_seconds";

// Every family name a scrape can contain (see AgentMetrics::knownFamilies).
// A unit test renders a fully populated scrape and checks each family is here.
const std::vector<std::string> kKnownFamilies = [] {
  std::vector<std::string> v = {
      "cilium_agent_api_process_time_seconds", "cilium_agent_bootstrap_seconds", "cilium_bpf_map_capacity",
      "cilium_bpf_map_ops_total", "cilium_bpf_map_pressure", "cilium_bpf_maps_virtual_memory_max_bytes",
      "cilium_bpf_progs_virtual_memory_max_bytes", kSyscallDurationFamily, "cilium_controllers_failing",
      "cilium_controllers_runs_duration_seconds", "cilium_controllers_runs_total",
      "cilium_datapath_conntrack_dump_resets_total", "cilium_datapath_conntrack_gc_duration_seconds",
      "cilium_datapath_conntrack_gc_entries", "cilium_datapath_conntrack_gc_key_fallbacks_total",
      "cilium_datapath_conntrack_gc_runs_total", "cilium_datapath_errors_total", "cilium_drop_bytes_total",
      "cilium_drop_count_total", "cilium_endpoint", "cilium_endpoint_count", "cilium_endpoint_regenerating",
      "cilium_endpoint_regeneration_time_stats_seconds", "cilium_endpoint_regenerations",
      "cilium_endpoint_regenerations_total", "cilium_endpoint_state", "cilium_errors_warnings_total",
      "cilium_forward_bytes_total", "cilium_forward_count_total", "cilium_identity", "cilium_identity_count",
      "cilium_identity_label_sources", "cilium_ip_addresses", "cilium_ipam_capacity", "cilium_ipcache_errors_total",
      "cilium_ipcache_events_total", "cilium_node_health_connectivity_latency_seconds",
      "cilium_node_health_connectivity_status", "cilium_nodes_all_events_received_total", "cilium_nodes_all_num",
      "cilium_policy", "cilium_policy_change_total", "cilium_policy_count",
      "cilium_policy_endpoint_enforcement_status", "cilium_policy_implementation_delay",
      "cilium_policy_import_errors", "cilium_policy_import_errors_total", "cilium_policy_incremental_update_duration",
      "cilium_policy_l7_denied_total", "cilium_policy_l7_forwarded_total", "cilium_policy_l7_parse_errors_total",
      "cilium_policy_l7_received_total", "cilium_policy_l7_total", "cilium_policy_max_revision",
      "cilium_policy_selector_match_count_max", "cilium_process_cpu_seconds_total", "cilium_process_max_fds",
      "cilium_process_open_fds", "cilium_process_resident_memory_bytes", "cilium_process_start_time_seconds",
      "cilium_process_virtual_memory_bytes", "cilium_proxy_redirects", "cilium_proxy_upstream_reply_seconds",
      "cilium_service_implementation_delay", "cilium_services_events_total",
      "cilium_triggers_policy_update_call_duration_seconds", "cilium_triggers_policy_update_folds",
      "cilium_triggers_policy_update_total", "cilium_unreachable_health_endpoints", "cilium_unreachable_nodes",
      "cilium_version", "membrane_policy_held"};
  std::sort(v.begin(), v.end());
  return v;
}();

Family<Gauge>& gauge(prometheus::Registry& r, const char* name, const char* help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r);
}
Family<Counter>& counter(prometheus::Registry& r, const char* name, const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r);
}
Family<Histogram>& histogram(prometheus::Registry& r, const char* name, const char* help) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(r);
}

// A gauge vector set from whole snapshots: values missing from a snapshot go
// to 0 rather than disappearing, so `sum by (label)` panels stay continuous.
class SnapshotGauge {
 public:
  template <typename Range>
  SnapshotGauge(Family<Gauge>& family, std::string label, const Range& known)
      : family_(family), label_(std::move(label)) {
    for (auto v : known) child(std::string(v));
  }

  void set(const std::map<std::string, int>& snapshot) {
    // One lock so two concurrent snapshots never interleave into a mix.
    std::lock_guard lock(mu_);
    for (auto& [value, g] : children_) {
      auto it = snapshot.find(value);
      g->Set(it == snapshot.end() ? 0 : it->second);
    }
    for (const auto& [value, n] : snapshot)
      if (!children_.count(value)) child(value).Set(n);
  }

 private:
  Gauge& child(const std::string& value) {
    Gauge& g = family_.Add({{label_, value}});
    children_.emplace(value, &g);
    return g;
  }

  Family<Gauge>& family_;
  std::string label_;
  std::mutex mu_;
  std::map<std::string, Gauge*> children_;
};

const char* ctFamily(CtFamily f) { return f == CtFamily::Ipv4 ? "ipv4" : "ipv6"; }
const char* ctProtocol(CtProtocol p) { return p == CtProtocol::Tcp ? "TCP" : "non-TCP"; }

// A scrape-time source and its failure streak.
template <typename Row>
class PolledSource {
 public:
  using Fn = std::function<Result<std::vector<Row>>()>;

  explicit PolledSource(const char* what) : what_(what) {}

  void set(Fn fn) {
    std::lock_guard lock(mu_);
    fn_ = fn ? std::make_shared<Fn>(std::move(fn)) : nullptr;
    failing_ = false;
  }

  // nullopt when unregistered or failing: the caller emits nothing.
  std::optional<std::vector<Row>> poll() {
    std::shared_ptr<Fn> fn;
    {
      std::lock_guard lock(mu_);
      fn = fn_;
    }
    if (!fn) return std::nullopt;
    // Called without the lock: a slow kernel read must not block
    // registration, and the source may run for two scrapes at once.
    std::optional<Error> err;
    try {
      auto r = (*fn)();
      if (r.ok()) {
        if (failing_.exchange(false)) spdlog::info("metrics: {} readable again", what_);
        return std::move(r).value();
      }
      err = r.error();
    } catch (const std::exception& e) {
      // A scrape never crashes the agent, whatever the source does.
      err = Error(EIO, e.what());
    }
    if (!failing_.exchange(true))
      spdlog::warn("metrics: {} left out of scrapes until readable again: {}", what_, err->message);
    return std::nullopt;
  }

 private:
  const char* what_;
  std::mutex mu_;
  std::shared_ptr<Fn> fn_;
  std::atomic<bool> failing_{false};
};

}  // namespace

BuildInfo BuildInfo::current() { return {MEMBRANE_VERSION_STRING, MEMBRANE_REVISION_STRING, goArch()}; }

struct AgentMetrics::Impl {
  explicit Impl(const BuildInfo& build)
      : endpoint_count(gauge(registry, "cilium_endpoint_count", "Number of endpoints managed by this agent")
                           .Add({})),
        endpoint(gauge(registry, "cilium_endpoint", "Number of endpoints managed by this agent").Add({})),
        endpoint_regenerating(gauge(registry, "cilium_endpoint_regenerating",
                                    "Number of endpoints currently regenerating. Deprecated. Use "
                                    "endpoint_state with proper labels instead")
                                  .Add({})),
        endpoint_state(gauge(registry, "cilium_endpoint_state",
                             "Count of all endpoints, tagged by different endpoint states"),
                       "endpoint_state", kEndpointStates),
        regenerations(counter(registry, "cilium_endpoint_regenerations_total",
                              "Count of all endpoint regenerations that have completed, tagged by outcome")),
        regenerations_success(regenerations.Add({{"outcome", "success"}})),
        regenerations_fail(regenerations.Add({{"outcome", "fail"}})),
        regeneration_time(histogram(registry, "cilium_endpoint_regeneration_time_stats_seconds",
                                    "Endpoint regeneration time stats labeled by the scope")),
        policy(gauge(registry, "cilium_policy", "Number of policies currently loaded").Add({})),
        policy_max_revision(
            gauge(registry, "cilium_policy_max_revision", "Highest policy revision number in the agent").Add({})),
        policy_held(gauge(registry, "membrane_policy_held",
                          "Stored policy imports that no longer load; while non-zero, policy enforcement is held")
                        .Add({})),
        policy_change(counter(registry, "cilium_policy_change_total", "Number of policy changes by outcome")),
        policy_change_success(policy_change.Add({{"outcome", "success"}})),
        policy_change_failure(policy_change.Add({{"outcome", "fail"}})),
        policy_import_errors(counter(registry, "cilium_policy_import_errors_total",
                                     "Number of times a policy import has failed")
                                 .Add({})),
        enforcement(gauge(registry, "cilium_policy_endpoint_enforcement_status",
                          "Number of endpoints labeled by policy enforcement status"),
                    "enforcement", kEnforcementStates),
        identity(gauge(registry, "cilium_identity", "Number of identities currently allocated"), "type",
                 kIdentityTypes),
        unreachable_nodes(
            gauge(registry, "cilium_unreachable_nodes", "Number of nodes that cannot be reached").Add({})),
        unreachable_health_endpoints(gauge(registry, "cilium_unreachable_health_endpoints",
                                           "Number of health endpoints that cannot be reached")
                                         .Add({})),
        ct_gc_runs(counter(registry, "cilium_datapath_conntrack_gc_runs_total",
                           "Number of times that the conntrack garbage collector process was run labeled by "
                           "completion status")),
        ct_gc_entries(gauge(registry, "cilium_datapath_conntrack_gc_entries",
                            "The number of alive and deleted conntrack entries at the end of a garbage "
                            "collector run labeled by datapath family.")),
        node_connectivity_status(gauge(registry, "cilium_node_health_connectivity_status",
                                       "The number of endpoints with last observed status of both ICMP and "
                                       "HTTP connectivity between the current Cilium agent and other Cilium "
                                       "nodes")),
        node_connectivity_latency(histogram(registry, "cilium_node_health_connectivity_latency_seconds",
                                            "The histogram for last observed latency between the current Cilium "
                                            "agent and other Cilium nodes in seconds")),
        policy_implementation_delay(histogram(
            registry, "cilium_policy_implementation_delay",
            "Time between a policy change and it being fully deployed into the datapath")),
        ct_gc_duration(histogram(registry, "cilium_datapath_conntrack_gc_duration_seconds",
                                 "Duration in seconds of the garbage collector process labeled by datapath "
                                 "family and completion status")),
        bootstrap(gauge(registry, "cilium_agent_bootstrap_seconds", "Duration of bootstrap sequence")),
        api_process_time(histogram(registry, "cilium_agent_api_process_time_seconds",
                                   "Duration of processed API calls labeled by path, method and return code.")),
        errors_warnings(counter(registry, "cilium_errors_warnings_total",
                                "Number of total errors in cilium-agent instances")),
        controller_runs(counter(registry, "cilium_controllers_runs_total", "Number of times that a controller process was run labeled by completion status")),
        controller_duration(histogram(registry, "cilium_controllers_runs_duration_seconds",
                                      "Duration in seconds of the controller process labeled by completion status")),
        controllers_failing(gauge(registry, "cilium_controllers_failing", "Number of failing controllers").Add({})),
        ip_addresses(gauge(registry, "cilium_ip_addresses", "Number of allocated IP addresses")
                         .Add({{"family", "ipv4"}})),
        ipam_capacity(gauge(registry, "cilium_ipam_capacity", "Total number of IPs in the IPAM pool labeled by family")
                          .Add({{"family", "ipv4"}})),
        nodes_all(gauge(registry, "cilium_nodes_all_num", "Number of nodes managed").Add({})),
        service_events(counter(registry, "cilium_services_events_total", "Number of services events labeled by action type")),
        node_events(counter(registry, "cilium_nodes_all_events_received_total",
                            "Number of node events received")),
        identity_label_sources(gauge(registry, "cilium_identity_label_sources",
                                     "Number of identities which contain at least one label of the given label "
                                     "source"),
                               "source", kIdentityLabelSources),
        service_delay(histogram(registry, "cilium_service_implementation_delay",
                                "Duration in seconds to propagate the data plane programming of a service, its "
                                "network and endpoints from the time the service or the service pod was changed")),
        incremental_update(histogram(registry, "cilium_policy_incremental_update_duration",
                                     "The time taken for newly learned identities to be added to the policy system, "
                                     "including BPF policy maps")
                               .Add({{"scope", "global"}}, kRegenerationBuckets)),
        selector_match_max(gauge(registry, "cilium_policy_selector_match_count_max",
                                 "The maximum number of identities selected by a network policy selector"),
                           "class", kSelectorClasses),
        ct_dump_resets(counter(registry, "cilium_datapath_conntrack_dump_resets_total",
                               "Number of conntrack dump resets. Happens when a BPF entry gets removed while "
                               "dumping the map is in progress")),
        ct_key_fallbacks(counter(registry, "cilium_datapath_conntrack_gc_key_fallbacks_total",
                                 "Number of times a key fallback was needed when iterating over the BPF map")),
        ipcache_events(counter(registry, "cilium_ipcache_events_total", "Number of events interacting with the ipcache")),
        ipcache_errors(counter(registry, "cilium_ipcache_errors_total", "Number of errors interacting with the ipcache")),
        trigger_total(counter(registry, "cilium_triggers_policy_update_total",
                              "Total number of policy update trigger invocations labeled by reason")),
        trigger_folds(gauge(registry, "cilium_triggers_policy_update_folds", "Current number of folds").Add({})),
        trigger_duration(histogram(registry, "cilium_triggers_policy_update_call_duration_seconds",
                                   "Duration of policy update trigger")),
        syscall_duration(histogram(registry, kSyscallDurationFamily, "Duration of eBPF system call performed")) {
    for (const char* status : {"success", "failure"}) {
      controller_runs.Add({{"status", status}});
      controller_duration.Add({{"status", status}}, kDefaultBuckets);
    }
    for (auto level : {kLogLevelWarning, kLogLevelError})
      errors_warnings.Add({{"level", std::string(level)}, {"subsystem", "daemon"}});
    for (const char* action : {"update", "delete"}) {
      service_events.Add({{"action", action}});
      service_delay.Add({{"action", action}}, kRegenerationBuckets);
    }
    for (const char* type : {"duration", "latency"}) trigger_duration.Add({{"type", type}}, kRegenerationBuckets);
    gauge(registry, "cilium_version", "Cilium version")
        .Add({{"version", build.version}, {"revision", build.revision}, {"arch", build.arch}})
        .Set(1);
    // Exported at 0 from the start: a series born at its first observation hides that
    // observation from rate()/histogram_quantile() (the dashboards' "Policy Apply Latency").
    policy_implementation_delay.Add({{"source", std::string(kPolicySourceApi)}}, kRegenerationBuckets);
  }

  // Everything a scrape shows, sorted by family name and series labels so
  // that two scrapes of the same state are byte-identical.
  std::vector<MetricFamily> gather() {
    std::vector<MetricFamily> all = registry.Collect();
    auto append = [&all](std::vector<MetricFamily> fs) {
      for (auto& f : fs) all.push_back(std::move(f));
    };
    if (auto rows = datapath.poll()) append(detail::datapathFamilies(*rows));
    if (auto rows = map_pressure.poll()) append(detail::mapPressureFamilies(*rows));
    if (auto rows = map_ops.poll()) append(detail::mapOpsFamilies(*rows));
    if (auto rows = bpf_memory.poll(); rows && !rows->empty()) append(detail::bpfMemoryFamilies(rows->front()));
    if (auto rows = l7.poll(); rows && !rows->empty()) append(detail::l7Families(rows->front()));
    append(detail::processFamilies());
    {
      std::lock_guard lk(selection_mu);
      std::erase_if(all, [this](const MetricFamily& f) { return disabled.count(f.name) > 0; });
    }
    // Copies of what is left: a family left out by --metrics -NAME takes its
    // legacy name with it.
    if (legacy_names.load()) append(legacyFamilies(all));
    std::erase_if(all, [](const MetricFamily& f) { return f.metric.empty(); });
    // Cilium declares cilium_endpoint_count a gauge, and promtool's lint
    // rejects a gauge whose name ends in _count. The seed (and dashboards)
    // use that exact name, so keep it and expose it untyped: PromQL treats
    // it identically, and `promtool check metrics` is clean. The modern
    // typed gauge is cilium_endpoint (Cilium >= 1.14).
    for (auto& f : all)
      if (f.name == "cilium_endpoint_count") {
        f.type = prometheus::MetricType::Untyped;
        for (auto& m : f.metric) m.untyped.value = m.gauge.value;
      }
    std::sort(all.begin(), all.end(),
              [](const MetricFamily& a, const MetricFamily& b) { return a.name < b.name; });
    for (auto& f : all)
      std::sort(f.metric.begin(), f.metric.end(),
                [](const prometheus::ClientMetric& a, const prometheus::ClientMetric& b) {
                  return a.label < b.label;
                });
    return all;
  }

  prometheus::Registry registry;
  Gauge& endpoint_count;
  Gauge& endpoint;
  Gauge& endpoint_regenerating;
  SnapshotGauge endpoint_state;
  Family<Counter>& regenerations;
  Counter& regenerations_success;
  Counter& regenerations_fail;
  Family<Histogram>& regeneration_time;
  Gauge& policy;
  Gauge& policy_max_revision;
  Gauge& policy_held;
  Family<Counter>& policy_change;
  Counter& policy_change_success;
  Counter& policy_change_failure;
  Counter& policy_import_errors;
  SnapshotGauge enforcement;
  SnapshotGauge identity;
  Gauge& unreachable_nodes;
  Gauge& unreachable_health_endpoints;
  Family<Counter>& ct_gc_runs;
  Family<Gauge>& ct_gc_entries;
  Family<Gauge>& node_connectivity_status;
  Family<Histogram>& node_connectivity_latency;
  Family<Histogram>& policy_implementation_delay;
  Family<Histogram>& ct_gc_duration;
  Family<Gauge>& bootstrap;
  Family<Histogram>& api_process_time;
  Family<Counter>& errors_warnings;
  Family<Counter>& controller_runs;
  Family<Histogram>& controller_duration;
  Gauge& controllers_failing;
  Gauge& ip_addresses;
  Gauge& ipam_capacity;
  Gauge& nodes_all;
  Family<Counter>& service_events;
  Family<Counter>& node_events;
  SnapshotGauge identity_label_sources;
  Family<Histogram>& service_delay;
  Histogram& incremental_update;
  SnapshotGauge selector_match_max;
  Family<Counter>& ct_dump_resets;
  Family<Counter>& ct_key_fallbacks;
  Family<Counter>& ipcache_events;
  Family<Counter>& ipcache_errors;
  Family<Counter>& trigger_total;
  Gauge& trigger_folds;
  Family<Histogram>& trigger_duration;
  Family<Histogram>& syscall_duration;
  // --metrics: read on every syscall, hence atomic; the rest under selection_mu.
  std::atomic<bool> syscall_duration_enabled{false};
  std::mutex selection_mu;
  std::set<std::string> disabled;  // families left out of scrapes (selection_mu)
  std::mutex controllers_mu;
  std::map<std::string, bool> controller_failed;  // name -> last run failed (controllers_mu)
  // Copies of modern families under their Cilium <= 1.4 names (setLegacyNames).
  static std::vector<MetricFamily> legacyFamilies(const std::vector<MetricFamily>& all) {
    std::vector<MetricFamily> out;
    auto find = [&](const std::string& name) -> const MetricFamily* {
      for (const auto& f : all)
        if (f.name == name) return &f;
      return nullptr;
    };
    auto untyped = [](MetricFamily f, std::string name) {
      f.name = std::move(name);
      for (auto& m : f.metric) {
        m.untyped.value = f.type == prometheus::MetricType::Counter ? m.counter.value : m.gauge.value;
      }
      f.type = prometheus::MetricType::Untyped;
      return f;
    };
    // Names ending in _count are untyped, as cilium_endpoint_count (promtool's lint).
    if (const auto* f = find("cilium_policy")) out.push_back(untyped(*f, "cilium_policy_count"));
    if (const auto* f = find("cilium_policy_import_errors_total"))
      out.push_back(untyped(*f, "cilium_policy_import_errors"));
    if (const auto* f = find("cilium_endpoint_regenerations_total"))
      out.push_back(untyped(*f, "cilium_endpoint_regenerations"));
    if (const auto* f = find("cilium_identity")) {
      double sum = 0;
      for (const auto& m : f->metric) sum += m.gauge.value;
      MetricFamily c{"cilium_identity_count", "Number of identities currently allocated",
                     prometheus::MetricType::Untyped, {}};
      prometheus::ClientMetric m;
      m.untyped.value = sum;
      c.metric.push_back(m);
      out.push_back(std::move(c));
    }
    // Cilium <= 1.9 counted conntrack dump interrupts as a datapath error, under the
    // very labels dump_resets_total has now; a counter named _total needs no untyping.
    if (const auto* f = find("cilium_datapath_conntrack_dump_resets_total")) {
      MetricFamily c = *f;
      c.name = "cilium_datapath_errors_total";
      c.help = "Number of errors that occurred in the datapath or datapath management";
      out.push_back(std::move(c));
    }
    return out;
  }
  std::atomic<bool> legacy_names{false};
  PolledSource<DatapathCounter> datapath{"datapath counters (cilium_drop_*, cilium_forward_*)"};
  PolledSource<MapPressure> map_pressure{"BPF map pressure (cilium_bpf_map_pressure)"};
  PolledSource<MapOps> map_ops{"BPF map operations (cilium_bpf_map_ops_total)"};
  PolledSource<BpfMemory> bpf_memory{"BPF memory (cilium_bpf_*_virtual_memory_max_bytes)"};
  PolledSource<L7Stats> l7{"L7 proxy stats (cilium_policy_l7_*, cilium_proxy_*)"};
};

AgentMetrics::AgentMetrics(BuildInfo build) : impl_(std::make_unique<Impl>(build)) {}
AgentMetrics::~AgentMetrics() = default;

void AgentMetrics::setEndpointCount(int64_t n) {
  impl_->endpoint_count.Set(static_cast<double>(n));
  impl_->endpoint.Set(static_cast<double>(n));
}
void AgentMetrics::setEndpointsRegenerating(int64_t n) {
  impl_->endpoint_regenerating.Set(static_cast<double>(n));
}
void AgentMetrics::setEndpointStates(const std::map<std::string, int>& s) { impl_->endpoint_state.set(s); }
void AgentMetrics::recordEndpointRegeneration(bool success) {
  (success ? impl_->regenerations_success : impl_->regenerations_fail).Increment();
}
void AgentMetrics::observeRegenerationTime(std::string_view scope, bool success, double seconds) {
  impl_->regeneration_time
      .Add({{"scope", std::string(scope)}, {"status", success ? "success" : "failure"}}, kRegenerationBuckets)
      .Observe(seconds);
}

void AgentMetrics::setPolicyCount(int64_t n) { impl_->policy.Set(static_cast<double>(n)); }
void AgentMetrics::setPolicyMaxRevision(uint64_t rev) { impl_->policy_max_revision.Set(static_cast<double>(rev)); }
void AgentMetrics::setPolicyHeld(int64_t n) { impl_->policy_held.Set(static_cast<double>(n)); }
void AgentMetrics::recordPolicyChange(bool success) {
  if (success) {
    impl_->policy_change_success.Increment();
  } else {
    impl_->policy_change_failure.Increment();
    impl_->policy_import_errors.Increment();
  }
}
void AgentMetrics::setNodeConnectivityStatus(std::string_view type, int reachable, int unreachable, int unknown) {
  const std::string t(type);
  impl_->node_connectivity_status.Add({{"type", t}, {"status", "reachable"}}).Set(reachable);
  impl_->node_connectivity_status.Add({{"type", t}, {"status", "unreachable"}}).Set(unreachable);
  impl_->node_connectivity_status.Add({{"type", t}, {"status", "unknown"}}).Set(unknown);
}
void AgentMetrics::observeNodeConnectivityLatency(std::string_view type, std::string_view protocol, double seconds) {
  impl_->node_connectivity_latency
      .Add({{"type", std::string(type)}, {"protocol", std::string(protocol)}, {"address_type", "primary"}},
           kHealthLatencyBuckets)
      .Observe(seconds);
}
void AgentMetrics::observePolicyImplementationDelay(std::string_view source, double seconds) {
  impl_->policy_implementation_delay.Add({{"source", std::string(source)}}, kRegenerationBuckets).Observe(seconds);
}
void AgentMetrics::setEnforcementStatus(const std::map<std::string, int>& s) { impl_->enforcement.set(s); }
void AgentMetrics::setIdentities(const std::map<std::string, int>& s) { impl_->identity.set(s); }

void AgentMetrics::setUnreachableNodes(int64_t n) { impl_->unreachable_nodes.Set(static_cast<double>(n)); }
void AgentMetrics::setUnreachableHealthEndpoints(int64_t n) {
  impl_->unreachable_health_endpoints.Set(static_cast<double>(n));
}

void AgentMetrics::recordConntrackGc(CtFamily family, CtProtocol protocol, bool completed, double seconds,
                                     uint64_t alive, uint64_t deleted) {
  const std::string fam = ctFamily(family), proto = ctProtocol(protocol);
  const std::string status = completed ? "completed" : "uncompleted";
  impl_->ct_gc_runs.Add({{"family", fam}, {"protocol", proto}, {"status", status}}).Increment();
  impl_->ct_gc_duration.Add({{"family", fam}, {"protocol", proto}, {"status", status}}, kDefaultBuckets)
      .Observe(seconds);
  impl_->ct_gc_entries.Add({{"family", fam}, {"protocol", proto}, {"status", "alive"}})
      .Set(static_cast<double>(alive));
  impl_->ct_gc_entries.Add({{"family", fam}, {"protocol", proto}, {"status", "deleted"}})
      .Set(static_cast<double>(deleted));
}

void AgentMetrics::setBootstrapSeconds(std::string_view scope, bool success, double seconds) {
  impl_->bootstrap.Add({{"scope", std::string(scope)}, {"outcome", success ? "success" : "fail"}}).Set(seconds);
}

std::string apiShortPath(std::string_view path) {
  // "/v1/endpoint/1204/config" -> "/v1/endpoint": the first two components.
  size_t slashes = 0;
  for (size_t i = 0; i < path.size(); ++i)
    if (path[i] == '/' && ++slashes == 3) return std::string(path.substr(0, i));
  return std::string(path);
}

void AgentMetrics::observeApiCall(std::string_view path, std::string_view method, int return_code, double seconds) {
  impl_->api_process_time
      .Add({{"path", apiShortPath(path)}, {"method", std::string(method)}, {"return_code", std::to_string(return_code)}},
           kDefaultBuckets)
      .Observe(seconds);
}

void AgentMetrics::recordLogLine(std::string_view level, std::string_view subsystem) {
  impl_->errors_warnings.Add({{"level", std::string(level)}, {"subsystem", std::string(subsystem)}}).Increment();
}

void AgentMetrics::declareController(std::string_view controller) {
  std::lock_guard lk(impl_->controllers_mu);
  impl_->controller_failed.try_emplace(std::string(controller), false);
}

void AgentMetrics::recordControllerRun(std::string_view controller, bool success, double seconds) {
  const char* status = success ? "success" : "failure";
  impl_->controller_runs.Add({{"status", status}}).Increment();
  impl_->controller_duration.Add({{"status", status}}, kDefaultBuckets).Observe(seconds);
  std::lock_guard lk(impl_->controllers_mu);
  impl_->controller_failed[std::string(controller)] = !success;
  int64_t failing = 0;
  for (const auto& [_, failed] : impl_->controller_failed) failing += failed ? 1 : 0;
  impl_->controllers_failing.Set(static_cast<double>(failing));
}

void AgentMetrics::setIpv4Addresses(int64_t allocated, int64_t capacity) {
  impl_->ip_addresses.Set(static_cast<double>(allocated));
  impl_->ipam_capacity.Set(static_cast<double>(capacity));
}

void AgentMetrics::setIdentityLabelSources(const std::map<std::string, int>& s) {
  impl_->identity_label_sources.set(s);
}

void AgentMetrics::setLegacyNames(bool on) { impl_->legacy_names = on; }

void AgentMetrics::registerDatapathSource(DatapathSource source) { impl_->datapath.set(std::move(source)); }
void AgentMetrics::registerL7Source(L7Source source) { impl_->l7.set(std::move(source)); }
void AgentMetrics::registerMapPressureSource(MapPressureSource source) {
  impl_->map_pressure.set(std::move(source));
}
void AgentMetrics::registerMapOpsSource(MapOpsSource source) { impl_->map_ops.set(std::move(source)); }
void AgentMetrics::registerBpfMemorySource(BpfMemorySource source) { impl_->bpf_memory.set(std::move(source)); }

void AgentMetrics::recordServiceEvent(std::string_view action) {
  impl_->service_events.Add({{"action", std::string(action)}}).Increment();
}

void AgentMetrics::observeServiceImplementationDelay(std::string_view action, double seconds) {
  impl_->service_delay.Add({{"action", std::string(action)}}, kRegenerationBuckets).Observe(seconds);
}

void AgentMetrics::observePolicyIncrementalUpdate(double seconds) { impl_->incremental_update.Observe(seconds); }

void AgentMetrics::setSelectorMatchCountMax(const std::map<std::string, int>& s) { impl_->selector_match_max.set(s); }

void AgentMetrics::recordPolicyUpdateTrigger(std::string_view reason) {
  impl_->trigger_total.Add({{"reason", std::string(reason)}}).Increment();
}

void AgentMetrics::observePolicyUpdateRun(double duration_seconds, double latency_seconds, int folds) {
  impl_->trigger_duration.Add({{"type", "duration"}}, kRegenerationBuckets).Observe(duration_seconds);
  impl_->trigger_duration.Add({{"type", "latency"}}, kRegenerationBuckets).Observe(latency_seconds);
  impl_->trigger_folds.Set(folds);
}

void AgentMetrics::recordConntrackWalk(CtFamily family, uint64_t restarts, uint64_t tcp_fallbacks,
                                       uint64_t other_fallbacks) {
  const std::string fam = ctFamily(family);
  impl_->ct_dump_resets.Add({{"area", "conntrack"}, {"name", "dump_interrupts"}, {"family", fam}})
      .Increment(static_cast<double>(restarts));
  impl_->ct_key_fallbacks.Add({{"family", fam}, {"protocol", ctProtocol(CtProtocol::Tcp)}})
      .Increment(static_cast<double>(tcp_fallbacks));
  impl_->ct_key_fallbacks.Add({{"family", fam}, {"protocol", ctProtocol(CtProtocol::NonTcp)}})
      .Increment(static_cast<double>(other_fallbacks));
}

void AgentMetrics::recordIpcacheEvent(std::string_view type) {
  impl_->ipcache_events.Add({{"type", std::string(type)}}).Increment();
}
void AgentMetrics::recordIpcacheError(std::string_view type, std::string_view error) {
  impl_->ipcache_errors.Add({{"type", std::string(type)}, {"error", std::string(error)}}).Increment();
}

bool AgentMetrics::bpfSyscallDurationEnabled() const {
  return impl_->syscall_duration_enabled.load(std::memory_order_relaxed);
}
void AgentMetrics::observeBpfSyscall(std::string_view operation, bool success, double seconds) {
  if (!bpfSyscallDurationEnabled()) return;
  impl_->syscall_duration
      .Add({{"operation", std::string(operation)}, {"outcome", success ? "success" : "fail"}}, kSyscallBuckets)
      .Observe(seconds);
}

const std::vector<std::string>& AgentMetrics::knownFamilies() { return kKnownFamilies; }

Status AgentMetrics::enableMetrics(const std::vector<std::string>& items) {
  bool syscalls = impl_->syscall_duration_enabled.load();
  std::set<std::string> disabled;
  {
    std::lock_guard lk(impl_->selection_mu);
    disabled = impl_->disabled;
  }
  for (const auto& item : items) {
    std::string_view rest = item;
    while (!rest.empty()) {
      const size_t start = rest.find_first_not_of(" ,\t");
      if (start == std::string_view::npos) break;
      rest.remove_prefix(start);
      const size_t end = rest.find_first_of(" ,\t");
      const std::string_view tok = rest.substr(0, end);
      rest.remove_prefix(end == std::string_view::npos ? rest.size() : end);
      if (tok.size() < 2 || (tok[0] != '+' && tok[0] != '-'))
        return Error::invalid("--metrics: \"" + std::string(tok) +
                              "\" must be +NAME (enable) or -NAME (disable), e.g. "
                              "+cilium_bpf_syscall_duration_seconds");
      const std::string name(tok.substr(1));
      if (!std::binary_search(kKnownFamilies.begin(), kKnownFamilies.end(), name))
        return Error::invalid("--metrics: unknown metric \"" + name +
                              "\" (a family name as exposed on /metrics, without _bucket/_sum/_count; "
                              "docs/metrics.md lists them)");
      const bool on = tok[0] == '+';
      if (name == kSyscallDurationFamily) syscalls = on;
      if (on) {
        disabled.erase(name);
      } else {
        disabled.insert(name);
      }
    }
  }
  impl_->syscall_duration_enabled = syscalls;
  std::lock_guard lk(impl_->selection_mu);
  impl_->disabled = std::move(disabled);
  return okStatus();
}

void AgentMetrics::setNodes(int64_t n) { impl_->nodes_all.Set(static_cast<double>(n)); }
void AgentMetrics::recordNodeEvent(std::string_view event_type, std::string_view source) {
  impl_->node_events.Add({{"event_type", std::string(event_type)}, {"source", std::string(source)}}).Increment();
}

std::string AgentMetrics::renderText() const {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, impl_->gather());
  return out.str();
}

std::vector<Sample> AgentMetrics::samples() const { return detail::flatten(impl_->gather()); }

}  // namespace membrane::metrics
