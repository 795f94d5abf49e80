//! `muster image build`: a node image made directly, without Packer. A Debian base from
//! debootstrap (cached by its package list), the agent payload installed by the shared
//! `images/provision.sh`, a whole-disk ext4 in qcow2 with its kernel and initrd beside it,
//! and a Vagrant box for libvirt. Everything runs as root on the build host with chroot;
//! nothing is booted and nothing is mounted.

pub mod apt_trust;
pub mod artifacts;
pub mod base;
pub mod customise;
pub mod disk;
pub mod files;
pub mod kubernetes;
pub mod packages;
pub mod payload;
pub mod prepull;
pub mod run;
pub mod vagrant;
pub mod variant;

use crate::spec_source::LoadedSpec;
use files::{io_err, place, staging};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Names of the outputs in `--out DIR`.
pub const QCOW2: &str = "node.qcow2";
pub const KERNEL: &str = "vmlinuz";
pub const INITRD: &str = "initrd.img";
pub const BOX: &str = "node-libvirt.box";
pub const SUMS: &str = "SHA256SUMS";
pub const REPORT: &str = "image.json";
/// The one file an image built without `--payload` gets in place of the agent.

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
    #[error(
        "UPSTREAM UNREACHABLE: {url} cannot be reached from this machine ({detail}); fetch the \
         files where it can be reached (`muster artifacts fetch SPEC --out DIR`) and build with \
         `muster image build --artifacts DIR`"
    )]
    Unreachable { url: String, detail: String },
    #[error("{}: {problem}", file.display())]
    Artifact { file: PathBuf, problem: String },
    #[error("{step}: {what} not found")]
    Missing { step: String, what: String },
    #[error("{step}: {what}; refusing to make a shared image of it")]
    Unclean { step: String, what: String },
    #[error("image build needs root (debootstrap and chroot); run it with sudo")]
    NotRoot,
    #[error(
        "no --payload: a node image without the muster agent cannot join a cluster; run \
         `muster build SPEC --out DIR` and pass `--payload DIR/payload.tar.gz`"
    )]
    NoPayload,
    #[error(
        "the nodes of this spec run container images from registries ({images}) and \
         this build has none of them to pre-pull: fetch them where the registries are \
         reachable (`muster artifacts fetch SPEC --out DIR`, or `ctr images pull` + `ctr \
         images export` into DIR/images/ with DIR/images/SHA256SUMS) and build with \
         `--artifacts DIR`; `--allow-incomplete` builds without them on purpose"
    )]
    NoImages { images: String },
    #[error(
        "the nodes of this spec run container images from registries ({images}); pulling \
         them for this build (as `muster artifacts fetch` does) failed: {cause}. Where the \
         registries cannot be reached, fetch them on a machine where they can (`muster \
         artifacts fetch SPEC --out DIR`) and build with `--artifacts DIR`; \
         `--allow-incomplete` builds without them on purpose"
    )]
    PullFailed { images: String, cause: String },
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
    /// Where the Kubernetes distribution comes from (upstream by default).
    pub kubernetes: kubernetes::Source,
    /// `--artifacts DIR`: where the image tarballs to pre-pull (`DIR/images/`) and the
    /// pinned add-on manifests (`DIR/addons/`) come from.
    pub images: Option<PathBuf>,
    /// `--registry-hosts DIR`: containerd hosts.toml layout for the host's pulls without
    /// `--artifacts` ([`prepull::Puller::hosts_dir`]).
    pub registry_hosts: Option<PathBuf>,
    /// A variant of the image (the lab's TEST image); `None` for every user image.
    pub variant: Option<std::sync::Arc<dyn variant::ImageVariant>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepTiming {
    pub step: String,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseReport {
    pub key: String,
    pub cached: bool,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactReport {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// What `--json` prints and `DIR/image.json` keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReport {
    /// Hash of everything the outputs are made from (base, payload, scripts, disk size):
    /// a build with the same key finds the outputs up to date.
    pub build_key: String,
    /// True when this run found the outputs up to date and rebuilt nothing.
    #[serde(default)]
    pub up_to_date: bool,
    pub spec: String,
    pub cluster: String,
    pub distribution: String,
    pub kubernetes_version: String,
    pub vip_provider: String,
    pub suite: String,
    pub mirror: String,
    pub packages: Vec<String>,
    /// Where kubeadm/kubelet/kubectl or k3s came from (`none (--allow-incomplete)` when not).
    #[serde(default)]
    pub kubernetes_source: String,
    /// What the install path put in ([`kubernetes::installs`]); empty when nothing was.
    #[serde(default)]
    pub kubernetes_installs: Vec<String>,
    /// The container images pre-pulled into containerd's `k8s.io` namespace.
    #[serde(default)]
    pub prepulled_images: Vec<String>,
    /// What the image should have but this build did not install.
    pub left_out: Vec<packages::LeftOut>,
    pub base: BaseReport,
    /// `None` when built without `--payload` (no agent in the image).
    pub payload: Option<payload::PayloadInfo>,
    pub kernel_version: String,
    pub kernel_cmdline: String,
    pub virtual_size_bytes: u64,
    pub artifacts: Vec<ArtifactReport>,
    /// Present only on a variant's image (the lab's TEST image): what the variant added,
    /// e.g. the stand-ins it carries instead of the real programs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_variant: Option<serde_json::Value>,
    /// The variant's line in the human summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant_summary: Option<String>,
    pub steps: Vec<StepTiming>,
    pub total_seconds: f64,
}

/// Bump when the image recipe changes in a way the inputs below do not show.
const IMAGE_RECIPE: &str = "muster-image-3 prepull";

/// The build key: first 16 hex digits of SHA-256 over the recipe, muster's version, the base
/// key, the payload's sha256 (or `none`), both scripts, the box's Vagrantfile, the disk size
/// and, for a test image, its stand-ins and test step (`test_part`, empty otherwise).
pub fn build_key(
    base_key: &str,
    payload_sha256: Option<&str>,
    disk_bytes: u64,
    test_part: &str,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [
        IMAGE_RECIPE,
        env!("CARGO_PKG_VERSION"),
        base_key,
        payload_sha256.unwrap_or("none"),
        customise::PROVISION_SH,
        customise::IMAGE_BUILD_SH,
        &vagrant::vagrantfile(),
        &disk_bytes.to_string(),
        test_part,
    ] {
        h.update(part.as_bytes());
        h.update(b"\0");
    }
    hex::encode(h.finalize())[..16].to_string()
}

/// The report of a previous build in `out` if it has `key` and every artifact is there
/// with its recorded sha256.
fn up_to_date(out: &Path, key: &str) -> Result<Option<ImageReport>, ImageError> {
    let Ok(text) = std::fs::read(out.join(REPORT)) else {
        return Ok(None);
    };
    let Ok(report) = serde_json::from_slice::<ImageReport>(&text) else {
        return Ok(None);
    };
    if report.build_key != key || !out.join(SUMS).is_file() {
        return Ok(None);
    }
    for a in &report.artifacts {
        let path = out.join(&a.name);
        if std::fs::metadata(&path).map(|m| m.len()).ok() != Some(a.bytes)
            || files::sha256_file(&path)? != a.sha256
        {
            return Ok(None);
        }
    }
    Ok(Some(report))
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
        // The pre-pull's private mount namespace (image::prepull::import).
        ("unshare", "util-linux"),
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

/// Removes scratch dirs of builds that were killed (named by a pid no longer running).
fn sweep_dead_scratch(work: &Path) {
    let Ok(entries) = std::fs::read_dir(work) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_ok()
            && !Path::new("/proc").join(&name).exists()
            && let Err(err) = files::remove_tree(&e.path())
        {
            tracing::warn!("cannot remove stale scratch {}: {err}", e.path().display());
        }
    }
}

/// Builds the image into `opts.out`. A failed build leaves nothing of itself there: the
/// outputs are made in a sibling staging dir and moved in at the end; an `--out` this
/// build created is removed again.
pub fn build(opts: &BuildOptions) -> Result<ImageReport, ImageError> {
    let opts = &with_absolute_cache(opts)?;
    if opts.payload.is_none() {
        return Err(ImageError::NoPayload);
    }
    let created_out = !opts.out.exists();
    let staged = OutStage::new(&opts.out)?;
    let result = build_into(opts, &staged.0);
    let result = result.and_then(|report| {
        staged.move_into(&opts.out)?;
        Ok(report)
    });
    if result.is_err()
        && created_out
        && let Err(e) = files::remove_tree(&opts.out)
    {
        tracing::warn!("cannot remove {}: {e}", opts.out.display());
    }
    result
}

/// The outputs of a build in progress: `.OUT.building-PID` beside `--out` (the same file
/// system, so the final moves are renames), removed however the build ends.
struct OutStage(PathBuf);

impl OutStage {
    fn new(out: &Path) -> Result<Self, ImageError> {
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(io_err("making output dir", &parent))?;
        let dir = parent.join(format!(".{name}.building-{}", std::process::id()));
        files::remove_tree(&dir)?;
        std::fs::create_dir_all(&dir).map_err(io_err("making output dir", &dir))?;
        Ok(OutStage(dir))
    }

    /// Every finished output into `out`; the report last, so a reader never sees a report
    /// over outputs it does not describe.
    fn move_into(&self, out: &Path) -> Result<(), ImageError> {
        std::fs::create_dir_all(out).map_err(io_err("making output dir", out))?;
        for name in [QCOW2, KERNEL, INITRD, BOX, SUMS, REPORT] {
            let from = self.0.join(name);
            if from.exists() {
                place(&from, &out.join(name))?;
            }
        }
        Ok(())
    }
}

impl Drop for OutStage {
    fn drop(&mut self) {
        if let Err(e) = files::remove_tree(&self.0) {
            tracing::warn!("leaving {}: {e}", self.0.display());
        }
    }
}

/// What the image pre-pulls: the images and the directory their tarballs are in.
enum Prepull {
    Images { dir: PathBuf, images: Vec<String> },
    Nothing,
}

/// A default (online) build of a spec whose nodes pull images gets them the way `muster
/// artifacts fetch` does (pinned add-on manifests downloaded and checked, images pulled
/// and exported with the host's containerd) into `CACHE/artifacts/`, and pre-pulls from
/// there: the image is complete by default. `listed`: the payload's pre-pull list (what
/// `muster build` rendered: charts' and user files' images too). `--artifacts` and
/// `--allow-incomplete` builds are left as they are. Any failure names the images and the
/// offline way.
fn pull_when_online(opts: &BuildOptions, listed: &[String]) -> Result<BuildOptions, ImageError> {
    let mut opts = opts.clone();
    if opts.images.is_some() || opts.kubernetes != kubernetes::Source::Upstream {
        return Ok(opts);
    }
    let needs = prepull::needs(&opts.spec.cluster)?;
    if needs.is_empty() && listed.is_empty() {
        return Ok(opts);
    }
    let dir = opts.cache.join("artifacts");
    tracing::info!(
        "pulling the images the nodes run into {} (no --artifacts)",
        dir.display()
    );
    let puller = prepull::Puller {
        hosts_dir: opts.registry_hosts.clone(),
        ..Default::default()
    };
    prepull::fetch(&opts.spec.cluster, &dir, &puller, listed).map_err(|e| {
        ImageError::PullFailed {
            images: needs.describe(),
            cause: e.to_string(),
        }
    })?;
    opts.images = Some(dir);
    Ok(opts)
}

/// The images to pre-pull, checked: what the spec names (muster's, the pinned manifests')
/// and what the payload lists (`listed`). An error when the nodes need images this build
/// has none of (unless it is `--allow-incomplete`, which lists them as left out).
fn plan_prepull(
    opts: &BuildOptions,
    listed: &[String],
    selection: &mut packages::Selection,
) -> Result<Prepull, ImageError> {
    let needs = prepull::needs(&opts.spec.cluster)?;
    if needs.is_empty() && listed.is_empty() {
        return Ok(Prepull::Nothing);
    }
    if opts.kubernetes == kubernetes::Source::LeftOut {
        selection.left_out.push(packages::LeftOut {
            what: format!("container images, not pre-pulled: {}", needs.describe()),
            source: "their registries".into(),
        });
        return Ok(Prepull::Nothing);
    }
    let Some(dir) = &opts.images else {
        return Err(ImageError::NoImages {
            images: needs.describe(),
        });
    };
    let images = prepull::with_listed(prepull::resolve(&needs, dir)?, listed);
    prepull::check(dir, &images)?;
    Ok(Prepull::Images {
        dir: dir.clone(),
        images,
    })
}

fn build_into(opts: &BuildOptions, out: &Path) -> Result<ImageReport, ImageError> {
    let cluster = &opts.spec.cluster;
    let mut selection = select_packages(opts);
    if opts.kubernetes == kubernetes::Source::LeftOut {
        selection.left_out.insert(0, kubernetes::left_out(cluster));
    }
    // The payload first: its pre-pull list is part of what the image needs.
    let payload_path = opts.payload.clone().ok_or(ImageError::NoPayload)?;
    eprintln!("==> checking the payload {}", payload_path.display());
    let payload_info = payload::inspect(&payload_path)?;
    let pulled = pull_when_online(opts, &payload_info.prepull_images)?;
    let opts = &pulled;
    let prepull = plan_prepull(opts, &payload_info.prepull_images, &mut selection)?;
    let cached_base = base::cached(&opts.cache, &selection);
    check_host(cached_base.is_none())?;
    warn_left_out(&selection);
    let mut progress = run::Progress::new(
        14 + 2 * usize::from(opts.variant.is_some())
            + usize::from(matches!(prepull, Prepull::Images { .. })),
    );
    let scratch = make_scratch(&opts.cache)?;
    let work = scratch.0.as_path();

    let variant = prepare_variant(&mut progress, opts)?;
    let kube_key = progress.step(
        &format!(
            "Kubernetes from {}",
            opts.kubernetes.describe(&opts.spec.cluster)
        ),
        || {
            if let kubernetes::Source::Artifacts(dir) = &opts.kubernetes {
                kubernetes::check_artifacts(dir, cluster)?;
            }
            let mut part = opts.kubernetes.key_part(cluster)?;
            if let Prepull::Images { dir, images } = &prepull {
                for i in images {
                    let tar = dir.join(prepull::IMAGES_DIR).join(prepull::tarball_name(i));
                    part.push_str(&format!(" {i}={}", files::sha256_file(&tar)?));
                }
            }
            Ok(part)
        },
    )?;
    let variant_key = variant.as_ref().map(|v| v.key_part()).unwrap_or_default();
    let key = build_key(
        &base::key(&selection),
        Some(payload_info.sha256.as_str()),
        opts.disk_bytes,
        &format!("{kube_key}\0{variant_key}"),
    );
    if let Some(previous) = progress.step("looking for up-to-date outputs", || {
        up_to_date(&opts.out, &key)
    })? {
        eprintln!(
            "    {} already holds this image (build key {key}): nothing to do",
            opts.out.display()
        );
        return Ok(reused_report(previous, progress));
    }

    let base = base_rootfs(&mut progress, opts, cached_base, &selection)?;
    let rootfs = work.join("rootfs");
    let with_variant = opts.variant.as_ref().zip(variant.as_deref());
    customise_rootfs(
        &mut progress,
        opts,
        &base,
        &rootfs,
        &selection,
        &payload_path,
        with_variant,
    )?;
    // After provision.sh: containerd is configured (SystemdCgroup) when it imports.
    if let Prepull::Images { dir, images } = &prepull {
        progress.step(
            &format!(
                "pre-pulling {} images (images/import-images.sh)",
                images.len()
            ),
            || {
                let k3s = cluster.distribution.kind == model::spec::DistroKind::K3s;
                prepull::import(&rootfs, dir, images, k3s)
            },
        )?;
    }
    let kernel_version = extract_boot_files(&mut progress, &rootfs, out)?;
    progress.step("checking the rootfs (sysprep, no secrets)", || {
        customise::check_clean(&rootfs)
    })?;
    let artifacts = write_images(&mut progress, opts, &rootfs, work, out)?;
    drop(scratch);

    let report = ImageReport {
        build_key: key,
        up_to_date: false,
        spec: opts.spec.origin.clone(),
        cluster: cluster.name.to_string(),
        distribution: format!("{:?}", cluster.distribution.kind).to_lowercase(),
        kubernetes_version: cluster.distribution.version.to_string(),
        vip_provider: cluster.ha.provider.as_str().to_string(),
        suite: packages::SUITE.into(),
        mirror: packages::MIRROR.into(),
        packages: selection.packages.clone(),
        kubernetes_source: opts.kubernetes.describe(cluster),
        kubernetes_installs: match opts.kubernetes {
            kubernetes::Source::LeftOut => vec![],
            _ => kubernetes::installs(cluster),
        },
        prepulled_images: match &prepull {
            Prepull::Images { images, .. } => images.clone(),
            Prepull::Nothing => vec![],
        },
        left_out: selection.left_out.clone(),
        base: BaseReport {
            key: base.key.clone(),
            cached: base.cached,
            path: base.rootfs.display().to_string(),
        },
        payload: Some(payload_info),
        kernel_version,
        kernel_cmdline: vagrant::KERNEL_CMDLINE.into(),
        virtual_size_bytes: opts.disk_bytes,
        artifacts,
        test_variant: variant.as_ref().map(|v| v.report()).transpose()?,
        variant_summary: variant.as_ref().map(|v| v.summary()),
        total_seconds: progress.elapsed(),
        steps: progress.timings,
    };
    write_report(out, &report)?;
    Ok(report)
}

/// `opts` with its cache dir made and absolute: debootstrap wants an absolute --cache-dir.
fn with_absolute_cache(opts: &BuildOptions) -> Result<BuildOptions, ImageError> {
    std::fs::create_dir_all(&opts.cache).map_err(io_err("making cache dir", &opts.cache))?;
    let cache = opts
        .cache
        .canonicalize()
        .map_err(io_err("making cache dir", &opts.cache))?;
    Ok(BuildOptions {
        cache,
        ..opts.clone()
    })
}

/// This build's scratch dir under `CACHE/work`, named by its pid, after sweeping those of
/// killed builds.
fn make_scratch(cache: &Path) -> Result<Scratch, ImageError> {
    sweep_dead_scratch(&cache.join("work"));
    let scratch = Scratch(cache.join("work").join(std::process::id().to_string()));
    std::fs::create_dir_all(&scratch.0).map_err(io_err("making scratch dir", &scratch.0))?;
    Ok(scratch)
}

/// The packages the image gets: the cluster's, and its variant's.
fn select_packages(opts: &BuildOptions) -> packages::Selection {
    let cluster = &opts.spec.cluster;
    let mut selection = packages::select(cluster);
    if let Some(v) = &opts.variant {
        v.add_packages(&mut selection, cluster);
    }
    selection
}

fn warn_left_out(selection: &packages::Selection) {
    for l in &selection.left_out {
        eprintln!(
            "warning: left out of the image: {} — from {}",
            l.what, l.source
        );
    }
}

/// The variant with its inputs checked, before the build key needs its part.
fn prepare_variant(
    progress: &mut run::Progress,
    opts: &BuildOptions,
) -> Result<Option<Box<dyn variant::PreparedVariant>>, ImageError> {
    let Some(v) = &opts.variant else {
        return Ok(None);
    };
    progress
        .step(&format!("{}: checking its inputs", v.label()), || {
            v.prepare(&opts.spec)
        })
        .map(Some)
}

/// The previous build's report, with this run's (short) timings.
fn reused_report(previous: ImageReport, progress: run::Progress) -> ImageReport {
    ImageReport {
        up_to_date: true,
        total_seconds: progress.elapsed(),
        steps: progress.timings,
        ..previous
    }
}

/// The base rootfs: from the cache, or debootstrapped into it.
fn base_rootfs(
    progress: &mut run::Progress,
    opts: &BuildOptions,
    cached: Option<base::Base>,
    selection: &packages::Selection,
) -> Result<base::Base, ImageError> {
    match cached {
        Some(b) => progress.step(&format!("base rootfs {} (cached)", b.key), || Ok(b)),
        None => progress.step(
            &format!(
                "debootstrap {} base ({} packages, .debs cached in {})",
                packages::SUITE,
                selection.packages.len(),
                opts.cache.join("debs").display()
            ),
            || base::make(&opts.cache, selection),
        ),
    }
}

/// A copy of the base at `rootfs` with the image's steps, the node preparation and the
/// variant's step (if any) applied.
fn customise_rootfs(
    progress: &mut run::Progress,
    opts: &BuildOptions,
    base: &base::Base,
    rootfs: &Path,
    selection: &packages::Selection,
    payload_path: &Path,
    variant: Option<(
        &std::sync::Arc<dyn variant::ImageVariant>,
        &dyn variant::PreparedVariant,
    )>,
) -> Result<(), ImageError> {
    progress.step("copying the base rootfs", || base::copy_to(base, rootfs))?;
    let disabled = packages::disabled_services(selection);
    progress.step("image-specific steps (images/image-build.sh)", || {
        customise::image_steps(rootfs, &disabled)
    })?;
    progress.step(
        &format!(
            "Kubernetes (images/install-kubernetes.sh, from {})",
            opts.kubernetes.describe(&opts.spec.cluster)
        ),
        || kubernetes::install(rootfs, &opts.spec.cluster, &opts.kubernetes),
    )?;
    progress.step("node preparation (images/provision.sh PAYLOAD)", || {
        customise::provision(rootfs, payload_path)
    })?;
    if let Some((v, prepared)) = variant {
        progress.step(&format!("{}: its step in the image", v.label()), || {
            prepared.apply(rootfs)
        })?;
    }
    Ok(())
}

/// Kernel and initrd from `rootfs` into `out`; their kernel version.
fn extract_boot_files(
    progress: &mut run::Progress,
    rootfs: &Path,
    out: &Path,
) -> Result<String, ImageError> {
    let (kernel, initrd) = (out.join(KERNEL), out.join(INITRD));
    progress.step("extracting kernel and initrd", || {
        let v = customise::extract_boot(rootfs, &staging(&kernel), &staging(&initrd))?;
        place(&staging(&kernel), &kernel)?;
        place(&staging(&initrd), &initrd)?;
        Ok(v)
    })
}

/// The disk made from `rootfs` (which it consumes), checked, as qcow2 and Vagrant box in
/// `--out`, with SHA256SUMS over every artifact.
fn write_images(
    progress: &mut run::Progress,
    opts: &BuildOptions,
    rootfs: &Path,
    work: &Path,
    out: &Path,
) -> Result<Vec<ArtifactReport>, ImageError> {
    let raw = work.join("node.raw");
    progress.step("mkfs.ext4 -d (no mounts)", || {
        disk::mkfs_ext4(rootfs, &raw, opts.disk_bytes)?;
        files::remove_tree(rootfs)
    })?;
    progress.step("checking the disk with debugfs", || check_disk_clean(&raw))?;
    let qcow2 = out.join(QCOW2);
    progress.step("qemu-img convert to qcow2", || {
        disk::to_qcow2(&raw, &staging(&qcow2))?;
        place(&staging(&qcow2), &qcow2)
    })?;
    let vbox = out.join(BOX);
    let (kernel, initrd) = (out.join(KERNEL), out.join(INITRD));
    progress.step("vagrant box (libvirt)", || {
        vagrant::write_box(&staging(&vbox), &qcow2, &kernel, &initrd, opts.disk_bytes)?;
        place(&staging(&vbox), &vbox)
    })?;
    progress.step("SHA256SUMS", || write_sums(out))
}

/// None of [`payload::FORBIDDEN`] made it into the disk.
fn check_disk_clean(raw: &Path) -> Result<(), ImageError> {
    for rel in payload::FORBIDDEN {
        if disk::read_file(raw, &format!("/{rel}"))?.is_some() {
            return Err(ImageError::Unclean {
                step: "checking the disk".into(),
                what: format!("/{rel} is in the disk"),
            });
        }
    }
    Ok(())
}

/// Sizes and sums of the artifacts in `out`, written to its SHA256SUMS.
fn write_sums(out: &Path) -> Result<Vec<ArtifactReport>, ImageError> {
    let mut artifacts = Vec::new();
    for name in [QCOW2, KERNEL, INITRD, BOX] {
        let path = out.join(name);
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
    files::atomic_write(&out.join(SUMS), files::sums_text(&entries).as_bytes())?;
    Ok(artifacts)
}

/// `report` as `out/image.json`.
fn write_report(out: &Path, report: &ImageReport) -> Result<(), ImageError> {
    let json = serde_json::to_vec_pretty(report).map_err(|e| ImageError::Io {
        step: "writing the report".into(),
        path: out.join(REPORT),
        source: std::io::Error::other(e),
    })?;
    files::atomic_write(&out.join(REPORT), &json)
}

/// The human summary `muster image build` prints without `--json`.
pub fn summary(report: &ImageReport, out: &Path) -> String {
    let mut s = format!(
        "{} {} node image for {} ({} {}) in {:.1}s, base {}\n",
        if report.up_to_date {
            "up to date:"
        } else {
            "built"
        },
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
    if let Some(line) = &report.variant_summary {
        s.push_str(line);
        s.push('\n');
    }
    match &report.payload {
        Some(p) => s.push_str(&format!("payload: {} ({} files)\n", p.path, p.files.len())),
        None => s.push_str("payload: none (no agent in the image)\n"),
    }
    if report.up_to_date {
        s.push_str(&format!(
            "outputs were up to date (build key {})\n",
            report.build_key
        ));
    }
    s.push_str(&format!("kubernetes: {}\n", report.kubernetes_source));
    if !report.kubernetes_installs.is_empty() {
        s.push_str(&format!(
            "installed from there: {}\n",
            report.kubernetes_installs.join(", ")
        ));
    }
    if !report.prepulled_images.is_empty() {
        s.push_str(&format!(
            "pre-pulled into containerd (k8s.io): {}\n",
            report.prepulled_images.join(", ")
        ));
    }
    for l in &report.left_out {
        s.push_str(&format!("LEFT OUT: {} (from {})\n", l.what, l.source));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_key_follows_payload_base_and_disk() {
        let k = build_key("base1", Some("aa"), 2 << 30, "");
        assert_eq!(k.len(), 16);
        assert_eq!(k, build_key("base1", Some("aa"), 2 << 30, ""));
        assert_ne!(k, build_key("base1", Some("bb"), 2 << 30, ""));
        assert_ne!(k, build_key("base2", Some("aa"), 2 << 30, ""));
        assert_ne!(k, build_key("base1", None, 2 << 30, ""));
        assert_ne!(k, build_key("base1", Some("aa"), 4 << 30, ""));
        assert_ne!(k, build_key("base1", Some("aa"), 2 << 30, "test"));
    }

    fn opts(example: &str, kubernetes: kubernetes::Source) -> BuildOptions {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples")
            .join(example);
        BuildOptions {
            spec: crate::spec_source::load(Some(&path)).unwrap(),
            out: PathBuf::from("/nonexistent/out"),
            payload: Some(PathBuf::from("/nonexistent/payload.tar.gz")),
            cache: PathBuf::from("/nonexistent/cache"),
            disk_bytes: 2 << 30,
            kubernetes,
            images: None,
            registry_hosts: None,
            variant: None,
        }
    }

    /// Only `--allow-incomplete` has a left-out list; any other build without the images
    /// its nodes pull fails naming them, and a spec that pulls none needs none.
    #[test]
    fn images_are_pre_pulled_or_the_build_fails_unless_allow_incomplete() {
        let o = opts("default.yaml", kubernetes::Source::LeftOut);
        let mut sel = select_packages(&o);
        assert!(matches!(
            plan_prepull(&o, &[], &mut sel),
            Ok(Prepull::Nothing)
        ));
        assert_eq!(sel.left_out.len(), 1, "{:?}", sel.left_out);
        assert!(sel.left_out[0].what.contains("registry.k8s.io/pause:3.10"));
        assert!(
            sel.left_out[0]
                .what
                .contains("the images of flannel v0.28.9")
        );

        let o = opts("default.yaml", kubernetes::Source::Upstream);
        let mut sel = select_packages(&o);
        let Err(err) = plan_prepull(&o, &[], &mut sel) else {
            panic!("a build without the images must fail")
        };
        let err = err.to_string();
        assert!(
            err.contains("run container images from registries (ghcr.io/kube-vip")
                && err.contains("--artifacts DIR"),
            "{err}"
        );
        assert!(sel.left_out.is_empty());

        let o = opts(
            "seed-001-k3s-haproxy-proxmox.yaml",
            kubernetes::Source::Upstream,
        );
        let mut sel = select_packages(&o);
        assert!(matches!(
            plan_prepull(&o, &[], &mut sel),
            Ok(Prepull::Nothing)
        ));
        assert!(sel.left_out.is_empty());
        // The payload's list counts too (a chart's images, known once rendered).
        let listed = ["quay.io/cilium/cilium:v1.18.4".to_string()];
        assert!(matches!(
            plan_prepull(&o, &listed, &mut sel),
            Err(ImageError::NoImages { .. })
        ));
    }

    /// Issue 13: a default build of every example spec gets exactly what its nodes need:
    /// the Debian packages (the common base and node set plus only the spec's own: no etcd
    /// server, no Kubernetes package from Debian), the distribution through the install
    /// path (kubeadm's five packages at the spec's version, or k3s's binary and airgap
    /// tarball), and the images to pre-pull, the pinned add-on manifests' included, as
    /// the build plans them (`select_packages`, `plan_prepull`) from a directory like the
    /// one a default build pulls into (the real pinned manifests, one tarball per image).
    #[test]
    fn every_example_gets_exactly_what_its_nodes_need() {
        let kubeadm = prepull::tests::kubeadm_images;
        let k131 = kubeadm("v1.31.4", Some("3.5.15-0"), "v1.11.3", "3.10");
        let kube_vip = ["ghcr.io/kube-vip/kube-vip:v0.8.9"];
        // The add-on images as the per-example needs test spells them out (one list).
        let (flannel, metallb, longhorn, ingress_nginx) = (
            prepull::tests::FLANNEL,
            prepull::tests::METALLB,
            prepull::tests::LONGHORN,
            prepull::tests::INGRESS_NGINX,
        );
        let kubeadm_installs = |v: &str| -> Vec<String> {
            vec![
                format!("kubeadm {v} (held)"),
                format!("kubelet {v} (held)"),
                format!("kubectl {v} (held)"),
                "cri-tools".into(),
                "kubernetes-cni".into(),
            ]
        };
        let k3s_installs = vec![
            "/usr/local/bin/k3s v1.31.6+k3s1".to_string(),
            "/var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar.zst".to_string(),
        ];
        let cat = |parts: &[&[&str]], owned: &[String]| {
            let mut l: Vec<String> = parts
                .iter()
                .flat_map(|p| p.iter())
                .map(|s| s.to_string())
                .collect();
            l.extend(owned.iter().cloned());
            l.sort();
            l
        };
        // (spec, the Debian packages beyond the base and node set, what the install path
        // puts in, the images pre-pulled)
        type Case<'a> = (&'a str, &'a [&'a str], Vec<String>, Vec<String>);
        let cases: Vec<Case> = vec![
            (
                "default.yaml",
                &["gpg"],
                kubeadm_installs("1.31.4"),
                cat(&[&kube_vip, flannel], &k131),
            ),
            (
                "seed-000-kubeadm-kube-vip.yaml",
                &["gpg"],
                kubeadm_installs("1.31.4"),
                // cilium is the user's file: its images are not pre-pulled
                cat(&[&kube_vip, longhorn, ingress_nginx], &k131),
            ),
            (
                "seed-001-k3s-haproxy-proxmox.yaml",
                &["haproxy", "keepalived"],
                k3s_installs.clone(),
                vec![],
            ),
            (
                "seed-002-k3s-nginx-mariadb.yaml",
                &["libnginx-mod-stream", "nginx"],
                k3s_installs.clone(),
                cat(&[metallb], &[]),
            ),
            (
                "seed-003-k3s-keepalived.yaml",
                &["keepalived"],
                k3s_installs,
                cat(&[metallb, ingress_nginx], &[]),
            ),
            (
                "seed-004-kubeadm-external-etcd.yaml",
                &["gpg", "haproxy", "keepalived"],
                kubeadm_installs("1.30.2"),
                cat(&[flannel], &kubeadm("v1.30.2", None, "v1.11.1", "3.9")),
            ),
            (
                "seed-004-kubeadm-haproxy.yaml",
                &["gpg", "haproxy", "keepalived"],
                kubeadm_installs("1.30.2"),
                cat(
                    &[flannel],
                    &kubeadm("v1.30.2", Some("3.5.12-0"), "v1.11.1", "3.9"),
                ),
            ),
        ];
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let on_disk = std::fs::read_dir(&examples)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "yaml")
            })
            .count();
        assert_eq!(on_disk, cases.len(), "every example spec has its case here");
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/artifacts");
        for (name, extra, installs, images) in cases {
            let mut o = opts(name, kubernetes::Source::Upstream);
            let mut sel = select_packages(&o);
            let mut want: Vec<String> = packages::BASE
                .iter()
                .chain(packages::NODE)
                .chain(extra)
                .map(|p| p.to_string())
                .collect();
            want.sort();
            assert_eq!(sel.packages, want, "{name}: Debian packages");
            assert_eq!(kubernetes::installs(&o.spec.cluster), installs, "{name}");

            // The directory a default build pulls into: manifests and one tarball each.
            let d = tempfile::tempdir().unwrap();
            let addons = d.path().join(prepull::MANIFESTS_DIR);
            std::fs::create_dir_all(&addons).unwrap();
            for e in std::fs::read_dir(fixtures.join(prepull::MANIFESTS_DIR)).unwrap() {
                let p = e.unwrap().path();
                std::fs::copy(&p, addons.join(p.file_name().unwrap())).unwrap();
            }
            let tars = d.path().join(prepull::IMAGES_DIR);
            std::fs::create_dir_all(&tars).unwrap();
            let mut sums = Vec::new();
            for i in &images {
                let tar = tars.join(prepull::tarball_name(i));
                std::fs::write(&tar, i).unwrap();
                sums.push((prepull::tarball_name(i), files::sha256_file(&tar).unwrap()));
            }
            std::fs::write(tars.join(prepull::IMAGE_SUMS), files::sums_text(&sums)).unwrap();
            o.images = Some(d.path().to_path_buf());
            match plan_prepull(&o, &[], &mut sel).unwrap() {
                Prepull::Images { images: got, .. } => assert_eq!(got, images, "{name}"),
                Prepull::Nothing => assert!(images.is_empty(), "{name}: nothing pre-pulled"),
            }
            assert!(sel.left_out.is_empty(), "{name}: {:?}", sel.left_out);
        }
    }

    #[test]
    fn outputs_without_a_report_are_not_up_to_date() {
        let d = tempfile::tempdir().unwrap();
        assert!(up_to_date(d.path(), "k").unwrap().is_none());
    }
}
