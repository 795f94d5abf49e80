#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

//! The crate graph in docs/architecture.md is the one `cargo metadata` has, and it keeps
//! the layering: no product crate depends on test code, the agent on nothing of the
//! builder's, and the builder, the rendezvous server and the agent on none of each other.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

type Graph = BTreeMap<String, Vec<String>>;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Normal (not dev or build) dependencies between workspace crates.
fn metadata_graph() -> Graph {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = m["packages"].as_array().unwrap();
    let names: Vec<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    packages
        .iter()
        .map(|p| {
            let mut deps: Vec<String> = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().unwrap().to_string())
                .filter(|d| names.contains(&d.as_str()))
                .collect();
            deps.sort();
            deps.dedup();
            (p["name"].as_str().unwrap().to_string(), deps)
        })
        .collect()
}

fn documented_graph() -> Graph {
    let doc = std::fs::read_to_string(repo().join("docs/architecture.md")).unwrap();
    let start = doc
        .find("<!-- crate-graph:begin -->")
        .expect("graph start marker");
    let end = doc
        .find("<!-- crate-graph:end -->")
        .expect("graph end marker");
    doc[start..end]
        .lines()
        .filter_map(|l| l.split_once(" -> "))
        .map(|(name, deps)| {
            let deps = match deps.trim() {
                "(none)" => Vec::new(),
                list => list.split(", ").map(str::to_string).collect(),
            };
            (name.trim().to_string(), deps)
        })
        .collect()
}

/// Every crate `name` reaches through normal dependencies.
fn reaches(g: &Graph, name: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut todo = vec![name.to_string()];
    while let Some(n) = todo.pop() {
        for d in g.get(&n).into_iter().flatten() {
            if !seen.contains(d) {
                seen.push(d.clone());
                todo.push(d.clone());
            }
        }
    }
    seen
}

#[test]
fn the_documented_crate_graph_is_cargos() {
    assert_eq!(
        documented_graph(),
        metadata_graph(),
        "docs/architecture.md's crate-graph block differs from `cargo metadata`"
    );
}

#[test]
fn dependencies_point_one_way() {
    let g = metadata_graph();
    let test_code = ["muster-standins", "muster-tests"];
    for product in g.keys().filter(|k| !test_code.contains(&k.as_str())) {
        let r = reaches(&g, product);
        for t in test_code {
            assert!(
                !r.iter().any(|d| d == t),
                "{product} depends on test code {t}"
            );
        }
    }
    // Beside each other: the agent, the rendezvous server and the builder.
    let peers = ["nodeagent", "muster-rendezvous", "muster-build"];
    for a in peers {
        let r = reaches(&g, a);
        for b in peers.iter().filter(|b| **b != a) {
            assert!(!r.iter().any(|d| d == b), "{a} depends on {b}");
        }
        for above in ["muster-lab", "muster"] {
            assert!(!r.iter().any(|d| d == above), "{a} depends on {above}");
        }
    }
    assert_eq!(
        reaches(&g, "muster-protocol"),
        ["muster-model"],
        "the protocol sits on the model alone"
    );
}
