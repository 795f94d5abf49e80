//! Failure knobs for tests.
//!
//! Sources (both are read; the env var wins for `clock_offset`):
//! - env `MUSTER_STANDIN_FAIL_AT`, `MUSTER_STANDIN_HANG_AT`, `MUSTER_STANDIN_CRASH_AT`,
//!   `MUSTER_STANDIN_FAIL_ALWAYS_AT`: comma-separated step names;
//! - the knob file `<root>/var/lib/muster-standin/knobs`: lines `fail_at=STEP`,
//!   `hang_at=STEP`, `crash_at=STEP`, `fail_always_at=STEP`, `clock_offset=3h`; `#` comments.
//!
//! `fail_at`, `hang_at` and `crash_at` fire ONCE per node root: the first time the step is
//! reached a marker `<state>/fired/<kind>-<step>` is written and later runs pass (so an agent's
//! retry succeeds). `fail_always_at` fails every time. `kubeadm reset` keeps the markers.
//! Delete `<state>/fired/` to re-arm.

use anyhow::{Context, Result};
use model::node_files::NodeRoot;
use std::path::PathBuf;

pub const KNOB_FILE: &str = "var/lib/muster-standin/knobs";

#[derive(Debug, Default, Clone)]
pub struct Knobs {
    pub fail_at: Vec<String>,
    pub fail_always_at: Vec<String>,
    pub hang_at: Vec<String>,
    pub crash_at: Vec<String>,
    pub clock_offset: Option<i64>,
    fired_dir: Option<PathBuf>,
}

fn split_env(name: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

impl Knobs {
    pub fn load(root: &NodeRoot) -> Result<Knobs> {
        let mut k = Knobs {
            fail_at: split_env("MUSTER_STANDIN_FAIL_AT"),
            fail_always_at: split_env("MUSTER_STANDIN_FAIL_ALWAYS_AT"),
            hang_at: split_env("MUSTER_STANDIN_HANG_AT"),
            crash_at: split_env("MUSTER_STANDIN_CRASH_AT"),
            clock_offset: None,
            fired_dir: Some(root.path(crate::STATE_DIR).join("fired")),
        };
        let file = root.path(KNOB_FILE);
        if let Ok(text) = std::fs::read_to_string(&file) {
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (key, value) = line
                    .split_once('=')
                    .with_context(|| format!("{}:{}: expected KEY=VALUE", file.display(), n + 1))?;
                let value = value.trim().to_string();
                match key.trim() {
                    "fail_at" => k.fail_at.push(value),
                    "fail_always_at" => k.fail_always_at.push(value),
                    "hang_at" => k.hang_at.push(value),
                    "crash_at" => k.crash_at.push(value),
                    "clock_offset" => k.clock_offset = Some(crate::clock::parse_duration(&value)?),
                    other => anyhow::bail!("{}:{}: unknown knob {other:?}", file.display(), n + 1),
                }
            }
        }
        Ok(k)
    }

    /// Marks a once-knob as fired; returns whether it had not fired before.
    fn fire_once(&self, kind: &str, step: &str) -> bool {
        let Some(dir) = &self.fired_dir else {
            return true;
        };
        let marker = dir.join(format!("{kind}-{step}"));
        if marker.exists() {
            return false;
        }
        let _ = std::fs::create_dir_all(dir);
        let _ = std::fs::write(&marker, b"");
        true
    }

    /// Whether a `hang_at` knob names `step`, for a request handler that holds every such
    /// request unanswered while the knob is set (a client that gives up and retries must
    /// not get through: the server stays stuck). The fired marker is written the first time.
    pub fn holds(&self, step: &str) -> bool {
        let named = self.hang_at.iter().any(|s| s == step);
        if named {
            self.fire_once("hang", step);
        }
        named
    }

    /// Called by the stand-ins at each named step. Fails, hangs or crashes as the knobs say.
    pub fn checkpoint(&self, step: &str) -> Result<()> {
        if self.fail_always_at.iter().any(|s| s == step) {
            anyhow::bail!(
                "muster-standin: injected failure at step {step:?} (knob fail_always_at)"
            );
        }
        if self.fail_at.iter().any(|s| s == step) && self.fire_once("fail", step) {
            anyhow::bail!("muster-standin: injected failure at step {step:?} (knob fail_at)");
        }
        if self.crash_at.iter().any(|s| s == step) && self.fire_once("crash", step) {
            eprintln!("muster-standin: crashing at step {step:?} (knob crash_at)");
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            std::process::exit(137);
        }
        if self.hang_at.iter().any(|s| s == step) && self.fire_once("hang", step) {
            eprintln!("muster-standin: hanging at step {step:?} (knob hang_at)");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        Ok(())
    }
}
