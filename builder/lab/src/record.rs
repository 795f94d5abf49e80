//! `lab.json` in the state dir: everything later `muster lab` commands need to find the
//! lab again (namespaces, veths, roots, pids, the spec, the build dir). Written atomically.
//!
//! State dir layout:
//! - `lab.json`;
//! - `build/`: the `muster build` output (cluster secret, payload, seeds, rendezvous cert);
//! - `standin-path/`: `kubeadm`, `k3s`, ... links to the stand-ins;
//! - `rendezvous/{data/,rendezvous.log,rendezvous.pid}`;
//! - `mariadb/{data/,mariadbd.log,mariadbd.pid,mysqld.sock}`: the SQL datastore
//!   (external-sql specs);
//! - `nodes/<node>/root/`: the node's disk (payload + cloud-init files + what the agent and
//!   the stand-ins write); `nodes/<node>/{agent,keepalived,haproxy,nginx,kubelet}.log`,
//!   `nodes/<node>/run/*.pid` and the lab's copies of VIP configs.

use crate::error::{LabError, Result};
use crate::process::Service;
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

pub const FILE: &str = "lab.json";
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabRecord {
    pub format: u32,
    /// Prefix of every namespace of this lab (`<id>-br`, `<id>-<node>`).
    pub id: String,
    pub state_dir: PathBuf,
    pub cluster: String,
    /// Where the spec came from, and its text.
    pub spec_origin: String,
    pub spec_text: String,
    pub build_dir: PathBuf,
    pub standins_dir: PathBuf,
    pub path_dir: PathBuf,
    pub bridge_ns: String,
    pub rendezvous: Service,
    pub rendezvous_listen: SocketAddrV4,
    pub api_endpoint: String,
    pub vip: Option<Ipv4Addr>,
    /// The spec's provider (`kube-vip`, `keepalived`, `haproxy`, `nginx`).
    pub vip_provider: String,
    /// What the lab runs for it, in words (says when it differs from the spec).
    pub vip_in_lab: String,
    pub nodes: Vec<NodeRecord>,
    /// Extra environment of every node process (stand-in knobs).
    pub node_env: Vec<(String, String)>,
    pub created_ms: u64,
    /// Milliseconds from the first agent start until every node was done, once it was.
    pub assembled_ms: Option<u64>,
    /// The namespace of the SQL datastore's host (external-sql specs) when that host is not
    /// a planned node (then the server runs in that node's namespace, among its services).
    #[serde(default)]
    pub datastore_ns: Option<String>,
    /// The MariaDB server in [`Self::datastore_ns`].
    #[serde(default)]
    pub datastore: Option<Service>,
    /// The members of the external etcd cluster (external-etcd specs), each in a
    /// namespace of its own.
    #[serde(default)]
    pub external_etcd: Vec<crate::etcd::Member>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub name: String,
    /// `control-plane`, `worker`, `load-balancer`.
    pub role: String,
    pub ip: Ipv4Addr,
    pub ns: String,
    /// The bridge-side end of its link.
    pub veth: String,
    /// The interface inside the node (the spec's `network.interface`).
    pub iface: String,
    pub dir: PathBuf,
    pub root: PathBuf,
    /// Daemons the lab runs on this node, in start order (the VIP provider, the agent).
    pub services: Vec<Service>,
    /// The load-balancer daemons among them that the agent reloads after installing a new
    /// config (descriptors left under the root at every boot; `muster_lab_units::daemon`).
    #[serde(default)]
    pub reloadable: Vec<muster_lab_units::daemon::LabDaemon>,
    /// `lab stop`: every process killed, link down.
    pub halted: bool,
    /// `lab cut`: link down.
    pub cut: bool,
}

impl LabRecord {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(FILE)
    }

    pub fn load(state_dir: &Path) -> Result<LabRecord> {
        let path = Self::path(state_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LabError::NoLab {
                    dir: state_dir.to_path_buf(),
                });
            }
            Err(source) => return Err(LabError::Io { path, source }),
        };
        let rec: LabRecord = serde_json::from_str(&text).map_err(|e| LabError::Bad {
            path: path.clone(),
            detail: format!("not a lab record: {e}"),
        })?;
        if rec.format != FORMAT {
            return Err(LabError::Bad {
                path,
                detail: format!("format {} (this muster reads {FORMAT})", rec.format),
            });
        }
        Ok(rec)
    }

    pub fn save(&self) -> Result<()> {
        let path = Self::path(&self.state_dir);
        let mut text = serde_json::to_string_pretty(self).map_err(|e| LabError::Bad {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        text.push('\n');
        muster_build::bake::write::write_atomic(&path, text.as_bytes(), 0o644)
            .map_err(LabError::io(&path))
    }

    pub fn node(&self, name: &str) -> Result<&NodeRecord> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| self.unknown(name))
    }

    pub fn node_mut(&mut self, name: &str) -> Result<&mut NodeRecord> {
        let err = self.unknown(name);
        self.nodes.iter_mut().find(|n| n.name == name).ok_or(err)
    }

    fn unknown(&self, name: &str) -> LabError {
        LabError::UnknownNode {
            name: name.to_string(),
            known: self.nodes.iter().map(|n| n.name.clone()).collect(),
        }
    }

    /// Every namespace of the lab, the bridge last.
    pub fn namespaces(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| n.ns.clone())
            .chain(self.datastore_ns.clone())
            .chain(self.external_etcd.iter().map(|m| m.ns.clone()))
            .chain([self.bridge_ns.clone()])
            .collect()
    }
}
