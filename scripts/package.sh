#!/usr/bin/env bash
# Builds the release binary, generates the shell completions and the man page from the
# CLI's definitions into target/assets, and, when cargo-deb is installed
# (`cargo install cargo-deb`), the .deb (target/debian/knit_*.deb) with the binary, the
# completions, the man page and the systemd units (contrib/systemd).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
mkdir -p target/assets
K=target/release/knit
"$K" man > target/assets/knit.1
"$K" completions bash > target/assets/knit.bash
"$K" completions zsh > target/assets/_knit
"$K" completions fish > target/assets/knit.fish
echo "assets: $(ls target/assets | tr '\n' ' ')"
if cargo deb --version >/dev/null 2>&1; then
  cargo deb --no-build
else
  echo "cargo-deb not installed: skipping the .deb (cargo install cargo-deb)"
fi
