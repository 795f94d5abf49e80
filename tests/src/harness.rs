//! What the lab end-to-end tests share: places for labs run side by side, teardown, and
//! the checks through the real kubectl.

use muster_lab::Lab;
use std::sync::{Condvar, Mutex};

/// How many labs of one test binary run at once: `MUSTER_LAB_PARALLEL`, 2 by default. A lab
/// keeps about a third of one core busy on average (measured: 0.36 cores over a reset
/// test), so two fit on CI's 2 cores; 1 runs them one at a time (for timing a single lab).
fn lab_parallel() -> usize {
    std::env::var("MUSTER_LAB_PARALLEL")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(2)
}

static RUNNING: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

/// A place for one lab among [`lab_parallel`]; the place is given back on drop.
#[derive(Debug)]
pub struct LabSlot(());

/// Waits for a free place for one more lab.
pub fn lab_slot() -> LabSlot {
    let limit = lab_parallel();
    let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    while *running >= limit {
        running = FREED.wait(running).unwrap_or_else(|p| p.into_inner());
    }
    *running += 1;
    LabSlot(())
}

impl Drop for LabSlot {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        *running -= 1;
        FREED.notify_one();
    }
}

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
/// points the kubeconfig at the VIP (the load balancer where the spec has none). `muster` is the operator binary to run.
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
    // The VIP, or the load balancer's address where the spec has no VIP (seed 002).
    let endpoint = lab.record().vip.map_or_else(
        || {
            let api = lab.record().api_endpoint.to_string();
            api.rsplit_once(':')
                .map_or(api.clone(), |(h, _)| h.to_string())
        },
        |v| v.to_string(),
    );
    assert!(
        !endpoint.is_empty() && out.stdout.contains(&endpoint),
        "the kubeconfig is not pointed at the API endpoint {endpoint}: {}",
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

/// What [`assert_ready_and_rolled_out`] read, for the test to check more with the same
/// kubeconfig and to print.
#[derive(Debug)]
pub struct Usable {
    pub kubectl: std::path::PathBuf,
    pub kubeconfig: std::path::PathBuf,
    /// The worker (or other node) whose namespace kubectl ran from.
    pub from: String,
    pub nodes: usize,
    /// `KIND NS/NAME` of every baked add-on workload seen rolled out.
    pub workloads: Vec<String>,
}

/// Issue 14's "done when", read as a user would, on an assembled lab: `muster kubeconfig`
/// writes the admin kubeconfig (the VIP), then the real kubectl at the spec's minor, from
/// the first worker's namespace (else the first control plane's) through the VIP:
/// `get nodes` lists every control plane and worker, each `Ready`; every DaemonSet and
/// Deployment the cluster has (`get ds,deploy -A`: kube-system and the add-ons'
/// namespaces) has as many available as desired; and every DaemonSet and Deployment the
/// build baked (read from the first control plane's node root, as its agent applies them)
/// is among them. `None` (said on stderr) when this machine has no kubectl for that minor
/// outside CI (`real_kubectl` fails in CI). `dir` is scratch space outside the lab.
pub fn assert_ready_and_rolled_out(
    lab: &Lab,
    muster: &std::path::Path,
    dir: &std::path::Path,
) -> Option<Usable> {
    let record = lab.record();
    let (baked, _) = model::spec::load(&record.spec_origin, &record.spec_text)
        .unwrap_or_else(|e| panic!("the lab's spec: {e:?}"));
    let k8s_version = baked.distribution.version.to_string();
    let named = |role: &str| -> Vec<String> {
        record
            .nodes
            .iter()
            .filter(|n| n.role == role)
            .map(|n| n.name.clone())
            .collect()
    };
    let (cps, workers) = (named("control-plane"), named("worker"));
    let nodes: Vec<String> = cps.iter().chain(&workers).cloned().collect();
    let Some(cp) = cps.first() else {
        panic!("a cluster without a control plane")
    };
    let from = workers.first().unwrap_or(cp).as_str();
    let k8s_version = k8s_version.as_str();
    let Some(kubectl) = muster_lab::standins::real_kubectl(k8s_version)
        .unwrap_or_else(|e| panic!("real kubectl for {k8s_version}: {e}"))
    else {
        eprintln!("no real kubectl for {k8s_version}: readiness not checked with kubectl");
        return None;
    };
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let kc = dir.join("admin.kubeconfig");
    write_admin_kubeconfig(lab, muster, from, &kc);
    let json = |args: &[&str]| -> serde_json::Value {
        let out = real_kubectl_in(lab, &kubectl, &kc, from, args);
        assert!(out.ok(), "kubectl {args:?}: {}", out.all());
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("kubectl {args:?}: not JSON ({e}): {}", out.stdout))
    };
    let text = |v: &serde_json::Value| serde_json::to_string(v).unwrap_or_default();

    // ---- every planned node is a Node, and Ready
    let listed = json(&["get", "nodes", "-o", "json"]);
    let readiness = protocol::readiness::parse_node_list(&text(&listed))
        .unwrap_or_else(|e| panic!("kubectl get nodes: {e}"));
    for n in &nodes {
        let got = readiness
            .iter()
            .find(|r| &r.name == n)
            .unwrap_or_else(|| panic!("kubectl get nodes does not list {n}: {readiness:?}"));
        assert!(got.ready, "kubectl: Node {n} is not Ready: {got:?}");
    }

    // ---- every DaemonSet and Deployment rolled out (available == desired)
    let workloads = json(&["get", "daemonsets,deployments", "-A", "-o", "json"]);
    let items = workloads["items"].as_array().cloned().unwrap_or_default();
    let mut seen = Vec::new();
    for w in &items {
        let kind = w["kind"].as_str().unwrap_or("?");
        let at = format!(
            "{kind} {}/{}",
            w["metadata"]["namespace"].as_str().unwrap_or("?"),
            w["metadata"]["name"].as_str().unwrap_or("?")
        );
        let (desired, available) = protocol::readiness::parse_rollout(kind, &text(w))
            .unwrap_or_else(|e| panic!("{at}: {e}"));
        assert_eq!(available, desired, "kubectl: {at} available/desired");
        assert!(desired > 0, "kubectl: {at} wants no pod");
        seen.push(at);
    }

    // ---- and the baked add-ons' workloads are among them
    let root = lab
        .node(cp)
        .unwrap_or_else(|e| panic!("node {cp}: {e}"))
        .root
        .clone();
    let root = model::node_files::NodeRoot::new(&root);
    let mut baked = Vec::new();
    if let Some((index, files)) =
        nodeagent::addons::load(&root).unwrap_or_else(|e| panic!("{cp}'s baked add-ons: {e}"))
    {
        let objects = nodeagent::addons::order::objects(&files)
            .unwrap_or_else(|e| panic!("{cp}'s baked add-ons: {e}"));
        for w in nodeagent::addons::readiness::workloads(&index, &objects) {
            let at = format!("{} {}/{}", w.kind, w.namespace, w.name);
            assert!(
                seen.contains(&at),
                "add-on {}: {at} not listed by kubectl: {seen:?}",
                w.addon
            );
            baked.push(at);
        }
    }
    eprintln!(
        "kubectl (v{k8s_version}) from {from}: {} Node(s) Ready; rolled out: {baked:?}",
        readiness.len()
    );
    Some(Usable {
        kubectl,
        kubeconfig: kc,
        from: from.to_string(),
        nodes: readiness.len(),
        workloads: baked,
    })
}
