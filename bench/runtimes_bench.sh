#!/usr/bin/env bash
# knit under the runtimes users run, against the runtimes' own bridge networks, side by
# side in one run, in throwaway namespaces (krb-*):
#
#   cargo build --release && bash bench/runtimes_bench.sh [N]      # default N=50
#
# 1. Docker (docker.io 20.10, dockerd in a node namespace, private mount namespace, vfs):
#    N x `docker run -d --network NET IMAGE sleep` on a knit network (`-d knit`) and on
#    Docker's bridge driver, alternating; each sample is from just before `docker run` to
#    the container answering a ping from the node. Then the same for `docker rm -f`.
# 2. netavark 2.1 (podman 5's backend; KNIT_NETAVARK or the test cache): N x `netavark
#    setup` of a fresh namespace on a `knit` plugin network and on netavark's built-in
#    bridge, alternating, then N x `teardown`; each with the address podman's IPAM chose
#    (static_ips), as podman passes it.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-50}
K=${KNIT:-$PWD/target/release/knit}
NV=${KNIT_NETAVARK:-/var/cache/knit-test/netavark-2.1.0/bin/netavark}
P=krb
D=/tmp/$P
NODE=$P-node

cleanup() {
  if [ -f $D/docker.pid ]; then kill "$(cat $D/docker.pid)" 2>/dev/null || true; sleep 2; fi
  pkill -f -- "--state-dir $D/state" 2>/dev/null || true
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do ip netns del "$ns"; done
  rm -rf $D
}
trap cleanup EXIT
cleanup
mkdir -p $D/{plugins,data,exec,state,rootfs/bin,nv/plugins,nv/config}
ip netns add $NODE
ip -n $NODE link set lo up
cp /bin/busybox $D/rootfs/bin/; ln -s busybox $D/rootfs/bin/sleep; ln -s busybox $D/rootfs/bin/sh
tar -C $D/rootfs -cf $D/rootfs.tar .

ms() { echo $(( ($2 - $1) / 1000000 )); }
pct() { sort -n | awk -v p="$1" '{v[NR]=$1} END {r=int((NR*p+99)/100); if (r<1) r=1; print v[r]}'; }
summary() { # summary LABEL FILE
  printf "  %-34s p50 %5s ms  p99 %5s ms  total %6s ms\n" "$1" "$(pct 50 < "$2")" "$(pct 99 < "$2")" "$(awk '{s+=$1} END {print s}' "$2")"
}

echo "== docker run: knit network vs Docker's bridge driver, $N containers each"
nsenter --net=/run/netns/$NODE "$K" --state-dir $D/state daemon --resolv-conf /dev/null \
  --docker-plugin --docker-plugin-socket $D/plugins/knit.sock > $D/knit.log 2>&1 &
for _ in $(seq 100); do [ -S $D/plugins/knit.sock ] && break; sleep 0.05; done
mkdir -p /run/docker
unshare --mount --propagation private sh -c "mount -t tmpfs none /run/docker && mkdir /run/docker/plugins && \
  mount --bind $D/plugins /run/docker/plugins && exec nsenter --net=/run/netns/$NODE dockerd \
  --data-root $D/data --exec-root $D/exec -H unix://$D/docker.sock --pidfile $D/docker.pid \
  --bridge none --iptables=false --ip-masq=false --ip6tables=false --storage-driver vfs \
  --exec-opt native.cgroupdriver=cgroupfs" > $D/dockerd.log 2>&1 &
dk() { docker -H unix://$D/docker.sock "$@"; }
for _ in $(seq 100); do dk version >/dev/null 2>&1 && break; sleep 0.1; done
dk import $D/rootfs.tar bb:1 >/dev/null
dk network create -d knit --subnet 10.98.0.0/16 -o knit.name=kn kn >/dev/null
dk network create -d bridge --subnet 10.99.0.0/16 br >/dev/null
: > $D/run-knit; : > $D/run-bridge; : > $D/rm-knit; : > $D/rm-bridge
for i in $(seq 1 "$N"); do
  for net in knit bridge; do
    name=$net-$i
    dnet=$([ $net = knit ] && echo kn || echo br)
    t0=$(date +%s%N)
    dk run -d --network $dnet --name "$name" bb:1 sleep 3600 >/dev/null
    ip=$(dk inspect -f "{{(index .NetworkSettings.Networks \"$dnet\").IPAddress}}" "$name")
    until ip netns exec $NODE ping -c1 -W1 -i0.2 "$ip" >/dev/null 2>&1; do :; done
    ms "$t0" "$(date +%s%N)" >> $D/run-$net
  done
done
summary "knit network (-d knit)" $D/run-knit
summary "Docker's bridge driver" $D/run-bridge
for i in $(seq 1 "$N"); do
  for net in knit bridge; do
    t0=$(date +%s%N)
    dk rm -f "$net-$i" >/dev/null
    ms "$t0" "$(date +%s%N)" >> $D/rm-$net
  done
done
summary "docker rm -f, knit" $D/rm-knit
summary "docker rm -f, bridge" $D/rm-bridge
dk network rm kn br >/dev/null

echo "== netavark setup/teardown: knit plugin vs netavark's bridge, $N namespaces each"
ln -s "$K" $D/nv/plugins/knit
nv() { nsenter --net=/run/netns/$NODE env KNIT_STATE_DIR=$D/state "$NV" --config $D/nv/config \
  --plugin-directory $D/nv/plugins "$@"; }
mknet() { # mknet DRIVER NAME ID SUBNET
  echo "{\"network\":{\"name\":\"$2\",\"id\":\"$3\",\"driver\":\"$1\",\"ipv6_enabled\":false,\"internal\":false,\"dns_enabled\":false,\"subnets\":[{\"subnet\":\"$4\"}]},\"used\":{\"interfaces\":[],\"names\":{},\"subnets\":[]},\"options\":{\"subnet_pools\":[],\"default_interface_name\":\"podman\",\"check_used_subnets\":false}}" | nv create
}
mknet knit kp 1111111111111111111111111111111111111111111111111111111111111111 10.100.0.0/16 > $D/net-knit.json
mknet bridge bp 2222222222222222222222222222222222222222222222222222222222222222 10.101.0.0/16 > $D/net-bridge.json
opts() { # opts KIND I: podman's input; podman does IPAM itself and passes the address
  python3 -c "
import json,sys
net=json.load(open('$D/net-$1.json'))
third = '100' if '$1' == 'knit' else '101'
ip = '10.%s.%d.%d' % (third, $2 // 250, $2 % 250 + 2)
print(json.dumps({'container_id':'c$1%04d'%$2,'container_name':'c$1$2','networks':{net['name']:{'interface_name':'eth0','static_ips':[ip]}},'network_info':{net['name']:net}}))"
}
: > $D/setup-knit; : > $D/setup-bridge; : > $D/down-knit; : > $D/down-bridge
for i in $(seq 1 "$N"); do
  for kind in knit bridge; do
    ip netns add $P-$kind-$i
    opts $kind "$i" > $D/opts-$kind-$i.json
    t0=$(date +%s%N)
    nv setup /run/netns/$P-$kind-$i < $D/opts-$kind-$i.json >/dev/null
    ms "$t0" "$(date +%s%N)" >> $D/setup-$kind
  done
done
summary "netavark setup, knit plugin" $D/setup-knit
summary "netavark setup, built-in bridge" $D/setup-bridge
for i in $(seq 1 "$N"); do
  for kind in knit bridge; do
    t0=$(date +%s%N)
    nv teardown /run/netns/$P-$kind-$i < $D/opts-$kind-$i.json >/dev/null
    ms "$t0" "$(date +%s%N)" >> $D/down-$kind
  done
done
summary "netavark teardown, knit plugin" $D/down-knit
summary "netavark teardown, built-in bridge" $D/down-bridge
