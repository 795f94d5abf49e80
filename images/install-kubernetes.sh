#!/bin/bash
# OPTIONAL image step: installs the Kubernetes distribution from its upstream source.
#
#   install-kubernetes.sh VERSION DISTRO
#
#   DISTRO kubeadm: kubeadm, kubelet, kubectl (held) from pkgs.k8s.io for VERSION's minor
#                   release, and containerd from Debian. VERSION like v1.31.4.
#   DISTRO k3s:     the k3s binary of VERSION (like v1.31.6+k3s1) from its GitHub release,
#                   checked against the release's sha256sum-amd64.txt.
#
# It needs the internet. When the upstream source cannot be reached it says so and exits 2
# without installing anything; it never pretends. Run it before provision.sh (which then
# configures containerd). Skip it when the base image already carries the distribution.
set -euo pipefail
export LC_ALL=C
export DEBIAN_FRONTEND=noninteractive

say() { printf 'install-kubernetes: %s\n' "$*" >&2; }
die() {
  printf 'install-kubernetes: error: %s\n' "$*" >&2
  exit 1
}
unreachable() {
  printf 'install-kubernetes: UPSTREAM UNREACHABLE: %s cannot be reached from this machine; nothing was installed. Run this step where the internet is available, or use a base image that already has %s.\n' "$1" "$2" >&2
  exit 2
}

[ "$(id -u)" -eq 0 ] || die "must run as root"
[ $# -eq 2 ] || die "usage: install-kubernetes.sh VERSION DISTRO (kubeadm | k3s)"
version=$1
distro=$2
command -v curl >/dev/null 2>&1 || apt-get install -y --no-install-recommends curl ca-certificates
arch=$(dpkg --print-architecture)

probe() {
  curl -fsSL --max-time 20 --retry 2 -o /dev/null "$1"
}

case "$distro" in
  kubeadm)
    [[ $version =~ ^v([0-9]+)\.([0-9]+)\.([0-9]+)$ ]] || die "kubeadm VERSION must look like v1.31.4, got $version"
    minor="v${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
    plain=${version#v}
    repo="https://pkgs.k8s.io/core:/stable:/${minor}/deb/"
    probe "${repo}Release.key" || unreachable "$repo" "kubeadm, kubelet and kubectl $version"
    apt-get update
    apt-get install -y --no-install-recommends ca-certificates gpg containerd conntrack socat
    mkdir -p /etc/apt/keyrings
    curl -fsSL --max-time 60 "${repo}Release.key" | gpg --dearmor --yes -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg
    echo "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] ${repo} /" >/etc/apt/sources.list.d/kubernetes.list
    apt-get update
    pkgver=$(apt-cache madison kubeadm | sed -n -E "s/^[[:space:]]*kubeadm[[:space:]]*\\|[[:space:]]*(${plain//./\\.}-[^[:space:]]+).*/\\1/p" | head -n 1)
    [ -n "$pkgver" ] || die "pkgs.k8s.io has no kubeadm $plain for $arch"
    apt-get install -y --no-install-recommends "kubeadm=$pkgver" "kubelet=$pkgver" "kubectl=$pkgver"
    apt-mark hold kubeadm kubelet kubectl
    say "kubeadm, kubelet, kubectl $pkgver installed and held"
    ;;
  k3s)
    [[ $version =~ ^v[0-9]+\.[0-9]+\.[0-9]+\+k3s[0-9]+$ ]] || die "k3s VERSION must look like v1.31.6+k3s1, got $version"
    case "$arch" in
      amd64) asset=k3s ;;
      arm64) asset=k3s-arm64 ;;
      *) die "no k3s release binary for $arch" ;;
    esac
    base="https://github.com/k3s-io/k3s/releases/download/${version//+/%2B}"
    probe "$base/sha256sum-$arch.txt" || unreachable "$base" "k3s $version"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    curl -fsSL --max-time 600 -o "$tmp/$asset" "$base/$asset"
    curl -fsSL --max-time 60 -o "$tmp/sums" "$base/sha256sum-$arch.txt"
    grep -E "[[:space:]]$asset\$" "$tmp/sums" >"$tmp/sum" || die "sha256sum-$arch.txt lists no $asset"
    (cd "$tmp" && sha256sum --check --strict sum) || die "downloaded $asset does not match its release checksum"
    install -m 0755 "$tmp/$asset" /usr/local/bin/k3s
    say "k3s $version installed at /usr/local/bin/k3s"
    ;;
  *)
    die "DISTRO must be kubeadm or k3s, got $distro"
    ;;
esac
