//! What can go wrong in the lab, each naming the command, file, node or tool involved.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab needs root (network namespaces): run it with sudo")]
    NotRoot,
    #[error("`{tool}` not found on PATH: install it with `apt-get install -y {package}`")]
    MissingTool { tool: String, package: String },
    #[error(
        "{what} not found at {}: build them with `cargo build --release --workspace --bins` (or pass {flag})",
        path.display()
    )]
    MissingBinary {
        what: String,
        path: PathBuf,
        flag: &'static str,
    },
    #[error("the lab cannot run this spec yet: {}", .0.join("; "))]
    Unsupported(Vec<String>),
    #[error("{cmd}: {detail}")]
    Command { cmd: String, detail: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {detail}", path.display())]
    Bad { path: PathBuf, detail: String },
    #[error("no lab in {}: start one with `muster lab up`", dir.display())]
    NoLab { dir: PathBuf },
    #[error(
        "a lab is already up in {} (rendezvous pid {pid}): `muster lab down` first, or pass another --state",
        dir.display()
    )]
    AlreadyUp { dir: PathBuf, pid: u32 },
    #[error("no node `{name}` in this lab; nodes: {}", known.join(", "))]
    UnknownNode { name: String, known: Vec<String> },
    #[error("timed out after {patience:?} waiting for {what}")]
    Timeout {
        what: String,
        patience: std::time::Duration,
    },
    #[error("{node}: {what} exited early (see {})", log.display())]
    Died {
        node: String,
        what: String,
        log: PathBuf,
    },
    #[error(transparent)]
    Spec(#[from] muster_build::spec_source::LoadError),
    #[error("building the payload: {0}")]
    Build(#[from] muster_build::bake::BuildError),
    #[error(transparent)]
    Ops(#[from] muster_build::ops::OpsError),
}

impl LabError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LabError {
        let path = path.into();
        move |source| LabError::Io { path, source }
    }
}

pub type Result<T, E = LabError> = std::result::Result<T, E>;
