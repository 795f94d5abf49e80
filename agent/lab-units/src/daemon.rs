//! LAB ONLY: the load-balancer daemons the lab runs itself (HAProxy, nginx, keepalived), and
//! how `nodeagent run --lab` reloads one after it installed a new config (what
//! `systemctl reload` does on a node). Every node shares this machine's filesystem, so the
//! lab runs each daemon on a copy of its config with absolute paths re-rooted (nginx's pid
//! file, keepalived's check script); the lab leaves a descriptor under the node's root
//! (`run/muster-lab/<unit>.daemon.json`) saying where the daemon's pid file and config copy
//! are and which rewrites make the copy. A reload makes the copy again from the config the
//! agent installed, then signals the daemon's main process.

use crate::RUN_DIR;
use model::fsutil::write_atomic;
use model::node_files::NodeRoot;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One lab-run daemon of a node, as the lab describes it to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabDaemon {
    /// The unit it stands for (`haproxy.service`, ...).
    pub unit: String,
    /// The pid file of its main process (the one a reload signals).
    pub pid_file: PathBuf,
    /// The config the agent installs, relative to the node's root
    /// (`etc/haproxy/haproxy.cfg`).
    pub config: String,
    /// The copy the daemon reads.
    pub copy: PathBuf,
    /// `(from, to)` text replacements that turn the installed config into the copy.
    pub rewrites: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
#[error("lab daemon {unit}: {detail}")]
pub struct LabDaemonError {
    pub unit: String,
    pub detail: String,
}

impl LabDaemon {
    fn fail(&self, detail: impl std::fmt::Display) -> LabDaemonError {
        LabDaemonError {
            unit: self.unit.clone(),
            detail: detail.to_string(),
        }
    }

    /// Where the descriptor of `unit` lives under `root`.
    pub fn descriptor(root: &NodeRoot, unit: &str) -> PathBuf {
        root.path(RUN_DIR).join(format!("{unit}.daemon.json"))
    }

    /// Leaves the descriptor under `root` (the lab does, at every boot).
    pub fn write(&self, root: &NodeRoot) -> Result<(), LabDaemonError> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| self.fail(e))?;
        write_atomic(&Self::descriptor(root, &self.unit), &text, 0o644).map_err(|e| self.fail(e))
    }

    /// The descriptor of `unit` under `root`; `None` when the lab runs no such daemon.
    pub fn load(root: &NodeRoot, unit: &str) -> Result<Option<LabDaemon>, LabDaemonError> {
        let path = Self::descriptor(root, unit);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(LabDaemonError {
                    unit: unit.into(),
                    detail: format!("{}: {e}", path.display()),
                });
            }
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| LabDaemonError {
                unit: unit.into(),
                detail: format!("{}: {e}", path.display()),
            })
    }

    /// The copy's text for the installed config `installed`.
    pub fn rewrite(&self, installed: &str) -> String {
        self.rewrites
            .iter()
            .fold(installed.to_string(), |t, (from, to)| t.replace(from, to))
    }

    /// Makes the copy again from the config installed under `root`. Whether there was one
    /// (before the agent's first install there is not: the copy the lab made stays).
    pub fn refresh_copy(&self, root: &NodeRoot) -> Result<bool, LabDaemonError> {
        let installed = root.path(&self.config);
        let text = match std::fs::read_to_string(&installed) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.fail(format!("{}: {e}", installed.display()))),
        };
        write_atomic(&self.copy, self.rewrite(&text).as_bytes(), 0o644)
            .map_err(|e| self.fail(e))?;
        Ok(true)
    }

    /// The live main process, from its pid file.
    pub fn pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        crate::alive(pid).then_some(pid)
    }

    /// Makes the copy from the installed config, then sends `signal` to the main process
    /// (HAProxy's master re-execs its workers on SIGUSR2; nginx and keepalived re-read on
    /// SIGHUP). Fails when the daemon does not run: the new config would never be read.
    pub fn reload(
        &self,
        root: &NodeRoot,
        signal: nix::sys::signal::Signal,
    ) -> Result<u32, LabDaemonError> {
        self.refresh_copy(root)?;
        let pid = self
            .pid()
            .ok_or_else(|| self.fail(format!("not running ({})", self.pid_file.display())))?;
        let raw = i32::try_from(pid).map_err(|e| self.fail(e))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), signal)
            .map_err(|e| self.fail(format!("signal {signal} to {pid}: {e}")))?;
        tracing::info!(unit = %self.unit, pid, %signal, "lab: daemon reloaded");
        Ok(pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon(dir: &std::path::Path) -> LabDaemon {
        LabDaemon {
            unit: "nginx.service".into(),
            pid_file: dir.join("nginx.pid"),
            config: "etc/nginx/nginx.conf".into(),
            copy: dir.join("nginx-copy.conf"),
            rewrites: vec![("pid /run/nginx.pid;".into(), "pid /lab/n1.pid;".into())],
        }
    }

    #[test]
    fn the_descriptor_round_trips_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let root = NodeRoot::new(dir.path());
        assert_eq!(LabDaemon::load(&root, "nginx.service").unwrap(), None);
        let d = daemon(dir.path());
        d.write(&root).unwrap();
        assert_eq!(LabDaemon::load(&root, "nginx.service").unwrap(), Some(d));
    }

    #[test]
    fn a_reload_rewrites_the_installed_config_into_the_copy_and_signals_the_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let root = NodeRoot::new(dir.path());
        let d = daemon(dir.path());
        // Nothing installed yet: the copy stays as the lab made it.
        assert!(!d.refresh_copy(&root).unwrap());
        let conf = root.path(&d.config);
        std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
        std::fs::write(&conf, "pid /run/nginx.pid;\nstream {}\n").unwrap();
        // Not running: the reload fails, saying so (the copy is made all the same).
        let e = d
            .reload(&root, nix::sys::signal::Signal::SIGHUP)
            .unwrap_err();
        assert!(e.to_string().contains("not running"), "{e}");
        assert_eq!(
            std::fs::read_to_string(&d.copy).unwrap(),
            "pid /lab/n1.pid;\nstream {}\n"
        );
        // A process that counts its SIGHUPs.
        let marker = dir.path().join("hups");
        let script = format!(
            "trap 'echo hup >> {}' HUP; echo ready > {}.ready; while :; do sleep 0.05; done",
            marker.display(),
            marker.display()
        );
        let mut child = std::process::Command::new("sh")
            .args(["-c", &script])
            .spawn()
            .unwrap();
        let ready = dir.path().join("hups.ready");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !ready.exists() {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::fs::write(&d.pid_file, format!("{}\n", child.id())).unwrap();
        assert_eq!(
            d.reload(&root, nix::sys::signal::Signal::SIGHUP).unwrap(),
            child.id()
        );
        while !marker.exists() {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
