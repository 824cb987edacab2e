#!/usr/bin/env python3
"""Checks deploy/grafana/membrane-dashboard.json (ctest: deploy_dashboard_test).

- it is valid JSON, importable: schemaVersion >= 36, a datasource variable DS_PROMETHEUS of type
  prometheus, a `pod` query variable; unique panel ids; grid positions inside 24 columns;
- every panel has a title, the templated datasource, and targets with a non-empty expr that
  filters on $pod;
- the panels the issue asks for are there (seed charts, 6658 policy/datapath panels);
- every metric a query reads is one membrane exports (catches typos);
- every expression parses: all of them (dashboard and console page) are written into a rule file
  as recording rules and checked with `promtool check rules`;
- the JSON is what deploy/grafana/generate_dashboard.py produces.
Exit 0 when all hold; otherwise prints every problem and exits 1.
"""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploy_common as dc  # noqa: E402

REQUIRED_TITLES = [
    "Cilium Drop Count (INGRESS)", "Cilium Drop Count (EGRESS)", "L7 Requests",
    "L7 Requests (v1.x counters)", "Policy Denies: L3/L4", "Policy Denies: L7",
    "Dropped Ingress Traffic", "Dropped Egress Traffic", "Forwarded Packets", "Forwarded Traffic",
    "IPv4 Conntrack", "BPF map pressure", "Policies Per Node", "Policy Revision",
    "Policy Import Errors", "Policy Changes by Outcome", "Endpoints policy enforcement status",
    "Endpoints", "Cilium endpoint state", "Endpoint regeneration time (90th percentile)",
    "Endpoint regeneration time (99th percentile)", "Endpoint regenerations", "Proxy Redirects",
    "Proxy response time (Avg)", "Proxy response time (p99)", "Connectivity Health",
    "CPU Usage per node", "Resident memory status", "Open file descriptors",
]


def checkStructure(d, problems):
    import json  # noqa: F401 (loaded by caller)
    if d.get("schemaVersion", 0) < 36:
        problems.append(f"schemaVersion {d.get('schemaVersion')} < 36")
    for key in ("title", "uid", "panels", "templating"):
        if key not in d:
            problems.append(f"dashboard has no '{key}'")
    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("DS_PROMETHEUS")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append("no datasource variable DS_PROMETHEUS of type datasource/prometheus")
    pod = variables.get("pod")
    if not pod or pod.get("type") != "query" or "cilium_version" not in str(pod.get("query")):
        problems.append("no `pod` query variable over cilium_version")
    elif pod.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
        problems.append("`pod` variable does not use ${DS_PROMETHEUS}")

    ids = set()
    titles = []
    for p in d.get("panels", []):
        pid = p.get("id")
        if pid in ids:
            problems.append(f"duplicate panel id {pid}")
        ids.add(pid)
        g = p.get("gridPos", {})
        if not all(k in g for k in ("h", "w", "x", "y")) or g["x"] < 0 or g["x"] + g["w"] > 24:
            problems.append(f"panel {pid} '{p.get('title')}': bad gridPos {g}")
        if p.get("type") == "row":
            continue
        title = p.get("title", "").strip()
        where = f"panel {pid} '{title}'"
        if not title:
            problems.append(f"panel {pid} has no title")
        titles.append(title)
        if p.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
            problems.append(f"{where}: datasource is not ${{DS_PROMETHEUS}}")
        targets = p.get("targets", [])
        if not targets:
            problems.append(f"{where}: no targets")
        refs = set()
        for t in targets:
            expr = t.get("expr", "").strip()
            if not expr:
                problems.append(f"{where}: target {t.get('refId')} has no expr")
                continue
            if t.get("refId") in refs or not t.get("refId"):
                problems.append(f"{where}: missing or duplicate refId {t.get('refId')}")
            refs.add(t.get("refId"))
            if t.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
                problems.append(f"{where}: target {t.get('refId')} datasource is not ${{DS_PROMETHEUS}}")
            if 'pod=~"$pod"' not in expr:
                problems.append(f"{where}: expr does not filter on pod=~\"$pod\": {expr}")
            unknown = dc.metricNames(expr) - dc.KNOWN_METRICS
            if unknown:
                problems.append(f"{where}: unknown metrics {sorted(unknown)} in {expr}")
    if len(titles) != len(set(titles)):
        problems.append("duplicate panel titles")
    for want in REQUIRED_TITLES:
        if want not in titles:
            problems.append(f"required panel '{want}' is missing")
    return titles


def checkExpressionsParse(problems):
    """All dashboard and console expressions as recording rules -> promtool check rules."""
    exprs = [e for _, e in dc.dashboardQueries(".*")] + dc.consoleQueries()
    for e in dc.consoleQueries():
        unknown = dc.metricNames(e) - dc.KNOWN_METRICS
        if unknown:
            problems.append(f"console: unknown metrics {sorted(unknown)} in {e}")
    with tempfile.TemporaryDirectory(prefix=f"membrane-deploy-{os.getpid()}-") as tmp:
        path = os.path.join(tmp, "queries.yml")
        with open(path, "w", encoding="utf-8") as f:
            f.write("groups:\n  - name: membrane_dashboard_queries\n    rules:\n")
            for i, e in enumerate(exprs):
                # JSON strings are valid YAML double-quoted scalars.
                import json
                f.write(f"      - record: membrane:query_{i}\n        expr: {json.dumps(e)}\n")
        r = subprocess.run(["promtool", "check", "rules", path], capture_output=True, text=True,
                           timeout=60)
        if r.returncode != 0:
            problems.append(f"promtool check rules failed:\n{r.stdout}{r.stderr}")
        elif f"{len(exprs)} rules found" not in r.stdout:
            problems.append(f"promtool saw a different number of rules than {len(exprs)}:\n{r.stdout}")
    return len(exprs)


def main():
    import json
    problems = []
    try:
        with open(dc.DASHBOARD, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        print(f"FAIL: {dc.DASHBOARD}: {e}")
        return 1
    titles = checkStructure(d, problems)
    n = checkExpressionsParse(problems)
    r = subprocess.run([sys.executable, dc.DASHBOARD_GENERATOR, "--check"], capture_output=True,
                       text=True, timeout=60)
    if r.returncode != 0:
        problems.append(f"generator check failed: {r.stderr.strip()}")
    if problems:
        for p in problems:
            print(f"FAIL: {p}")
        return 1
    print(f"OK: {len(titles)} panels, {n} expressions (dashboard + console) parse with promtool")
    return 0


if __name__ == "__main__":
    sys.exit(main())
