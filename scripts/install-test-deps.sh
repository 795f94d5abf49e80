#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian 12 machine (run as root).
# Each part of the project lists its own needs in scripts/deps/*.sh; this runs them all.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" -ne 0 ]; then
  echo "install-test-deps: run as root (apt-get, ip netns)" >&2
  exit 1
fi
# bookworm-backports carries the newer qemu; enable it once.
if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo "deb http://deb.debian.org/debian bookworm-backports main" > /etc/apt/sources.list.d/backports.list
fi
stamp=/var/lib/apt/periodic/muster-update-stamp
if [ ! -e "$stamp" ] || [ -n "$(find "$stamp" -mmin +360 2>/dev/null)" ]; then
  apt-get update -qq
  mkdir -p "$(dirname "$stamp")" && touch "$stamp"
fi
for part in "$here"/deps/*.sh; do
  [ -e "$part" ] || continue
  echo "install-test-deps: $(basename "$part")" >&2
  bash "$part"
done
