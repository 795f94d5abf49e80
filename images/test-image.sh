#!/bin/bash
# TEST IMAGE ONLY. `muster lab image --standins DIR` runs this after the shared node
# preparation (images/provision.sh); a user's image never gets it. It makes the image the
# VM end-to-end test boots (builder/tests/vm_cluster.rs):
#
#   chroot ROOTFS /bin/bash /tmp/test-image.sh STAGE_DIR NTP_SERVER
#
# STAGE_DIR (inside the chroot) holds muster's STAND-INS for programs that cannot be
# downloaded on the test machines: kubeadm-standin, k3s-standin, apiserver-standin (built
# from tests/standins/src/bin; NOT kubeadm, k3s or kube-apiserver). They are installed under their
# own names and linked as /usr/bin/kubeadm, /usr/bin/k3s, /usr/bin/k3s-killall.sh.
# NTP_SERVER is the address chrony syncs with (the VM lab serves the host's clock there).
# Also installed: a reporter that writes this node's state to the second serial port
# (ttyS1) for the test to read from outside. Everything is listed in
# /usr/share/doc/muster/TEST-IMAGE.
set -euo pipefail
umask 022
export LC_ALL=C

say() { printf 'test-image: %s\n' "$*" >&2; }
die() {
  printf 'test-image: error: %s\n' "$*" >&2
  exit 1
}

[ $# -eq 2 ] || die "usage: test-image.sh STAGE_DIR NTP_SERVER"
stage=$1
ntp=$2
[[ $ntp =~ ^[0-9a-fA-F.:]+$ ]] || die "NTP_SERVER must be an address, got $ntp"

# 1. The stand-ins, under their own names, and the names the agent calls.
for bin in kubeadm-standin k3s-standin apiserver-standin; do
  [ -x "$stage/$bin" ] || die "$stage/$bin is missing"
  install -m 0755 "$stage/$bin" "/usr/bin/$bin"
done
ln -sf kubeadm-standin /usr/bin/kubeadm
ln -sf k3s-standin /usr/bin/k3s
ln -sf k3s-standin /usr/bin/k3s-killall.sh
# Where muster's k3s units (units/k3s*.service) and install-kubernetes.sh put k3s.
mkdir -p /usr/local/bin
ln -sf /usr/bin/k3s-standin /usr/local/bin/k3s
# The kubeadm stand-in runs Debian's etcd itself (like kubeadm's static pod would).
command -v etcd >/dev/null || die "etcd (Debian etcd-server) is not in the image"
command -v etcdctl >/dev/null || die "etcdctl (Debian etcd-client) is not in the image"
say "stand-ins installed: kubeadm, k3s, apiserver (muster test stand-ins)"

# Software emulation (TCG) is slow, and the etcd members and API stand-ins inherit the
# environment of the unit that starts them (nodeagent.service runs kubeadm, k3s.service the
# k3s server). etcd reads ETCD_* like its flags: three members on emulated vCPUs missed the
# default 100 ms heartbeats and kept electing leaders ("etcdserver: leader changed"), so
# they get etcd's slow-host tuning; the API stand-ins wait 8 s for etcd instead of 3 s.
tcg_env='Environment=ETCD_HEARTBEAT_INTERVAL=500 ETCD_ELECTION_TIMEOUT=5000
Environment=MUSTER_STANDIN_ETCD_TIMEOUT_SECS=8'
# A stand-in's `kubeadm init` has taken more than the agent's default 240 s step timeout
# (it would be abandoned and retried for ever).
mkdir -p /etc/systemd/system/nodeagent.service.d /etc/systemd/system/k3s.service.d
cat >/etc/systemd/system/nodeagent.service.d/muster-test.conf <<UNIT
# muster TEST IMAGE: TCG is slow.
[Service]
Environment=NODEAGENT_STEP_TIMEOUT=900
$tcg_env
UNIT
cat >/etc/systemd/system/k3s.service.d/muster-test.conf <<UNIT
# muster TEST IMAGE: TCG is slow.
[Service]
$tcg_env
UNIT

# 1b. The kube-vip stand-in (specs with ha.provider kube-vip only). kube-vip is a static pod
# and this image has no kubelet: keepalived floats the VIP on the control planes instead,
# with configs muster rendered per control plane (as the namespace lab does). Like the
# kubelet starting the static pod, a path unit starts it once kube-vip's manifest is where
# the agent puts it.
if [ -d "$stage/kube-vip" ]; then
  command -v keepalived >/dev/null || die "keepalived is not in the image (kube-vip stand-in)"
  kv=/usr/lib/muster-test/kube-vip-standin
  mkdir -p "$kv"
  install -m 0755 "$stage/kube-vip/check_apiserver.sh" "$kv/check_apiserver.sh"
  for conf in "$stage"/kube-vip/*.conf; do
    install -m 0644 "$conf" "$kv/"
  done
  cat >"$kv/run" <<'SCRIPT'
#!/bin/bash
# muster TEST IMAGE: the kube-vip stand-in. keepalived with this control plane's config.
set -eu
node=$(hostname -s)
conf=/usr/lib/muster-test/kube-vip-standin/$node.conf
[ -f "$conf" ] || { echo "kube-vip stand-in: no config for $node (not a control plane)"; exit 0; }
exec /usr/sbin/keepalived -n -l -D -f "$conf"
SCRIPT
  chmod 0755 "$kv/run"
  cat >/etc/systemd/system/kube-vip-standin.path <<'UNIT'
[Unit]
Description=muster TEST IMAGE: start the kube-vip stand-in once kube-vip's manifest is in place

[Path]
PathExists=/etc/kubernetes/manifests/kube-vip.yaml
PathExists=/var/lib/rancher/k3s/agent/pod-manifests/kube-vip.yaml

[Install]
WantedBy=multi-user.target
UNIT
  cat >/etc/systemd/system/kube-vip-standin.service <<'UNIT'
[Unit]
Description=muster TEST IMAGE: kube-vip stand-in (keepalived floats the VIP kube-vip would)
After=network-online.target

[Service]
ExecStart=/usr/lib/muster-test/kube-vip-standin/run
Restart=always
RestartSec=2s
UNIT
  systemctl enable kube-vip-standin.path
  confs=("$stage"/kube-vip/*.conf)
  say "kube-vip stand-in: keepalived for ${#confs[@]} control planes"
fi

# 2. Time: chrony syncs with the lab's NTP server (the default pool is unreachable there).
mkdir -p /etc/chrony/sources.d
cat >/etc/chrony/sources.d/muster-test.sources <<CONF
# muster TEST IMAGE: the VM lab serves the host's clock here.
server $ntp iburst minpoll 2 maxpoll 4
CONF
say "chrony: server $ntp"

# 3. The reporter: this node's state on ttyS1, every few seconds.
mkdir -p /usr/lib/muster-test
cat >/usr/lib/muster-test/report <<'SCRIPT'
#!/bin/bash
# muster TEST IMAGE reporter: writes this node's state to /dev/ttyS1 (a serial port only
# the VM test reads), as blocks between BEGIN and END lines.
set -u
port=/dev/ttyS1
pki=/etc/kubernetes/pki
k3s_etcd=/var/lib/rancher/k3s/server/tls/etcd
section() { printf '@@ %s\n' "$1"; }
while :; do
  block=$(
    echo "=== MUSTER-TEST-REPORT BEGIN $(hostname) $(cut -d' ' -f1 /proc/uptime)"
    section identity
    cat /etc/muster/node.json 2>/dev/null | tr -d '\n'
    echo
    section addresses
    ip -4 -o addr show 2>/dev/null
    for u in nodeagent.service keepalived.service kube-vip-standin.service \
      containerd.service chrony.service k3s.service k3s-agent.service; do
      section "unit $u"
      systemctl show "$u" -p Type -p ActiveState -p SubState -p UnitFileState \
        -p NotifyAccess -p NRestarts -p StatusText -p MainPID 2>/dev/null
    done
    section "time"
    timedatectl show -p NTPSynchronized 2>/dev/null
    section "nodeagent status"
    # TCG is slow: give the rendezvous and etcd more than the default 3 s.
    nodeagent status --json --timeout 15 2>/dev/null
    if [ -f "$pki/etcd/healthcheck-client.crt" ]; then
      section "etcd members"
      ETCDCTL_API=3 timeout 10 etcdctl --endpoints=https://127.0.0.1:2379 \
        --cacert="$pki/etcd/ca.crt" --cert="$pki/etcd/healthcheck-client.crt" \
        --key="$pki/etcd/healthcheck-client.key" member list -w json 2>&1
    fi
    # The k3s stand-in's embedded member (Debian's etcd) has its certificates where k3s's are.
    if [ -f "$k3s_etcd/server-client.crt" ]; then
      section "etcd members"
      ETCDCTL_API=3 timeout 10 etcdctl --endpoints=https://127.0.0.1:2379 \
        --cacert="$k3s_etcd/server-ca.crt" --cert="$k3s_etcd/server-client.crt" \
        --key="$k3s_etcd/server-client.key" member list -w json 2>&1
    fi
    section "kubeadm commands"
    cat /var/lib/muster-standin/commands.log 2>/dev/null
    section "k3s journal"
    journalctl -u k3s.service -u k3s-agent.service -o cat --no-pager 2>/dev/null | tail -n 20
    section "keepalived journal"
    journalctl -u keepalived.service -u kube-vip-standin.service -o cat --no-pager 2>/dev/null |
      grep -E 'Entering|VRRP_Script|removing|Netlink' | tail -n 8
    section "agent journal"
    journalctl -u nodeagent.service -o cat --no-pager 2>/dev/null |
      grep -E 'WARN|ERROR|preflight' | tail -n 20
    echo "=== MUSTER-TEST-REPORT END"
  )
  printf '%s\n' "$block" >"$port"
  sleep 10
done
SCRIPT
chmod 0755 /usr/lib/muster-test/report
cat >/etc/systemd/system/muster-test-report.service <<'UNIT'
[Unit]
Description=muster TEST IMAGE reporter: node state on ttyS1 for the VM test
After=systemd-networkd.service

[Service]
ExecStart=/usr/lib/muster-test/report
Restart=always
RestartSec=2s
Nice=10

[Install]
WantedBy=multi-user.target
UNIT
systemctl enable muster-test-report.service
say "reporter on ttyS1 enabled"

# 4. The manifest: what in this image is a stand-in or test-only.
mkdir -p /usr/share/doc/muster
cat >/usr/share/doc/muster/TEST-IMAGE <<DOC
muster TEST IMAGE (muster lab image): not for clusters.

STAND-INS (muster's test programs, NOT the real ones; tests/standins/src/bin):
  /usr/bin/kubeadm -> kubeadm-standin   stands in for kubeadm (and the kubelet's static pods)
  /usr/bin/k3s -> k3s-standin           stands in for k3s
  /usr/bin/k3s-killall.sh -> k3s-standin
  /usr/bin/apiserver-standin            stands in for kube-apiserver
Real, from Debian: etcd, etcdctl, containerd, chrony, keepalived/haproxy/nginx when the
spec needs them, systemd, cloud-init, and muster's nodeagent from the payload.
/usr/lib/muster-test/kube-vip-standin (kube-vip specs only) stands in for kube-vip: keepalived
  floats the VIP on the control planes (kube-vip-standin.path/.service), no kubelet here.
Test-only: /usr/lib/muster-test/report (muster-test-report.service, writes to ttyS1);
chrony source $ntp (/etc/chrony/sources.d/muster-test.sources); for TCG: NODEAGENT_STEP_TIMEOUT=900,
etcd's heartbeat 500 ms and election timeout 5 s, the API stand-ins' etcd wait 8 s
(/etc/systemd/system/{nodeagent,k3s}.service.d/muster-test.conf).
DOC
say "manifest: /usr/share/doc/muster/TEST-IMAGE"
