#!/usr/bin/env bash
# What the Vagrant box test (builder/tests/vagrant_box.rs, VM tier) needs besides Vagrant and
# vagrant-libvirt (scripts/deps/images.sh): libvirtd with its QEMU driver, virsh, dnsmasq for
# the networks vagrant-libvirt creates, iptables for libvirt's network rules. The test starts
# virtlogd and libvirtd itself when they are not running (CI containers have no systemd).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends \
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients dnsmasq-base iptables
# libvirt keeps its cached QEMU capabilities only while they agree with whether its QEMU user
# (libvirt-qemu, group kvm) may open /dev/kvm. Without udev (CI containers, VMs like the test
# machines) /dev/kvm stays root-only and every domain definition re-probes QEMU: ~30 s per
# `vagrant up` machine measured here (docs/testing.md). udev's rule on Debian makes it
# root:kvm 0660; so does this.
if [ -c /dev/kvm ] && getent group kvm >/dev/null; then
  chgrp kvm /dev/kvm
  chmod 0660 /dev/kvm
fi
