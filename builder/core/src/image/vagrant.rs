//! A Vagrant box for the libvirt provider: a tar of `metadata.json`, `Vagrantfile`, the
//! qcow2 as `box.img`, and the kernel and initrd the image boots with (it has no boot
//! loader: the box's Vagrantfile points libvirt's direct kernel boot at them).

use super::ImageError;
use super::files::io_err;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::Path;

pub const KERNEL_CMDLINE: &str = "root=/dev/vda rw console=ttyS0 net.ifnames=0";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub provider: String,
    pub format: String,
    /// In GiB, rounded up, as vagrant-libvirt reads it.
    pub virtual_size: u64,
}

pub fn metadata(virtual_bytes: u64) -> Metadata {
    Metadata {
        provider: "libvirt".into(),
        format: "qcow2".into(),
        virtual_size: virtual_bytes.div_ceil(1 << 30),
    }
}

/// The box's own Vagrantfile; `__dir__` is the unpacked box directory.
pub fn vagrantfile() -> String {
    format!(
        r#"# Written by muster image build: a muster node image without a boot loader.
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.disk_bus = "virtio"
    libvirt.kernel = File.join(__dir__, "vmlinuz")
    libvirt.initrd = File.join(__dir__, "initrd.img")
    libvirt.cmd_line = "{KERNEL_CMDLINE}"
  end
end
"#
    )
}

/// Writes the box tar (uncompressed: the qcow2 is what takes the room, and Vagrant reads
/// plain tar) to `out`. Entries in a fixed order with fixed owners and times.
pub fn write_box(
    out: &Path,
    qcow2: &Path,
    kernel: &Path,
    initrd: &Path,
    virtual_bytes: u64,
) -> Result<(), ImageError> {
    let step = "vagrant box";
    let file = File::create(out).map_err(io_err(step, out))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let meta = serde_json::to_vec_pretty(&metadata(virtual_bytes)).map_err(|e| ImageError::Io {
        step: step.into(),
        path: out.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    let mut small = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, name, data)
    };
    small("metadata.json", &meta).map_err(io_err(step, out))?;
    small("Vagrantfile", vagrantfile().as_bytes()).map_err(io_err(step, out))?;
    for (name, path) in [
        ("box.img", qcow2),
        ("vmlinuz", kernel),
        ("initrd.img", initrd),
    ] {
        let mut f = File::open(path).map_err(io_err(step, path))?;
        let mut h = tar::Header::new_gnu();
        h.set_size(f.metadata().map_err(io_err(step, path))?.len());
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, name, &mut f)
            .map_err(io_err(step, path))?;
    }
    let writer = tar.into_inner().map_err(io_err(step, out))?;
    writer
        .into_inner()
        .map_err(|e| io_err(step, out)(e.into_error()))?
        .sync_all()
        .map_err(io_err(step, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn box_layout_and_metadata() {
        let d = tempfile::tempdir().unwrap();
        let (q, k, i) = (d.path().join("q"), d.path().join("k"), d.path().join("i"));
        std::fs::write(&q, b"QFI\xfbqcow2-bytes").unwrap();
        std::fs::write(&k, b"kernel").unwrap();
        std::fs::write(&i, b"initrd").unwrap();
        let out = d.path().join("node.box");
        write_box(&out, &q, &k, &i, (2 << 30) + 1).unwrap();

        let mut names = Vec::new();
        let mut archive = tar::Archive::new(File::open(&out).unwrap());
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            match name.as_str() {
                "metadata.json" => {
                    let m: serde_json::Value = serde_json::from_slice(&data).unwrap();
                    assert_eq!(
                        m,
                        serde_json::json!({"provider": "libvirt", "format": "qcow2", "virtual_size": 3})
                    );
                }
                "Vagrantfile" => {
                    let text = String::from_utf8(data).unwrap();
                    assert!(text.contains("libvirt.kernel = File.join(__dir__, \"vmlinuz\")"));
                    assert!(text.contains("root=/dev/vda"));
                }
                "box.img" => assert_eq!(data, b"QFI\xfbqcow2-bytes"),
                _ => {}
            }
            names.push(name);
        }
        assert_eq!(
            names,
            [
                "metadata.json",
                "Vagrantfile",
                "box.img",
                "vmlinuz",
                "initrd.img"
            ]
        );
    }
}
