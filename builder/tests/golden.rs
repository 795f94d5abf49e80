//! Golden files for every example spec: the payload's rendered files (everything but the
//! agent binary and SHA256SUMS) and each node's cloud-init files, rendered with a fixed
//! secret. `MUSTER_BLESS=1 cargo test -p muster --test golden` rewrites them.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

fn collect(dir: &Path, base: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(&p, base, out);
        } else {
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            out.insert(rel, std::fs::read(&p).unwrap());
        }
    }
}

#[test]
fn every_example_matches_its_golden_files() {
    let bless = std::env::var_os("MUSTER_BLESS").is_some();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut failures = Vec::new();
    for r in common::render_all() {
        let mut want: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (p, a) in &r.files.files {
            want.insert(format!("payload/{p}"), a.contents.clone());
        }
        for (node, seed) in &r.seeds {
            for (f, text) in seed.files() {
                want.insert(format!("nodes/{node}/{f}"), text.as_bytes().to_vec());
            }
        }
        let dir = root.join(&r.name);
        if bless {
            let _ = std::fs::remove_dir_all(&dir);
            for (p, bytes) in &want {
                let path = dir.join(p);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap();
            }
            continue;
        }
        let mut have = BTreeMap::new();
        collect(&dir, &dir, &mut have);
        for (p, bytes) in &want {
            match have.get(p) {
                None => failures.push(format!("{}: missing golden file {p}", r.name)),
                Some(g) if g != bytes => failures.push(format!(
                    "{}: {p} differs from its golden file:\n--- golden\n{}\n--- rendered\n{}",
                    r.name,
                    String::from_utf8_lossy(g),
                    String::from_utf8_lossy(bytes)
                )),
                _ => {}
            }
        }
        for p in have.keys().filter(|p| !want.contains_key(*p)) {
            failures.push(format!("{}: golden file {p} is no longer rendered", r.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(run with MUSTER_BLESS=1 to accept)",
        failures.join("\n")
    );
}

#[test]
fn rendering_is_byte_identical_run_to_run() {
    for p in common::examples() {
        let a = common::render(&p);
        let b = common::render(&p);
        assert_eq!(a.files, b.files);
        assert_eq!(a.seeds, b.seeds);
    }
}
