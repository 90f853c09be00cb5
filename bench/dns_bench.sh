#!/usr/bin/env bash
# DNS: knit daemon vs aardvark-dns 1.4 serving the same records from the same namespace
# layout (built by knit: a bridge network, 20 named sandboxes, a client sandbox, an
# upstream resolver in an "outside" namespace). dnsperf runs inside the client sandbox.
#
#   cargo build --release --bins --examples && bash bench/dns_bench.sh [SECONDS] [CLIENTS]
# (binaries from $CARGO_TARGET_DIR, default ./target; KNIT_BIN=PATH benches another knit)
#
# Prints queries/s, average and p99 latency for local names and for forwarded names. Each
# server is pinned to CPU 0 and dnsperf (and the upstream) to CPU 1, so the numbers measure
# the server, not the two competing for the same core.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
CLIENTS=${2:-8}
case "${CLIENT_SCHED:-batch}" in
  batch) SCHED="chrt --batch 0" ;;
  other) SCHED="" ;;
  *) echo "CLIENT_SCHED must be batch or other, not '$CLIENT_SCHED'" >&2; exit 2 ;;
esac
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
K=${KNIT_BIN:-$TARGET/release/knit}
UP=$TARGET/release/examples/dns_upstream
[ -x "$K" ] && [ -x "$UP" ] || { echo "build first: cargo build --release --bins --examples" >&2; exit 1; }
command -v dnsperf >/dev/null || { apt-get update -qq; apt-get install -y -qq dnsperf >/dev/null; }
AARDVARK=/usr/lib/podman/aardvark-dns
TAG=kdb$$
WORK=$(mktemp -d /tmp/$TAG.XXXX)
NAMESPACES=()
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for n in "${NAMESPACES[@]}"; do ip netns del "$n" 2>/dev/null || true; rm -rf "/etc/netns/$n"; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# One node per server, identical layout: node + outside uplink, network 10.96.0.0/24.
build_node() { # $1 = node name, $2 = dns flag for knit network
  local node=$1 out=$1-out
  ip netns add "$node"; NAMESPACES+=("$node")
  ip netns add "$out"; NAMESPACES+=("$out")
  ip -n "$node" link set lo up; ip -n "$out" link set lo up
  ip -n "$node" link add uplink type veth peer name wan netns "$out"
  ip -n "$node" addr add 198.51.100.1/24 dev uplink; ip -n "$node" link set uplink up
  ip -n "$out" addr add 198.51.100.2/24 dev wan; ip -n "$out" link set wan up
  ip -n "$node" route add default via 198.51.100.2
  local N="nsenter --net=/run/netns/$node $K --state-dir $WORK/$node"
  $N network create bench --subnet 10.96.0.0/24 $2 >/dev/null
  for i in $(seq 1 20); do
    local s=$node-r$i
    NAMESPACES+=("$s")
    $N sandbox add "$s" >/dev/null
    $N attach bench "$s" --alias "svc$i" >/dev/null
  done
  NAMESPACES+=("$node-client")
  $N sandbox add "$node-client" >/dev/null
  $N attach bench "$node-client" >/dev/null
  echo "nameserver 198.51.100.2" > "$WORK/$node.resolv"
  ip netns exec "$out" taskset -c 1 "$UP" 0.0.0.0:53 & PIDS+=($!)
}

# Query files: local names (svcN) and forwarded names (upstream answers any name).
for i in $(seq 1 20); do echo "svc$i A"; done > "$WORK/local.txt"
for i in $(seq 1 2000); do echo "host$i.example.com A"; done > "$WORK/forward.txt"

cpu_ticks() { # user+system clock ticks of a process (all threads)
  awk '{print $14 + $15}' "/proc/$1/stat"
}

run_dnsperf() { # $1 client ns, $2 file, $3 server pid -> "qps avg_ms p99_ms queries_per_cpu_s"
  # Throughput without per-query output; latency percentiles from a second, verbose run
  # (dnsperf prints only the mean itself). The server's CPU time during the first run gives
  # its capacity, queries per CPU-second, independent of how fast the client can send.
  local t0 t1
  t0=$(cpu_ticks "$3")
  ip netns exec "$1" $SCHED taskset -c 1 dnsperf -s 10.96.0.1 -d "$2" -c "$CLIENTS" -l "$SECS" 2>/dev/null > "$WORK/qps.out" || true
  t1=$(cpu_ticks "$3")
  ip netns exec "$1" $SCHED taskset -c 1 dnsperf -s 10.96.0.1 -d "$2" -c "$CLIENTS" -l "$SECS" -v 2>/dev/null > "$WORK/perf.out" || true
  python3 - "$WORK/perf.out" "$WORK/qps.out" "$((t1 - t0))" "$(getconf CLK_TCK)" <<'PY'
import re, sys
lat = []; qps = 0.0; completed = 0
for line in open(sys.argv[2], errors="replace"):
    m = re.search(r"Queries per second:\s+([\d.]+)", line)
    if m: qps = float(m.group(1))
    m = re.search(r"Queries completed:\s+(\d+)", line)
    if m: completed = int(m.group(1))
cpu = int(sys.argv[3]) / int(sys.argv[4])
for line in open(sys.argv[1], errors="replace"):
    if line.startswith("> "):
        p = line.split()
        try: lat.append(float(p[-1]))
        except ValueError: pass
lat.sort()
p99 = lat[int(len(lat) * 0.99) - 1] * 1e3 if lat else float("nan")
avg = sum(lat) / len(lat) * 1e3 if lat else float("nan")
eff = completed / cpu if cpu else float("nan")
print(f"{qps:.0f} {avg:.3f} {p99:.3f} {eff:.0f}")
PY
}

# knit
build_node "$TAG-k" ""
declare -A SERVER
taskset -c 0 nsenter --net=/run/netns/$TAG-k $K --state-dir "$WORK/$TAG-k" daemon --resolv-conf "$WORK/$TAG-k.resolv" 2>/dev/null & PIDS+=($!)
SERVER[k]=$!
# aardvark: same layout with knit's DNS off; its records file lists the same names.
build_node "$TAG-a" "--no-dns"
mkdir -p "$WORK/aardvark"
{
  echo "10.96.0.1"
  nsenter --net=/run/netns/$TAG-a $K --state-dir "$WORK/$TAG-a" --json network inspect bench | python3 -c '
import json, sys
v = json.load(sys.stdin)
for i, a in enumerate(v["attachments"]):
    names = [a["sandbox"]] + a.get("aliases", [])
    ip = a["ips"][0].split("/")[0]
    print("%064x %s  %s" % (i + 1, ip, ",".join(names)))'
} > "$WORK/aardvark/bench"
# aardvark reads the node's /etc/resolv.conf: give it ours in a private mount namespace.
taskset -c 0 nsenter --net=/run/netns/$TAG-a unshare -m sh -c "mount --bind $WORK/$TAG-a.resolv /etc/resolv.conf && exec $AARDVARK --config $WORK/aardvark -p 53 run" >/dev/null 2>&1 & PIDS+=($!)
sleep 1.5
# aardvark daemonizes itself: find its pid.
SERVER[a]=$(cat "$WORK/aardvark/aardvark.pid" 2>/dev/null || pgrep -n -f "aardvark-dns --config $WORK/aardvark")
PIDS+=("${SERVER[a]}")
for n in k a; do
  ip netns exec "$TAG-$n-client" dig +short +time=1 @10.96.0.1 svc3 | grep -q 10.96.0 || { echo "server $n not answering" >&2; exit 1; }
done

printf "DNS, dnsperf -c %s -l %s from a sandbox to its gateway (10.96.0.1); server on CPU 0, dnsperf on CPU 1 (policy %s)\n\n" "$CLIENTS" "$SECS" "${CLIENT_SCHED:-batch}"
echo "| server | names | queries/s | avg ms | p99 ms | queries per server CPU-second |"
echo "|---|---|---|---|---|---|"
declare -A R
for kind in local forward; do
  for n in k a; do
    R[$n-$kind]=$(run_dnsperf "$TAG-$n-client" "$WORK/$kind.txt" "${SERVER[$n]}")
    read -r q avg p99 eff <<< "${R[$n-$kind]}"
    name=$([ $n = k ] && echo "knit" || echo "aardvark-dns 1.4")
    echo "| $name | $kind | $q | $avg | $p99 | $eff |"
  done
done
for kind in local forward; do
  read -r kq _ kp ke <<< "${R[k-$kind]}"; read -r aq _ ap ae <<< "${R[a-$kind]}"
  python3 -c "print(f'$kind: knit/aardvark qps = {$kq/$aq:.2f}x, queries per CPU-second = {$ke/$ae:.2f}x, p99 knit {$kp} ms vs aardvark {$ap} ms')"
done
