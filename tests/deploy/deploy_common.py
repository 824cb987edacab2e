"""Shared helpers for the deploy tests: where the files are, the queries they contain, the metric
names membrane exports, and promtool/prometheus process handling.

Also usable from other tests (e.g. the demo's integration test) to get every dashboard and console
query:  python3 tests/deploy/deploy_common.py --queries [--pod NAME]   (JSON list on stdout)
"""
import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

SOURCE_DIR = os.environ.get(
    "MEMBRANE_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
DASHBOARD = os.path.join(SOURCE_DIR, "deploy", "grafana", "membrane-dashboard.json")
DASHBOARD_GENERATOR = os.path.join(SOURCE_DIR, "deploy", "grafana", "generate_dashboard.py")
CONSOLES = os.path.join(SOURCE_DIR, "deploy", "prometheus", "consoles")
CONSOLE_LIBRARIES = os.path.join(SOURCE_DIR, "deploy", "prometheus", "console_libraries")
CONSOLE_PAGE = os.path.join(CONSOLES, "membrane.html")
ALERTS = os.path.join(SOURCE_DIR, "deploy", "prometheus", "alerts.yml")

# Metric families membrane exports (docs/metrics.md) plus the L7 proxy and health families that
# come with issue 5 (same names as Cilium). A query naming anything else is a typo.
KNOWN_METRICS = {
    "cilium_version", "cilium_endpoint_count", "cilium_endpoint", "cilium_endpoint_regenerating",
    "cilium_endpoint_state", "cilium_endpoint_regenerations_total",
    "cilium_endpoint_regeneration_time_stats_seconds",
    "cilium_policy", "cilium_policy_max_revision", "cilium_policy_change_total",
    "cilium_policy_import_errors_total", "cilium_policy_endpoint_enforcement_status",
    "cilium_identity",
    "cilium_drop_count_total", "cilium_drop_bytes_total", "cilium_forward_count_total",
    "cilium_forward_bytes_total", "cilium_bpf_map_pressure",
    "cilium_datapath_conntrack_gc_runs_total", "cilium_datapath_conntrack_gc_entries",
    "cilium_datapath_conntrack_gc_duration_seconds",
    "cilium_unreachable_nodes", "cilium_unreachable_health_endpoints",
    "cilium_node_health_connectivity_status", "cilium_node_health_connectivity_latency_seconds",
    "cilium_process_cpu_seconds_total", "cilium_process_resident_memory_bytes",
    "cilium_process_virtual_memory_bytes", "cilium_process_open_fds", "cilium_process_max_fds",
    "cilium_process_start_time_seconds",
    "cilium_policy_l7_total", "cilium_policy_l7_received_total", "cilium_policy_l7_forwarded_total",
    "cilium_policy_l7_denied_total", "cilium_policy_l7_parse_errors_total",
    "cilium_proxy_redirects", "cilium_proxy_upstream_reply_seconds", "cilium_policy_implementation_delay",
    "cilium_identity_label_sources", "cilium_agent_bootstrap_seconds", "cilium_agent_api_process_time_seconds",
    "cilium_errors_warnings_total", "cilium_controllers_runs_total", "cilium_controllers_runs_duration_seconds",
    "cilium_controllers_failing", "cilium_ip_addresses", "cilium_ipam_capacity", "cilium_nodes_all_num",
    "cilium_nodes_all_events_received_total", "cilium_bpf_map_capacity", "cilium_bpf_maps_virtual_memory_max_bytes",
    "cilium_bpf_progs_virtual_memory_max_bytes", "cilium_services_events_total",
}
HISTOGRAMS = {"cilium_endpoint_regeneration_time_stats_seconds",
              "cilium_datapath_conntrack_gc_duration_seconds",
              "cilium_node_health_connectivity_latency_seconds", "cilium_proxy_upstream_reply_seconds",
              "cilium_policy_implementation_delay", "cilium_agent_api_process_time_seconds",
              "cilium_controllers_runs_duration_seconds"}


def metricNames(expr):
    """Cilium metric families an expression reads (histogram suffixes folded)."""
    names = set()
    for tok in re.findall(r"\bcilium_[a-z0-9_]+", expr):
        for suffix in ("_bucket", "_sum", "_count"):
            base = tok[: -len(suffix)] if tok.endswith(suffix) else None
            if base in HISTOGRAMS:
                tok = base
                break
        names.add(tok)
    return names


def dashboardPanels(dashboard):
    """Every non-row panel, including panels nested in collapsed rows."""
    for p in dashboard.get("panels", []):
        if p.get("type") == "row":
            yield from p.get("panels", [])
        else:
            yield p


def dashboardQueries(pod=".*"):
    """[(panel title, expr)] with Grafana's $pod replaced by `pod` (a regex)."""
    with open(DASHBOARD, encoding="utf-8") as f:
        d = json.load(f)
    out = []
    for p in dashboardPanels(d):
        for t in p.get("targets", []):
            out.append((p.get("title", ""), t.get("expr", "").replace("$pod", pod)))
    return out


def consoleQueries():
    """Every PromQL string in membrane.html: the raw (backquoted) template strings, plus the
    one double-quoted query ("cilium_version")."""
    with open(CONSOLE_PAGE, encoding="utf-8") as f:
        text = f.read()
    exprs = re.findall(r"`([^`]+)`", text)
    exprs += re.findall(r'query "([^"]+)"', text)
    return exprs


def consoleChartTitles():
    """Titles of the charts (membrane_graph / membrane_graph2 second argument)."""
    with open(CONSOLE_PAGE, encoding="utf-8") as f:
        text = f.read()
    return re.findall(r'template "membrane_graph2?" \(args "[A-Za-z0-9_]+" "([^"]+)"', text)


def freePort():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def httpGet(url, timeout=5.0):
    """(status, body) of a GET; (None, "") when nothing answers. HTTP errors return their status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError):
        return None, ""


def _dieWithParent():
    # The child gets SIGKILL if this test process dies (ctest timeout, Ctrl-C): never a stray
    # prometheus left behind.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def startProcess(argv, log_path):
    log = open(log_path, "wb")
    try:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=_dieWithParent)
    finally:
        log.close()


def stopProcess(proc, grace=10.0):
    """SIGTERM this one process (by its PID), SIGKILL it after `grace` seconds."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)


def waitFor(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


if __name__ == "__main__":
    if "--queries" in sys.argv:
        pod = sys.argv[sys.argv.index("--pod") + 1] if "--pod" in sys.argv else ".*"
        items = [{"source": "grafana", "panel": t, "expr": e} for t, e in dashboardQueries(pod)]
        items += [{"source": "console", "panel": "", "expr": e} for e in consoleQueries()]
        json.dump(items, sys.stdout, indent=1)
        print()
    else:
        print(__doc__)
