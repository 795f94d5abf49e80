#!/bin/bash
# Pre-pulls the container images a node needs into containerd's k8s.io namespace, from
# local image tarballs, so the node's first boot pulls nothing. Run as root in the image,
# after install-kubernetes.sh and provision.sh (containerd installed and configured):
# `muster image build` runs it in its chroot, Packer in the build VM.
#
#   import-images.sh [--k3s] [--manifest FILE SHA256]... DIR REF...
#
#   DIR holds one tarball per REF (an OCI or Docker archive as `ctr images export` or
#   `docker save` writes it), named by import-images.sh's rule (REF with / and : as _,
#   plus .tar), and SHA256SUMS (sha256sum format) listing each tarball. Every tarball is
#   checked against its sum before anything is imported; after the import every REF must
#   be in `ctr -n k8s.io images ls`.
#
# --manifest: FILE is a pinned add-on manifest that must have SHA256; each `image:` it names
# is one more REF (Packer passes them so; `muster image build` reads them itself).
#
# --k3s: k3s runs its own containerd, which imports the tarballs in
# /var/lib/rancher/k3s/agent/images/ when it starts (k3s's airgap layout, beside its airgap
# tarball); the checked tarballs are installed there instead.
#
# When no containerd answers on /run/containerd/containerd.sock (a chroot), the script
# starts the image's own containerd on a private socket for the import and stops it after;
# the caller provides /proc (muster image build: a private mount namespace).
set -euo pipefail
export LC_ALL=C

say() { printf 'import-images: %s\n' "$*" >&2; }
die() {
  printf 'import-images: error: %s\n' "$*" >&2
  exit 1
}

[ "$(id -u)" -eq 0 ] || die "must run as root"
k3s=false
if [ "${1:-}" = --k3s ]; then
  k3s=true
  shift
fi
refs=()
while [ "${1:-}" = --manifest ]; do
  [ $# -ge 3 ] || die "--manifest needs FILE SHA256"
  [ -f "$2" ] || die "$2: missing (the pinned add-on manifest, expected sha256 $3)"
  got=$(sha256sum "$2" | cut -d' ' -f1)
  [ "$got" = "$3" ] || die "$2 has sha256 $got, expected $3 (the pinned manifest)"
  found=$(awk '
    { sub(/^[ \t]+/, "") }
    /^image:/ { v = substr($0, 7); gsub(/^[ \t"]+|[ \t"]+$/, "", v); if (v != "") print v }' "$2")
  while IFS= read -r ref; do [ -z "$ref" ] || refs+=("$ref"); done <<<"$found"
  shift 3
done
[ $# -ge 1 ] || die "usage: import-images.sh [--k3s] [--manifest FILE SHA256]... DIR REF..."
dir=$1
shift
# (No process substitution: a chroot has no /dev/fd.)
sorted=$(printf '%s\n' "$@" "${refs[@]}" | grep -v '^$' | sort -u || true)
[ -n "$sorted" ] || die "no images to import"
mapfile -t all <<<"$sorted"
set -- "${all[@]}"
[ -f "$dir/SHA256SUMS" ] || die "$dir/SHA256SUMS: missing (the image tarballs' sums)"

file_of() { printf '%s.tar' "$(printf '%s' "$1" | tr '/:@' '___')"; }

for ref in "$@"; do
  f=$(file_of "$ref")
  want=$(awk -v n="$f" '$2 == n || $2 == "*" n { print $1; exit }' "$dir/SHA256SUMS")
  [ -n "$want" ] || die "$dir/SHA256SUMS lists no $f (the image $ref)"
  [ -f "$dir/$f" ] || die "$dir/$f (image $ref): missing (expected sha256 $want)"
  got=$(sha256sum "$dir/$f" | cut -d' ' -f1)
  [ "$got" = "$want" ] || die "$dir/$f (image $ref) has sha256 $got, expected $want (from SHA256SUMS)"
done

if [ "$k3s" = true ]; then
  for ref in "$@"; do
    install -D -m 0644 "$dir/$(file_of "$ref")" "/var/lib/rancher/k3s/agent/images/$(file_of "$ref")"
  done
  say "$# image tarballs in /var/lib/rancher/k3s/agent/images/ (k3s imports them when it starts): $*"
  exit 0
fi

command -v ctr >/dev/null || die "ctr not found: containerd is not installed in this image"
sock=/run/containerd/containerd.sock
pid=
stop() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf /run/muster-containerd
  fi
}
trap stop EXIT
if ! ctr --address "$sock" version >/dev/null 2>&1; then
  [ -r /proc/self/mounts ] || die "no containerd running and no /proc to start one"
  mkdir -p /run/muster-containerd
  sock=/run/muster-containerd/containerd.sock
  containerd --address "$sock" --state /run/muster-containerd/state \
    >/run/muster-containerd/log 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    ctr --address "$sock" version >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || {
      cat /run/muster-containerd/log >&2
      die "containerd did not start (its log above)"
    }
    sleep 0.1
  done
  ctr --address "$sock" version >/dev/null 2>&1 || die "containerd did not answer on $sock"
fi

for ref in "$@"; do
  f=$(file_of "$ref")
  ctr --address "$sock" -n k8s.io images import --platform linux/amd64 "$dir/$f" >&2 ||
    die "ctr images import $dir/$f (image $ref) failed"
done
have=$(ctr --address "$sock" -n k8s.io images ls -q)
for ref in "$@"; do
  grep -qxF "$ref" <<<"$have" || die "$dir/$(file_of "$ref") did not hold the image $ref (containerd has: $(tr '\n' ' ' <<<"$have"))"
done
say "$# images in containerd's k8s.io namespace: $*"
