//! `muster_build::bake::build` end to end into temp dirs: reproducible payload, secret kept out
//! of the payload and reused, dir ownership, and the renderers' errors on bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use muster_build::bake::{BuildOptions, build, payload};
use muster_build::render::kubeadm::{
    ClusterConfiguration, ExtraArgs, InitConfiguration, JoinConfiguration, KubeletConfiguration,
};
use muster_build::render::{Bake, Input, RenderError, cluster_files, k3s};
use std::path::Path;

fn opts(dir: &Path) -> BuildOptions {
    let agent = dir.join("nodeagent");
    std::fs::write(&agent, b"\x7fELF fake nodeagent for tests\n").unwrap();
    BuildOptions {
        agent_bin: agent,
        mtime: 0,
        helm: Default::default(),
        addons: muster_build::addons::source::Source::Artifacts(
            concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/artifacts").into(),
        ),
    }
}

fn spec(name: &str) -> muster_build::spec_source::LoadedSpec {
    muster_build::spec_source::load(Some(&common::repo().join("examples").join(name))).unwrap()
}

/// A user's own cilium manifest (in place of muster's rendering of the pinned chart): a
/// small DaemonSet standing in for the user's `helm template` output.
const USER_CILIUM: &str = include_str!("../../tests/fixtures/addons/cilium-user.yaml");

/// Seed 000 (cilium, longhorn, ingress-nginx) copied into `dir` with the user's cilium
/// manifest beside it (`addons.manifests: [{name: cilium, file: cilium.yaml}]`).
fn seed0_with_cilium(dir: &Path) -> muster_build::spec_source::LoadedSpec {
    let text =
        std::fs::read_to_string(common::repo().join("examples/seed-000-kubeadm-kube-vip.yaml"))
            .unwrap()
            // The example's own commented line, switched on.
            .replace(
                "    # manifests: [{name: cilium",
                "    manifests: [{name: cilium",
            );
    std::fs::write(dir.join("cilium.yaml"), USER_CILIUM).unwrap();
    let path = dir.join("seed-000.yaml");
    std::fs::write(&path, text).unwrap();
    muster_build::spec_source::load(Some(&path)).unwrap()
}

fn untar(tgz: &[u8]) -> Vec<(String, Vec<u8>, u32, u64, u64)> {
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let h = e.header().clone();
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut buf).unwrap();
        out.push((
            path,
            buf,
            h.mode().unwrap(),
            h.uid().unwrap(),
            h.mtime().unwrap(),
        ));
    }
    out
}

#[test]
fn rebuild_is_byte_identical_and_keeps_the_cluster_id() {
    let tools = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("build");
    let s = spec("seed-001-k3s-haproxy-proxmox.yaml");
    let a = build(&s, &dir, &opts(tools.path())).unwrap();
    assert!(a.new_secret);
    let first: Vec<(String, Vec<u8>)> = a
        .artifacts
        .iter()
        .map(|x| (x.path.clone(), std::fs::read(dir.join(&x.path)).unwrap()))
        .collect();
    let b = build(&s, &dir, &opts(tools.path())).unwrap();
    assert!(!b.new_secret);
    assert_eq!(a.cluster_id, b.cluster_id);
    assert_eq!(a.artifacts, b.artifacts);
    for (p, bytes) in first {
        assert_eq!(
            std::fs::read(dir.join(&p)).unwrap(),
            bytes,
            "{p} changed on rebuild"
        );
    }
    // Every node has the four files, seed.img among them; beside them the payload and the
    // image recipes (provisioning scripts, Packer templates).
    let per_node = a
        .artifacts
        .iter()
        .filter(|x| x.path.starts_with("nodes/"))
        .count();
    assert_eq!(per_node, 4 * 7);
    assert!(a.artifacts.iter().any(|x| x.path == "payload.tar.gz"));
    assert!(a.artifacts.iter().any(|x| x.path == "images/provision.sh"));
    assert!(
        a.artifacts
            .iter()
            .any(|x| x.path == "packer/qemu/muster.pkr.hcl")
    );
}

#[test]
fn payload_layout_is_fixed_and_holds_no_secret() {
    let tools = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("b");
    let r = build(&seed0_with_cilium(tools.path()), &dir, &opts(tools.path())).unwrap();
    let tgz = std::fs::read(dir.join("payload.tar.gz")).unwrap();
    assert_eq!(payload::sha256_hex(&tgz), r.payload_sha256);
    assert_eq!(&tgz[4..8], &[0, 0, 0, 0], "gzip mtime must be 0");
    let entries = untar(&tgz);
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries must be sorted");
    for e in &entries {
        assert_eq!((e.3, e.4), (0, 0), "{}: owner root, mtime 0", e.0);
    }
    let find = |p: &str| {
        entries
            .iter()
            .find(|e| e.0 == p)
            .unwrap_or_else(|| panic!("{p} missing"))
    };
    assert_eq!(find("usr/bin/nodeagent").2, 0o755);
    assert_eq!(
        find("usr/bin/nodeagent").1,
        b"\x7fELF fake nodeagent for tests\n"
    );
    find("usr/lib/systemd/system/nodeagent.service");
    find(model::node_files::KUBE_VIP_PRISTINE);
    find("usr/lib/muster/nodes/stage-cp-1/etc/kubernetes/manifests/kube-vip.yaml");
    find("usr/lib/muster/nodes/stage-cp-1/etc/muster/kubeadm/init.yaml");
    find("usr/lib/muster/nodes/stage-w-1/etc/muster/kubeadm/join.yaml");
    let baked: model::baked::BakedCluster =
        serde_json::from_slice(&find(model::node_files::CLUSTER_CONFIG).1).unwrap();
    assert_eq!(baked.cluster_id, r.cluster_id);
    let cert = std::fs::read_to_string(dir.join("rendezvous.crt")).unwrap();
    let der = rustls_pemfile_der(&cert);
    assert_eq!(
        baked.rendezvous.cert_sha256.unwrap().as_str(),
        payload::sha256_hex(&der)
    );
    // The images the image build and Packer pre-pull (import-images.sh --list): muster's,
    // the pinned manifests' (longhorn's flag/env images too) and the user's cilium file's.
    let spec = seed0_with_cilium(tools.path());
    let needs = muster_build::image::prepull::needs(&spec.cluster).unwrap();
    let want = muster_build::image::prepull::resolve(
        &needs,
        Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/artifacts"
        )),
    )
    .unwrap();
    let want = muster_build::image::prepull::with_listed(
        want,
        &["quay.io/cilium/cilium:v1.18.4".to_string()],
    );
    let listed = String::from_utf8(find(model::node_files::PREPULL_IMAGES).1.clone()).unwrap();
    assert_eq!(listed.lines().collect::<Vec<_>>(), want);
    assert!(listed.contains("longhornio/longhorn-instance-manager:v1.12.1\n"));
    // SHA256SUMS covers every other file and agrees with it.
    let sums = String::from_utf8(find(model::node_files::PAYLOAD_SUMS).1.clone()).unwrap();
    let files: Vec<_> = entries
        .iter()
        .filter(|e| !e.0.ends_with('/') && e.0 != model::node_files::PAYLOAD_SUMS)
        .collect();
    assert_eq!(sums.lines().count(), files.len());
    for e in files {
        assert!(
            sums.contains(&format!("{}  {}\n", payload::sha256_hex(&e.1), e.0)),
            "{}",
            e.0
        );
    }
    // The secret is nowhere in the shared payload (tar or any file in it).
    let secret = std::fs::read_to_string(dir.join("cluster-secret")).unwrap();
    let secret = secret.trim();
    assert_eq!(secret.len(), 64);
    for e in &entries {
        assert!(!e.0.contains("cluster-secret"), "{}", e.0);
        assert!(
            !String::from_utf8_lossy(&e.1).contains(secret),
            "{} holds the secret",
            e.0
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("cluster-secret"), 0o600);
    assert_eq!(mode("rendezvous.key"), 0o600);
    assert_eq!(mode("nodes/stage-cp-1/user-data"), 0o600);
    assert!(
        std::fs::read_to_string(dir.join("nodes/stage-cp-1/user-data"))
            .unwrap()
            .contains(secret)
    );
}

fn rustls_pemfile_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64_decode(&b64)
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

#[test]
fn source_date_epoch_sets_every_mtime() {
    let tools = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut o = opts(tools.path());
    o.mtime = 1_700_000_000;
    build(&spec("default.yaml"), &out.path().join("b"), &o).unwrap();
    let entries = untar(&std::fs::read(out.path().join("b/payload.tar.gz")).unwrap());
    assert!(entries.iter().all(|e| e.4 == 1_700_000_000));
}

#[test]
fn refuses_another_clusters_dir_and_foreign_dirs() {
    let tools = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("b");
    build(&spec("default.yaml"), &dir, &opts(tools.path())).unwrap();
    let err = build(
        &spec("seed-003-k3s-keepalived.yaml"),
        &dir,
        &opts(tools.path()),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} holds the build of cluster `lab`, not `home`: choose another --out dir",
            dir.display()
        )
    );
    // Someone swapped the secret: the record no longer matches it.
    std::fs::write(dir.join("cluster-secret"), format!("{}\n", "11".repeat(32))).unwrap();
    let err = build(&spec("default.yaml"), &dir, &opts(tools.path())).unwrap_err();
    assert!(
        err.to_string().contains("does not match the dir's record"),
        "{err}"
    );
    // A non-empty dir that is not a build output.
    let foreign = out.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let err = build(&spec("default.yaml"), &foreign, &opts(tools.path())).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} is not empty and is not a muster build output (no muster-build.json): choose an empty or new --out dir",
            foreign.display()
        )
    );
    // A missing agent binary names the path and the fix.
    let err = build(
        &spec("default.yaml"),
        &out.path().join("c"),
        &BuildOptions {
            agent_bin: tools.path().join("nope"),
            mtime: 0,
            helm: Default::default(),
            addons: muster_build::addons::source::Source::Artifacts(
                concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/artifacts").into(),
            ),
        },
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("cargo build -p nodeagent"),
        "{err}"
    );
}

#[test]
fn renderer_errors_name_the_field() {
    let s = spec("default.yaml");
    let mut c = s.cluster.clone();
    c.ha.vip = None;
    let plan = model::plan::resolve(&c, vec![]);
    let bake = Bake {
        cluster_id: "x".into(),
        rendezvous_cert_sha256: None,
    };
    let err = cluster_files(&Input::new(&c, &plan), &bake).unwrap_err();
    assert!(matches!(err, RenderError::NoApiAddress { .. }));
    assert_eq!(
        err.to_string(),
        "spec.ha.vip: the cluster has no API address (no VIP and no load-balancer node); cannot render the kube-vip manifest"
    );
    let mut c = s.cluster.clone();
    c.distribution.control_plane_taints = vec!["dedicated=infra".into()];
    let plan = model::plan::resolve(&c, vec![]);
    let err = cluster_files(&Input::new(&c, &plan), &bake).unwrap_err();
    assert_eq!(
        err.to_string(),
        "spec.distribution.controlPlaneTaints[0]: `dedicated=infra` is not `key[=value]:Effect`"
    );
}

/// Splits a multi-document file and reads each document into its strict type.
fn docs(text: &str) -> Vec<serde_json::Value> {
    text.split("---\n")
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect()
}

#[test]
fn kubeadm_templates_round_trip_through_strict_types() {
    for name in [
        "default.yaml",
        "seed-000-kubeadm-kube-vip.yaml",
        "seed-004-kubeadm-haproxy.yaml",
        "seed-004-kubeadm-external-etcd.yaml",
    ] {
        let r = common::render(&common::repo().join("examples").join(name));
        let mut inits = 0;
        for (p, a) in &r.files.files {
            let text = String::from_utf8(a.contents.clone()).unwrap();
            if p.ends_with("kubeadm/init.yaml") {
                inits += 1;
                let d = docs(&text);
                assert_eq!(d.len(), 3);
                let init: InitConfiguration = serde_json::from_value(d[0].clone()).unwrap();
                let cc: ClusterConfiguration = serde_json::from_value(d[1].clone()).unwrap();
                let kc: KubeletConfiguration = serde_json::from_value(d[2].clone()).unwrap();
                assert_eq!(kc.cgroup_driver, "systemd");
                assert_eq!(init.certificate_key, model::templates::CERTIFICATE_KEY);
                assert_eq!(init.bootstrap_tokens[0].token, model::templates::TOKEN);
                assert!(cc.api_server.cert_sans.len() >= 4);
                assert!(cc.control_plane_endpoint.ends_with(":6443"));
                let v131 = cc.api_version == "kubeadm.k8s.io/v1beta4";
                match (&init.node_registration.kubelet_extra_args, v131) {
                    (ExtraArgs::List(l), true) => assert_eq!(l[0].name, "node-ip"),
                    (ExtraArgs::Map(m), false) => assert!(m.contains_key("node-ip")),
                    (other, _) => panic!(
                        "{name}: wrong extra args shape for {}: {other:?}",
                        cc.api_version
                    ),
                }
                assert_eq!(
                    cc.etcd.is_some(),
                    name.contains("external-etcd"),
                    "{name}: external etcd endpoints"
                );
            }
            if p.ends_with("kubeadm/join.yaml") {
                let j: JoinConfiguration =
                    serde_json::from_str(&serde_json::to_string(&docs(&text)[0]).unwrap()).unwrap();
                assert_eq!(
                    j.discovery.bootstrap_token.ca_cert_hashes,
                    vec![model::templates::CA_CERT_HASH]
                );
                assert_eq!(
                    j.control_plane.is_some(),
                    p.contains("/etc/muster/kubeadm/")
                        && r.files
                            .files
                            .contains_key(&p.replace("join.yaml", "init.yaml"))
                );
            }
        }
        assert_eq!(inits, 3, "{name}");
    }
    // A misspelt field is refused by the strict types.
    let bad = serde_json::json!({"apiVersion": "v", "kind": "KubeletConfiguration", "cgroupDriver": "systemd", "cgroupDrvier": "x"});
    assert!(serde_json::from_value::<KubeletConfiguration>(bad).is_err());
}

/// The ClusterConfiguration of `default.yaml` with its kubeadm version replaced.
fn cluster_configuration_at(version: &str) -> ClusterConfiguration {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(common::repo().join("examples/default.yaml")).unwrap();
    let spec = dir.path().join("cluster.yaml");
    std::fs::write(
        &spec,
        text.replace("\"v1.31.4\"", &format!("\"{version}\"")),
    )
    .unwrap();
    let r = common::render(&spec);
    let (_, init) = r
        .files
        .files
        .iter()
        .find(|(p, _)| p.ends_with("kubeadm/init.yaml"))
        .unwrap();
    let d = docs(std::str::from_utf8(&init.contents).unwrap());
    serde_json::from_value(d[1].clone()).unwrap()
}

#[test]
fn kubeadm_before_1_29_gets_the_etcd_learner_gate() {
    for (version, gated) in [("v1.27.3", true), ("v1.28.9", true), ("v1.29.0", false)] {
        let cc = cluster_configuration_at(version);
        assert_eq!(
            cc.feature_gates.get("EtcdLearnerMode"),
            gated.then_some(&true),
            "{version}"
        );
    }
}

/// `addons.kubeProxyReplacement` (cilium): kubeadm's InitConfiguration skips its kube-proxy
/// add-on, k3s runs without kube-proxy, the pre-pull leaves kube-proxy's image out; without
/// it neither appears.
#[test]
fn kube_proxy_replacement_reaches_kubeadm_k3s_and_the_pre_pull() {
    for (name, file) in [
        ("seed-000-kubeadm-kube-vip.yaml", "kubeadm/init.yaml"),
        ("seed-003-k3s-keepalived.yaml", "k3s/init.yaml"),
    ] {
        let path = common::repo().join("examples").join(name);
        let mut loaded = muster_build::spec_source::load(Some(&path)).unwrap();
        loaded.cluster.addons.cni = model::spec::Cni::Cilium;
        for kpr in [false, true] {
            loaded.cluster.addons.kube_proxy_replacement = kpr;
            let r = common::render_loaded(&path, &loaded);
            let texts: Vec<String> = r
                .files
                .files
                .iter()
                .filter(|(p, _)| p.ends_with(file))
                .map(|(_, a)| String::from_utf8(a.contents.clone()).unwrap())
                .collect();
            assert!(!texts.is_empty(), "{name}: no {file}");
            for t in &texts {
                let skipped = t.contains("skipPhases:\n- addon/kube-proxy\n")
                    || t.contains("disable-kube-proxy: true\n");
                assert_eq!(skipped, kpr, "{name} kpr={kpr}:\n{t}");
            }
            let needs = muster_build::image::prepull::needs(&loaded.cluster).unwrap();
            assert!(
                !needs.images.iter().any(|i| i.contains("kube-proxy")) || !kpr,
                "{name}: {:?}",
                needs.images
            );
        }
    }
}

#[test]
fn k3s_templates_round_trip_and_pick_variants() {
    for name in [
        "seed-001-k3s-haproxy-proxmox.yaml",
        "seed-002-k3s-nginx-mariadb.yaml",
        "seed-003-k3s-keepalived.yaml",
    ] {
        let r = common::render(&common::repo().join("examples").join(name));
        for (p, a) in &r.files.files {
            if p.contains("/etc/muster/k3s/") {
                let c: k3s::K3sConfig = serde_yaml::from_slice(&a.contents).unwrap();
                assert_eq!(c.token, model::templates::TOKEN);
                if name.contains("mariadb") {
                    if p.ends_with("init.yaml") || c.advertise_address.is_some() {
                        // Every server talks to the database; the endpoint is in its seed.
                        assert_eq!((c.cluster_init, c.server.as_deref()), (None, None), "{p}");
                    }
                } else if p.ends_with("init.yaml") {
                    assert_eq!(
                        (c.cluster_init, c.server.as_deref()),
                        (Some(true), None),
                        "{p}"
                    );
                } else {
                    assert!(c.server.unwrap().starts_with("https://"), "{p}");
                }
            }
        }
    }
}

/// The payload's add-on files (path under ADDONS_DIR → bytes).
fn addon_files(tgz: &[u8]) -> Vec<(String, Vec<u8>)> {
    let dir = format!("{}/", model::node_files::ADDONS_DIR);
    untar(tgz)
        .into_iter()
        .filter_map(|(p, b, ..)| p.strip_prefix(&dir).map(|n| (n.to_string(), b)))
        .filter(|(n, _)| !n.is_empty())
        .collect()
}

#[test]
fn addons_are_baked_in_order_with_an_index_and_rebuild_identically() {
    let tools = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = spec("seed-002-k3s-nginx-mariadb.yaml");
    let dir = out.path().join("build");
    build(&s, &dir, &opts(tools.path())).unwrap();
    let tgz = std::fs::read(dir.join("payload.tar.gz")).unwrap();
    let files = addon_files(&tgz);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    // k3s's own flannel: nothing baked for the CNI; MetalLB then its pool.
    assert_eq!(
        names,
        ["01-metallb.yaml", "02-metallb-pool.yaml", "index.json"]
    );
    let index: model::addons::AddonIndex = serde_json::from_slice(&files[2].1).unwrap();
    assert_eq!(index.addons[0].version, "v0.15.3");
    assert_eq!(
        index.addons[0].source.as_ref().unwrap().sha256,
        muster_build::addons::METALLB.sha256
    );
    assert_eq!(index.addons[0].sha256, payload::sha256_hex(&files[0].1));
    let pool = String::from_utf8_lossy(&files[1].1);
    assert!(pool.contains("- 192.168.0.170-192.168.0.175"), "{pool}");
    // Rebuilt: the same payload bytes.
    build(&s, &dir, &opts(tools.path())).unwrap();
    assert_eq!(std::fs::read(dir.join("payload.tar.gz")).unwrap(), tgz);
}

/// Seed 000's add-ons (the user's cilium first, then longhorn and ingress-nginx from their
/// pins) and calico: baked in order, each pinned source recorded, and a rebuild gives the
/// same payload bytes.
#[test]
fn seed_000_and_calico_addons_bake_in_order_and_rebuild_identically() {
    let tools = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = seed0_with_cilium(tools.path());
    let dir = out.path().join("build");
    build(&s, &dir, &opts(tools.path())).unwrap();
    let tgz = std::fs::read(dir.join("payload.tar.gz")).unwrap();
    let files = addon_files(&tgz);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "01-cilium.yaml",
            "02-longhorn.yaml",
            "03-ingress-nginx.yaml",
            "index.json"
        ]
    );
    assert_eq!(files[0].1, USER_CILIUM.as_bytes());
    let index: model::addons::AddonIndex = serde_json::from_slice(&files[3].1).unwrap();
    let src = |i: usize| index.addons[i].source.clone().unwrap();
    assert_eq!(src(0).url, "file:cilium.yaml");
    assert_eq!(src(0).sha256, payload::sha256_hex(USER_CILIUM.as_bytes()));
    assert_eq!(src(1).sha256, muster_build::addons::LONGHORN.sha256);
    assert_eq!(src(2).sha256, muster_build::addons::INGRESS_NGINX.sha256);
    // No MetalLB in seed 000: the bare-metal NodePort Service as published.
    assert!(String::from_utf8_lossy(&files[2].1).contains("  type: NodePort\n"));
    build(&s, &dir, &opts(tools.path())).unwrap();
    assert_eq!(std::fs::read(dir.join("payload.tar.gz")).unwrap(), tgz);

    let mut c = spec("default.yaml");
    c.cluster.addons.cni = model::spec::Cni::Calico;
    let dir = out.path().join("calico");
    build(&c, &dir, &opts(tools.path())).unwrap();
    let tgz = std::fs::read(dir.join("payload.tar.gz")).unwrap();
    let files = addon_files(&tgz);
    assert_eq!(files[0].0, "01-calico.yaml");
    let text = String::from_utf8_lossy(&files[0].1);
    assert!(text.contains(&format!("value: \"{}\"", c.cluster.network.pod_subnet)));
    build(&c, &dir, &opts(tools.path())).unwrap();
    assert_eq!(std::fs::read(dir.join("payload.tar.gz")).unwrap(), tgz);
}

/// Seed 000's cilium from a chart: `muster build --helm` renders the chart (here the test
/// chart standing in for cilium's, through the helm stand-in) with the values the spec
/// gives (the API VIP, the pod network, the cluster NIC, the cluster's version), bakes the
/// rendered manifest first, lists its images for pre-pulling, and a rebuild is
/// byte-identical. Without a Helm the build fails saying how to get one or what to bring.
#[test]
fn a_chart_addon_is_rendered_with_the_spec_values_and_rebuilds_identically() {
    let tools = tempfile::tempdir().unwrap();
    let chart = muster_lab::standins::cilium_test_chart(tools.path()).unwrap();
    let text =
        std::fs::read_to_string(common::repo().join("examples/seed-000-kubeadm-kube-vip.yaml"))
            .unwrap()
            .replace(
                "    # manifests: [{name: cilium, file: cilium.yaml}]",
                "    manifests: [{name: cilium, file: cilium-1.18.4.tgz}]",
            );
    let path = tools.path().join("seed-000.yaml");
    std::fs::write(&path, text).unwrap();
    let s = muster_build::spec_source::load(Some(&path)).unwrap();
    let helm = muster_lab::standins::target_binary("helm-standin").unwrap();
    let o = BuildOptions {
        helm: muster_build::addons::chart::Helm { program: helm },
        ..opts(tools.path())
    };
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("build");
    build(&s, &dir, &o).unwrap();
    let tgz = std::fs::read(dir.join("payload.tar.gz")).unwrap();
    let files = addon_files(&tgz);
    assert_eq!(files[0].0, "01-cilium.yaml");
    let text = String::from_utf8_lossy(&files[0].1);
    for want in [
        "# Source: cilium/templates/cilium-agent-daemonset.yaml",
        "k8s-service-host: \"192.168.62.5\"",
        "k8s-service-port: \"6443\"",
        "cluster-pool-ipv4-cidr: \"[\\\"10.244.0.0/16\\\"]\"",
        "devices: \"[\\\"eth1\\\"]\"",
        "hubble-tls-auto-method: \"cronJob\"",
        "kubernetes-version: \"v1.31.4\"",
        "  replicas: 2\n",
    ] {
        assert!(text.contains(want), "{want} not in:\n{text}");
    }
    let index: model::addons::AddonIndex =
        serde_json::from_slice(&files.last().unwrap().1).unwrap();
    let src = index.addons[0].source.clone().unwrap();
    assert_eq!(src.url, "file:cilium-1.18.4.tgz");
    assert_eq!(
        src.sha256,
        payload::sha256_hex(&std::fs::read(&chart).unwrap())
    );
    // The rendered chart's images are in the pre-pull list the image build reads.
    let listed = untar(&tgz)
        .into_iter()
        .find(|e| e.0 == model::node_files::PREPULL_IMAGES)
        .map(|e| String::from_utf8(e.1).unwrap())
        .unwrap();
    assert!(
        listed.lines().any(|l| l == "quay.io/cilium/cilium:v1.18.4"),
        "{listed}"
    );
    build(&s, &dir, &o).unwrap();
    assert_eq!(std::fs::read(dir.join("payload.tar.gz")).unwrap(), tgz);

    // No Helm: refused before anything is written, naming the ways out.
    let no_helm = BuildOptions {
        helm: muster_build::addons::chart::Helm {
            program: tools.path().join("no-such-helm"),
        },
        ..opts(tools.path())
    };
    let e = format!(
        "{:#}",
        build(&s, &out.path().join("c"), &no_helm).unwrap_err()
    );
    assert!(e.contains("needs `helm`") && e.contains("--helm"), "{e}");
    assert!(!out.path().join("c/payload.tar.gz").exists());
}

/// Seed 003: MetalLB's one-address pool is the second VIP, and ingress-nginx's Service
/// asks it for an address (a LoadBalancer Service instead of the bare-metal NodePort).
#[test]
fn seed_003_ingress_takes_the_second_vip_through_metallb() {
    let tools = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = spec("seed-003-k3s-keepalived.yaml");
    let dir = out.path().join("build");
    build(&s, &dir, &opts(tools.path())).unwrap();
    let files = addon_files(&std::fs::read(dir.join("payload.tar.gz")).unwrap());
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "01-metallb.yaml",
            "02-metallb-pool.yaml",
            "03-ingress-nginx.yaml",
            "index.json"
        ]
    );
    assert!(String::from_utf8_lossy(&files[1].1).contains("- 192.168.26.254"));
    let ingress = String::from_utf8_lossy(&files[2].1);
    assert!(ingress.contains("  type: LoadBalancer\n") && !ingress.contains("NodePort"));
}

/// Seed 000 as shipped, offline without cilium's chart in the artifacts, or a user add-on
/// whose URL cannot be fetched: `muster build` fails before writing, naming the URL, the
/// sha256 and where an offline build takes the file from.
#[test]
fn an_addon_without_a_source_fails_the_build_saying_what_is_missing() {
    let tools = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let err = build(
        &spec("seed-000-kubeadm-kube-vip.yaml"),
        &out.path().join("a"),
        &opts(tools.path()),
    )
    .unwrap_err();
    let err = format!("{:#}", anyhow::Error::from(err));
    let c = muster_build::addons::chart::CILIUM_CHART;
    assert!(
        err.contains(c.url.as_ref())
            && err.contains(c.sha256.as_ref())
            && err.contains("addons/cilium-1.18.4.tgz"),
        "{err}"
    );
    assert!(!out.path().join("a/payload.tar.gz").exists());
    let sha = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let text = std::fs::read_to_string(common::repo().join("examples/default.yaml"))
        .unwrap()
        .replace(
            "  addons:\n",
            &format!("  addons:\n    manifests:\n    - name: extra\n      url: https://example.invalid/extra.yaml\n      sha256: {sha}\n"),
        );
    assert!(
        text.contains("name: extra"),
        "default.yaml has an addons section"
    );
    let path = tools.path().join("extra.yaml");
    std::fs::write(&path, text).unwrap();
    let s = muster_build::spec_source::load(Some(&path)).unwrap();
    let err = build(&s, &out.path().join("b"), &opts(tools.path())).unwrap_err();
    let err = format!("{:#}", anyhow::Error::from(err));
    assert!(
        err.contains("https://example.invalid/extra.yaml")
            && err.contains(sha)
            && err.contains("addons/extra-sha256-001122334455.yaml"),
        "{err}"
    );
}

#[test]
fn kubeadm_default_bakes_flannel_with_the_pod_network() {
    let tools = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = spec("default.yaml");
    let dir = out.path().join("build");
    build(&s, &dir, &opts(tools.path())).unwrap();
    let files = addon_files(&std::fs::read(dir.join("payload.tar.gz")).unwrap());
    assert_eq!(files[0].0, "01-flannel.yaml");
    let text = String::from_utf8_lossy(&files[0].1);
    let net = format!(r#""Network": "{}","#, s.cluster.network.pod_subnet);
    assert!(text.contains(&net), "{net} not in the baked flannel");
    assert!(
        text.contains(&format!("--iface={}", s.cluster.network.interface)),
        "no --iface"
    );
}

#[test]
fn a_missing_addon_source_fails_the_build_naming_url_and_sha256() {
    let tools = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let mut o = opts(tools.path());
    o.addons = muster_build::addons::source::Source::Artifacts(empty.path().to_path_buf());
    let err = build(&spec("default.yaml"), &out.path().join("b"), &o)
        .unwrap_err()
        .to_string();
    let f = muster_build::addons::FLANNEL;
    assert!(err.contains(f.url.as_ref()), "{err}");
    assert!(err.contains(f.sha256.as_ref()), "{err}");
    assert!(err.contains("addons/flannel-v0.28.9.yaml"), "{err}");
    // Wrong bytes under the right name: refused, naming both digests.
    std::fs::create_dir_all(empty.path().join("addons")).unwrap();
    std::fs::write(
        empty.path().join("addons/flannel-v0.28.9.yaml"),
        "kind: X\n",
    )
    .unwrap();
    let err = build(&spec("default.yaml"), &out.path().join("b"), &o)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(f.sha256.as_ref()) && err.contains("has sha256"),
        "{err}"
    );
}

/// Issue 14: a spec whose add-on source cannot be reached fails at build time, naming the
/// URL and the sha256 it expected (online: the URL refuses the connection; offline: the
/// artifacts directory lacks the file, and the error says where to put it). Nothing is
/// written.
#[test]
fn an_unreachable_addon_source_fails_the_build_naming_the_url_and_the_sha256() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/cert-manager.yaml");
    let sha = "ab".repeat(32);
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(common::repo().join("examples/default.yaml"))
        .unwrap()
        .replace(
            "    cni: flannel\n",
            &format!(
                "    cni: flannel\n    manifests:\n    - name: cert-manager\n      url: {url}\n      sha256: \"{sha}\"\n"
            ),
        );
    assert!(text.contains(&url), "the example's addons changed: {text}");
    let path = tmp.path().join("spec.yaml");
    std::fs::write(&path, text).unwrap();
    let s = muster_build::spec_source::load(Some(&path)).unwrap();
    let tools = tempfile::tempdir().unwrap();

    // Online: the pinned flannel from a cache that has it, the user's URL refused.
    let cache = tmp.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let fixtures = common::repo().join("tests/fixtures/artifacts/addons");
    for e in std::fs::read_dir(&fixtures).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        std::fs::write(cache.join(digest), bytes).unwrap();
    }
    let online = BuildOptions {
        helm: Default::default(),
        addons: muster_build::addons::source::Source::Cache(cache),
        ..opts(tools.path())
    };
    let dir = tmp.path().join("build");
    let e = format!("{:#}", build(&s, &dir, &online).unwrap_err());
    assert!(e.contains(&url) && e.contains(&sha), "{e}");
    assert!(e.contains("cert-manager"), "{e}");
    assert!(
        !dir.join("payload.tar.gz").exists(),
        "a payload was written"
    );

    // Offline: the artifacts directory has the pins but not the user's file.
    let e = format!("{:#}", build(&s, &dir, &opts(tools.path())).unwrap_err());
    assert!(e.contains(&url) && e.contains(&sha), "{e}");
    assert!(e.contains("cert-manager-sha256-abababababab.yaml"), "{e}");
}
