//! What the lab needs on this machine, and the Debian package that provides each tool.

use crate::error::{LabError, Result};
use model::Cluster;
use model::spec::VipProvider;
use std::path::PathBuf;

/// `(tool, Debian package)` the lab always needs.
pub const ALWAYS: [(&str, &str); 5] = [
    ("ip", "iproute2"),
    ("unshare", "util-linux"),
    ("setsid", "util-linux"),
    ("etcd", "etcd-server"),
    ("etcdctl", "etcd-client"),
];

pub use muster_lab_units::find_tool as find;

/// The tool's path, or an error naming the package to install.
pub fn require(tool: &str, package: &str) -> Result<PathBuf> {
    find(tool).ok_or_else(|| LabError::MissingTool {
        tool: tool.to_string(),
        package: package.to_string(),
    })
}

/// Tools this cluster's lab runs, beyond [`ALWAYS`].
pub fn for_cluster(c: &Cluster) -> Vec<(&'static str, &'static str)> {
    let mut v = Vec::new();
    let lbs = c.topology.load_balancers > 0;
    match c.ha.provider {
        VipProvider::KubeVip | VipProvider::Keepalived => v.push(("keepalived", "keepalived")),
        VipProvider::Haproxy => v.push(("haproxy", "haproxy")),
        VipProvider::Nginx => v.push(("nginx", "nginx-light libnginx-mod-stream")),
    }
    if lbs
        && c.ha.vip.is_some()
        && matches!(c.ha.provider, VipProvider::Haproxy | VipProvider::Nginx)
    {
        v.push(("keepalived", "keepalived"));
    }
    match c.datastore {
        model::spec::Datastore::ExternalSql { .. } => v.extend(crate::mariadb::TOOLS),
        model::spec::Datastore::ExternalEtcd { .. } => v.extend(crate::etcd::TOOLS),
        model::spec::Datastore::StackedEtcd => {}
    }
    v
}

/// Fails unless we are root and every tool this cluster's lab runs is installed. Every
/// missing tool is named at once with its package.
pub fn check(c: &Cluster) -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err(LabError::NotRoot);
    }
    let mut missing: Vec<(&str, &str)> = ALWAYS
        .iter()
        .copied()
        .chain(for_cluster(c))
        .filter(|(t, _)| find(t).is_none())
        .collect();
    missing.dedup();
    if c.ha.provider == VipProvider::Nginx
        && !std::path::Path::new(muster_build::render::nginx::STREAM_MODULE).is_file()
    {
        missing.push((
            muster_build::render::nginx::STREAM_MODULE,
            "libnginx-mod-stream",
        ));
    }
    match missing.as_slice() {
        [] => Ok(()),
        [(tool, package)] => Err(LabError::MissingTool {
            tool: tool.to_string(),
            package: package.to_string(),
        }),
        many => {
            let mut packages: Vec<&str> = many.iter().map(|(_, p)| *p).collect();
            packages.dedup();
            Err(LabError::MissingTool {
                tool: many
                    .iter()
                    .map(|(t, _)| *t)
                    .collect::<Vec<_>>()
                    .join("`, `"),
                package: packages.join(" "),
            })
        }
    }
}

/// Why this spec cannot be assembled in the lab yet, if it cannot.
pub fn unsupported(c: &Cluster) -> Vec<String> {
    use model::spec::Datastore;
    let mut why = Vec::new();
    match &c.datastore {
        Datastore::StackedEtcd => {}
        Datastore::ExternalEtcd { endpoints, .. } => {
            for e in endpoints {
                if let Err(e) = crate::etcd::endpoint_addr(e) {
                    why.push(e.to_string());
                }
            }
        }
        Datastore::ExternalSql { endpoint } => {
            if let Err(e) = crate::mariadb::endpoint_dsn(endpoint) {
                why.push(format!("datastore external-sql: {e}"));
            }
        }
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> Cluster {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples")
            .join(name);
        muster_build::spec_source::load(Some(&path))
            .unwrap()
            .cluster
    }

    #[test]
    fn every_example_runs() {
        for ok in [
            "default.yaml",
            "seed-000-kubeadm-kube-vip.yaml",
            "seed-001-k3s-haproxy-proxmox.yaml",
            "seed-002-k3s-nginx-mariadb.yaml",
            "seed-003-k3s-keepalived.yaml",
            "seed-004-kubeadm-haproxy.yaml",
            "seed-004-kubeadm-external-etcd.yaml",
        ] {
            assert!(unsupported(&example(ok)).is_empty(), "{ok}");
        }
        let mut c = example("seed-004-kubeadm-external-etcd.yaml");
        if let model::spec::Datastore::ExternalEtcd { endpoints, .. } = &mut c.datastore {
            endpoints[1] = serde_json::from_str("\"https://etcd-2.lab:2379\"").unwrap();
        }
        let why = unsupported(&c);
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(why[0].contains("IPv4"), "{why:?}");
        let ext = for_cluster(&example("seed-004-kubeadm-external-etcd.yaml"));
        assert!(ext.contains(&("etcd", "etcd-server")), "{ext:?}");
    }

    #[test]
    fn tools_follow_the_provider() {
        let kv = for_cluster(&example("default.yaml"));
        assert_eq!(kv, vec![("keepalived", "keepalived")]);
        let hap = for_cluster(&example("seed-004-kubeadm-haproxy.yaml"));
        assert_eq!(
            hap,
            vec![("haproxy", "haproxy"), ("keepalived", "keepalived")]
        );
        let sql = for_cluster(&example("seed-002-k3s-nginx-mariadb.yaml"));
        for t in ["mariadbd", "mariadb-install-db", "mariadb"] {
            assert!(sql.iter().any(|(tool, _)| *tool == t), "{t}: {sql:?}");
        }
        assert!(sql.contains(&("mariadbd", "mariadb-server")), "{sql:?}");
    }
}
