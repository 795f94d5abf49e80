#!/usr/bin/env bash
# What `muster image build` and its VM test need: debootstrap for the base, e2fsprogs for
# `mkfs.ext4 -d` and `debugfs`, qemu-utils for `qemu-img`, dosfstools + mtools for the
# NoCloud seed, and qemu-system-x86 (from bookworm-backports) for the KVM probe and VM test.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q debootstrap e2fsprogs dosfstools mtools qemu-utils iproute2
apt-get install -y -q -t bookworm-backports qemu-system-x86
