#!/usr/bin/env bash
# What the Vagrant box test (builder/tests/vagrant_box.rs, VM tier) needs besides Vagrant and
# vagrant-libvirt (scripts/deps/images.sh): libvirtd with its QEMU driver, virsh, dnsmasq for
# the networks vagrant-libvirt creates, iptables for libvirt's network rules. The test starts
# virtlogd and libvirtd itself when they are not running (CI containers have no systemd).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends \
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients dnsmasq-base iptables
