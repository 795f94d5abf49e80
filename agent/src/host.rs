//! The node's own files as the bootstrap touches them: installing its baked tree, the
//! preflight checks, and the kube-vip manifest (super-admin switch, restore after reset).

use crate::preflight::{self, Options};
use model::NodeName;
use model::node_files::{KUBE_VIP_MANIFEST, KUBE_VIP_PRISTINE, NodeRoot};
use std::path::Path;

pub trait Host {
    fn install_node_tree(&self) -> Result<(), String>;
    fn preflight(&self) -> Result<(), String>;
    fn kube_vip_super_admin(&self) -> Result<(), String>;
    fn restore_kube_vip(&self) -> Result<(), String>;
    fn restore_external_etcd(&self) -> Result<(), String>;
    /// The baked add-ons (index and files, in order); `None` without any.
    fn addons(&self) -> Result<Option<crate::addons::Baked>, String> {
        Ok(None)
    }
}

#[derive(Debug, Clone)]
pub struct FsHost {
    pub root: NodeRoot,
    pub node: NodeName,
    pub preflight: Options,
}

fn copy_tree(src: &Path, dst: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(src).map_err(|e| format!("{}: {e}", src.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", src.display()))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ft = entry
            .file_type()
            .map_err(|e| format!("{}: {e}", from.display()))?;
        if ft.is_dir() {
            copy_tree(&from, &to)?;
        } else {
            let bytes = std::fs::read(&from).map_err(|e| format!("{}: {e}", from.display()))?;
            use std::os::unix::fs::PermissionsExt;
            let mode = entry
                .metadata()
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0o644);
            model::fsutil::write_atomic(&to, &bytes, mode).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

impl Host for FsHost {
    fn addons(&self) -> Result<Option<crate::addons::Baked>, String> {
        crate::addons::load(&self.root).map_err(|e| e.to_string())
    }

    /// Copies `NODE_TREES/<node>/…` onto the root (idempotent). Templates stay where they are.
    fn install_node_tree(&self) -> Result<(), String> {
        let tree = self.root.node_tree(&self.node);
        if !tree.is_dir() {
            return Ok(());
        }
        copy_tree(&tree, self.root.root())
    }

    fn preflight(&self) -> Result<(), String> {
        let mut options = self.preflight.clone();
        if options.probe_host {
            preflight::probe_host(&self.root, &mut options);
        }
        let report = preflight::run(&self.root, &options);
        for c in &report.checks {
            tracing::info!(check = c.name, outcome = ?c.outcome, "preflight");
        }
        let failed: Vec<String> = report.failures().map(|c| c.detail.clone()).collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }

    fn kube_vip_super_admin(&self) -> Result<(), String> {
        let Some(pristine) = self.pristine()? else {
            return Ok(());
        };
        write_manifest(&self.root, &crate::kube_vip::to_super_admin(&pristine))
    }

    fn restore_kube_vip(&self) -> Result<(), String> {
        let Some(pristine) = self.pristine()? else {
            return Ok(());
        };
        write_manifest(&self.root, &crate::kube_vip::to_admin(&pristine))
    }

    fn restore_external_etcd(&self) -> Result<(), String> {
        for (from, to, mode) in model::node_files::ETCD_EXTERNAL_FILES {
            let src = self.root.path(from);
            let bytes = match std::fs::read(&src) {
                Ok(b) => b,
                // No external etcd (or not a control plane): nothing to restore.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("{}: {e}", src.display())),
            };
            model::fsutil::write_atomic(&self.root.path(to), &bytes, mode)
                .map_err(|e| format!("{to}: {e}"))?;
        }
        Ok(())
    }
}

impl FsHost {
    /// The baked manifest, if this node runs kube-vip: absent when kube-vip is not the VIP
    /// provider, and on nodes whose tree has no kube-vip static pod (workers). The pristine
    /// copy is in the shared payload, so its presence alone says nothing about this node.
    fn pristine(&self) -> Result<Option<String>, String> {
        let tree = self.root.node_tree(&self.node);
        if !tree.join(KUBE_VIP_MANIFEST).is_file() {
            return Ok(None);
        }
        let p = self.root.path(KUBE_VIP_PRISTINE);
        match std::fs::read_to_string(&p) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", p.display())),
        }
    }
}

fn write_manifest(root: &NodeRoot, text: &str) -> Result<(), String> {
    model::fsutil::write_atomic(&root.path(KUBE_VIP_MANIFEST), text.as_bytes(), 0o600)
        .map_err(|e| e.to_string())
}

#[cfg(any(test, feature = "testkit"))]
/// Does nothing: for the simulation and tests of the state machine's other effects.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullHost;

#[cfg(any(test, feature = "testkit"))]
impl Host for NullHost {
    fn install_node_tree(&self) -> Result<(), String> {
        Ok(())
    }
    fn preflight(&self) -> Result<(), String> {
        Ok(())
    }
    fn kube_vip_super_admin(&self) -> Result<(), String> {
        Ok(())
    }
    fn restore_kube_vip(&self) -> Result<(), String> {
        Ok(())
    }
    fn restore_external_etcd(&self) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_tree_and_switches_kube_vip() {
        let dir = tempfile::tempdir().unwrap();
        let root = NodeRoot::new(dir.path());
        let node: NodeName = "cp-1".parse().unwrap();
        let tree = root.node_tree(&node);
        std::fs::create_dir_all(tree.join("etc/keepalived")).unwrap();
        std::fs::write(tree.join("etc/keepalived/keepalived.conf"), "vrrp").unwrap();
        std::fs::create_dir_all(tree.join("etc/kubernetes/manifests")).unwrap();
        std::fs::write(tree.join(KUBE_VIP_MANIFEST), "kind: Pod\n").unwrap();
        std::fs::create_dir_all(root.path("usr/lib/muster")).unwrap();
        std::fs::write(
            root.path(KUBE_VIP_PRISTINE),
            "volumes:\n- hostPath:\n    path: /etc/kubernetes/admin.conf\n  name: kubeconfig\n",
        )
        .unwrap();
        let h = FsHost {
            root: root.clone(),
            node,
            preflight: Options::lab(),
        };
        h.install_node_tree().unwrap();
        assert_eq!(
            std::fs::read_to_string(root.path("etc/keepalived/keepalived.conf")).unwrap(),
            "vrrp"
        );
        h.kube_vip_super_admin().unwrap();
        let m = std::fs::read_to_string(root.path(KUBE_VIP_MANIFEST)).unwrap();
        assert!(m.contains("super-admin.conf"));
        h.restore_kube_vip().unwrap();
        let m = std::fs::read_to_string(root.path(KUBE_VIP_MANIFEST)).unwrap();
        assert!(!m.contains("super-admin.conf"));
    }

    #[test]
    fn a_worker_never_gets_the_kube_vip_pod() {
        let dir = tempfile::tempdir().unwrap();
        let root = NodeRoot::new(dir.path());
        let node: NodeName = "w-1".parse().unwrap();
        std::fs::create_dir_all(root.node_tree(&node).join("etc/muster")).unwrap();
        std::fs::create_dir_all(root.path("usr/lib/muster")).unwrap();
        std::fs::write(root.path(KUBE_VIP_PRISTINE), "kind: Pod\n").unwrap();
        let h = FsHost {
            root: root.clone(),
            node,
            preflight: Options::lab(),
        };
        h.install_node_tree().unwrap();
        h.restore_kube_vip().unwrap();
        assert!(!root.path(KUBE_VIP_MANIFEST).exists());
    }

    #[test]
    fn external_etcd_files_come_back_after_a_reset() {
        use model::node_files as nf;
        let dir = tempfile::tempdir().unwrap();
        let root = NodeRoot::new(dir.path());
        let h = FsHost {
            root: root.clone(),
            node: "cp-1".parse().unwrap(),
            preflight: Options::lab(),
        };
        h.restore_external_etcd().unwrap();
        assert!(
            !root.path(nf::ETCD_EXTERNAL_CA).exists(),
            "no seed copy: nothing"
        );
        for (seed, _, _) in nf::ETCD_EXTERNAL_FILES {
            std::fs::create_dir_all(root.path(seed).parent().unwrap()).unwrap();
            std::fs::write(root.path(seed), seed).unwrap();
        }
        h.restore_external_etcd().unwrap();
        use std::os::unix::fs::PermissionsExt;
        for (seed, kubeadm, mode) in nf::ETCD_EXTERNAL_FILES {
            let p = root.path(kubeadm);
            assert_eq!(std::fs::read_to_string(&p).unwrap(), seed);
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                mode
            );
        }
    }
}
