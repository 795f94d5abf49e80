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
        /// Lab mode (network namespaces): skip the preflight checks a namespace cannot
        /// satisfy and use the lab service manager instead of systemd (no system bus).
        #[arg(long, env = "NODEAGENT_LAB")]
        lab: bool,
        /// Abandon (and undo, then retry) an init or join that runs longer than this many
        /// seconds (the join lease is renewed while it runs; this bounds how long a hung
        /// step holds the slot). Raise it on slow machines (software emulation).
        #[arg(long, env = "NODEAGENT_STEP_TIMEOUT", default_value_t = nodeagent::app::DEFAULT_STEP_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
        step_timeout: u64,
    },
    /// This node's bootstrap phase (works with the daemon down) and the cluster as the
    /// rendezvous sees it, when reachable; exit 0 healthy, 1 not.
    Status {
        #[arg(long, env = "MUSTER_NODE_ROOT", default_value = "/")]
        root: PathBuf,
        #[arg(long)]
        json: bool,
        /// Seconds to wait for the rendezvous and for this node's etcd (a slow machine,
        /// e.g. under emulation, may need more).
        #[arg(long, default_value_t = 3)]
        timeout: u64,
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
        // Colour only for a person at a terminal, never in a redirected log.
        b.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

use protocol::clock::now_ms;

async fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Run {
            root,
            lab,
            step_timeout,
        } => {
            let root = NodeRoot::new(root);
            let (baked, id) = nodeagent::app::load(&root).context("loading the baked config")?;
            // First line of every run: which agent, for which node (the journal's time of
            // it is the agent's start as a reader of the console sees it).
            tracing::info!(
                node = %id.name,
                version = env!("CARGO_PKG_VERSION"),
                "starting"
            );
            let secret =
                nodeagent::app::load_secret(&root).context("reading the cluster secret")?;
            let client = nodeagent::rendezvous::Client::from_baked(
                &baked.rendezvous,
                &secret,
                id.name.as_str(),
            )
            .context("setting up the rendezvous client")?;
            let name = id.name.clone();
            let end = nodeagent::app::run_node(
                root,
                (baked, id),
                lab,
                std::time::Duration::from_secs(step_timeout),
                client.clone(),
                Some(client),
                shutdown_signal(),
            )
            .await
            .with_context(|| format!("node {name}"))?;
            if let nodeagent::bootstrap::driver::RunEnd::Restart(binary) = end {
                // The release's agent, same arguments, same PID (systemd's main process
                // and the lab's pid file stay right); it resumes from the persisted state.
                use std::os::unix::process::CommandExt as _;
                tracing::info!(binary = %binary.display(), "exec");
                let err = std::process::Command::new(&binary)
                    .args(std::env::args_os().skip(1))
                    .exec();
                return Err(err).with_context(|| format!("exec {}", binary.display()));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status {
            root,
            json,
            timeout,
        } => {
            let root = NodeRoot::new(root);
            let node =
                nodeagent::status::local(&root, now_ms()).context("reading the agent state")?;
            // The cluster view is best effort: a down rendezvous is reported, not fatal.
            let timeout = std::time::Duration::from_secs(timeout);
            let (cluster, local_etcd) = tokio::join!(
                nodeagent::status::cluster_for(&root, timeout),
                nodeagent::status::local_etcd_for(&root, timeout)
            );
            let st = protocol::status::Status::with_local_etcd(node, Some(cluster), local_etcd);
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

/// Resolves on SIGTERM (systemd stop) or ctrl-c; the driver then persists and stops.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM ({e}); stopping on ctrl-c only");
            let _ = tokio::signal::ctrl_c().await;
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
