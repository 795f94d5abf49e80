//! The SQL datastore endpoint carries the database password: it must reach the k3s servers
//! through their own cloud-init seeds only, never the shared payload (every image holds it)
//! nor any other node's seed.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use model::node_files::K3S_DATASTORE_DROPIN;
use model::spec::Datastore;

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn datastore_password_reaches_only_the_servers_seeds() {
    let path = common::repo().join("examples/seed-002-k3s-nginx-mariadb.yaml");
    let loaded = muster::spec_source::load(Some(path.as_path())).unwrap();
    let Datastore::ExternalSql { endpoint } = &loaded.cluster.datastore else {
        panic!("seed 002 is on an external SQL datastore");
    };
    let password = model::dsn::Dsn::parse(endpoint)
        .unwrap()
        .password
        .expect("seed 002's endpoint has a password");
    let r = common::render(&path);
    for (p, a) in &r.files.files {
        assert!(
            !contains(&a.contents, password.as_bytes()),
            "payload file {p} holds the datastore password"
        );
    }
    let plan = model::plan::resolve(&loaded.cluster, vec![]);
    let mut servers = 0;
    for (node, seed) in &r.seeds {
        let role = plan
            .nodes
            .iter()
            .find(|n| n.name.as_str() == node)
            .unwrap()
            .role;
        let user_data = seed.user_data.as_bytes();
        if role == model::Role::ControlPlane {
            servers += 1;
            let ud: serde_json::Value = serde_yaml::from_str(&seed.user_data).unwrap();
            let f = ud["write_files"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["path"] == format!("/{K3S_DATASTORE_DROPIN}"))
                .unwrap_or_else(|| panic!("{node}: no datastore drop-in"));
            assert_eq!(f["permissions"], "0600", "{node}");
            assert_eq!(f["owner"], "root:root", "{node}");
            let drop: serde_json::Value =
                serde_yaml::from_str(f["content"].as_str().unwrap()).unwrap();
            assert_eq!(drop["datastore-endpoint"], endpoint.as_str(), "{node}");
        } else {
            assert!(
                !contains(user_data, password.as_bytes()),
                "{node} ({role:?}) seed holds the datastore password"
            );
            assert!(!seed.user_data.contains(K3S_DATASTORE_DROPIN), "{node}");
        }
        for (f, text) in seed.files() {
            if f != "user-data" {
                assert!(
                    !contains(text.as_bytes(), password.as_bytes()),
                    "{node}/{f}"
                );
            }
        }
    }
    assert_eq!(servers, 2);
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
