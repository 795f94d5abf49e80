//! `nodeagent run` and `nodeagent status`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use model::node_files::NodeRoot;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "nodeagent", version, about = "muster node agent")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Assemble this node into its cluster (the systemd service runs this).
    Run {
        /// Root the on-node paths are relative to (a lab directory, or `/`).
        #[arg(long, env = "MUSTER_NODE_ROOT", default_value = "/")]
        root: PathBuf,
        /// Skip the preflight checks a network namespace cannot satisfy.
        #[arg(long, env = "NODEAGENT_LAB")]
        lab: bool,
    },
    /// This node's bootstrap phase (works with the daemon down); exit 0 healthy, 1 not.
    Status {
        #[arg(long, env = "MUSTER_NODE_ROOT", default_value = "/")]
        root: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn init_logging() {
    let journald = std::env::var("NODEAGENT_LOG_FORMAT").is_ok_and(|v| v == "journald");
    let filter = tracing_subscriber::EnvFilter::try_from_env("NODEAGENT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if journald {
        b.without_time().with_ansi(false).init();
    } else {
        b.init();
    }
}

fn now_ms() -> u64 {
    use nodeagent::clock::Clock;
    nodeagent::clock::SystemClock.now_ms()
}

async fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Run { root, lab } => {
            let root = NodeRoot::new(root);
            let (baked, id) = nodeagent::app::load(&root).context("loading the baked config")?;
            nodeagent::app::configure(&baked, &id).context("configuring this node")?;
            anyhow::bail!(
                "node {} is configured, but this build has no rendezvous client: \
                 it is wired in through nodeagent::app::run_node (lab mode: {lab})",
                id.name
            )
        }
        Cmd::Status { root, json } => {
            let root = NodeRoot::new(root);
            let node =
                nodeagent::status::local(&root, now_ms()).context("reading the agent state")?;
            let st = nodeagent::status::Status::new(node, None);
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print!("{}", st.render());
            }
            Ok(if st.healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nodeagent: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(real_main(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nodeagent: {e:#}");
            ExitCode::from(2)
        }
    }
}
