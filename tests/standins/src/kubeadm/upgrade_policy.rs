//! The version policy `kubeadm upgrade apply` enforces before it changes anything, with
//! kubeadm's own messages (cmd/kubeadm/app/phases/upgrade/policy.go): no downgrade, no
//! target newer than kubeadm itself, one minor version at a time, and not more than one
//! minor above kubeadm's. Used by the stand-in's `kubeadm upgrade apply`.

/// `(major, minor, patch)` of `v1.31.2` (a `+k3sN` or pre-release suffix ignored).
pub fn parse(v: &str) -> Option<(u32, u32, u32)> {
    let body = v.strip_prefix('v').unwrap_or(v);
    let core = body.split(['+', '-']).next()?;
    let mut it = core.split('.').map(|p| p.parse::<u32>().ok());
    let (a, b, c) = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some((a, b, c))
}

/// The fatal errors kubeadm would list for upgrading a cluster at `cluster` with kubeadm
/// `kubeadm` to `target` (empty: allowed).
pub fn violations(cluster: &str, kubeadm: &str, target: &str) -> Vec<String> {
    let (Some(c), Some(k), Some(t)) = (parse(cluster), parse(kubeadm), parse(target)) else {
        return vec![format!(
            "couldn't parse versions cluster {cluster:?}, kubeadm {kubeadm:?}, target {target:?}"
        )];
    };
    let mut errs = Vec::new();
    if t <= c {
        errs.push(format!(
            "Specified version to upgrade to {target:?} is equal to or lower than the cluster version {cluster:?}. Downgrades are not supported yet"
        ));
    }
    if t > k {
        errs.push(format!(
            "Specified version to upgrade to {target:?} is higher than the kubeadm version {kubeadm:?}. Upgrade kubeadm first using the tool you used to install kubeadm"
        ));
    }
    if t.0 == c.0 && t.1 > c.1 + 1 {
        errs.push(format!(
            "Specified version to upgrade to {target:?} is too high; kubeadm can upgrade only 1 minor version at a time"
        ));
    }
    if t.1 > k.1 {
        errs.push(format!(
            "Specified version to upgrade to {target:?} is at least one minor release higher than the kubeadm minor release ({} > {}). Such an upgrade is not supported",
            t.1, k.1
        ));
    }
    errs
}

/// The message `kubeadm upgrade apply` exits with for these errors.
pub fn fatal(errors: &[String]) -> String {
    let list: String = errors.iter().map(|e| format!("\t- {e}\n")).collect();
    format!(
        "[upgrade/version] FATAL: the --version argument is invalid due to these fatal errors:\n\n{list}\nCan be bypassed if you pass the --force flag"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubelet_of_a_newer_minor_than_the_control_plane_is_refused() {
        assert!(
            kubelet_skew("v1.32.0", "v1.31.4")
                .unwrap()
                .contains("higher than the control plane")
        );
        assert_eq!(kubelet_skew("v1.31.9", "v1.31.4"), None);
        assert_eq!(kubelet_skew("v1.30.2", "v1.31.4"), None);
        assert_eq!(kubelet_skew("garbage", "v1.31.4"), None);
    }

    #[test]
    fn one_minor_up_with_a_matching_kubeadm_is_allowed() {
        assert!(violations("v1.30.5", "v1.31.2", "v1.31.2").is_empty());
        assert!(violations("v1.31.0", "v1.31.2", "v1.31.2").is_empty());
    }

    #[test]
    fn skips_downgrades_and_an_old_kubeadm_are_refused_with_kubeadms_words() {
        let skip = violations("v1.30.5", "v1.32.0", "v1.32.0");
        assert_eq!(skip.len(), 1, "{skip:?}");
        assert!(skip[0].contains("kubeadm can upgrade only 1 minor version at a time"));
        let down = violations("v1.31.2", "v1.31.2", "v1.31.1");
        assert!(
            down[0].contains("Downgrades are not supported yet"),
            "{down:?}"
        );
        let old = violations("v1.30.5", "v1.30.5", "v1.31.2");
        assert!(
            old.iter().any(|e| e.contains("Upgrade kubeadm first")),
            "{old:?}"
        );
        assert!(old.iter().any(|e| e.contains("(31 > 30)")), "{old:?}");
        let msg = fatal(&skip);
        assert!(msg.starts_with("[upgrade/version] FATAL"), "{msg}");
        assert!(msg.contains("\t- Specified version"), "{msg}");
    }

    #[test]
    fn versions_parse_like_kubeadm_prints_them() {
        assert_eq!(parse("v1.31.2"), Some((1, 31, 2)));
        assert_eq!(parse("v1.31.6+k3s1"), Some((1, 31, 6)));
        assert_eq!(parse("v1.31"), None);
    }
}

/// The `kubernetesVersion` of a stored ClusterConfiguration (YAML text), else `default`.
/// kubeadm join's `KubeletVersion` preflight check: a kubelet of a newer minor than the
/// control plane (the ClusterConfiguration's `kubernetesVersion`) is refused, in kubeadm's
/// words. `None` when the skew is allowed or a version does not parse.
pub fn kubelet_skew(kubelet: &str, control_plane: &str) -> Option<String> {
    let (k, c) = (parse(kubelet)?, parse(control_plane)?);
    (k.0 > c.0 || k.1 > c.1).then(|| {
        format!(
            "the kubelet version is higher than the control plane version. This is not a supported version skew and may lead to a malfunctional cluster. Kubelet version: {kubelet:?} Control plane version: {control_plane:?}"
        )
    })
}

pub fn cluster_version(cluster_configuration: &str, default: &str) -> String {
    cluster_configuration
        .lines()
        .find_map(|l| l.strip_prefix("kubernetesVersion:"))
        .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// The ClusterConfiguration with its `kubernetesVersion` set to `version` (what `kubeadm
/// upgrade apply` stores back into the `kubeadm-config` ConfigMap).
pub fn with_version(cluster_configuration: &str, version: &str) -> String {
    let line = format!("kubernetesVersion: {version}");
    let mut found = false;
    let mut out: Vec<String> = cluster_configuration
        .lines()
        .map(|l| {
            if l.starts_with("kubernetesVersion:") {
                found = true;
                line.clone()
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        out.push(line);
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

#[cfg(test)]
mod config_tests {
    use super::*;

    #[test]
    fn the_stored_version_is_read_and_replaced() {
        let cc = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: \"v1.30.5\"\nnetworking:\n  podSubnet: 10.244.0.0/16\n";
        assert_eq!(cluster_version(cc, "v0"), "v1.30.5");
        let up = with_version(cc, "v1.31.2");
        assert_eq!(cluster_version(&up, "v0"), "v1.31.2");
        assert!(up.contains("  podSubnet: 10.244.0.0/16"), "{up}");
        let bare = "kind: ClusterConfiguration\n";
        assert_eq!(cluster_version(bare, "v1.30.0"), "v1.30.0");
        assert_eq!(
            cluster_version(&with_version(bare, "v1.31.0"), "x"),
            "v1.31.0"
        );
    }
}
