//! What the lab benchmarks (`lab`, `roll`) share: where the binaries are, and a lab torn
//! down however a run ends.

use anyhow::{Context, bail};
use muster_lab::Lab;
use std::path::{Path, PathBuf};

/// `target/<profile>` of the running bench, or `MUSTER_BENCH_BINS`; every binary a lab
/// node runs must be there.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("MUSTER_BENCH_BINS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_BIN_EXE_muster"))
            .parent()
            .context("the muster binary's dir")?
            .to_path_buf(),
    };
    for b in [
        "muster",
        "nodeagent",
        "kubeadm-standin",
        "k3s-standin",
        "apiserver-standin",
    ] {
        if !dir.join(b).is_file() {
            bail!(
                "{} is missing: `cargo build --workspace --bins` (add --release for `cargo bench`) or MUSTER_BENCH_BINS=DIR",
                dir.join(b).display()
            );
        }
    }
    Ok(dir)
}

/// The sizes to run: the arguments that are not flags (`cargo test --bench` passes
/// harness flags), joined by commas; else `MUSTER_BENCH_SIZES`; else `default`.
pub fn sizes_arg(default: &str) -> String {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.is_empty() {
        std::env::var("MUSTER_BENCH_SIZES").unwrap_or_else(|_| default.into())
    } else {
        args.join(",")
    }
}

/// Tears the lab down however the run ends.
pub struct Guard(pub Option<Lab>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(lab) = self.0.take() {
            let left = lab.down();
            if !left.is_empty() {
                eprintln!("lab down left: {left:?}");
            }
        }
    }
}
