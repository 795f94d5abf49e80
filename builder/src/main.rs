//! The `muster` command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use muster::spec_source::{self, LoadError};
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
    },
    /// Node images.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
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
        /// Without it the image has no agent.
        #[arg(long)]
        payload: Option<PathBuf>,
        /// Cache for .debs and debootstrapped bases [default: ~/.cache/muster/image].
        #[arg(long, env = "MUSTER_IMAGE_CACHE")]
        cache: Option<PathBuf>,
        /// Size of the image's disk (ext4, whole disk); grow it per node.
        #[arg(long, default_value = "4G", value_parser = parse_disk_size)]
        disk_size: u64,
        /// Print the build report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_disk_size(text: &str) -> Result<u64, String> {
    match muster::image::disk::parse_size(text) {
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
        .with_target(false)
        .init();
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Plan { spec, json } => {
            let loaded = spec_source::load(spec.as_deref())?;
            let plan = model::plan::resolve(&loaded.cluster, loaded.warnings.items.clone());
            if json {
                let text = serde_json::to_string_pretty(&plan).context("serializing the plan")?;
                println!("{text}");
            } else {
                print!("{}", muster::plan_table::render(&plan));
            }
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
                    json,
                },
        } => {
            let loaded = spec_source::load(spec.as_deref())?;
            let opts = muster::image::BuildOptions {
                spec: loaded,
                out: out.clone(),
                payload,
                cache: cache.unwrap_or_else(muster::image::default_cache_dir),
                disk_bytes: disk_size,
            };
            let report = muster::image::build(&opts).context("image build failed")?;
            if json {
                let text =
                    serde_json::to_string_pretty(&report).context("serializing the report")?;
                println!("{text}");
            } else {
                print!("{}", muster::image::summary(&report, &out));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
