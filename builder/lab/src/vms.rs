//! `muster lab up --vms`: the cluster as QEMU VMs instead of namespaces. Builds the
//! payload and seeds, a TEST image with the stand-ins baked in (kubeadm, k3s and the API
//! server cannot be downloaded here), boots one VM per planned node with its seed volume
//! on a bridge in a network namespace with the rendezvous, waits until every node reports
//! `done`, prints each node's times, then keeps the VMs up until Ctrl-C.
//!
//! Unlike the namespace lab it runs in the foreground: the VMs belong to this process.

use crate::vm::cluster::{ClusterOptions, VmCluster, VmImage};
use anyhow::Context;
use muster_build::bake::BuildOptions;
use muster_build::image;
use muster_build::spec_source::LoadedSpec;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// What `up` needs besides the spec.
#[derive(Debug, Clone)]
pub struct VmsOptions {
    /// Build output, image and VM files go under `<state>/vms`.
    pub state_dir: PathBuf,
    /// The stand-in binaries baked into the TEST image.
    pub standins: PathBuf,
    pub agent_bin: PathBuf,
    /// Serves the rendezvous inside the VMs' namespace.
    pub muster_bin: PathBuf,
    pub timeout: Duration,
    /// Tear the VMs down right after printing (scripts, CI) instead of waiting for Ctrl-C.
    pub exit_when_assembled: bool,
}

pub fn up(loaded: &LoadedSpec, o: &VmsOptions) -> anyhow::Result<ExitCode> {
    check_spec(loaded)?;
    let dir = o.state_dir.join("vms");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let build_dir = dir.join("build");
    build_payload_and_seeds(loaded, o, &build_dir)?;
    let image_dir = dir.join("image");
    build_test_image(loaded, o, &build_dir, &image_dir)?;

    let image = VmImage::from_dir(&image_dir)?;
    let opts = ClusterOptions::new(dir.join("run"), o.muster_bin.clone());
    let mut cluster = VmCluster::up(&build_dir, &image, opts)?;
    println!(
        "lab --vms: {} VMs started ({:?}: {}); waiting for assembly",
        cluster.nodes().len(),
        cluster.accel().accel,
        cluster.accel().reason
    );
    let took = match cluster.wait_assembled(o.timeout) {
        Ok(t) => t,
        Err(e) => {
            for n in cluster.nodes() {
                if let Some(p) = cluster.console_log(&n) {
                    eprintln!("lab --vms: {n}: console log {}", p.display());
                }
            }
            cluster.down();
            return Err(e.into());
        }
    };
    print_boot_times(&cluster);
    println!("\nlab --vms: assembled {took:.1}s after the VMs started");
    if !o.exit_when_assembled {
        println!("lab --vms: the VMs stay up; Ctrl-C stops them");
        wait_for_ctrl_c()?;
    }
    cluster.down();
    println!("lab --vms: VMs stopped, namespace removed");
    Ok(ExitCode::SUCCESS)
}

/// What the VM lab does differently from the spec (a note), or cannot do (an error).
fn check_spec(loaded: &LoadedSpec) -> anyhow::Result<()> {
    if loaded.cluster.ha.provider == model::spec::VipProvider::KubeVip
        && let Some(vip) = loaded.cluster.ha.vip
    {
        println!(
            "lab --vms: VIP {vip}: the spec says kube-vip (a static pod that needs a kubelet); the TEST image's kube-vip stand-in floats it with keepalived on the control planes"
        );
    }
    if loaded.cluster.external_etcd().is_some() {
        // The namespace lab runs the external etcd cluster; the VM lab has no VMs for it.
        anyhow::bail!(
            "lab --vms does not run an external etcd cluster: use the namespace lab (`muster lab up` without --vms), which runs a real one"
        );
    }
    Ok(())
}

/// `muster build` into `build_dir`.
fn build_payload_and_seeds(
    loaded: &LoadedSpec,
    o: &VmsOptions,
    build_dir: &Path,
) -> anyhow::Result<()> {
    let t = Instant::now();
    muster_build::bake::build(
        loaded,
        build_dir,
        &BuildOptions {
            agent_bin: o.agent_bin.clone(),
            mtime: 0,
            // The stand-ins' helm, as the namespace lab's (UpOptions::new).
            helm: muster_build::addons::chart::Helm {
                program: o.standins.join(crate::standins::HELM_STANDIN),
            },
            addons: muster_build::addons::source::Source::from_options(
                crate::standins::default_addon_artifacts(),
            ),
        },
    )
    .context("muster build")?;
    println!(
        "lab --vms: payload and seeds built ({:.1}s)",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The TEST image (the build's payload, the stand-ins baked in) into `image_dir`.
fn build_test_image(
    loaded: &LoadedSpec,
    o: &VmsOptions,
    build_dir: &Path,
    image_dir: &Path,
) -> anyhow::Result<()> {
    let t = Instant::now();
    image::build(&image::BuildOptions {
        spec: loaded.clone(),
        out: image_dir.to_path_buf(),
        payload: Some(build_dir.join("payload.tar.gz")),
        cache: image::default_cache_dir(),
        disk_bytes: 4 << 30,
        // The stand-ins replace the distribution (images/test-image.sh).
        kubernetes: image::kubernetes::Source::LeftOut,
        images: None,
        registry_hosts: None,
        variant: Some(std::sync::Arc::new(crate::test_image::TestImage {
            standins: o.standins.clone(),
            distribution_installed: false,
            full_cloud_init: false,
        })),
    })
    .context("building the TEST image (stand-ins baked in)")?;
    println!(
        "lab --vms: TEST image built with the stand-ins ({:.1}s)",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Each node's boot times and phase, one line each.
fn print_boot_times(cluster: &VmCluster) {
    println!(
        "\n{:<20} {:>10} {:>12} {:>10} {:>8}",
        "NODE", "AGENT UP", "REGISTERED", "JOINED", "PHASE"
    );
    let secs = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{s:.1}s"));
    // The phases as the rendezvous has them (what `wait_assembled` decided on); the serial
    // reports lag by up to their period.
    let members = cluster.members().unwrap_or_default();
    for n in cluster.nodes() {
        let phase = members
            .iter()
            .find(|m| m.name == n)
            .and_then(|m| m.report["phase"].as_str().map(str::to_string))
            .unwrap_or_else(|| "?".into());
        let t = cluster.boot_times(&n).cloned().unwrap_or_default();
        println!(
            "{n:<20} {:>10} {:>12} {:>10} {phase:>8}",
            secs(t.agent_started),
            secs(t.registered),
            secs(t.joined)
        );
    }
}

fn wait_for_ctrl_c() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime to wait for Ctrl-C")?;
    rt.block_on(tokio::signal::ctrl_c())
        .context("waiting for Ctrl-C")
}
