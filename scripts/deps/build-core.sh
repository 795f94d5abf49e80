#!/usr/bin/env bash
# Validators for `muster build` output (see /work/shared/notes/validators.md):
# haproxy, keepalived, nginx + stream module, dosfstools/mtools/blkid for the seed
# volume, iproute2/util-linux for the namespaces keepalived is checked in, and a venv
# with Debian's cloud-init (unpacked, not installed) and kubernetes-validate.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends \
  haproxy keepalived nginx-light libnginx-mod-stream \
  dosfstools mtools util-linux iproute2 python3-venv >/dev/null
# Daemons are only used as checkers: keep them from running on the build host.
for svc in haproxy keepalived nginx; do
  systemctl disable --now "$svc" >/dev/null 2>&1 || true
done
cache=/var/cache/muster-validators
mkdir -p "$cache"
if [ ! -d "$cache/cloud-init/usr/lib/python3/dist-packages/cloudinit" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq cloud-init)
  rm -rf "$cache/cloud-init"
  dpkg -x "$tmp"/cloud-init_*.deb "$cache/cloud-init"
  rm -rf "$tmp"
fi
if [ ! -x "$cache/venv/bin/kubernetes-validate" ]; then
  /usr/bin/python3 -m venv "$cache/venv"
  "$cache/venv/bin/pip" install -q pyyaml jsonschema requests configobj jsonpatch netifaces kubernetes-validate
fi
