//! Datastore secrets reach the control planes through their own cloud-init seeds only,
//! never the shared payload (every image holds it) nor any other node's seed: the SQL
//! datastore endpoint (it carries the database password) and the external etcd's client key.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use model::node_files::{self as nf, K3S_DATASTORE_DROPIN};
use model::spec::Datastore;

#[test]
fn datastore_password_reaches_only_the_servers_seeds() {
    let path = common::repo().join("examples/seed-002-k3s-nginx-mariadb.yaml");
    let loaded = muster_build::spec_source::load(Some(path.as_path())).unwrap();
    let Datastore::ExternalSql { endpoint } = &loaded.cluster.datastore else {
        panic!("seed 002 is on an external SQL datastore");
    };
    let password = model::dsn::Dsn::parse(endpoint)
        .unwrap()
        .password
        .expect("seed 002's endpoint has a password");
    let r = common::render(&path);
    let plan = model::plan::resolve(&loaded.cluster, vec![]);
    let servers = common::secret_only_in_control_plane_seeds(
        &r,
        &plan,
        password.as_bytes(),
        "the datastore password",
    );
    for (node, ud) in &servers {
        let f = common::write_file(ud, K3S_DATASTORE_DROPIN);
        assert_eq!(f["permissions"], "0600", "{node}");
        assert_eq!(f["owner"], "root:root", "{node}");
        let drop: serde_json::Value = serde_yaml::from_str(f["content"].as_str().unwrap()).unwrap();
        assert_eq!(drop["datastore-endpoint"], endpoint.as_str(), "{node}");
    }
    assert_eq!(servers.len(), 2);
    for (node, seed) in &r.seeds {
        if !servers.iter().any(|(s, _)| s == node) {
            assert!(!seed.user_data.contains(K3S_DATASTORE_DROPIN), "{node}");
        }
    }
    // The shared config still says the datastore is external, without the password.
    let baked = r.files.get(model::node_files::CLUSTER_CONFIG).unwrap();
    let baked: model::baked::BakedCluster = serde_json::from_slice(&baked.contents).unwrap();
    assert_eq!(
        baked.spec.datastore,
        Datastore::ExternalSql {
            endpoint: "mysql://k3s:REDACTED@tcp(192.168.0.156:3306)/k3s".into()
        }
    );
}

/// The external etcd's client key (and its cert and CA) reach the kubeadm control planes
/// through their own seeds only (where the agent copies them to kubeadm's paths from), the
/// key 0600 root-owned.
#[test]
fn external_etcd_client_key_reaches_only_the_control_planes_seeds() {
    let path = common::repo().join("examples/seed-004-kubeadm-external-etcd.yaml");
    let loaded = muster_build::spec_source::load(Some(path.as_path())).unwrap();
    let tls = muster_build::bake::etcd_tls::load(&loaded.cluster, &loaded.dir())
        .unwrap()
        .expect("seed 004 names its etcd TLS files");
    // The PEM body, not the armour lines every key shares.
    let key_body = tls.key_pem.lines().nth(1).unwrap();
    assert!(key_body.len() > 40, "{key_body}");
    let r = common::render(&path);
    let plan = model::plan::resolve(&loaded.cluster, vec![]);
    let cps = common::secret_only_in_control_plane_seeds(
        &r,
        &plan,
        key_body.as_bytes(),
        "the etcd client key",
    );
    assert_eq!(cps.len(), 3);
    for (node, ud) in &cps {
        for (p, mode, pem) in [
            (nf::ETCD_EXTERNAL_SEED_CA, "0644", &tls.ca_pem),
            (nf::ETCD_EXTERNAL_SEED_CLIENT_CERT, "0644", &tls.cert_pem),
            (nf::ETCD_EXTERNAL_SEED_CLIENT_KEY, "0600", &tls.key_pem),
        ] {
            let f = common::write_file(ud, p);
            assert_eq!(f["permissions"], mode, "{node} {p}");
            assert_eq!(f["owner"], "root:root", "{node} {p}");
            assert_eq!(f["content"].as_str().unwrap(), pem.as_str(), "{node} {p}");
        }
    }
    // Workers and load balancers get none of the three files.
    for (node, seed) in &r.seeds {
        if !cps.iter().any(|(c, _)| c == node) {
            assert!(!seed.user_data.contains("apiserver-etcd-client"), "{node}");
        }
    }
    // The shared config says the datastore is external etcd, without build-host paths.
    let baked = r.files.get(nf::CLUSTER_CONFIG).unwrap();
    let baked: model::baked::BakedCluster = serde_json::from_slice(&baked.contents).unwrap();
    let Datastore::ExternalEtcd {
        endpoints,
        ca_file,
        cert_file,
        key_file,
    } = &baked.spec.datastore
    else {
        panic!("baked datastore: {:?}", baked.spec.datastore);
    };
    assert_eq!(endpoints.len(), 3);
    assert_eq!((ca_file, cert_file, key_file), (&None, &None, &None));
}

#[test]
fn placeholder_password_is_a_warning_and_plan_output_hides_it() {
    let path = common::repo().join("examples/seed-002-k3s-nginx-mariadb.yaml");
    let out_dir = tempfile::tempdir().unwrap();
    let out_arg = out_dir.path().join("out").display().to_string();
    let agent = out_dir.path().join("nodeagent");
    std::fs::write(&agent, b"fake nodeagent for tests\n").unwrap();
    let agent_arg = agent.display().to_string();
    for (cmd, json) in [("plan", false), ("plan", true), ("build", false)] {
        let mut args = vec![cmd, path.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        if cmd == "build" {
            args.extend(["--out", &out_arg, "--agent-bin", &agent_arg]);
            args.extend([
                "--artifacts",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/artifacts"),
            ]);
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_muster"))
            .args(&args)
            .output()
            .unwrap();
        let text = common::show(&out);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("placeholder CHANGE-ME"), "{text}");
        assert!(
            !text.contains(":CHANGE-ME@"),
            "plan output shows the endpoint: {text}"
        );
    }
}
