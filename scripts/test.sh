#!/usr/bin/env bash
# Quickstart 2: install test dependencies and run every test (unit, golden, integration).
# Integration tests build their own node namespaces; nothing on the host is changed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "run as root (tests create network namespaces)" >&2; exit 1; fi
pkgs=(nftables libnftables1 iproute2 iputils-ping containernetworking-plugins podman runc busybox-static iptables conntrack protobuf-compiler etcd-server docker.io containerd)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  # Packages with services (etcd-server, docker.io, containerd) must not start them on
  # the host (dockerd would rewrite its firewall): the tests start their own etcd and
  # dockerd inside throwaway namespaces.
  nostart=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; nostart=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  if [ "$nostart" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
# netavark 2.1 (podman 5's network backend; Debian's 1.4 predates plugins), built once from
# crates.io into a cache that outlives the checkout: tests/netavark.rs drives it.
NETAVARK_ROOT=/var/cache/knit-test/netavark-2.1.0
if [ ! -x "$NETAVARK_ROOT/bin/netavark" ]; then
  echo "installing netavark 2.1.0 from crates.io into $NETAVARK_ROOT (once, a few minutes)"
  cargo install netavark --version 2.1.0 --locked --quiet --root "$NETAVARK_ROOT"
fi
export KNIT_NETAVARK="$NETAVARK_ROOT/bin/netavark"
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --no-fail-fast 2>&1 | tee /tmp/knit-test.log
rc=${PIPESTATUS[0]}
# One closing line for all test binaries (cargo's last line is the empty doc-test run).
passed=$(grep -oE 'test result: [a-zA-Z]+\. [0-9]+ passed' /tmp/knit-test.log | awk '{s += $4} END {print s + 0}')
failed=$(grep -oE '[0-9]+ failed;' /tmp/knit-test.log | awk '{s += $1} END {print s + 0}')
# The host must be left as found: no namespaces, links or nft tables from tests.
left=$(ip netns list | grep -E '^(kt[0-9]|knitdemo|knitcl|cni-|kcb|kcs|kdb)' || true)
if [ -n "$left" ]; then echo "leftover namespaces: $left" >&2; rc=1; fi
if nft list tables 2>/dev/null | grep -qE '(inet|bridge) knit'; then echo "leftover nft table on the host" >&2; rc=1; fi
if ls /etc/netns 2>/dev/null | grep -qE '^(kt[0-9]|knitdemo)'; then echo "leftover /etc/netns entries" >&2; rc=1; fi
echo "tests: $passed passed, $failed failed"
exit "$rc"
