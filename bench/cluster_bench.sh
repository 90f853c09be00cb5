#!/usr/bin/env bash
# Cluster convergence and throughput, in throwaway namespaces (kcb-*):
#
#   cargo build --release && bash bench/cluster_bench.sh [SIZES...]     # default: 5 10 20
#   TRIALS=N (default 7) joins measured per size.
#
# World per size: a fabric namespace with two underlay segments (bridges), a router
# namespace on both, a real etcd in the fabric, N node namespaces (odd ones on segment 0, even ones on
# segment 1, so half the pairs are routed and half VXLAN), `knit node join` + `knit
# daemon` on each, one cluster network and one sandbox per node.
#
# Convergence: a new node joins (t0 = just before `knit node join`), starts its daemon
# and attaches a sandbox; t1 = when every other node's sandbox has answered a ping from
# it: a ping from every other node's sandbox to the new sandbox has succeeded (each node
# probes every 20 ms until the first reply). The node then leaves and
# its namespace goes, so every trial joins the N+1st node (under a fresh name). Reported p50 and max (p99 of 7).
#
# Throughput (iperf3, TCP, 10 s, same run, largest size only): sandbox to sandbox on one
# node (veth and bridge: the baseline), across nodes routed, across nodes over VXLAN (on
# one segment, and through the fabric's router).
set -euo pipefail
cd "$(dirname "$0")/.."
K=${KNIT:-$PWD/target/release/knit}
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(5 10 20)
TRIALS=${TRIALS:-7}
P=kcb
FAB=$P-fab
ETCD_URL=http://192.168.90.2:2379
RTR=$P-rtr

cleanup() {
  pkill -f -- "--state-dir /tmp/$P-" 2>/dev/null || true
  pkill -f -- "--data-dir /tmp/$P-etcd" 2>/dev/null || true
  pkill -f "iperf3 -s -D --pidfile /tmp/$P-" 2>/dev/null || true
  sleep 0.3
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do ip netns del "$ns"; done
  rm -rf /tmp/$P-* 2>/dev/null || true
}
[ -n "${KEEP:-}" ] || trap cleanup EXIT

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
  # n3 takes VXLAN even to its segment's nodes (the same-segment VXLAN measurement).
  local backend=auto
  [ "$i" = 3 ] && backend=vxlan
  knit "$i" node join --etcd $ETCD_URL --name n$i --underlay ul0 --backend $backend >/dev/null
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
  ip netns add $RTR
  ip -n $RTR link set lo up
  ip netns exec $RTR sysctl -qw net.ipv4.ip_forward=1
  for seg in 0 1; do
    # A fixed MAC: a bridge without one takes its lowest port's, which changes as nodes
    # join, and the nodes' ARP entries for the router then point at a stale MAC.
    ip -n $FAB link add seg$seg address 02:00:5e:00:90:0$seg type bridge
    ip -n $FAB link set seg$seg up
    # The router is a box of its own on both segments (a namespace on a veth port of
    # each), as a real one is: routing through the bridge devices themselves makes the
    # kernel segment VXLAN's GSO packets in software (a bridge device has no
    # encapsulation offloads), which no hardware router does.
    ip -n $RTR link add r$seg type veth peer name rp$seg netns $FAB
    ip -n $FAB link set rp$seg master seg$seg up
    ip -n $RTR addr add 192.168.$((90 + seg)).1/24 dev r$seg
    ip -n $RTR link set r$seg up
  done
  # etcd's host sits on segment 0.
  ip -n $FAB addr add 192.168.90.2/24 dev seg0
  ip -n $FAB route add 192.168.91.0/24 via 192.168.90.1
  ip netns exec $FAB etcd --name default --data-dir /tmp/$P-etcd \
    --listen-client-urls http://0.0.0.0:2379 --advertise-client-urls $ETCD_URL \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster default=http://127.0.0.1:2380 > /tmp/$P-etcd.log 2>&1 &
  for _ in $(seq 100); do ip netns exec $FAB bash -c "echo > /dev/tcp/192.168.90.2/2379" 2>/dev/null && break; sleep 0.05; done
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
    new=$((N + t))
    t0=$(date +%s%N)
    if [ -n "${DEBUG:-}" ]; then
      for w in 1 3; do
        ( for _ in $(seq 300); do
            if ip -n $P-n$w route show 10.250.5.0/24 | grep -q via; then
              echo "  n$w route after $(( ($(date +%s%N) - t0) / 1000000 )) ms; fdb: $(bridge -n $P-n$w fdb show dev knvx1 | grep -c dst), neigh: $(ip -n $P-n$w neigh show dev knvx1 | grep '10.250.5.0 ')"; break
            fi; sleep 0.02; done ) &
      done
    fi
    add_node "$new"
    ip=$(sandbox_ip "$new")
    pids=()
    for i in $(seq 1 "$N"); do
      # One ping process per node, a probe every 20 ms until the first reply.
      ip netns exec $P-s$i bash -c "ping -q -c1 -w60 -i0.02 $ip >/dev/null 2>&1; echo \$(date +%s%N) > /tmp/$P-reach-$i" &
      pids+=($!)
    done
    wait "${pids[@]}"
    t1=$(date +%s%N)
    ms=$(( (t1 - t0) / 1000000 ))
    samples+=($ms)
    if [ "$ms" -gt 1000 ] && [ -n "${DEBUG:-}" ]; then
      for i in $(seq 1 "$N"); do echo "  n$i reached after $(( ($(cat /tmp/$P-reach-$i) - t0) / 1000000 )) ms"; done
      ip -n $P-n$new route; cat /tmp/$P-n$new.log
    fi
    remove_node "$new"
    sleep 0.5
  done
  p50=$(printf "%s\n" "${samples[@]}" | pct 50)
  mx=$(printf "%s\n" "${samples[@]}" | pct 100)
  printf "%6s %10s %10s %10s   (samples: %s)\n" "$N" "$p50" "$mx" "mixed" "${samples[*]}"
done

# Throughput at the largest size, to a sandbox on n1 (segment 1): from a second sandbox
# on n1 (veth + bridge: the baseline), from n5 (same segment: routed), from n3 (same
# segment, backend vxlan: VXLAN), and from n2 (other segment: VXLAN through the router).
N=${SIZES[-1]}
ip netns add $P-s1b
knit 1 attach pods /run/netns/$P-s1b >/dev/null
run() { # run FROM_NS TO_IP -> Gbit/s
  ip netns exec $P-$1 iperf3 -c "$2" -t 10 -J | python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}
ip netns exec $P-s1 iperf3 -s -D --pidfile /tmp/$P-iperf.pid >/dev/null
sleep 0.5
ip1=$(sandbox_ip 1)
base=$(run s1b "$ip1")
routed=$(run s5 "$ip1")
vx=$(run s3 "$ip1")
vxr=$(run s2 "$ip1")
ratio() { python3 -c "print('%.2fx' % ($1/$base))"; }
echo
echo "iperf3 TCP 10 s to a sandbox on n1 ($N nodes): Gbit/s, ratio to the same-node baseline"
printf "  same node (veth+bridge)          %8s\n" "$base"
printf "  routed, same segment (n5)        %8s  %s\n" "$routed" "$(ratio "$routed")"
printf "  vxlan, same segment (n3)         %8s  %s\n" "$vx" "$(ratio "$vx")"
printf "  vxlan, through the router (n2)   %8s  %s\n" "$vxr" "$(ratio "$vxr")"
for i in 1 2; do
  pid=$(pgrep -f -- "--state-dir /tmp/$P-n$i daemon" | head -1)
  [ -n "$pid" ] && echo "  daemon n$i: $(ps -o rss=,time= -p "$pid" | awk '{printf "%d MiB RSS, CPU %s", $1/1024, $2}')"
done
