//! `muster lab …`: the command line over [`crate::Lab`].

use crate::{DEFAULT_STATE_DIR, Lab, UpOptions, status};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct LabArgs {
    /// The lab's state dir (lab.json, build output, node disks, logs).
    #[arg(long, global = true, default_value = DEFAULT_STATE_DIR)]
    state: PathBuf,
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Debug, clap::Subcommand)]
enum LabCommand {
    /// Assemble the cluster on this machine: one network namespace per planned node, the
    /// real rendezvous, agents, etcd and VIP provider, stand-ins for kubeadm/k3s. Needs root.
    Up {
        /// The cluster spec (YAML). Without it, the built-in default (3 control planes
        /// behind a VIP, 3 workers).
        spec: Option<PathBuf>,
        /// Directory of the stand-in binaries [default: the directory of this executable].
        #[arg(long)]
        standins: Option<PathBuf>,
        /// The nodeagent binary to pack [default: `nodeagent` next to this executable].
        #[arg(long)]
        agent_bin: Option<PathBuf>,
        /// Give up waiting for the nodes after this long (the lab stays up to inspect)
        /// [default: 5m, 20m with --vms].
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<std::time::Duration>,
        /// Print the final status as JSON (progress goes to stderr).
        #[arg(long)]
        json: bool,
        /// QEMU VMs from a TEST image instead of namespaces (root, minutes under TCG);
        /// runs in the foreground until Ctrl-C.
        #[arg(long, conflicts_with = "json")]
        vms: bool,
        /// With --vms: stop the VMs once assembled and the times are printed.
        #[arg(long, requires = "vms")]
        exit: bool,
    },
    /// Every node's role, IP, phase and daemons, the VIP holder. Exit 1 when not healthy.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Halt a node: kill every process on it (agent, etcd, API server, VIP daemons).
    Stop { node: String },
    /// Boot a halted node: the kubelet stand-in restarts its static pods (k3s: the enabled
    /// k3s units start), then its daemons and agent start.
    Start { node: String },
    /// Pull a node's network cable (link down).
    Cut { node: String },
    /// Plug it back in.
    Heal { node: String },
    /// Run a command on a node: its namespace, its root in MUSTER_NODE_ROOT, the stand-ins
    /// first on PATH. `muster lab exec lab-cp-1 -- etcdctl member list`
    Exec {
        node: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Kill everything, delete the namespaces and the state dir; exit 1 if anything is left.
    Down,
    /// Build the TEST node image the VM lab boots: `muster image build` plus muster's
    /// stand-ins for kubeadm, k3s and kube-apiserver, chrony pointed at the spec's gateway
    /// and a reporter on ttyS1. Never for real clusters. (Was `muster image build
    /// --test-standins DIR`.)
    Image {
        /// The cluster spec (YAML). Without it, the built-in default cluster.
        spec: Option<PathBuf>,
        /// Output dir for the image and its report.
        #[arg(long)]
        out: PathBuf,
        /// The payload from `muster build` (the agent and the cluster's files).
        #[arg(long)]
        payload: Option<PathBuf>,
        /// Directory of the stand-in binaries [default: the directory of this executable].
        #[arg(long)]
        standins: Option<PathBuf>,
        /// Cache for .debs and debootstrapped bases [default: ~/.cache/muster/image].
        #[arg(long, env = "MUSTER_IMAGE_CACHE")]
        cache: Option<PathBuf>,
        /// Install the distribution through the user's install path
        /// (images/install-kubernetes.sh) from this directory, as `muster image build
        /// --artifacts DIR` does, and pre-pull the images in DIR/images/; the stand-ins for
        /// what it installed are then not copied in. Without it (and without
        /// --source-override), the stand-ins replace the distribution.
        #[arg(long)]
        artifacts: Option<PathBuf>,
        /// TEST ONLY: install the distribution from this apt repository or release URL
        /// (as `muster image build --source-override`).
        #[arg(long, hide = true)]
        source_override: Option<String>,
        /// TEST ONLY: the fingerprint of the key that signs `--source-override`'s repository.
        #[arg(long, hide = true, requires = "source_override")]
        source_key_fingerprint: Option<String>,
        /// Keep cloud-init as the product image has it (every stage and module, every ssh
        /// host key type) instead of trimming it to the modules the seeds use: slower
        /// first boots, for tests that check cloud-init as a user's image runs it.
        #[arg(long)]
        full_cloud_init: bool,
        /// Print the build report as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: LabArgs) -> anyhow::Result<ExitCode> {
    let state = args.state;
    match args.command {
        LabCommand::Up {
            spec,
            standins,
            agent_bin,
            timeout,
            json,
            vms,
            exit,
        } => {
            if vms {
                let timeout = timeout.unwrap_or(std::time::Duration::from_secs(20 * 60));
                up_vms(state, spec, standins, agent_bin, timeout, exit)
            } else {
                let timeout = timeout.unwrap_or(std::time::Duration::from_secs(5 * 60));
                up(state, spec, standins, agent_bin, timeout, json)
            }
        }
        LabCommand::Image {
            spec,
            out,
            payload,
            standins,
            cache,
            artifacts,
            source_override,
            source_key_fingerprint,
            full_cloud_init,
            json,
        } => {
            // No source: the stand-ins replace the distribution (images/test-image.sh).
            let kubernetes = muster_build::image::kubernetes::Source::from_flags(
                artifacts.clone(),
                true,
                source_override,
                source_key_fingerprint,
            );
            test_image(TestImageArgs {
                spec,
                out,
                payload,
                standins,
                cache,
                kubernetes,
                images: artifacts,
                full_cloud_init,
                json,
            })
        }
        LabCommand::Status { json } => lab_status(&state, json),
        LabCommand::Stop { node } => {
            Lab::open(&state)?.stop(&node)?;
            println!("{node}: halted (every process killed, link down)");
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Start { node } => {
            Lab::open(&state)?.start(&node)?;
            println!(
                "{node}: booted (static pods or enabled k3s units restarted, daemons and agent started)"
            );
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Cut { node } => {
            Lab::open(&state)?.cut(&node)?;
            println!("{node}: link down");
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Heal { node } => {
            Lab::open(&state)?.heal(&node)?;
            println!("{node}: link up");
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Exec { node, command } => exec(&state, &node, &command),
        LabCommand::Down => down(&state),
    }
}

/// `muster lab status`: exit 0 when the lab is healthy.
fn lab_status(state: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let lab = Lab::open(state)?;
    let s = lab.status()?;
    print_status(&s, json)?;
    Ok(exit(s.healthy))
}

/// `muster lab exec`: the command's own exit code (1 when it has none that fits).
fn exec(state: &Path, node: &str, command: &[String]) -> anyhow::Result<ExitCode> {
    let lab = Lab::open(state)?;
    let status = lab
        .command(node, command)?
        .stdin(std::process::Stdio::inherit())
        .status()
        .with_context(|| format!("running {command:?} on {node}"))?;
    Ok(ExitCode::from(
        status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(1),
    ))
}

/// `muster lab down`: exit 1 when something was left behind.
fn down(state: &Path) -> anyhow::Result<ExitCode> {
    let left = crate::down_dir(state);
    if left.is_empty() {
        println!("lab in {} is down; nothing left", state.display());
        Ok(ExitCode::SUCCESS)
    } else {
        for l in &left {
            eprintln!("left behind: {l}");
        }
        Ok(ExitCode::from(1))
    }
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_status(s: &status::LabStatus, json: bool) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(s).context("serializing the status")?
        );
    } else {
        print!("{}", status::render(s));
    }
    Ok(())
}

fn up_vms(
    state: PathBuf,
    spec: Option<PathBuf>,
    standins: Option<PathBuf>,
    agent_bin: Option<PathBuf>,
    timeout: std::time::Duration,
    exit_when_assembled: bool,
) -> anyhow::Result<ExitCode> {
    let loaded = muster_build::spec_source::load(spec.as_deref())?;
    let o = crate::vms::VmsOptions {
        state_dir: state,
        standins: standins.unwrap_or_else(crate::standins::default_dir),
        agent_bin: match agent_bin {
            Some(p) => p,
            None => muster_build::bake::default_agent_bin()?,
        },
        muster_bin: std::env::current_exe().context("finding this muster executable")?,
        timeout,
        exit_when_assembled,
    };
    crate::vms::up(&loaded, &o)
}

fn up(
    state: PathBuf,
    spec: Option<PathBuf>,
    standins: Option<PathBuf>,
    agent_bin: Option<PathBuf>,
    timeout: std::time::Duration,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let loaded = muster_build::spec_source::load(spec.as_deref())?;
    let why = crate::prereq::unsupported(&loaded.cluster);
    if !why.is_empty() {
        return Err(crate::LabError::Unsupported(why).into());
    }
    let standins = standins.unwrap_or_else(crate::standins::default_dir);
    let mut opts = UpOptions::new(state, &standins);
    opts.agent_bin = match agent_bin {
        Some(p) => p,
        None => muster_build::bake::default_agent_bin()?,
    };
    opts.muster_bin = std::env::current_exe().context("finding this muster executable")?;
    let say = |line: &str| {
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    say(&format!(
        "lab: {} ({}), state in {}",
        loaded.cluster.name,
        loaded.origin,
        opts.state_dir.display()
    ));
    say(&format!("lab: {}", crate::vip::describe(&loaded.cluster)));
    if let Some(d) = crate::describe_datastore(&loaded.cluster) {
        say(&format!("lab: {d}"));
    }
    say("lab: stand-ins (NOT the real tools) for kubeadm, k3s, the API server and the kubelet");
    let t = std::time::Instant::now();
    let lab = Lab::create(&loaded, &opts)?;
    say(&format!(
        "lab: {} namespaces, payload built, rendezvous on {} ({:.1}s); booting every node",
        lab.record().nodes.len() + 1,
        lab.record().rendezvous_listen,
        t.elapsed().as_secs_f64()
    ));
    let mut lab = lab;
    let started = std::time::Instant::now();
    lab.boot_all()?;
    let names: Vec<String> = lab.record().nodes.iter().map(|n| n.name.clone()).collect();
    let took = lab.wait_assembled(&names, started, timeout, |c| say(&c.to_string()));
    let took = match took {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "lab: the lab stays up to inspect: `muster lab status`, logs under {}/nodes/*/; `muster lab down` removes it",
                lab.record().state_dir.display()
            );
            return Err(e.into());
        }
    };
    lab.set_assembled(took)?;
    let s = lab.status()?;
    print_status(&s, json)?;
    say(&format!(
        "assembly took {:.1}s (first agent start to the last node done)",
        took.as_secs_f64()
    ));
    Ok(exit(s.healthy))
}

/// `muster lab image`'s arguments.
struct TestImageArgs {
    spec: Option<PathBuf>,
    out: PathBuf,
    payload: Option<PathBuf>,
    standins: Option<PathBuf>,
    cache: Option<PathBuf>,
    kubernetes: muster_build::image::kubernetes::Source,
    images: Option<PathBuf>,
    full_cloud_init: bool,
    json: bool,
}

fn test_image(a: TestImageArgs) -> anyhow::Result<ExitCode> {
    use muster_build::image;
    let TestImageArgs {
        spec,
        out,
        payload,
        standins,
        cache,
        kubernetes,
        images,
        full_cloud_init,
        json,
    } = a;
    let distribution_installed = kubernetes != image::kubernetes::Source::LeftOut;
    let opts = image::BuildOptions {
        spec: muster_build::spec_source::load(spec.as_deref())?,
        out: out.clone(),
        payload,
        cache: cache.unwrap_or_else(image::default_cache_dir),
        disk_bytes: 4 << 30,
        kubernetes,
        images,
        registry_hosts: None,
        variant: Some(std::sync::Arc::new(crate::test_image::TestImage {
            standins: standins.unwrap_or_else(crate::standins::default_dir),
            distribution_installed,
            full_cloud_init,
        })),
    };
    let report = image::build(&opts).context("TEST image build failed")?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("serializing the report")?
        );
    } else {
        print!("{}", image::summary(&report, &out));
    }
    Ok(ExitCode::SUCCESS)
}
