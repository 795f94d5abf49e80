#!/usr/bin/env bash
# Builds the throwaway Debian 12 root the provision.sh chroot test copies (run as root).
# usage: make-test-rootfs.sh DEST
# DEST appears complete (with DEST/.muster-rootfs-ready) or not at all: the tree is built
# beside it and renamed into place. Packages come from the Debian mirror apt uses.
set -euo pipefail
dest=${1:?usage: make-test-rootfs.sh DEST}
mirror=${MUSTER_DEBIAN_MIRROR:-http://deb.debian.org/debian}
if [ -e "$dest/.muster-rootfs-ready" ]; then
  exit 0
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  echo "make-test-rootfs: debootstrap is missing: apt-get install -y debootstrap" >&2
  exit 1
fi
parent=$(dirname "$dest")
mkdir -p "$parent/debs"
work=$(mktemp -d "$parent/.rootfs.XXXXXX")
cleanup() {
  # debootstrap mounts these while it works; never delete through a live mount.
  for m in proc sys dev/pts dev; do
    if mountpoint -q "$work/root/$m" 2>/dev/null; then umount -l "$work/root/$m"; fi
  done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
# What a muster node image holds besides the payload: systemd, dbus, ssh, cloud-init,
# containerd and chrony, so every conditional step of provision.sh runs for real.
debootstrap --variant=minbase --cache-dir="$parent/debs" \
  --include=systemd,systemd-sysv,dbus,openssh-server,cloud-init,python3-cffi-backend,containerd,chrony \
  bookworm "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  exit 1
}
touch "$work/root/.muster-rootfs-ready"
rm -rf "$dest"
mv "$work/root" "$dest"
