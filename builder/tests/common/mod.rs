//! Shared by the integration tests: every example spec rendered with a fixed secret,
//! rendezvous fingerprint and payload hash, so outputs are stable.
#![allow(dead_code, clippy::unwrap_used, reason = "test helpers")]

use model::secret::ClusterSecret;
use muster_build::render::cloud_init::{self, NodeSeed};
use muster_build::render::{self, Bake, FileSet, Input};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// The pinned add-on manifests (real upstream bytes) for offline builds.
pub const ADDON_ARTIFACTS: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/artifacts");

/// `muster build SPEC --out OUT --agent-bin AGENT --artifacts ADDON_ARTIFACTS`, as an
/// operator runs it offline.
pub fn muster_build(muster: &Path, spec: &Path, out: &Path, agent: &Path) -> Command {
    let mut cmd = Command::new(muster);
    cmd.arg("build")
        .arg(spec)
        .arg("--out")
        .arg(out)
        .arg("--agent-bin")
        .arg(agent)
        .arg("--artifacts")
        .arg(ADDON_ARTIFACTS);
    cmd
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
    let loaded = muster_build::spec_source::load(Some(path)).unwrap();
    render_loaded(path, &loaded)
}

/// [`render`] of a spec the test loaded (and maybe adjusted); `path` names it.
pub fn render_loaded(path: &Path, loaded: &muster_build::spec_source::LoadedSpec) -> Rendered {
    let plan = model::plan::resolve(&loaded.cluster, vec![]);
    let input = Input::new(&loaded.cluster, &plan);
    let bake = Bake {
        cluster_id: secret().cluster_id(),
        rendezvous_cert_sha256: Some("ab".repeat(32).parse().unwrap()),
    };
    let files = render::cluster_files(&input, &bake).unwrap();
    let etcd_tls = muster_build::bake::etcd_tls::load(&loaded.cluster, &loaded.dir()).unwrap();
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
                etcd_tls.as_ref(),
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

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Asserts `secret` is in no payload file and in no seed file but the control planes'
/// user-data; returns each control plane's user-data, parsed, for the caller's checks.
pub fn secret_only_in_control_plane_seeds(
    r: &Rendered,
    plan: &model::Plan,
    secret: &[u8],
    what: &str,
) -> Vec<(String, serde_json::Value)> {
    assert!(!secret.is_empty());
    for (p, a) in &r.files.files {
        assert!(
            !contains(&a.contents, secret),
            "payload file {p} holds {what}"
        );
    }
    let mut cps = Vec::new();
    for (node, seed) in &r.seeds {
        let role = plan.node(node).unwrap().role;
        for (f, text) in seed.files() {
            let cp_user_data = role == model::Role::ControlPlane && f == cloud_init::USER_DATA;
            if !cp_user_data {
                assert!(
                    !contains(text.as_bytes(), secret),
                    "{node} ({role:?}) {f} holds {what}"
                );
            }
        }
        if role == model::Role::ControlPlane {
            assert!(
                contains(seed.user_data.as_bytes(), secret),
                "{node}: its user-data lacks {what}"
            );
            cps.push((node.clone(), serde_yaml::from_str(&seed.user_data).unwrap()));
        }
    }
    cps
}

/// The `write_files` entry of a parsed user-data at `path` (relative to /).
pub fn write_file<'a>(user_data: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    user_data["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == format!("/{path}"))
        .unwrap_or_else(|| panic!("no write_files entry for /{path}"))
}

/// The stand-ins a `muster lab image --json` report says the TEST image copied in.
pub fn test_image_standins(report: &serde_json::Value) -> Vec<&str> {
    report["testVariant"]["standIns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect()
}

/// The images a `muster lab image --json` report says the image pre-pulled, in its order.
pub fn prepulled_images(report: &serde_json::Value) -> Vec<&str> {
    report["prepulledImages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect()
}

pub mod artifacts;
#[path = "../../../tests/src/measured.rs"]
mod measured_file;
pub mod registry;

/// Prints a measured figure and appends it to `target/tmp/measured.txt`, which
/// `scripts/test.sh` prints after the run (libtest hides a passing test's output).
pub fn measured(line: std::fmt::Arguments<'_>) {
    measured_file::record(Path::new(env!("CARGO_TARGET_TMPDIR")), line);
}
