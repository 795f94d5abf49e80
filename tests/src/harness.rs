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

/// `muster kubeconfig --write KC` for the lab's build, run from `from`'s namespace (so the
/// VIP is reached as a client on the cluster's network sees it); asserts it succeeded and
/// points the kubeconfig at the VIP. `muster` is the operator binary to run.
pub fn write_admin_kubeconfig(
    lab: &Lab,
    muster: &std::path::Path,
    from: &str,
    kc: &std::path::Path,
) {
    let build = lab.record().build_dir.clone();
    let out = lab
        .exec(
            from,
            &[
                &muster.display().to_string(),
                "kubeconfig",
                "--out",
                &build.display().to_string(),
                "--write",
                &kc.display().to_string(),
            ],
        )
        .unwrap_or_else(|e| panic!("muster kubeconfig: {e}"));
    assert!(out.ok(), "muster kubeconfig: {}", out.all());
    let vip = lab.record().vip.map(|v| v.to_string()).unwrap_or_default();
    assert!(
        !vip.is_empty() && out.stdout.contains(&vip),
        "the kubeconfig is not pointed at the VIP {vip}: {}",
        out.all()
    );
}

/// Runs the real `kubectl` with `args` in `from`'s namespace against the kubeconfig `kc`
/// (from [`write_admin_kubeconfig`]), its `HOME` the kubeconfig's directory so kubectl's
/// discovery cache stays there; a 10 s request timeout. The caller judges the result.
pub fn real_kubectl_in(
    lab: &Lab,
    kubectl: &std::path::Path,
    kc: &std::path::Path,
    from: &str,
    args: &[&str],
) -> muster_lab::netns::Out {
    let home = format!(
        "HOME={}",
        kc.parent().unwrap_or(std::path::Path::new("/")).display()
    );
    let kubectl = kubectl.display().to_string();
    let kc = kc.display().to_string();
    let mut argv = vec![
        "env",
        home.as_str(),
        kubectl.as_str(),
        "--kubeconfig",
        kc.as_str(),
        "--request-timeout=10s",
    ];
    argv.extend(args);
    lab.exec(from, &argv)
        .unwrap_or_else(|e| panic!("kubectl {args:?} in {from}: {e}"))
}

/// Whether the lab end-to-end tier runs (`MUSTER_E2E_TESTS=1`); says so when it does not.
pub fn e2e_enabled() -> bool {
    let on = std::env::var("MUSTER_E2E_TESTS").is_ok_and(|v| v == "1");
    if !on {
        eprintln!("skipped: set MUSTER_E2E_TESTS=1");
    }
    on
}
