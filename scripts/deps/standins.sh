#!/usr/bin/env bash
# Stand-ins for kubeadm/k3s (tests/): real etcd 3.4 members and etcdctl, network
# namespaces (iproute2, util-linux's unshare), keepalived (the assembly test's VIP),
# openssl for certificate inspection, procps; MariaDB (server and client) as the real external
# SQL datastore under the k3s stand-in (builder/lab/src/mariadb.rs starts its own servers).
set -euo pipefail
apt-get install -y --no-install-recommends etcd-server etcd-client iproute2 openssl procps \
  keepalived util-linux mariadb-server mariadb-client
# Debian's etcd-server enables a system etcd on 127.0.0.1:2379; the lab runs its own
# members inside namespaces, so the packaged service must not hold the port on the host.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now etcd >/dev/null 2>&1 || true
fi
# keepalived's and MariaDB's packaged services are not wanted on the host either (the lab
# runs its own).
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now keepalived >/dev/null 2>&1 || true
  systemctl disable --now mariadb >/dev/null 2>&1 || true
fi
