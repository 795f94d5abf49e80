#!/usr/bin/env bash
# The main job on one machine (root, Debian 12): installs what the lab needs, builds muster,
# the agent and the stand-ins, then assembles the cluster in network namespaces and prints
# its status.
#   sudo scripts/lab.sh [SPEC] [muster lab up options]   (no SPEC: the built-in default)
# Afterwards: target/release/muster lab status | stop NODE | start NODE | cut NODE |
#             heal NODE | exec NODE -- CMD | down     (docs/lab.md)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "lab.sh: run it as root (sudo scripts/lab.sh): the lab creates network namespaces" >&2
  exit 1
fi
missing=0
for tool in ip unshare setsid etcd etcdctl keepalived haproxy nginx; do
  command -v "$tool" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$tool" >/dev/null 2>&1 || missing=1
done
if [ "$missing" = 1 ]; then
  echo "lab.sh: installing the lab's Debian packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  bash scripts/deps/standins.sh
  bash scripts/deps/lab.sh
fi
if ! command -v cargo >/dev/null 2>&1; then
  # sudo drops the invoking user's PATH; rustup installs into ~/.cargo/bin.
  for home in "${SUDO_USER:+$(getent passwd "$SUDO_USER" | cut -d: -f6)}" "$HOME"; do
    if [ -n "$home" ] && [ -x "$home/.cargo/bin/cargo" ]; then
      export PATH=$home/.cargo/bin:$PATH RUSTUP_HOME=$home/.rustup CARGO_HOME=$home/.cargo
      break
    fi
  done
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "lab.sh: cargo not found: install Rust (https://rustup.rs, Rust >= 1.88) first" >&2
  exit 1
fi
echo "lab.sh: cargo build --release --workspace --bins" >&2
cargo build --release --workspace --bins
exec target/release/muster lab up "$@"
