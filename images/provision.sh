#!/bin/bash
# muster node preparation: THE one list of steps that turns a base system into a muster
# node image. Packer's shell provisioner runs it in the booted build VM; `muster image
# build` runs it in a chroot. Run as root on the target system:
#
#   provision.sh PAYLOAD_TARBALL [SHA256_OF_TARBALL | SHA256SUMS_FILE]
#
# PAYLOAD_TARBALL (gzip tar) holds files at their paths relative to / (e.g.
# usr/bin/nodeagent, usr/lib/muster/cluster.json, etc/systemd/system/nodeagent.service)
# and a SHA256SUMS listing every one of them (`sha256sum` format): at its top, or at
# usr/lib/muster/SHA256SUMS as `muster build` writes it (then installed with the rest).
# Nothing is installed unless the tarball (when a digest is given) and every file verify.
set -euo pipefail
umask 022
export LC_ALL=C
export DEBIAN_FRONTEND=noninteractive

say() { printf 'provision: %s\n' "$*" >&2; }
die() {
  printf 'provision: error: %s\n' "$*" >&2
  exit 1
}

# True when / is not the root of PID 1 (a chroot), or /proc is not mounted; then nothing
# touches the running kernel (swapoff would act on the host).
in_chroot() {
  [ -e /proc/1/root ] || return 0
  [ "$(stat -c %d:%i /)" != "$(stat -L -c %d:%i /proc/1/root 2>/dev/null || echo unknown)" ]
}

# True when systemd is running this system (the Packer VM), false in a chroot.
systemd_booted() {
  ! in_chroot && [ -d /run/systemd/system ]
}

[ "$(id -u)" -eq 0 ] || die "must run as root"
if [ $# -lt 1 ] || [ $# -gt 2 ]; then die "usage: provision.sh PAYLOAD_TARBALL [SHA256_OF_TARBALL | SHA256SUMS_FILE]"; fi
payload=$1
expected=${2:-}
[ -f "$payload" ] || die "payload $payload: no such file"

# 1. The tarball itself.
if [ -n "$expected" ]; then
  if [[ $expected =~ ^[0-9a-fA-F]{64}$ ]]; then
    want=${expected,,}
  elif [ -f "$expected" ]; then
    base=$(basename "$payload")
    want=$(sed -n -E "s/^([0-9a-fA-F]{64}) [ *]?(.*\\/)?${base//./\\.}\$/\\1/p" "$expected" | head -n 1)
    if [ -z "$want" ] && [ "$(grep -c -E '^[0-9a-fA-F]{64} ' "$expected")" -eq 1 ]; then
      want=$(grep -o -E '^[0-9a-fA-F]{64}' "$expected")
    fi
    [ -n "$want" ] || die "$expected lists no digest for $base"
    want=${want,,}
  else
    die "second argument is neither a SHA-256 digest nor a file: $expected"
  fi
  got=$(sha256sum "$payload" | cut -d' ' -f1)
  [ "$got" = "$want" ] || die "payload $payload has sha256 $got, expected $want: refusing it"
  say "payload digest verified ($got)"
else
  say "no digest given for $payload: verifying its contents only"
fi

# 2. Unpack and verify every file against the SHA256SUMS inside.
stage=$(mktemp -d /tmp/muster-payload.XXXXXX)
trap 'rm -rf "$stage"' EXIT
tar -xzf "$payload" -C "$stage" --no-same-owner ||
  die "payload $payload is not a readable gzip tar"
sums=SHA256SUMS
if [ ! -f "$stage/$sums" ] && [ -f "$stage/usr/lib/muster/SHA256SUMS" ]; then
  sums=usr/lib/muster/SHA256SUMS
fi
[ -f "$stage/$sums" ] || die "payload $payload has no SHA256SUMS (at its top or in usr/lib/muster/)"
bad=$(find "$stage" -mindepth 1 ! -type f ! -type d -printf '%P\n')
[ -z "$bad" ] || die "payload holds entries that are neither files nor directories: $bad"
listed=$(sed -E -e 's/^[0-9a-fA-F]{64} [ *]?//' -e 's|^\./||' "$stage/$sums" | sort -u)
while IFS= read -r rel; do
  case "$rel" in
    /* | ../* | */../* | *..) die "payload path escapes the root: $rel" ;;
  esac
done <<<"$listed"
if ! (cd "$stage" && sha256sum --check --strict --quiet "$sums") >&2; then
  die "payload $payload: files do not match its SHA256SUMS: refusing it"
fi
present=$(cd "$stage" && find . -type f ! -path ./SHA256SUMS -printf '%P\n' | sort)
# (no process substitution: a chroot may have no /dev/fd)
unlisted=
while IFS= read -r f; do
  if [ -z "$f" ] || [ "$f" = "$sums" ]; then continue; fi
  grep -Fxq -- "$f" <<<"$listed" || unlisted="$unlisted $f"
done <<<"$present"
[ -z "$unlisted" ] || die "payload holds files SHA256SUMS does not list: $unlisted"
say "payload files verified ($(printf '%s\n' "$listed" | grep -c .) files)"

# 3. Install at final paths, keeping each file's mode, owned by root.
while IFS= read -r rel; do
  [ -n "$rel" ] || continue
  mode=$(stat -c %a "$stage/$rel")
  install -D -o root -g root -m "$mode" "$stage/$rel" "/$rel"
done <<<"$listed"
if [ "$sums" != SHA256SUMS ]; then
  install -D -o root -g root -m 0644 "$stage/$sums" "/$sums"
fi
say "payload installed"

# 4. The node agent starts on first boot.
if systemd_booted; then
  systemctl daemon-reload
fi
systemctl enable nodeagent.service
say "nodeagent.service enabled"

# 5. Kubernetes node prerequisites.
# Swap off, now (not in a chroot) and for good.
if ! in_chroot && [ -r /proc/swaps ] && [ "$(wc -l </proc/swaps)" -gt 1 ]; then
  swapoff -a
fi
if [ -f /etc/fstab ]; then
  sed -i -E 's/^([^#[:space:]]+[[:space:]]+[^[:space:]]+[[:space:]]+swap[[:space:]].*)$/# muster: swap off # \1/' /etc/fstab
fi
mkdir -p /etc/modules-load.d /etc/sysctl.d
cat >/etc/modules-load.d/muster-k8s.conf <<'CONF'
# muster: Kubernetes networking needs these at boot.
overlay
br_netfilter
CONF
cat >/etc/sysctl.d/90-muster-k8s.conf <<'CONF'
# muster: Kubernetes networking (br_netfilter is loaded by modules-load.d/muster-k8s.conf).
net.ipv4.ip_forward = 1
net.bridge.bridge-nf-call-iptables = 1
net.bridge.bridge-nf-call-ip6tables = 1
CONF
say "swap off, modules and sysctls written"

# containerd must use the systemd cgroup driver like the kubelet.
if command -v containerd >/dev/null 2>&1; then
  mkdir -p /etc/containerd
  if [ ! -s /etc/containerd/config.toml ] || ! grep -q 'SystemdCgroup' /etc/containerd/config.toml; then
    containerd config default >/etc/containerd/config.toml
  fi
  sed -i -E 's/^([[:space:]]*SystemdCgroup[[:space:]]*=[[:space:]]*)false/\1true/' /etc/containerd/config.toml
  grep -q -E '^[[:space:]]*SystemdCgroup[[:space:]]*=[[:space:]]*true' /etc/containerd/config.toml ||
    die "/etc/containerd/config.toml: could not set SystemdCgroup = true"
  systemctl enable containerd.service
  say "containerd: SystemdCgroup = true"
else
  say "containerd not installed: skipping its config"
fi

# Time sync before certificates are checked.
if command -v chronyd >/dev/null 2>&1; then
  systemctl enable chrony.service
  say "chrony enabled"
else
  say "chrony not installed: skipping"
fi

# The node's identity comes from a NoCloud seed (a cidata volume or Proxmox's drive).
mkdir -p /etc/cloud/cloud.cfg.d
cat >/etc/cloud/cloud.cfg.d/90-muster-datasource.cfg <<'CONF'
# muster: each node gets its identity from a NoCloud seed volume.
datasource_list: [ NoCloud, None ]
CONF
command -v cloud-init >/dev/null 2>&1 || say "warning: cloud-init not installed: nodes will get no identity"

# 6. Sysprep: every clone must come up as a new machine.
: >/etc/machine-id
rm -f /var/lib/dbus/machine-id
: >/etc/hostname
rm -f /etc/ssh/ssh_host_*
if [ -x /usr/sbin/sshd ]; then
  mkdir -p /etc/systemd/system/ssh.service.d
  cat >/etc/systemd/system/ssh.service.d/muster-host-keys.conf <<'CONF'
# muster: the image ships without ssh host keys; each clone makes its own.
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
CONF
fi
if command -v cloud-init >/dev/null 2>&1; then
  cloud-init clean --logs
fi
if command -v apt-get >/dev/null 2>&1; then
  apt-get clean
  rm -rf /var/lib/apt/lists/*
fi
say "sysprep done: machine-id empty, no hostname, no ssh host keys, caches cleaned"
say "node image prepared"
