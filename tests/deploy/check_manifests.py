#!/usr/bin/env python3
"""Checks the deployment files (ctest: deploy_manifests_test).

- deploy/prometheus/prometheus.yml: `promtool check config`.
- deploy/kubernetes/prometheus-scrape.yml: job `membrane` with kubernetes_sd_configs role pod.
  Debian's prometheus/promtool are built without Kubernetes service discovery, so the file is
  checked with its kubernetes_sd_configs swapped for a static target (everything else, relabel
  rules included, is validated by promtool) and its relabelling is then simulated on the pods
  that deploy/kubernetes/membraned-daemonset.yaml creates: exactly one target per agent pod, on
  port 9962, with the labels the dashboard and alerts use; pods without the annotations or the
  label, and the health port, are not scraped.
- deploy/kubernetes/membraned-daemonset.yaml: hostNetwork, privileged, bpffs and /var/run/netns
  mounted with Bidirectional propagation, the prometheus.io annotations, port 9962.
- deploy/systemd/membraned.service: the directives docs/deploy.md promises, and
  `systemd-analyze verify` (on a copy whose ExecStart points at /bin/true, since membraned need
  not be installed).
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploy_common as dc  # noqa: E402

PROM_YML = os.path.join(dc.SOURCE_DIR, "deploy", "prometheus", "prometheus.yml")
K8S_SCRAPE = os.path.join(dc.SOURCE_DIR, "deploy", "kubernetes", "prometheus-scrape.yml")
DAEMONSET = os.path.join(dc.SOURCE_DIR, "deploy", "kubernetes", "membraned-daemonset.yaml")
UNIT = os.path.join(dc.SOURCE_DIR, "deploy", "systemd", "membraned.service")


def promtoolCheckConfig(path, problems):
    r = subprocess.run(["promtool", "check", "config", path], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        problems.append(f"promtool check config {path}:\n{r.stdout}{r.stderr}")


def sanitize(name):
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def discoveredTargets(pod_name, namespace, node, pod_ip, labels, annotations, ports):
    """What Prometheus' Kubernetes SD (role pod) discovers for a hostNetwork pod: one target per
    declared container port."""
    base = {
        "__meta_kubernetes_namespace": namespace,
        "__meta_kubernetes_pod_name": pod_name,
        "__meta_kubernetes_pod_node_name": node,
        "__meta_kubernetes_pod_ip": pod_ip,
    }
    for k, v in labels.items():
        base[f"__meta_kubernetes_pod_label_{sanitize(k)}"] = v
    for k, v in annotations.items():
        base[f"__meta_kubernetes_pod_annotation_{sanitize(k)}"] = v
    out = []
    for p in ports:
        t = dict(base)
        t["__address__"] = f"{pod_ip}:{p}"
        t["__meta_kubernetes_pod_container_port_number"] = str(p)
        t["__metrics_path__"] = "/metrics"
        out.append(t)
    return out


def relabel(target, rules):
    """Prometheus relabelling (keep, drop, replace, labelmap) with anchored regexes; None = dropped."""
    t = dict(target)
    for r in rules:
        action = r.get("action", "replace")
        regex = re.compile(r"^(?:" + str(r.get("regex", "(.*)")) + r")$")
        sep = r.get("separator", ";")
        value = sep.join(t.get(s, "") for s in r.get("source_labels", []))
        if action == "keep":
            if not regex.match(value):
                return None
        elif action == "drop":
            if regex.match(value):
                return None
        elif action == "replace":
            m = regex.match(value)
            if m:
                repl = re.sub(r"\$\{?(\d+)\}?", lambda g: m.group(int(g.group(1))) or "",
                              str(r.get("replacement", "$1")))
                if repl:
                    t[r["target_label"]] = repl
                else:
                    t.pop(r["target_label"], None)
        elif action == "labelmap":
            for k, v in list(t.items()):
                m = regex.match(k)
                if m:
                    t[re.sub(r"\$\{?(\d+)\}?", lambda g: m.group(int(g.group(1))),
                             str(r.get("replacement", "$1")))] = v
        else:
            raise AssertionError(f"relabel action {action} not simulated")
    # Like Prometheus: meta labels go, instance defaults to the address.
    final = {k: v for k, v in t.items() if not k.startswith("__") or k in ("__address__", "__metrics_path__")}
    final.setdefault("instance", final.get("__address__", ""))
    return final


def checkKubernetes(problems):
    with open(K8S_SCRAPE, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    jobs = {j["job_name"]: j for j in cfg.get("scrape_configs", [])}
    job = jobs.get("membrane")
    if not job:
        problems.append("prometheus-scrape.yml: no job `membrane`")
        return
    if [s.get("role") for s in job.get("kubernetes_sd_configs", [])] != ["pod"]:
        problems.append("prometheus-scrape.yml: job membrane must use kubernetes_sd_configs role pod")
    with tempfile.TemporaryDirectory(prefix=f"membrane-deploy-{os.getpid()}-") as tmp:
        static = yaml.safe_load(yaml.safe_dump(cfg))
        for j in static["scrape_configs"]:
            j.pop("kubernetes_sd_configs", None)
            j["static_configs"] = [{"targets": ["192.0.2.10:9962"]}]
        path = os.path.join(tmp, "scrape.yml")
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(static, f)
        promtoolCheckConfig(path, problems)

    with open(DAEMONSET, encoding="utf-8") as f:
        ds = yaml.safe_load(f)
    if ds.get("kind") != "DaemonSet" or ds.get("apiVersion") != "apps/v1":
        problems.append("membraned-daemonset.yaml is not an apps/v1 DaemonSet")
        return
    tmpl = ds["spec"]["template"]
    spec = tmpl["spec"]
    meta = tmpl["metadata"]
    sel = ds["spec"]["selector"]["matchLabels"]
    if any(meta["labels"].get(k) != v for k, v in sel.items()):
        problems.append("DaemonSet selector does not match the pod template labels")
    ann = meta.get("annotations", {})
    if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != "9962":
        problems.append(f"DaemonSet pods lack prometheus.io/scrape: \"true\" / port: \"9962\": {ann}")
    if spec.get("hostNetwork") is not True:
        problems.append("DaemonSet pods must use hostNetwork")
    (c,) = [c for c in spec["containers"] if c["name"] == "membraned"]
    if not c.get("securityContext", {}).get("privileged"):
        problems.append("membraned container must be privileged")
    if "--prometheus-serve-addr=:9962" not in c.get("args", []):
        problems.append("membraned args lack --prometheus-serve-addr=:9962")
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    for path in ("/sys/fs/bpf", "/var/run/netns"):
        m = mounts.get(path)
        if not m or m.get("mountPropagation") != "Bidirectional":
            problems.append(f"{path} must be mounted with mountPropagation: Bidirectional")
        elif vols.get(m["name"], {}).get("hostPath", {}).get("path") != path:
            problems.append(f"{path} must be the host's {path} (hostPath)")
    ports = [p["containerPort"] for p in c.get("ports", [])]
    if 9962 not in ports:
        problems.append("membraned container does not declare port 9962")

    rules = job.get("relabel_configs", [])
    # The DaemonSet's pods are named <name>-<hash>: Cilium's dashboards select pod=~"$pod" whose
    # "All" value is cilium.*, so the name must start with "cilium".
    pod_name = ds["metadata"]["name"] + "-x7k2p"
    if not re.fullmatch(r"cilium.*", pod_name):
        problems.append(f"agent pods are named {pod_name}: Cilium's dashboards (pod=~\"cilium.*\") miss them")
    agent = discoveredTargets(pod_name, ds["metadata"]["namespace"], "node-1", "192.0.2.10",
                              meta["labels"], ann, ports)
    kept = [t for t in (relabel(t, rules) for t in agent) if t is not None]
    if len(kept) != 1:
        problems.append(f"relabelling keeps {len(kept)} targets per agent pod, want 1: {kept}")
    else:
        t = kept[0]
        want = {"__address__": "192.0.2.10:9962", "__metrics_path__": "/metrics", "k8s_app": "cilium",
                "pod": pod_name, "kubernetes_pod_name": pod_name,
                "namespace": "kube-system", "kubernetes_namespace": "kube-system", "node": "node-1",
                "instance": "192.0.2.10:9962"}
        for k, v in want.items():
            if t.get(k) != v:
                problems.append(f"agent target label {k}={t.get(k)!r}, want {v!r}")
    # Not scraped: an agent pod without the annotation, another app's pod.
    for desc, labels, annotations in (
            ("agent pod without prometheus.io/scrape", meta["labels"], {"prometheus.io/port": "9962"}),
            ("pod of another app", {"k8s-app": "web"}, ann)):
        extra = [t for t in (relabel(t, rules) for t in discoveredTargets(
            "other", "default", "node-1", "192.0.2.11", labels, annotations, [9962])) if t]
        if extra:
            problems.append(f"{desc} is scraped: {extra}")


def checkSystemd(problems):
    with open(UNIT, encoding="utf-8") as f:
        text = f.read()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    for want in ("Type=simple", "ExecStart=/usr/local/bin/membraned $MEMBRANED_ARGS", "Restart=on-failure",
                 "KillMode=control-group", "LimitNOFILE=1048576", "After=network-online.target",
                 "Wants=network-online.target", "WantedBy=multi-user.target", "StateDirectory=membrane"):
        if want not in lines:
            problems.append(f"membraned.service lacks '{want}'")
    for forbidden in ("PrivateTmp=", "ProtectSystem=", "ProtectHome=", "PrivateMounts=", "KillMode=process"):
        if any(ln.startswith(forbidden) for ln in lines):
            problems.append(f"membraned.service must not set {forbidden}")
    if not shutil.which("systemd-analyze"):
        print("note: systemd-analyze not installed; unit file not verified by systemd")
        return
    with tempfile.TemporaryDirectory(prefix=f"membrane-deploy-{os.getpid()}-") as tmp:
        copy = os.path.join(tmp, "membraned.service")
        with open(copy, "w", encoding="utf-8") as f:
            f.write(text.replace("/usr/local/bin/membraned", "/bin/true"))
        r = subprocess.run(["systemd-analyze", "verify", copy], capture_output=True, text=True, timeout=60)
        if r.returncode != 0 or r.stderr.strip():
            problems.append(f"systemd-analyze verify membraned.service:\n{r.stdout}{r.stderr}")


def main():
    problems = []
    promtoolCheckConfig(PROM_YML, problems)
    checkKubernetes(problems)
    checkSystemd(problems)
    if problems:
        for p in problems:
            print(f"FAIL: {p}")
        return 1
    print("OK: prometheus.yml, kubernetes scrape config + DaemonSet, membraned.service")
    return 0


if __name__ == "__main__":
    sys.exit(main())
