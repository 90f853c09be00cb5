#!/usr/bin/env bash
# The kernel's own ceiling for the paths cluster_bench.sh measures, built by hand with
# iproute2 in throwaway namespaces (kvr-*), no knit and no firewall at all:
#
#   bash bench/vxlan_reference.sh [SECONDS]      # default 10
#
# Two "nodes" on one underlay bridge (a fabric namespace), each with a bridge, a sandbox
# on it (veth) and a second sandbox on node A; iperf3 TCP to sandbox A1 from A2 (same
# node: veth + bridge), from B1 routed (route to the other node's subnet via its underlay
# address) and from B1 over VXLAN (a second run, the routes through a VXLAN device with
# learning off, a permanent neighbour and FDB entry, as knit programs them). Prints
# Gbit/s and each path's ratio to the same-node one, for comparison with knit's.
# VXOPTS adds options to the VXLAN devices (e.g. VXOPTS=udpcsum, as knit creates them).
set -euo pipefail
T=${1:-10}
P=kvr
cleanup() {
  pkill -f "iperf3 -s -D --pidfile /tmp/$P-" 2>/dev/null || true
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do ip netns del "$ns"; done
  rm -f /tmp/$P-*
}
trap cleanup EXIT
cleanup

ip netns add $P-fab
ip -n $P-fab link add seg address 02:00:5e:00:97:01 type bridge
ip -n $P-fab link set seg up
node() { # node NAME INDEX: underlay 192.168.97.INDEX, sandboxes on 10.97.INDEX.0/24
  local n=$P-$1 i=$2
  ip netns add "$n"
  ip -n "$n" link set lo up
  ip netns exec "$n" sysctl -qw net.ipv4.ip_forward=1
  ip -n "$n" link add ul0 type veth peer name ul$i netns $P-fab
  ip -n $P-fab link set ul$i master seg up
  ip -n "$n" addr add 192.168.97.$i/24 dev ul0
  ip -n "$n" link set ul0 up
  ip -n "$n" link add br0 type bridge
  ip -n "$n" addr add 10.97.$i.1/24 dev br0
  ip -n "$n" link set br0 up
}
sandbox() { # sandbox NODE INDEX HOST
  local s=$P-$1$3 n=$P-$1 i=$2 h=$3
  ip netns add "$s"
  ip -n "$s" link set lo up
  ip -n "$n" link add v$h type veth peer name eth0 netns "$s"
  ip -n "$n" link set v$h master br0 up
  ip -n "$s" addr add 10.97.$i.$((h + 1))/24 dev eth0
  ip -n "$s" link set eth0 up
  ip -n "$s" route add default via 10.97.$i.1
}
node a 1; node b 2
sandbox a 1 1; sandbox a 1 2; sandbox b 2 1

run() { # run FROM TO_IP -> Gbit/s
  ip netns exec $P-$1 iperf3 -c "$2" -t "$T" -J | python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}
ip netns exec $P-a1 iperf3 -s -D --pidfile /tmp/$P-iperf.pid >/dev/null
sleep 0.5
base=$(run a2 10.97.1.2)

# Routed: each node's route to the other's sandbox subnet via its underlay address.
ip -n $P-a route add 10.97.2.0/24 via 192.168.97.2
ip -n $P-b route add 10.97.1.0/24 via 192.168.97.1
routed=$(run b1 10.97.1.2)
ip -n $P-a route del 10.97.2.0/24
ip -n $P-b route del 10.97.1.0/24

# VXLAN: as knit programs a peer (no learning; neighbour + FDB + onlink route), MTU 1450.
vx() { # vx NODE INDEX OTHER_INDEX
  local n=$P-$1 i=$2 o=$3
  ip -n "$n" link add vx0 address 02:97:00:00:00:0$i type vxlan id 1 local 192.168.97.$i \
    dev ul0 dstport 4789 nolearning ${VXOPTS:-}
  ip -n "$n" link set vx0 mtu 1450 up
  ip -n "$n" addr add 10.97.$i.0/32 dev vx0
  ip -n "$n" neigh add 10.97.$o.0 lladdr 02:97:00:00:00:0$o dev vx0 nud permanent
  bridge -n "$n" fdb add 02:97:00:00:00:0$o dev vx0 dst 192.168.97.$o self permanent
  ip -n "$n" route add 10.97.$o.0/24 via 10.97.$o.0 dev vx0 onlink
}
vx a 1 2; vx b 2 1
vxlan=$(run b1 10.97.1.2)

ratio() { python3 -c "print('%.2fx' % ($1/$base))"; }
echo "hand-built (no knit, no firewall), iperf3 TCP ${T} s: Gbit/s, ratio to the same-node path"
printf "  same node (veth+bridge)     %8s\n" "$base"
printf "  routed, one segment         %8s  %s\n" "$routed" "$(ratio "$routed")"
printf "  vxlan, one segment          %8s  %s\n" "$vxlan" "$(ratio "$vxlan")"
