#!/bin/bash
# THE install path of the Kubernetes distribution into a node image, for every build
# (`muster image build` runs it in a chroot before provision.sh; Packer in the build VM).
#
#   install-kubernetes.sh VERSION DISTRO [SOURCE [KEY_FINGERPRINT]]
#
#   DISTRO kubeadm: kubeadm, kubelet, kubectl at exactly VERSION (like v1.31.4), held with
#                   `apt-mark hold`, and cri-tools, kubernetes-cni, through apt from the
#                   flat apt repository SOURCE (default https://pkgs.k8s.io/core:/stable:/vX.Y/deb/;
#                   `file:/DIR/` for a local copy). Its Release.key must have the primary
#                   key KEY_FINGERPRINT (default: the pinned pkgs.k8s.io signing key), and
#                   apt checks the repository's signature with that key alone.
#   DISTRO k3s:     the k3s binary of VERSION (like v1.31.6+k3s1) and its airgap images
#                   tarball from the release SOURCE (default the GitHub release; a local
#                   directory when SOURCE starts with /), each checked against the release's
#                   sha256sum-amd64.txt, installed at /usr/local/bin/k3s and
#                   /var/lib/rancher/k3s/agent/images/ (k3s's airgap layout).
#
# The source and key are the only things that differ between an upstream build, an
# air-gapped one (`--artifacts DIR`) and the tests (a local signed repository).
# Exit 2 when the upstream source cannot be reached (nothing installed), 1 on any other
# failure (a wrong signature or sum, a missing version), each with a line saying which.
set -euo pipefail
export LC_ALL=C
export DEBIAN_FRONTEND=noninteractive

# The pkgs.k8s.io signing key ("isv:kubernetes OBS Project <isv:kubernetes@build.opensuse.org>").
K8S_KEY_FINGERPRINT=DE15B14486CD377B9E876E1A234654DA9A296436
K3S_AIRGAP=k3s-airgap-images-amd64.tar.zst
K3S_SUMS=sha256sum-amd64.txt

say() { printf 'install-kubernetes: %s\n' "$*" >&2; }
die() {
  printf 'install-kubernetes: error: %s\n' "$*" >&2
  exit 1
}
unreachable() {
  printf 'install-kubernetes: UPSTREAM UNREACHABLE: %s cannot be reached from this machine; nothing was installed. Build where it is reachable, or fetch the files with \047muster artifacts fetch\047 elsewhere and build with --artifacts DIR.\n' "$1" >&2
  exit 2
}

[ "$(id -u)" -eq 0 ] || die "must run as root"
if [ $# -lt 2 ] || [ $# -gt 4 ]; then die "usage: install-kubernetes.sh VERSION DISTRO [SOURCE [KEY_FINGERPRINT]]"; fi
version=$1
distro=$2
source=${3:-}
fingerprint=${4:-$K8S_KEY_FINGERPRINT}
arch=$(dpkg --print-architecture)
[ "$arch" = amd64 ] || die "only amd64 images are built (this system is $arch)"

# Copies FROM (a URL, a local path or a file: URL) to TO. Exit 2 when FROM's host cannot be
# reached at all (curl's DNS, connect, timeout and TLS failures), 1 when it is not there.
fetch() {
  local from=$1 to=$2 rc=0
  case "$from" in
    file:*) cp -- "${from#file:}" "$to" ;;
    /*) cp -- "$from" "$to" ;;
    *)
      curl -fsSL --connect-timeout 20 --max-time 600 --retry 2 -o "$to" "$from" || rc=$?
      case $rc in
        0) ;;
        5 | 6 | 7 | 28 | 35 | 60) return 2 ;;
        *) return 1 ;;
      esac
      ;;
  esac
}

# Installs what this script itself needs from Debian when the image lacks it.
need() {
  local missing=()
  for tool in "$@"; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

tmp=$(mktemp -d)
list=/etc/apt/sources.list.d/kubernetes.list
keyring=/etc/apt/keyrings/kubernetes-apt-keyring.gpg
done_ok=false
cleanup() {
  rm -rf "$tmp"
  if [ "$done_ok" != true ]; then rm -f "$list" "$keyring"; fi
}
trap cleanup EXIT

# A local directory of .deb files without a signed index (`--artifacts DIR` holding just
# the packages): no signature to check, the directory is taken as given; a SHA256SUMS in it
# is checked. The same versions are picked as from a repository (kubeadm, kubelet, kubectl
# at exactly VERSION, the newest cri-tools and kubernetes-cni), and apt installs them with
# their Debian dependencies.
install_debs() {
  local dir=$1 plain=$2 files=() p f best bestv v
  if [ -f "${dir}SHA256SUMS" ]; then
    (cd "$dir" && sha256sum --check --strict --quiet --ignore-missing SHA256SUMS) >&2 ||
      die "${dir}: a .deb does not match its SHA256SUMS (above)"
  fi
  for p in kubeadm kubelet kubectl cri-tools kubernetes-cni; do
    best=
    bestv=
    for f in "$dir"*.deb; do
      [ -f "$f" ] || continue
      [ "$(dpkg-deb -f "$f" Package)" = "$p" ] || continue
      v=$(dpkg-deb -f "$f" Version)
      case $p in kubeadm | kubelet | kubectl) [ "${v%%-*}" = "$plain" ] || continue ;; esac
      if [ -z "$bestv" ] || dpkg --compare-versions "$v" gt "$bestv"; then
        best=$f
        bestv=$v
      fi
    done
    [ -n "$best" ] || die "${dir}: no .deb of $p$(case $p in kubeadm | kubelet | kubectl) echo " $plain" ;; esac) (a directory of .deb files)"
    files+=("$best")
  done
  apt-get update -q >"$tmp/update" 2>&1 || {
    cat "$tmp/update" >&2
    die "apt-get update failed (above)"
  }
  if ! apt-get install -y -q --no-install-recommends "${files[@]}" >"$tmp/install" 2>&1; then
    cat "$tmp/install" >&2
    die "${dir}: apt-get install of the .deb files failed (above)"
  fi
  apt-mark hold kubeadm kubelet kubectl >/dev/null
  for bin in kubeadm kubelet kubectl crictl; do
    command -v "$bin" >/dev/null || die "$bin is not on PATH after installing the .deb files of $dir"
  done
  apt-get clean
  rm -rf /var/lib/apt/lists/*
  done_ok=true
  say "kubeadm, kubelet, kubectl $plain (held), cri-tools, kubernetes-cni installed from the .deb files in $dir"
}

install_kubeadm() {
  [[ $version =~ ^v([0-9]+)\.([0-9]+)\.([0-9]+)$ ]] || die "kubeadm VERSION must look like v1.31.4, got $version"
  local minor="v${BASH_REMATCH[1]}.${BASH_REMATCH[2]}" plain=${version#v}
  local upstream="https://pkgs.k8s.io/core:/stable:/${minor}/deb/"
  local repo=${source:-$upstream}
  [[ $repo == */ ]] || repo="$repo/"
  if [[ $repo == file:* ]] && [ ! -e "${repo#file:}Release" ] && [ ! -e "${repo#file:}InRelease" ]; then
    install_debs "${repo#file:}" "$plain"
    return
  fi
  need gpg:gpg curl:curl
  local rc=0
  fetch "${repo}Release.key" "$tmp/Release.key" 2>"$tmp/err" || rc=$?
  [ $rc -ne 2 ] || unreachable "${repo}Release.key"
  [ $rc -eq 0 ] || die "${repo}Release.key: not found, no such repository for $minor? ($(cat "$tmp/err"))"
  # The key must be exactly the pinned one: apt then trusts the repository with it alone.
  local got
  mkdir -m 0700 "$tmp/gnupg"
  got=$(gpg --homedir "$tmp/gnupg" --batch --show-keys --with-colons "$tmp/Release.key" 2>/dev/null |
    awk -F: '$1 == "pub" { want = 1; next } $1 == "fpr" && want { print $10; want = 0 }')
  [ -n "$got" ] || die "${repo}Release.key is not an OpenPGP public key"
  [ "$got" = "$fingerprint" ] ||
    die "${repo}Release.key has key fingerprint $(echo "$got" | tr '\n' ' ')but the pinned key is $fingerprint: refusing the repository"
  mkdir -p /etc/apt/keyrings
  gpg --homedir "$tmp/gnupg" --batch --dearmor --yes -o "$keyring" "$tmp/Release.key"
  chmod 0644 "$keyring"
  echo "deb [signed-by=$keyring] $repo /" >"$list"
  # Every source, so Debian's dependencies resolve; the repository's must verify.
  if ! apt-get update -q >"$tmp/update" 2>&1 || grep -q 'GPG error' "$tmp/update"; then
    cat "$tmp/update" >&2
    if grep -q -E 'NO_PUBKEY|BADSIG|not signed|signatures (were invalid|couldn.t be verified)' "$tmp/update"; then
      die "${repo}: its Release signature does not verify with key $fingerprint (wrong signature)"
    fi
    die "${repo}: apt-get update failed (above)"
  fi
  local pkgver
  pkgver=$(apt-cache madison kubeadm | awk -F'|' -v want="$plain" '
    { gsub(/ /, "", $2); split($2, v, "-") } v[1] == want { print $2; exit }')
  [ -n "$pkgver" ] || die "${repo}: no kubeadm $plain for $arch (its versions: $(apt-cache madison kubeadm | awk -F'|' '{gsub(/ /, "", $2); printf "%s ", $2}'))"
  for p in kubelet kubectl; do
    apt-cache madison "$p" | grep -q -F " $pkgver " || die "${repo}: no $p $pkgver beside kubeadm $pkgver"
  done
  if ! apt-get install -y -q --no-install-recommends \
    "kubeadm=$pkgver" "kubelet=$pkgver" "kubectl=$pkgver" cri-tools kubernetes-cni >"$tmp/install" 2>&1; then
    cat "$tmp/install" >&2
    if grep -q -i 'hash sum mismatch\|unexpected size' "$tmp/install"; then
      die "${repo}: a package does not match the sha256 its signed Packages index lists (above)"
    fi
    die "${repo}: apt-get install failed (above)"
  fi
  apt-mark hold kubeadm kubelet kubectl >/dev/null
  for bin in kubeadm kubelet kubectl crictl; do
    command -v "$bin" >/dev/null || die "$bin is not on PATH after installing from $repo"
  done
  # Only the upstream repository stays configured: a local or test source is gone after
  # the build.
  if [ "$repo" != "$upstream" ]; then rm -f "$list" "$keyring"; fi
  apt-get clean
  rm -rf /var/lib/apt/lists/*
  done_ok=true
  say "kubeadm, kubelet, kubectl $pkgver (held), cri-tools, kubernetes-cni installed from $repo"
}

install_k3s() {
  [[ $version =~ ^v[0-9]+\.[0-9]+\.[0-9]+\+k3s[0-9]+$ ]] || die "k3s VERSION must look like v1.31.6+k3s1, got $version"
  local release=${source:-https://github.com/k3s-io/k3s/releases/download/${version//+/%2B}}
  case "$release" in
    http://* | https://* | /*) ;;
    *) die "k3s SOURCE must be a URL or an absolute directory, got $release" ;;
  esac
  need curl:curl
  local rc=0
  fetch "$release/$K3S_SUMS" "$tmp/$K3S_SUMS" 2>"$tmp/err" || rc=$?
  [ $rc -ne 2 ] || unreachable "$release/$K3S_SUMS"
  [ $rc -eq 0 ] || die "$release/$K3S_SUMS: not found, no such release? ($(cat "$tmp/err"))"
  local name want got
  for name in k3s "$K3S_AIRGAP"; do
    want=$(awk -v n="$name" '$2 == n || $2 == "*" n { print $1; exit }' "$tmp/$K3S_SUMS")
    [ -n "$want" ] || die "$release/$K3S_SUMS lists no $name"
    fetch "$release/$name" "$tmp/$name" 2>"$tmp/err" ||
      die "$release/$name (expected sha256 $want): cannot get it ($(cat "$tmp/err"))"
    got=$(sha256sum "$tmp/$name" | cut -d' ' -f1)
    [ "$got" = "$want" ] ||
      die "$release/$name has sha256 $got, expected $want (from $K3S_SUMS): refusing it"
  done
  install -D -m 0755 "$tmp/k3s" /usr/local/bin/k3s
  install -D -m 0644 "$tmp/$K3S_AIRGAP" "/var/lib/rancher/k3s/agent/images/$K3S_AIRGAP"
  done_ok=true
  say "k3s $version and $K3S_AIRGAP installed from $release (sha256 checked)"
}

case "$distro" in
  kubeadm) install_kubeadm ;;
  k3s) install_k3s ;;
  *) die "DISTRO must be kubeadm or k3s, got $distro" ;;
esac
