#!/bin/bash
# TEST IMAGE ONLY. `muster lab image --standins DIR` runs this after the shared node
# preparation (images/provision.sh); a user's image never gets it. It makes the image the
# VM end-to-end test boots (builder/tests/vm_cluster.rs):
#
#   chroot ROOTFS /bin/bash /tmp/test-image.sh STAGE_DIR NTP_SERVER [CLOUD_INIT]
#
# STAGE_DIR (inside the chroot) holds muster's STAND-INS for programs that cannot be
# downloaded on the test machines (built from tests/standins/src/bin; NOT kubeadm, k3s or
# kube-apiserver): apiserver-standin always; kubeadm-standin and k3s-standin only when the
# image has no distribution from the install path, then linked as /usr/bin/kubeadm,
# kubelet, kubectl, /usr/bin/k3s, /usr/bin/k3s-killall.sh (step 1); and in host-tools/ the
# build machine's etcd and etcdctl where the stand-ins need them.
# NTP_SERVER is the address chrony syncs with (the VM lab serves the host's clock there).
# CLOUD_INIT is trim-cloud-init (the default: cloud-init cut down to the seeds' modules,
# step 2b) or full-cloud-init (cloud-init left as the product image has it: the Vagrant box
# test checks every stage as a user's image runs it; `muster lab image --full-cloud-init`).
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

[ $# -eq 2 ] || [ $# -eq 3 ] || die "usage: test-image.sh STAGE_DIR NTP_SERVER [trim-cloud-init|full-cloud-init]"
stage=$1
ntp=$2
cloud_init=${3:-trim-cloud-init}
case $cloud_init in
trim-cloud-init | full-cloud-init) ;;
*) die "CLOUD_INIT must be trim-cloud-init or full-cloud-init, got $cloud_init" ;;
esac
[[ $ntp =~ ^[0-9a-fA-F.:]+$ ]] || die "NTP_SERVER must be an address, got $ntp"

# 1. The stand-ins copied in, under their own names, and the names the agent calls. An image
# whose distribution came through the user's install path (images/install-kubernetes.sh:
# the kubeadm stand-in inside the kubeadm package, or the k3s stand-in as the release's
# k3s) gets only apiserver-standin here; anything else gets all three, which then replace
# the distribution.
[ -x "$stage/apiserver-standin" ] || die "$stage/apiserver-standin is missing"
installed=()
for bin in kubeadm-standin k3s-standin apiserver-standin; do
  [ -x "$stage/$bin" ] || continue
  install -m 0755 "$stage/$bin" "/usr/bin/$bin"
  installed+=("$bin")
done
if [ -x "$stage/kubeadm-standin" ]; then
  ln -sf kubeadm-standin /usr/bin/kubeadm
  # The node's preflight wants kubeadm, kubelet and kubectl (and containerd) on a kubeadm
  # node (issue 13: an image built without Kubernetes must say so). In this image the
  # kubeadm stand-in plays the kubelet too (`kubeadm kubelet-sync`) and the agent never
  # calls kubectl: the two names point at it so the preflight sees the image as complete.
  ln -sf kubeadm-standin /usr/bin/kubelet
  ln -sf kubeadm-standin /usr/bin/kubectl
elif dpkg-query -W -f='${Status}' kubeadm 2>/dev/null | grep -q 'install ok installed'; then
  for bin in kubeadm kubelet kubectl; do
    [ -x "/usr/bin/$bin" ] || die "/usr/bin/$bin is not in the image (its package is installed)"
  done
  say "kubeadm, kubelet, kubectl from their packages (the install path): $(dpkg-query -W -f='${Package} ${Version}, ' kubeadm kubelet kubectl cri-tools kubernetes-cni)"
fi
if [ -x "$stage/k3s-standin" ]; then
  ln -sf k3s-standin /usr/bin/k3s
  ln -sf k3s-standin /usr/bin/k3s-killall.sh
  # Where muster's k3s units (units/k3s*.service) and install-kubernetes.sh put k3s.
  mkdir -p /usr/local/bin
  ln -sf /usr/bin/k3s-standin /usr/local/bin/k3s
elif [ -f /usr/local/bin/k3s ]; then
  # The release's k3s (the stand-in) from the install path; k3s's installer makes this.
  ln -sf /usr/local/bin/k3s /usr/bin/k3s-killall.sh
  say "k3s from the release files (the install path)"
fi
command -v kubeadm >/dev/null || command -v k3s >/dev/null ||
  die "neither kubeadm nor k3s is in the image (no install path and no stand-in)"
# The build machine's etcd and etcdctl (Debian's etcd-server and etcd-client there), copied
# rather than installed as packages so this image keeps the product image's base: the
# kubeadm and k3s stand-ins run etcd themselves (like kubeadm's static pod or k3s's
# embedded etcd would); the stand-ins, the reporter and this script use etcdctl.
if [ -d "$stage/host-tools" ]; then
  for tool in "$stage"/host-tools/*; do
    install -m 0755 "$tool" "/usr/bin/$(basename "$tool")"
    installed+=("$(basename "$tool") (the build machine's)")
  done
fi
command -v etcdctl >/dev/null || die "etcdctl (the build machine's, from Debian etcd-client) is not in the image"
say "stand-ins copied in: ${installed[*]} (muster test stand-ins)"

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

# 2b. First boot under emulation: every Python stage of cloud-init and every key costs
# seconds of the one vCPU, and the agent waits for cloud-init's network stage. The nodes'
# seeds (muster build) use hostname, users and write_files, nothing of the config stage;
# the final stage keeps its last line (the VM test reads `DataSourceNoCloud` there).
# With full-cloud-init the product image's cloud-init stays as it is.
if [ "$cloud_init" = full-cloud-init ]; then
  cloud_init_note="cloud-init as the product image has it (full-cloud-init)"
  say "cloud-init: left as the product image has it"
else
  cloud_init_note="cloud-init trimmed to the seeds' modules, cloud-config.service masked, one ed25519 ssh
host key (/etc/cloud/cloud.cfg.d/95-muster-test.cfg, ssh.service.d/ and sshd_config.d/muster-test.conf),
/usr/bin/cloud-init calling cloud-init's main() without the packaged wrapper's entry-point lookup (the
packaged one diverted to /usr/bin/cloud-init.distrib), systemd's generators other than fstab, getty and
cloud-init's masked (/etc/systemd/system-generators/), kernel modules a lab VM does not use
blacklisted (/etc/modprobe.d/muster-test.conf), an initrd with virtio's drivers only
(MODULES=list, /etc/initramfs-tools/)"
  mkdir -p /etc/cloud/cloud.cfg.d
  cat >/etc/cloud/cloud.cfg.d/95-muster-test.cfg <<'CFG'
# muster TEST IMAGE: only the modules the nodes' seeds use, one ssh host key type.
cloud_init_modules: [write-files, set_hostname, update_hostname, update_etc_hosts, users-groups, ssh]
cloud_config_modules: []
cloud_final_modules: [final-message]
ssh_genkeytypes: [ed25519]
CFG
  systemctl mask cloud-config.service
  # The packaged /usr/bin/cloud-init finds its entry point through importlib.metadata
  # (reading the installed distributions) before it imports it: one TCG guest alone spends
  # 14.2 s cold on `cloud-init --version` against 8.4 s on importing cloud-init's main, at
  # every stage's start. The same main(), called directly.
  if [ -f /usr/lib/python3/dist-packages/cloudinit/cmd/main.py ] &&
    ! dpkg-divert --list /usr/bin/cloud-init | grep -q .; then
    dpkg-divert --local --rename --divert /usr/bin/cloud-init.distrib --add /usr/bin/cloud-init
    cat >/usr/bin/cloud-init <<'PY'
#!/usr/bin/python3
# muster TEST IMAGE: cloud-init's own main(), without the packaged wrapper's entry-point
# lookup (the packaged script is /usr/bin/cloud-init.distrib).
import sys

from cloudinit.cmd.main import main

sys.exit(main())
PY
    chmod 0755 /usr/bin/cloud-init
  fi
  # provision.sh's drop-in makes every missing key type (ssh-keygen -A): cloud-init made
  # the one this image uses.
  if [ -f /etc/systemd/system/ssh.service.d/muster-host-keys.conf ]; then
    cat >/etc/systemd/system/ssh.service.d/muster-test.conf <<'CONF'
# muster TEST IMAGE: the ed25519 host key cloud-init made is the only one.
[Service]
ExecStartPre=
ExecStartPre=/usr/sbin/sshd -t
CONF
    mkdir -p /etc/ssh/sshd_config.d
    echo 'HostKey /etc/ssh/ssh_host_ed25519_key' >/etc/ssh/sshd_config.d/muster-test.conf
  fi
  say "cloud-init: init modules of the seeds only, config stage masked, ed25519 host key, main() without the entry-point lookup"
  # systemd runs every generator before it loads a unit; under emulation each one costs
  # about a second of the vCPU (generators took 12-15 s of the early boot in the five-VM
  # run). These have nothing to generate on a lab node (no crypttab, integritytab,
  # veritytab, resume device, GPT root, rc.local, system update, debug or run= options;
  # the only SysV script without a unit is hwclock.sh, which a VM does not need); the
  # fstab, getty and cloud-init generators stay.
  mkdir -p /etc/systemd/system-generators
  for g in systemd-cryptsetup-generator systemd-integritysetup-generator \
    systemd-veritysetup-generator systemd-hibernate-resume-generator \
    systemd-gpt-auto-generator systemd-rc-local-generator systemd-system-update-generator \
    systemd-debug-generator systemd-run-generator systemd-sysv-generator; do
    ln -sfn /dev/null "/etc/systemd/system-generators/$g"
  done
  say "systemd: generators with nothing to generate on a lab node masked"
  # udev loads a module for every modalias it matches; under emulation each load is a
  # modprobe, a relocation and the driver's registration (the crypto drivers the emulated
  # CPU's flags match register a dozen algorithms each; the lab's kernel command line
  # already skips their self-tests). A lab node uses none of these: the generic crypto is
  # built in, no EFI variables, keyboard, mouse, power button, fw_cfg files, device mapper
  # or loop devices. `blacklist` stops the loads by alias (udev's) and modprobe@'s by name
  # (`modprobe -b`).
  cat >/etc/modprobe.d/muster-test.conf <<'CONF'
# muster TEST IMAGE: modules a lab VM under emulation does not use.
blacklist aesni_intel
blacklist ghash_clmulni_intel
blacklist sha1_ssse3
blacklist sha256_ssse3
blacklist sha512_ssse3
blacklist crc32_pclmul
blacklist crct10dif_pclmul
blacklist efi_pstore
blacklist evdev
blacklist serio_raw
blacklist button
blacklist qemu_fw_cfg
blacklist dm_mod
blacklist loop
CONF
  say "modules: crypto drivers, input, efi_pstore, fw_cfg, dm_mod and loop blacklisted"
  # The lab boots the initrd directly. Debian's (MODULES=most, ~15 MB) makes the kernel
  # unpack ~50 MB and the initramfs's udev search every module there; a lab VM's root is a
  # virtio disk with ext4 (built into the kernel), so the initrd needs virtio's drivers only.
  # Nor does it need udev there: the initrd loads those two itself ("Loading essential
  # drivers", from /conf/modules) and devtmpfs makes /dev/vda; udev's coldplug of every
  # device in the initramfs took ~14 s of each of five guests. The two scripts of the same
  # name in /etc/initramfs-tools/scripts replace initramfs-tools' udev ones: nothing at the
  # start, and at the end only the move of /dev onto the root the init expects of them.
  sed -i 's/^MODULES=.*/MODULES=list/' /etc/initramfs-tools/initramfs.conf
  printf '%s\n' '# muster TEST IMAGE: the lab VM root disk' virtio_pci virtio_blk \
    >>/etc/initramfs-tools/modules
  mkdir -p /etc/initramfs-tools/scripts/init-top /etc/initramfs-tools/scripts/init-bottom
  cat >/etc/initramfs-tools/scripts/init-top/udev <<'SH'
#!/bin/sh
# muster TEST IMAGE: no udev in the initramfs (the root disk's drivers are in /conf/modules).
case "$1" in prereqs) exit 0 ;; esac
SH
  cat >/etc/initramfs-tools/scripts/init-bottom/udev <<'SH'
#!/bin/sh -e
# muster TEST IMAGE: no udev to stop; /dev moves onto the root as initramfs-tools' own does.
case "$1" in prereqs) exit 0 ;; esac
mount -n -o move /dev "${rootmnt:?}/dev" || mount -n --move /dev "${rootmnt}/dev"
if command -v nuke >/dev/null; then nuke /dev; else rm -rf /dev; fi
ln -s "${rootmnt}/dev" /dev
SH
  chmod 0755 /etc/initramfs-tools/scripts/init-top/udev /etc/initramfs-tools/scripts/init-bottom/udev
  for modules in /lib/modules/*; do
    version=${modules##*/}
    # (It warns that zstd is missing and uses gzip: the initrd is small now.)
    out=$(mkinitramfs -o "/boot/initrd.img-$version" "$version" 2>&1) ||
      die "mkinitramfs for $version failed: $out"
  done
  say "initrd: virtio's drivers only (MODULES=list), no udev"
fi

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
boot_cache=/run/muster-test/boot
contents_cache=/run/muster-test/contents
section() { printf '@@ %s\n' "$1"; }
# Boot timings for the test's per-cause breakdown, in the guest's monotonic seconds: the
# kernel's handover to the initramfs (dmesg), systemd's start, each unit on the way to
# the agent, and cloud-init's own start/finish events (durations from its log). Cached
# once the boot is over (cloud-final done); until then recomputed in each report.
boot_units="systemd-udev-trigger.service systemd-udev-settle.service
  cloud-init-local.service systemd-networkd.service systemd-networkd-wait-online.service
  cloud-init.service ssh.service containerd.service chrony.service nodeagent.service
  cloud-config.service cloud-final.service muster-test-report.service"
boot_times() {
  local kmsg
  kmsg=$(dmesg 2>/dev/null)
  section "boot kernel"
  grep -m1 -E 'Run /init as init process|Run /sbin/init as init process' <<<"$kmsg"
  # Which clock the guest keeps time with and how it calibrated it (the guest-seconds
  # figures are only as good as that clock).
  section "boot clock"
  grep -E 'tsc: |clocksource: (Switched|.*unstable)|clocksource: Long' <<<"$kmsg" | head -n 8
  section "boot manager"
  systemctl show -p UserspaceTimestampMonotonic -p FinishTimestampMonotonic \
    -p GeneratorsStartTimestampMonotonic -p GeneratorsFinishTimestampMonotonic \
    -p UnitsLoadStartTimestampMonotonic -p UnitsLoadFinishTimestampMonotonic 2>/dev/null
  section "boot units"
  # shellcheck disable=SC2086 # a list of unit names
  systemctl show -p Id -p InactiveExitTimestampMonotonic -p ActiveEnterTimestampMonotonic \
    -p ExecMainStartTimestampMonotonic -p LoadState $boot_units 2>/dev/null
  section "boot cloud-init"
  # "DATE HH:MM:SS,mmm - handlers.py[DEBUG]: start|finish: STAGE/EVENT: ..." -> "SECONDS NAME"
  awk '$4 == "handlers.py[DEBUG]:" && ($5 == "start:" || $5 == "finish:") {
    split($2, t, /[:,]/); s = t[1] * 3600 + t[2] * 60 + t[3] + t[4] / 1000
    n = $6; sub(/:$/, "", n)
    if ($5 == "start:") { st[n] = s } else if (n in st) {
      d = s - st[n]; if (d < 0) d += 86400; printf "%.3f %s\n", d, n; delete st[n] }
  }' /var/log/cloud-init.log 2>/dev/null
  # Each stage's first line names its guest uptime ("running 'init-local' at ... Up 75.33
  # seconds."): from the unit's start to there is Python starting and importing.
  section "boot cloud-init starts"
  sed -n -E "s/.*running '([^']+)' at .* Up ([0-9.]+) seconds.*/\1 \2/p" /var/log/cloud-init.log 2>/dev/null
  # The longest silences inside cloud-init's stages (not between them), with the lines
  # before and after each.
  section "boot cloud-init gaps"
  awk '$2 ~ /^[0-9][0-9]:[0-9][0-9]:[0-9][0-9],[0-9]+$/ {
    split($2, t, /[:,]/); s = t[1] * 3600 + t[2] * 60 + t[3] + t[4] / 1000
    if (seen && $0 !~ /running .* at .* Up [0-9.]+ seconds/) { d = s - p; if (d < 0) d += 86400
      if (d >= 1) printf "%.3f %s >>> %s\n", d, substr(prev, 27, 110), substr($0, 27, 110) }
    seen = 1; p = s; prev = $0
  }' /var/log/cloud-init.log 2>/dev/null | sort -rn | head -n 5
  # Where the guest's CPU went up to the agent's start (snapshot taken then, below).
  section "boot cpu"
  cat "$cpu_cache" 2>/dev/null
  section "boot ssh host keys"
  ls /etc/ssh/ssh_host_*_key 2>/dev/null
  journalctl -b -o cat --no-pager -u ssh.service -u cloud-init.service 2>/dev/null |
    grep -iE 'generating|key pair' | head -n 8
  if [ "$(systemctl show -p FinishTimestampMonotonic --value)" != 0 ]; then
    section "boot blame"
    systemd-analyze blame --no-pager 2>/dev/null | head -n 15
  fi
}
# The guest's CPU time when the reporter first sees the agent started: /proc/stat's total
# (busy against idle: is the boot waiting or computing?) and each unit's own (systemd
# keeps a finished unit's last figure), in guest seconds.
cpu_cache=/run/muster-test/cpu-at-agent
cpu_snapshot() {
  echo "uptime $(cut -d' ' -f1 /proc/uptime)"
  head -n 1 /proc/stat
  # PID 1's own user and system ticks (init.scope also holds the generators it ran), and
  # how often it reloaded (each reload runs every generator again).
  echo "pid1 $(cut -d' ' -f14,15 /proc/1/stat) reloads $(journalctl -b _PID=1 -o cat --no-pager 2>/dev/null | grep -c '^Reloading') modules $(wc -l </proc/modules)"
  echo "loaded $(cut -d' ' -f1 /proc/modules | sort | tr '\n' ' ')"
  systemctl show -p Id -p CPUUsageNSec '*.service' '*.scope' 2>/dev/null
  # The generators' run: cloud-init's ds-identify logs its uptime at its start and end.
  echo
  grep -h '^\[up ' /run/cloud-init/ds-identify.log 2>/dev/null | sed 's/^/ds-identify /'
}
mkdir -p "${boot_cache%/*}"
# A pause without a process: a read with a timeout on a FIFO nobody writes to.
mkfifo /run/muster-test/pause 2>/dev/null
exec 9<>/run/muster-test/pause
pause() { read -r -t "$1" -u 9 || :; }
# The first whole report comes at 8 minutes of uptime if the agent has not started by then
# (a boot that stalls is reported from then on, once a minute): a whole report runs dozens
# of processes, dpkg-query and ctr among them, which would take the vCPU from the boot.
read -r uptime _ </proc/uptime
next_full=$((SECONDS + 480 - ${uptime%%.*}))
while :; do
  agent_started=0 agent_status=
  # Until the agent starts the test reads nothing, and every process the reporter runs
  # takes the vCPU from the boot the test measures (guest CPU by unit: systemctl's calls
  # cost PID 1 as much as the reporter): so a look every 5 s with no process at all.
  # systemd makes a unit's cgroup as it starts the unit.
  if [ ! -d /sys/fs/cgroup/system.slice/nodeagent.service ] && [ "$SECONDS" -lt "$next_full" ]; then
    pause 5
    continue
  fi
  while IFS='=' read -r key value; do
    case $key in
      ExecMainStartTimestampMonotonic) agent_started=${value:-0} ;;
      StatusText) agent_status=$value ;;
    esac
  done <<<"$(systemctl show -p ExecMainStartTimestampMonotonic -p StatusText nodeagent.service 2>/dev/null)"
  next_full=$((SECONDS + 60))
  if [ "$agent_started" != 0 ] && [ ! -f "$cpu_cache" ]; then
    cpu_snapshot >"$cpu_cache.new" && mv "$cpu_cache.new" "$cpu_cache"
  fi
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
    if [ -f "$boot_cache" ]; then
      cat "$boot_cache"
    elif [ "${agent_started:-0}" != 0 ]; then
      times=$(boot_times)
      printf '%s\n' "$times"
      if [ "$(systemctl show -p ActiveEnterTimestampMonotonic --value cloud-final.service)" != 0 ] &&
        [[ $times == *"@@ boot blame"* ]]; then
        printf '%s\n' "$times" >"$boot_cache"
      fi
    fi
    # What the install path put into the image, as the booted node has it (once containerd
    # runs; then cached): the Kubernetes packages, the holds, the pre-pulled images.
    if [ ! -f "$contents_cache" ] && systemctl -q is-active containerd.service; then
      {
        section "packages"
        dpkg-query -W -f='${Package} ${Version}\n' kubeadm kubelet kubectl cri-tools kubernetes-cni 2>/dev/null
        section "held"
        apt-mark showhold 2>/dev/null
        section "prepulled images"
        ctr -n k8s.io images ls -q 2>/dev/null | grep -v '^sha256:' || true
      } >"$contents_cache.new" && mv "$contents_cache.new" "$contents_cache"
    fi
    cat "$contents_cache" 2>/dev/null
    # Until the agent has started there is nothing more to ask, and the vCPU is busy booting.
    if [ "${agent_started:-0}" != 0 ]; then
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
      journalctl -u nodeagent.service -o short-monotonic --no-pager 2>/dev/null |
        grep -E 'WARN|ERROR|preflight|Started' | tail -n 20
    fi
    echo "=== MUSTER-TEST-REPORT END"
  )
  printf '%s\n' "$block" >"$port"
  # While the node assembles, every ~10 s (the reports compete with etcd and the joins for
  # the one vCPU); once this node is done the test waits on fresh reports, so every ~2 s.
  if [ "$agent_status" = "done" ]; then pause 2; else pause 10; fi
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

STAND-INS (muster's test programs, NOT the real ones; tests/standins/src/bin), copied in
by this step: ${installed[*]}
  kubeadm-standin   stands in for kubeadm (and the kubelet's static pods); when the kubeadm
                    package is installed (dpkg -l kubeadm), it came through the install path
                    (images/install-kubernetes.sh, a signed apt repository) as /usr/bin/kubeadm
                    and this step did not copy it; else /usr/bin/kubeadm, kubelet and kubectl
                    link to it
  k3s-standin       stands in for k3s (/usr/local/bin/k3s from the release files, or linked)
  apiserver-standin stands in for kube-apiserver
Real, from Debian: etcd and etcdctl (the build machine's binaries, copied in by this step:
/usr/bin/etcd, /usr/bin/etcdctl), containerd, chrony, keepalived/haproxy/nginx when the
spec needs them, systemd, cloud-init, and muster's nodeagent from the payload.
/usr/lib/muster-test/kube-vip-standin (kube-vip specs only) stands in for kube-vip: keepalived
  floats the VIP on the control planes (kube-vip-standin.path/.service), no kubelet here.
Test-only: /usr/lib/muster-test/report (muster-test-report.service, writes to ttyS1: the
node's state, and once what the install path put in: packages, holds, pre-pulled images);
$cloud_init_note;
chrony source $ntp (/etc/chrony/sources.d/muster-test.sources); for TCG: NODEAGENT_STEP_TIMEOUT=900,
etcd's heartbeat 500 ms and election timeout 5 s, the API stand-ins' etcd wait 8 s
(/etc/systemd/system/{nodeagent,k3s}.service.d/muster-test.conf).
DOC
say "manifest: /usr/share/doc/muster/TEST-IMAGE"
