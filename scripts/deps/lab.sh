#!/usr/bin/env bash
# `muster lab`: the load balancers a spec may ask for (HAProxy, nginx with the stream
# module); etcd, keepalived and the namespace tools come with standins.sh.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends haproxy nginx-light libnginx-mod-stream >/dev/null
# The lab runs its own instances inside namespaces; the packaged services stay off the host.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  for svc in haproxy nginx; do
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  done
fi
