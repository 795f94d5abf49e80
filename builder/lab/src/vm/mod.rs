//! Running node images under QEMU: which accelerator works on this host, and the direct
//! kernel boot command line. Shared by the image test and the VM lab.

pub mod accel;
pub mod cluster;
pub mod ntp;
pub mod report;

use accel::Accel;
use std::path::PathBuf;
use std::process::Command;

/// One VM booted straight into the image's kernel (the image has no boot loader).
#[derive(Debug, Clone)]
pub struct DirectBoot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    /// The node's disk (usually a qcow2 overlay on the image).
    pub disk: PathBuf,
    /// The NoCloud seed volume (raw VFAT or ISO), attached read-only as the second disk.
    pub seed: Option<PathBuf>,
    /// A tap device (in the caller's namespace) and the NIC's MAC.
    pub tap: Option<(String, String)>,
    pub cpus: u32,
    pub memory_mib: u64,
    pub serial_log: PathBuf,
    /// A second serial port (ttyS1) to a file: where a test image's reporter writes.
    pub report_log: Option<PathBuf>,
}

impl DirectBoot {
    /// The `qemu-system-x86_64` command; the caller spawns it (in a namespace if need be)
    /// and keeps the child to stop it.
    pub fn command(&self, accel: Accel) -> Command {
        let mut c = Command::new("qemu-system-x86_64");
        c.args(accel.qemu_args())
            .args([
                "-smp",
                &self.cpus.to_string(),
                "-m",
                &self.memory_mib.to_string(),
            ])
            .args(["-nodefaults", "-display", "none", "-no-reboot"])
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .args(["-append", &self.cmdline])
            .arg("-drive")
            .arg(format!(
                "file={},if=virtio,format=qcow2",
                self.disk.display()
            ));
        if let Some(seed) = &self.seed {
            c.arg("-drive").arg(format!(
                "file={},if=virtio,format=raw,readonly=on",
                seed.display()
            ));
        }
        match &self.tap {
            Some((tap, mac)) => {
                c.args([
                    "-netdev",
                    &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
                    "-device",
                    &format!("virtio-net-pci,netdev=n0,mac={mac}"),
                ]);
            }
            None => {
                c.args(["-nic", "none"]);
            }
        }
        c.arg("-serial")
            .arg(format!("file:{}", self.serial_log.display()));
        if let Some(r) = &self.report_log {
            c.arg("-serial").arg(format!("file:{}", r.display()));
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_boot_command() {
        let vm = DirectBoot {
            kernel: "k".into(),
            initrd: "i".into(),
            cmdline: "root=/dev/vda rw".into(),
            disk: "n.qcow2".into(),
            seed: Some("seed.vfat".into()),
            tap: Some(("tap0".into(), "52:54:00:00:00:01".into())),
            cpus: 1,
            memory_mib: 512,
            serial_log: "s.log".into(),
            report_log: Some("r.log".into()),
        };
        let c = vm.command(Accel::Tcg);
        let args: Vec<_> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let line = args.join(" ");
        assert!(line.starts_with("-machine q35,accel=tcg -cpu max -smp 1 -m 512"));
        assert!(line.contains("-kernel k -initrd i -append root=/dev/vda rw"));
        assert!(line.contains("-drive file=n.qcow2,if=virtio,format=qcow2"));
        assert!(line.contains("-drive file=seed.vfat,if=virtio,format=raw,readonly=on"));
        assert!(line.contains("tap,id=n0,ifname=tap0,script=no,downscript=no"));
        assert!(line.ends_with("-serial file:s.log -serial file:r.log"));
    }
}
