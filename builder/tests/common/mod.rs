//! Shared by the integration tests: every example spec rendered with a fixed secret,
//! rendezvous fingerprint and payload hash, so outputs are stable.
#![allow(dead_code, clippy::unwrap_used, reason = "test helpers")]

use model::secret::ClusterSecret;
use muster::render::cloud_init::{self, NodeSeed};
use muster::render::{self, Bake, FileSet, Input};
use std::path::{Path, PathBuf};
use std::process::Output;

pub const FAKE_PAYLOAD_SHA: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn examples() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    assert!(v.len() >= 7, "expected every example spec, found {v:?}");
    v
}

pub fn secret() -> ClusterSecret {
    ClusterSecret::from_bytes([7; 32])
}

pub struct Rendered {
    pub name: String,
    pub files: FileSet,
    pub seeds: Vec<(String, NodeSeed)>,
}

pub fn render(path: &Path) -> Rendered {
    let loaded = muster::spec_source::load(Some(path)).unwrap();
    let plan = model::plan::resolve(&loaded.cluster, vec![]);
    let input = Input::new(&loaded.cluster, &plan);
    let bake = Bake {
        cluster_id: secret().cluster_id(),
        rendezvous_cert_sha256: Some("ab".repeat(32).parse().unwrap()),
    };
    let files = render::cluster_files(&input, &bake).unwrap();
    let seeds = plan
        .nodes
        .iter()
        .map(|n| {
            let s = cloud_init::render(
                &input,
                n,
                &bake.cluster_id,
                &secret().to_hex(),
                FAKE_PAYLOAD_SHA,
            )
            .unwrap();
            (n.name.to_string(), s)
        })
        .collect();
    Rendered {
        name: path.file_stem().unwrap().to_string_lossy().into_owned(),
        files,
        seeds,
    }
}

pub fn render_all() -> Vec<Rendered> {
    examples().iter().map(|p| render(p)).collect()
}

/// Files of every example whose path ends with `suffix`: `(label, contents)`.
pub fn files_ending(suffix: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for r in render_all() {
        for (p, a) in &r.files.files {
            if p.ends_with(suffix) {
                out.push((format!("{}:{p}", r.name), a.contents.clone()));
            }
        }
    }
    out
}

/// A command's status and both streams, for assertion messages.
pub fn show(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
