#!/usr/bin/env bash
# A storm of one-service changes: OPS × (`knit service create` then `knit service rm`),
# back to back, each its own knit process, with 10,000 services (4 backends each) loaded.
# This is how a controller drives knit one change at a time; the tail of these numbers is
# where kernel and SQLite contention between consecutive commands shows.
#
#   cargo build --release && bash bench/svc_storm.sh [OPS]
#
# Prints p50 / p90 / p99 / max over all 2 × OPS commands (nearest rank) and the slowest
# three with their KNIT_TRACE phases.
set -euo pipefail
cd "$(dirname "$0")/.."
OPS=${1:-600}
K=$PWD/target/release/knit
[ -x "$K" ] || { echo "build first: cargo build --release" >&2; exit 1; }
TAG=kst$$
WORK=$(mktemp -d /tmp/$TAG.XXXX)
NODE=$TAG
cleanup() {
  set +e
  for i in 1 2 3 4; do ip netns del "$NODE-b$i" 2>/dev/null; rm -rf "/etc/netns/$NODE-b$i"; done
  ip netns del "$NODE" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$NODE"
ip -n "$NODE" link set lo up
KN="nsenter --net=/run/netns/$NODE $K --state-dir $WORK/state"
$KN network create net --subnet 10.77.0.0/16 >/dev/null
for i in 1 2 3 4; do
  $KN sandbox add "$NODE-b$i" >/dev/null
  $KN attach net "$NODE-b$i" >/dev/null
done
python3 - > "$WORK/services.json" <<'PY'
import json
print(json.dumps([
    {"name": f"s{i}", "vip": f"10.200.{i // 250}.{i % 250 + 1}:80",
     "backends": [f"10.77.0.{j}:8080" for j in (2, 3, 4, 5)]}
    for i in range(10000)]))
PY
$KN service import "$WORK/services.json" >/dev/null
nsenter --net=/run/netns/$NODE python3 - "$K" "$WORK" "$OPS" <<'PY'
import math, os, subprocess, sys, time
knit, work, ops = sys.argv[1], sys.argv[2], int(sys.argv[3])
env = dict(os.environ, KNIT_TRACE="1")
runs = []
for j in range(ops):
    vip = f"10.201.{j // 250}.{j % 250 + 1}:80"
    for args in (["service", "create", f"x{j}", "--vip", vip,
                  "--backend", "10.77.0.2:8080", "--backend", "10.77.0.3:8080"],
                 ["service", "rm", f"x{j}"]):
        with open(f"{work}/trace", "w+") as trace:
            t = time.perf_counter()
            rc = subprocess.run([knit, "--state-dir", f"{work}/state"] + args, env=env,
                                stdout=subprocess.DEVNULL, stderr=trace).returncode
            ms = (time.perf_counter() - t) * 1e3
            trace.seek(0)
            runs.append((ms, f"{args[1]} #{j}", rc, trace.read()))
failed = [r for r in runs if r[2] != 0]
if failed:
    sys.exit(f"{len(failed)} commands failed, first: {failed[0][1]}: {failed[0][3]}")
ds = sorted(r[0] for r in runs)
pct = lambda p: ds[max(1, math.ceil(len(ds) * p / 100)) - 1]
print(f"{len(ds)} commands at 10,000 services: p50 {pct(50):.2f} ms, p90 {pct(90):.2f} ms, "
      f"p99 {pct(99):.2f} ms, max {ds[-1]:.2f} ms")
for ms, what, _, trace in sorted(runs, key=lambda r: -r[0])[:3]:
    print(f"slow: {what} {ms:.2f} ms")
    print("".join("    " + l + "\n" for l in trace.splitlines()), end="")
PY
