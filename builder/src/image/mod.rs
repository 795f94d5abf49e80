//! `muster image build`: a node image made directly, without Packer. A Debian base from
//! debootstrap (cached by its package list), the agent payload installed by the shared
//! `images/provision.sh`, a whole-disk ext4 in qcow2 with its kernel and initrd beside it,
//! and a Vagrant box for libvirt. Everything runs as root on the build host with chroot;
//! nothing is booted and nothing is mounted.

pub mod base;
pub mod customise;
pub mod disk;
pub mod files;
pub mod packages;
pub mod payload;
pub mod run;
pub mod vagrant;

use crate::render::FileSet;
use crate::spec_source::LoadedSpec;
use files::{io_err, place, staging};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Names of the outputs in `--out DIR`.
pub const QCOW2: &str = "node.qcow2";
pub const KERNEL: &str = "vmlinuz";
pub const INITRD: &str = "initrd.img";
pub const BOX: &str = "node-libvirt.box";
pub const SUMS: &str = "SHA256SUMS";
pub const REPORT: &str = "image.json";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{step}: cannot run {program}")]
    Spawn {
        step: String,
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{step}: `{command}` failed ({status}); its last output:\n{tail}")]
    Failed {
        step: String,
        command: String,
        status: String,
        tail: String,
    },
    #[error("{step}: {}", path.display())]
    Io {
        step: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("payload {}: {problem}", path.display())]
    Payload { path: PathBuf, problem: String },
    #[error("{step}: {what} not found")]
    Missing { step: String, what: String },
    #[error("{step}: {what}; refusing to make a shared image of it")]
    Unclean { step: String, what: String },
    #[error("image build needs root (debootstrap and chroot); run it with sudo")]
    NotRoot,
    #[error(
        "`{tool}` is not installed (Debian package {package}; scripts/deps/vm-images.sh installs it)"
    )]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub spec: LoadedSpec,
    pub out: PathBuf,
    pub payload: Option<PathBuf>,
    pub cache: PathBuf,
    pub disk_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepTiming {
    pub step: String,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseReport {
    pub key: String,
    pub cached: bool,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArtifactReport {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// What `--json` prints and `DIR/image.json` keeps.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReport {
    pub spec: String,
    pub cluster: String,
    pub distribution: String,
    pub kubernetes_version: String,
    pub vip_provider: String,
    pub suite: String,
    pub mirror: String,
    pub packages: Vec<String>,
    /// What the image should have but this offline build could not install.
    pub left_out: Vec<packages::LeftOut>,
    pub base: BaseReport,
    /// `None` when built without `--payload` (no agent in the image).
    pub payload: Option<payload::PayloadInfo>,
    pub kernel_version: String,
    pub kernel_cmdline: String,
    pub virtual_size_bytes: u64,
    pub artifacts: Vec<ArtifactReport>,
    pub steps: Vec<StepTiming>,
    pub total_seconds: f64,
}

/// `$XDG_CACHE_HOME/muster/image`, else `~/.cache/muster/image`.
pub fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("muster/image")
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn check_host(need_debootstrap: bool) -> Result<(), ImageError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(ImageError::NotRoot);
    }
    let mut tools = vec![
        ("chroot", "coreutils"),
        ("mkfs.ext4", "e2fsprogs"),
        ("debugfs", "e2fsprogs"),
        ("qemu-img", "qemu-utils"),
    ];
    if need_debootstrap {
        tools.push(("debootstrap", "debootstrap"));
    }
    for (tool, package) in tools {
        if !on_path(tool) {
            return Err(ImageError::MissingTool { tool, package });
        }
    }
    Ok(())
}

/// Removes the build's scratch directory however the build ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = files::remove_tree(&self.0) {
            tracing::warn!("leaving scratch {}: {e}", self.0.display());
        }
    }
}

pub fn build(opts: &BuildOptions) -> Result<ImageReport, ImageError> {
    // debootstrap wants an absolute --cache-dir.
    std::fs::create_dir_all(&opts.cache).map_err(io_err("making cache dir", &opts.cache))?;
    let cache = opts
        .cache
        .canonicalize()
        .map_err(io_err("making cache dir", &opts.cache))?;
    let opts = &BuildOptions {
        cache,
        ..opts.clone()
    };
    let cluster = &opts.spec.cluster;
    let selection = packages::select(cluster);
    let cached_base = base::cached(&opts.cache, &selection);
    check_host(cached_base.is_none())?;

    for l in &selection.left_out {
        eprintln!(
            "left out (not reachable offline): {} — from {}",
            l.what, l.source
        );
    }
    let mut progress = run::Progress::new(12);
    let scratch = Scratch(opts.cache.join("work").join(std::process::id().to_string()));
    std::fs::create_dir_all(&scratch.0).map_err(io_err("making scratch dir", &scratch.0))?;
    std::fs::create_dir_all(&opts.out).map_err(io_err("making output dir", &opts.out))?;
    let work = scratch.0.as_path();

    let payload_info = progress.step("checking the payload", || match &opts.payload {
        Some(p) => payload::inspect(p).map(Some),
        None => {
            eprintln!("    no --payload: the image gets no agent (an empty payload)");
            Ok(None)
        }
    })?;
    let payload_path = match &opts.payload {
        Some(p) => p.clone(),
        None => {
            let p = work.join("empty-payload.tar.gz");
            let bytes = payload::pack(&FileSet::default()).map_err(io_err("empty payload", &p))?;
            std::fs::write(&p, bytes).map_err(io_err("empty payload", &p))?;
            p
        }
    };

    let base = match cached_base {
        Some(b) => progress.step(&format!("base rootfs {} (cached)", b.key), || Ok(b))?,
        None => progress.step(
            &format!(
                "debootstrap {} base ({} packages, .debs cached in {})",
                packages::SUITE,
                selection.packages.len(),
                opts.cache.join("debs").display()
            ),
            || base::make(&opts.cache, &selection),
        )?,
    };

    let rootfs = work.join("rootfs");
    progress.step("copying the base rootfs", || base::copy_to(&base, &rootfs))?;
    let disabled = packages::disabled_services(&selection);
    progress.step("image-specific steps (images/image-build.sh)", || {
        customise::image_steps(&rootfs, &disabled)
    })?;
    progress.step("node preparation (images/provision.sh PAYLOAD)", || {
        customise::provision(&rootfs, &payload_path)
    })?;
    let (kernel, initrd) = (opts.out.join(KERNEL), opts.out.join(INITRD));
    let kernel_version = progress.step("extracting kernel and initrd", || {
        let v = customise::extract_boot(&rootfs, &staging(&kernel), &staging(&initrd))?;
        place(&staging(&kernel), &kernel)?;
        place(&staging(&initrd), &initrd)?;
        Ok(v)
    })?;
    progress.step("checking the rootfs (sysprep, no secrets)", || {
        customise::check_clean(&rootfs)
    })?;
    let raw = work.join("node.raw");
    progress.step("mkfs.ext4 -d (no mounts)", || {
        disk::mkfs_ext4(&rootfs, &raw, opts.disk_bytes)?;
        files::remove_tree(&rootfs)
    })?;
    progress.step("checking the disk with debugfs", || {
        for rel in payload::FORBIDDEN {
            if disk::read_file(&raw, &format!("/{rel}"))?.is_some() {
                return Err(ImageError::Unclean {
                    step: "checking the disk".into(),
                    what: format!("/{rel} is in the disk"),
                });
            }
        }
        Ok(())
    })?;
    let qcow2 = opts.out.join(QCOW2);
    progress.step("qemu-img convert to qcow2", || {
        disk::to_qcow2(&raw, &staging(&qcow2))?;
        place(&staging(&qcow2), &qcow2)
    })?;
    let vbox = opts.out.join(BOX);
    progress.step("vagrant box (libvirt)", || {
        vagrant::write_box(&staging(&vbox), &qcow2, &kernel, &initrd, opts.disk_bytes)?;
        place(&staging(&vbox), &vbox)
    })?;
    let artifacts = progress.step("SHA256SUMS", || {
        let mut artifacts = Vec::new();
        for name in [QCOW2, KERNEL, INITRD, BOX] {
            let path = opts.out.join(name);
            artifacts.push(ArtifactReport {
                name: name.to_string(),
                bytes: std::fs::metadata(&path)
                    .map_err(io_err("SHA256SUMS", &path))?
                    .len(),
                sha256: files::sha256_file(&path)?,
            });
        }
        let entries: Vec<_> = artifacts
            .iter()
            .map(|a| (a.name.clone(), a.sha256.clone()))
            .collect();
        files::atomic_write(&opts.out.join(SUMS), files::sums_text(&entries).as_bytes())?;
        Ok(artifacts)
    })?;
    drop(scratch);

    let report = ImageReport {
        spec: opts.spec.origin.clone(),
        cluster: cluster.name.to_string(),
        distribution: format!("{:?}", cluster.distribution.kind).to_lowercase(),
        kubernetes_version: cluster.distribution.version.to_string(),
        vip_provider: cluster.ha.provider.as_str().to_string(),
        suite: packages::SUITE.into(),
        mirror: packages::MIRROR.into(),
        packages: selection.packages.clone(),
        left_out: selection.left_out.clone(),
        base: BaseReport {
            key: base.key.clone(),
            cached: base.cached,
            path: base.rootfs.display().to_string(),
        },
        payload: payload_info,
        kernel_version,
        kernel_cmdline: vagrant::KERNEL_CMDLINE.into(),
        virtual_size_bytes: opts.disk_bytes,
        artifacts,
        total_seconds: progress.elapsed(),
        steps: progress.timings,
    };
    let json = serde_json::to_vec_pretty(&report).map_err(|e| ImageError::Io {
        step: "writing the report".into(),
        path: opts.out.join(REPORT),
        source: std::io::Error::other(e),
    })?;
    files::atomic_write(&opts.out.join(REPORT), &json)?;
    Ok(report)
}

/// The human summary `muster image build` prints without `--json`.
pub fn summary(report: &ImageReport, out: &Path) -> String {
    let mut s = format!(
        "built {} node image for {} ({} {}) in {:.1}s, base {}\n",
        report.suite,
        report.cluster,
        report.distribution,
        report.kubernetes_version,
        report.total_seconds,
        if report.base.cached {
            "from cache"
        } else {
            "debootstrapped"
        },
    );
    for a in &report.artifacts {
        s.push_str(&format!(
            "  {:<18} {:>6} MiB  {}\n",
            a.name,
            a.bytes >> 20,
            out.join(&a.name).display()
        ));
    }
    match &report.payload {
        Some(p) => s.push_str(&format!("payload: {} ({} files)\n", p.path, p.files.len())),
        None => s.push_str("payload: none (no agent in the image)\n"),
    }
    for l in &report.left_out {
        s.push_str(&format!("LEFT OUT: {} (from {})\n", l.what, l.source));
    }
    s
}
