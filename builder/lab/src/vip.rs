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
//! writes those copies next to the node's logs, never into the node's root.

use crate::error::{LabError, Result};
use crate::process::Service;
use model::node_files as nf;
use model::spec::{Role, VipProvider};
use model::{Cluster, Plan, PlannedNode};
use muster_build::render::{Input, keepalived};
use std::path::Path;

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
/// health check is the local listener).
pub fn services(
    cluster: &Cluster,
    plan: &Plan,
    node: &PlannedNode,
    ns: &str,
    d: &NodeDirs<'_>,
) -> Result<Vec<Service>> {
    let tool = |t: &str, pkg: &str| crate::prereq::require(t, pkg);
    let mut out = Vec::new();
    let input = Input::new(cluster, plan);
    if node.role == Role::LoadBalancer {
        match cluster.ha.provider {
            VipProvider::Haproxy => {
                let conf = d.baked(node, nf::HAPROXY_CONF);
                let argv = vec![
                    s(&tool("haproxy", "haproxy")?),
                    "-db".into(),
                    "-f".into(),
                    s(&conf),
                ];
                out.push(d.service(ns, "haproxy", argv));
            }
            VipProvider::Nginx => {
                let conf = d.dir.join("nginx.conf");
                let pid = d.dir.join("run").join("nginx-main.pid");
                let text = read(&d.baked(node, nf::NGINX_CONF))?
                    .replace("pid /run/nginx.pid;", &format!("pid {};", pid.display()));
                write(&conf, &text, 0o644)?;
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
                out.push(d.service(ns, "nginx", argv));
            }
            VipProvider::KubeVip | VipProvider::Keepalived => {}
        }
    }
    let Some(vip) = cluster.ha.vip else {
        return Ok(out);
    };
    let (conf, check) =
        if cluster.ha.provider == VipProvider::KubeVip && node.role == Role::ControlPlane {
            // The same renderer `muster build` uses for provider `keepalived`.
            let check = d.dir.join("check_apiserver.sh");
            write(&check, &keepalived::check_script(&input), 0o755)?;
            (keepalived::config(&input, node, vip), check)
        } else if keepalived::role(&input) == Some(node.role) {
            let conf = read(&d.baked(node, nf::KEEPALIVED_CONF))?;
            (conf, d.baked(node, nf::KEEPALIVED_CHECK))
        } else {
            return Ok(out);
        };
    let bin = tool("keepalived", "keepalived")?;
    out.push(keepalived_service(d, ns, &conf, &check, &bin)?);
    Ok(out)
}
