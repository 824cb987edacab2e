#!/usr/bin/env bash
# bench/datapath/run.sh: pod -> pod datapath benchmark on this machine (docs/benchmarks.md).
#
#   bench/datapath/run.sh [BUILD_DIR] [--rounds N] [--seconds S] [--quick]
#                         [--configs "V A B C D"] [--server-cpu N] [--client-cpu N] [--unpinned]
#                         [--iptables iptables|iptables-legacy] [--out-dir DIR]
#   defaults: BUILD_DIR=build, 3 rounds of 5 s per test; --quick = 1 round of 2 s (< 1 min)
#
# Configurations, all alive at once:
#   V  direct veth pair between two netns: the physical floor, for context only
#   A  bare veth, membrane's topology without programs: per pod a veth pair, a /32 address,
#      default route via the gateway held by a host device (a veth pair, as membraned uses),
#      host /32 routes, forwarding enabled on the two host veths only. THE baseline.
#   B  membrane: an isolated membraned, two pods, L3/L4 policy (client egress, server ingress)
#   C  B with ~10 000 policy-map entries for the server and 50 000 extra ipcache entries
#   D  A with 10 000 non-matching iptables FORWARD rules before the accepting ones, stateless
#      (both directions walk them); installed for each D slot only, removed right after
# Each round: TCP_RR over V A B C D, then TCP_CRR over V A B C D, then one iperf3 stream over
# V A B C D. Server pinned to --server-cpu (0), client to --client-cpu (1); --unpinned leaves
# both to the scheduler (as pods run), so the agents' CPU competes with them. For B and C the
# agent's CPU time during each RR/CRR sample is recorded (utime+stime from /proc) as ms per
# 1,000 transactions/connections (rr_agent_ms_per_k, crr_agent_ms_per_k). Prints medians per
# config and ratios of medians to A with a bootstrap 95% CI over rounds, as Markdown, and
# saves the samples (.tsv) and the report (.md) in --out-dir (default BUILD_DIR/bench).
#
# Everything created (netns, links, routes, iptables rules, agents with their pins and state,
# processes) is removed on exit, on failure and on Ctrl-C; processes are ended by PID only.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=""
rounds=3
seconds=5
configs="V A B C D"
server_cpu=0
client_cpu=1
unpinned=0
ipt=iptables
out_dir=""
big_policy_ports=10000
big_ipcache=50000
iptables_rules=10000

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --quick) rounds=1; seconds=2; shift ;;
    --configs) configs=$2; shift 2 ;;
    --server-cpu) server_cpu=$2; shift 2 ;;
    --client-cpu) client_cpu=$2; shift 2 ;;
    --unpinned) unpinned=1; shift ;;
    --iptables) ipt=$2; shift 2 ;;
    --out-dir) out_dir=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    -*) echo "unknown flag $1" >&2; usage 2 ;;
    *) build=$1; shift ;;
  esac
done
build=${build:-build}
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "--rounds must be a positive integer" >&2; exit 2; }
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "--seconds must be a positive integer" >&2; exit 2; }
[ "$seconds" -le 120 ] || { echo "--seconds is capped at 120" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run.sh: run as root (netns, veth, BPF, iptables)" >&2; exit 1; }
case "$ipt" in iptables|iptables-nft|iptables-legacy) ;; *) echo "--iptables: iptables, iptables-nft or iptables-legacy" >&2; exit 2 ;; esac
for t in ip iperf3 taskset python3 bpftool "$ipt" "$ipt-restore" timeout; do
  command -v "$t" >/dev/null || { echo "run.sh: $t not found (make deps)" >&2; exit 1; }
done
build=$(cd "$build" 2>/dev/null && pwd || echo "$build")

# --- names: everything carries this run's tag so nothing clashes with other runs ------------
id=$(( $$ % 100000 ))
tag="mbb$id"                       # netns prefix, iptables chain, link prefix (<= 15 chars)
work=/tmp/membrane-bench-$$
bpf_base=/sys/fs/bpf/membrane-bench-$$
rr_port=12865
iperf_port=5201
net_v=10.252.9      # V: direct pair (/24 on-link)
net_a=10.252.8      # A and D: bare topology, gateway .1
cidr_b=10.252.10.0/24
cidr_c=10.252.11.0/24
svc_b=10.252.12.0/24   # per-agent service CIDRs: two agents may not share one (membraned refuses)
svc_c=10.252.13.0/24
mkdir -p "$work"
out_dir=${out_dir:-$build/bench}
mkdir -p "$out_dir"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
results=$out_dir/datapath-$stamp.tsv
report=$out_dir/datapath-$stamp.md

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
warn() { printf '\033[1;33mwarning:\033[0m %s\n' "$*" >&2; }

# --- cleanup: registered before anything is created ------------------------------------------
pids=()               # processes we started (servers, agents)
netns_created=()      # netns we created with ip netns add
links_created=()      # host links we created
agents=()             # "name" of each started agent (args in $work/agent-<name>.args)
ipt_installed=0
ipt_table_preexisted=1
cleaning=0
fg_pid=""             # the measurement client currently running

stop_pid() {  # stop_pid PID: TERM, wait up to 5 s, then KILL; only a PID we started
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  [ $cleaning = 1 ] && return
  cleaning=1
  trap '' INT TERM
  set +e   # best effort from here on: one failed removal must not skip the others
  log "cleanup"
  [ -n "$fg_pid" ] && stop_pid "$fg_pid"
  iptables_remove || true
  # Processes running inside netns we created (servers started via membrane exec).
  local ns p
  for ns in "${netns_created[@]}" $(cat "$work"/agent-*.netns 2>/dev/null); do
    for p in $(ip netns pids "$ns" 2>/dev/null); do stop_pid "$p"; done
  done
  for p in "${pids[@]}"; do stop_pid "$p"; done
  local a
  for a in "${agents[@]}"; do
    # membraned cleanup removes every pod, pin, route, host device and state file it made.
    if [ -x "$build/bin/membraned" ]; then
      # shellcheck disable=SC2046
      timeout 60 "$build/bin/membraned" $(cat "$work/agent-$a.args") cleanup >>"$work/agent-$a.log" 2>&1 \
        || { warn "membraned cleanup for agent $a failed (log: $work/agent-$a.log)"; [ "$rc" != 0 ] || rc=1; }
    fi
    # Belt and braces: whatever of this agent's pods is left (netns <host-device>_<ns>_<pod>,
    # our own device and namespace names), its host veths and its pins.
    local lns l
    for lns in $(ip netns list 2>/dev/null | awk -v p="${tag}h${a,,}_$tag${a,,}_" 'index($1, p) == 1 {print $1}'); do
      for l in $(ip -o link | awk -F': ' -v n="link-netns $lns" 'index($0, n) {print $2}' | cut -d@ -f1); do
        ip link del "$l" 2>/dev/null || true
      done
      ip netns del "$lns" 2>/dev/null || true
      warn "removed leftover pod netns $lns"
    done
    ip link del "${tag}h${a,,}" 2>/dev/null || true
    rm -rf "$bpf_base-$a" 2>/dev/null || true
  done
  for ns in "${netns_created[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  for l in "${links_created[@]}"; do ip link del "$l" 2>/dev/null || true; done
  if [ $rc = 0 ]; then rm -rf "$work"; else echo "logs kept in $work" >&2; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the rr tool ---------------------------------------------------------------------------
rr_bin=$build/bench/rr
if [ ! -x "$rr_bin" ] || [ "$here/rr.c" -nt "$rr_bin" ]; then
  rr_bin=$work/rr
  cc -O2 -Wall -Wextra -o "$rr_bin" "$here/rr.c"
fi

# --- topology helpers ----------------------------------------------------------------------
add_netns() { ip netns add "$1"; netns_created+=("$1"); ip -n "$1" link set lo up; }

# Pod as membrane wires it: veth pair (host end $2, pod end eth0 in netns $1), $3/32 on eth0,
# gateway $4 on-link, default via gateway, permanent neighbour for the gateway; host /32
# route to the pod with the gateway as source; forwarding on the host veth only.
add_bare_pod() {
  local ns=$1 host=$2 ip=$3 gw=$4
  add_netns "$ns"
  ip link add "$host" type veth peer name eth0 netns "$ns"
  links_created+=("$host")
  sysctl -qw "net.ipv6.conf.$host.disable_ipv6=1"
  sysctl -qw "net.ipv4.conf.$host.forwarding=1"
  ip link set "$host" up
  local hmac; hmac=$(cat "/sys/class/net/$host/address")
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  ip -n "$ns" addr add "$ip/32" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add "$gw/32" dev eth0 scope link
  ip -n "$ns" route add default via "$gw" dev eth0
  ip -n "$ns" neigh add "$gw" lladdr "$hmac" dev eth0 nud permanent
  ip route add "$ip/32" dev "$host" scope link src "$gw"
}

# Per config: how to run a command in its server/client pod, and the server address.
declare -A srv_ip cli_ip srv_ns cli_ns cfg_name
cfg_name[V]="bare veth pair (direct, no host)"
cfg_name[A]="bare veth via host (baseline)"
cfg_name[B]="membrane, L3/L4 policy"
cfg_name[C]="membrane, 10k policy + 50k ipcache"
cfg_name[D]="iptables, 10k rules (A + rules)"

in_pod() {  # in_pod CONFIG srv|cli CMD...: run CMD in that pod
  local c=$1 side=$2; shift 2
  case $c in
    V|A|D) local ns; if [ "$side" = srv ]; then ns=${srv_ns[$c]}; else ns=${cli_ns[$c]}; fi
           ip netns exec "$ns" "$@" ;;
    B|C)   "$build/bin/membrane" --socket "$work/agent-$c.sock" exec -n "$tag${c,,}" "$side" -- "$@" ;;
  esac
}

setup_v() {
  log "V: direct veth pair"
  add_netns "$tag-v-srv"; add_netns "$tag-v-cli"
  ip link add "${tag}vs" netns "$tag-v-srv" type veth peer name "${tag}vc" netns "$tag-v-cli"
  ip netns exec "$tag-v-srv" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  ip netns exec "$tag-v-cli" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  ip -n "$tag-v-srv" addr add "$net_v.2/24" dev "${tag}vs"; ip -n "$tag-v-srv" link set "${tag}vs" up
  ip -n "$tag-v-cli" addr add "$net_v.3/24" dev "${tag}vc"; ip -n "$tag-v-cli" link set "${tag}vc" up
  srv_ns[V]=$tag-v-srv; cli_ns[V]=$tag-v-cli; srv_ip[V]=$net_v.2; cli_ip[V]=$net_v.3
}

setup_a() {
  log "A: bare veth via host (membrane's topology, no programs)"
  # Host device holding the gateway address: a veth pair like membraned's (the kernel here
  # has no CONFIG_DUMMY); its peer only needs to be up for carrier.
  ip link add "${tag}gw" type veth peer name "${tag}gx"
  links_created+=("${tag}gw")
  sysctl -qw "net.ipv6.conf.${tag}gw.disable_ipv6=1" "net.ipv6.conf.${tag}gx.disable_ipv6=1"
  ip addr add "$net_a.1/32" dev "${tag}gw"
  ip link set "${tag}gx" up
  ip link set "${tag}gw" up
  add_bare_pod "$tag-a-srv" "${tag}as" "$net_a.2" "$net_a.1"
  add_bare_pod "$tag-a-cli" "${tag}ac" "$net_a.3" "$net_a.1"
  srv_ns[A]=$tag-a-srv; cli_ns[A]=$tag-a-cli; srv_ip[A]=$net_a.2; cli_ip[A]=$net_a.3
  # D is A's very topology with rules installed for D's slot only.
  srv_ns[D]=${srv_ns[A]}; cli_ns[D]=${cli_ns[A]}; srv_ip[D]=${srv_ip[A]}; cli_ip[D]=${cli_ip[A]}
}

# --- D: iptables -----------------------------------------------------------------------------
chain="MBBENCH-$id"
write_iptables_rules() {
  python3 - "$work/iptables.rules" "$chain" "${tag}ac" "${tag}as" "$net_a.3" "$net_a.2" \
    "$rr_port" "$iperf_port" "$iptables_rules" <<'EOF'
import sys
path, chain, cli_if, srv_if, cli, srv, rr, ipf, n = sys.argv[1:]
n = int(n)
with open(path, "w") as f:
    f.write("*filter\n:%s - [0:0]\n" % chain)
    f.write("-A FORWARD -i %s -o %s -j %s\n" % (cli_if, srv_if, chain))
    f.write("-A FORWARD -i %s -o %s -j %s\n" % (srv_if, cli_if, chain))
    # n rules for other sources (172.21.0.0/16, never used), same ports: no early match.
    for i in range(n):
        port = rr if i % 2 == 0 else ipf
        f.write("-A %s -s 172.21.%d.%d/32 -d %s/32 -p tcp -m tcp --dport %s -j ACCEPT\n"
                % (chain, i // 250, 1 + i % 250, srv, port))
    # The real policy: client -> server ports, and (stateless) the replies.
    for p in (rr, ipf):
        f.write("-A %s -s %s/32 -d %s/32 -p tcp -m tcp --dport %s -j ACCEPT\n" % (chain, cli, srv, p))
        f.write("-A %s -s %s/32 -d %s/32 -p tcp -m tcp --sport %s -j ACCEPT\n" % (chain, srv, cli, p))
    f.write("-A %s -j DROP\nCOMMIT\n" % chain)
EOF
}

nft_filter_table_exists() { nft list table ip filter >/dev/null 2>&1; }

iptables_install() {
  ipt_installed=1
  local t0; t0=$(date +%s%N)
  "$ipt-restore" -w --noflush <"$work/iptables.rules"
  echo $(( ($(date +%s%N) - t0) / 1000000 )) >>"$work/iptables-restore.ms"
}

iptables_remove() {
  [ $ipt_installed = 1 ] || return 0
  "$ipt" -w -D FORWARD -i "${tag}ac" -o "${tag}as" -j "$chain" 2>/dev/null || true
  "$ipt" -w -D FORWARD -i "${tag}as" -o "${tag}ac" -j "$chain" 2>/dev/null || true
  "$ipt" -w -F "$chain" 2>/dev/null || true
  "$ipt" -w -X "$chain" 2>/dev/null || true
  # iptables-nft leaves the (now empty) filter table and its base-chain hooks behind: drop
  # it if we created it and nobody else put rules in it since, so A, B, C run hook-free.
  if [ "$ipt" != iptables-legacy ] && [ $ipt_table_preexisted = 0 ] && nft_filter_table_exists; then
    local nrules
    nrules=$(nft -j list table ip filter | python3 -c 'import json,sys; print(sum(1 for o in json.load(sys.stdin)["nftables"] if "rule" in o))')
    if [ "$nrules" = 0 ]; then nft delete table ip filter 2>/dev/null || true; fi
  fi
  ipt_installed=0
}

# --- B, C: membrane --------------------------------------------------------------------------
membrane_cli() { local c=$1; shift; "$build/bin/membrane" --socket "$work/agent-$c.sock" "$@"; }

# L3/L4 only: no L7 proxy, so the two agents share no proxy socket, ports or TPROXY rules.
start_agent() {  # start_agent B|C CIDR SERVICE_CIDR
  local c=$1 cidr=$2 svc=$3 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  echo "--api-socket $work/agent-$c.sock --state-dir $work/state-$c --bpf-root $bpf_base-$c --pod-cidr $cidr --service-cidr $svc --host-device ${tag}h${c,,} --prometheus-serve-addr 127.0.0.1:$port --enable-l7-proxy false --lock-dir $work/locks" \
    >"$work/agent-$c.args"
  echo "$port" >"$work/agent-$c.port"
  agents+=("$c")
  # shellcheck disable=SC2046
  "$build/bin/membraned" $(cat "$work/agent-$c.args") >"$work/agent-$c.log" 2>&1 &
  pids+=($!)
  local pid=$!
  echo "$pid" >"$work/agent-$c.pid"
  for _ in $(seq 1 200); do
    membrane_cli "$c" status --brief >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  warn "membraned ($c) did not become healthy; log $work/agent-$c.log:"
  tail -n 20 "$work/agent-$c.log" >&2
  return 1
}

ep_field() {  # ep_field CONFIG POD FIELD
  membrane_cli "$1" endpoint get "$2" -n "$tag${1,,}" -o json |
    python3 -c 'import json,sys; j=json.load(sys.stdin); j=j[0] if isinstance(j,list) else j; print(j[sys.argv[1]])' "$3"
}

policy_yaml() {  # policy_yaml NAMESPACE
  cat <<EOF
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: bench-server-ingress
  namespace: $1
spec:
  endpointSelector:
    matchLabels:
      app: bench-server
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: bench-client
    toPorts:
    - ports:
      - port: "$rr_port"
        protocol: TCP
      - port: "$iperf_port"
        protocol: TCP
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: bench-client-egress
  namespace: $1
spec:
  endpointSelector:
    matchLabels:
      app: bench-client
  egress:
  - toEndpoints:
    - matchLabels:
        app: bench-server
    toPorts:
    - ports:
      - port: "$rr_port"
        protocol: TCP
      - port: "$iperf_port"
        protocol: TCP
EOF
}

big_policy_yaml() {  # big_policy_yaml NAMESPACE NPORTS: NPORTS more ports from the client, 20000..
  python3 - "$1" "$2" <<'EOF'
import sys
ns, n = sys.argv[1], int(sys.argv[2])
print("""apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: bench-big
  namespace: %s
spec:
  endpointSelector:
    matchLabels:
      app: bench-server
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: bench-client
    toPorts:
    - ports:""" % ns)
lo = 20000
while n > 0:
    k = min(n, 4096)
    print('      - port: "%d"\n        endPort: %d\n        protocol: TCP' % (lo, lo + k - 1))
    lo += k
    n -= k
EOF
}

policy_entries() {  # policy_entries CONFIG POD
  membrane_cli "$1" bpf policy get "$2" -n "$tag${1,,}" -o json |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'
}

ipcache_entries() {  # ipcache_entries CONFIG
  bpftool -j map dump pinned "$bpf_base-$1/mb_ipcache_v1" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'
}

fill_ipcache() {  # fill_ipcache CONFIG N: N /32 entries in 172.20.0.0/14, never sent traffic
  python3 - "$bpf_base-$1/mb_ipcache_v1" "$2" >"$work/ipcache.batch" <<'EOF'
import sys
path, n = sys.argv[1], int(sys.argv[2])
def hexs(b): return " ".join("%02x" % x for x in b)
for i in range(n):
    ip = bytes([172, 20 + (i >> 16), (i >> 8) & 0xff, i & 0xff])
    # struct mb_ipcache_key {u32 prefixlen; u16 pad; u8 cluster_id; u8 family; u32 ip[4]}
    key = (64).to_bytes(4, "little") + bytes([0, 0, 0, 4]) + ip + bytes(12)
    # struct mb_remote_info {u32 identity; u32 tunnel_endpoint; u16 node_id; u8 flags; u8 pad}
    ident = 100000 + i % 1000
    val = ident.to_bytes(4, "little") + bytes(8)
    print("map update pinned %s key hex %s value hex %s" % (path, hexs(key), hexs(val)))
EOF
  bpftool batch file "$work/ipcache.batch" >/dev/null
}

setup_membrane() {  # setup_membrane B|C
  local c=$1 cidr svc ns
  if [ "$c" = B ]; then cidr=$cidr_b svc=$svc_b; else cidr=$cidr_c svc=$svc_c; fi
  ns=$tag${c,,}
  log "$c: membraned (pod CIDR $cidr, bpf root $bpf_base-$c)"
  start_agent "$c" "$cidr" "$svc" || return 1
  # Pod netns names are <host-device>_<ns>_<pod> for an agent with its own --host-device.
  echo "${tag}h${c,,}_${ns}_srv" >"$work/agent-$c.netns"
  echo "${tag}h${c,,}_${ns}_cli" >>"$work/agent-$c.netns"
  membrane_cli "$c" endpoint create srv -n "$ns" --labels app=bench-server >/dev/null || return 1
  membrane_cli "$c" endpoint create cli -n "$ns" --labels app=bench-client >/dev/null || return 1
  srv_ip[$c]=$(ep_field "$c" srv ipv4) || return 1
  cli_ip[$c]=$(ep_field "$c" cli ipv4) || return 1
  policy_yaml "$ns" >"$work/policy-$c.yaml"
  membrane_cli "$c" policy import "$work/policy-$c.yaml" >/dev/null || return 1
  if [ "$c" = C ]; then
    big_policy_yaml "$ns" "$big_policy_ports" >"$work/policy-big.yaml"
    local t0; t0=$(date +%s%N)
    membrane_cli "$c" policy import "$work/policy-big.yaml" >/dev/null || return 1
    log "C: imported $big_policy_ports-port policy in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
    t0=$(date +%s%N)
    fill_ipcache C "$big_ipcache" || return 1
    log "C: $big_ipcache ipcache entries written in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  fi
  local n_srv n_cli n_ipc
  n_srv=$(policy_entries "$c" srv) || return 1
  n_cli=$(policy_entries "$c" cli) || return 1
  n_ipc=$(ipcache_entries "$c") || return 1
  echo "$c: policy map entries server=$n_srv client=$n_cli, ipcache entries=$n_ipc" >>"$work/maps.txt"
  log "$c: policy map entries: server $n_srv, client $n_cli; ipcache entries: $n_ipc"
}

# --- servers and measurements ----------------------------------------------------------------
start_servers() {  # start_servers CONFIG: rr and iperf3 servers in the server pod, pinned
  local c=$1 ip=${srv_ip[$1]}
  local max=$(( rounds * (seconds * 3 + 60) + 600 ))
  in_pod "$c" srv $(pin "$server_cpu") "$rr_bin" -s -b "$ip" -p "$rr_port" -T "$max" \
    >"$work/srv-$c-rr.log" 2>&1 &
  pids+=($!)
  in_pod "$c" srv $(pin "$server_cpu") iperf3 -s -B "$ip" -p "$iperf_port" --idle-timeout "$max" \
    >"$work/srv-$c-iperf.log" 2>&1 &
  pids+=($!)
  # Ready when the client can do one transaction (also proves the policy allows the flow).
  local ok=0
  for _ in $(seq 1 50); do
    if in_pod "$c" cli timeout 5 "$rr_bin" -c "$ip" -p "$rr_port" -m rr -t 0.05 >/dev/null 2>&1; then
      ok=1; break
    fi
    sleep 0.2
  done
  if [ $ok = 0 ]; then warn "$c: no TCP_RR transaction from client to $ip:$rr_port within 10 s"; return 1; fi
  # Proof that policy is enforced: a port the policy does not allow (nothing listens there)
  # must time out (SYN dropped), not be refused (RST from the server's stack).
  if [ "$c" = B ] || [ "$c" = C ]; then
    local rc=0
    in_pod "$c" cli timeout 1 "$rr_bin" -c "$ip" -p "$(( rr_port + 1 ))" -m rr -t 0.05 >/dev/null 2>&1 || rc=$?
    if [ $rc = 124 ]; then
      echo "$c: port $(( rr_port + 1 )) (not allowed) dropped: policy enforced" >>"$work/maps.txt"
    else
      warn "$c: a connection to port $(( rr_port + 1 )), which the policy does not allow, was not dropped (rc $rc): policy NOT enforced"
      echo "$c: policy NOT enforced (port $(( rr_port + 1 )) not dropped)" >>"$work/maps.txt"
    fi
  fi
}

forwarded_packets() {  # forwarded_packets CONFIG: sum of cilium_forward_count_total
  curl -s --max-time 5 "http://127.0.0.1:$(cat "$work/agent-$1.port")/metrics" |
    awk '/^cilium_forward_count_total/ {s += $2} END {printf "%.0f", s}'
}

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$results"; }
pin() { [ "$unpinned" = 1 ] || echo "taskset -c $1"; }  # pin CPU: the taskset prefix, or nothing
# utime+stime of a config's agent in clock ticks ("" when the config has no agent).
agent_ticks() { [ -f "$work/agent-$1.pid" ] && awk '{print $14 + $15}' "/proc/$(cat "$work/agent-$1.pid")/stat" 2>/dev/null || true; }

# Foreground child run in the background + wait, so that TERM/INT reach the trap at once
# instead of after the current measurement; cleanup stops it by PID.
run_child() {  # run_child OUTFILE CMD...
  local out=$1; shift
  "$@" >"$out" 2>>"$work/client.log" &
  fg_pid=$!
  local rc=0
  wait "$fg_pid" || rc=$?
  fg_pid=""
  return $rc
}

measure() {  # measure CONFIG ROUND rr|crr|stream
  local c=$1 r=$2 t=$3 ip=${srv_ip[$1]} out=$work/client.out
  local to=$(( seconds + 20 ))
  if [ "$t" != stream ]; then
    local ticks_before
    ticks_before=$(agent_ticks "$c")
    if run_child "$out" in_pod "$c" cli $(pin "$client_cpu") timeout "$to" "$rr_bin" -c "$ip" -p "$rr_port" -m "$t" -t "$seconds"; then
      local rate p50 p99
      rate=$(sed -n 's/.* rate=\([0-9.]*\).*/\1/p' "$out")
      p50=$(sed -n 's/.* p50_us=\([0-9.]*\).*/\1/p' "$out")
      p99=$(sed -n 's/.* p99_us=\([0-9.]*\).*/\1/p' "$out")
      record "$c" "$r" "${t}_rate" "$rate"; record "$c" "$r" "${t}_p50" "$p50"; record "$c" "$r" "${t}_p99" "$p99"
      local agent=""
      if [ -n "$ticks_before" ]; then
        agent=$(python3 -c 'import os,sys; t=(int(sys.argv[2])-int(sys.argv[1]))*1000/os.sysconf("SC_CLK_TCK"); n=float(sys.argv[3])*float(sys.argv[4]); print("%.3f" % (t*1000/n if n else 0))' \
          "$ticks_before" "$(agent_ticks "$c")" "$rate" "$seconds")
        record "$c" "$r" "${t}_agent_ms_per_k" "$agent"
        agent="  agent ${agent} ms CPU per 1,000"
      fi
      printf '   %s %-6s %9.0f /s    p50 %6.1f us  p99 %7.1f us%s\n' "$c" "$t" "$rate" "$p50" "$p99" "$agent" >&2
    else
      warn "$c round $r $t failed (see $work/client.log)"
    fi
    return 0
  fi
  if run_child "$out" in_pod "$c" cli $(pin "$client_cpu") timeout "$to" iperf3 -c "$ip" -p "$iperf_port" -t "$seconds" -J; then
    local gbps
    gbps=$(python3 -c 'import json,sys; print("%.3f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/1e9))' "$out") || gbps=""
    if [ -n "$gbps" ]; then
      record "$c" "$r" stream_gbps "$gbps"
      printf '   %s stream %9.2f Gbit/s\n' "$c" "$gbps" >&2
    else
      warn "$c round $r stream: could not parse iperf3 output"
    fi
  else
    warn "$c round $r stream failed (see $work/client.log)"
  fi
}

# --- main ----------------------------------------------------------------------------------
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
log "datapath bench: configs '$configs', $rounds round(s) x ${seconds}s, $([ "$unpinned" = 1 ] && echo "unpinned" || echo "server CPU $server_cpu, client CPU $client_cpu"); load average $load_before"
if ip route show | grep -qE '^(unreachable )?10\.252\.(8|9|10|11|12|13)\.'; then
  echo "run.sh: 10.252.8-13.x already routed on this host (another bench run?)" >&2; exit 1
fi
if nft_filter_table_exists; then ipt_table_preexisted=1; else ipt_table_preexisted=0; fi

active=""
skipped=""
for c in $configs; do
  case $c in
    V) setup_v; active+=" V" ;;
    A) setup_a; active+=" A" ;;
    D) [ -n "${srv_ns[A]:-}" ] || setup_a; write_iptables_rules; active+=" D" ;;
    B|C)
      if [ ! -x "$build/bin/membraned" ] || [ ! -x "$build/bin/membrane" ]; then
        skipped+=" $c"; warn "$c skipped: $build/bin/membraned or membrane missing"; continue
      fi
      if setup_membrane "$c"; then active+=" $c"; else skipped+=" $c"; warn "$c skipped: setup failed (logs in $work)"; fi ;;
    *) echo "unknown config $c" >&2; exit 2 ;;
  esac
done
[ -n "$active" ] || { echo "nothing to measure" >&2; exit 1; }

for c in $active; do
  [ "$c" = D ] && continue   # D shares A's servers
  if ! start_servers "$c"; then active=${active/ $c/}; skipped+=" $c"; fi
done
if [[ " $active " == *" D "* ]] && [[ " $active " != *" A "* ]]; then start_servers D; fi

: >"$results"
# Interleaved per test, so the configurations compared in one round are measured within
# seconds of each other: round r = RR(V A B C D), CRR(V A B C D), stream(V A B C D).
for r in $(seq 1 "$rounds"); do
  log "round $r/$rounds:$active  (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  for t in rr crr stream; do
    for c in $active; do
      if [ "$c" = D ]; then iptables_install; fi
      measure "$c" "$r" "$t"
      if [ "$c" = D ]; then iptables_remove; fi
    done
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# Sanity after the run: the big maps are still big (nothing reconciled them away), and the
# programs saw the traffic.
if [[ " $active " == *" C "* ]]; then
  n_ipc=$(ipcache_entries C || echo "?"); n_pol=$(policy_entries C srv || echo "?")
  echo "C after the run: srv_policy=$n_pol ipcache=$n_ipc" >>"$work/maps.txt"
fi
for c in B C; do
  if [[ " $active " == *" $c "* ]]; then
    echo "$c: cilium_forward_count_total after the run = $(forwarded_packets "$c" || echo "?")" >>"$work/maps.txt"
  fi
done

revision="tree $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -x "$build/bin/membraned" ]; then
  revision+=", membraned $("$build/bin/membraned" --version 2>/dev/null | head -1) built $(date -u -r "$build/bin/membraned" +%Y-%m-%dT%H:%MZ)"
fi
python3 "$here/summarize.py" "$results" --revision "$revision" \
  --configs "$active" --skipped "$skipped" --rounds "$rounds" --seconds "$seconds" \
  --load-before "$load_before" --load-after "$load_after" \
  --maps "$work/maps.txt" --iptables "$ipt" --iptables-restore-ms "$work/iptables-restore.ms" \
  --server-cpu "$server_cpu" --client-cpu "$client_cpu" $([ "$unpinned" = 1 ] && echo --unpinned) | tee "$report"
echo >&2
log "raw samples: $results"
log "report:      $report"
