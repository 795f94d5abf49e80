#!/bin/bash
# Pre-pulls the container images a node needs into containerd's k8s.io namespace, so the
# node's first boot pulls nothing. Run as root in the image, after install-kubernetes.sh
# and provision.sh (containerd installed and configured): `muster image build` runs it in
# its chroot, Packer in the build VM.
#
#   import-images.sh [--k3s] [--manifest FILE SHA256]... [--list FILE]... DIR REF...
#   import-images.sh --pull [--k3s] [--hosts-dir DIR] [--manifest FILE SHA256]...
#                    [--list FILE]... REF...
#
# From tarballs (the first form, air-gapped): DIR holds one tarball per REF (an OCI or
# Docker archive as `ctr images export` or `docker save` writes it), named by
# import-images.sh's rule (REF with /, : and @ as _, plus .tar), and SHA256SUMS (sha256sum
# format) listing each tarball. Every tarball is checked against its sum before anything
# is imported.
#
# --pull (online): each REF is pulled from its registry by the image's own containerd
# (`ctr -n k8s.io images pull --platform linux/amd64`). Registry hosts (mirrors, plain-HTTP
# registries) come from containerd's hosts.toml layout: --hosts-dir DIR, else
# /etc/containerd/certs.d when it exists. A REF no registry has fails naming it.
#
# Either way, every REF must be in `ctr -n k8s.io images ls` at the end.
#
# --manifest: FILE is a pinned add-on manifest that must have SHA256; each image it names
# (`image:` fields, also as a list item `- image:`) is one more REF.
# --list: FILE names one REF a line (`muster build` writes usr/lib/muster/prepull-images
# into the payload: every image the nodes need, the pinned add-on manifests' included).
#
# A REF may be pinned by digest (`NAME@sha256:…` or `NAME:TAG@sha256:…`): containerd pulls
# it by that digest and checks every byte against it; a registry serving other content is
# an error naming the image.
#
# --k3s: k3s runs its own containerd, which imports the tarballs in
# /var/lib/rancher/k3s/agent/images/ when it starts (k3s's airgap layout, beside its airgap
# tarball); the checked tarballs are installed there instead. With --pull, the images are
# pulled by a private containerd and exported there as tarballs. k3s's containerd runs only
# with k3s, and a k3s image has no other: when the image lacks `containerd` or `ctr`, the
# step installs Debian's containerd from the image's apt sources for the pull
# (`apt-get install --no-install-recommends containerd`, services kept from starting by a
# policy-rc.d) and purges exactly the packages that install added afterwards (and the apt
# lists it fetched), so the image keeps only what a k3s node needs.
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

# The images a manifest names, by the rules of muster's addons::images: `image:` fields (also
# as a list item), a list item after a `--…-image` flag or `--…-image=REF`, and the
# `value:` of an env var named `…_IMAGE`.
manifest_images() {
  awk '
    function unq(s) { gsub(/^[ \t"\x27]+|[ \t"\x27]+$/, "", s); return s }
    {
      line = $0
      islist = (line ~ /^[ \t]*- /)
      sub(/^[ \t]+/, "", line)
      if (line ~ /^- /) sub(/^-[ \t]+/, "", line)
      i = index(line, " #")
      if (i > 0) line = substr(line, 1, i - 1)
      sub(/[ \t]+$/, "", line)
      v = ""
      u = unq(line)
      if (line ~ /^image:/) v = substr(line, 7)
      else if (line ~ /^value:/ && prev ~ /^name:/ && unq(substr(prev, 6)) ~ /_IMAGE$/) v = substr(line, 7)
      else if (islist && u ~ /^--[^=]*-image=/) v = substr(u, index(u, "=") + 1)
      else if (islist && prev ~ /^--/ && unq(prev) ~ /-image$/) v = line
      v = unq(v)
      if (v != "") print v
      prev = line
    }' "$1"
}

[ "$(id -u)" -eq 0 ] || die "must run as root"
k3s=false
pull=false
hosts=
refs=()
while [ $# -gt 0 ]; do
  case "$1" in
  --k3s)
    k3s=true
    shift
    ;;
  --pull)
    pull=true
    shift
    ;;
  --hosts-dir)
    [ $# -ge 2 ] || die "--hosts-dir needs DIR"
    [ -d "$2" ] || die "$2: no such directory (--hosts-dir: containerd's hosts.toml layout)"
    hosts=$2
    shift 2
    ;;
  --list)
    [ $# -ge 2 ] || die "--list needs FILE"
    [ -f "$2" ] || die "$2: missing (the list of images to pre-pull)"
    while IFS= read -r ref || [ -n "$ref" ]; do
      ref=${ref%%#*}
      ref=$(printf '%s' "$ref" | tr -d ' \t\r')
      [ -z "$ref" ] || refs+=("$ref")
    done <"$2"
    shift 2
    ;;
  --manifest)
    [ $# -ge 3 ] || die "--manifest needs FILE SHA256"
    [ -f "$2" ] || die "$2: missing (the pinned add-on manifest, expected sha256 $3)"
    got=$(sha256sum "$2" | cut -d' ' -f1)
    [ "$got" = "$3" ] || die "$2 has sha256 $got, expected $3 (the pinned manifest)"
    found=$(manifest_images "$2")
    while IFS= read -r ref; do [ -z "$ref" ] || refs+=("$ref"); done <<<"$found"
    shift 3
    ;;
  --*) die "unknown option $1" ;;
  *) break ;;
  esac
done
if [ "$pull" = true ]; then
  dir=
else
  [ $# -ge 1 ] || die "usage: import-images.sh [--k3s] [--manifest FILE SHA256]... [--list FILE]... DIR REF... | --pull [--k3s] [--hosts-dir DIR] [--manifest FILE SHA256]... [--list FILE]... REF..."
  dir=$1
  shift
fi
if [ -z "$hosts" ] && [ -d /etc/containerd/certs.d ]; then hosts=/etc/containerd/certs.d; fi
# (No process substitution: a chroot has no /dev/fd.)
sorted=$(printf '%s\n' "$@" "${refs[@]}" | grep -v '^$' | sort -u || true)
[ -n "$sorted" ] || die "no images to import"
mapfile -t all <<<"$sorted"
set -- "${all[@]}"
file_of() { printf '%s.tar' "$(printf '%s' "$1" | tr '/:@' '___')"; }

start_containerd() {
  # $1: containerd's root (empty: its default)
  mkdir -p /run/muster-containerd
  sock=/run/muster-containerd/containerd.sock
  containerd --address "$sock" --state /run/muster-containerd/state ${1:+--root "$1"} \
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
}
sock=/run/containerd/containerd.sock
pid=
scratch=
temporary=
created=
policy=
stop() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf /run/muster-containerd
  fi
  [ -z "$scratch" ] || rm -rf "$scratch"
  remove_temporary_containerd
}
trap stop EXIT

# The packages installed (state `ii`), one a line, sorted.
installed_packages() { dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' | awk '$1 == "ii" { print $2 }' | sort; }

# Debian's containerd from the image's apt sources, for a pull in an image without it (k3s);
# remove_temporary_containerd takes away what it added (also after a failure half-way).
install_temporary_containerd() {
  command -v apt-get >/dev/null || die "--pull --k3s: no containerd/ctr in the image and no apt-get to install them for the pull"
  say "no containerd in the image (k3s runs its own only with k3s): installing Debian's containerd for the pull, removed after"
  installed_packages >/var/tmp/muster-pkgs-before
  temporary=yes
  # containerd's directories the image did not have: removed with the packages.
  created=
  for d in /etc/containerd /var/lib/containerd /opt/containerd; do
    [ -e "$d" ] || created="$created $d"
  done
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    # Nothing the install brings starts as a service (the build VM runs systemd).
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    policy=/usr/sbin/policy-rc.d
  fi
  local out
  out=$(apt-get update -q 2>&1) || die "apt-get update failed (the temporary containerd comes from the image's apt sources): $(tail -n 3 <<<"$out" | tr '\n' ' ')"
  out=$(DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends containerd 2>&1) ||
    die "installing Debian's containerd for the pull failed: $(tail -n 3 <<<"$out" | tr '\n' ' ')"
  if ! command -v containerd >/dev/null || ! command -v ctr >/dev/null; then
    die "Debian's containerd package installed no containerd/ctr"
  fi
}

# Purges the packages install_temporary_containerd added, its policy-rc.d, and the apt lists
# and archives it fetched (provision.sh had removed them already).
remove_temporary_containerd() {
  [ "$temporary" = yes ] || return 0
  temporary=
  local added failed=
  added=$(installed_packages | comm -13 /var/tmp/muster-pkgs-before - | tr '\n' ' ')
  if [ -n "${added// /}" ]; then
    # shellcheck disable=SC2086 # one word per package
    if DEBIAN_FRONTEND=noninteractive apt-get purge -y -q $added >/dev/null 2>&1; then
      say "removed the temporary packages: $added"
    else
      failed="purging the temporary packages ($added) failed: the image would keep them"
    fi
  fi
  rm -f /var/tmp/muster-pkgs-before
  # shellcheck disable=SC2086 # one word per directory
  [ -z "$created" ] || rm -rf $created
  apt-get clean >/dev/null 2>&1 || true
  rm -rf /var/lib/apt/lists/*
  [ -z "$policy" ] || rm -f "$policy"
  [ -z "$failed" ] || die "$failed"
}

# pull NAMESPACE REF: pulls REF; a failure names the image and says what ctr said.
pull() {
  local out
  if ! out=$(ctr --address "$sock" -n "$1" images pull --platform linux/amd64 \
    ${hosts:+--hosts-dir "$hosts"} "$2" 2>&1); then
    if [[ "$2" == *@sha256:* ]] && grep -qi 'unexpected commit digest\|digest mismatch' <<<"$out"; then
      die "the image $2 does not match its pinned digest (the registry served other content): $(grep -i 'digest' <<<"$out" | tail -n 1)"
    fi
    die "pulling the image $2 failed: $(printf '%s\n' "$out" | grep -i 'error\|fail\|not found' | tail -n 2 | tr '\n' ' ')"
  fi
}

if [ "$pull" = false ]; then
  [ -f "$dir/SHA256SUMS" ] || die "$dir/SHA256SUMS: missing (the image tarballs' sums)"
  for ref in "$@"; do
    f=$(file_of "$ref")
    want=$(awk -v n="$f" '$2 == n || $2 == "*" n { print $1; exit }' "$dir/SHA256SUMS")
    [ -n "$want" ] || die "$dir/SHA256SUMS lists no $f (the image $ref)"
    [ -f "$dir/$f" ] || die "$dir/$f (image $ref): missing (expected sha256 $want)"
    got=$(sha256sum "$dir/$f" | cut -d' ' -f1)
    [ "$got" = "$want" ] || die "$dir/$f (image $ref) has sha256 $got, expected $want (from SHA256SUMS)"
  done
fi

if [ "$k3s" = true ] && [ "$pull" = false ]; then
  for ref in "$@"; do
    install -D -m 0644 "$dir/$(file_of "$ref")" "/var/lib/rancher/k3s/agent/images/$(file_of "$ref")"
  done
  say "$# image tarballs in /var/lib/rancher/k3s/agent/images/ (k3s imports them when it starts): $*"
  exit 0
fi

if [ "$k3s" = true ]; then
  # k3s's own containerd runs only with k3s: a private containerd pulls (a temporary one
  # when the image has none), and the images are exported where k3s imports them at its
  # start.
  [ -r /proc/self/mounts ] || die "no /proc to start containerd"
  if ! command -v containerd >/dev/null || ! command -v ctr >/dev/null; then
    install_temporary_containerd
  fi
  scratch=/var/tmp/muster-pull
  rm -rf "$scratch"
  start_containerd "$scratch"
  install -d /var/lib/rancher/k3s/agent/images
  for ref in "$@"; do
    pull muster-pull "$ref"
    ctr --address "$sock" -n muster-pull images export --platform linux/amd64 \
      "/var/lib/rancher/k3s/agent/images/$(file_of "$ref")" "$ref" >&2 ||
      die "exporting the image $ref failed"
  done
  say "$# images pulled into /var/lib/rancher/k3s/agent/images/ (k3s imports them when it starts): $*"
  exit 0
fi

command -v ctr >/dev/null || die "ctr not found: containerd is not installed in this image"

if ! ctr --address "$sock" version >/dev/null 2>&1; then
  [ -r /proc/self/mounts ] || die "no containerd running and no /proc to start one"
  start_containerd ""
fi

for ref in "$@"; do
  if [ "$pull" = true ]; then
    pull k8s.io "$ref"
  else
    f=$(file_of "$ref")
    ctr --address "$sock" -n k8s.io images import --platform linux/amd64 "$dir/$f" >&2 ||
      die "ctr images import $dir/$f (image $ref) failed"
  fi
done
have=$(ctr --address "$sock" -n k8s.io images ls -q)
for ref in "$@"; do
  if [ "$pull" = true ]; then
    grep -qxF "$ref" <<<"$have" || die "the image $ref is not in containerd after its pull (containerd has: $(tr '\n' ' ' <<<"$have"))"
  else
    grep -qxF "$ref" <<<"$have" || die "$dir/$(file_of "$ref") did not hold the image $ref (containerd has: $(tr '\n' ' ' <<<"$have"))"
  fi
done
say "$# images in containerd's k8s.io namespace: $*"
