#!/usr/bin/env bash
# Validators for image recipes (issue #3): Packer templates, Vagrantfiles, shell scripts,
# systemd units, and a debootstrap tree for the provision.sh chroot test; apt-utils
# (apt-ftparchive), gnupg and zstd for the install-path test's local signed apt repository
# and k3s release, curl for `muster artifacts fetch`.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends \
  packer vagrant vagrant-libvirt shellcheck debootstrap systemd \
  apt-utils gnupg zstd curl
# The throwaway Debian root the provision.sh chroot test copies (cached; ~2-9 min once).
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/make-test-rootfs.sh" /var/cache/muster-test/bookworm-rootfs
