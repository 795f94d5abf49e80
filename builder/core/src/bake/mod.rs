//! `muster build`: renders every file the cluster's machines need, packs the agent payload
//! and writes one NoCloud seed volume per node into the output dir.
//!
//! Output dir layout:
//! - `muster-build.json`: which cluster the dir belongs to (name and id);
//! - `cluster-secret` (0600): generated once, reused; never inside the payload;
//! - `rendezvous.crt`, `rendezvous.key` (0600): reused; the cert's SHA-256 is baked in;
//! - `payload.tar.gz`: what goes into the shared image (see `payload`);
//! - `cluster.json`: the baked cluster config, the same bytes as inside the payload;
//! - `nodes/<name>/{meta-data,network-config,user-data,seed.img}`: per node.

pub mod distribution;
pub mod etcd_tls;
pub mod payload;
pub mod rendezvous_cert;
pub mod secret;
pub mod seed_volume;
pub mod write;

use crate::render::{self, Bake, FileSet, Input, RenderError, cloud_init};
use crate::spec_source::LoadedSpec;
use model::Sha256Hex;
use model::node_files as nf;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const PAYLOAD_FILE: &str = "payload.tar.gz";
pub const NODES_DIR: &str = "nodes";
pub const SEED_FILE: &str = "seed.img";
/// The baked cluster config, byte for byte as in the payload (`usr/lib/muster/cluster.json`),
/// for the operator commands (`muster status`, `muster kubeconfig`).
pub const CLUSTER_FILE: &str = "cluster.json";
/// Signing keys the rendezvous service needs for this cluster (`muster rendezvous --keys`).
pub const RENDEZVOUS_KEYS_DIR: &str = "rendezvous-keys";

#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The `nodeagent` binary to pack.
    pub agent_bin: PathBuf,
    /// Timestamp of every payload entry (0, or `SOURCE_DATE_EPOCH`).
    pub mtime: u64,
    /// Where the pinned add-on manifests come from (`--artifacts DIR`, or the cache).
    pub addons: crate::addons::source::Source,
    /// Renders the add-ons published as Helm charts (cilium's): `helm` on PATH, or `--helm`.
    pub helm: crate::addons::chart::Helm,
}

impl BuildOptions {
    /// `agent_bin`, or the `nodeagent` next to the running executable; mtime from
    /// `SOURCE_DATE_EPOCH` when set.
    pub fn new(
        agent_bin: Option<PathBuf>,
        artifacts: Option<PathBuf>,
        helm: crate::addons::chart::Helm,
    ) -> Result<BuildOptions, BuildError> {
        let agent_bin = match agent_bin {
            Some(p) => p,
            None => default_agent_bin()?,
        };
        let mtime = match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) => v
                .trim()
                .parse::<u64>()
                .map_err(|_| BuildError::SourceDateEpoch(v.clone()))?,
            Err(_) => 0,
        };
        Ok(BuildOptions {
            agent_bin,
            mtime,
            helm,
            addons: crate::addons::source::Source::from_options(artifacts),
        })
    }
}

pub fn default_agent_bin() -> Result<PathBuf, BuildError> {
    let exe = std::env::current_exe().map_err(|source| BuildError::Io {
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    Ok(exe
        .parent()
        .map(|d| d.join("nodeagent"))
        .unwrap_or_else(|| PathBuf::from("nodeagent")))
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Dir(#[from] secret::DirError),
    #[error(transparent)]
    Cert(#[from] rendezvous_cert::CertError),
    #[error(
        "cannot read the nodeagent binary at {path}: {source} (build it with `cargo build -p nodeagent`, or pass --agent-bin)"
    )]
    AgentBin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("SOURCE_DATE_EPOCH=`{0}` is not a number of seconds")]
    SourceDateEpoch(String),
    #[error("{path}: not a cluster.json muster wrote: {detail}")]
    PreviousBuild { path: PathBuf, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("rendezvous certificate fingerprint `{0}` is not a SHA-256")]
    Fingerprint(String),
    #[error(transparent)]
    RendezvousKey(#[from] model::fsutil::WriteError),
    #[error(transparent)]
    EtcdTls(#[from] etcd_tls::EtcdTlsError),
    #[error(transparent)]
    Addons(#[from] crate::addons::bake::BakeAddonError),
    #[error("serializing the add-on index: {0}")]
    AddonIndex(serde_json::Error),
    #[error(transparent)]
    Distribution(#[from] distribution::DistributionError),
}

/// One file the build wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WrittenArtifact {
    /// Relative to the output dir.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildReport {
    pub cluster: String,
    pub cluster_id: String,
    pub out_dir: PathBuf,
    /// True when this build generated the cluster secret (first build into the dir).
    pub new_secret: bool,
    pub payload_sha256: String,
    /// Files inside the payload.
    pub payload_files: usize,
    pub artifacts: Vec<WrittenArtifact>,
    /// The machines against the previous build into this dir; absent on a first build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<model::plan_diff::PlanDiff>,
    pub elapsed_ms: u64,
}

/// The nodes of the last build into `out` (its `cluster.json`), if there was one.
pub fn previous_nodes(out: &Path) -> Result<Option<Vec<model::PlannedNode>>, BuildError> {
    let path = out.join(CLUSTER_FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(BuildError::Io { path, source }),
    };
    let baked: model::baked::BakedCluster =
        serde_json::from_slice(&text).map_err(|e| BuildError::PreviousBuild {
            path: path.clone(),
            detail: e.to_string(),
        })?;
    Ok(Some(baked.nodes))
}

/// The payload's file set (everything but its own SHA256SUMS is listed in SHA256SUMS).
/// `distribution`: the Kubernetes distribution's own files ([`distribution::files`]).
pub fn payload_files(
    input: &Input<'_>,
    bake: &Bake,
    agent: Vec<u8>,
    addons: &crate::addons::bake::BakedAddons,
    distribution: Vec<distribution::PayloadFile>,
) -> Result<FileSet, BuildError> {
    let mut fs = render::cluster_files(input, bake)?;
    fs.add(nf::AGENT_BINARY, 0o755, agent);
    for (path, mode, bytes) in distribution {
        fs.add(path, mode, bytes);
    }
    if !addons.files.is_empty() {
        for (name, bytes) in &addons.files {
            fs.add(format!("{}/{name}", nf::ADDONS_DIR), 0o644, bytes.clone());
        }
        let index = serde_json::to_string_pretty(&addons.index).map_err(BuildError::AddonIndex)?;
        fs.add(nf::ADDONS_INDEX, 0o644, index + "\n");
    }
    // Left out when muster does not know the release's images: the Packer line that reads
    // it then fails with that message already.
    if let Ok(needs) = crate::image::prepull::needs(input.cluster) {
        let mut images = needs.images;
        images.extend(addons.images.iter().cloned());
        images.sort();
        images.dedup();
        if !images.is_empty() {
            let text: String = images.iter().map(|i| format!("{i}\n")).collect();
            fs.add(nf::PREPULL_IMAGES, 0o644, text);
        }
    }
    let sums = payload::sha256sums(&fs);
    fs.add(nf::PAYLOAD_SUMS, 0o644, sums);
    Ok(fs)
}

/// Builds `spec` into `out`. See the module docs for what lands where.
pub fn build(
    spec: &LoadedSpec,
    out: &Path,
    opts: &BuildOptions,
) -> Result<BuildReport, BuildError> {
    let started = Instant::now();
    let cluster = &spec.cluster;
    let plan = &spec.plan;
    let input = Input::new(cluster, plan);
    // Before anything is written: a wrong etcd file fails the build, not a first boot.
    let etcd_tls = etcd_tls::load(cluster, &spec.dir())?;

    let (secret, new_secret) = secret::claim_dir(out, cluster.name.as_str())?;
    // Read before this build overwrites it. Informational: a damaged file costs the diff,
    // never the build.
    let changes = match previous_nodes(out) {
        Ok(prev) => prev.map(|p| model::plan_diff::diff(&p, &plan.nodes)),
        Err(e) => {
            tracing::warn!("no comparison with the previous build: {e}");
            None
        }
    };
    let cluster_id = secret.cluster_id();
    // The rendezvous checks request signatures with this cluster's signing key (never the
    // secret itself); `muster rendezvous --keys OUT/rendezvous-keys` serves this cluster.
    protocol::key_file::install(&out.join(RENDEZVOUS_KEYS_DIR), &secret)?;
    let bake = Bake {
        cluster_id: cluster_id.clone(),
        rendezvous_cert_sha256: rendezvous_cert_sha256(cluster, out)?,
    };
    tracing::info!(cluster = %cluster.name, %cluster_id, new_secret, "rendering");

    let (files, tgz) = pack_payload(&input, &bake, opts, out, &spec.dir())?;
    let payload_sha256 = payload::sha256_hex(&tgz);

    let mut pending: Vec<PendingFile> = vec![(PAYLOAD_FILE.to_string(), tgz, 0o644)];
    if let Some(baked) = files.get(nf::CLUSTER_CONFIG) {
        pending.push((CLUSTER_FILE.to_string(), baked.contents.clone(), 0o644));
    }
    let secret_hex = secret.to_hex();
    let total = plan.nodes.len();
    for (i, node) in plan.nodes.iter().enumerate() {
        tracing::debug!(node = %node.name, "seed volume {}/{total}", i + 1);
        let seed = cloud_init::render(
            &input,
            node,
            &cluster_id,
            &secret_hex,
            &payload_sha256,
            etcd_tls.as_ref(),
        )?;
        pending.extend(node_files(out, node.name.as_str(), seed)?);
    }
    pending.extend(recipe_files(cluster, plan));
    tracing::info!(files = pending.len(), nodes = total, "writing");
    let artifacts = write_pending(out, pending)?;
    Ok(BuildReport {
        cluster: cluster.name.to_string(),
        cluster_id,
        out_dir: out.to_path_buf(),
        new_secret,
        payload_sha256,
        payload_files: files.files.len(),
        artifacts,
        changes,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// A file to write: path relative to the output dir, contents, mode.
type PendingFile = (String, Vec<u8>, u32);

/// The SHA-256 of the rendezvous certificate (made on first use) for an https rendezvous.
fn rendezvous_cert_sha256(
    cluster: &model::Cluster,
    out: &Path,
) -> Result<Option<Sha256Hex>, BuildError> {
    if !cluster.rendezvous.url.is_https() {
        return Ok(None);
    }
    let cert = rendezvous_cert::load_or_create(out, &cluster.rendezvous.url)?;
    cert.sha256
        .parse::<Sha256Hex>()
        .map(Some)
        .map_err(|_| BuildError::Fingerprint(cert.sha256.clone()))
}

/// The payload's file set and its tarball.
fn pack_payload(
    input: &Input<'_>,
    bake: &Bake,
    opts: &BuildOptions,
    out: &Path,
    spec_dir: &Path,
) -> Result<(FileSet, Vec<u8>), BuildError> {
    let agent = std::fs::read(&opts.agent_bin).map_err(|source| BuildError::AgentBin {
        path: opts.agent_bin.clone(),
        source,
    })?;
    let addons = crate::addons::bake::bake(
        input.cluster,
        &crate::addons::bake::Inputs {
            source: &opts.addons,
            charts: &opts.helm,
            spec_dir,
            api_address: model::plan::api_address(input.cluster, &input.plan.nodes),
        },
    )?;
    // The same `--artifacts DIR` as the add-ons': the distribution's release, when it has one.
    let distribution = match &opts.addons {
        crate::addons::source::Source::Artifacts(dir) => distribution::files(input.cluster, dir)?,
        crate::addons::source::Source::Cache(_) => Vec::new(),
    };
    let files = payload_files(input, bake, agent, &addons, distribution)?;
    tracing::info!(files = files.files.len(), "packing the agent payload");
    let tgz = payload::pack(&files, opts.mtime).map_err(|source| BuildError::Io {
        path: out.join(PAYLOAD_FILE),
        source,
    })?;
    Ok((files, tgz))
}

/// One node's cloud-init files and its seed volume, under `nodes/<name>/`.
fn node_files(
    out: &Path,
    node: &str,
    seed: cloud_init::NodeSeed,
) -> Result<[PendingFile; 4], BuildError> {
    let dir = format!("{NODES_DIR}/{node}");
    let img = seed_volume::build(&seed.files()).map_err(|source| BuildError::Io {
        path: out.join(format!("{dir}/{SEED_FILE}")),
        source,
    })?;
    Ok([
        (
            format!("{dir}/{}", cloud_init::META_DATA),
            seed.meta_data.into_bytes(),
            0o644,
        ),
        (
            format!("{dir}/{}", cloud_init::NETWORK_CONFIG),
            seed.network_config.into_bytes(),
            0o644,
        ),
        (
            format!("{dir}/{}", cloud_init::USER_DATA),
            seed.user_data.into_bytes(),
            0o600,
        ),
        (format!("{dir}/{SEED_FILE}"), img, 0o600),
    ])
}

/// Image recipes: provisioning scripts, Packer templates, Vagrantfile, Proxmox script.
fn recipe_files(cluster: &model::Cluster, plan: &model::Plan) -> Vec<PendingFile> {
    [
        crate::render::images::render(cluster, plan),
        crate::render::packer::render(cluster, plan),
        crate::render::vagrant::render(cluster, plan),
        crate::render::proxmox::render(cluster, plan),
    ]
    .into_iter()
    .flat_map(|set| set.files)
    .map(|(path, a)| (path, a.contents, a.mode))
    .collect()
}

/// Writes every pending file into `out` at once; what was written, for the report.
fn write_pending(
    out: &Path,
    pending: Vec<PendingFile>,
) -> Result<Vec<WrittenArtifact>, BuildError> {
    let artifacts: Vec<WrittenArtifact> = pending
        .iter()
        .map(|(rel, bytes, _)| WrittenArtifact {
            path: rel.clone(),
            bytes: bytes.len() as u64,
            sha256: payload::sha256_hex(bytes),
        })
        .collect();
    let writes: Vec<(PathBuf, Vec<u8>, u32)> = pending
        .into_iter()
        .map(|(rel, bytes, mode)| (out.join(rel), bytes, mode))
        .collect();
    write::write_all_atomic(&writes).map_err(|(path, source)| BuildError::Io { path, source })?;
    Ok(artifacts)
}

/// The human form of the report: one line per artifact with size and SHA-256.
pub fn report_table(r: &BuildReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "cluster {} (id {}){}: {} files in the payload, built in {} ms",
        r.cluster,
        r.cluster_id,
        if r.new_secret {
            ", new cluster secret"
        } else {
            ""
        },
        r.payload_files,
        r.elapsed_ms
    );
    let _ = writeln!(s, "wrote into {}:", r.out_dir.display());
    let w = r
        .artifacts
        .iter()
        .map(|a| a.path.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(s, "  {:<w$}  {:>10}  SHA-256", "FILE", "BYTES");
    for a in &r.artifacts {
        let _ = writeln!(s, "  {:<w$}  {:>10}  {}", a.path, a.bytes, a.sha256);
    }
    if let Some(d) = &r.changes {
        s.push_str(&crate::plan_table::changes(d));
    }
    s
}
