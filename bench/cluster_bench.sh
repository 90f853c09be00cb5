#!/usr/bin/env bash
# Cluster convergence and throughput, in throwaway namespaces (kcb-*):
#
#   cargo build --release && bash bench/cluster_bench.sh [SIZES...]     # default: 5 10 20
#   TRIALS=N (default 7) joins measured per size.
#
# World per size: a fabric namespace with two underlay segments (bridges) it routes
# between, a real etcd in it, N node namespaces (odd ones on segment 0, even ones on
# segment 1, so half the pairs are routed and half VXLAN), `knit node join` + `knit
# daemon` on each, one cluster network and one sandbox per node.
#
# Convergence: a new node joins (t0 = just before `knit node join`), starts its daemon
# and attaches a sandbox; t1 = when every other node's sandbox has answered a ping from
# it... precisely: when a ping from every other node's sandbox to the new sandbox has
# succeeded (each pings in a tight loop, 50 ms timeout per try). The node then leaves and
# its namespace goes, so every trial joins the N+1st node. Reported p50 and max (p99 of 7).
#
# Throughput (iperf3, TCP, 10 s, same run, largest size only): sandbox to sandbox on one
# node (veth and bridge: the baseline), across nodes routed, across nodes over VXLAN.
set -euo pipefail
cd "$(dirname "$0")/.."
K=${KNIT:-$PWD/target/release/knit}
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(5 10 20)
TRIALS=${TRIALS:-7}
P=kcb
FAB=$P-fab
ETCD_URL=http://192.168.90.1:2379

cleanup() {
  pkill -f -- "--state-dir /tmp/$P-" 2>/dev/null || true
  pkill -f -- "--data-dir /tmp/$P-etcd" 2>/dev/null || true
  pkill -f "iperf3 -s -D --pidfile /tmp/$P-" 2>/dev/null || true
  sleep 0.3
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do ip netns del "$ns"; done
  rm -rf /tmp/$P-* 2>/dev/null || true
}
trap cleanup EXIT

knit() { local n=$1; shift; nsenter --net=/run/netns/$P-n$n "$K" --state-dir /tmp/$P-n$n "$@"; }

add_node() { # add_node I: namespace, underlay on its segment, join, daemon, sandbox
  local i=$1 seg=$(( $1 % 2 )) ip
  ip=192.168.$((90 + seg)).$((10 + i))
  ip netns add $P-n$i
  ip -n $P-n$i link set lo up
  ip -n $P-n$i link add ul0 type veth peer name ul$i netns $FAB
  ip -n $FAB link set ul$i master seg$seg up
  ip -n $P-n$i addr add $ip/24 dev ul0
  ip -n $P-n$i link set ul0 up
  ip -n $P-n$i route add default via 192.168.$((90 + seg)).1
  knit "$i" node join --etcd $ETCD_URL --name n$i --underlay ul0 >/dev/null
  nsenter --net=/run/netns/$P-n$i "$K" --state-dir /tmp/$P-n$i daemon --resolv-conf /dev/null \
    > /tmp/$P-n$i.log 2>&1 &
  ip netns add $P-s$i
  knit "$i" attach pods /run/netns/$P-s$i >/dev/null
}

remove_node() {
  local i=$1
  knit "$i" detach pods /run/netns/$P-s$i >/dev/null
  pkill -f -- "--state-dir /tmp/$P-n$i daemon" || true
  knit "$i" node leave >/dev/null
  ip netns del $P-s$i; ip netns del $P-n$i; rm -rf /tmp/$P-n$i
}

sandbox_ip() { ip -n $P-s$1 -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1; }

world() { # world N
  cleanup
  ip netns add $FAB
  ip -n $FAB link set lo up
  ip netns exec $FAB sysctl -qw net.ipv4.ip_forward=1
  for seg in 0 1; do
    ip -n $FAB link add seg$seg type bridge
    ip -n $FAB link set seg$seg up
    ip -n $FAB addr add 192.168.$((90 + seg)).1/24 dev seg$seg
  done
  ip netns exec $FAB etcd --name default --data-dir /tmp/$P-etcd \
    --listen-client-urls http://0.0.0.0:2379 --advertise-client-urls $ETCD_URL \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster default=http://127.0.0.1:2380 > /tmp/$P-etcd.log 2>&1 &
  for _ in $(seq 100); do ip netns exec $FAB bash -c "echo > /dev/tcp/192.168.90.1/2379" 2>/dev/null && break; sleep 0.05; done
  # The first node creates the network; every node then has its block.
  local i
  for i in $(seq 1 "$1"); do
    if [ "$i" = 1 ]; then
      ip netns add $P-n1; ip -n $P-n1 link set lo up
      ip -n $P-n1 link add ul0 type veth peer name ul1 netns $FAB
      ip -n $FAB link set ul1 master seg1 up
      ip -n $P-n1 addr add 192.168.91.11/24 dev ul0; ip -n $P-n1 link set ul0 up
      ip -n $P-n1 route add default via 192.168.91.1
      knit 1 node join --etcd $ETCD_URL --name n1 --underlay ul0 >/dev/null
      knit 1 network create pods --scope cluster --subnet 10.250.0.0/16 >/dev/null
      nsenter --net=/run/netns/$P-n1 "$K" --state-dir /tmp/$P-n1 daemon --resolv-conf /dev/null \
        > /tmp/$P-n1.log 2>&1 &
      ip netns add $P-s1
      knit 1 attach pods /run/netns/$P-s1 >/dev/null
    else
      add_node "$i"
    fi
  done
}

pct() { # pct P < values (one per line, ms)
  sort -n | awk -v p="$1" '{v[NR]=$1} END {r=int((NR*p+99)/100); if (r<1) r=1; print v[r]}'
}

echo "cluster convergence: join -> reachable (ping) from every other node; $TRIALS joins per size"
printf "%6s %10s %10s %10s\n" nodes "p50 ms" "max ms" "vxlan/rt"
for N in "${SIZES[@]}"; do
  world "$N"
  sleep 2
  samples=()
  for t in $(seq 1 "$TRIALS"); do
    new=$((N + 1))
    t0=$(date +%s%N)
    add_node "$new"
    ip=$(sandbox_ip "$new")
    pids=()
    for i in $(seq 1 "$N"); do
      ip netns exec $P-s$i bash -c "until ping -c1 -W0.05 $ip >/dev/null 2>&1; do :; done" &
      pids+=($!)
    done
    wait "${pids[@]}"
    t1=$(date +%s%N)
    samples+=($(( (t1 - t0) / 1000000 )))
    remove_node "$new"
    sleep 0.5
  done
  p50=$(printf "%s\n" "${samples[@]}" | pct 50)
  mx=$(printf "%s\n" "${samples[@]}" | pct 100)
  printf "%6s %10s %10s %10s   (samples: %s)\n" "$N" "$p50" "$mx" "mixed" "${samples[*]}"
done

# Throughput at the largest size: n2 and n4 share segment 0 (routed), n1 is on segment 1
# (VXLAN to n2); baseline: two sandboxes on n2.
N=${SIZES[-1]}
ip netns add $P-s2b
knit 2 attach pods /run/netns/$P-s2b >/dev/null
srv() { ip netns exec $P-$1 iperf3 -s -D --pidfile /tmp/$P-iperf-$1.pid >/dev/null; }
run() { # run FROM_NS TO_IP -> Gbit/s
  ip netns exec $P-$1 iperf3 -c "$2" -t 10 -J | python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}
srv s2
sleep 0.5
ip2=$(sandbox_ip 2)
base=$(run s2b "$ip2")
routed=$(run s4 "$ip2")
vx=$(run s1 "$ip2")
echo
echo "iperf3 TCP 10 s to a sandbox on n2 ($N nodes): Gbit/s and ratio to the same-node baseline"
printf "  same node (veth+bridge) %8s\n" "$base"
printf "  routed (n4 -> n2)       %8s  %s\n" "$routed" "$(python3 -c "print('%.2fx' % ($routed/$base))")"
printf "  vxlan  (n1 -> n2)       %8s  %s\n" "$vx" "$(python3 -c "print('%.2fx' % ($vx/$base))")"
for i in 1 2; do
  pid=$(pgrep -f -- "--state-dir /tmp/$P-n$i daemon" | head -1)
  [ -n "$pid" ] && echo "  daemon n$i: $(ps -o rss=,time= -p "$pid" | awk '{printf "%d MiB RSS, CPU %s", $1/1024, $2}')"
done
