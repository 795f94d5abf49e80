//! Which QEMU accelerator really runs guests here. `/dev/kvm` existing proves nothing (on
//! these build machines it is a nested hypervisor that aborts or hangs a stock kernel), so
//! the probe boots the kernel for real under KVM with `rdinit=/bin/false panic=-1` and a
//! short time box, and takes KVM only if the kernel's panic text reaches the serial port.

use serde::Serialize;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn qemu_args(self) -> [&'static str; 4] {
        match self {
            Accel::Kvm => ["-machine", "q35,accel=kvm", "-cpu", "host"],
            Accel::Tcg => ["-machine", "q35,accel=tcg", "-cpu", "max"],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Probe {
    pub accel: Accel,
    /// Why: what the KVM boot showed, or why it was not tried.
    pub reason: String,
    pub seconds: f64,
}

/// The text a kernel prints when it panics; the probe's proof that the guest ran.
pub const PANIC_MARKER: &str = "Kernel panic";

/// Boots `kernel` (and `initrd`) under KVM for at most `timebox`; KVM if it panicked as
/// asked, TCG otherwise. Never fails: any trouble means TCG, with the reason.
// Long on purpose: one boot attempt read top to bottom, each early return saying why it
// fell back to TCG; the steps share the child process and its serial file.
pub fn probe(kernel: &Path, initrd: Option<&Path>, timebox: Duration) -> Probe {
    let started = Instant::now();
    let done = |accel, reason: String| Probe {
        accel,
        reason,
        seconds: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    };
    if !Path::new("/dev/kvm").exists() {
        return done(Accel::Tcg, "no /dev/kvm".into());
    }
    let serial = match tempfile::NamedTempFile::new() {
        Ok(f) => f,
        Err(e) => return done(Accel::Tcg, format!("no temp file for the serial log: {e}")),
    };
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(Accel::Kvm.qemu_args())
        .args([
            "-m",
            "256",
            "-smp",
            "1",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-nic", "none"])
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", "console=ttyS0 rdinit=/bin/false panic=-1"])
        .arg("-serial")
        .arg(format!("file:{}", serial.path().display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(i) = initrd {
        cmd.arg("-initrd").arg(i);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return done(Accel::Tcg, format!("cannot run qemu-system-x86_64: {e}")),
    };
    let panicked = || {
        std::fs::read(serial.path())
            .map(|b| String::from_utf8_lossy(&b).contains(PANIC_MARKER))
            .unwrap_or(false)
    };
    loop {
        if panicked() {
            let _ = child.kill();
            let _ = child.wait();
            return done(
                Accel::Kvm,
                "the kernel booted under KVM and panicked as asked".into(),
            );
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                // qemu exits on the panic (-no-reboot): look once more for the text.
                if panicked() {
                    return done(
                        Accel::Kvm,
                        "the kernel booted under KVM and panicked as asked".into(),
                    );
                }
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                let first = err.lines().next().unwrap_or("").trim().to_string();
                return done(
                    Accel::Tcg,
                    format!("KVM guest exited ({status}) without booting: {first}"),
                );
            }
            Ok(None) => {}
            Err(e) => return done(Accel::Tcg, format!("waiting for the KVM probe: {e}")),
        }
        if started.elapsed() >= timebox {
            let _ = child.kill();
            let _ = child.wait();
            return done(
                Accel::Tcg,
                format!("no kernel output under KVM within {}s", timebox.as_secs()),
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_that_cannot_boot_means_tcg_with_a_reason() {
        let p = probe(
            Path::new("/nonexistent/vmlinuz"),
            None,
            Duration::from_secs(5),
        );
        assert_eq!(p.accel, Accel::Tcg);
        assert!(!p.reason.is_empty());
        assert_eq!(
            Accel::Tcg.qemu_args(),
            ["-machine", "q35,accel=tcg", "-cpu", "max"]
        );
    }
}
