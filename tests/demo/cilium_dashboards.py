"""What Cilium's own dashboards read, panel by panel, written down by us (issue 12).

Two dashboards, imported unchanged by users who run Cilium today:
  - "helm": Cilium's agent dashboard as shipped in its Helm chart. Every query selects
    {k8s_app="cilium", pod=~"$pod"}; the default value of $pod ("All") is cilium.*.
  - "6658": grafana.com dashboard 6658 (Cilium 1.1-1.4 era). Every query selects
    {kubernetes_pod_name=~"$pod"}, All = cilium.*, and some series have their old names
    (membraned --metrics-legacy-names, which `make demo` turns on).

Each panel is (dashboard, title, selectors, expectation); a selector is (metric, extra label
matchers). The demo story test (tests/demo/demo_story_test.py) evaluates every selector with the
dashboard's default variable value against the demo's Prometheus at the end of the story:
  DATA   - membrane has the metric and the demo produces it: the selector must return series.
  EVENT  - membrane has the metric, but the panel's label filter needs an event the demo does not
           cause (e.g. an egress drop): not asserted.
  n/a    - any other string: why a one-node membrane has no such data yet; the selector must
           return nothing (if it starts returning data, this list is stale).
docs/metrics.md ("Cilium's dashboards") lists the n/a panels with the same reasons.
"""

DATA = "data"
EVENT = "event"

NO_KVSTORE = "kvstore: membrane has no kvstore until cluster mode (issue 13)"
NO_K8S = "Kubernetes API watchers: membrane reads manifests, not a Kubernetes API server"
NO_IPV6 = "IPv6: membrane's datapath is IPv4 only"
NO_DNS = "DNS proxy: membrane has no DNS proxy (toFQDNs)"

CT4 = [("cilium_datapath_conntrack_gc_entries", f'family="ipv4",protocol="{p}",status="{s}"')
       for p in ("TCP", "non-TCP") for s in ("alive", "deleted")]
CT6 = [("cilium_datapath_conntrack_gc_entries", f'family="ipv6",protocol="{p}",status="{s}"')
       for p in ("TCP", "non-TCP") for s in ("alive", "deleted")]
API = [("cilium_agent_api_process_time_seconds_count", ""), ("cilium_agent_api_process_time_seconds_sum", "")]
K8S_SCOPES = ("CiliumNetworkPolicy", "NetworkPolicy", "Pod", "Node", "Service", "Endpoint", "Namespace")

PANELS = [
    ("helm", "Errors & Warnings", [("cilium_errors_warnings_total", "")], DATA),
    ("helm", "CPU Usage per node", [("cilium_process_cpu_seconds_total", "")], DATA),
    ("helm", "Virtual Memory Bytes", [("cilium_process_virtual_memory_bytes", "")], DATA),
    ("helm", "Resident memory status", [("cilium_process_resident_memory_bytes", "")], DATA),
    ("helm", "Open file descriptors", [("cilium_process_open_fds", "")], DATA),
    ("helm", "System-wide BPF memory usage", [("cilium_bpf_maps_virtual_memory_max_bytes", ""),
                                              ("cilium_bpf_progs_virtual_memory_max_bytes", "")], DATA),
    ("helm", "BPF map pressure", [("cilium_bpf_map_pressure", "")], DATA),
    ("helm", "API call latency (average node)", API, DATA),
    ("helm", "API call latency (max node)", API, DATA),
    ("helm", "# API calls (average node)", API[:1], DATA),
    ("helm", "# API calls (max node)", API[:1], DATA),
    ("helm", "API return codes (average node)", API[:1], DATA),
    ("helm", "API return codes (sum all nodes)", API[:1], DATA),
    ("helm", "# system calls (average node)", [("cilium_bpf_syscall_duration_seconds_count", "")], DATA),
    ("helm", "# system calls (max node)", [("cilium_bpf_syscall_duration_seconds_count", "")], DATA),
    ("helm", "system call latency (avg node)", [("cilium_bpf_syscall_duration_seconds_sum", "")], DATA),
    ("helm", "system call latency (max node)", [("cilium_bpf_syscall_duration_seconds_sum", "")], DATA),
    ("helm", "map ops (average node)", [("cilium_bpf_map_ops_total", "")], DATA),
    ("helm", "map ops (max node)", [("cilium_bpf_map_ops_total", "")], DATA),
    ("helm", "map ops (sum failures)", [("cilium_bpf_map_ops_total", 'outcome="fail"')], EVENT),
    ("helm", "# operations (sum all nodes)", [("cilium_kvstore_operations_duration_seconds_count", "")], NO_KVSTORE),
    ("helm", "# operations (max node)", [("cilium_kvstore_operations_duration_seconds_count", "")], NO_KVSTORE),
    ("helm", "latency (average node)", [("cilium_kvstore_operations_duration_seconds_sum", "")], NO_KVSTORE),
    ("helm", "latency (max node)", [("cilium_kvstore_operations_duration_seconds_sum", "")], NO_KVSTORE),
    ("helm", "Events received (average node)", [("cilium_kvstore_events_queue_seconds_count", "")], NO_KVSTORE),
    ("helm", "Forwarded Packets", [("cilium_forward_count_total", "")], DATA),
    ("helm", "Forwarded Traffic", [("cilium_forward_bytes_total", "")], DATA),
    ("helm", "IPv4 Conntrack TCP", CT4[:2], DATA),
    ("helm", "IPv6 Conntrack TCP", CT6[:2], NO_IPV6),
    ("helm", "IPv4 Conntrack Non-TCP", CT4[2:], DATA),
    ("helm", "IPv6 Conntrack Non-TCP", CT6[2:], NO_IPV6),
    ("helm", "Allocated Addresses", [("cilium_ip_addresses", "")], DATA),
    ("helm", "Datapath Conntrack Dump Resets", [("cilium_datapath_conntrack_dump_resets_total", "")], DATA),
    ("helm", "Service Updates", [("cilium_services_events_total", "")], DATA),
    ("helm", "Connectivity Health", [("cilium_unreachable_nodes", ""), ("cilium_unreachable_health_endpoints", "")],
     DATA),
    ("helm", "Dropped Egress Packets", [("cilium_drop_count_total", 'direction="EGRESS"')], EVENT),
    ("helm", "Node Events", [("cilium_nodes_all_events_received_total", "")], DATA),
    ("helm", "Dropped Egress Traffic", [("cilium_drop_bytes_total", 'direction="EGRESS"')], EVENT),
    ("helm", "Nodes", [("cilium_nodes_all_num", "")], DATA),
    ("helm", "L7 forwarded request", [("cilium_policy_l7_total", "")], DATA),
    ("helm", "DNS proxy request latency",
     [("cilium_proxy_upstream_reply_seconds_bucket", 'protocol_l7="dns",scope!="totalTime"')], NO_DNS),
    ("helm", "Policy Denies: L3/L4", [("cilium_drop_count_total", 'reason="Policy denied"')], DATA),
    ("helm", "Policy Denies: L7", [("cilium_policy_l7_total", 'rule="denied"')], DATA),
    ("helm", "Policy Identity Update Latency", [("cilium_policy_incremental_update_duration_bucket", "")],
     DATA),
    ("helm", "Policy Apply Latency", [("cilium_policy_implementation_delay_bucket", "")], DATA),
    ("helm", "Endpoints policy enforcement status", [("cilium_policy_endpoint_enforcement_status", "")], DATA),
    ("helm", "Proxy Redirects", [("cilium_proxy_redirects", "")], DATA),
    ("helm", "Policy Calculation Time",
     [("cilium_endpoint_regeneration_time_stats_seconds_bucket",
       'scope=~"proxyConfiguration|endpointPolicyCalculation|selectorPolicyCalculation|proxyPolicyCalculation",'
       'status="success"')], DATA),
    ("helm", "Policies Per Node", [("cilium_policy", ""), ("cilium_policy_change_total", 'outcome="fail"')], DATA),
    ("helm", "Endpoint regeneration time (90th percentile)",
     [("cilium_endpoint_regeneration_time_stats_seconds_bucket", 'scope!="total"')], DATA),
    ("helm", "Endpoint regeneration time (99th percentile)",
     [("cilium_endpoint_regeneration_time_stats_seconds_bucket", 'scope!="total"')], DATA),
    ("helm", "Endpoint regenerations", [("cilium_endpoint_regenerations_total", "")], DATA),
    ("helm", "Cilium endpoint state", [("cilium_endpoint_state", "")], DATA),
    ("helm", "Controllers", [("cilium_controllers_runs_total", ""), ("cilium_controllers_failing", "")], DATA),
    ("helm", "Controller Durations", [("cilium_controllers_runs_duration_seconds_count", "")], DATA),
    ("helm", "apiserver latency (average node)", [("cilium_k8s_client_api_latency_time_seconds_count", "")], NO_K8S),
    ("helm", "apiserver latency (max node)", [("cilium_k8s_client_api_latency_time_seconds_sum", "")], NO_K8S),
    ("helm", "apiserver #calls (sum all nodes)", [("cilium_k8s_client_api_latency_time_seconds_count", "")], NO_K8S),
    ("helm", "apiserver calls (sum all nodes)", [("cilium_k8s_client_api_calls_total", "")], NO_K8S),
] + [
    ("helm", f"{'Valid' if valid == 'true' else 'Invalid'}, {'Unnecessary' if equal == 'true' else 'Necessary'} "
             "K8s Events Received",
     [("cilium_kubernetes_events_received_total", f'equal="{equal}",valid="{valid}"')], NO_K8S)
    for equal in ("true", "false") for valid in ("true", "false")
] + [
    ("helm", f"{scope} Events", [("cilium_kubernetes_events_total", f'scope="{scope}"')], NO_K8S)
    for scope in K8S_SCOPES
] + [
    ("6658", "Errors & Warnings", [("cilium_errors_warnings_total", "")], DATA),
    ("6658", "CPU Usage per node", [("cilium_process_cpu_seconds_total", "")], DATA),
    ("6658", "Virtual Memory Bytes", [("cilium_process_virtual_memory_bytes", "")], DATA),
    ("6658", "Resident memory status", [("cilium_process_resident_memory_bytes", "")], DATA),
    ("6658", "Open file descriptors", [("cilium_process_open_fds", "")], DATA),
    ("6658", "API call latency", API, DATA),
    ("6658", "# API calls / API return codes", API[:1], DATA),
    ("6658", "# system calls / system call latency", [("cilium_bpf_syscall_duration_seconds_count", "")], DATA),
    ("6658", "map ops", [("cilium_bpf_map_ops_total", "")], DATA),
    ("6658", "kvstore operations, latency, events", [("cilium_kvstore_operations_duration_seconds_count", "")],
     NO_KVSTORE),
    ("6658", "Forwarded Packets / Traffic", [("cilium_forward_count_total", ""), ("cilium_forward_bytes_total", "")],
     DATA),
    ("6658", "IPv4 Conntrack TCP / Non-TCP", CT4, DATA),
    ("6658", "Allocated Addresses", [("cilium_ip_addresses", "")], DATA),
    ("6658", "Datapath Errors", [("cilium_datapath_errors_total", "")], DATA),
    ("6658", "Service Updates", [("cilium_services_events_total", "")], DATA),
    ("6658", "Connectivity Health", [("cilium_unreachable_nodes", ""), ("cilium_unreachable_health_endpoints", "")],
     DATA),
    ("6658", "Dropped Egress Packets / Traffic", [("cilium_drop_count_total", 'direction="EGRESS"')], EVENT),
    ("6658", "Node Events", [("cilium_nodes_all_events_received_total", "")], DATA),
    ("6658", "Nodes", [("cilium_nodes_all_num", "")], DATA),
    ("6658", "L7 forwarded request", [("cilium_policy_l7_total", 'rule=~"denied|forwarded|received"')], DATA),
    ("6658", "Cilium drops Ingress / Dropped Ingress Traffic",
     [("cilium_drop_count_total", 'direction="INGRESS"'), ("cilium_drop_bytes_total", 'direction="INGRESS"')], DATA),
    ("6658", "Proxy response time (Avg, Max) / DNS proxy requests",
     [("cilium_proxy_upstream_reply_seconds_count", ""), ("cilium_proxy_upstream_reply_seconds_sum", ""),
      ("cilium_policy_l7_total", 'rule="parse_errors"')], DATA),
    ("6658", "Policy Trigger Duration / Runs", [("cilium_triggers_policy_update_total", "")], DATA),
    ("6658", "Endpoints policy enforcement status", [("cilium_policy_endpoint_enforcement_status", "")], DATA),
    ("6658", "Proxy Redirects", [("cilium_proxy_redirects", "")], DATA),
    ("6658", "Policies Per Node", [("cilium_policy_count", ""), ("cilium_policy_import_errors", "")], DATA),
    ("6658", "Policy Revision", [("cilium_policy_max_revision", "")], DATA),
    ("6658", "Endpoint regeneration time (90th/99th percentile)",
     [("cilium_endpoint_regeneration_time_stats_seconds_bucket", 'scope!="buildDuration"')], DATA),
    ("6658", "Endpoint regenerations", [("cilium_endpoint_regenerations", "")], DATA),
    ("6658", "Cilium endpoint state", [("cilium_endpoint_state", "")], DATA),
    ("6658", "Controllers", [("cilium_controllers_runs_total", ""), ("cilium_controllers_failing", "")], DATA),
    ("6658", "Controller Durations", [("cilium_controllers_runs_duration_seconds_count", "")], DATA),
    ("6658", "apiserver latency", [("cilium_k8s_client_api_latency_time_seconds_count", "")], NO_K8S),
]

SELECTOR = {"helm": 'k8s_app="cilium",pod=~"cilium.*"', "6658": 'kubernetes_pod_name=~"cilium.*"'}


def selectorExpr(dashboard, metric, extra):
    """The PromQL instant selector of one panel input, with the dashboard's default $pod (All)."""
    labels = SELECTOR[dashboard] + ("," + extra if extra else "")
    return f"{metric}{{{labels}}}"
