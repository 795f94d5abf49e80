//! `muster plan` as a user runs it: the binary, real example files, exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::path::PathBuf;
use std::process::{Command, Output};

fn muster(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
        .display()
        .to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn seed_000_reproduces_the_seed_table() {
    let out = muster(&["plan", &example("seed-000-kubeadm-kube-vip.yaml")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let expect = [
        ("stage-cp-1", "control-plane", "192.168.62.11", "4"),
        ("stage-cp-2", "control-plane", "192.168.62.12", "4"),
        ("stage-cp-3", "control-plane", "192.168.62.13", "4"),
        ("stage-w-1", "worker", "192.168.62.21", "8"),
        ("stage-w-2", "worker", "192.168.62.22", "8"),
        ("stage-w-3", "worker", "192.168.62.23", "8"),
    ];
    for (name, role, ip, gib) in expect {
        let row = rows
            .iter()
            .find(|r| r.first() == Some(&name))
            .unwrap_or_else(|| panic!("no row for {name} in\n{text}"));
        // NAME ROLE VCPU RAM GiB DISK GiB IP MAC
        assert_eq!(&row[..5], &[name, role, "2", gib, "GiB"], "{text}");
        assert_eq!(row[7], ip, "{text}");
    }
    assert!(
        text.contains("TOTAL       6 VMs          12    36 GiB"),
        "{text}"
    );
    assert!(
        text.contains(
            "VMs 36 GiB + host overhead 3 GiB = 39 GiB of 64 GiB host RAM; headroom 25 GiB"
        ),
        "{text}"
    );
    assert!(
        text.contains(">  3        2       1"),
        "quorum row for 3 members marked:\n{text}"
    );
}

#[test]
fn json_plan_has_the_same_numbers() {
    let out = muster(&["plan", "--json", &example("seed-000-kubeadm-kube-vip.yaml")]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["nodes"].as_array().unwrap().len(), 6);
    assert_eq!(v["totals"]["memoryMiB"], 36 * 1024);
    assert_eq!(v["apiEndpoint"], "192.168.62.5:6443");
    assert_eq!(v["nodes"][3]["ip"], "192.168.62.21");
    assert_eq!(v["quorum"]["members"], 3);
}

#[test]
fn every_example_plans() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let out = muster(&["plan", &path.display().to_string()]);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        n += 1;
    }
    assert!(n >= 6);
}

#[test]
fn pinned_macs_and_proxmox_ids_show() {
    let out = muster(&["plan", &example("seed-001-k3s-haproxy-proxmox.yaml")]);
    let text = stdout(&out);
    assert!(text.contains("k3s-server-01  control-plane  2     4 GiB   32 GiB   192.168.1.201  bc:24:11:66:6f:07  301"), "{text}");
    assert!(text.contains("k3s-lb-02      load-balancer  1     2 GiB   32 GiB   192.168.1.222  bc:24:11:6b:dc:f9  322"), "{text}");
}

#[test]
fn built_in_default_needs_no_file() {
    let out = muster(&["plan"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("lab-cp-1"));
}

#[test]
fn exit_codes_invalid_spec_1_usage_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: muster.dev/v1\nkind: Cluster\nmetadata: {name: x}\nspec: {}\n",
    )
    .unwrap();
    let out = muster(&["plan", &bad.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:4:7: error: spec.distribution: required field is missing"),
        "{err}"
    );
    assert!(err.contains("error(s); nothing was done"), "{err}");

    let out = muster(&["plan", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));

    let out = muster(&["plan", "/nonexistent/spec.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot read spec file /nonexistent/spec.yaml")
    );
}

/// The seed-000 example with `from` replaced by `to`, written to a temp dir.
fn seed_000_with(dir: &std::path::Path, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(example("seed-000-kubeadm-kube-vip.yaml")).unwrap();
    assert!(text.contains(from), "{from}");
    let path = dir.join("spec.yaml");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    path
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Issue 18 (4): `workers: 4294967295` used to exhaust memory planning every node; it is
/// refused at the field before anything is planned.
#[test]
fn a_huge_node_count_is_refused_at_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let spec = seed_000_with(dir.path(), "workers: 3", "workers: 4294967295");
    let out = muster(&["plan", &spec.display().to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("error: spec.topology.workers: 4294967295 workers"),
        "{}",
        stderr(&out)
    );
}

/// Issue 18 (5): a block at 4294967295 wrapped to the subnet's bottom; `plan` said 4 VMs
/// and exited 0, `build` wrote that cluster. Now both refuse it at the field.
#[test]
fn a_wrapping_address_plan_is_refused_by_plan_and_build() {
    let dir = tempfile::tempdir().unwrap();
    let spec = seed_000_with(dir.path(), "workers: 21", "workers: 4294967295");
    let spec = spec.display().to_string();
    let out = muster(&["plan", &spec]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("error: spec.network.addressPlan.workers: address plan exhausted"),
        "{}",
        stderr(&out)
    );
    let build_dir = dir.path().join("out");
    let agent = dir.path().join("nodeagent");
    std::fs::write(&agent, b"\x7fELF fake nodeagent for tests\n").unwrap();
    let out = muster(&[
        "build",
        &spec,
        "--out",
        &build_dir.display().to_string(),
        "--agent-bin",
        &agent.display().to_string(),
        "--artifacts",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/artifacts"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("error: spec.network.addressPlan.workers: address plan exhausted"),
        "{}",
        stderr(&out)
    );
    assert!(
        !build_dir.exists(),
        "nothing is written for an invalid spec"
    );
}

/// Issue 18 (6): `muster plan /dev/zero` grew to gigabytes; a spec file must be a regular
/// file of at most 1 MiB.
#[test]
fn spec_files_are_regular_and_small() {
    let out = muster(&["plan", "/dev/zero"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("spec file /dev/zero is not a regular file"),
        "{}",
        stderr(&out)
    );

    let dir = tempfile::tempdir().unwrap();
    let out = muster(&["plan", &dir.path().display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is not a regular file"),
        "{}",
        stderr(&out)
    );

    let fifo = dir.path().join("fifo.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let out = muster(&["plan", &fifo.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is not a regular file"),
        "{}",
        stderr(&out)
    );

    // A valid spec padded with a comment to one byte over the limit.
    let text = std::fs::read_to_string(example("seed-000-kubeadm-kube-vip.yaml")).unwrap();
    let mut big = text.clone();
    big.push('#');
    big.push_str(&"x".repeat((1 << 20) - text.len()));
    assert_eq!(big.len(), (1 << 20) + 1);
    let path = dir.path().join("big.yaml");
    std::fs::write(&path, &big).unwrap();
    let out = muster(&["plan", &path.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is larger than 1 MiB"),
        "{}",
        stderr(&out)
    );
    // At the limit it is read.
    big.pop();
    std::fs::write(&path, &big).unwrap();
    let out = muster(&["plan", &path.display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Issue 18 (7): a second document and anything after a NUL were dropped with exit 0.
#[test]
fn a_second_document_or_a_nul_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(example("seed-000-kubeadm-kube-vip.yaml")).unwrap();
    let lines = text.lines().count() + 1;
    for (tail, what) in [
        ("---\nspec: {}\n", "one YAML document"),
        ("\0garbage: [\n", "U+0000"),
    ] {
        let path = dir.path().join("two.yaml");
        std::fs::write(&path, format!("{text}{tail}")).unwrap();
        let out = muster(&["plan", &path.display().to_string()]);
        assert_eq!(out.status.code(), Some(1), "{tail:?}: {}", stdout(&out));
        let want = format!("two.yaml:{lines}:1: error:");
        let err = stderr(&out);
        assert!(
            err.contains(&want) && err.contains(what),
            "{want} {what}: {err}"
        );
    }
}

/// Growing seed 001 by a worker: `muster plan --previous` and the rebuild's report mark the
/// new node, keep every other node's VM id, and list nothing as moved.
#[test]
fn a_rebuild_with_one_more_worker_marks_it_and_moves_no_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let agent = tmp.path().join("nodeagent");
    std::fs::write(&agent, b"\x7fELF fake nodeagent for tests\n").unwrap();
    let spec = example("seed-001-k3s-haproxy-proxmox.yaml");
    let o = &out.display().to_string();
    let a = &agent.display().to_string();
    let first = muster(&["build", &spec, "--out", o, "--agent-bin", a, "--json"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert!(report.get("changes").is_none(), "first build: {report}");

    let grown = tmp.path().join("grown.yaml");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&grown, text.replace("    workers: 2\n", "    workers: 3\n")).unwrap();
    let g = &grown.display().to_string();
    let plan = muster(&["plan", g, "--previous", o]);
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let table = stdout(&plan);
    let marked: Vec<&str> = table.lines().filter(|l| l.starts_with('+')).collect();
    assert_eq!(marked.len(), 1, "{table}");
    assert!(
        marked[0].contains("k3s-worker-03") && marked[0].contains("313"),
        "{table}"
    );
    assert!(
        table.contains("Against the previous build: 1 new (+), 0 changed (~), 0 removed."),
        "{table}"
    );
    assert!(
        table.contains(" k3s-lb-02 ") && table.contains(" 322\n"),
        "{table}"
    );
    assert!(!table.contains("  ! "), "{table}");

    let second = muster(&["build", g, "--out", o, "--agent-bin", a, "--json"]);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    let changes = &report["changes"];
    assert_eq!(
        changes["added"],
        serde_json::json!(["k3s-worker-03"]),
        "{report}"
    );
    assert_eq!(changes["changed"], serde_json::json!([]), "{report}");
    assert_eq!(changes["moved"], serde_json::json!([]), "{report}");

    // Shrinking back lists the worker as removed, and says its machine stays.
    let plan = muster(&["plan", &spec, "--previous", o]);
    let table = stdout(&plan);
    assert!(
        table.contains("  - k3s-worker-03 (worker 192.168.1.213, VM 313): no longer planned"),
        "{table}"
    );

    // Without a previous build there is nothing to compare with: a clear error.
    let plan = muster(&[
        "plan",
        &spec,
        "--previous",
        &tmp.path().display().to_string(),
    ]);
    assert!(!plan.status.success());
    assert!(
        String::from_utf8_lossy(&plan.stderr)
            .contains("has no cluster.json: not a muster build output dir"),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
}

#[test]
fn plan_says_where_each_add_on_comes_from_and_who_applies_it() {
    let text = stdout(&muster(&["plan"]));
    assert!(text.contains("the init node applies them"), "{text}");
    assert!(
        text.contains("spec.addons.cni            flannel v0.28.9 from https://raw.githubusercontent.com/flannel-io/flannel/v0.28.9/Documentation/kube-flannel.yml"),
        "{text}"
    );
    let text = stdout(&muster(&[
        "plan",
        &example("seed-000-kubeadm-kube-vip.yaml"),
    ]));
    // Cilium has no kubectl manifest upstream: the plan names its pinned chart and says
    // the build renders it.
    assert!(
        text.contains("spec.addons.cni            cilium 1.18.4: chart https://helm.cilium.io/cilium-1.18.4.tgz")
            && text.contains("rendered by `helm template` at build time"),
        "{text}"
    );
}
