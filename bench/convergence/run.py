#!/usr/bin/env python3
"""Policy convergence benchmark (issue 3, docs/benchmarks.md "Policy convergence").

    bench/convergence/run.py [--build BUILD_DIR] [--endpoints 500] [--policies 250] [--changes 25]
                             [--smoke] [--json OUT.json] [--max-seconds 1200]

Starts an isolated membraned (own socket, state dir, bpf root, pod CIDR, host device, metrics
port, all derived from this process' pid), creates N real endpoints (a netns + veth each;
creation time is not what is measured), then measures:
  * bulk: one `PUT /v1/policy` with P policies (a realistic mix: app/tier selectors, L4 ports,
    CIDR egress, deny rules, Kubernetes NetworkPolicies) until `GET /v1/policy/wait?revision=R`
    says every endpoint enforces it; agent CPU time (utime+stime from /proc/<pid>/stat) and
    policy map operations (cilium_bpf_map_ops_total) over that interval;
  * changes: C single-policy changes (one policy's port changes), each import -> wait; p50/p99
    latency and map updates per change.
--smoke: 20 endpoints, 10 policies, 3 changes (the integration test that keeps this script alive).

Everything created (agent process, endpoints with their netns/veths, routes, pins, state) is
removed on exit, on failure and on Ctrl-C: the agent is stopped by PID, then `membraned cleanup`
with the same flags removes its kernel objects. Prints a Markdown table; exit 0 on success.
"""
import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class Api:
    def __init__(self, path):
        self.path = path
        self.conn = None

    def call(self, method, target, body=None, timeout=60):
        data = json.dumps(body) if body is not None else None
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = UnixHTTPConnection(self.path, timeout)
            self.conn.timeout = timeout
            try:
                self.conn.request(method, target, body=data, headers={"Content-Type": "application/json"})
                resp = self.conn.getresponse()
                raw = resp.read()
                break
            except (ConnectionError, http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        if resp.status >= 300:
            raise RuntimeError(f"{method} {target}: HTTP {resp.status}: {parsed}")
        return parsed


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return text


def map_ops(port, map_name="mb_policy_v1"):
    """{operation: count} of successful ops on map_name."""
    out = {}
    pat = re.compile(r'^cilium_bpf_map_ops_total\{map_name="([^"]+)",operation="([^"]+)",outcome="success"\} (\S+)$')
    for line in scrape(port).splitlines():
        m = pat.match(line)
        if m and m.group(1) == map_name:
            out[m.group(2)] = float(m.group(3))
    return out


def percentile(values, q):
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


# --- workload ----------------------------------------------------------------------------------

APPS = 10
TIERS = ["frontend", "backend", "db"]


def namespaces(tag, n):
    return [f"{tag}-n{k}" for k in range(n)]


def pod_labels(i):
    return {"app": f"app{i % APPS}", "tier": TIERS[i % len(TIERS)]}


def policy_doc(i, nss, port_shift=0):
    """The i-th policy: a deterministic, realistic mix of kinds and features."""
    ns = nss[i % len(nss)]
    app = f"app{i % APPS}"
    # Same namespace as the subject (pods of namespace k have i % namespaces == k): i + 5 keeps it.
    peer_app = f"app{(i + 5) % APPS}"
    tier = TIERS[i % len(TIERS)]
    port = 8000 + (i % 50) + port_shift
    name = f"p{i}"
    kind = i % 10
    if kind == 0:  # Kubernetes NetworkPolicy, pod selector + namespace selector in one peer
        return {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"podSelector": {"matchLabels": {"app": app}}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "frontend"}}},
                                           {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": peer_app}}}],
                                  "ports": [{"port": port, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}]}}
    spec = {"endpointSelector": {"matchLabels": {"app": app, "tier": tier}}}
    if kind == 1:  # deny
        spec["ingressDeny"] = [{"fromEndpoints": [{"matchLabels": {"app": peer_app}}],
                                "toPorts": [{"ports": [{"port": str(port), "protocol": "TCP"}]}]}]
    elif kind == 2:  # CIDR egress
        spec["egress"] = [{"toCIDR": [f"192.0.2.{i % 250}/32"],
                           "toPorts": [{"ports": [{"port": str(port), "protocol": "TCP"}]}]},
                          {"toCIDRSet": [{"cidr": "198.51.100.0/24", "except": [f"198.51.100.{i % 250}/32"]}]}]
    elif kind == 3:  # egress to a tier with a port range, plus DNS
        spec["egress"] = [{"toEndpoints": [{"matchLabels": {"tier": "db"}}],
                           "toPorts": [{"ports": [{"port": str(port), "endPort": port + 3, "protocol": "TCP"}]}]},
                          {"toEndpoints": [{"matchExpressions": [{"key": "app", "operator": "In",
                                                                  "values": [app, peer_app]}]}],
                           "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}]}]}]
    else:  # L3/L4 ingress from an app in the same namespace
        spec["ingress"] = [{"fromEndpoints": [{"matchLabels": {"app": peer_app}}],
                            "toPorts": [{"ports": [{"port": str(port), "protocol": "TCP"}]}]}]
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def to_content(docs):
    # JSON is YAML: one document per policy.
    return "\n---\n".join(json.dumps(d) for d in docs) + "\n"


# --- run ---------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--endpoints", type=int, default=500)
    ap.add_argument("--policies", type=int, default=250)
    ap.add_argument("--changes", type=int, default=25)
    ap.add_argument("--namespaces", type=int, default=5)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    ap.add_argument("--max-seconds", type=float, default=1200, help="abort (and clean up) after this long")
    args = ap.parse_args()
    if args.smoke:
        args.endpoints, args.policies, args.changes, args.namespaces = 20, 10, 3, 2
    if os.geteuid() != 0:
        print("convergence bench: needs root (BPF, network namespaces)", file=sys.stderr)
        return 2
    if args.endpoints > 1000:
        print("convergence bench: at most 1000 endpoints (the pod CIDR is a /22)", file=sys.stderr)
        return 2

    build = os.path.abspath(args.build)
    membraned = os.path.join(build, "bin", "membraned")
    if not os.access(membraned, os.X_OK):
        print(f"convergence bench: {membraned} not found (make build)", file=sys.stderr)
        return 2
    pid = os.getpid()
    tag = f"cb{pid}"
    work = f"/tmp/membrane-bench-{pid}"
    os.makedirs(work, exist_ok=True)
    sock = f"{work}/membrane.sock"
    metrics_port = free_port()
    third = (220 + pid % 10)
    fourth_block = (pid // 10) % 60 * 4
    agent_flags = ["--api-socket", sock, "--state-dir", f"{work}/state", "--bpf-root", f"/sys/fs/bpf/membrane-bench-{pid}",
                   "--pod-cidr", f"10.{third}.{fourth_block}.0/22", "--host-device", f"mbcb{pid % 10000000}",
                   "--prometheus-serve-addr", f"127.0.0.1:{metrics_port}", "--log-level", "warn",
                   "--enable-health-checking", "false"]
    deadline = time.monotonic() + args.max_seconds
    agent = None
    log = open(f"{work}/membraned.log", "w")
    ok = False

    def check_deadline(what):
        if time.monotonic() > deadline:
            raise TimeoutError(f"--max-seconds {args.max_seconds} exceeded during {what}")

    def on_signal(signum, frame):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, on_signal)

    results = {}
    try:
        agent = subprocess.Popen([membraned] + agent_flags, stdout=log, stderr=subprocess.STDOUT)
        api = Api(sock)
        t0 = time.monotonic()
        while True:
            try:
                api.call("GET", "/v1/healthz", timeout=2)
                break
            except Exception:
                if agent.poll() is not None or time.monotonic() - t0 > 30:
                    raise RuntimeError(f"membraned did not come up (log: {work}/membraned.log)")
                time.sleep(0.1)

        nss = namespaces(tag, args.namespaces)
        t_create = time.monotonic()
        for i in range(args.endpoints):
            check_deadline("endpoint creation")
            api.call("PUT", "/v1/endpoint", {"name": f"pod{i}", "namespace": nss[i % len(nss)], "labels": pod_labels(i)},
                     timeout=60)
        create_s = time.monotonic() - t_create
        print(f"created {args.endpoints} endpoints in {create_s:.1f} s", file=sys.stderr)

        # Bulk import.
        docs = [policy_doc(i, nss) for i in range(args.policies)]
        ops0, cpu0 = map_ops(metrics_port), cpu_seconds(agent.pid)
        t = time.monotonic()
        r = api.call("PUT", "/v1/policy", {"source": "bench-bulk.yaml", "content": to_content(docs)}, timeout=300)
        rev = r["revision"]
        api.call("GET", f"/v1/policy/wait?revision={rev}&timeout=300", timeout=310)
        bulk_s = time.monotonic() - t
        cpu1, ops1 = cpu_seconds(agent.pid), map_ops(metrics_port)
        writes = lambda a, b: (b.get("update", 0) - a.get("update", 0)) + (b.get("delete", 0) - a.get("delete", 0))
        bulk_writes = writes(ops0, ops1)
        entries = 0
        for ep in api.call("GET", "/v1/endpoint"):
            entries += len(api.call("GET", f"/v1/bpf/policy/{ep['id']}"))
        results["bulk"] = {"seconds": bulk_s, "agent_cpu_seconds": cpu1 - cpu0, "map_writes": bulk_writes,
                           "map_writes_per_second": bulk_writes / bulk_s if bulk_s > 0 else 0, "entries": entries,
                           "revision": rev}

        # Single-policy changes.
        lat, per_change, cpu_change = [], [], 0.0
        for c in range(args.changes):
            check_deadline("single changes")
            i = (c * 7) % args.policies
            doc = policy_doc(i, nss, port_shift=1000 + c)
            a = map_ops(metrics_port)
            # CPU is sampled around the change only: a /metrics scrape itself
            # costs the agent CPU (it reads every BPF map for map pressure).
            c0 = cpu_seconds(agent.pid)
            t = time.monotonic()
            r = api.call("PUT", "/v1/policy", {"source": f"bench-change-{c}.yaml", "content": to_content([doc])})
            api.call("GET", f"/v1/policy/wait?revision={r['revision']}&timeout=30", timeout=40)
            lat.append(time.monotonic() - t)
            cpu_change += cpu_seconds(agent.pid) - c0
            per_change.append(writes(a, map_ops(metrics_port)))
        results["changes"] = {"n": len(lat), "p50_ms": percentile(lat, 0.5) * 1e3, "p99_ms": percentile(lat, 0.99) * 1e3,
                              "max_ms": max(lat) * 1e3, "map_writes_median": statistics.median(per_change),
                              "map_writes_max": max(per_change), "agent_cpu_ms_per_change": cpu_change * 1e3 / len(lat)}
        results["setup"] = {"endpoints": args.endpoints, "policies": args.policies, "namespaces": args.namespaces,
                            "identities": len([x for x in api.call("GET", "/v1/identity") if not x["reserved"]]),
                            "endpoint_creation_seconds": create_s, "cpus": os.cpu_count()}
        ok = True
    except KeyboardInterrupt:
        print("convergence bench: interrupted; cleaning up", file=sys.stderr)
    except Exception as e:  # noqa: BLE001 - report, then clean up
        print(f"convergence bench: {e}", file=sys.stderr)
    finally:
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        c = subprocess.run([membraned, "cleanup"] + agent_flags, stdout=log, stderr=subprocess.STDOUT, timeout=600)
        log.close()
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        if c.returncode != 0 or f"membrane_{tag}-" in left:
            print(f"convergence bench: cleanup incomplete (membraned cleanup exit {c.returncode}); "
                  f"log kept in {work}/membraned.log", file=sys.stderr)
            ok = False
        elif ok:
            shutil.rmtree(work, ignore_errors=True)

    if not ok:
        return 1
    s, b, ch = results["setup"], results["bulk"], results["changes"]
    print(f"\n{s['endpoints']} endpoints ({s['identities']} identities, {s['namespaces']} namespaces), "
          f"{s['policies']} policies, {s['cpus']} CPUs\n")
    print("| measure | result | target |")
    print("|---|---|---|")
    print(f"| bulk import of {s['policies']} policies -> enforced on all {s['endpoints']} endpoints | "
          f"{b['seconds'] * 1e3:.0f} ms | < 1000 ms |")
    print(f"| policy map entries realized (sum over endpoints) | {b['entries']} | |")
    print(f"| map writes during bulk (update+delete) | {b['map_writes']:.0f} ({b['map_writes_per_second']:.0f}/s) | |")
    print(f"| agent CPU time for the bulk import (utime+stime) | {b['agent_cpu_seconds'] * 1e3:.0f} ms | |")
    print(f"| single policy change -> enforced, p50 / p99 / max (n={ch['n']}) | "
          f"{ch['p50_ms']:.1f} / {ch['p99_ms']:.1f} / {ch['max_ms']:.1f} ms | p99 < 100 ms |")
    print(f"| map writes per single change, median / max | {ch['map_writes_median']:.0f} / {ch['map_writes_max']:.0f} | |")
    print(f"| agent CPU per single change | {ch['agent_cpu_ms_per_change']:.1f} ms | |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
