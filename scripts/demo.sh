#!/usr/bin/env bash
# make demo: the seed's Star Wars story (../shared/seed, Cilium's "Prometheus metrics" post) on this
# machine, with real pods, real traffic, a real Prometheus scraping the agent, console dashboards
# and PNG snapshots of the key charts.
#
#   scripts/demo.sh BUILD_DIR          run (re-running is safe: it stops and cleans up first)
#   scripts/demo.sh --stop BUILD_DIR   stop Prometheus and the agent, remove everything the demo created
#
# The story, one shell function per step (see the bottom of this file):
#   step_deploy_app  membrane apply -f examples/starwars/http-sw-app.yaml: the deathstar Deployment
#                    (2 pods serving the HTTP API) behind the deathstar Service, and two ships,
#                    tiefighter (empire) and xwing (alliance); waits until every pod is Running and
#                    ready and the Service has its 2 backends
#   step_no_policy   no policy: both ships land (curl deathstar.default.svc.cluster.local as the seed)
#   step_l3_l4       membrane apply -f sw_l3_l4_policy.yaml: tiefighter lands, xwing hangs, INGRESS
#                    policy drops rise (counted by `membrane monitor --type drop` too)
#   step_spoof       not in the seed: xwing sends packets with a deathstar pod's address, EGRESS drops
#                    "Invalid source ip" rise (so the EGRESS charts have data too)
#   step_l7          membrane apply -f sw_l3_l4_l7_policy.yaml: tiefighter's POST lands, its
#                    PUT /v1/exhaust-port and GET /v1 get 403 "Access denied" from the L7 proxy, xwing
#                    still hangs; cilium_policy_l7_* and `membrane monitor --type l7` count each request
#   step_report      each step's verdicts and metric changes as Prometheus reports them (PromQL over
#                    its HTTP API), the URLs to open, the snapshots folder, how to stop
#
# Configuration (environment; defaults are what `make demo` uses; tests/demo sets them all so an
# isolated copy of the demo runs next to other agents):
#   MEMBRANE_DEMO_PROMETHEUS_PORT  Prometheus listen port on 127.0.0.1        (9090)
#   MEMBRANE_DEMO_METRICS_PORT     membraned /metrics port on 127.0.0.1       (9962)
#   MEMBRANE_DEMO_RUN_DIR          pid files, generated config, Prometheus TSDB (/var/run/membrane-demo)
#   MEMBRANE_DEMO_LOG_DIR          agent, Prometheus, server and monitor logs (/var/log/membrane-demo)
#   MEMBRANE_DEMO_SNAPSHOT_DIR     PNG snapshots of the key charts (/var/lib/membrane-demo/snapshots)
#   MEMBRANE_DEMO_SNAPSHOTS        1: take snapshots (installs Debian's chromium if missing); 0: skip (1)
#   MEMBRANE_DEMO_ROUNDS           iterations of each bounded traffic loop    (3)
#   MEMBRANE_DEMO_NAMESPACE        namespace of the pods and policies         (default)
#   MEMBRANE_DEMO_SOCKET, _STATE_DIR, _BPF_ROOT, _POD_CIDR, _SERVICE_CIDR, _HOST_DEVICE,
#   _PROXY_SOCKET, _PROXY_PORTS, _PROXY_TABLE, _PROXY_RULE_PRIORITY, _PROXY_CHAIN
#                                  membraned --api-socket/--state-dir/--bpf-root/--pod-cidr/
#                                  --service-cidr/--host-device/--proxy-control-socket/
#                                  --proxy-port-range/--proxy-route-table/--proxy-rule-priority/
#                                  --proxy-iptables-chain (membraned's defaults when unset)
# The machine-readable outcome (verdicts, metric values per step) is written to RUN_DIR/result.json.
set -euo pipefail

stop=0
if [ "${1:-}" = "--stop" ]; then stop=1; shift; fi
build=${1:-build}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "$build/bin" 2>/dev/null && pwd || true)

prom_port=${MEMBRANE_DEMO_PROMETHEUS_PORT:-9090}
metrics_port=${MEMBRANE_DEMO_METRICS_PORT:-9962}
run_dir=${MEMBRANE_DEMO_RUN_DIR:-/var/run/membrane-demo}
log_dir=${MEMBRANE_DEMO_LOG_DIR:-/var/log/membrane-demo}
snap_dir=${MEMBRANE_DEMO_SNAPSHOT_DIR:-/var/lib/membrane-demo/snapshots}
take_snapshots=${MEMBRANE_DEMO_SNAPSHOTS:-1}
rounds=${MEMBRANE_DEMO_ROUNDS:-3}
ns=${MEMBRANE_DEMO_NAMESPACE:-default}
prom_dir=$run_dir/prometheus
agent_pidfile=$run_dir/membraned.pid
prom_pidfile=$run_dir/prometheus.pid
result=$run_dir/result.json
prom_url=http://127.0.0.1:$prom_port

# Per-agent flags: only the ones set, so `make demo` runs membraned with its defaults.
agent_flags=(--prometheus-serve-addr "127.0.0.1:$metrics_port")
cli_flags=()
if [ -n "${MEMBRANE_DEMO_SOCKET:-}" ]; then
  agent_flags+=(--api-socket "$MEMBRANE_DEMO_SOCKET"); cli_flags+=(--socket "$MEMBRANE_DEMO_SOCKET")
fi
[ -n "${MEMBRANE_DEMO_STATE_DIR:-}" ] && agent_flags+=(--state-dir "$MEMBRANE_DEMO_STATE_DIR")
[ -n "${MEMBRANE_DEMO_BPF_ROOT:-}" ] && agent_flags+=(--bpf-root "$MEMBRANE_DEMO_BPF_ROOT")
[ -n "${MEMBRANE_DEMO_POD_CIDR:-}" ] && agent_flags+=(--pod-cidr "$MEMBRANE_DEMO_POD_CIDR")
[ -n "${MEMBRANE_DEMO_SERVICE_CIDR:-}" ] && agent_flags+=(--service-cidr "$MEMBRANE_DEMO_SERVICE_CIDR")
[ -n "${MEMBRANE_DEMO_HOST_DEVICE:-}" ] && agent_flags+=(--host-device "$MEMBRANE_DEMO_HOST_DEVICE")
# The L7 proxy's node-global plumbing (control socket, listener ports, routing table, ip rule,
# iptables chain): per agent, so an isolated demo (tests/demo) never touches another agent's.
[ -n "${MEMBRANE_DEMO_PROXY_SOCKET:-}" ] && agent_flags+=(--proxy-control-socket "$MEMBRANE_DEMO_PROXY_SOCKET")
[ -n "${MEMBRANE_DEMO_PROXY_PORTS:-}" ] && agent_flags+=(--proxy-port-range "$MEMBRANE_DEMO_PROXY_PORTS")
[ -n "${MEMBRANE_DEMO_PROXY_TABLE:-}" ] && agent_flags+=(--proxy-route-table "$MEMBRANE_DEMO_PROXY_TABLE")
[ -n "${MEMBRANE_DEMO_PROXY_RULE_PRIORITY:-}" ] && agent_flags+=(--proxy-rule-priority "$MEMBRANE_DEMO_PROXY_RULE_PRIORITY")
[ -n "${MEMBRANE_DEMO_PROXY_CHAIN:-}" ] && agent_flags+=(--proxy-iptables-chain "$MEMBRANE_DEMO_PROXY_CHAIN")
# Short conntrack-GC and health-probe intervals: their charts get data within the demo's minutes.
run_flags=(--ct-gc-interval 5 --enable-health-checking true --health-check-interval 5 --metrics-legacy-names true
           --metrics +cilium_bpf_syscall_duration_seconds)

membrane() { "$bin/membrane" ${cli_flags[@]+"${cli_flags[@]}"} "$@"; }
bold() { printf '\n\033[1m%s\033[0m\n' "$*"; }
step() { printf '\033[1;34m==>\033[0m %s\n' "$*"; }
die() {
  echo "make demo: $*" >&2
  if [ -f "$agent_pidfile" ] || [ -f "$prom_pidfile" ]; then
    echo "(what the demo started so far keeps running: 'make demo-stop' removes it)" >&2
  fi
  exit 1
}

# Debian's tools first: membraned passes its PATH to the pods it runs, and a python3 from another
# install (pyenv's, first in PATH inside a pyenv-run shell or test) can fail inside a pod
# ("No module named 'math'"): the deathstar pods would crash-loop.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

if [ "$(id -u)" != 0 ]; then
  die "run as root (membraned loads BPF programs and creates network namespaces)"
fi
if [ ! -x "$bin/membraned" ] || [ ! -x "$bin/membrane" ]; then
  die "binaries not found in $build/bin: run 'make build' first"
fi

# ---------------------------------------------------------------------------------------------
# Processes: started in the background, remembered by PID, stopped by that PID only after
# checking /proc/PID/cmdline still names our program (a PID file can outlive its process and the
# PID can be reused).
# ---------------------------------------------------------------------------------------------
pid_is() {  # pid_is PIDFILE WORD: the process in PIDFILE is alive and its cmdline contains WORD
  local pid
  [ -f "$1" ] || return 1
  pid=$(cat "$1")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2"
}
stop_pidfile() {  # stop_pidfile PIDFILE WORD: SIGTERM, wait up to 10 s, then SIGKILL
  local pid
  if pid_is "$1" "$2"; then
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

stop_demo() {
  stop_pidfile "$prom_pidfile" "$prom_dir/prometheus.yml"
  stop_pidfile "$agent_pidfile" membraned
  # Everything the agent created: the pods' processes, netns, veths, routes, services, BPF pins,
  # host device, the L7 proxy and its ip rule/route table/iptables chain, state.
  "$bin/membraned" cleanup "${agent_flags[@]}" >/dev/null 2>&1 || true
  rm -rf "$prom_dir"
}

if [ $stop = 1 ]; then
  stop_demo
  echo "demo stopped: Prometheus and membraned are stopped; every pod, BPF pin, route and state file"
  echo "the demo created is gone (logs stay in $log_dir, snapshots in $snap_dir)"
  exit 0
fi

# A port taken by something that is not ours: say which and how to choose another.
# Debian's prometheus package starts a system service on :9090 where systemd runs (`make deps`
# stops the one it installed; one installed before is the user's).
prometheus_service_hint=""
if systemctl is-active -q prometheus 2>/dev/null; then
  prometheus_service_hint=" (the system's prometheus.service listens there: 'systemctl stop prometheus', or pick another port)"
fi
port_free_or_die() {  # port_free_or_die PORT ENVVAR
  if ss -ltnH "sport = :$1" 2>/dev/null | grep -q .; then
    die "port $1 is already in use ($(ss -ltnpH "sport = :$1" | sed 's/.*users:((\("[^"]*"\).*/\1/' | head -1)); pick another with $2=PORT make demo${prometheus_service_hint:-}"
  fi
}

# ---------------------------------------------------------------------------------------------
# Prometheus: Debian's prometheus, its own config and TSDB under RUN_DIR, scraping the agent every
# 2 s, loading deploy/prometheus/alerts.yml, serving the console pages of deploy/prometheus/consoles
# with Debian's console libraries (prom.lib, menu.lib) next to membrane.lib.
# ---------------------------------------------------------------------------------------------
debian_console_libs=/usr/share/doc/prometheus/examples/console_libraries
start_prometheus() {
  command -v prometheus >/dev/null || die "prometheus not found: run 'make deps' (Debian package prometheus)"
  rm -rf "$prom_dir"
  mkdir -p "$prom_dir/data" "$prom_dir/console_libraries"
  local f
  for f in "$debian_console_libs"/*.lib "$here"/deploy/prometheus/console_libraries/*.lib; do
    [ -f "$f" ] && ln -sf "$f" "$prom_dir/console_libraries/$(basename "$f")"
  done
  cat >"$prom_dir/prometheus.yml" <<EOF
# Generated by scripts/demo.sh: scrape this demo's membraned every 2 s.
global:
  scrape_interval: 2s
  evaluation_interval: 2s
rule_files:
  - $here/deploy/prometheus/alerts.yml
scrape_configs:
  - job_name: membrane
    scrape_interval: 2s
    scrape_timeout: 2s
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
        labels:
          k8s_app: cilium
          pod: cilium-membrane
          kubernetes_pod_name: cilium-membrane
EOF
  promtool check config "$prom_dir/prometheus.yml" >"$log_dir/promtool.log" 2>&1 ||
    die "promtool rejected the generated config: $(cat "$log_dir/promtool.log")"
  prometheus --config.file="$prom_dir/prometheus.yml" \
    --storage.tsdb.path="$prom_dir/data" \
    --web.listen-address="127.0.0.1:$prom_port" \
    --web.console.templates="$here/deploy/prometheus/consoles" \
    --web.console.libraries="$prom_dir/console_libraries" \
    --log.level=warn >"$log_dir/prometheus.log" 2>&1 </dev/null &
  echo $! >"$prom_pidfile"
  prom_started=$(date +%s)
  for _ in $(seq 1 150); do
    curl -sf -o /dev/null "$prom_url/-/ready" && return 0
    pid_is "$prom_pidfile" "$prom_dir/prometheus.yml" || break
    sleep 0.2
  done
  die "prometheus did not become ready on $prom_url; log $log_dir/prometheus.log:
$(tail -n 20 "$log_dir/prometheus.log")"
}

# PromQL through Prometheus' HTTP API. promq EXPR -> the sum of the result's values (0 if empty).
promq() {
  curl -s --max-time 5 -G "$prom_url/api/v1/query" --data-urlencode "query=$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)
if d.get("status") != "success":
    sys.exit("query failed: " + json.dumps(d)[:300])
r = d["data"]["result"]
v = sum(float(x["value"][1]) for x in r) if isinstance(r, list) else float(r[1])
print(int(v) if v == int(v) else v)'
}
# Waits until Prometheus holds a scrape taken after this call (so a following promq sees every
# packet counted so far): the scrape timestamp of up{job="membrane"} passes "now".
prom_sync() {
  local now t
  now=$(date +%s.%N)
  for _ in $(seq 1 100); do
    t=$(promq 'max(timestamp(up{job="membrane"}))' 2>/dev/null || echo 0)
    python3 -c "import sys; sys.exit(0 if float('$t') > $now else 1)" && return 0
    sleep 0.2
  done
  die "Prometheus did not scrape the agent (127.0.0.1:$metrics_port) within 20 s; see $prom_url/targets"
}

# The metrics each step reports: name -> PromQL (values as Prometheus sees them after prom_sync).
metric_names=(drops_ingress_policy drops_egress_policy drop_bytes_ingress_policy drops_egress_spoofed forwards
  l7_received l7_forwarded l7_denied policies revision policy_changes_ok policy_changes_failed import_errors
  endpoints endpoints_enforcing_ingress policy_trigger_runs identity_updates map_syscalls map_ops_untimed)
declare -A metric_query=(
  [drops_ingress_policy]='sum(cilium_drop_count_total{job="membrane",direction="INGRESS",reason="Policy denied"})'
  [drops_egress_policy]='sum(cilium_drop_count_total{job="membrane",direction="EGRESS",reason="Policy denied"})'
  [drop_bytes_ingress_policy]='sum(cilium_drop_bytes_total{job="membrane",direction="INGRESS",reason="Policy denied"})'
  [drops_egress_spoofed]='sum(cilium_drop_count_total{job="membrane",direction="EGRESS",reason="Invalid source ip"})'
  [forwards]='sum(cilium_forward_count_total{job="membrane"})'
  [l7_received]='sum(cilium_policy_l7_total{job="membrane",rule="received"})'
  [l7_forwarded]='sum(cilium_policy_l7_total{job="membrane",rule="forwarded"})'
  [l7_denied]='sum(cilium_policy_l7_total{job="membrane",rule="denied"})'
  [policies]='sum(cilium_policy{job="membrane"})'
  [revision]='max(cilium_policy_max_revision{job="membrane"})'
  [policy_changes_ok]='sum(cilium_policy_change_total{job="membrane",outcome="success"})'
  [policy_changes_failed]='sum(cilium_policy_change_total{job="membrane",outcome="fail"})'
  [import_errors]='sum(cilium_policy_import_errors_total{job="membrane"})'
  [endpoints]='sum(cilium_endpoint_count{job="membrane"})'
  [endpoints_enforcing_ingress]='sum(cilium_policy_endpoint_enforcement_status{job="membrane",enforcement=~"ingress|both"})'
  [policy_trigger_runs]='sum(cilium_triggers_policy_update_total{job="membrane",reason=~"policy rules .*"})'
  [identity_updates]='sum(cilium_policy_incremental_update_duration_count{job="membrane"})'
  [map_syscalls]='sum(cilium_bpf_syscall_duration_seconds_count{job="membrane"})'
  # Map syscalls counted but not timed: only those before --metrics took effect (the datapath's
  # open), so constant. One query, so one scrape: the two counters cannot be from different ones.
  [map_ops_untimed]='sum(cilium_bpf_map_ops_total{job="membrane"}) - sum(cilium_bpf_syscall_duration_seconds_count{job="membrane"})'
)
declare -A snap  # snap[STEP.METRIC] = value at the end of STEP
# The same counters read from the agent's own /metrics (not through Prometheus), so a step's
# drop/L7 deltas can be checked against the source: Prometheus must show exactly what the agent counted.
agent_metric_names=(drops_ingress_policy drop_bytes_ingress_policy drops_egress_spoofed l7_received l7_forwarded l7_denied)
declare -A agent_snap
declare -A snap_time
agent_metrics() {  # agent_metrics -> "name=value" lines for agent_metric_names
  curl -s --max-time 5 "http://127.0.0.1:$metrics_port/metrics" | python3 "$here/scripts/demo-agent-metrics.py"
}
snapshot_metrics() {  # snapshot_metrics STEP
  local m line
  # The agent's counters first: the step's traffic is over, so nothing moves them until the scrape
  # prom_sync waits for, and Prometheus' values must equal these.
  while IFS= read -r line; do agent_snap[$1.${line%%=*}]=${line#*=}; done < <(agent_metrics)
  prom_sync
  for m in "${metric_names[@]}"; do snap[$1.$m]=$(promq "${metric_query[$m]}"); done
  # When: a query evaluated at this time (/api/v1/query?time=) sees the step's traffic in its rate windows.
  snap_time[$1]=$(date +%s.%N)
}

# Verdicts: verdict STEP SHIP WHAT OUTCOME, kept in order for the report and result.json.
verdicts=()
verdict() { verdicts+=("$1|$2|$3|$4"); printf '  %-10s %-32s -> %s\n' "$2" "$3" "$4"; }
step_status=()  # STEP|ran|skipped: reason

# One HTTP request from a ship, the seed's curl (`curl -sL -X<METHOD> deathstar.default.svc.cluster.local<PATH>`)
# bounded by --max-time; prints the outcome: the body's first line ("Ship landed"), "403 <body>"
# (the L7 proxy answers "Access denied"), or "timeout (no answer in N s)".
target=""  # deathstar.<namespace>.svc.cluster.local, set by step_deploy_app
request() {  # request SHIP METHOD PATH [TIMEOUT]
  local out rc code body
  set +e
  out=$(membrane exec -n "$ns" "$1" -- curl -sL --max-time "${4:-3}" -X"$2" -w '\n%{http_code}' "$target$3" 2>/dev/null)
  rc=$?
  set -e
  if [ $rc = 28 ]; then echo "timeout (no answer in ${4:-3} s)"; return; fi
  if [ $rc != 0 ]; then echo "curl error $rc"; return; fi
  code=$(tail -n 1 <<<"$out")
  body=$(sed '$d' <<<"$out" | head -n 1 | tr -d '\r')
  case $code in
    200) echo "${body:-200 OK}" ;;
    *) echo "$code ${body}" ;;
  esac
}

ping_from() {  # ping_from SHIP COUNT ADDRESS -> "N/COUNT replies"
  local out
  out=$(membrane exec -n "$ns" "$1" -- ping -c "$2" -i 0.2 -W 1 "$3" 2>/dev/null || true)
  echo "$(sed -n 's/.* \([0-9]*\) received.*/\1/p' <<<"$out")/$2 replies"
}

# A copy of a manifest for the demo's namespace: policies name theirs in metadata (the examples
# carry none: "default"); `membrane apply -n` covers the app's objects.
policy_file() {  # policy_file NAME -> path
  local src=$here/examples/starwars/$1
  if [ "$ns" = default ]; then echo "$src"; return; fi
  sed "s/^metadata:/metadata:\n  namespace: $ns/" "$src" >"$run_dir/$1"
  echo "$run_dir/$1"
}

pods_json() { membrane get pods -n "$ns" -o json; }
pod_ip() {  # pod_ip NAME-PREFIX -> the IP of the first pod whose name starts with it
  pods_json | python3 -c '
import json, sys
print(sorted((p["name"], p["ip"]) for p in json.load(sys.stdin) if p["name"].startswith(sys.argv[1]))[0][1])' "$1"
}

# `membrane monitor` in the background for one step: start_monitor TYPE LOG; stop_monitor waits
# until LOG holds WANT lines matching PATTERN (at most 5 s: events reach the monitor asynchronously),
# then stops it by PID and prints the count.
monitor_pid=""
start_monitor() {
  "$bin/membrane" ${cli_flags[@]+"${cli_flags[@]}"} monitor --type "$1" --json >"$2" 2>"$2.err" </dev/null &
  monitor_pid=$!
  # The subscription must be in place before the step's first packet (the proxy writes its access
  # log only while a monitor is connected): the banner on stderr says it is (at most 10 s).
  for _ in $(seq 1 100); do
    grep -q "Listening for events" "$2.err" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "membrane monitor --type $1 did not start listening within 10 s:" >&2
  cat "$2.err" >&2
  return 1
}
stop_monitor() {  # stop_monitor LOG PATTERN WANT
  local n=0
  for _ in $(seq 1 50); do
    n=$(grep -c -- "$2" "$1" || true)
    [ "$n" -ge "$3" ] && break
    sleep 0.1
  done
  kill "$monitor_pid" 2>/dev/null || true
  wait "$monitor_pid" 2>/dev/null || true
  monitor_pid=""
  grep -c -- "$2" "$1" || true
}
agent_delta() {  # agent_delta KEY: the agent's counter now minus at the last snapshot (step $prev)
  local now
  now=$(agent_metrics | sed -n "s/^$1=//p")
  echo $(( now - ${agent_snap[$prev.$1]} ))
}

# ---------------------------------------------------------------------------------------------
# The story
# ---------------------------------------------------------------------------------------------

start_agent() {
  step "membraned  (log: $log_dir/membraned.log)"
  "$bin/membraned" "${agent_flags[@]}" "${run_flags[@]}" >"$log_dir/membraned.log" 2>&1 </dev/null &
  echo $! >"$agent_pidfile"
  for _ in $(seq 1 100); do membrane status --brief >/dev/null 2>&1 && break; sleep 0.1; done
  membrane status --brief >/dev/null 2>&1 || die "membraned did not start; log:
$(tail -n 20 "$log_dir/membraned.log")"
  membrane status
}

step_deploy_app() {
  step "membrane apply -f examples/starwars/http-sw-app.yaml"
  membrane apply -n "$ns" -f "$here/examples/starwars/http-sw-app.yaml"
  target=deathstar.$ns.svc.cluster.local
  # Like `kubectl get pods,svc` until the app is up: all 4 pods Running and ready, the Service with
  # both deathstar pods as backends (bounded: 60 s).
  local up=0
  for _ in $(seq 1 300); do
    if python3 -c '
import json, sys
pods, svcs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
ok = len(pods) == 4 and all(p.get("status") == "Running" and p.get("ready") for p in pods)
ds = [s for s in svcs if s["metadata"]["name"] == "deathstar"]
ok = ok and len(ds) == 1 and len(ds[0].get("status", {}).get("backends", [])) == 2
sys.exit(0 if ok else 1)' "$(pods_json 2>/dev/null || echo '[]')" "$(membrane get services -n "$ns" -o json 2>/dev/null || echo '[]')"; then
      up=1; break
    fi
    sleep 0.2
  done
  membrane get pods -n "$ns"
  membrane get services -n "$ns"
  [ $up = 1 ] || die "the Star Wars app did not come up within 60 s (see 'membrane get pods -n $ns', 'membrane logs')"
  # The pods' PIDs and commands, so tests/demo can check `make demo-stop` ended them.
  pods_json >"$run_dir/pods.json"
  # The deathstar answers through its Service name before the story starts.
  for _ in $(seq 1 50); do
    membrane exec -n "$ns" tiefighter -- curl -s --max-time 1 -o /dev/null "$target/v1/healthz" && break
    sleep 0.2
  done
  prev=deploy
  snapshot_metrics deploy
}

step_no_policy() {
  # The seed: kubectl exec {tiefighter,xwing} -- curl -sL -XPOST deathstar.default.svc.cluster.local/v1/request-landing
  local i
  for i in $(seq 1 "$rounds"); do
    verdict no_policy tiefighter "POST /v1/request-landing" "$(request tiefighter POST /v1/request-landing)"
    verdict no_policy xwing "POST /v1/request-landing" "$(request xwing POST /v1/request-landing)"
  done
  # ICMP to a deathstar pod too (its conntrack entries fill the dashboard's non-TCP conntrack chart).
  verdict no_policy tiefighter "ping deathstar pod x3" "$(ping_from tiefighter 3 "$(pod_ip deathstar)")"
  prev=no_policy
  snapshot_metrics no_policy
  step_status+=("no_policy|ran")
}

# xwing's requests under a policy that only lets the empire in: each one's SYN (and its
# retransmissions within the 2 s timeout) is dropped at a deathstar pod's ingress. How many SYNs
# a 2 s curl sends depends on timing, so the exact count is what the datapath reports: the drop
# events `membrane monitor` saw must equal the agent's counter delta, and Prometheus' delta.
step_l3_l4() {
  step "membrane apply -f examples/starwars/sw_l3_l4_policy.yaml"
  membrane apply -f "$(policy_file sw_l3_l4_policy.yaml)"
  start_monitor drop "$log_dir/monitor-l3_l4.log"
  local i
  # Bounded version of the seed's `while true; do kubectl exec xwing -- curl … ; done`.
  for i in $(seq 1 "$rounds"); do
    verdict l3_l4 tiefighter "POST /v1/request-landing" "$(request tiefighter POST /v1/request-landing)"
    verdict l3_l4 xwing "POST /v1/request-landing" "$(request xwing POST /v1/request-landing 2)"
  done
  monitor_drops[l3_l4]=$(stop_monitor "$log_dir/monitor-l3_l4.log" '"type":"drop"' "$(agent_delta drops_ingress_policy)")
  prev=l3_l4
  snapshot_metrics l3_l4
  step_status+=("l3_l4|ran")
}

step_spoof() {
  # Not in the seed: the datapath's anti-spoofing, so the EGRESS drop charts have data too.
  # xwing sends UDP packets that claim a deathstar pod's address (a raw socket builds the IP
  # header) to tiefighter; the datapath drops each one as it leaves xwing: "Invalid source ip", EGRESS.
  local tie ds i
  tie=$(pod_ip tiefighter)
  ds=$(pod_ip deathstar)
  for i in $(seq 1 "$rounds"); do
    verdict spoof xwing "UDP as deathstar pod to tiefighter" "$(membrane exec -n "$ns" xwing -- python3 -c '
import socket, struct, sys
src, dst = socket.inet_aton(sys.argv[1]), socket.inet_aton(sys.argv[2])
udp = struct.pack("!HHHH", 40000, 9, 8 + 5, 0) + b"hello"
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0, src, dst)
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.sendto(ip + udp, (sys.argv[2], 0))
print("sent")' "$ds" "$tie" 2>&1)"
  done
  prev=spoof
  snapshot_metrics spoof
  step_status+=("spoof|ran")
}

step_l7() {
  step "membrane apply -f examples/starwars/sw_l3_l4_l7_policy.yaml"
  membrane apply -f "$(policy_file sw_l3_l4_l7_policy.yaml)"
  start_monitor drop "$log_dir/monitor-l7-drops.log"
  local drop_monitor=$monitor_pid i
  start_monitor l7 "$log_dir/monitor-l7.log"
  # The seed's loops, bounded: tiefighter's GET /v1 and PUT /v1/exhaust-port are denied by the
  # L7 rule (only POST /v1/request-landing is allowed), xwing still hangs at L3/L4.
  for i in $(seq 1 "$rounds"); do
    verdict l7 tiefighter "POST /v1/request-landing" "$(request tiefighter POST /v1/request-landing)"
    verdict l7 tiefighter "PUT /v1/exhaust-port" "$(request tiefighter PUT /v1/exhaust-port)"
    verdict l7 tiefighter "GET /v1" "$(request tiefighter GET /v1)"
    verdict l7 xwing "POST /v1/request-landing" "$(request xwing POST /v1/request-landing 2)"
  done
  # One request line and one response line per request in the access log.
  monitor_l7_requests=$(stop_monitor "$log_dir/monitor-l7.log" '"l7_type":"request"' "$(agent_delta l7_received)")
  monitor_l7_denied=$(grep '"l7_type":"request"' "$log_dir/monitor-l7.log" | grep -c '"verdict":"Denied"' || true)
  monitor_l7_forwarded=$(grep '"l7_type":"request"' "$log_dir/monitor-l7.log" | grep -c '"verdict":"Forwarded"' || true)
  monitor_pid=$drop_monitor
  monitor_drops[l7]=$(stop_monitor "$log_dir/monitor-l7-drops.log" '"type":"drop"' "$(agent_delta drops_ingress_policy)")
  prev=l7
  snapshot_metrics l7
  step_status+=("l7|ran")
}

# PNG snapshots of the key console charts with headless Chromium (Debian's chromium).
snapshot_charts() {
  snapshots_taken=()
  [ "$take_snapshots" = 1 ] || return 0
  local chromium
  chromium=$(command -v chromium || true)
  if [ -z "$chromium" ]; then
    step "installing Debian's chromium for the chart snapshots (apt-get install chromium)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >"$log_dir/apt-chromium.log" 2>&1 ||
      die "apt-get install chromium failed (log: $log_dir/apt-chromium.log); run with MEMBRANE_DEMO_SNAPSHOTS=0 to skip snapshots"
    chromium=$(command -v chromium)
  fi
  mkdir -p "$snap_dir"
  local profile chart
  # Only this run's pictures in the folder (the names this function writes).
  for chart in dashboard drops_ingress drops_egress policy_denies l7_requests forwards endpoint_state \
    policy_count connectivity; do rm -f "$snap_dir/$chart.png"; done
  profile=$(mktemp -d "$run_dir/chromium.XXXXXX")
  # The console page shows a single chart with ?chart=ID (see deploy/prometheus/consoles/membrane.html).
  # The graphs' time range (PromConsole.TimeControl reads it from the URL's #pctc hash) is the time
  # since Prometheus started plus a margin, so the whole story fills the picture.
  local range=$(( ($(date +%s) - prom_started) * 5 / 4 + 10 ))
  local hash="#pctc%7B%22duration%22%3A$range%2C%22endTime%22%3A0%7D"
  for chart in dashboard drops_ingress drops_egress policy_denies l7_requests forwards endpoint_state policy_count \
    connectivity; do
    local url="$prom_url/consoles/membrane.html?chart=$chart$hash" size=1000,560
    if [ $chart = dashboard ]; then url="$prom_url/consoles/membrane.html$hash"; size=1400,4300; fi
    timeout 60 "$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars \
      --user-data-dir="$profile" --window-size=$size --virtual-time-budget=8000 \
      --screenshot="$snap_dir/$chart.png" "$url" >>"$log_dir/chromium.log" 2>&1 || true
    [ -s "$snap_dir/$chart.png" ] && snapshots_taken+=("$snap_dir/$chart.png")
  done
  rm -rf "$profile"
}

delta() { python3 -c "v=float('${snap[$2.$3]}')-float('${snap[$1.$3]}'); print(('+' if v>=0 else '')+(str(int(v)) if v==int(v) else str(v)))"; }

step_report() {
  bold "Report: verdicts"
  local v s
  for s in no_policy l3_l4 spoof l7; do
    local status="not run"
    for v in "${step_status[@]}"; do if [ "${v%%|*}" = $s ]; then status=${v#*|}; fi; done
    printf '%s (%s)\n' "$s" "$status"
    for v in "${verdicts[@]}"; do
      IFS='|' read -r vs ship what outcome <<<"$v"
      if [ "$vs" = $s ]; then printf '  %-10s %-28s %s\n' "$ship" "$what" "$outcome"; fi
    done | sort | uniq -c | sed 's/^ *\([0-9]*\) /  \1x /'
  done

  bold "Report: metric changes as Prometheus sees them ($prom_url/api/v1/query)"
  printf '%-28s %10s %10s %10s %10s %10s\n' metric deployed "no policy" "L3/L4" spoofing "L7"
  local m
  for m in "${metric_names[@]}"; do
    printf '%-28s %10s %10s %10s %10s %10s\n' "$m" "${snap[deploy.$m]}" "$(delta deploy no_policy "$m")" \
      "$(delta no_policy l3_l4 "$m")" "$(delta l3_l4 spoof "$m")" "$(delta spoof l7 "$m")"
  done
  echo "(first column: value after deploying; others: change during that step. Queries:"
  for m in drops_ingress_policy drops_egress_spoofed l7_denied; do echo "   $m = ${metric_query[$m]}"; done
  echo " The agent's own /metrics, read before each Prometheus query, agrees: see result.json \"agent\".)"
  echo "membrane monitor --type drop saw ${monitor_drops[l3_l4]} drops in the L3/L4 step, ${monitor_drops[l7]} in the L7 step"
  echo "  (xwing's SYNs and their retransmissions; Prometheus: $(delta no_policy l3_l4 drops_ingress_policy), $(delta spoof l7 drops_ingress_policy))"
  echo "membrane monitor --type l7 saw $monitor_l7_requests requests in the L7 step: $monitor_l7_forwarded forwarded, $monitor_l7_denied denied"
  echo "  (Prometheus: received $(delta spoof l7 l7_received), forwarded $(delta spoof l7 l7_forwarded), denied $(delta spoof l7 l7_denied))"

  # result.json for tests/demo (and anyone scripting the demo).
  {
    printf '{"prometheus":"%s","metrics_port":%s,"rounds":%s,"namespace":"%s",' "$prom_url" "$metrics_port" "$rounds" "$ns"
    printf '"monitor":{"drops_l3_l4":%s,"drops_l7":%s,"l7_requests":%s,"l7_forwarded":%s,"l7_denied":%s},' \
      "${monitor_drops[l3_l4]}" "${monitor_drops[l7]}" "$monitor_l7_requests" "$monitor_l7_forwarded" "$monitor_l7_denied"
    printf '"steps":{'
    local first=1
    for v in "${step_status[@]}"; do
      [ $first = 1 ] || printf ','; first=0
      printf '"%s":"%s"' "${v%%|*}" "${v#*|}"
    done
    printf '},"verdicts":['
    first=1
    for v in "${verdicts[@]}"; do
      IFS='|' read -r vs ship what outcome <<<"$v"
      [ $first = 1 ] || printf ','; first=0
      printf '{"step":"%s","ship":"%s","request":"%s","outcome":%s}' "$vs" "$ship" "$what" \
        "$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$outcome")"
    done
    printf '],"queries":{'
    first=1
    for m in "${metric_names[@]}"; do
      [ $first = 1 ] || printf ','; first=0
      printf '"%s":%s' "$m" "$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "${metric_query[$m]}")"
    done
    printf '},"metrics":{'
    first=1
    for s in deploy no_policy l3_l4 spoof l7; do
      [ $first = 1 ] || printf ','; first=0
      printf '"%s":{' "$s"
      local f2=1
      for m in "${metric_names[@]}"; do
        [ $f2 = 1 ] || printf ','; f2=0
        printf '"%s":%s' "$m" "${snap[$s.$m]}"
      done
      printf '}'
    done
    printf '},"times":{'
    first=1
    for s in deploy no_policy l3_l4 spoof l7; do
      [ $first = 1 ] || printf ','; first=0
      printf '"%s":%s' "$s" "${snap_time[$s]:-0}"
    done
    printf '},"agent":{'
    first=1
    for s in deploy no_policy l3_l4 spoof l7; do
      [ $first = 1 ] || printf ','; first=0
      printf '"%s":{' "$s"
      local f2=1
      for m in "${agent_metric_names[@]}"; do
        [ $f2 = 1 ] || printf ','; f2=0
        printf '"%s":%s' "$m" "${agent_snap[$s.$m]:-0}"
      done
      printf '}'
    done
    printf '},"snapshots":['
    first=1
    for v in ${snapshots_taken[@]+"${snapshots_taken[@]}"}; do
      [ $first = 1 ] || printf ','; first=0
      printf '"%s"' "$v"
    done
    printf ']}\n'
  } >"$result"

  bold "Open"
  cat <<EOF
  Console dashboard:  $prom_url/consoles/membrane.html
  Prometheus graph:   $prom_url/graph?g0.expr=$(python3 -c 'import urllib.parse,sys; print(urllib.parse.quote(sys.argv[1]))' 'sum(rate(cilium_drop_count_total{direction="INGRESS"}[1m])) by (reason)')&g0.tab=0&g0.range_input=15m
  Alerts:             $prom_url/alerts
  Grafana dashboard:  import deploy/grafana/membrane-dashboard.json (data source: $prom_url)
  (Prometheus listens on 127.0.0.1 only: from another machine use ssh -L $prom_port:127.0.0.1:$prom_port)
EOF
  if [ ${#snapshots_taken[@]} -gt 0 ]; then
    echo "  Snapshots (PNG):    $snap_dir/  (${#snapshots_taken[@]} files: $(for f in "${snapshots_taken[@]}"; do basename "$f"; done | paste -sd' '))"
  elif [ "$take_snapshots" = 1 ]; then
    echo "  Snapshots:          none could be taken (see $log_dir/chromium.log)"
  fi
  cat <<EOF

The agent and Prometheus keep running with the pods and the policy, so you can explore:
  $bin/membrane get pods -n $ns -o wide; $bin/membrane get services -n $ns
  $bin/membrane monitor --type l7            # then, in another shell:
  $bin/membrane exec -n $ns tiefighter -- curl -s -XPUT $target/v1/exhaust-port
  $bin/membrane exec -n $ns xwing -- curl -s --max-time 2 -XPOST $target/v1/request-landing
  curl -s 127.0.0.1:$metrics_port/metrics | grep cilium_drop_count_total
Stop everything and remove what the demo created:  make demo-stop
Results (JSON): $result
EOF
}

# ---------------------------------------------------------------------------------------------
stop_demo
# Both ports before starting anything, so a taken port leaves nothing behind.
port_free_or_die "$metrics_port" MEMBRANE_DEMO_METRICS_PORT
port_free_or_die "$prom_port" MEMBRANE_DEMO_PROMETHEUS_PORT
mkdir -p "$run_dir" "$log_dir"
rm -f "$result" "$run_dir/pods.json"
declare -A monitor_drops=([l3_l4]=0 [l7]=0)
monitor_l7_requests=0 monitor_l7_forwarded=0 monitor_l7_denied=0
prev=""
started=$(date +%s)

bold "1. Start the agent and Prometheus"
start_agent
step "prometheus on $prom_url (log: $log_dir/prometheus.log), scraping 127.0.0.1:$metrics_port every 2 s"
start_prometheus

bold "2. Deploy the Star Wars app"
step_deploy_app

bold "3. No policy: both ships land (bounded loop, $rounds rounds)"
step_no_policy

bold "4. L3/L4 policy: tiefighter lands, xwing hangs, INGRESS drops rise"
step_l3_l4

bold "5. Spoofing: xwing sends packets with deathstar's address, EGRESS drops rise"
step_spoof

bold "6. L7 policy: POST lands, tiefighter's PUT and GET are denied"
step_l7

bold "7. Snapshots of the key charts"
# One more scrape interval so the charts' last points include the L7 step.
sleep 2
snapshot_charts
if [ ${#snapshots_taken[@]} -gt 0 ]; then printf '  %s\n' "${snapshots_taken[@]}"; fi

step_report
echo "(the story took $(( $(date +%s) - started )) s)"
