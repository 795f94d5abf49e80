#!/bin/bash
# TEMPORARY minimal version, written for the `muster image build` tests: REPLACE THIS FILE
# with the shared images/provision.sh at merge (the one list of node-preparation steps that
# Packer runs too). Same interface:
#   provision.sh PAYLOAD_TARBALL      (as root on the target system, e.g. in a chroot)
# Verifies the payload's SHA256SUMS, unpacks it onto /, enables the units it ships, sysprep.
set -euo pipefail
payload=${1:?usage: provision.sh PAYLOAD_TARBALL}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/p"
tar -xzf "$payload" -C "$work/p" --no-same-owner

# Every file listed with the right sum, and nothing unlisted.
(cd "$work/p" && sha256sum --quiet --strict -c SHA256SUMS)
sed -E 's/^[0-9a-f]{64} [ *]//; s#^\./##' "$work/p/SHA256SUMS" | sort > "$work/listed"
(cd "$work/p" && find . -type f ! -path ./SHA256SUMS -printf '%P\n' | sort) > "$work/found"
if [ -n "$(comm -13 "$work/listed" "$work/found")" ]; then
  echo "provision: payload files not in SHA256SUMS: $(comm -13 "$work/listed" "$work/found")" >&2
  exit 1
fi
rm "$work/p/SHA256SUMS"

# Unpack onto / (keeping /lib, /bin as the usr-merge symlinks they are).
tar -C "$work/p" -cf - . | tar -xf - -C / --keep-directory-symlink --no-same-owner

# Enable the units the payload ships (those with an [Install] section).
while read -r f; do
  case "$f" in
    etc/systemd/system/*.service | usr/lib/systemd/system/*.service | lib/systemd/system/*.service)
      if grep -q '^\[Install\]' "/$f"; then systemctl enable "$(basename "$f")"; fi ;;
  esac
done < "$work/found"

# Sysprep: every clone gets its own machine id, ssh host keys and cloud-init instance.
truncate -s 0 /etc/machine-id
rm -f /var/lib/dbus/machine-id /etc/ssh/ssh_host_*
mkdir -p /etc/systemd/system/ssh.service.d
cat > /etc/systemd/system/ssh.service.d/regenerate-host-keys.conf <<'UNIT'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
UNIT
cloud-init clean --logs
apt-get clean
rm -rf /var/lib/apt/lists/* /var/log/*.log
