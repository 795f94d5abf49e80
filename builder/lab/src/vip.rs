//! The real VIP providers the lab runs per node, from the files `muster build` baked into the
//! payload (`usr/lib/muster/nodes/<node>/…`, present as soon as the payload is unpacked):
//! - `keepalived`: keepalived on the control planes;
//! - `haproxy`: HAProxy on the load balancers, keepalived floating the VIP between them;
//! - `nginx`: nginx (stream) on the load balancers, keepalived when there is a VIP;
//! - `kube-vip`: kube-vip is a static pod and needs a kubelet, which the lab does not have;
//!   the lab floats the spec's VIP with keepalived on the control planes instead (rendered by
//!   muster's own keepalived renderer, as for provider `keepalived`) and says so.
//!
//! Lab-only rewrites, because every node shares this machine's filesystem: absolute paths in
//! the baked configs (keepalived's check script, nginx's pid file) are re-rooted; the lab
//! writes those copies next to the node's logs, never into the node's root. Each daemon
//! whose config follows the membership is described to the agent (a
//! [`LabDaemon`]: pid file, installed config, copy, rewrites), so the agent's reload makes
//! the copy again from the config it installed and signals the daemon, as `systemctl
//! reload` does on a node. HAProxy runs master-worker (`-W`) so SIGUSR2 reloads it.

use crate::error::{LabError, Result};
use crate::process::Service;
use model::lb_config::KeepalivedTiming;
use model::node_files as nf;
use model::spec::{Role, VipProvider};
use model::{Cluster, Plan, PlannedNode};
use muster_build::render::{Input, keepalived};
use muster_lab_units::daemon::LabDaemon;
use std::path::Path;

/// The kube-vip stand-in's check on kube-vip's timing as muster renders its manifest
/// (`vip_retryperiod` 1 s, `vip_renewdeadline` 3 s): kube-vip takes the VIP within a retry
/// period of the API answering and gives it up when it cannot renew for 3 s. keepalived as
/// rendered for users ([`KeepalivedTiming::RENDERED`]) rises only after two checks 2 s apart,
/// which made the stand-in seconds slower than kube-vip after an init. The namespaces run
/// the check natively (a bash redirect, milliseconds), so the 2 s timeout leaves room on a
/// loaded machine. What stays keepalived's own: a new holder ~3 `advert_int` (3.4 s) after
/// the check rises or the holder stops advertising (kube-vip: within the 5 s lease).
pub const KUBE_VIP_STANDIN_TIMING: KeepalivedTiming = KeepalivedTiming {
    interval_s: 1,
    timeout_s: 2,
    fall: 3,
    rise: 1,
    advert_int_s: 1,
};

/// What the lab runs for the spec's provider, in words.
pub fn describe(c: &Cluster) -> String {
    let vip = c.ha.vip.map(|v| v.to_string());
    match (c.ha.provider, vip) {
        (VipProvider::KubeVip, Some(v)) => format!(
            "VIP {v}: the spec says kube-vip (a static pod that needs a kubelet); the lab floats it with keepalived on the control planes instead"
        ),
        (VipProvider::Keepalived, Some(v)) => format!("VIP {v}: keepalived on the control planes"),
        (VipProvider::Haproxy, Some(v)) => format!(
            "VIP {v}: keepalived on the load balancers, HAProxy forwarding to the control planes"
        ),
        (VipProvider::Nginx, Some(v)) => format!(
            "VIP {v}: keepalived on the load balancers, nginx (stream) forwarding to the control planes"
        ),
        (VipProvider::Nginx, None) => {
            "no VIP: nginx (stream) on the load balancer forwards to the control planes".into()
        }
        (p, None) => format!("no VIP ({p:?})"),
    }
}

/// Where a node's lab files live: `dir` (logs, configs), `dir/run` (pid files).
#[derive(Debug)]
pub struct NodeDirs<'a> {
    pub dir: &'a Path,
    pub root: &'a Path,
}

impl NodeDirs<'_> {
    fn service(&self, ns: &str, name: &str, argv: Vec<String>) -> Service {
        Service {
            name: name.to_string(),
            ns: ns.to_string(),
            argv,
            env: Vec::new(),
            log: self.dir.join(format!("{name}.log")),
            pid_file: self.dir.join("run").join(format!("{name}.pid")),
        }
    }

    /// The baked file `rel` of this node's tree, inside its root.
    fn baked(&self, node: &PlannedNode, rel: &str) -> std::path::PathBuf {
        model::node_files::NodeRoot::new(self.root)
            .node_tree(&node.name)
            .join(rel)
    }
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    muster_build::bake::write::write_atomic(path, text.as_bytes(), mode).map_err(LabError::io(path))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(LabError::io(path))
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The lab's description of a daemon it runs on the copy `copy` of the node's installed
/// `config`, made with `rewrites`; the copy is written now from `baked`.
fn reloadable(
    svc: &Service,
    unit: &str,
    config: &str,
    copy: std::path::PathBuf,
    rewrites: Vec<(String, String)>,
    baked: &str,
) -> Result<LabDaemon> {
    let d = LabDaemon {
        unit: unit.into(),
        pid_file: svc.pid_file.clone(),
        config: config.into(),
        copy,
        rewrites,
    };
    write(&d.copy, &d.rewrite(baked), 0o644)?;
    Ok(d)
}

/// keepalived's check script path re-rooted to `check`.
fn keepalived_rewrites(check: &Path) -> Vec<(String, String)> {
    let from = format!("\"/{}\"", nf::KEEPALIVED_CHECK);
    vec![(from, format!("\"{}\"", s(check)))]
}

/// keepalived: the config with its check script re-rooted to `check`.
fn keepalived_service(
    d: &NodeDirs<'_>,
    ns: &str,
    conf_text: &str,
    check: &Path,
    tool: &Path,
) -> Result<Service> {
    let conf = d.dir.join("keepalived.conf");
    let text = keepalived::rehome_check(conf_text, &s(check));
    write(&conf, &text, 0o644)?;
    let run = d.dir.join("run");
    std::fs::create_dir_all(&run).map_err(LabError::io(&run))?;
    let argv = [
        s(tool),
        "-n".into(),
        "-l".into(),
        "-D".into(),
        "-G".into(),
        "-P".into(),
        "-f".into(),
        s(&conf),
        "-p".into(),
        s(&run.join("keepalived-main.pid")),
        "-r".into(),
        s(&run.join("keepalived-vrrp.pid")),
        "-c".into(),
        s(&run.join("keepalived-check.pid")),
    ];
    Ok(d.service(ns, "keepalived", argv.to_vec()))
}

/// The VIP/LB daemons of one node, in start order (load balancer before keepalived, whose
/// health check is the local listener), and those of them whose config follows the
/// membership (reloaded by the agent).
pub fn services(
    cluster: &Cluster,
    plan: &Plan,
    node: &PlannedNode,
    ns: &str,
    d: &NodeDirs<'_>,
) -> Result<(Vec<Service>, Vec<LabDaemon>)> {
    let tool = |t: &str, pkg: &str| crate::prereq::require(t, pkg);
    let mut out = Vec::new();
    let mut follow = Vec::new();
    let input = Input::new(cluster, plan);
    if node.role == Role::LoadBalancer {
        match cluster.ha.provider {
            VipProvider::Haproxy => {
                let conf = d.dir.join("haproxy.cfg");
                // Master-worker in the foreground: SIGUSR2 to the master reloads (as
                // Debian's unit runs it, `-Ws`).
                let argv = vec![
                    s(&tool("haproxy", "haproxy")?),
                    "-W".into(),
                    "-db".into(),
                    "-f".into(),
                    s(&conf),
                ];
                let svc = d.service(ns, "haproxy", argv);
                let baked = read(&d.baked(node, nf::HAPROXY_CONF))?;
                follow.push(reloadable(
                    &svc,
                    "haproxy.service",
                    nf::HAPROXY_CONF,
                    conf,
                    Vec::new(),
                    &baked,
                )?);
                out.push(svc);
            }
            VipProvider::Nginx => {
                let conf = d.dir.join("nginx.conf");
                let pid = d.dir.join("run").join("nginx-main.pid");
                let rewrites = vec![(
                    "pid /run/nginx.pid;".to_string(),
                    format!("pid {};", pid.display()),
                )];
                let baked = read(&d.baked(node, nf::NGINX_CONF))?;
                let prefix = d.dir.join("nginx");
                std::fs::create_dir_all(&prefix).map_err(LabError::io(&prefix))?;
                let argv = vec![
                    s(&tool("nginx", "nginx-light libnginx-mod-stream")?),
                    "-e".into(),
                    "stderr".into(),
                    "-p".into(),
                    format!("{}/", prefix.display()),
                    "-c".into(),
                    s(&conf),
                    "-g".into(),
                    "daemon off;".into(),
                ];
                let svc = d.service(ns, "nginx", argv);
                follow.push(reloadable(
                    &svc,
                    "nginx.service",
                    nf::NGINX_CONF,
                    conf,
                    rewrites,
                    &baked,
                )?);
                out.push(svc);
            }
            VipProvider::KubeVip | VipProvider::Keepalived => {}
        }
    }
    let Some(vip) = cluster.ha.vip else {
        return Ok((out, follow));
    };
    let bin = tool("keepalived", "keepalived")?;
    if cluster.ha.provider == VipProvider::KubeVip && node.role == Role::ControlPlane {
        // The same renderer `muster build` uses for provider `keepalived`, on kube-vip's
        // timing; fixed peers (the lab's stand-in for kube-vip follows nothing).
        let check = d.dir.join("check_apiserver.sh");
        write(&check, &keepalived::check_script(&input), 0o755)?;
        let conf = keepalived::config_timed(&input, node, vip, KUBE_VIP_STANDIN_TIMING);
        out.push(keepalived_service(d, ns, &conf, &check, &bin)?);
    } else if keepalived::role(&input) == Some(node.role) {
        let baked = read(&d.baked(node, nf::KEEPALIVED_CONF))?;
        let check = d.baked(node, nf::KEEPALIVED_CHECK);
        let svc = keepalived_service(d, ns, &baked, &check, &bin)?;
        let copy = d.dir.join("keepalived.conf");
        follow.push(reloadable(
            &svc,
            "keepalived.service",
            nf::KEEPALIVED_CONF,
            copy,
            keepalived_rewrites(&check),
            &baked,
        )?);
        out.push(svc);
    }
    Ok((out, follow))
}
