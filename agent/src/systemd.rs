//! systemd: units over D-Bus (zbus `#[proxy]` for the Manager and Unit interfaces) behind
//! the `Systemd` trait (the lab's stand-in: [`crate::lab_systemd`]; a fake for tests with
//! the `testkit` feature); and `sd_notify` for READY/STATUS/STOPPING.

use crate::lab_systemd::LabSystemd;
use model::node_files::NodeRoot;
#[cfg(any(test, feature = "testkit"))]
use std::collections::BTreeMap;
#[cfg(any(test, feature = "testkit"))]
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
#[error("systemd {op} {unit}: {detail}")]
pub struct SystemdError {
    pub op: &'static str,
    pub unit: String,
    pub detail: String,
}

#[allow(
    async_fn_in_trait,
    reason = "driven from one task; no Send bound needed"
)]
pub trait Systemd {
    async fn start(&self, unit: &str) -> Result<(), SystemdError>;
    async fn stop(&self, unit: &str) -> Result<(), SystemdError>;
    async fn restart(&self, unit: &str) -> Result<(), SystemdError>;
    /// `systemctl daemon-reload`: systemd reads unit files and drop-ins again (after a
    /// package replaced them, before restarting their unit).
    async fn daemon_reload(&self) -> Result<(), SystemdError>;
    /// `systemctl reload`: the unit's own `ExecReload` (a graceful reload: HAProxy's
    /// master re-execs its workers, nginx and keepalived re-read their config).
    async fn reload(&self, unit: &str) -> Result<(), SystemdError>;
    /// `systemctl enable --no-reload`: the links that start `units` at the next boot. Starting
    /// a unit now needs no reload (systemd loads an unloaded unit's file when asked to start
    /// it), and a reload runs every generator and reloads every unit: seconds of PID 1's CPU
    /// under emulation, on a control plane's way to registering.
    async fn enable(&self, units: &[&str]) -> Result<(), SystemdError>;
    /// `active`, `activating`, `failed`, `inactive`, … (`inactive` for an unknown unit).
    async fn active_state(&self, unit: &str) -> Result<String, SystemdError>;
    /// The unit's last `lines` log lines, messages only (empty when it logged nothing).
    async fn log_tail(&self, unit: &str, lines: usize) -> Result<String, SystemdError>;
    /// The text `unit`'s daemon reads when `config` is installed as its config: on a node,
    /// `config` itself. The lab runs its load-balancer daemons on copies with absolute
    /// paths re-rooted (keepalived's check script, nginx's pid file; `lab_systemd`), so a
    /// new config is checked as the daemon will read it.
    fn as_read(&self, _unit: &str, config: &str) -> Result<String, SystemdError> {
        Ok(config.to_string())
    }
}

/// `journalctl -u UNIT -n LINES -o cat`: the journal has no D-Bus interface of its own.
async fn journal_tail(unit: &str, lines: usize) -> Result<String, SystemdError> {
    let n = lines.to_string();
    let fail = |detail: String| SystemdError {
        op: "journal",
        unit: unit.into(),
        detail,
    };
    let out = tokio::process::Command::new("journalctl")
        .args(["-u", unit, "-n", &n, "--no-pager", "-o", "cat"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| fail(format!("cannot run journalctl: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "journalctl exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("-- "))
        .collect::<Vec<_>>()
        .join("\n"))
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1",
    gen_blocking = false
)]
trait Manager {
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<zbus::zvariant::OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<zbus::zvariant::OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str)
    -> zbus::Result<zbus::zvariant::OwnedObjectPath>;
    fn reload_unit(&self, name: &str, mode: &str) -> zbus::Result<zbus::zvariant::OwnedObjectPath>;
    fn enable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<(bool, Vec<(String, String, String)>)>;
    fn load_unit(&self, name: &str) -> zbus::Result<zbus::zvariant::OwnedObjectPath>;
    fn reload(&self) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1",
    gen_blocking = false
)]
trait Unit {
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
}

/// systemd on the system bus.
#[derive(Debug, Clone)]
pub struct DbusSystemd {
    conn: zbus::Connection,
}

impl DbusSystemd {
    pub async fn connect() -> Result<Self, SystemdError> {
        let conn = zbus::Connection::system().await.map_err(|e| SystemdError {
            op: "connect",
            unit: "(system bus)".into(),
            detail: e.to_string(),
        })?;
        Ok(DbusSystemd { conn })
    }

    async fn manager(
        &self,
        op: &'static str,
        unit: &str,
    ) -> Result<ManagerProxy<'_>, SystemdError> {
        ManagerProxy::new(&self.conn)
            .await
            .map_err(|e| SystemdError {
                op,
                unit: unit.into(),
                detail: e.to_string(),
            })
    }
}

fn err<'a>(op: &'static str, unit: &'a str) -> impl Fn(zbus::Error) -> SystemdError + 'a {
    move |e| SystemdError {
        op,
        unit: unit.to_string(),
        detail: e.to_string(),
    }
}

impl Systemd for DbusSystemd {
    async fn start(&self, unit: &str) -> Result<(), SystemdError> {
        let m = self.manager("start", unit).await?;
        m.start_unit(unit, "replace")
            .await
            .map_err(err("start", unit))?;
        Ok(())
    }

    async fn stop(&self, unit: &str) -> Result<(), SystemdError> {
        let m = self.manager("stop", unit).await?;
        m.stop_unit(unit, "replace")
            .await
            .map_err(err("stop", unit))?;
        Ok(())
    }

    async fn restart(&self, unit: &str) -> Result<(), SystemdError> {
        let m = self.manager("restart", unit).await?;
        m.restart_unit(unit, "replace")
            .await
            .map_err(err("restart", unit))?;
        Ok(())
    }

    async fn daemon_reload(&self) -> Result<(), SystemdError> {
        let m = self.manager("daemon-reload", "(unit files)").await?;
        m.reload()
            .await
            .map_err(err("daemon-reload", "(unit files)"))?;
        Ok(())
    }

    async fn reload(&self, unit: &str) -> Result<(), SystemdError> {
        let m = self.manager("reload", unit).await?;
        m.reload_unit(unit, "replace")
            .await
            .map_err(err("reload", unit))?;
        Ok(())
    }

    async fn enable(&self, units: &[&str]) -> Result<(), SystemdError> {
        let joined = units.join(" ");
        let m = self.manager("enable", &joined).await?;
        m.enable_unit_files(units, false, true)
            .await
            .map_err(err("enable", &joined))?;
        Ok(())
    }

    async fn active_state(&self, unit: &str) -> Result<String, SystemdError> {
        let m = self.manager("active-state", unit).await?;
        let path = m.load_unit(unit).await.map_err(err("load", unit))?;
        let u = UnitProxy::builder(&self.conn)
            .path(path)
            .map_err(err("active-state", unit))?
            .build()
            .await
            .map_err(err("active-state", unit))?;
        u.active_state().await.map_err(err("active-state", unit))
    }

    async fn log_tail(&self, unit: &str, lines: usize) -> Result<String, SystemdError> {
        journal_tail(unit, lines).await
    }
}

/// The service manager `nodeagent run` talks to: systemd over D-Bus, or the lab stand-in.
#[derive(Debug, Clone)]
pub enum NodeSystemd {
    Dbus(DbusSystemd),
    Lab(LabSystemd),
}

impl NodeSystemd {
    /// `LabSystemd` for the node at `lab` when given, else a connection to systemd on the
    /// system bus.
    pub async fn for_run(lab: Option<NodeRoot>) -> Result<Self, SystemdError> {
        match lab {
            Some(root) => Ok(NodeSystemd::Lab(LabSystemd::new(root))),
            None => DbusSystemd::connect().await.map(NodeSystemd::Dbus),
        }
    }
}

impl Systemd for NodeSystemd {
    fn as_read(&self, unit: &str, config: &str) -> Result<String, SystemdError> {
        match self {
            NodeSystemd::Dbus(s) => s.as_read(unit, config),
            NodeSystemd::Lab(s) => s.as_read(unit, config),
        }
    }
    async fn start(&self, unit: &str) -> Result<(), SystemdError> {
        match self {
            NodeSystemd::Dbus(s) => s.start(unit).await,
            NodeSystemd::Lab(s) => s.start(unit).await,
        }
    }
    async fn stop(&self, unit: &str) -> Result<(), SystemdError> {
        match self {
            NodeSystemd::Dbus(s) => s.stop(unit).await,
            NodeSystemd::Lab(s) => s.stop(unit).await,
        }
    }
    async fn restart(&self, unit: &str) -> Result<(), SystemdError> {
        match self {
            NodeSystemd::Dbus(s) => s.restart(unit).await,
            NodeSystemd::Lab(s) => s.restart(unit).await,
        }
    }
    async fn daemon_reload(&self) -> Result<(), SystemdError> {
        match self {
            NodeSystemd::Dbus(s) => s.daemon_reload().await,
            NodeSystemd::Lab(s) => s.daemon_reload().await,
        }
    }
    async fn reload(&self, unit: &str) -> Result<(), SystemdError> {
        match self {
            NodeSystemd::Dbus(s) => s.reload(unit).await,
            NodeSystemd::Lab(s) => s.reload(unit).await,
        }
    }
    async fn enable(&self, units: &[&str]) -> Result<(), SystemdError> {
        match self {
            NodeSystemd::Dbus(s) => s.enable(units).await,
            NodeSystemd::Lab(s) => s.enable(units).await,
        }
    }
    async fn active_state(&self, unit: &str) -> Result<String, SystemdError> {
        match self {
            NodeSystemd::Dbus(s) => s.active_state(unit).await,
            NodeSystemd::Lab(s) => s.active_state(unit).await,
        }
    }
    async fn log_tail(&self, unit: &str, lines: usize) -> Result<String, SystemdError> {
        match self {
            NodeSystemd::Dbus(s) => s.log_tail(unit, lines).await,
            NodeSystemd::Lab(s) => s.log_tail(unit, lines).await,
        }
    }
}

/// A fake systemd: units become `active` when started; `fail` makes a unit fail to start.
#[cfg(any(test, feature = "testkit"))]
#[derive(Debug, Clone, Default)]
pub struct FakeSystemd {
    inner: Arc<Mutex<FakeState>>,
}

#[cfg(any(test, feature = "testkit"))]
#[derive(Debug, Default)]
struct FakeState {
    states: BTreeMap<String, String>,
    enabled: Vec<String>,
    failing: Vec<String>,
    log: Vec<String>,
    unit_logs: BTreeMap<String, String>,
}

#[cfg(any(test, feature = "testkit"))]
impl FakeSystemd {
    pub fn fail(&self, unit: &str) {
        if let Ok(mut g) = self.inner.lock() {
            g.failing.push(unit.to_string());
        }
    }

    /// What `log_tail` answers for `unit` from now on.
    pub fn set_unit_log(&self, unit: &str, text: &str) {
        if let Ok(mut g) = self.inner.lock() {
            g.unit_logs.insert(unit.into(), text.into());
        }
    }

    pub fn log(&self) -> Vec<String> {
        self.inner.lock().map(|g| g.log.clone()).unwrap_or_default()
    }

    pub fn enabled(&self) -> Vec<String> {
        self.inner
            .lock()
            .map(|g| g.enabled.clone())
            .unwrap_or_default()
    }

    fn set(&self, op: &'static str, unit: &str, state: &str) -> Result<(), SystemdError> {
        let mut g = self.inner.lock().map_err(|_| SystemdError {
            op,
            unit: unit.into(),
            detail: "poisoned".into(),
        })?;
        g.log.push(format!("{op} {unit}"));
        if state == "active" && g.failing.iter().any(|u| u == unit) {
            g.states.insert(unit.into(), "failed".into());
            return Err(SystemdError {
                op,
                unit: unit.into(),
                detail: "job failed".into(),
            });
        }
        g.states.insert(unit.into(), state.into());
        Ok(())
    }
}

#[cfg(any(test, feature = "testkit"))]
impl Systemd for FakeSystemd {
    async fn start(&self, unit: &str) -> Result<(), SystemdError> {
        self.set("start", unit, "active")
    }
    async fn stop(&self, unit: &str) -> Result<(), SystemdError> {
        self.set("stop", unit, "inactive")
    }
    async fn restart(&self, unit: &str) -> Result<(), SystemdError> {
        self.set("restart", unit, "active")
    }
    async fn daemon_reload(&self) -> Result<(), SystemdError> {
        if let Ok(mut g) = self.inner.lock() {
            g.log.push("daemon-reload".into());
        }
        Ok(())
    }
    async fn reload(&self, unit: &str) -> Result<(), SystemdError> {
        self.set("reload", unit, "active")
    }
    async fn enable(&self, units: &[&str]) -> Result<(), SystemdError> {
        if let Ok(mut g) = self.inner.lock() {
            g.enabled.extend(units.iter().map(|u| u.to_string()));
            g.log.push(format!("enable {}", units.join(" ")));
        }
        Ok(())
    }
    async fn active_state(&self, unit: &str) -> Result<String, SystemdError> {
        Ok(self
            .inner
            .lock()
            .ok()
            .and_then(|g| g.states.get(unit).cloned())
            .unwrap_or_else(|| "inactive".into()))
    }
    async fn log_tail(&self, unit: &str, _lines: usize) -> Result<String, SystemdError> {
        let g = self.inner.lock().map_err(|_| SystemdError {
            op: "journal",
            unit: unit.into(),
            detail: "poisoned".into(),
        })?;
        Ok(g.unit_logs.get(unit).cloned().unwrap_or_default())
    }
}

/// The service manager's notification socket (Type=notify).
pub trait Notifier {
    fn ready(&self);
    fn status(&self, text: &str);
    fn stopping(&self);
}

/// `sd_notify` to `$NOTIFY_SOCKET`; silently nothing when not run by systemd.
#[derive(Debug, Clone, Copy, Default)]
pub struct SdNotifier;

impl Notifier for SdNotifier {
    fn ready(&self) {
        if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
            tracing::debug!(error = %e, "sd_notify READY");
        }
    }
    fn status(&self, text: &str) {
        if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Status(text)]) {
            tracing::debug!(error = %e, "sd_notify STATUS");
        }
    }
    fn stopping(&self) {
        if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]) {
            tracing::debug!(error = %e, "sd_notify STOPPING");
        }
    }
}

/// Records notifications, for tests.
#[cfg(any(test, feature = "testkit"))]
#[derive(Debug, Clone, Default)]
pub struct RecordingNotifier {
    pub lines: Arc<Mutex<Vec<String>>>,
}

#[cfg(any(test, feature = "testkit"))]
impl RecordingNotifier {
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|g| g.clone()).unwrap_or_default()
    }
    fn push(&self, s: String) {
        if let Ok(mut g) = self.lines.lock() {
            g.push(s);
        }
    }
}

#[cfg(any(test, feature = "testkit"))]
impl Notifier for RecordingNotifier {
    fn ready(&self) {
        self.push("READY=1".into());
    }
    fn status(&self, text: &str) {
        self.push(format!("STATUS={text}"));
    }
    fn stopping(&self) {
        self.push("STOPPING=1".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fake_tracks_states_and_failures() {
        let s = FakeSystemd::default();
        s.start("haproxy.service").await.unwrap();
        assert_eq!(s.active_state("haproxy.service").await.unwrap(), "active");
        s.fail("k3s.service");
        assert!(s.start("k3s.service").await.is_err());
        assert_eq!(s.active_state("k3s.service").await.unwrap(), "failed");
        assert_eq!(s.active_state("nope.service").await.unwrap(), "inactive");
    }

    #[tokio::test]
    async fn lab_needs_no_bus() {
        let dir = tempfile::tempdir().unwrap();
        let s = NodeSystemd::for_run(Some(NodeRoot::new(dir.path())))
            .await
            .unwrap();
        assert!(matches!(s, NodeSystemd::Lab(_)));
        s.enable(&["keepalived.service"]).await.unwrap();
        s.start("keepalived.service").await.unwrap();
        assert_eq!(
            s.active_state("keepalived.service").await.unwrap(),
            "active"
        );
    }

    #[test]
    fn sd_notify_without_socket_is_quiet() {
        // No NOTIFY_SOCKET in tests: must not panic or fail.
        SdNotifier.ready();
        SdNotifier.status("x");
    }
}
