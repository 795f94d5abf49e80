//! The kube-vip static pod manifest, as far as the agent needs to touch it: switching the
//! kubeconfig it mounts between `admin.conf` and `super-admin.conf`.
//!
//! From kubeadm 1.29, `admin.conf` has no rights until `kubeadm init` is partly done, so on
//! the init node kube-vip must mount `super-admin.conf` during init and be switched back to
//! `admin.conf` afterwards (kube-vip issue #684). The manifest the builder renders mounts
//! the file through one hostPath volume whose `path:` line this module rewrites; the
//! container-side `mountPath` stays `/etc/kubernetes/admin.conf`.

/// The kubeconfig kube-vip uses normally.
pub const ADMIN_CONF: &str = "admin.conf";
/// The kubeconfig kube-vip needs on the init node during `kubeadm init` (kubeadm ≥ 1.29).
pub const SUPER_ADMIN_CONF: &str = "super-admin.conf";
/// The directory both live in on a kubeadm node.
pub const KUBECONFIG_DIR: &str = "/etc/kubernetes";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeVipError {
    #[error("kube-vip manifest: `{0}` is not admin.conf or super-admin.conf")]
    UnknownKubeconfig(String),
    #[error(
        "kube-vip manifest: expected exactly one hostPath `path: /etc/kubernetes/admin.conf` or `…/super-admin.conf` line, found {0}"
    )]
    HostPathLines(usize),
}

fn is_kubeconfig_path_line(line: &str) -> bool {
    let t = line.trim_start();
    let Some(rest) = t.strip_prefix("path:") else {
        return false;
    };
    let v = rest.trim().trim_matches('"').trim_matches('\'');
    v == format!("{KUBECONFIG_DIR}/{ADMIN_CONF}")
        || v == format!("{KUBECONFIG_DIR}/{SUPER_ADMIN_CONF}")
}

/// Returns `manifest` with its kubeconfig hostPath pointing at `/etc/kubernetes/<conf>`,
/// where `conf` is [`ADMIN_CONF`] or [`SUPER_ADMIN_CONF`]. Idempotent; everything else is
/// left byte for byte as it was.
pub fn use_kubeconfig(manifest: &str, conf: &str) -> Result<String, KubeVipError> {
    if conf != ADMIN_CONF && conf != SUPER_ADMIN_CONF {
        return Err(KubeVipError::UnknownKubeconfig(conf.to_string()));
    }
    let found = manifest
        .split_inclusive('\n')
        .filter(|l| is_kubeconfig_path_line(l))
        .count();
    if found != 1 {
        return Err(KubeVipError::HostPathLines(found));
    }
    let mut out = String::with_capacity(manifest.len() + 8);
    for line in manifest.split_inclusive('\n') {
        if is_kubeconfig_path_line(line) {
            let indent = &line[..line.len() - line.trim_start().len()];
            let eol = if line.ends_with('\n') { "\n" } else { "" };
            out.push_str(&format!("{indent}path: {KUBECONFIG_DIR}/{conf}{eol}"));
        } else {
            out.push_str(line);
        }
    }
    Ok(out)
}

/// Which kubeconfig the manifest currently mounts, if it is one of the two.
pub fn current_kubeconfig(manifest: &str) -> Option<&'static str> {
    let line = manifest.lines().find(|l| is_kubeconfig_path_line(l))?;
    if line
        .trim_end()
        .trim_end_matches(['"', '\''])
        .ends_with(SUPER_ADMIN_CONF)
    {
        Some(SUPER_ADMIN_CONF)
    } else {
        Some(ADMIN_CONF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "spec:\n  containers:\n  - volumeMounts:\n    - mountPath: /etc/kubernetes/admin.conf\n      name: kubeconfig\n  volumes:\n  - hostPath:\n      path: /etc/kubernetes/admin.conf\n      type: FileOrCreate\n    name: kubeconfig\n";

    #[test]
    fn switches_there_and_back() {
        let sup = use_kubeconfig(SAMPLE, SUPER_ADMIN_CONF).unwrap();
        assert!(sup.contains("      path: /etc/kubernetes/super-admin.conf\n"));
        assert!(sup.contains("- mountPath: /etc/kubernetes/admin.conf\n"));
        assert_eq!(current_kubeconfig(&sup), Some(SUPER_ADMIN_CONF));
        assert_eq!(use_kubeconfig(&sup, SUPER_ADMIN_CONF).unwrap(), sup);
        let back = use_kubeconfig(&sup, ADMIN_CONF).unwrap();
        assert_eq!(back, SAMPLE);
        assert_eq!(current_kubeconfig(&back), Some(ADMIN_CONF));
    }

    #[test]
    fn refuses_unknown_names_and_odd_manifests() {
        assert_eq!(
            use_kubeconfig(SAMPLE, "kubelet.conf"),
            Err(KubeVipError::UnknownKubeconfig("kubelet.conf".into()))
        );
        assert_eq!(
            use_kubeconfig("spec: {}\n", ADMIN_CONF),
            Err(KubeVipError::HostPathLines(0))
        );
        let twice = format!("{SAMPLE}{SAMPLE}");
        assert_eq!(
            use_kubeconfig(&twice, ADMIN_CONF),
            Err(KubeVipError::HostPathLines(2))
        );
    }
}
