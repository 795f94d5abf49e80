//! LAB ONLY: the service manager of `nodeagent run --lab`, isolated here. The agent under
//! test is the same binary users run; only this module differs, chosen at run time.

use crate::systemd::{Systemd, SystemdError};
use model::node_files::NodeRoot;
use muster_lab_units::daemon::LabDaemon;
use muster_lab_units::{LabUnit, LabUnitError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// LAB ONLY (`nodeagent run --lab`): a network namespace has no service manager of its own
/// and no system bus. The k3s units really run, through the lab's service runner
/// ([`muster_lab_units`]: `k3s server` / `k3s agent` detached, pid file under the node's
/// root). Every other unit is only recorded and then reads as `active`: what it would run,
/// the lab runs itself (the kubeadm stand-in starts its own etcd and API server like static
/// pods; the lab harness runs keepalived, HAProxy, nginx). Real nodes always use
/// [`DbusSystemd`].
#[derive(Debug, Clone)]
pub struct LabSystemd {
    root: NodeRoot,
    /// The recorded state of every unit the lab does not run itself.
    recorded: Arc<Mutex<BTreeMap<String, &'static str>>>,
}

impl LabSystemd {
    /// The lab stand-in for the node whose disk is `root`.
    pub fn new(root: NodeRoot) -> Self {
        LabSystemd {
            root,
            recorded: Arc::default(),
        }
    }

    fn runnable(&self, unit: &str) -> Option<LabUnit> {
        muster_lab_units::unit(&self.root, unit)
    }

    fn record(
        &self,
        op: &'static str,
        unit: &str,
        state: &'static str,
    ) -> Result<(), SystemdError> {
        tracing::info!(unit, "lab: no service manager; {op} recorded");
        let mut g = self.recorded.lock().map_err(|_| SystemdError {
            op,
            unit: unit.into(),
            detail: "lab unit record poisoned by a panic".into(),
        })?;
        g.insert(unit.to_string(), state);
        Ok(())
    }
}

/// The kubelet's unit, restarted by an upgrade.
const KUBELET_UNIT: &str = "kubelet.service";

impl LabSystemd {
    /// A restarted kubelet starts its static pods and reports its version on its Node:
    /// in the lab, the kubelet stand-in (`kubeadm kubelet-sync --report-node`, `kubeadm`
    /// on `PATH` being the kubeadm stand-in) does that for the node's installed release.
    async fn restart_kubelet_standin(&self) -> Result<(), SystemdError> {
        let fail = |detail: String| SystemdError {
            op: "restart",
            unit: KUBELET_UNIT.into(),
            detail,
        };
        let out = tokio::process::Command::new("kubeadm")
            .args(["kubelet-sync", "--report-node"])
            .env("MUSTER_NODE_ROOT", self.root.path(""))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| fail(format!("cannot run the kubelet stand-in: {e}")))?;
        if !out.status.success() {
            return Err(fail(format!(
                "the kubelet stand-in exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        self.record("restart", KUBELET_UNIT, "active")
    }
}

fn lab_err(op: &'static str) -> impl Fn(LabUnitError) -> SystemdError {
    move |e| SystemdError {
        op,
        unit: e.unit.clone(),
        detail: e.detail,
    }
}

impl Systemd for LabSystemd {
    /// A daemon the lab runs itself reads a copy of the installed config with the lab's
    /// rewrites (the same [`LabDaemon::rewrite`] its reload makes the copy with).
    fn as_read(&self, unit: &str, config: &str) -> Result<String, SystemdError> {
        match LabDaemon::load(&self.root, unit) {
            Ok(Some(d)) => Ok(d.rewrite(config)),
            Ok(None) => Ok(config.to_string()),
            Err(e) => Err(SystemdError {
                op: "read the lab daemon descriptor",
                unit: unit.into(),
                detail: e.to_string(),
            }),
        }
    }
    async fn start(&self, unit: &str) -> Result<(), SystemdError> {
        if let Some(u) = self.runnable(unit) {
            return u.start().map(|_| ()).map_err(lab_err("start"));
        }
        self.record("start", unit, "active")
    }
    async fn stop(&self, unit: &str) -> Result<(), SystemdError> {
        if let Some(u) = self.runnable(unit) {
            u.stop();
            return Ok(());
        }
        self.record("stop", unit, "inactive")
    }
    async fn restart(&self, unit: &str) -> Result<(), SystemdError> {
        if let Some(u) = self.runnable(unit) {
            u.stop();
            return u.start().map(|_| ()).map_err(lab_err("restart"));
        }
        if unit == KUBELET_UNIT {
            return self.restart_kubelet_standin().await;
        }
        self.record("restart", unit, "active")
    }
    /// The lab's units are not unit files systemd reads: nothing to re-read.
    async fn daemon_reload(&self) -> Result<(), SystemdError> {
        tracing::info!("lab: no service manager; daemon-reload recorded");
        Ok(())
    }
    /// A daemon the lab runs itself (its descriptor under the node's root,
    /// [`muster_lab_units::daemon`]): its config copy is made again from the installed
    /// config and its main process gets the reload signal `systemctl reload` would send.
    /// A k3s unit restarts (k3s has no reload); any other unit is only recorded.
    async fn reload(&self, unit: &str) -> Result<(), SystemdError> {
        let fail = |detail: String| SystemdError {
            op: "reload",
            unit: unit.into(),
            detail,
        };
        if let Some(d) = LabDaemon::load(&self.root, unit).map_err(|e| fail(e.to_string()))? {
            let daemon = crate::lb_follow::Daemon::for_unit(unit)
                .ok_or_else(|| fail("the lab runs it but no reload signal is known".into()))?;
            let signal: nix::sys::signal::Signal = daemon
                .reload_signal()
                .parse()
                .map_err(|e| fail(format!("{}: {e}", daemon.reload_signal())))?;
            d.reload(&self.root, signal)
                .map_err(|e| fail(e.to_string()))?;
            return Ok(());
        }
        if self.runnable(unit).is_some() {
            return self.restart(unit).await;
        }
        self.record("reload", unit, "active")
    }
    async fn enable(&self, units: &[&str]) -> Result<(), SystemdError> {
        for u in units.iter().filter_map(|u| self.runnable(u)) {
            u.enable(&self.root).map_err(lab_err("enable"))?;
        }
        tracing::info!(?units, "lab: enable recorded");
        Ok(())
    }
    async fn active_state(&self, unit: &str) -> Result<String, SystemdError> {
        if let Some(u) = self.runnable(unit) {
            return Ok(u.active_state().to_string());
        }
        let g = self.recorded.lock().map_err(|_| SystemdError {
            op: "active-state",
            unit: unit.into(),
            detail: "lab unit record poisoned by a panic".into(),
        })?;
        Ok(g.get(unit).copied().unwrap_or("inactive").to_string())
    }
    /// The runner's log file of the unit (what the journal holds on a node); nothing for a
    /// unit that is only recorded.
    async fn log_tail(&self, unit: &str, lines: usize) -> Result<String, SystemdError> {
        let Some(u) = self.runnable(unit) else {
            return Ok(String::new());
        };
        match std::fs::read(&u.log) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                Ok(crate::distro::parse::last_lines(&text, lines).join("\n"))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(SystemdError {
                op: "journal",
                unit: unit.into(),
                detail: format!("{}: {e}", u.log.display()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lab_runs_the_k3s_units_and_records_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let root = NodeRoot::new(dir.path());
        let s = LabSystemd::new(root.clone());
        // `k3s` is not on this test's PATH: the start fails and the unit reads failed, proof
        // that it was really run rather than recorded.
        s.enable(&["k3s-agent.service"]).await.unwrap();
        let names: Vec<String> = muster_lab_units::enabled(&root)
            .into_iter()
            .map(|u| u.unit)
            .collect();
        assert_eq!(names, vec!["k3s-agent.service".to_string()]);
        let _ = s.start("k3s-agent.service").await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while s.active_state("k3s-agent.service").await.unwrap() == "active" {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(s.active_state("k3s-agent.service").await.unwrap(), "failed");
        s.stop("k3s-agent.service").await.unwrap();
        assert_eq!(
            s.active_state("k3s-agent.service").await.unwrap(),
            "inactive"
        );
        s.start("haproxy.service").await.unwrap();
        assert_eq!(s.active_state("haproxy.service").await.unwrap(), "active");
    }

    /// Issue 16: a lab-run daemon reads its config with the lab's rewrites (keepalived's
    /// check script re-rooted), so that is the text a new config is checked as; a unit the
    /// lab does not run reads it as is.
    #[test]
    fn a_lab_daemon_reads_its_config_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let root = NodeRoot::new(dir.path());
        let s = LabSystemd::new(root.clone());
        let conf = "script \"/usr/lib/muster/keepalived/check.sh\"\n";
        assert_eq!(s.as_read("keepalived.service", conf).unwrap(), conf);
        LabDaemon {
            unit: "keepalived.service".into(),
            pid_file: dir.path().join("k.pid"),
            config: "etc/keepalived/keepalived.conf".into(),
            copy: dir.path().join("copy.conf"),
            rewrites: vec![(
                "\"/usr/lib/muster/keepalived/check.sh\"".into(),
                "\"/lab/cp-1/check.sh\"".into(),
            )],
        }
        .write(&root)
        .unwrap();
        assert_eq!(
            s.as_read("keepalived.service", conf).unwrap(),
            "script \"/lab/cp-1/check.sh\"\n"
        );
        assert_eq!(s.as_read("nginx.service", conf).unwrap(), conf);
    }
}
