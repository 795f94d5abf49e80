//! What the lab end-to-end tests share at teardown.

use muster_lab::Lab;

/// Ends a test's lab: with `MUSTER_LAB_KEEP` set it stays up to inspect (and says where);
/// otherwise `down`, and anything left behind fails the test (unless it already failed).
pub fn finish(lab: Lab) {
    if std::env::var_os("MUSTER_LAB_KEEP").is_some() {
        eprintln!(
            "MUSTER_LAB_KEEP: lab kept in {}; `muster lab down --state {0}` removes it",
            lab.record().state_dir.display()
        );
        return;
    }
    let left = lab.down();
    assert!(
        left.is_empty() || std::thread::panicking(),
        "left behind: {left:?}"
    );
}

/// The command line that writes ConfigMap `name` through the API server `cp_root`'s admin
/// kubeconfig names (the VIP), with the API stand-in's client; run it in a node's namespace.
pub fn configmap_post_argv(cp_root: &std::path::Path, name: &str) -> Vec<String> {
    let kubeconfig = cp_root.join("etc/kubernetes/admin.conf");
    let body = format!("{{\"metadata\":{{\"name\":\"{name}\"}},\"data\":{{\"k\":\"v\"}}}}");
    [
        "apiserver-standin",
        "post",
        "/api/v1/namespaces/default/configmaps",
        "--data",
        &body,
        "--kubeconfig",
        &kubeconfig.display().to_string(),
        "--timeout-secs",
        "5",
    ]
    .map(str::to_string)
    .to_vec()
}
