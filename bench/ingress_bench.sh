#!/usr/bin/env bash
# knit ingress vs nginx and HAProxy as the same reverse proxy, side by side in one run.
#
# Lab: a throwaway node namespace with a knit network; sandbox `be` runs nginx serving a
# small static response on :80 (the one backend of all three proxies); sandbox `cl` runs
# wrk. The three proxies listen in the node namespace on the network's gateway address
# (knit :8001, nginx :8002, HAProxy :8003), each with keep-alive to the backend and as
# many workers/threads as cores. wrk: 2 threads, 64 connections, DURATION seconds per
# proxy. Reported: requests/s, p50 and p99 latency, and requests per proxy CPU-second
# (user+system time of the proxy's processes during the run). The proxies take turns
# ROUNDS times (default 3); the medians are the result.
#
# Then where each proxy's CPU goes: user and system microseconds per request, for the three
# proxies, for knit answering by itself (`inlineContent`: hyper's server side and knit's
# routing, no backend), and for the backend nginx answered directly.
#
# Then knit alone with 10, 10,000 and 100,000 routes (Path("/r/N") each): time to load
# the table (`knit ingress check`), time until serving, resident memory, requests/s on
# one of the routes.
#
#   bash bench/ingress_bench.sh [DURATION=10]
#   KNIT_ONLY=1 PERF=/tmp/prof bash bench/ingress_bench.sh   # knit alone, profiled (/tmp/prof.knit)
#   ROUNDS=1 SYSCALLS=/tmp/sc bash bench/ingress_bench.sh      # system calls of each proxy (/tmp/sc.NAME)
set -euo pipefail
DUR=${1:-10}
cd "$(dirname "$0")/.."
K=${KNIT:-target/release/knit}
[ -x "$K" ] || cargo build --release -q
K=$(realpath "$K")
for t in nginx haproxy wrk; do
    command -v $t >/dev/null || { echo "needs $t (apt-get install nginx-light haproxy wrk)"; exit 1; }
done
P=kib$$
S=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.3
    for n in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do ip netns del "$n"; done
    rm -rf "$S"
}
trap cleanup EXIT
ip netns add $P-node
ip -n $P-node link set lo up
knit() { nsenter --net=/run/netns/$P-node "$K" --state-dir "$S/state" "$@"; }
knit network create ib --subnet 10.183.0.0/24 --no-dns >/dev/null
for s in be cl; do
    knit sandbox add $P-$s >/dev/null
    knit attach ib $P-$s >/dev/null
done
BE=$(knit --json network inspect ib | python3 -c "import json,sys; v=json.load(sys.stdin); print([a['ips'][0].split('/')[0] for a in v['attachments'] if a['sandbox'].endswith('-be')][0])")
GW=10.183.0.1

# The backend: nginx, a 6-byte body.
mkdir -p "$S/be" "$S/px"
cat > "$S/be/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $S/be/pid; error_log $S/be/err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 80 reuseport; location / { return 200 "hello\n"; } } }
EOF
ip netns exec $P-be nginx -c "$S/be/nginx.conf" & BP=$!; PIDS+=($BP)

# The proxies.
cat > "$S/px/routes.eskip" <<EOF
all: * -> "http://$BE:80";
EOF
cat > "$S/px/nginx.conf" <<EOF
worker_processes auto; daemon off; pid $S/px/pid; error_log $S/px/err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream be { server $BE:80; keepalive 128; }
  server { listen $GW:8002; location / { proxy_pass http://be; proxy_http_version 1.1;
    proxy_set_header Connection ""; } } }
EOF
cat > "$S/px/haproxy.cfg" <<EOF
global
  nbthread $(nproc)
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend f
  bind $GW:8003
  default_backend b
backend b
  http-reuse always
  server s1 $BE:80
EOF
cat > "$S/px/inline.eskip" <<EOF
all: * -> inlineContent("hello\\n") -> <shunt>;
EOF
ip netns exec $P-node "$K" --state-dir "$S/state" ingress serve --listen $GW:8004 --routes "$S/px/inline.eskip" >/dev/null 2>&1 & IP=$!; PIDS+=($IP)
ip netns exec $P-node "$K" --state-dir "$S/state" ingress serve --listen $GW:8001 --routes "$S/px/routes.eskip" >/dev/null 2>&1 & KP=$!; PIDS+=($KP)
ip netns exec $P-node nginx -c "$S/px/nginx.conf" & NP=$!; PIDS+=($NP)
ip netns exec $P-node haproxy -f "$S/px/haproxy.cfg" >/dev/null 2>&1 & HP=$!; PIDS+=($HP)

wait_port() { # port
    for _ in $(seq 1 100); do
        ip netns exec $P-cl bash -c "exec 3<>/dev/tcp/$GW/$1" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $GW:$1" >&2; return 1
}
for p in 8001 8002 8003 8004; do wait_port $p; done

# CPU ticks (user+system) of a process and its children.
ticks() {
    local total=0
    for p in $1 $(pgrep -P "$1" || true); do
        read -r -a f < /proc/$p/stat
        total=$(( total + f[13] + f[14] ))
    done
    echo $total
}
HZ=$(getconf CLK_TCK)
# "USER SYSTEM" CPU ticks of a process and its children.
split_ticks() {
    local u=0 s=0
    for p in $1 $(pgrep -P "$1" || true); do
        read -r -a f < /proc/$p/stat
        u=$((u + f[13])); s=$((s + f[14]))
    done
    echo "$u $s"
}
run_wrk() { # port path -> "rps p50 p99"
    ip netns exec $P-cl wrk -t2 -c64 -d"${DUR}s" --latency "http://$GW:$1$2" 2>/dev/null |
        awk '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} END {print rps, p50, p99}'
}
bench_one() { # name port pid -> "name rps p50 p99 req/cpu-s" on stdout
    ip netns exec $P-cl wrk -t2 -c64 -d2s "http://$GW:$2/" >/dev/null 2>&1 # warm-up
    local c0 c1 r
    # PERF=PREFIX: also record a profile of the proxy's processes (PREFIX.NAME).
    if [ -n "${PERF:-}" ]; then
        local pids
        pids=$(echo "$3" $(pgrep -P "$3" || true) | tr ' ' ,)
        (sleep 1; perf record -q -g -p "$pids" -o "$PERF.${1%% *}" -- sleep $((DUR - 2)) >/dev/null 2>&1) &
    fi
    # SYSCALLS=PREFIX: count the proxy's system calls during the run (PREFIX.NAME).
    if [ -n "${SYSCALLS:-}" ]; then
        local pids ev=""
        pids=$(echo "$3" $(pgrep -P "$3" || true) | tr ' ' ,)
        for c in read readv recvfrom write writev sendto epoll_wait epoll_ctl futex; do ev+="syscalls:sys_enter_$c,"; done
        (perf stat -e "${ev%,}" -p "$pids" -o "$SYSCALLS.${1%% *}" -- sleep "$DUR" >/dev/null 2>&1) &
    fi
    c0=$(ticks "$3")
    r=$(run_wrk "$2" /)
    c1=$(ticks "$3")
    read -r rps p50 p99 <<<"$r"
    local cpu
    cpu=$(echo "($c1 - $c0) / $HZ" | bc -l)
    printf '%s %.0f %s %s %.0f\n' "${1// /_}" "$rps" "$p50" "$p99" "$(echo "$rps * $DUR / $cpu" | bc -l)"
}
# The proxies take turns, ROUNDS times (this machine's speed drifts by a quarter from
# minute to minute): each round's rows, then each proxy's median round (by requests/s)
# and its ratio to nginx's.
ROUNDS=${ROUNDS:-3}
PROXIES=("knit ingress:8001:$KP" "nginx:8002:$NP" "haproxy:8003:$HP")
[ -z "${KNIT_ONLY:-}" ] || PROXIES=("knit ingress:8001:$KP")
printf '%-6s %-14s %12s %10s %10s %16s\n' round proxy "requests/s" p50 p99 "req/CPU-second"
: > "$S/rows"
for round in $(seq 1 "$ROUNDS"); do
    # Each round starts with the next proxy: no proxy always runs first.
    for k in $(seq 0 $((${#PROXIES[@]} - 1))); do
        px=${PROXIES[$(( (k + round - 1) % ${#PROXIES[@]} ))]}
        IFS=: read -r name port pid <<<"$px"
        row=$(bench_one "$name" "$port" "$pid")
        echo "$round $row" >> "$S/rows"
        read -r n rps p50 p99 eff <<<"$row"
        printf '%-6s %-14s %12s %10s %10s %16s\n' "$round" "${n//_/ }" "$rps" "$p50" "$p99" "$eff"
    done
done
echo
python3 - "$S/rows" <<'PY'
import sys, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r, name, rps, p50, p99, eff = line.split()
    rows[name].append((float(rps), p50, p99, float(eff)))
med = {n: sorted(v)[len(v) // 2] for n, v in rows.items()}
print(f"{'median':<21} {'requests/s':>12} {'p50':>10} {'p99':>10} {'req/CPU-second':>16} {'vs nginx':>9}")
for n, (rps, p50, p99, eff) in med.items():
    ratio = f"{rps / med['nginx'][0]:.2f}x" if 'nginx' in med else '-'
    print(f"{n.replace('_', ' '):<21} {rps:12.0f} {p50:>10} {p99:>10} {eff:16.0f} {ratio:>9}")
PY
[ -z "${KNIT_ONLY:-}" ] || exit 0

echo
printf '%-28s %12s %10s %10s\n' "CPU per request" "requests/s" "user µs" "system µs"
cpu_per_request() { # label host port pid
    ip netns exec $P-cl wrk -t2 -c64 -d2s "http://$2:$3/" >/dev/null 2>&1 # warm-up
    local a b rps
    read -r -a a <<<"$(split_ticks "$4")"
    rps=$(ip netns exec $P-cl wrk -t2 -c64 -d"${DUR}s" "http://$2:$3/" 2>/dev/null | awk '/Requests\/sec/ {print $2}')
    read -r -a b <<<"$(split_ticks "$4")"
    python3 -c "n = $rps * $DUR; print('%-28s %12.0f %10.1f %10.1f' % ('$1', $rps, ($((b[0] - a[0])) / $HZ) / n * 1e6, ($((b[1] - a[1])) / $HZ) / n * 1e6))"
}
cpu_per_request "knit ingress (proxy)" $GW 8001 $KP
cpu_per_request "nginx (proxy)" $GW 8002 $NP
cpu_per_request "haproxy (proxy)" $GW 8003 $HP
cpu_per_request "knit ingress (inlineContent)" $GW 8004 $IP
cpu_per_request "nginx (the backend, direct)" $BE 80 $BP
kill $KP $IP; wait $KP $IP 2>/dev/null || true

echo
printf '%-8s %12s %14s %10s %12s\n' routes "load (check)" "until serving" "RSS MiB" "requests/s"
for n in 10 10000 100000; do
    f="$S/px/r$n.eskip"
    python3 - "$n" "$BE" > "$f" <<'PY'
import sys
n, be = int(sys.argv[1]), sys.argv[2]
for i in range(n):
    print(f'r{i}: Path("/r/{i}") -> "http://{be}:80";')
PY
    s0=$(date +%s%N)
    "$K" ingress check "$f" >/dev/null
    s1=$(date +%s%N)
    ip netns exec $P-node "$K" --state-dir "$S/state" ingress serve --listen $GW:8011 --routes "$f" >/dev/null 2>&1 & RP=$!; PIDS+=($RP)
    wait_port 8011
    s2=$(date +%s%N)
    rss=$(awk '/VmRSS/ {print $2}' /proc/$RP/status)
    r=$(run_wrk 8011 "/r/$((n / 2))")
    printf '%-8s %9.0f ms %11.0f ms %10.1f %12.0f\n' "$n" "$(( (s1 - s0) / 1000000 ))" "$(( (s2 - s1) / 1000000 ))" "$(echo "$rss / 1024" | bc -l)" "${r%% *}"
    kill $RP; wait $RP 2>/dev/null || true
done
