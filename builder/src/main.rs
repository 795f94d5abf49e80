//! The `muster` command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use muster_build::spec_source::{self, LoadError};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "muster",
    version,
    about = "Plan, build and rehearse highly available Kubernetes clusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a cluster spec and print the resolved machines, RAM budget and etcd quorum.
    Plan {
        /// The cluster spec (YAML). Without it, the built-in default cluster.
        spec: Option<PathBuf>,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        /// A previous `muster build` output dir: mark new (+), changed (~) and removed
        /// nodes against it.
        #[arg(long, value_name = "OUT")]
        previous: Option<PathBuf>,
    },
    /// Render every file the cluster's machines need: the agent payload (tar.gz for the
    /// image) and a NoCloud seed volume per node.
    Build {
        /// The cluster spec (YAML). Without it, the built-in default cluster.
        spec: Option<PathBuf>,
        /// Output dir; it records the cluster and keeps its secret across rebuilds.
        #[arg(long)]
        out: PathBuf,
        /// The nodeagent binary to pack [default: `nodeagent` next to this executable].
        #[arg(long)]
        agent_bin: Option<PathBuf>,
        /// Offline: take the pinned add-on manifests from DIR/addons/<name>-<version>.yaml
        /// (checked against their pins) instead of the cache (`MUSTER_ADDON_CACHE`, default
        /// ~/.cache/muster/addons, filled from the pinned URLs). When DIR also holds the
        /// distribution's release (as `muster artifacts fetch` writes it: k3s's binary,
        /// airgap images and sha256sum-amd64.txt; kubeadm's .debs), the payload carries
        /// it, checked, for `muster upgrade` (a k3s upgrade needs it). A pinned chart
        /// (cilium's) is DIR/addons/<name>-<version>.tgz.
        #[arg(long, value_name = "DIR")]
        artifacts: Option<PathBuf>,
        /// The Helm 3 that renders add-ons published as charts (cilium) with
        /// `helm template` [default: `helm` on PATH; needed only for such add-ons].
        #[arg(long, value_name = "PATH")]
        helm: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve the rendezvous: the meeting point where nodes find each other.
    Rendezvous(RendezvousArgs),
    /// Show every planned node as the rendezvous sees it: live or absent, phase, attempts,
    /// last error; who initialized, who holds the join slots; whether the API answers.
    /// Exit 0 when every planned node is done, 1 otherwise.
    Status {
        /// The `muster build` output dir (cluster secret and baked config).
        #[arg(long)]
        out: PathBuf,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
        /// Give up on the rendezvous and the API endpoint after this long.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Roll the rebuilt build dir's release onto the running cluster: publish it (version,
    /// payload digest, payload as sealed chunks or at --url) to the rendezvous; the agents
    /// upgrade one node at a time, control planes first. `--status` shows the roll,
    /// `--resume` continues a roll a failure stopped.
    Upgrade {
        /// The rebuilt `muster build` output dir (cluster secret, baked config, payload).
        #[arg(long)]
        out: PathBuf,
        /// The operator serves payload.tar.gz at this URL; only its digest is published.
        #[arg(long, conflicts_with_all = ["status", "resume"])]
        url: Option<String>,
        /// Show the roll: release, lock holder, each node's phase and step, what stopped it.
        #[arg(long, conflicts_with = "resume")]
        status: bool,
        /// Resume a roll a failure stopped (after fixing the cause).
        #[arg(long)]
        resume: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// Give up on each rendezvous request after this long.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// How OS-update agents share the cluster's upgrade lock over FleetLock (Zincati on
    /// Fedora CoreOS): the base URL with the cluster's token and Zincati's config snippet.
    /// Reads the build dir only.
    Fleetlock {
        /// The `muster build` output dir (cluster secret and baked config).
        #[arg(long)]
        out: PathBuf,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fetch the admin kubeconfig from the rendezvous and write it (mode 0600) pointed at the
    /// API VIP, or, when the VIP does not answer with a valid certificate, at the first
    /// control plane that does (with a warning).
    Kubeconfig {
        /// The `muster build` output dir (cluster secret and baked config).
        #[arg(long)]
        out: PathBuf,
        /// Where to write the kubeconfig [default: OUT/kubeconfig].
        #[arg(long)]
        write: Option<PathBuf>,
        /// Give up on each endpoint (connect, then TLS handshake) after this long.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Take nodes out of the cluster for good: cordon, drain, delete the Node, remove its
    /// etcd member (refused if etcd's quorum would not survive), tombstone it at the
    /// rendezvous so its agent stops. `--prune`: every node the rebuilt plan dropped.
    /// `--forget-tombstone NODE…`: clear removed nodes' tombstones so replacements of the
    /// same names can join.
    Remove {
        /// The nodes to remove (none with --prune).
        #[arg(required_unless_present = "prune", conflicts_with = "prune")]
        nodes: Vec<String>,
        /// Remove every Node and etcd member the plan of this build does not name.
        #[arg(long)]
        prune: bool,
        /// Remove nothing: clear the rendezvous tombstones of the named (already removed)
        /// nodes, so a machine of the same name joins as a new node without `muster reset`.
        #[arg(long, conflicts_with_all = ["prune", "yes"])]
        forget_tombstone: bool,
        /// The `muster build` output dir (cluster secret and baked config).
        #[arg(long)]
        out: PathBuf,
        /// Do not ask: the node names are not typed to confirm.
        #[arg(long)]
        yes: bool,
        /// Print the report as JSON (progress stays on stderr).
        #[arg(long)]
        json: bool,
        /// Give up on one request (rendezvous, API server, etcd) after this long.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Give up on a drain (pods that will not leave, a PodDisruptionBudget) after this.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        drain_timeout: std::time::Duration,
    },
    /// Start over: retire the cluster's assembly at the rendezvous (raise its generation,
    /// delete its init record, join material and removal tombstones) so machines booted
    /// from this same output assemble a new cluster. Tear the old machines down first.
    Reset {
        /// The `muster build` output dir (cluster secret and baked config).
        #[arg(long)]
        out: PathBuf,
        /// Do not ask: the cluster name is not typed to confirm.
        #[arg(long)]
        yes: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Give up on the rendezvous after this long.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// The whole cluster on this machine, one network namespace per node (needs root):
    /// `up`, `status`, `stop`/`start`/`cut`/`heal` a node, `exec` on it, `down`.
    Lab(muster_lab::cli::LabArgs),
    /// Node images.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Files for air-gapped image builds.
    Artifacts {
        #[command(subcommand)]
        command: ArtifactsCommand,
    },
}

#[derive(Debug, clap::Args)]
struct RendezvousArgs {
    /// Address to listen on, e.g. 10.0.0.2:7443.
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// Directory of the durable state (created if missing).
    #[arg(long)]
    data: PathBuf,
    /// Directory of the served clusters' signing keys, `<cluster_id>.key` [default: DATA/keys].
    #[arg(long)]
    keys: Option<PathBuf>,
    /// TLS certificate (PEM), as generated by `muster build`.
    #[arg(long, required_unless_present = "insecure_http", requires = "key")]
    cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS (values stay sealed; requests stay signed).
    #[arg(long, conflicts_with_all = ["cert", "key"])]
    insecure_http: bool,
    /// Most live members per cluster.
    #[arg(long, default_value_t = muster_rendezvous::Limits::default().max_members)]
    max_members: usize,
    /// Most records per cluster.
    #[arg(long, default_value_t = muster_rendezvous::Limits::default().max_records)]
    max_records: usize,
    /// Sustained requests per second allowed per client.
    #[arg(long, default_value_t = muster_rendezvous::Limits::default().rate_per_second)]
    rate: f64,
    /// Most watches one client holds open at once (16 times as many per peer IP).
    #[arg(long, default_value_t = muster_rendezvous::Limits::default().max_watches_per_client)]
    max_watches_per_client: usize,
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Build the node image directly (no Packer): Debian base by debootstrap, the agent
    /// payload, a qcow2 with its kernel and initrd, and a Vagrant box for libvirt. Needs root.
    Build {
        /// The cluster spec (YAML). Without it, the built-in default cluster.
        spec: Option<PathBuf>,
        /// Where the images, SHA256SUMS and image.json go.
        #[arg(long)]
        out: PathBuf,
        /// The agent payload from `muster build` (payload.tar.gz with SHA256SUMS inside).
        #[arg(long)]
        payload: PathBuf,
        /// Cache for .debs and debootstrapped bases [default: ~/.cache/muster/image].
        #[arg(long, env = "MUSTER_IMAGE_CACHE")]
        cache: Option<PathBuf>,
        /// Size of the image's disk (ext4, whole disk); grow it per node.
        #[arg(long, default_value = "4G", value_parser = parse_disk_size)]
        disk_size: u64,
        /// Take kubeadm/kubelet/kubectl (a flat apt repository) or k3s (binary, airgap
        /// images, sha256sum-amd64.txt) from this local directory instead of upstream;
        /// signatures and sums are checked the same way. Also the container images to
        /// pre-pull (DIR/images/*.tar + SHA256SUMS) and the pinned add-on manifests
        /// (DIR/addons/). `muster artifacts fetch` fills it.
        #[arg(long, conflicts_with = "allow_incomplete")]
        artifacts: Option<PathBuf>,
        /// Build without the Kubernetes distribution and the pre-pulled images, on purpose
        /// (listed as left out).
        #[arg(long)]
        allow_incomplete: bool,
        /// Registry hosts in containerd's hosts.toml layout (DIR/<registry>/hosts.toml) for
        /// pulling the images without --artifacts (`ctr --hosts-dir`): a local mirror, a
        /// plain-HTTP registry, a private CA.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["artifacts", "allow_incomplete"])]
        registry_hosts: Option<PathBuf>,
        /// TEST ONLY: the apt repository or release URL to install from instead of upstream
        /// (with --artifacts, the images still come from there).
        #[arg(long, hide = true, conflicts_with = "allow_incomplete")]
        source_override: Option<String>,
        /// TEST ONLY: the fingerprint of the key that signs `--source-override`'s repository.
        #[arg(long, hide = true, requires = "source_override")]
        source_key_fingerprint: Option<String>,
        /// Print the build report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ArtifactsCommand {
    /// Download what `muster image build --artifacts DIR` needs for the spec (needs the
    /// internet): the flat apt repository subset for kubeadm, or k3s's release files;
    /// signatures and sums checked. Then the pinned add-on manifests and the container
    /// images the nodes run (pulled and exported with this machine's containerd `ctr`).
    Fetch {
        /// The cluster spec (YAML). Without it, the built-in default cluster.
        spec: Option<PathBuf>,
        /// The directory to fill (made complete or not at all).
        #[arg(long)]
        out: PathBuf,
        /// Registry hosts in containerd's hosts.toml layout (DIR/<registry>/hosts.toml) for
        /// the image pulls (`ctr --hosts-dir`): a local mirror, a plain-HTTP registry, a
        /// private CA.
        #[arg(long, value_name = "DIR")]
        registry_hosts: Option<PathBuf>,
        /// The Helm 3 that renders add-ons published as charts (cilium), to learn their
        /// images [default: `helm` on PATH; needed only for such add-ons].
        #[arg(long, value_name = "PATH")]
        helm: Option<PathBuf>,
        /// TEST ONLY: the apt repository or release URL to fetch the distribution from
        /// instead of upstream.
        #[arg(long, hide = true)]
        source_override: Option<String>,
        /// TEST ONLY: the fingerprint of the key that signs `--source-override`'s repository.
        #[arg(long, hide = true, requires = "source_override")]
        source_key_fingerprint: Option<String>,
        /// Print what was fetched as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_disk_size(text: &str) -> Result<u64, String> {
    match muster_build::image::disk::parse_size(text) {
        Some(b) if b >= 1 << 30 => Ok(b),
        Some(_) => Err("at least 1G: the base alone takes about 500 MiB".into()),
        None => Err("a size like 2G, 4096M".into()),
    }
}

/// Exit code for an invalid spec; usage errors exit 2 (clap's own).
const EXIT_INVALID: u8 = 1;

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            if let Some(LoadError::Invalid(spec_err)) = err.downcast_ref::<LoadError>() {
                eprint!("{}", spec_err.problems);
                eprintln!(
                    "{}: {} error(s); nothing was done",
                    spec_err.file,
                    spec_err.problems.errors().count()
                );
            } else {
                eprintln!("error: {err:#}");
            }
            ExitCode::from(EXIT_INVALID)
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MUSTER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: a log file or the journal (`muster
        // rendezvous` as a service) gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Plan {
            spec,
            json,
            previous,
        } => plan(spec, json, previous),
        Command::Build {
            spec,
            out,
            agent_bin,
            artifacts,
            helm,
            json,
        } => build(spec, out, agent_bin, artifacts, helm, json),
        Command::Status { out, json, timeout } => status(out, json, timeout),
        Command::Upgrade {
            out,
            url,
            status,
            resume,
            json,
            timeout,
        } => upgrade(out, url, status, resume, json, timeout),
        Command::Fleetlock { out, json } => fleetlock(out, json),
        Command::Kubeconfig {
            out,
            write,
            timeout,
        } => kubeconfig(out, write, timeout),
        Command::Remove {
            nodes,
            forget_tombstone: true,
            out,
            json,
            timeout,
            ..
        } => forget_tombstones(nodes, out, json, timeout),
        Command::Remove {
            nodes,
            prune,
            out,
            yes,
            json,
            timeout,
            drain_timeout,
            ..
        } => remove(nodes, prune, out, yes, json, timeout, drain_timeout),
        Command::Reset {
            out,
            yes,
            json,
            timeout,
        } => reset(out, yes, json, timeout),
        Command::Lab(args) => muster_lab::cli::run(args),
        Command::Rendezvous(args) => {
            serve_rendezvous(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Image {
            command:
                ImageCommand::Build {
                    spec,
                    out,
                    payload,
                    cache,
                    disk_size,
                    artifacts,
                    allow_incomplete,
                    registry_hosts,
                    source_override,
                    source_key_fingerprint,
                    json,
                },
        } => {
            use muster_build::image::kubernetes::Source;
            let images = artifacts.clone();
            let kubernetes = Source::from_flags(
                artifacts,
                allow_incomplete,
                source_override,
                source_key_fingerprint,
            );
            image_build(ImageBuildArgs {
                spec,
                out,
                payload,
                cache,
                disk_size,
                kubernetes,
                images,
                registry_hosts,
                json,
            })
        }
        Command::Artifacts {
            command:
                ArtifactsCommand::Fetch {
                    spec,
                    out,
                    registry_hosts,
                    helm,
                    source_override,
                    source_key_fingerprint,
                    json,
                },
        } => {
            let source = muster_build::image::kubernetes::Source::from_flags(
                None,
                false,
                source_override,
                source_key_fingerprint,
            );
            artifacts_fetch(spec, out, registry_hosts, helm, &source, json)
        }
    }
}

/// `muster plan`.
fn plan(spec: Option<PathBuf>, json: bool, previous: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let loaded = spec_source::load(spec.as_deref())?;
    let plan = &loaded.plan;
    let diff = match &previous {
        Some(dir) => {
            let nodes = muster_build::bake::previous_nodes(dir)?.with_context(|| {
                format!(
                    "{} has no {}: not a muster build output dir",
                    dir.display(),
                    muster_build::bake::CLUSTER_FILE
                )
            })?;
            Some(model::plan_diff::diff(&nodes, &plan.nodes))
        }
        None => None,
    };
    if json {
        let mut value = serde_json::to_value(plan).context("serializing the plan")?;
        if let (Some(d), Some(obj)) = (&diff, value.as_object_mut()) {
            obj.insert(
                "changes".into(),
                serde_json::to_value(d).context("serializing the changes")?,
            );
        }
        let text = serde_json::to_string_pretty(&value).context("serializing the plan")?;
        println!("{text}");
    } else {
        print!(
            "{}{}",
            muster_build::plan_table::render_against(plan, diff.as_ref()),
            muster_build::addons::render(&loaded.cluster)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `muster build`.
fn build(
    spec: Option<PathBuf>,
    out: PathBuf,
    agent_bin: Option<PathBuf>,
    artifacts: Option<PathBuf>,
    helm: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let loaded = spec_source::load(spec.as_deref())?;
    // Spec warnings (e.g. a placeholder datastore password) on stderr: stdout may be JSON.
    eprint!("{}", loaded.warnings);
    if loaded.cluster.access.ssh_authorized_keys.is_empty() {
        eprintln!(
            "warning: spec.access.sshAuthorizedKeys is empty: nobody can log in to the nodes \
             over ssh, and the Packer builds (packer/*/http/user-data) cannot log in to their \
             build VM; add a key"
        );
    }
    let helm = muster_build::addons::chart::Helm::from_flag(helm);
    let opts = muster_build::bake::BuildOptions::new(agent_bin, artifacts, helm)?;
    let report = muster_build::bake::build(&loaded, &out, &opts)
        .with_context(|| format!("building {} into {}", loaded.origin, out.display()))?;
    if json {
        let text = serde_json::to_string_pretty(&report).context("serializing the report")?;
        println!("{text}");
    } else {
        print!("{}", muster_build::bake::report_table(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// `muster upgrade`: publish, `--status` (exit 0 when every node runs the release, 1
/// otherwise) or `--resume`.
fn upgrade(
    out: PathBuf,
    url: Option<String>,
    show: bool,
    resume: bool,
    json: bool,
    timeout: std::time::Duration,
) -> anyhow::Result<ExitCode> {
    use muster_build::ops::upgrade as up;
    let dir = muster_build::ops::BuildDir::load(&out)?;
    let rt = runtime()?;
    let print = |value: &dyn erased::Json| -> anyhow::Result<()> {
        println!("{}", value.pretty()?);
        Ok(())
    };
    if show {
        let s = rt.block_on(up::status(&dir, timeout))?;
        if json {
            print(&s)?;
        } else {
            print!("{}", up::render(&s));
        }
        return Ok(if s.done {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    if resume {
        let r = rt.block_on(up::resume(&dir, timeout))?;
        if json {
            print(&r)?;
        } else {
            println!(
                "resume request {} for release {} written; the stopped node retries its step",
                r.count, r.sequence
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let release = rt.block_on(up::publish(&dir, url, timeout, |done, total| {
        eprint!("\rpublishing payload: chunk {done}/{total}");
        if done == total {
            eprintln!();
        }
    }))?;
    if json {
        print(&release)?;
    } else {
        println!(
            "published release {} ({}, sha256 {}); follow it with: muster upgrade --out {} --status",
            release.sequence,
            release.version,
            release.payload.sha256,
            out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn fleetlock(out: PathBuf, json: bool) -> anyhow::Result<ExitCode> {
    use muster_build::ops::fleetlock;
    let dir = muster_build::ops::BuildDir::load(&out)?;
    let c = fleetlock::config(&dir);
    if json {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        print!("{}", fleetlock::render(&c));
    }
    Ok(ExitCode::SUCCESS)
}

/// JSON printing for the different result types of one command.
mod erased {
    pub trait Json {
        fn pretty(&self) -> anyhow::Result<String>;
    }
    impl<T: serde::Serialize> Json for T {
        fn pretty(&self) -> anyhow::Result<String> {
            Ok(serde_json::to_string_pretty(self)?)
        }
    }
}

/// `muster status`: exit 0 when healthy, 1 otherwise.
fn status(out: PathBuf, json: bool, timeout: std::time::Duration) -> anyhow::Result<ExitCode> {
    let dir = muster_build::ops::BuildDir::load(&out)?;
    let status = runtime()?.block_on(muster_build::ops::status::gather(&dir, timeout))?;
    if json {
        let text = serde_json::to_string_pretty(&status).context("serializing the status")?;
        println!("{text}");
    } else {
        print!("{}", muster_build::ops::status::render(&status));
    }
    Ok(if status.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `muster reset`: asks for the cluster name unless `--yes`.
fn reset(
    out: PathBuf,
    yes: bool,
    json: bool,
    timeout: std::time::Duration,
) -> anyhow::Result<ExitCode> {
    use muster_build::ops::reset;
    let dir = muster_build::ops::BuildDir::load(&out)?;
    let name = dir.baked.spec.name.to_string();
    if !yes {
        use std::io::{BufRead as _, IsTerminal as _, Write as _};
        anyhow::ensure!(
            std::io::stdin().is_terminal(),
            "muster reset retires cluster `{name}`: confirm with --yes (stdin is not a terminal)"
        );
        eprint!(
            "This retires cluster `{name}` at {}: nodes of its current assembly are never \
             joined again. Type the cluster name to go on: ",
            dir.rendezvous_url()
        );
        std::io::stderr().flush().context("prompt")?;
        let mut typed = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut typed)
            .context("reading the confirmation")?;
        anyhow::ensure!(
            reset::confirmed(&typed, &name),
            "not confirmed (typed `{}`, not `{name}`): nothing was changed",
            typed.trim()
        );
    }
    let report = runtime()?.block_on(reset::reset(&dir, timeout))?;
    if json {
        let text = serde_json::to_string_pretty(&report).context("serializing the report")?;
        println!("{text}");
    } else {
        print!("{}", reset::render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// `muster remove`.
/// `muster remove --forget-tombstone NODE…`: nothing is taken down, so no confirmation.
fn forget_tombstones(
    nodes: Vec<String>,
    out: PathBuf,
    json: bool,
    timeout: std::time::Duration,
) -> anyhow::Result<ExitCode> {
    use muster_build::ops::remove;
    let dir = muster_build::ops::BuildDir::load(&out)?;
    let mut progress = |line: &str| eprintln!("{line}");
    let cleared = runtime()?.block_on(remove::forget_tombstones(
        &dir,
        &nodes,
        timeout,
        &mut progress,
    ))?;
    if json {
        let text = serde_json::to_string_pretty(&cleared).context("serializing the report")?;
        println!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}

fn remove(
    nodes: Vec<String>,
    prune: bool,
    out: PathBuf,
    yes: bool,
    json: bool,
    timeout: std::time::Duration,
    drain_timeout: std::time::Duration,
) -> anyhow::Result<ExitCode> {
    use muster_build::ops::remove;
    let dir = muster_build::ops::BuildDir::load(&out)?;
    let what = if prune {
        "every node the plan does not name".to_string()
    } else {
        nodes.join(" ")
    };
    if !yes {
        use std::io::{BufRead as _, IsTerminal as _, Write as _};
        anyhow::ensure!(
            std::io::stdin().is_terminal(),
            "muster remove takes {what} out of cluster `{}` for good: confirm with --yes (stdin is not a terminal)",
            dir.baked.spec.name
        );
        let expect = if prune {
            "prune".to_string()
        } else {
            what.clone()
        };
        eprint!(
            "This drains and deletes {what} and removes their etcd members; they never rejoin. \
             Type `{expect}` to go on: "
        );
        std::io::stderr().flush().context("prompt")?;
        let mut typed = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut typed)
            .context("reading the confirmation")?;
        anyhow::ensure!(
            typed.trim() == expect,
            "not confirmed (typed `{}`, not `{expect}`): nothing was changed",
            typed.trim()
        );
    }
    let opts = remove::Options {
        timeout,
        drain_timeout,
    };
    let mut progress = |line: &str| eprintln!("{line}");
    let rt = runtime()?;
    let report = if prune {
        rt.block_on(remove::prune(&dir, opts, &mut progress))?
    } else {
        rt.block_on(remove::remove(&dir, &nodes, opts, &mut progress))?
    };
    if json {
        let text = serde_json::to_string_pretty(&report).context("serializing the report")?;
        println!("{text}");
    } else {
        print!("{}", remove::render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// `muster kubeconfig`.
fn kubeconfig(
    out: PathBuf,
    write: Option<PathBuf>,
    timeout: std::time::Duration,
) -> anyhow::Result<ExitCode> {
    let dir = muster_build::ops::BuildDir::load(&out)?;
    let path = write.unwrap_or_else(|| out.join(muster_build::ops::kubeconfig::DEFAULT_FILE));
    let written = runtime()?.block_on(muster_build::ops::kubeconfig::run(&dir, &path, timeout))?;
    if let Some(w) = written.choice.warning() {
        eprintln!("warning: {w}");
    }
    println!(
        "wrote {} (server {}, {})",
        written.path.display(),
        written.choice.server(),
        written.choice.chosen.label
    );
    Ok(ExitCode::SUCCESS)
}

/// What `muster image build` was asked for.
struct ImageBuildArgs {
    spec: Option<PathBuf>,
    out: PathBuf,
    payload: PathBuf,
    cache: Option<PathBuf>,
    disk_size: u64,
    kubernetes: muster_build::image::kubernetes::Source,
    images: Option<PathBuf>,
    registry_hosts: Option<PathBuf>,
    json: bool,
}

/// `muster image build`.
fn image_build(a: ImageBuildArgs) -> anyhow::Result<ExitCode> {
    let (out, json) = (a.out.clone(), a.json);
    let opts = muster_build::image::BuildOptions {
        spec: spec_source::load(a.spec.as_deref())?,
        out: a.out,
        payload: Some(a.payload),
        cache: a
            .cache
            .unwrap_or_else(muster_build::image::default_cache_dir),
        disk_bytes: a.disk_size,
        kubernetes: a.kubernetes,
        images: a.images,
        registry_hosts: a.registry_hosts,
        variant: None,
    };
    let report = muster_build::image::build(&opts).context("image build failed")?;
    if json {
        let text = serde_json::to_string_pretty(&report).context("serializing the report")?;
        println!("{text}");
    } else {
        print!("{}", muster_build::image::summary(&report, &out));
    }
    Ok(ExitCode::SUCCESS)
}

/// `muster artifacts fetch`.
fn artifacts_fetch(
    spec: Option<PathBuf>,
    out: PathBuf,
    registry_hosts: Option<PathBuf>,
    helm: Option<PathBuf>,
    source: &muster_build::image::kubernetes::Source,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use muster_build::image::artifacts;
    let loaded = spec_source::load(spec.as_deref())?;
    let puller = muster_build::image::prepull::Puller {
        hosts_dir: registry_hosts,
        ..Default::default()
    };
    let helm = muster_build::addons::chart::Helm::from_flag(helm);
    let opts = artifacts::FetchOptions {
        puller: &puller,
        charts: &helm,
        source,
    };
    let fetched = artifacts::fetch(&loaded, &out, &opts).with_context(|| {
        format!(
            "fetching the artifacts of {} into {}",
            loaded.origin,
            out.display()
        )
    })?;
    if json {
        let text = serde_json::to_string_pretty(&fetched).context("serializing the list")?;
        println!("{text}");
    } else {
        for a in &fetched {
            println!("{}  {} ({} bytes)", a.sha256, a.name, a.bytes);
        }
        println!(
            "{} files in {}: build with `muster image build --artifacts {}`",
            fetched.len(),
            out.display(),
            out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn serve_rendezvous(args: RendezvousArgs) -> anyhow::Result<()> {
    use muster_rendezvous::{Limits, tls};
    let limits = Limits {
        max_members: args.max_members,
        max_records: args.max_records,
        rate_per_second: args.rate,
        rate_burst: args.rate.max(1.0) * 4.0,
        max_watches_per_client: args.max_watches_per_client,
        ..Limits::default()
    };
    let tls_config = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some(tls::load_server_config(cert, key)?),
        _ => None,
    };
    let keys = args.keys.clone().unwrap_or_else(|| args.data.join("keys"));
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let svc = muster_rendezvous::open(&args.data, &keys, limits)
            .with_context(|| format!("opening the rendezvous data in {}", args.data.display()))?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let scheme = if tls_config.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!(
            "rendezvous serving {scheme}://{} (data {}, keys {})",
            listener.local_addr().unwrap_or(args.listen),
            args.data.display(),
            keys.display()
        );
        muster_rendezvous::run(listener, tls_config, svc, shutdown_signal()).await;
        tracing::info!("rendezvous stopped");
        Ok(())
    })
}

/// Resolves on SIGTERM or ctrl-c.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot watch for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}
