#!/usr/bin/env bash
# Throughput between two sandboxes on one knit bridge (iperf3, TCP, one stream), for one or
# more knit binaries, in throwaway namespaces: the cost of the anti-spoofing checks.
#
#   bash bench/spoof_bench.sh [RUNS] [SECONDS] KNIT [KNIT...]
#
# e.g. before/after: bash bench/spoof_bench.sh 3 5 /tmp/before/knit target/release/knit
# UDP=1: 64-byte UDP datagrams at full speed instead (packets per second: where a per-packet
# cost shows; the result is the datagrams received per second, in thousands).
# Runs are interleaved between the binaries (run 1 of each, then run 2, ...) so both see
# the same machine. Prints Gbit/s per run and the median per binary.
set -euo pipefail
runs=${1:-3}; secs=${2:-5}; shift 2
command -v iperf3 >/dev/null || { echo "install iperf3" >&2; exit 1; }
tag=ksb$$
declare -A results
setup() { # $1 index, $2 knit binary
  local i=$1 k=$2 node=$tag$1-node
  ip netns add "$node"
  ip -n "$node" link set lo up
  for s in a b; do ip netns add "$tag$i-$s"; done
  local run=(nsenter --net=/run/netns/"$node" "$k" --state-dir /tmp/"$tag$i"-state)
  "${run[@]}" network create bench --subnet 10.201.0.0/24 >/dev/null
  for s in a b; do "${run[@]}" attach bench "$tag$i-$s" >/dev/null; done
}
cleanup() {
  for n in $(ip netns list | awk '{print $1}' | grep "^$tag" || true); do ip netns del "$n"; done
  rm -rf /tmp/"$tag"*-state /etc/netns/"$tag"*
}
trap cleanup EXIT
i=0
for k in "$@"; do setup $i "$k"; i=$((i + 1)); done
for r in $(seq "$runs"); do
  i=0
  for k in "$@"; do
    ip netns exec "$tag$i-b" iperf3 -s -1 -D -B 10.201.0.3 >/dev/null
    sleep 0.3
    if [ "${UDP:-0}" = 1 ]; then
      g=$(ip netns exec "$tag$i-a" iperf3 -c 10.201.0.3 -t "$secs" -u -b 0 -l 64 -J |
        python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]["sum"]; print(round(e["packets"]*(100-e["lost_percent"])/100/'"$secs"'/1e3))')
      unit="kpps received"
    else
      g=$(ip netns exec "$tag$i-a" iperf3 -c 10.201.0.3 -t "$secs" -J |
        python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9, 2))')
      unit="Gbit/s"
    fi
    echo "run $r  $k  $g $unit"
    results[$i]="${results[$i]:-} $g"
    i=$((i + 1))
  done
done
i=0
for k in "$@"; do
  med=$(echo "${results[$i]}" | tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo "median  $k  $med $unit  (runs:${results[$i]})"
  i=$((i + 1))
done
