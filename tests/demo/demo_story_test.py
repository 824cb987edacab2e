#!/usr/bin/env python3
"""The demo's story as an integration test (ctest: demo_story_test, label integration, root).

Runs scripts/demo.sh -- the same script `make demo` runs -- against an isolated membraned and a
real Prometheus (Debian's prometheus) with their own ports, directories, BPF root, pod CIDR, host
device and namespace (all derived from this process' PID, so it runs next to other agents), then
asserts:
The app is deployed with `membrane apply -f examples/starwars/http-sw-app.yaml` (2 deathstar pods
behind the deathstar Service, tiefighter, xwing), the policies with `membrane apply -f`, and the
ships curl deathstar.<ns>.svc.cluster.local as the seed does. The test asserts:
  1. every verdict of every step (no policy: both ships land; L3/L4: tiefighter lands, xwing times
     out; L7: POST lands, PUT /v1/exhaust-port and GET /v1 get 403 "Access denied", xwing times out);
  2. every metric change exactly, as Prometheus reports it over /api/v1/query: N L7 requests ->
     received +N, forwarded/denied exact; policy drops equal, event for event, the drops
     `membrane monitor --type drop` saw and the agent's own /metrics delta (how many SYNs a 2 s
     curl retransmits depends on timing on a loaded machine, so that is the exact reference, with
     bytes = drops x 74); the L7 requests `membrane monitor --type l7` saw equal the counters;
     Prometheus' final values equal the agent's own /metrics;
  3. every query of the Grafana dashboard panels and of the console pages (extracted from the JSON
     and the console template by tests/deploy/deploy_common.py) returns data from that Prometheus,
     the L7 proxy families (cilium_policy_l7_*, cilium_proxy_*) included;
  4. the console page renders, and a single chart (?chart=ID) too;
  5. the PNG snapshots (only when Debian's chromium is installed; `make demo` always takes them);
  6. `scripts/demo.sh --stop` stops Prometheus and the agent by PID and removes the pods' processes,
     netns, BPF root, host device, state, the L7 proxy, its ip rule, route table and iptables chain
     -- also when an assertion failed (it runs in `finally`).
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse

SOURCE_DIR = os.environ.get(
    "MEMBRANE_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD_DIR = os.environ.get("MEMBRANE_BUILD_DIR", os.path.join(SOURCE_DIR, "build"))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "deploy"))
import deploy_common as dc  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cilium_dashboards as cd  # noqa: E402

ROUNDS = 3
POD = "cilium-membrane"  # the pod label the demo's scrape config gives the agent
# A SYN as tc sees it: 14 Ethernet + 20 IPv4 + 40 TCP (MSS, SACK-permitted, timestamps, wscale).
SYN_BYTES = 74

problems = []


def check(cond, what):
    if not cond:
        problems.append(what)
    return cond


def query(base, expr, at=None):
    args = {"query": expr}
    if at is not None:
        args["time"] = f"{at:.3f}"
    status, body = dc.httpGet(f"{base}/api/v1/query?" + urllib.parse.urlencode(args))
    if status != 200:
        return None, f"HTTP {status}: {body[:300]}"
    return json.loads(body)["data"]["result"], None


def agentValue(metrics_text, name, labels):
    """Sum of the samples of `name` whose labels include `labels` (dict) in the agent's /metrics."""
    total = 0.0
    for line in metrics_text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(re.fullmatch(v, got.get(k, "")) for k, v in labels.items()):
            total += float(m.group(4))
    return total


def freePortPair(start):
    """The first even port >= start with it and the next one free on 127.0.0.1 (the proxy's listeners)."""
    for p in range(start, 32000, 2):
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", p))
                b.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
    raise RuntimeError("no free port pair for the L7 proxy below 32000")


def isolation():
    pid = os.getpid()
    d = f"/tmp/membrane-demo-test-{pid}"
    proxy_port = freePortPair(30000 + (pid % 900) * 2)
    return d, {
        "MEMBRANE_DEMO_PROMETHEUS_PORT": str(dc.freePort()),
        "MEMBRANE_DEMO_METRICS_PORT": str(dc.freePort()),
        "MEMBRANE_DEMO_RUN_DIR": f"{d}/run",
        "MEMBRANE_DEMO_LOG_DIR": f"{d}/log",
        "MEMBRANE_DEMO_SNAPSHOT_DIR": f"{d}/snapshots",
        "MEMBRANE_DEMO_SNAPSHOTS": "1" if shutil.which("chromium") else "0",
        "MEMBRANE_DEMO_ROUNDS": str(ROUNDS),
        "MEMBRANE_DEMO_NAMESPACE": f"demo{pid}",
        "MEMBRANE_DEMO_SOCKET": f"{d}/membrane.sock",
        "MEMBRANE_DEMO_STATE_DIR": f"{d}/state",
        "MEMBRANE_DEMO_BPF_ROOT": f"/sys/fs/bpf/membrane-demo-{pid}",
        # 10.220-229.x.0/24 pods, 10.210-219.x.0/24 services: next to the agent fixture's
        # 10.240-249 pods and 10.230-239 services, never overlapping them.
        "MEMBRANE_DEMO_POD_CIDR": f"10.{220 + (pid // 256) % 10}.{pid % 256}.0/24",
        "MEMBRANE_DEMO_SERVICE_CIDR": f"10.{210 + (pid // 256) % 10}.{pid % 256}.0/24",
        "MEMBRANE_DEMO_HOST_DEVICE": f"mbdm{pid % 100000000}",
        # The L7 proxy's node-global plumbing, apart from the agent fixture's (ports 20000-29999,
        # tables 10000-109999, priorities 1000-20999, chains MBIT_*).
        "MEMBRANE_DEMO_PROXY_SOCKET": f"{d}/proxy.sock",
        "MEMBRANE_DEMO_PROXY_PORTS": f"{proxy_port}-{proxy_port + 1}",
        "MEMBRANE_DEMO_PROXY_TABLE": str(200000 + pid % 100000),
        "MEMBRANE_DEMO_PROXY_RULE_PRIORITY": str(21000 + pid % 10000),
        "MEMBRANE_DEMO_PROXY_CHAIN": f"MBDM_{pid}",
    }


def checkVerdicts(res):
    rounds = res["rounds"]
    by_step = {}
    for v in res["verdicts"]:
        by_step.setdefault(v["step"], []).append((v["ship"], v["request"], v["outcome"]))
    land = "POST /v1/request-landing"
    check(by_step.get("no_policy") == [("tiefighter", land, "Ship landed"), ("xwing", land, "Ship landed")] * rounds
          + [("tiefighter", "ping deathstar pod x3", "3/3 replies")],
          f"no policy: both ships land {rounds}x each; got {by_step.get('no_policy')}")
    check(by_step.get("l3_l4") == [("tiefighter", land, "Ship landed"),
                                   ("xwing", land, "timeout (no answer in 2 s)")] * rounds,
          f"L3/L4: tiefighter lands, xwing times out; got {by_step.get('l3_l4')}")
    spoof = [(ship, outcome) for ship, _, outcome in by_step.get("spoof", [])]
    check(spoof == [("xwing", "sent")] * rounds, f"spoofing: xwing sends {rounds} packets; got {by_step.get('spoof')}")
    check(res["steps"] == {"no_policy": "ran", "l3_l4": "ran", "spoof": "ran", "l7": "ran"}, f"steps: {res['steps']}")
    check(by_step.get("l7") == [("tiefighter", land, "Ship landed"),
                                ("tiefighter", "PUT /v1/exhaust-port", "403 Access denied"),
                                ("tiefighter", "GET /v1", "403 Access denied"),
                                ("xwing", land, "timeout (no answer in 2 s)")] * rounds,
          f"L7: POST lands, PUT and GET denied, xwing times out; got {by_step.get('l7')}")


def checkMetrics(res):
    m = res["metrics"]
    agent = res["agent"]
    mon = res["monitor"]
    rounds = res["rounds"]

    def d(before, after, name):
        return m[after][name] - m[before][name]

    def ad(before, after, name):
        return agent[after][name] - agent[before][name]

    # Every counter the agent reported at each step's end is what Prometheus reported then.
    for step in agent:
        for name, v in agent[step].items():
            check(m[step][name] == v, f"after {step}: Prometheus says {name} = {m[step][name]}, the agent's /metrics {v}")
    # After deploying: 4 pods + the health endpoint, no policy, the fresh agent's revision 1.
    for name, want in (("endpoints", 5), ("policies", 0), ("revision", 1), ("import_errors", 0),
                       ("endpoints_enforcing_ingress", 0), ("drops_ingress_policy", 0), ("drops_egress_spoofed", 0),
                       ("l7_received", 0)):
        check(m["deploy"][name] == want, f"after deploy: {name} = {m['deploy'][name]}, want {want}")
    # No policy: nothing dropped, nothing changed.
    for name in ("drops_ingress_policy", "drops_egress_policy", "drops_egress_spoofed", "policies", "revision",
                 "policy_changes_ok", "policy_changes_failed", "endpoints", "l7_received"):
        check(d("deploy", "no_policy", name) == 0,
              f"no-policy step: {name} changed by {d('deploy', 'no_policy', name)}, want +0")
    # L3/L4: xwing's SYNs (each curl's first one and its retransmissions within 2 s) are dropped at
    # a deathstar pod's ingress, 74 bytes each. The exact count is the datapath's: Prometheus' delta
    # = the agent's /metrics delta = the drop events the monitor saw; at least one per curl.
    drops = mon["drops_l3_l4"]
    check(drops >= rounds, f"L3/L4: the monitor saw {drops} drops for {rounds} xwing requests")
    for name, want in (("drops_ingress_policy", drops), ("drop_bytes_ingress_policy", drops * SYN_BYTES),
                       ("drops_egress_policy", 0), ("policies", 1), ("revision", 1), ("policy_changes_ok", 1),
                       ("policy_changes_failed", 0), ("endpoints_enforcing_ingress", 2), ("endpoints", 0),
                       ("l7_received", 0)):
        check(d("no_policy", "l3_l4", name) == want,
              f"L3/L4 step: {name} changed by {d('no_policy', 'l3_l4', name)}, want +{want}")
    check(ad("no_policy", "l3_l4", "drops_ingress_policy") == drops,
          f"L3/L4: agent /metrics drops +{ad('no_policy', 'l3_l4', 'drops_ingress_policy')}, monitor saw {drops}")
    # Spoofing: each packet claiming a deathstar pod's address is dropped leaving xwing, nothing else.
    for name, want in (("drops_egress_spoofed", rounds), ("drops_ingress_policy", 0), ("drops_egress_policy", 0),
                       ("revision", 0)):
        check(d("l3_l4", "spoof", name) == want,
              f"spoofing step: {name} changed by {d('l3_l4', 'spoof', name)}, want +{want}")
    # L7: per round tiefighter's POST (forwarded), PUT and GET (denied, 403); xwing dropped at L3/L4.
    drops7 = mon["drops_l7"]
    check(drops7 >= rounds, f"L7: the monitor saw {drops7} drops for {rounds} xwing requests")
    for name, want in (("l7_received", 3 * rounds), ("l7_forwarded", rounds), ("l7_denied", 2 * rounds),
                       ("drops_ingress_policy", drops7), ("drop_bytes_ingress_policy", drops7 * SYN_BYTES),
                       ("drops_egress_spoofed", 0), ("policies", 0), ("revision", 1), ("policy_changes_ok", 1),
                       ("policy_changes_failed", 0)):
        check(d("spoof", "l7", name) == want, f"L7 step: {name} changed by {d('spoof', 'l7', name)}, want +{want}")
    check(ad("spoof", "l7", "drops_ingress_policy") == drops7,
          f"L7: agent /metrics drops +{ad('spoof', 'l7', 'drops_ingress_policy')}, monitor saw {drops7}")
    for key, want in (("l7_requests", 3 * rounds), ("l7_forwarded", rounds), ("l7_denied", 2 * rounds)):
        check(mon[key] == want, f"membrane monitor --type l7 saw {key} = {mon[key]}, want {want}")
    # The policy update trigger runs once per policy change (the L3/L4 import, the L7 replace), and
    # identities change only while deploying: the 3 new label sets (deathstar, tiefighter, xwing)
    # each reach every endpoint's policy once. The health endpoint's reserved identity (4) is known
    # from the start, and the second deathstar pod shares the first one's identity.
    check(m["deploy"]["policy_trigger_runs"] == 0, f"after deploy: {m['deploy']['policy_trigger_runs']} policy "
          "trigger runs for policy changes, want 0")
    check(m["deploy"]["identity_updates"] == 3,
          f"after deploy: {m['deploy']['identity_updates']} identity updates, want 3")
    steps = ["deploy", "no_policy", "l3_l4", "spoof", "l7"]
    for before, after in zip(steps, steps[1:]):
        changes = 1 if after in ("l3_l4", "l7") else 0
        for name, want in (("policy_trigger_runs", changes), ("identity_updates", 0), ("map_ops_untimed", 0)):
            check(d(before, after, name) == want,
                  f"{after} step: {name} changed by {d(before, after, name)}, want +{want}")
    # --metrics +cilium_bpf_syscall_duration_seconds: every counted map syscall since the agent's
    # start is timed (map_ops_untimed constant above); the L3/L4 import writes policy entries.
    check(d("no_policy", "l3_l4", "map_syscalls") > 0, "L3/L4 step: no map syscall timed for the policy import")


def checkAgainstAgent(res, metrics_port):
    """Prometheus' last values equal the agent's own /metrics (for counters traffic no longer moves)."""
    status, text = dc.httpGet(f"http://127.0.0.1:{metrics_port}/metrics")
    if not check(status == 200, f"agent /metrics: HTTP {status}"):
        return
    last = res["metrics"]["l7"]
    for key, name, labels in (
            ("l7_received", "cilium_policy_l7_total", {"rule": "received"}),
            ("l7_forwarded", "cilium_policy_l7_total", {"rule": "forwarded"}),
            ("l7_denied", "cilium_policy_l7_total", {"rule": "denied"}),
            ("drops_ingress_policy", "cilium_drop_count_total", {"direction": "INGRESS", "reason": "Policy denied"}),
            ("drop_bytes_ingress_policy", "cilium_drop_bytes_total", {"direction": "INGRESS", "reason": "Policy denied"}),
            ("drops_egress_spoofed", "cilium_drop_count_total", {"direction": "EGRESS", "reason": "Invalid source ip"}),
            ("policies", "cilium_policy", {}), ("revision", "cilium_policy_max_revision", {}),
            ("policy_changes_failed", "cilium_policy_change_total", {"outcome": "fail"}),
            ("endpoints", "cilium_endpoint_count", {})):
        v = agentValue(text, name, labels)
        check(v == last[key], f"{key}: Prometheus says {last[key]}, the agent's /metrics says {v}")


def checkPanelQueries(base, at):
    """Every dashboard/console query has data, evaluated at the end of the L7 step (`at`): their
    rate()s over [1m] then cover the L7 requests however long the snapshots took after it."""
    exprs = [(f"dashboard '{t}'", e) for t, e in dc.dashboardQueries(POD)]
    exprs += [("console membrane.html", e) for e in dc.consoleQueries()]
    checked = 0
    for where, e in exprs:
        if "ALERTS" in e:
            continue  # empty unless an alert fires
        result, err = query(base, e, at)
        checked += 1
        if err:
            problems.append(f"{where}: {e}: {err}")
        elif not result:
            problems.append(f"{where}: no data for {e}")
        elif all(v["value"][1] == "NaN" for v in result):
            problems.append(f"{where}: only NaN for {e}")
    return checked


def checkCiliumDashboards(base, at):
    """Cilium's own dashboards, imported unchanged, with their default $pod (cilium.*): every panel
    whose data a one-node membrane has shows data; every other panel is listed with its reason and
    has none (tests/demo/cilium_dashboards.py). Returns (panels with data, panels n/a)."""
    with_data = not_applicable = 0
    for dashboard, title, selectors, want in cd.PANELS:
        where = f"Cilium dashboard {dashboard} panel '{title}'"
        results = []
        for metric, extra in selectors:
            e = cd.selectorExpr(dashboard, metric, extra)
            result, err = query(base, e, at)
            if err:
                problems.append(f"{where}: {e}: {err}")
                result = []
            results.append((e, result))
        if want == cd.DATA:
            with_data += 1
            for e, result in results:
                check(bool(result), f"{where}: no data for {e}")
        elif want != cd.EVENT:
            not_applicable += 1
            for e, result in results:
                check(not result, f"{where}: listed as n/a ({want}) but {e} has data: update cilium_dashboards.py")
    return with_data, not_applicable


def checkConsole(base):
    status, page = dc.httpGet(f"{base}/consoles/membrane.html", 10)
    check(status == 200 and "Cilium Drop Count (INGRESS)" in page and "error executing template" not in page,
          f"console page: HTTP {status} {page[:300]}")
    status, page = dc.httpGet(f"{base}/consoles/membrane.html?chart=drops_ingress", 10)
    check(status == 200 and "#chart_drops_ingress { display: block" in page,
          f"console page ?chart=drops_ingress: HTTP {status} {page[:300]}")


def checkSnapshots(res, env):
    if env["MEMBRANE_DEMO_SNAPSHOTS"] != "1":
        print("snapshots: skipped (chromium is not installed; make demo installs it)")
        return
    shots = res["snapshots"]
    check(len(shots) == 9, f"{len(shots)} snapshots, want 9: {shots}")
    for p in shots:
        with open(p, "rb") as f:
            data = f.read()
        check(data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10000, f"{p}: not a PNG with content ({len(data)} B)")


def podProcessesLeft(env):
    """The pods' processes (PIDs and commands the demo saved in RUN_DIR/pods.json after deploying)
    that still run: same PID and same command line."""
    out = []
    try:
        with open(os.path.join(env["MEMBRANE_DEMO_RUN_DIR"], "pods.json"), encoding="utf-8") as f:
            pods = json.load(f)
    except (OSError, ValueError):
        return out
    for p in pods:
        try:
            with open(f"/proc/{p['pid']}/cmdline", "rb") as f:
                cmd = [a.decode() for a in f.read().split(b"\0") if a]
        except (OSError, KeyError):
            continue
        if cmd == p.get("command"):
            out.append(f"pod {p['name']}'s process {p['pid']} ({' '.join(cmd)}) still runs")
    return out


def leftovers(env):
    ns = env["MEMBRANE_DEMO_NAMESPACE"]
    out = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    if f"membrane_{ns}_" in netns:
        out.append(f"netns left: {netns}")
    if os.path.exists(env["MEMBRANE_DEMO_BPF_ROOT"]):
        out.append(f"{env['MEMBRANE_DEMO_BPF_ROOT']} left")
    if subprocess.run(["ip", "link", "show", env["MEMBRANE_DEMO_HOST_DEVICE"]], capture_output=True).returncode == 0:
        out.append(f"host device {env['MEMBRANE_DEMO_HOST_DEVICE']} left")
    # Every process the demo started: nothing runs the demo's config, state or server any more.
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    for line in ps.splitlines():
        if any(k in line for k in (env["MEMBRANE_DEMO_RUN_DIR"], env["MEMBRANE_DEMO_SOCKET"],
                                   env["MEMBRANE_DEMO_BPF_ROOT"], env["MEMBRANE_DEMO_PROXY_SOCKET"])):
            out.append(f"process left: {line.strip()}")
    out += podProcessesLeft(env)
    # The L7 proxy's plumbing: its ip rule and route table, the iptables chain, the control socket.
    table = env["MEMBRANE_DEMO_PROXY_TABLE"]
    for what in (["rule", "show", "table", table], ["route", "show", "table", table]):
        got = subprocess.run(["ip", "-4"] + what, capture_output=True, text=True).stdout.strip()
        if got:
            out.append(f"ip {' '.join(what)}: {got}")
    if subprocess.run(["iptables", "-w", "5", "-t", "mangle", "-n", "-L", env["MEMBRANE_DEMO_PROXY_CHAIN"]],
                      capture_output=True).returncode == 0:
        out.append(f"iptables chain {env['MEMBRANE_DEMO_PROXY_CHAIN']} left")
    if os.path.exists(env["MEMBRANE_DEMO_PROXY_SOCKET"]):
        out.append(f"{env['MEMBRANE_DEMO_PROXY_SOCKET']} left")
    for pidfile in ("prometheus.pid", "membraned.pid"):
        if os.path.exists(os.path.join(env["MEMBRANE_DEMO_RUN_DIR"], pidfile)):
            out.append(f"{pidfile} left")
    return out


def checkRun(r, env):
    """Every check on a finished demo run; returns the number of dashboard/console queries checked."""
    with open(os.path.join(env["MEMBRANE_DEMO_RUN_DIR"], "result.json"), encoding="utf-8") as f:
        res = json.load(f)
    base = res["prometheus"]
    checkVerdicts(res)
    checkMetrics(res)
    checkAgainstAgent(res, env["MEMBRANE_DEMO_METRICS_PORT"])
    checked = checkPanelQueries(base, res["times"]["l7"])
    with_data, not_applicable = checkCiliumDashboards(base, res["times"]["l7"])
    print(f"Cilium's dashboards (Helm agent dashboard and grafana.com 6658, unchanged, $pod=All): "
          f"{with_data} panels with data, {not_applicable} panels without the data on one node (listed)")
    checkConsole(base)
    checkSnapshots(res, env)
    check("Report: metric changes as Prometheus sees them" in r.stdout and "make demo-stop" in r.stdout
          and "/consoles/membrane.html" in r.stdout, "the report lacks the metric table, the URLs or how to stop")
    return checked


def main():
    if os.geteuid() != 0:
        print("SKIP: needs root (BPF, network namespaces)")
        return 77
    for b in ("membraned", "membrane"):
        if not os.access(os.path.join(BUILD_DIR, "bin", b), os.X_OK):
            print(f"FAIL: {BUILD_DIR}/bin/{b} not built")
            return 1
    d, env_extra = isolation()
    os.makedirs(d, exist_ok=True)
    env = dict(os.environ, **env_extra)
    demo = [os.path.join(SOURCE_DIR, "scripts", "demo.sh")]
    t0 = time.monotonic()
    checked = 0
    took = 0.0
    try:
        r = subprocess.run(demo + [BUILD_DIR], env=env, capture_output=True, text=True, timeout=200)
        took = time.monotonic() - t0
        print(r.stdout[-6000:])
        if check(r.returncode == 0, f"demo.sh exited {r.returncode}: {r.stderr[-3000:]}"):
            checked = checkRun(r, env)
    finally:
        s = subprocess.run(demo + ["--stop", BUILD_DIR], env=env, capture_output=True, text=True, timeout=120)
        check(s.returncode == 0, f"demo.sh --stop exited {s.returncode}: {s.stderr}")
        for p in leftovers(env):
            problems.append(f"after --stop: {p}")
    if problems:
        for p in problems:
            print(f"FAIL: {p}")
        print(f"(logs kept in {d}/log)")
        return 1
    shutil.rmtree(d, ignore_errors=True)
    print(f"OK: story in {took:.0f} s; every verdict and metric delta exact; {checked} dashboard/console queries "
          f"return data; stop leaves nothing")
    return 0

if __name__ == "__main__":
    sys.exit(main())
