#!/usr/bin/env bash
# Cluster scale beyond this machine, simulated, in throwaway namespaces (kcs-*):
#
#   cargo build --release --bins --examples && bash bench/cluster_scale.sh [PEERS...] [--watchers N]
#   default PEERS: 1000 5000; watchers: 100; FANOUT_TRIALS (default 5)
#
# Cold programming: etcd holds PEERS simulated nodes with a block each of cluster network
# `pods` (written by examples/cluster_scale, as agents write them); one real node, joined,
# starts `knit daemon`; reported: the time until its agent logs "in sync" (every peer's
# neighbour, FDB entry and route programmed), and the count of knit routes then.
#
# Fan-out: WATCHERS real nodes (namespaces on one segment, joined, `knit daemon` each);
# one simulated node's records are written (t0 when sent, t1 when etcd acknowledged the
# commit; wall clock); each daemon logs the sync that programmed it with the wall-clock
# time; reported: p50/p99 of (log time - t0) and of (log time - t1) over all daemons and
# trials, per trial etcd's commit time, and the daemons' idle CPU before the trials.
set -euo pipefail
cd "$(dirname "$0")/.."
K=${KNIT:-$PWD/target/release/knit}
SIM=${SIM:-$PWD/target/release/examples/cluster_scale}
PEERS=()
WATCHERS=100
while [ $# -gt 0 ]; do
  case "$1" in
    --watchers) WATCHERS=$2; shift 2 ;;
    *) PEERS+=("$1"); shift ;;
  esac
done
[ ${#PEERS[@]} -gt 0 ] || PEERS=(1000 5000)
TRIALS=${FANOUT_TRIALS:-5}
P=kcs
FAB=$P-fab
URL=http://192.168.95.1:2379

cleanup() {
  pkill -f -- "--state-dir /tmp/$P-" 2>/dev/null || true
  pkill -f -- "--data-dir /tmp/$P-etcd" 2>/dev/null || true
  sleep 0.5
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do ip netns del "$ns"; done
  rm -rf /tmp/$P-* 2>/dev/null || true
}
[ -n "${KEEP:-}" ] || trap cleanup EXIT

knit() { local n=$1; shift; nsenter --net=/run/netns/$P-n$n "$K" --state-dir /tmp/$P-n$n "$@"; }

fabric() {
  cleanup
  ip netns add $FAB
  ip -n $FAB link set lo up
  ip -n $FAB link add seg address 02:00:5e:00:95:01 type bridge
  ip -n $FAB link set seg up
  ip -n $FAB addr add 192.168.95.1/22 dev seg
  ip netns exec $FAB etcd --name default --data-dir /tmp/$P-etcd --quota-backend-bytes 4294967296 \
    --listen-client-urls http://0.0.0.0:2379 --advertise-client-urls $URL \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster default=http://127.0.0.1:2380 > /tmp/$P-etcd.log 2>&1 &
  for _ in $(seq 100); do ip netns exec $FAB bash -c "echo > /dev/tcp/192.168.95.1/2379" 2>/dev/null && break; sleep 0.05; done
}

node() { # node I [no-daemon]
  local i=$1 ip
  ip=192.168.$((95 + i / 250)).$((i % 250 + 2))
  ip netns add $P-n$i
  ip -n $P-n$i link set lo up
  ip -n $P-n$i link add ul0 type veth peer name ul$i netns $FAB
  ip -n $FAB link set ul$i master seg up
  ip -n $P-n$i addr add $ip/22 dev ul0
  ip -n $P-n$i link set ul0 up
  knit "$i" node join --etcd $URL --name n$i --underlay ul0 --backend vxlan >/dev/null
}

daemon() {
  nsenter --net=/run/netns/$P-n$1 "$K" --state-dir /tmp/$P-n$1 daemon --resolv-conf /dev/null \
    > /tmp/$P-n$1.log 2>&1 &
}

echo "cold programming: one node's daemon starts with PEERS simulated peers in etcd"
for N in "${PEERS[@]}"; do
  fabric
  node 1
  knit 1 network create pods --scope cluster --subnet 10.0.0.0/8 >/dev/null
  nsenter --net=/run/netns/$FAB "$SIM" fill $URL "$N"
  t0=$(date +%s%3N)
  daemon 1
  for _ in $(seq 1200); do grep -q "in sync" /tmp/$P-n1.log 2>/dev/null && break; sleep 0.05; done
  t=$(grep -m1 "in sync" /tmp/$P-n1.log | sed -E 's/.*\[([0-9]+)\.([0-9]{3})\].*/\1\2/')
  routes=$(ip -n $P-n1 route show proto 75 | wc -l)
  rss=$(ps -o rss= -p "$(pgrep -f -- "--state-dir /tmp/$P-n1 daemon" | head -1)" | awk '{printf "%d", $1/1024}')
  printf "  %6s peers: programmed in %6s ms (%s routes), daemon %s MiB RSS\n" "$N" "$((t - t0))" "$routes" "$rss"
done

echo "fan-out: one new node's lease reaching $WATCHERS watching daemons ($TRIALS trials)"
fabric
node 1
knit 1 network create pods --scope cluster --subnet 10.0.0.0/8 >/dev/null
daemon 1
for i in $(seq 2 "$WATCHERS"); do node "$i"; daemon "$i"; done
# Trials start in steady state: every daemon in sync, then 10 s more (each start makes
# all the others sync; right after 100 starts the machine is still busy with that, which
# is not fan-out latency). Then the daemons' idle CPU over 5 s.
for i in $(seq 1 "$WATCHERS"); do
  for _ in $(seq 600); do grep -q "in sync" /tmp/$P-n$i.log 2>/dev/null && break; sleep 0.05; done
done
sleep 10
daemon_ticks() {
  local t=0 pid
  for pid in $(pgrep -f -- "--state-dir /tmp/$P-n[0-9]+ daemon"); do
    t=$((t + $(awk '{print $14 + $15}' /proc/"$pid"/stat 2>/dev/null || echo 0)))
  done
  echo "$t"
}
hz=$(getconf CLK_TCK)
a=$(daemon_ticks); sleep 5; b=$(daemon_ticks)
echo "  idle: $WATCHERS daemons use $(python3 -c "print('%.1f' % (100 * ($b - $a) / $hz / 5))") % of one core in all"
lat=(); lat_c=()
for t in $(seq 1 "$TRIALS"); do
  mark=$(date +%s%3N)
  trial=()
  read -r t0 t1 < <(nsenter --net=/run/netns/$FAB "$SIM" one $URL "$t")
  for i in $(seq 1 "$WATCHERS"); do
    for _ in $(seq 400); do
      line=$(grep "entries added" /tmp/$P-n$i.log | awk -v m="$mark" '{ if (match($0, /\[[0-9]+\.[0-9]+\]/)) { s = substr($0, RSTART+1, RLENGTH-2); gsub(/\./, "", s); if (s+0 >= m) { print s; exit } } }')
      [ -n "$line" ] && break
      sleep 0.02
    done
    if [ -n "$line" ]; then lat+=($((line - t0))); lat_c+=($((line - t1))); trial+=($((line - t0))); else echo "  n$i: no sync logged after trial $t" >&2; fi
  done
  printf "%s\n" "${trial[@]}" | sort -n | awk -v t="$t" -v c="$((t1 - t0))" '{v[NR]=$1} END {printf "  trial %d: etcd commit %d ms; programmed p50 %d ms, max %d ms\n", t, c, v[int((NR+1)/2)], v[NR]}'
  sleep 1
done
pcts() { sort -n | awk -v what="$1" '{v[NR]=$1} END {p50=v[int((NR*50+99)/100)]; p99=v[int((NR*99+99)/100)]; printf "  %d samples, %s: p50 %d ms, p99 %d ms, max %d ms\n", NR, what, p50, p99, v[NR]}'; }
printf "%s\n" "${lat[@]}" | pcts "from the write sent to etcd"
printf "%s\n" "${lat_c[@]}" | pcts "from etcd's commit acknowledged"
# Churn: 100 more simulated nodes join one by one (50 ms apart) and then leave one by
# one, while the daemons watch; their CPU over that window, and their RSS after.
a=$(daemon_ticks)
read -r c0 c1 < <(nsenter --net=/run/netns/$FAB "$SIM" churn $URL 2000 100)
sleep 1
b=$(daemon_ticks)
secs=$(python3 -c "print('%.1f' % (($c1 - $c0) / 1000))")
echo "  churn of 100 nodes (200 events over $secs s): $WATCHERS daemons used $(python3 -c "print('%.2f' % (($b - $a) / $hz))") s of CPU in all ($(python3 -c "print('%.1f' % (100 * ($b - $a) / $hz / ($c1 - $c0 + 1000) * 1000))") % of one core), $(python3 -c "print('%.1f' % (1000 * ($b - $a) / $hz / $WATCHERS / 200))") ms per daemon per event"
ticks=0; rss=0
for i in $(seq 1 "$WATCHERS"); do
  pid=$(pgrep -f -- "--state-dir /tmp/$P-n$i daemon" | head -1) || continue
  rss=$((rss + $(ps -o rss= -p "$pid")))
  # utime + stime, in clock ticks (fields 14 and 15 of /proc/PID/stat).
  ticks=$((ticks + $(awk '{print $14 + $15}' /proc/"$pid"/stat)))
done
echo "  $WATCHERS daemons: $((rss / 1024)) MiB RSS in all; CPU $(python3 -c "print('%.2f' % ($ticks / $hz))") s in all since start (their joins, the others' joins, the trials)"
