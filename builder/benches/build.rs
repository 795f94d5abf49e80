//! Times `muster_build::bake::build` (render + payload + seed volumes) on a generated 100-node
//! spec and prints the figure. Not an assert: the issue asks for "well under two seconds"
//! shown by a measured number. `cargo bench -p muster --bench build`.
#![allow(clippy::expect_used, reason = "a benchmark, not shipped code")]

use muster_build::bake::{BuildOptions, build};
use std::time::Instant;

fn main() {
    let spec = "apiVersion: muster.dev/v1
kind: Cluster
metadata:
  name: bench
spec:
  distribution:
    kind: kubeadm
    version: \"v1.31.4\"
  topology:
    controlPlanes: 3
    workers: 95
    loadBalancers: 2
  network:
    subnet: 10.50.0.0/16
    gateway: 10.50.0.1
    addressPlan:
      controlPlanes: 11
      workers: 101
      loadBalancers: 5
  ha:
    provider: haproxy
    vip: 10.50.0.4
  rendezvous:
    url: \"https://10.50.0.2:7443\"
  platform:
    type: qemu
";
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.yaml");
    std::fs::write(&path, spec).expect("write spec");
    let loaded = muster_build::spec_source::load(Some(&path)).expect("valid spec");
    // A stand-in agent binary of realistic size (pseudo-random, so gzip cannot shrink it).
    let agent_len = 8 * 1024 * 1024;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let agent: Vec<u8> = (0..agent_len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let agent_bin = dir.path().join("nodeagent");
    std::fs::write(&agent_bin, &agent).expect("write agent");
    let opts = BuildOptions {
        agent_bin,
        mtime: 0,
        helm: Default::default(),
        addons: muster_build::addons::source::Source::Artifacts(
            concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/artifacts").into(),
        ),
    };
    let out = dir.path().join("out");
    let runs = 5;
    let mut times = Vec::new();
    let mut nodes = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let r = build(&loaded, &out, &opts).expect("build");
        times.push(t.elapsed().as_secs_f64());
        nodes = r.artifacts.len().saturating_sub(1) / 4;
    }
    times.sort_by(|a, b| a.total_cmp(b));
    println!(
        "muster build, {nodes} nodes, {} MiB agent: median {:.3} s, min {:.3} s, max {:.3} s over {runs} builds",
        agent_len / (1024 * 1024),
        times[runs / 2],
        times[0],
        times[runs - 1]
    );
}
