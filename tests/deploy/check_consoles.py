#!/usr/bin/env python3
"""Live check of the console pages, the alert rules and every panel query against a real
Prometheus (ctest: deploy_console_test). No root needed; loopback only; bounded (~15 s).

1. Starts a fake membraned /metrics (fixture_exporter.py) on 127.0.0.1:<random>.
2. Writes a Prometheus config scraping it every second as job "membrane" (the labels
   deploy/prometheus/prometheus.yml attaches) and loading deploy/prometheus/alerts.yml;
   `promtool check config` must accept it.
3. Starts Debian's prometheus on 127.0.0.1:<random> with a temporary storage dir and
   --web.console.templates/--web.console.libraries = deploy/prometheus/consoles|console_libraries.
4. GET /consoles/membrane.html: 200, every chart title present, the table shows the fixture's
   values (3 endpoints, revision 4), no template error; every script/style it links loads (200).
5. Every dashboard query (with $pod = the agent's pod) and every console query returns data.
6. Every alerting rule loaded and evaluates without error.
The prometheus process is stopped by its PID in all cases (and dies with this script if it is
killed); the temporary directory is removed.
"""
import html
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploy_common as dc  # noqa: E402
from fixture_exporter import FixtureExporter  # noqa: E402

POD = "cilium-membrane"


def query(base, expr):
    status, body = dc.httpGet(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    if status != 200:
        return None, f"HTTP {status}: {body[:300]}"
    return json.loads(body)["data"]["result"], None


def writeConfig(tmp, fixture_port):
    path = os.path.join(tmp, "prometheus.yml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {json.dumps(dc.ALERTS)}
scrape_configs:
  - job_name: membrane
    scrape_interval: 1s
    scrape_timeout: 1s
    static_configs:
      - targets: ["127.0.0.1:{fixture_port}"]
        labels:
          k8s_app: cilium
          pod: {POD}
""")
    r = subprocess.run(["promtool", "check", "config", path], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError(f"promtool check config rejected the test config:\n{r.stdout}{r.stderr}")
    return path


def startPrometheus(tmp, config):
    """Starts prometheus on a free loopback port; retries a few ports if one is taken."""
    for attempt in range(3):
        port = dc.freePort()
        log = os.path.join(tmp, f"prometheus-{attempt}.log")
        proc = dc.startProcess([
            "prometheus", f"--config.file={config}",
            f"--storage.tsdb.path={os.path.join(tmp, f'data-{attempt}')}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.console.templates={dc.CONSOLES}",
            f"--web.console.libraries={dc.CONSOLE_LIBRARIES}",
            "--log.level=warn",
        ], log)
        base = f"http://127.0.0.1:{port}"
        try:
            dc.waitFor(lambda: proc.poll() is not None or dc.httpGet(f"{base}/-/ready", 1.0)[0] == 200,
                       30, "prometheus to be ready")
        except AssertionError:
            dc.stopProcess(proc)
            raise
        if proc.poll() is None:
            return proc, base
        with open(log, encoding="utf-8", errors="replace") as f:
            last_log = f.read()[-2000:]
    raise AssertionError(f"prometheus did not start:\n{last_log}")


def checkConsole(base, problems):
    status, page = dc.httpGet(f"{base}/consoles/membrane.html", 10.0)
    if status != 200:
        problems.append(f"GET /consoles/membrane.html: HTTP {status}: {page[:500]}")
        return
    text = html.unescape(page)
    titles = dc.consoleChartTitles()
    if len(titles) < 15:
        problems.append(f"only {len(titles)} chart titles found in membrane.html")
    for t in titles:
        if f"<h3>{t}</h3>" not in text:
            problems.append(f"console page lacks chart '{t}'")
    for t in ("Cilium Drop Count (INGRESS)", "Cilium Drop Count (EGRESS)", "L7 Requests",
              "Forwarded Packets", "Endpoints by state", "Endpoint regeneration time (99th percentile)",
              "Connectivity Health", "Policies and revision", "Policy Denies: L3/L4", "Policy Denies: L7"):
        if t not in titles:
            problems.append(f"console page is missing the key chart '{t}'")
    if re.search(r"error (executing|parsing) template", text, re.I):
        problems.append("console page shows a template error")
    # Server-side values from the fixture (3 endpoints, revision 4, 0 unreachable nodes).
    for label, want in (("Endpoints", "3"), ("Revision", "4"), ("Unreachable nodes", "0"),
                        ("Version", "0.1.0"), ("Agents up", "1 / 1"),
                        ("Memory", "20MiB"), ("Unreachable health endpoints", "0")):
        m = re.search(rf"<td>{re.escape(label)}</td>\s*<td>(?:<a [^>]*>)?([^<]*)", text)
        if not m or m.group(1).strip() != want:
            problems.append(f"console table '{label}': want {want!r}, got {m.group(1) if m else None!r}")
    # Every graph is a PromConsole.Graph with a JS string expr.
    graphs = page.count("new PromConsole.Graph(")
    if graphs != len(titles):
        problems.append(f"{graphs} PromConsole.Graph calls for {len(titles)} chart titles")
    for asset in sorted(set(re.findall(r'(?:src|href)="(/classic/static/[^"]+)"', page))):
        st, _ = dc.httpGet(base + asset)
        if st != 200:
            problems.append(f"console asset {asset}: HTTP {st}")


def checkQueriesReturnData(base, problems):
    exprs = [(f"dashboard '{t}'", e) for t, e in dc.dashboardQueries(POD)]
    exprs += [("console", e) for e in dc.consoleQueries()]
    for where, e in exprs:
        if "ALERTS" in e:
            continue  # empty unless an alert fires: checked via /api/v1/rules
        result, err = query(base, e)
        if err:
            problems.append(f"{where}: {e}: {err}")
        elif not result:
            problems.append(f"{where}: no data for {e}")
        elif all(v["value"][1] == "NaN" for v in result):
            problems.append(f"{where}: only NaN for {e}")
    return len(exprs)


def checkRules(base, problems):
    status, body = dc.httpGet(f"{base}/api/v1/rules")
    if status != 200:
        problems.append(f"/api/v1/rules: HTTP {status}")
        return 0
    rules = [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]]
    alerting = [r for r in rules if r["type"] == "alerting"]
    if len(alerting) < 12:
        problems.append(f"only {len(alerting)} alerting rules loaded")
    for r in alerting:
        if r.get("health") != "ok":
            problems.append(f"alert {r['name']}: health {r.get('health')} {r.get('lastError', '')}")
    return len(alerting)


def main():
    problems = []
    with tempfile.TemporaryDirectory(prefix=f"membrane-deploy-{os.getpid()}-") as tmp, \
            FixtureExporter() as fixture:
        config = writeConfig(tmp, fixture.port)
        proc, base = startPrometheus(tmp, config)
        try:
            # Three scrapes: rate() and histogram_quantile() need two samples in their window.
            dc.waitFor(lambda: fixture.scrapes() >= 3 and (query(base, "cilium_version")[0] or []),
                       30, "three scrapes of the fixture")
            # ...and one rule evaluation after them.
            dc.waitFor(lambda: all(r.get("health") == "ok" for g in json.loads(
                dc.httpGet(f"{base}/api/v1/rules")[1] or '{"data":{"groups":[]}}')["data"]["groups"]
                for r in g["rules"]) and fixture.scrapes() >= 4, 30, "rule evaluation")
            checkConsole(base, problems)
            n = checkQueriesReturnData(base, problems)
            a = checkRules(base, problems)
        finally:
            dc.stopProcess(proc)
    if problems:
        for p in problems:
            print(f"FAIL: {p}")
        return 1
    print(f"OK: console page renders; {n} dashboard/console queries return data; {a} alert rules healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
