#!/bin/bash
# Image-specific preparation for `muster image build` (a whole-disk ext4 image booted with
# direct kernel boot and a NoCloud seed). Not part of the shared node preparation
# (images/provision.sh), which Packer runs too.
#
# Interface: run as root inside the new root, before provision.sh:
#   chroot ROOTFS /bin/bash /tmp/image-build.sh [UNIT...]
# UNIT...: services Debian enabled on install that the agent starts itself (etcd, haproxy, …).
set -euo pipefail

# The root filesystem is the whole disk: root=/dev/vda on the kernel command line.
cat > /etc/fstab <<'FSTAB'
/dev/vda / ext4 defaults,errors=remount-ro 0 1
FSTAB

# cloud-init reads the NoCloud seed volume (label CIDATA) and nothing else.
mkdir -p /etc/cloud/cloud.cfg.d
cat > /etc/cloud/cloud.cfg.d/90-muster-datasource.cfg <<'CFG'
# Written by muster image build.
datasource_list: [ NoCloud, None ]
CFG
# (provision.sh writes that file again; this one is the image's own.) The minimal base has
# no `locales` (update-locale): cloud-init's locale module would fail and leave `cloud-init
# status` at error. The image keeps its C.UTF-8 default. A string: the module skips on
# "false", and the schema (a string) rejects the boolean ("Invalid cloud-config" at boot).
# cloud-init makes the ssh host keys at first boot, by default also a DSA key, which
# bookworm's sshd does not load (the four keys took 41-97 s per VM under emulation in the
# VM test): the three key types sshd uses, no more.
cat > /etc/cloud/cloud.cfg.d/91-muster-image.cfg <<'CFG'
# Written by muster image build.
locale: "false"
ssh_genkeytypes: [rsa, ecdsa, ed25519]
CFG

# cloud-init renders network-config v2 for systemd-networkd; resolved takes the DNS servers.
systemctl enable systemd-networkd.service systemd-resolved.service
ln -sf ../run/systemd/resolve/stub-resolv.conf /etc/resolv.conf

if [ "$#" -gt 0 ]; then
  systemctl disable "$@"
fi

# No name of its own (debootstrap copied the build host's): cloud-init sets it per node.
echo localhost > /etc/hostname
cat > /etc/hosts <<'HOSTS'
127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
HOSTS
