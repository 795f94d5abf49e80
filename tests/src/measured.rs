//! Measured figures (assembly, boot and build times) that must reach the CI log: libtest
//! hides a passing test's output, so each figure is printed and also appended to
//! `<target>/tmp/measured.txt`, which `scripts/test.sh` prints after the run.
//!
//! One file for both test trees: the builder's integration tests include it by path (the
//! builder cannot depend on this crate, which depends on it).

use std::io::Write;
use std::path::Path;

/// Prints `MEASURED <line>` and appends it to `<tmp_dir>/measured.txt` (`tmp_dir` is the
/// test's `CARGO_TARGET_TMPDIR`, known only when the test itself is compiled).
pub fn record(tmp_dir: &Path, line: std::fmt::Arguments<'_>) {
    let line = format!("MEASURED {line}");
    eprintln!("{line}");
    let path = tmp_dir.join("measured.txt");
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{line}"));
    if let Err(e) = appended {
        eprintln!("could not append to {}: {e}", path.display());
    }
}
