#!/usr/bin/env bash
# make demo: the seed's Star Wars L3/L4 scenario on this machine, with real pods,
# real traffic and the resulting Cilium-compatible metrics.
#   scripts/demo.sh BUILD_DIR          run (re-running is safe: it cleans up first)
#   scripts/demo.sh --stop BUILD_DIR   stop the agent and remove everything the demo created
set -euo pipefail

stop=0
if [ "${1:-}" = "--stop" ]; then stop=1; shift; fi
build=${1:-build}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "$build/bin" 2>/dev/null && pwd || true)
run_dir=/var/run/membrane-demo
log_dir=/var/log/membrane-demo
pidfile=$run_dir/membraned.pid
metrics_port=9962
membrane() { "$bin/membrane" "$@"; }

bold() { printf '\n\033[1m%s\033[0m\n' "$*"; }
step() { printf '\033[1;34m==>\033[0m %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "make demo: run as root (membraned loads BPF programs and creates network namespaces)" >&2
  exit 1
fi
if [ ! -x "$bin/membraned" ] || [ ! -x "$bin/membrane" ]; then
  echo "binaries not found in $build/bin: run 'make build' first" >&2
  exit 1
fi

stop_demo() {
  if [ -f "$run_dir/deathstar.pid" ]; then
    kill "$(cat "$run_dir/deathstar.pid")" 2>/dev/null || true
    rm -f "$run_dir/deathstar.pid"
  fi
  if [ -f "$pidfile" ]; then
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$pidfile"
  fi
  # Everything the agent created: pods (netns, veths, routes), BPF pins, host device, state.
  "$bin/membraned" cleanup >/dev/null 2>&1 || true
}

if [ $stop = 1 ]; then
  stop_demo
  echo "demo stopped; every pod, BPF pin, route and state file it created is gone"
  exit 0
fi

stop_demo
mkdir -p "$run_dir" "$log_dir"

bold "1. Start the agent"
step "membraned  (log: $log_dir/membraned.log)"
"$bin/membraned" >"$log_dir/membraned.log" 2>&1 &
echo $! >"$pidfile"
for _ in $(seq 1 100); do membrane status --brief >/dev/null 2>&1 && break; sleep 0.1; done
membrane status

bold "2. Deploy the Star Wars pods"
step "membrane endpoint create deathstar --labels org=empire,class=deathstar"
membrane endpoint create deathstar --labels org=empire,class=deathstar
membrane endpoint create tiefighter --labels org=empire,class=tiefighter
membrane endpoint create xwing --labels org=alliance,class=xwing
deathstar_ip=$(membrane endpoint get deathstar -o json | python3 -c 'import json,sys; j=json.load(sys.stdin); j=j[0] if isinstance(j,list) else j; print(j["ipv4"])')
step "deathstar's HTTP API on $deathstar_ip:80 (examples/starwars/deathstar.py)"
"$bin/membrane" exec deathstar -- python3 "$here/examples/starwars/deathstar.py" 80 >"$log_dir/deathstar.log" 2>&1 &
echo $! >"$run_dir/deathstar.pid"
for _ in $(seq 1 50); do
  membrane exec tiefighter -- curl -s --max-time 1 -o /dev/null "http://$deathstar_ip/v1/healthz" && break
  sleep 0.2
done
membrane endpoint list

land() { membrane exec "$1" -- curl -s --max-time "${2:-3}" -XPOST "http://$deathstar_ip/v1/request-landing"; }
metric() {  # metric NAME LABELS -> value (0 if absent); label values may contain spaces
  local v
  v=$(curl -s "http://127.0.0.1:$metrics_port/metrics" | grep -F "$1{$2} " | awk '{print $NF}')
  echo "${v:-0}"
}

bold "3. No policy: both ships land"
printf 'tiefighter: %s\n' "$(land tiefighter)"
printf 'xwing:      %s\n' "$(land xwing)"

bold "4. Apply the L3/L4 policy (examples/starwars/sw_l3_l4_policy.yaml)"
step "membrane policy import examples/starwars/sw_l3_l4_policy.yaml"
membrane policy import "$here/examples/starwars/sw_l3_l4_policy.yaml"
membrane endpoint list

bold "5. Traffic under the policy"
labels='direction="INGRESS",reason="Policy denied"'
before=$(metric cilium_drop_count_total "$labels")
"$bin/membrane" monitor --type drop >"$log_dir/monitor.log" 2>/dev/null &
monitor_pid=$!
sleep 0.5
printf 'tiefighter: %s\n' "$(land tiefighter)"
attempts=3
for i in $(seq 1 $attempts); do
  if out=$(land xwing 2); then printf 'xwing:      %s\n' "$out"; else echo "xwing:      (no answer: timed out after 2 s, as the seed shows)"; fi
done
step "5 pings from xwing to deathstar"
membrane exec xwing -- ping -c 5 -i 0.2 -W 1 "$deathstar_ip" | tail -2 || true
sleep 1
kill $monitor_pid 2>/dev/null || true
wait $monitor_pid 2>/dev/null || true
after=$(metric cilium_drop_count_total "$labels")

bold "6. What the metrics and the monitor show"
delta=$(python3 -c "print(int(float('$after')-float('$before')))")
syns=$(grep -c 'tcp SYN' "$log_dir/monitor.log" || true)
echos=$(grep -c 'EchoRequest' "$log_dir/monitor.log" || true)
echo "cilium_drop_count_total{$labels}: $before -> $after (+$delta)"
echo "membrane monitor saw $((syns + echos)) drops: $syns TCP SYNs from xwing's $attempts curls (the first SYN and"
echo "its retransmission within 2 s each) and $echos ICMP echo requests: the counter delta, packet for packet."
echo
echo "membrane monitor --type drop (first lines):"
head -n 8 "$log_dir/monitor.log" | sed 's/^/  /'
echo
echo "curl -s localhost:$metrics_port/metrics | grep -E 'cilium_(drop|forward)_count_total|cilium_endpoint_count|cilium_policy '"
curl -s "http://127.0.0.1:$metrics_port/metrics" | grep -E '^cilium_(drop|forward)_count_total|^cilium_endpoint_count|^cilium_policy ' | sed 's/^/  /'

bold "Done"
cat <<EOF
The agent keeps running with the pods and the policy, so you can explore:
  $bin/membrane endpoint list
  $bin/membrane monitor --type drop            # then, in another shell:
  $bin/membrane exec xwing -- curl -s --max-time 2 -XPOST $deathstar_ip/v1/request-landing
  $bin/membrane bpf policy get deathstar       # per-entry packet/byte counters
  curl -s localhost:$metrics_port/metrics
Stop it and remove everything it created with:  make demo-stop
EOF
