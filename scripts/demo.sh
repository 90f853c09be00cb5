#!/usr/bin/env bash
# Quickstart 1: install what knit needs at run time, build it, run the demo.
# The demo works only inside throwaway network namespaces it creates and removes.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "run as root (knit creates network namespaces)" >&2; exit 1; fi
need=()
command -v nft >/dev/null || need+=(nftables)
[ -e /usr/lib/x86_64-linux-gnu/libnftables.so.1 ] || ldconfig -p | grep -q libnftables.so.1 || need+=(libnftables1)
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
# Building knit: the etcd client's protocol buffers are compiled with protoc.
command -v protoc >/dev/null || need+=(protobuf-compiler)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --quiet
exec ./target/release/knit demo
