#!/usr/bin/env python3
"""Generates deploy/grafana/membrane-dashboard.json, the Grafana dashboard for membrane.

The JSON is the deliverable (import it in Grafana); this script is its source so panels stay
consistent (same datasource, same `pod` filter, same grid). Edit the PANELS list below, then run
    python3 deploy/grafana/generate_dashboard.py            # rewrite the JSON
    python3 deploy/grafana/generate_dashboard.py --check    # exit 1 if the JSON is stale
(tests/deploy runs --check, so a hand edit of the JSON alone is caught).

Panels: the seed tutorial's charts ("Cilium Drop Count (INGRESS)", "L7 Requests") and the policy,
datapath, endpoint, proxy, health and agent panels of Cilium's dashboards (grafana.com 6658 and
the Helm chart's "Cilium Metrics"), on the metric names membrane exports (docs/metrics.md).
Every query filters on `pod=~"$pod"`; the `pod` variable lists agents from `cilium_version`.
"""
import json
import os
import sys

DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
P = 'pod=~"$pod"'  # the per-agent filter every query carries

# Row -> panels. Each panel: (title, unit, [(expr, legend)], options)
#   unit: Grafana unit id; options: {"type": "stat"|"timeseries", "stack": bool, "w": width,
#   "description": text}.
ROWS = [
    ("Policy verdicts (the seed's charts)", [
        ("Cilium Drop Count (INGRESS)", "pps",
         [(f'sum(rate(cilium_drop_count_total{{direction="INGRESS", {P}}}[1m])) by (reason)', "{{reason}}")],
         {"description": "Packets dropped towards pods, by reason. 'Policy denied' is traffic no rule "
                         "allows (the xwing in the Star Wars demo)."}),
        ("Cilium Drop Count (EGRESS)", "pps",
         [(f'sum(rate(cilium_drop_count_total{{direction="EGRESS", {P}}}[1m])) by (reason)', "{{reason}}")],
         {"description": "Packets dropped leaving pods, by reason."}),
        ("L7 Requests", "reqps",
         [(f'sum(rate(cilium_policy_l7_total{{{P}}}[1m])) by (rule)', "{{rule}}")],
         {"description": "HTTP requests seen by the L7 proxy by rule: received, forwarded, denied "
                         "(403 Access denied), parse_errors."}),
        ("L7 Requests (v1.x counters)", "reqps",
         [(f'sum(rate(cilium_policy_l7_received_total{{{P}}}[1m]))', "received"),
          (f'sum(rate(cilium_policy_l7_forwarded_total{{{P}}}[1m]))', "forwarded"),
          (f'sum(rate(cilium_policy_l7_denied_total{{{P}}}[1m]))', "denied"),
          (f'sum(rate(cilium_policy_l7_parse_errors_total{{{P}}}[1m]))', "parse_errors")],
         {"description": "The same requests on the Cilium 1.1 counters (the seed tutorial's "
                         "L7_denied_total)."}),
        ("Policy Denies: L3/L4", "pps",
         [(f'sum(rate(cilium_drop_count_total{{reason=~"Policy denied|Policy denied by denylist", {P}}}[1m])) by (direction)',
           "{{direction}}")],
         {"description": "Packets dropped by policy (default deny and deny rules), by direction."}),
        ("Policy Denies: L7", "reqps",
         [(f'sum(rate(cilium_policy_l7_total{{rule="denied", {P}}}[1m])) by (proxy_type)', "{{proxy_type}}")],
         {"description": "Requests denied by L7 rules, by proxy type."}),
    ]),
    ("Datapath", [
        ("Dropped Ingress Traffic", "bps",
         [(f'sum(rate(cilium_drop_bytes_total{{direction="INGRESS", {P}}}[1m])) by (reason) * 8', "{{reason}}")],
         {"description": "Bits/s of packets dropped towards pods, by reason."}),
        ("Dropped Egress Traffic", "bps",
         [(f'sum(rate(cilium_drop_bytes_total{{direction="EGRESS", {P}}}[1m])) by (reason) * 8', "{{reason}}")],
         {"description": "Bits/s of packets dropped leaving pods, by reason."}),
        ("Forwarded Packets", "pps",
         [(f'sum(rate(cilium_forward_count_total{{{P}}}[1m])) by (direction)', "{{direction}}")],
         {"description": "Packets the eBPF programs let through, by direction."}),
        ("Forwarded Traffic", "bps",
         [(f'sum(rate(cilium_forward_bytes_total{{{P}}}[1m])) by (direction) * 8', "{{direction}}")],
         {"description": "Bits/s forwarded, by direction."}),
        # One panel, series per protocol: Cilium splits TCP and non-TCP into two panels, but
        # membrane has one conntrack map and its GC reports every entry under protocol="TCP"
        # (agent.cc gcLoop), so a "Non-TCP" panel would stay empty. A per-protocol split in the
        # agent shows up here as extra series.
        ("IPv4 Conntrack", "short",
         [(f'sum(cilium_datapath_conntrack_gc_entries{{family="ipv4", {P}}}) by (protocol, status)',
           "{{protocol}} {{status}}")],
         {"description": "At the last conntrack GC: entries alive and deleted, per protocol."}),
        ("BPF map pressure", "percentunit",
         [(f'max(cilium_bpf_map_pressure{{{P}}}) by (map_name)', "{{map_name}}")],
         {"description": "Fill ratio of each BPF map; at 100% new entries fail (alert above 90%)."}),
    ]),
    ("Policy", [
        ("Policies Per Node", "short",
         [(f'min(cilium_policy{{{P}}})', "min"),
          (f'avg(cilium_policy{{{P}}})', "avg"),
          (f'max(cilium_policy{{{P}}})', "max")],
         {"description": "Policy rules loaded in the agent."}),
        ("Policy Revision", "none",
         [(f'max(cilium_policy_max_revision{{{P}}}) by (pod)', "{{pod}}")],
         {"description": "Policy repository revision: +1 per accepted change."}),
        ("Policy Import Errors", "short",
         [(f'sum(cilium_policy_import_errors_total{{{P}}})', "import errors (total)")],
         {"description": "Rejected policy imports since the agent started."}),
        ("Policy Changes by Outcome", "short",
         [(f'sum(increase(cilium_policy_change_total{{{P}}}[5m])) by (outcome)', "{{outcome}}")],
         {"description": "Policy imports, replacements and deletions per 5 minutes, by outcome "
                         "(failure = rejected, previous policy kept)."}),
        ("Policy Apply Latency", "s",
         [(f'histogram_quantile(0.99, sum(rate(cilium_policy_implementation_delay_bucket{{{P}}}[5m])) by (le))',
           "p99"),
          (f'histogram_quantile(0.50, sum(rate(cilium_policy_implementation_delay_bucket{{{P}}}[5m])) by (le))',
           "p50")],
         {"description": "From a policy change reaching the agent to its map entries written for every "
                         "endpoint (cilium_policy_implementation_delay)."}),
        ("Endpoints policy enforcement status", "short",
         [(f'sum(cilium_policy_endpoint_enforcement_status{{{P}}}) by (enforcement)', "{{enforcement}}")],
         {"stack": True,
          "description": "Endpoints per enforcement mode; 'none' = not selected by any rule."}),
    ]),
    ("Endpoints", [
        ("Endpoints", "short",
         [(f'sum(cilium_endpoint_count{{{P}}})', "endpoints")],
         {"type": "stat", "w": 4,
          "description": "Endpoints (pods) managed by the agent; compare with the pods on the node."}),
        ("Endpoints regenerating", "short",
         [(f'sum(cilium_endpoint_regenerating{{{P}}})', "regenerating")],
         {"type": "stat", "w": 4,
          "description": "Endpoints being regenerated now (seed metric cilium_endpoint_regenerating)."}),
        ("Cilium endpoint state", "short",
         [(f'sum(cilium_endpoint_state{{{P}}}) by (endpoint_state)', "{{endpoint_state}}")],
         {"stack": True, "w": 16,
          "description": "Endpoints per lifecycle state; healthy = all ready."}),
        ("Endpoint regeneration time (90th percentile)", "s",
         [(f'histogram_quantile(0.90, sum(rate(cilium_endpoint_regeneration_time_stats_seconds_bucket{{{P}}}[5m])) by (le, scope))',
           "{{scope}}")],
         {"description": "Time to regenerate an endpoint, per phase (scope=total: whole regeneration)."}),
        ("Endpoint regeneration time (99th percentile)", "s",
         [(f'histogram_quantile(0.99, sum(rate(cilium_endpoint_regeneration_time_stats_seconds_bucket{{{P}}}[5m])) by (le, scope))',
           "{{scope}}")],
         {"description": "p99 policy-to-enforcement latency per phase."}),
        ("Endpoint regenerations", "short",
         [(f'sum(increase(cilium_endpoint_regenerations_total{{{P}}}[5m])) by (outcome)', "{{outcome}}")],
         {"description": "Completed regenerations per 5 minutes, by outcome (fail = previous policy kept)."}),
        ("Identities", "short",
         [(f'sum(cilium_identity{{{P}}}) by (type)', "{{type}}")],
         {"description": "Security identities known to the agent, by type."}),
    ]),
    ("L7 proxy", [
        ("Proxy Redirects", "short",
         [(f'sum(cilium_proxy_redirects{{{P}}}) by (protocol_l7)', "{{protocol_l7}}")],
         {"description": "Active redirects of ports with L7 rules to the proxy, by protocol."}),
        ("Proxy response time (Avg)", "s",
         [(f'sum(rate(cilium_proxy_upstream_reply_seconds_sum{{{P}}}[1m])) by (scope, protocol_l7)'
           f' / sum(rate(cilium_proxy_upstream_reply_seconds_count{{{P}}}[1m])) by (scope, protocol_l7)',
           "{{protocol_l7}} {{scope}}")],
         {"description": "Average upstream reply time through the proxy."}),
        ("Proxy response time (p99)", "s",
         [(f'histogram_quantile(0.99, sum(rate(cilium_proxy_upstream_reply_seconds_bucket{{{P}}}[5m])) by (le, scope, protocol_l7))',
           "{{protocol_l7}} {{scope}}")],
         {"description": "99th percentile upstream reply time through the proxy."}),
        ("L7 parse errors", "reqps",
         [(f'sum(rate(cilium_policy_l7_total{{rule="parse_errors", {P}}}[1m])) by (proxy_type)', "{{proxy_type}}")],
         {"description": "Requests the proxy could not parse (rejected)."}),
    ]),
    ("Health", [
        ("Connectivity Health", "short",
         [(f'sum(cilium_unreachable_nodes{{{P}}})', "unreachable nodes"),
          (f'sum(cilium_unreachable_health_endpoints{{{P}}})', "unreachable health endpoints")],
         {"description": "Nodes and health endpoints the health checker cannot reach (0 = healthy)."}),
        ("Node connectivity status", "short",
         [(f'sum(cilium_node_health_connectivity_status{{{P}}}) by (type, status)', "{{type}} {{status}}")],
         {"description": "Probed nodes by path type and status (reachable, unreachable, unknown)."}),
        ("Node connectivity latency (p99)", "s",
         [(f'histogram_quantile(0.99, sum(rate(cilium_node_health_connectivity_latency_seconds_bucket{{{P}}}[5m])) by (le, type, protocol))',
           "{{type}} {{protocol}}")],
         {"description": "Health probe round-trip time by path type and protocol (icmp, http)."}),
    ]),
    ("Agent", [
        ("CPU Usage per node", "percent",
         [(f'sum(rate(cilium_process_cpu_seconds_total{{{P}}}[1m])) by (pod) * 100', "{{pod}}")],
         {"description": "CPU used by membraned (100% = one core)."}),
        ("Resident memory status", "bytes",
         [(f'sum(cilium_process_resident_memory_bytes{{{P}}}) by (pod)', "{{pod}} resident"),
          (f'sum(cilium_process_virtual_memory_bytes{{{P}}}) by (pod)', "{{pod}} virtual")],
         {"description": "Resident and virtual memory of membraned (BPF maps are kernel memory, not included)."}),
        ("Open file descriptors", "short",
         [(f'sum(cilium_process_open_fds{{{P}}}) by (pod)', "{{pod}} open"),
          (f'sum(cilium_process_max_fds{{{P}}}) by (pod)', "{{pod}} max")],
         {"description": "File descriptors open in membraned and its limit."}),
    ]),
]

GRID_W = 24


def buildPanel(pid, title, unit, targets, opts, x, y, w, h):
    kind = opts.get("type", "timeseries")
    panel = {
        "id": pid,
        "type": kind,
        "title": title,
        "description": opts.get("description", ""),
        "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": x, "y": y},
        "targets": [
            {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i),
             "interval": "", "range": True, "instant": False}
            for i, (expr, legend) in enumerate(targets)
        ],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
    }
    if kind == "timeseries":
        panel["fieldConfig"]["defaults"]["custom"] = {
            "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if opts.get("stack") else "none", "group": "A"},
        }
        panel["fieldConfig"]["defaults"]["min"] = 0
        panel["options"] = {"legend": {"displayMode": "table", "placement": "bottom",
                                       "calcs": ["lastNotNull", "max"]},
                            "tooltip": {"mode": "multi", "sort": "desc"}}
    else:
        panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                            "colorMode": "value", "graphMode": "area", "textMode": "auto",
                            "orientation": "auto", "justifyMode": "auto"}
    return panel


def buildDashboard():
    panels = []
    pid = 1
    y = 0
    for row_title, row_panels in ROWS:
        panels.append({"id": pid, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": GRID_W, "x": 0, "y": y}, "panels": []})
        pid += 1
        y += 1
        x = 0
        for title, unit, targets, opts in row_panels:
            w = opts.get("w", 12)
            h = 8
            if x + w > GRID_W:
                x = 0
                y += h
            panels.append(buildPanel(pid, title, unit, targets, opts, x, y, w, h))
            pid += 1
            x += w
        y += 8
    return {
        "title": "membrane (Cilium Metrics)",
        "uid": "membrane-cilium",
        "description": "membrane: Cilium-compatible policy enforcement and datapath metrics "
                       "(drops by reason and direction, L7 requests, endpoints, regeneration, "
                       "policy, proxy, health, agent). Panels from Cilium's 6658/Helm dashboards.",
        "tags": ["membrane", "cilium", "network-policy"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 36,
        "version": 1,
        "timezone": "",
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "timepicker": {"refresh_intervals": ["5s", "10s", "30s", "1m", "5m"]},
        "links": [],
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]},
        "templating": {"list": [
            {"name": "DS_PROMETHEUS", "label": "Data source", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0, "includeAll": False,
             "multi": False, "options": [], "refresh": 1, "regex": "", "skipUrlSync": False},
            {"name": "pod", "label": "Agent pod", "type": "query", "datasource": DS,
             "definition": "label_values(cilium_version, pod)",
             "query": {"query": "label_values(cilium_version, pod)", "refId": "PodVariable"},
             "current": {}, "hide": 0, "includeAll": True, "allValue": ".*", "multi": True,
             "options": [], "refresh": 2, "regex": "", "sort": 1, "skipUrlSync": False},
        ]},
        "panels": panels,
    }


def render():
    return json.dumps(buildDashboard(), indent=2, ensure_ascii=False) + "\n"


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "membrane-dashboard.json")
    text = render()
    if "--check" in sys.argv[1:]:
        try:
            with open(out, encoding="utf-8") as f:
                current = f.read()
        except OSError as e:
            print(f"{out}: {e}", file=sys.stderr)
            return 1
        if current != text:
            print(f"{out} is stale: run python3 {sys.argv[0]}", file=sys.stderr)
            return 1
        return 0
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
