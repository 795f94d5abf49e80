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
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
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
        Command::Build {
            spec,
            out,
            agent_bin,
            json,
        } => {
            let loaded = spec_source::load(spec.as_deref())?;
            let opts = muster::build::BuildOptions::new(agent_bin)?;
            let report = muster::build::build(&loaded, &out, &opts)
                .with_context(|| format!("building {} into {}", loaded.origin, out.display()))?;
            if json {
                let text =
                    serde_json::to_string_pretty(&report).context("serializing the report")?;
                println!("{text}");
            } else {
                print!("{}", muster::build::report_table(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
