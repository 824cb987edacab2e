#!/usr/bin/env bash
# bench/l7/run.sh: HTTP requests/s and latency through membrane's L7 path (docs/benchmarks.md).
#
#   bench/l7/run.sh [BUILD_DIR] [--seconds S] [--connections C] [--rounds N] [--quick]
#                   [--half-load] [--half-load-rate R] [--rates R1,R2,...]
#   defaults: BUILD_DIR=build, 3 rounds of 10 s, 32 connections; --quick = 1 round of 3 s
#
# One isolated membraned, three pods (client, server, nginx-rp), in one run on the same cores:
#   direct  client -> server:80, L3/L4 policy only (no proxy): the floor
#   l7      client -> server:80 through membrane-proxy (TPROXY), 10 HTTP rules on the port
#           (9 that do not match, then GET /bench), transparent upstream
#   nginx   client -> nginx-rp:8080 -> server:80: Debian's nginx as a plain reverse proxy
#           (1 worker, upstream keep-alive), the same forwarding without policy
# Server: nginx (1 worker) answering GET /bench with a fixed 2-byte body. Load: wrk (1 thread,
# C keep-alive connections) in the client pod. Prints requests/s, p50 and p99 per config (the
# median round), and the ratios l7/nginx and l7/direct, as Markdown; saves it in BUILD_DIR/bench.
#
# --half-load: afterwards, the latency at a fixed rate of 50 % of the l7 path's saturation
# throughput (the median l7 wrk round; --half-load-rate R sets it explicitly), measured with
# BUILD_DIR/bench/loadgen (open loop: latency from each request's intended send time, no
# coordinated omission), N interleaved rounds of S s over C connections for direct, nginx and
# l7; reports p50/p90/p99/p99.9 per config and the added p99 of l7 over direct and over nginx
# (median of the per-round differences). `make bench-l7` turns it on.
# --rates R1,R2,...: the same open-loop rounds at each of these fixed rates too (a sweep: where
# does the added p99 cross 100 us on this machine?). Every fixed-rate slot also records how busy
# the machine's CPUs were (all CPUs, from /proc/stat) and, for l7, the proxy process's own CPU
# use, because on a small machine the load generator, the server and the proxy share the cores
# and the tail follows the machine's utilisation, not the proxy's work alone.
#
# Bench-only Debian packages: wrk, nginx-light (make bench-l7 installs them).
# Everything created (agent, pods, plumbing, processes) is removed on exit, on failure and on
# Ctrl-C; processes are ended by PID only.
set -euo pipefail

build=""
seconds=10
conns=32
rounds=3
half_load=0
half_rate=""
half_src="50 % of the l7 saturation throughput"
sweep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --connections) conns=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --quick) seconds=3; rounds=1; shift ;;
    --half-load) half_load=1; shift ;;
    --half-load-rate) half_load=1; half_rate=$2; half_src="set with --half-load-rate"; shift 2 ;;
    --rates) sweep=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown flag $1" >&2; exit 2 ;;
    *) build=$1; shift ;;
  esac
done
build=$(cd "${build:-build}" && pwd)
[[ "$seconds" =~ ^[1-9][0-9]*$ && "$seconds" -le 120 ]] || { echo "--seconds: 1..120" >&2; exit 2; }
[[ "$conns" =~ ^[1-9][0-9]*$ && "$conns" -le 1000 ]] || { echo "--connections: 1..1000" >&2; exit 2; }
[[ "$rounds" =~ ^[1-9]$ ]] || { echo "--rounds: 1..9" >&2; exit 2; }
[ -z "$half_rate" ] || [[ "$half_rate" =~ ^[1-9][0-9]*$ && "$half_rate" -le 1000000 ]] || { echo "--half-load-rate: 1..1000000 requests/s" >&2; exit 2; }
[ -z "$sweep" ] || [[ "$sweep" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || { echo "--rates: a comma-separated list of requests/s" >&2; exit 2; }
for r_ in ${sweep//,/ }; do [ "$r_" -le 1000000 ] || { echo "--rates: at most 1000000 requests/s" >&2; exit 2; }; done
[ -z "$sweep" ] || [ -x "$build/bench/loadgen" ] || { echo "run.sh: $build/bench/loadgen not found: run make build" >&2; exit 1; }
[ "$half_load" = 0 ] || [ -x "$build/bench/loadgen" ] || { echo "run.sh: $build/bench/loadgen not found: run make build" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run.sh: run as root" >&2; exit 1; }
for t in wrk nginx iptables ip; do command -v "$t" >/dev/null || { echo "run.sh: $t not found (make bench-l7 installs wrk, nginx-light)" >&2; exit 1; }; done

id=$(( $$ % 100000 ))
work=/tmp/membrane-bench-l7-$$
mkdir -p "$work"
ns="bl7$id"
sock="$work/membrane.sock"
args=(--api-socket "$sock" --state-dir "$work/state" --bpf-root "/sys/fs/bpf/membrane-bench-l7-$$"
      --pod-cidr "10.253.$(( id % 250 )).0/24" --host-device "mbl7$id" --prometheus-serve-addr ""
      --enable-health-checking false --log-level warn
      --proxy-control-socket "$work/proxy.sock" --proxy-port-range "$(( 30000 + (id % 1000) * 2 ))-$(( 30001 + (id % 1000) * 2 ))"
      --proxy-route-table "$(( 20000 + id ))" --proxy-rule-priority "$(( 2000 + id % 20000 ))"
      --proxy-iptables-chain "MBL7_$id")
pids=()
agent_pid=""
cli() { "$build/bin/membrane" --socket "$sock" "$@"; }
cleanup() {
  local rc=$?
  trap '' INT TERM
  # The nginx masters (their pid files: `membrane exec` runs in a subshell here).
  for f in "$work/server.pid" "$work/rp.pid"; do [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "$agent_pid" ]; then kill "$agent_pid" 2>/dev/null || true; wait "$agent_pid" 2>/dev/null || true; fi
  timeout 60 "$build/bin/membraned" cleanup "${args[@]}" >>"$work/agent.log" 2>&1 || { echo "cleanup failed: $work/agent.log" >&2; rc=1; }
  [ "$rc" = 0 ] && rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$build/bin/membraned" "${args[@]}" >"$work/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 100); do cli status --brief >/dev/null 2>&1 && break; sleep 0.1; done
cli status --brief >/dev/null || { echo "membraned did not start: $work/agent.log" >&2; exit 1; }

ip_of() { cli endpoint get "$1" -n "$ns" -o json | python3 -c 'import json,sys; j=json.load(sys.stdin); j=j[0] if isinstance(j,list) else j; print(j["ipv4"])'; }
for p in client server nginx-rp; do cli endpoint create "$p" -n "$ns" --labels "app=$p" >/dev/null; done
srv=$(ip_of server); rp=$(ip_of nginx-rp)

nginx_conf() {  # $1 name, $2 server block
  cat >"$work/$1.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/$1.pid;
error_log $work/$1.error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/$1-tmp;
  proxy_temp_path $work/$1-tmp;
  fastcgi_temp_path $work/$1-tmp;
  uwsgi_temp_path $work/$1-tmp;
  scgi_temp_path $work/$1-tmp;
  keepalive_requests 1000000;
  $2
}
CONF
}
nginx_conf server "server { listen 80; location /bench { return 200 'ok'; } }"
nginx_conf rp "upstream be { server $srv:80; keepalive 64; }
  server { listen 8080; location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
cli exec -n "$ns" server -- nginx -c "$work/server.conf" >"$work/server.log" 2>&1 & pids+=($!)
cli exec -n "$ns" nginx-rp -- nginx -c "$work/rp.conf" >"$work/rp.log" 2>&1 & pids+=($!)

policy() {  # $1: the toPorts rules block of the server's port 80
  cat >"$work/policy.yaml" <<YAML
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bench, namespace: $ns}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}, {matchLabels: {app: nginx-rp}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
$1
YAML
  cli policy import "$work/policy.yaml" >/dev/null
}
rules10="      rules:
        http:"
for i in 1 2 3 4 5 6 7 8 9; do rules10+="
        - {method: POST, path: \"/api/v$i/.*\"}"; done
rules10+="
        - {method: GET, path: \"/bench\"}"

load() {  # $1 url -> "rps p50_ms p99_ms"
  cli exec -n "$ns" client -- wrk -t1 -c"$conns" -d"${seconds}s" --latency "$1" >"$work/wrk.out" 2>&1
  python3 - "$work/wrk.out" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v); x = float(m.group(1))
    return x / 1000 if m.group(2) == "us" else x * 1000 if m.group(2) == "s" else x
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1)); p99 = ms(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1))
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
if errs: sys.exit("wrk: %s non-2xx responses:\n%s" % (errs.group(1), t))
print("%.0f %.3f %.3f" % (rps, p50, p99))
PY
}
for _ in $(seq 50); do cli exec -n "$ns" client -- curl -s --max-time 1 "http://$srv/bench" 2>/dev/null | grep -q ok && break; sleep 0.1; done

declare -A res
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$rounds"); do
  policy ""                                   # L3/L4 only
  res[direct,$r]=$(load "http://$srv/bench")
  res[nginx,$r]=$(load "http://$rp:8080/bench")
  policy "$rules10"                           # 10 HTTP rules on :80
  [ "$(cli exec -n "$ns" client -- curl -s -o /dev/null -w '%{http_code}' -X POST "http://$srv/bench")" = 403 ] \
    || { echo "the L7 policy is not enforced" >&2; exit 1; }
  res[l7,$r]=$(load "http://$srv/bench")
  echo "round $r: direct ${res[direct,$r]} | nginx ${res[nginx,$r]} | l7 ${res[l7,$r]}" >&2
done

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
report=$(python3 - "$rounds" "$seconds" "$conns" "$(nproc)" "$(uname -r)" <<PY
import sys, statistics
rounds, secs, conns, ncpu, kernel = sys.argv[1:]
res = {}
$(for k in "${!res[@]}"; do echo "res[tuple('$k'.split(','))] = '${res[$k]}'"; done)
def med(cfg):
    rows = sorted((tuple(map(float, v.split())) for (c, r), v in res.items() if c == cfg), key=lambda x: x[0])
    return rows[len(rows) // 2]
d, n, l = med("direct"), med("nginx"), med("l7")
print("| config | requests/s | p50 ms | p99 ms |\n|---|---:|---:|---:|")
for name, v in (("direct pod->pod, L3/L4 only", d), ("nginx reverse proxy (1 worker)", n), ("membrane L7, 10 rules", l)):
    print("| %s | %.0f | %.3f | %.3f |" % (name, v[0], v[1], v[2]))
print("\nl7 / nginx requests/s: %.2f; l7 / direct: %.2f  (median of %s rounds of %s s, wrk -t1 -c%s, %s CPUs, kernel %s)"
      % (l[0] / n[0], l[0] / d[0], rounds, secs, conns, ncpu, kernel))
print("load average before/after: $load_before / $load_after")
print("\nper round (requests/s p50_ms p99_ms):")
for r in range(1, int(rounds) + 1):
    print("- round %d: direct %s | nginx %s | l7 %s" % (r, res[("direct", str(r))], res[("nginx", str(r))], res[("l7", str(r))]))
PY
)

# CPU accounting for a fixed-rate slot. /proc/stat's user/system jiffies are sampled at the
# tick and miss short bursts, but idle time is measured exactly on tickless kernels, so
# "busy" = wall time x CPUs - idle. The proxy's own run time and run-queue wait (time runnable
# but not running) come from /proc/PID/task/*/schedstat (nanoseconds, exact).
cpu_idle() { echo "$(awk '/^cpu /{print $5+$6}' /proc/stat) $(date +%s%N)"; }
proxy_sched() {
  local p; p=$(cat "$work/state/proxy.pid" 2>/dev/null) || { echo "0 0"; return; }
  cat /proc/"$p"/task/*/schedstat 2>/dev/null | awk '{r+=$1; d+=$2} END {printf "%.0f %.0f\n", r, d}'
}
fixed_rounds() {  # $1 rate, $2 how it was chosen -> a Markdown section on stdout
  local rate=$1 src=$2 r c i0 w0 r0 d0 i1 w1 r1 d1
  fixed() {  # $1 url -> the loadgen JSON line
    cli exec -n "$ns" client -- "$build/bench/loadgen" --url "$1" --rate "$rate" --seconds "$seconds" \
      --connections "$conns" >"$work/loadgen.out" 2>"$work/loadgen.err" \
      || { echo "loadgen failed against $1:" >&2; cat "$work/loadgen.err" >&2; exit 1; }
    tail -n1 "$work/loadgen.out"
  }
  measured() {  # $1 url -> the loadgen JSON line plus machine_busy_pct, proxy_cpu_pct
    read -r i0 w0 < <(cpu_idle); read -r r0 d0 < <(proxy_sched)
    local out; out=$(fixed "$1")
    read -r i1 w1 < <(cpu_idle); read -r r1 d1 < <(proxy_sched)
    python3 -c '
import json, sys
j = json.loads(sys.argv[1]); idle, wall, run, delay, n = map(int, sys.argv[2:7])
j["machine_busy_pct"] = max(0.0, 100.0 * (1 - idle * 1e7 / (wall * n)))
j["proxy_cpu_pct"] = 100.0 * run / wall
j["proxy_wait_us_per_req"] = delay / 1e3 / max(j["sent"], 1)
print(json.dumps(j))' "$out" "$(( i1 - i0 ))" "$(( w1 - w0 ))" "$(( r1 - r0 ))" "$(( d1 - d0 ))" "$(nproc)"
  }
  local la1; la1=$(cut -d' ' -f1-3 /proc/loadavg)
  declare -A hl
  for r in $(seq "$rounds"); do
    policy ""
    hl[direct,$r]=$(measured "http://$srv/bench")
    hl[nginx,$r]=$(measured "http://$rp:8080/bench")
    policy "$rules10"
    hl[l7,$r]=$(measured "http://$srv/bench")
    echo "fixed-rate round $r at $rate/s:" >&2
    for c in direct nginx l7; do echo "  $c ${hl[$c,$r]}" >&2; done
  done
  local la2; la2=$(cut -d' ' -f1-3 /proc/loadavg)
  for k in "${!hl[@]}"; do echo "$k ${hl[$k]}"; done >"$work/halfload.txt"
  python3 - "$work/halfload.txt" "$rounds" "$seconds" "$conns" "$rate" "$la1" "$la2" "$src" "$(nproc)" <<'PY'
import json, sys, statistics
path, rounds, secs, conns, rate, la1, la2, src, ncpu = sys.argv[1:]
rounds = int(rounds)
hl = {}
for line in open(path):
    key, js = line.split(" ", 1)
    c, r = key.split(",")
    hl[(c, int(r))] = json.loads(js)
cfgs = (("direct", "direct pod->pod, L3/L4 only"), ("nginx", "nginx reverse proxy (1 worker)"), ("l7", "membrane L7, 10 rules"))
R = range(1, rounds + 1)
def med(c, k):
    return statistics.median(hl[(c, r)][k] for r in R)
def bad(c):
    return sum(hl[(c, r)][k] for r in R for k in ("errors", "timeouts", "non2xx", "unsent"))
print("#### Fixed rate: %s requests/s (%s), open loop" % (rate, src))
print("\n| config | achieved req/s | p50 us | p90 us | p99 us | p99.9 us | errors+timeouts+non2xx+unsent | machine CPU busy (%s CPUs) |" % ncpu)
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for c, name in cfgs:
    print("| %s | %.0f | %.0f | %.0f | %.0f | %.0f | %d | %.0f %% |" % (name, med(c, "achieved_rps"), med(c, "p50_us"),
          med(c, "p90_us"), med(c, "p99_us"), med(c, "p999_us"), bad(c), med(c, "machine_busy_pct")))
def added(a, b):
    per = [hl[(a, r)]["p99_us"] - hl[(b, r)]["p99_us"] for r in R]
    return statistics.median(per), per
ad, adr = added("l7", "direct")
an, anr = added("l7", "nginx")
verdict = "met" if ad <= 100 else "NOT met, by %.0f us" % (ad - 100)
print("\n**added p99, l7 - direct: %.0f us** (target <= 100 us: %s); l7 - nginx: %.0f us. Median of the per-round"
      " differences; per round l7 - direct: %s us; l7 - nginx: %s us. The proxy process itself used %.0f %% of one CPU"
      " during the l7 slots and waited %.1f us per request on a run queue (runnable, no CPU free; median)."
      % (ad, verdict, an, " / ".join("%.0f" % x for x in adr), " / ".join("%.0f" % x for x in anr), med("l7", "proxy_cpu_pct"),
         med("l7", "proxy_wait_us_per_req")))
print("(bench/loadgen --rate %s --seconds %s --connections %s per config, %d interleaved rounds; load average before/after: %s / %s)"
      % (rate, secs, conns, rounds, la1, la2))
print("\nper round (p50/p99/p99.9 us):")
for r in R:
    print("- round %d: " % r + " | ".join("%s %.0f/%.0f/%.0f" % (c, hl[(c, r)]["p50_us"], hl[(c, r)]["p99_us"],
          hl[(c, r)]["p999_us"]) for c, _ in cfgs))
bads = [(c, r) for c, _ in cfgs for r in R if any(hl[(c, r)][k] for k in ("errors", "timeouts", "non2xx", "unsent"))]
for c, r in bads:
    print("- round %d %s: errors %d, timeouts %d, non2xx %d, unsent %d" % (r, c, hl[(c, r)]["errors"],
          hl[(c, r)]["timeouts"], hl[(c, r)]["non2xx"], hl[(c, r)]["unsent"]))
PY
}

if [ "$half_load" = 1 ]; then
  # 50 % of the l7 path's saturation throughput: the median l7 wrk round of this run.
  if [ -z "$half_rate" ]; then
    half_rate=$(for r in $(seq "$rounds"); do echo "${res[l7,$r]}" | cut -d' ' -f1; done | sort -n | sed -n "$(( (rounds + 1) / 2 ))p")
    half_rate=$(( half_rate / 2 ))
  fi
  report+=$'\n\n'$(fixed_rounds "$half_rate" "$half_src")
fi
for r_ in ${sweep//,/ }; do
  report+=$'\n\n'$(fixed_rounds "$r_" "set with --rates")
done
echo "$report"
mkdir -p "$build/bench"
echo "$report" >"$build/bench/l7.md"
