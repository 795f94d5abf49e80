//! kube-vip's kubeconfig switch on the init node of kubeadm ≥ 1.29: during `kubeadm init`
//! `admin.conf` has no rights yet, so the static pod must mount `super-admin.conf`, and be
//! switched back afterwards. Pure text transforms of the manifest.

const ADMIN: &str = "/etc/kubernetes/admin.conf";
const SUPER_ADMIN: &str = "/etc/kubernetes/super-admin.conf";

/// The manifest with its hostPath kubeconfig pointing at `super-admin.conf`. The mount
/// path inside the pod stays `/etc/kubernetes/admin.conf` (kube-vip reads that path).
pub fn to_super_admin(manifest: &str) -> String {
    map_host_paths(manifest, ADMIN, SUPER_ADMIN)
}

/// The inverse of [`to_super_admin`].
pub fn to_admin(manifest: &str) -> String {
    map_host_paths(manifest, SUPER_ADMIN, ADMIN)
}

/// Replaces `from` by `to` only on `path:` lines under a `hostPath:` key.
fn map_host_paths(manifest: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(manifest.len() + 8);
    let mut in_host_path: Option<usize> = None;
    for line in manifest.split_inclusive('\n') {
        let indent = line.len() - line.trim_start().len();
        let body = line.trim();
        if let Some(i) = in_host_path
            && indent <= i
            && !body.is_empty()
        {
            in_host_path = None;
        }
        if body == "hostPath:" || body == "- hostPath:" {
            in_host_path = Some(indent);
            out.push_str(line);
            continue;
        }
        if in_host_path.is_some() && body.starts_with("path:") && body.contains(from) {
            out.push_str(&line.replacen(from, to, 1));
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "apiVersion: v1
kind: Pod
metadata:
  name: kube-vip
  namespace: kube-system
spec:
  containers:
  - args:
    - manager
    image: ghcr.io/kube-vip/kube-vip:v0.8.9
    name: kube-vip
    volumeMounts:
    - mountPath: /etc/kubernetes/admin.conf
      name: kubeconfig
  hostAliases:
  - hostnames:
    - kubernetes
    ip: 127.0.0.1
  hostNetwork: true
  volumes:
  - hostPath:
      path: /etc/kubernetes/admin.conf
    name: kubeconfig
";

    #[test]
    fn switches_only_the_host_path() {
        let s = to_super_admin(MANIFEST);
        assert!(s.contains("      path: /etc/kubernetes/super-admin.conf\n"));
        assert!(
            s.contains("- mountPath: /etc/kubernetes/admin.conf\n"),
            "{s}"
        );
        assert_eq!(s.matches("super-admin").count(), 1);
        assert_eq!(to_admin(&s), MANIFEST);
    }

    #[test]
    fn idempotent() {
        let once = to_super_admin(MANIFEST);
        assert_eq!(to_super_admin(&once), once);
        assert_eq!(to_admin(MANIFEST), MANIFEST);
    }
}
