#!/usr/bin/env bash
# How long knit's explaining commands take, in the seeds' lab (a node namespace with an
# uplink to an outside host, network `lab`, sandboxes `web` with a server on :80 published
# as 8080, and `client`), with 0 and 200 other sandboxes on the node: `knit doctor` on a
# healthy path and on a broken one (a foreign FORWARD policy drop), `knit trace` of a
# delivered TCP SYN and of a dropped ping. Medians of N runs, wall clock per command
# (process start included). There is no peer tool doing either job to run beside them.
#
#   bash bench/explain_bench.sh [N=20] [EXTRA=200]
set -euo pipefail
N=${1:-20}
EXTRA=${2:-200}
K=${KNIT:-$(dirname "$0")/../target/release/knit}
[ -x "$K" ] || (cd "$(dirname "$0")/.." && cargo build --release -q)
P=kxb$$
S=$(mktemp -d)
cleanup() {
    for n in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do ip netns del "$n"; done
    rm -rf "$S"
}
trap cleanup EXIT
ip netns add $P-node; ip netns add $P-out
ip -n $P-node link set lo up; ip -n $P-out link set lo up
ip -n $P-node link add uplink type veth peer name wan netns $P-out
ip -n $P-node addr add 198.51.100.1/24 dev uplink; ip -n $P-node link set uplink up
ip -n $P-out addr add 198.51.100.2/24 dev wan; ip -n $P-out link set wan up
ip -n $P-node route add default via 198.51.100.2
knit() { nsenter --net=/run/netns/$P-node "$K" --state-dir "$S" "$@"; }
knit network create lab --subnet 10.181.0.0/16 --no-dns >/dev/null
for s in web client; do knit sandbox add $P-$s >/dev/null; done
knit attach lab $P-web --publish 8080:80 >/dev/null
knit attach lab $P-client >/dev/null
ip netns exec $P-web python3 -m http.server 80 >/dev/null 2>&1 &
SRV=$!
for i in $(seq 1 "$EXTRA"); do
    knit sandbox add $P-x$i >/dev/null
    knit attach lab $P-x$i >/dev/null
done
sleep 1

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
timed() { # label, expected exit, command...
    local label=$1 want=$2; shift 2
    local t
    t=$(for _ in $(seq 1 "$N"); do
        s=$(date +%s%N); set +e; "$@" >/dev/null 2>&1; rc=$?; set -e
        e=$(date +%s%N)
        [ "$rc" = "$want" ] || { echo "unexpected exit $rc from $label" >&2; exit 1; }
        echo $(( (e - s) / 1000 ))
    done | median)
    printf '%-44s %8.1f ms\n' "$label" "$(echo "$t / 1000" | bc -l)"
}
echo "knit $("$K" --version | awk '{print $2}'), $EXTRA other sandboxes, median of $N"
timed "doctor client web:80 (healthy)" 0 knit doctor $P-client 10.181.0.2:80
timed "doctor outside -> node:8080 (healthy)" 0 knit doctor 198.51.100.2 node:8080
timed "trace client web:80 (delivered)" 0 knit trace $P-client 10.181.0.2:80
ip netns exec $P-node nft add table ip filter
ip netns exec $P-node nft 'add chain ip filter FORWARD { type filter hook forward priority 0; policy drop; }'
timed "doctor client 198.51.100.2 (foreign drop)" 2 knit doctor $P-client 198.51.100.2
timed "trace client 198.51.100.2 (ping dropped)" 2 knit trace $P-client 198.51.100.2 --timeout-ms 300
kill $SRV
