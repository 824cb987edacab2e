"""A fake membraned /metrics endpoint for the deploy tests.

Serves, on 127.0.0.1, every metric family the dashboard, the console pages and the alerts use,
with Cilium's names, types and label values (docs/metrics.md, plus the L7 and health families),
in the Prometheus text format. Counters and histogram buckets grow on every scrape, so rate(),
increase() and histogram_quantile() return data after two scrapes.
"""
import http.server
import threading


class _State:
    def __init__(self):
        self.lock = threading.Lock()
        self.scrapes = 0


def _histogram(name, labels, n, buckets, observe):
    """Text lines of a histogram where each scrape added `observe` once per label set."""
    lines = []
    for lbl in labels:
        lbl_txt = ",".join(f'{k}="{v}"' for k, v in lbl)
        sep = "," if lbl_txt else ""
        for le in buckets:
            count = n if observe <= float(le) else 0
            lines.append(f'{name}_bucket{{{lbl_txt}{sep}le="{le}"}} {count}')
        lines.append(f'{name}_bucket{{{lbl_txt}{sep}le="+Inf"}} {n}')
        lines.append(f'{name}_sum{{{lbl_txt}}} {n * observe}')
        lines.append(f'{name}_count{{{lbl_txt}}} {n}')
    return lines


def exposition(n):
    """The /metrics body after n scrapes (n >= 1)."""
    out = []

    def family(name, kind, help_text, samples):
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lbl = ",".join(f'{k}="{v}"' for k, v in labels)
            out.append(f"{name}{{{lbl}}} {value}" if lbl else f"{name} {value}")

    family("cilium_version", "gauge", "Cilium agent version",
           [((("version", "0.1.0"), ("revision", "fixture"), ("arch", "linux/amd64")), 1)])
    family("cilium_endpoint_count", "untyped", "Number of endpoints", [((), 3)])
    family("cilium_endpoint", "gauge", "Number of endpoints", [((), 3)])
    family("cilium_endpoint_regenerating", "gauge", "Endpoints regenerating", [((), 0)])
    states = ["creating", "waiting-for-identity", "not-ready", "waiting-to-regenerate", "regenerating",
              "restoring", "ready", "disconnecting", "disconnected", "invalid"]
    family("cilium_endpoint_state", "gauge", "Endpoints per state",
           [((("endpoint_state", s),), 3 if s == "ready" else 0) for s in states])
    family("cilium_endpoint_regenerations_total", "counter", "Regenerations",
           [((("outcome", "success"),), 2 * n), ((("outcome", "fail"),), 0)])
    out.append("# HELP cilium_endpoint_regeneration_time_stats_seconds Regeneration time")
    out.append("# TYPE cilium_endpoint_regeneration_time_stats_seconds histogram")
    out.extend(_histogram("cilium_endpoint_regeneration_time_stats_seconds",
                          [(("scope", "total"), ("status", "success")),
                           (("scope", "policyCalculation"), ("status", "success"))],
                          n, ["1e-05", "0.0001", "0.001", "0.01", "0.1", "1", "10", "100"], 0.005))
    family("cilium_policy", "gauge", "Policies", [((), 3)])
    family("cilium_policy_max_revision", "gauge", "Policy revision", [((), 4)])
    family("cilium_policy_change_total", "counter", "Policy changes",
           [((("outcome", "success"),), 3 + n), ((("outcome", "fail"),), 1)])
    family("cilium_policy_import_errors_total", "counter", "Policy import errors", [((), 1)])
    modes = ["none", "ingress", "egress", "both", "audit-ingress", "audit-egress", "audit-both"]
    family("cilium_policy_endpoint_enforcement_status", "gauge", "Enforcement",
           [((("enforcement", m),), {"none": 2, "ingress": 1}.get(m, 0)) for m in modes])
    family("cilium_identity", "gauge", "Identities",
           [((("type", t),), v) for t, v in (("node_local", 0), ("cluster_local", 3), ("remote_node", 0))])
    drops = [("Policy denied", "INGRESS", 10), ("Policy denied by denylist", "EGRESS", 2),
             ("Invalid source ip", "EGRESS", 1)]
    family("cilium_drop_count_total", "counter", "Dropped packets",
           [((("reason", r), ("direction", d)), k * n) for r, d, k in drops])
    family("cilium_drop_bytes_total", "counter", "Dropped bytes",
           [((("reason", r), ("direction", d)), 74 * k * n) for r, d, k in drops])
    family("cilium_forward_count_total", "counter", "Forwarded packets",
           [((("direction", "INGRESS"),), 50 * n), ((("direction", "EGRESS"),), 60 * n)])
    family("cilium_forward_bytes_total", "counter", "Forwarded bytes",
           [((("direction", "INGRESS"),), 5000 * n), ((("direction", "EGRESS"),), 6000 * n)])
    family("cilium_bpf_map_pressure", "gauge", "Map fill ratio",
           [((("map_name", "mb_policy_v1"),), 0.01), ((("map_name", "mb_ct4_v1"),), 0.02)])
    family("cilium_datapath_conntrack_gc_entries", "gauge", "CT entries",
           [((("family", "ipv4"), ("protocol", p), ("status", s)), v)
            for p in ("TCP", "non-TCP") for s, v in (("alive", 5), ("deleted", 1))])
    family("cilium_datapath_conntrack_gc_runs_total", "counter", "CT GC runs",
           [((("family", "ipv4"), ("protocol", "TCP"), ("status", "completed")), n)])
    rules = [("received", 6), ("forwarded", 4), ("denied", 2), ("parse_errors", 0)]
    family("cilium_policy_l7_total", "counter", "L7 requests",
           [((("rule", r), ("proxy_type", "envoy")), k * n) for r, k in rules])
    for r, k in rules:
        family(f"cilium_policy_l7_{r}_total", "counter", f"L7 requests {r}", [((), k * n)])
    family("cilium_proxy_redirects", "gauge", "Proxy redirects", [((("protocol_l7", "http"),), 1)])
    out.append("# HELP cilium_proxy_upstream_reply_seconds Upstream reply time")
    out.append("# TYPE cilium_proxy_upstream_reply_seconds histogram")
    out.extend(_histogram("cilium_proxy_upstream_reply_seconds",
                          [(("error", ""), ("protocol_l7", "http"), ("scope", "totalTime"))],
                          n, ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1"], 0.002))
    family("cilium_unreachable_nodes", "gauge", "Unreachable nodes", [((), 0)])
    family("cilium_unreachable_health_endpoints", "gauge", "Unreachable health endpoints", [((), 0)])
    family("cilium_node_health_connectivity_status", "gauge", "Node connectivity",
           [((("type", t), ("status", s)), 1 if s == "reachable" else 0)
            for t in ("node", "endpoint") for s in ("reachable", "unreachable", "unknown")])
    out.append("# HELP cilium_node_health_connectivity_latency_seconds Probe latency")
    out.append("# TYPE cilium_node_health_connectivity_latency_seconds histogram")
    out.extend(_histogram("cilium_node_health_connectivity_latency_seconds",
                          [(("type", t), ("protocol", p), ("address_type", "primary"))
                           for t in ("node", "endpoint") for p in ("icmp", "http")],
                          n, ["0.001", "0.002", "0.004", "0.008", "0.016", "1", "8"], 0.0005))
    out.append("# HELP cilium_policy_implementation_delay Policy change to datapath")
    out.append("# TYPE cilium_policy_implementation_delay histogram")
    out.extend(_histogram("cilium_policy_implementation_delay", [(("source", "api"),)],
                          n, ["0.0001", "0.001", "0.01", "0.1", "1"], 0.0005))
    family("cilium_process_cpu_seconds_total", "counter", "CPU", [((), 0.01 * n)])
    family("cilium_process_resident_memory_bytes", "gauge", "RSS", [((), 20 * 1024 * 1024)])
    family("cilium_process_virtual_memory_bytes", "gauge", "VSZ", [((), 200 * 1024 * 1024)])
    family("cilium_process_open_fds", "gauge", "Open fds", [((), 40)])
    family("cilium_process_max_fds", "gauge", "Max fds", [((), 1048576)])
    family("cilium_process_start_time_seconds", "gauge", "Start time", [((), 1.7e9)])
    return "\n".join(out) + "\n"


class FixtureExporter:
    """Serves exposition() on 127.0.0.1:<ephemeral port> from a daemon thread."""

    def __init__(self):
        state = _State()
        self.state = state

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                with state.lock:
                    state.scrapes += 1
                    n = state.scrapes
                body = exposition(n).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def scrapes(self):
        with self.state.lock:
            return self.state.scrapes


if __name__ == "__main__":
    print(exposition(1), end="")
