#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
//! k3s servers on an external SQL datastore (seed 002's shape), in a namespace lab: a REAL
//! MariaDB server in its own namespace at the endpoint's address, k3s-standin servers (NOT
//! k3s) configured like muster configures them — `config.yaml` from the payload template and
//! the `datastore-endpoint` drop-in from the server's own seed — and a k3s-standin agent.
//! Needs root, iproute2, etcd (the lab checks), mariadb-server and mariadb-client
//! (scripts/install-test-deps.sh).

use muster_lab::mariadb::Mariadb;
use muster_lab::netns::{self, Daemon, Out};
use muster_lab::scratch::ScratchLab as Lab;
use muster_standins::{daemon, k3s::BOOTSTRAP_KEY};
use std::path::Path;
use std::time::Duration;

const DB_PASSWORD: &str = "s3cret:pw@lab";
const TOKEN: &str = "lab-sql-secret";

fn new_lab(tag: &str, hosts: &[(&str, u8)]) -> Lab {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_k3s-standin"))
        .parent()
        .unwrap();
    Lab::new(tag, bin_dir, hosts).unwrap()
}

/// MariaDB on host `db` at `<subnet>.10:3306`, and the endpoint naming it.
fn start_db(lab: &Lab) -> (Mariadb, String) {
    let ip = lab.ip(10);
    let endpoint = format!("mysql://k3s:{DB_PASSWORD}@tcp({ip}:3306)/k3s");
    let db = Mariadb::start(
        &lab.dir().join("mariadb"),
        Some(&lab.ns("db")),
        format!("{ip}:3306").parse().unwrap(),
        &endpoint,
    )
    .unwrap();
    (db, endpoint)
}

/// A server's config as muster writes it: the template (no datastore) plus the drop-in.
fn configure_server(lab: &Lab, host: &str, octet: u8, token: &str, endpoint: &str) {
    lab.write(
        host,
        "etc/rancher/k3s/config.yaml",
        &format!(
            "token: {token}\nnode-name: {host}\nnode-ip: {ip}\nadvertise-address: {ip}\ntls-san:\n  - {ip}\n",
            ip = lab.ip(octet)
        ),
    )
    .unwrap();
    lab.write(
        host,
        model::node_files::K3S_DATASTORE_DROPIN,
        &format!("datastore-endpoint: \"{endpoint}\"\n"),
    )
    .unwrap();
}

fn run(lab: &Lab, host: &str, program: &str, args: &[&str]) -> Out {
    lab.exec(host, &[], program, args).unwrap()
}

/// `apiserver-standin VERB PATH` on `host` with `kubeconfig_of`'s admin kubeconfig,
/// optionally against another server's URL.
fn api(
    lab: &Lab,
    host: &str,
    kubeconfig_of: &str,
    server: Option<&str>,
    verb: &str,
    path: &str,
    data: Option<&str>,
) -> Out {
    let kc = lab
        .root(kubeconfig_of)
        .join("etc/rancher/k3s/k3s.yaml")
        .display()
        .to_string();
    let mut args = vec![verb, path, "--kubeconfig", &kc, "--timeout-secs", "8"];
    if let Some(s) = server {
        args.extend(["--server", s]);
    }
    if let Some(d) = data {
        args.extend(["--data", d]);
    }
    run(lab, host, "apiserver-standin", &args)
}

fn ready(lab: &Lab, host: &str) -> bool {
    lab.root(host)
        .join("var/lib/rancher/k3s/server/db/.standin-ready")
        .exists()
        && api(lab, host, host, None, "get", "/readyz", None).ok()
}

fn wait_until(what: &str, patience: Duration, f: impl FnMut() -> bool) {
    netns::wait_until(what, patience, Duration::from_millis(500), f).unwrap();
}

fn server_ca(lab: &Lab, host: &str) -> String {
    std::fs::read_to_string(
        lab.root(host)
            .join("var/lib/rancher/k3s/server/tls/server-ca.crt"),
    )
    .unwrap()
}

fn log(lab: &Lab, host: &str) -> String {
    std::fs::read_to_string(lab.dir().join(format!("{host}-k3s.log"))).unwrap_or_default()
}

/// How many times the bootstrap data was created in the datastore.
fn bootstrap_creations(db: &Mariadb) -> String {
    db.root_sql(&format!(
        "SELECT COUNT(*) FROM k3s.kine WHERE name = '{BOOTSTRAP_KEY}' AND created = 1"
    ))
    .unwrap()
    .trim()
    .to_string()
}

#[test]
fn k3s_servers_share_a_mariadb_datastore() {
    let lab = new_lab(
        "k3s-sql",
        &[("db", 10), ("s1", 31), ("s2", 32), ("s3", 33), ("a1", 41)],
    );
    let (db, endpoint) = start_db(&lab);

    // The first server alone: it creates the bootstrap data.
    configure_server(&lab, "s1", 31, TOKEN, &endpoint);
    let _s1 = lab.spawn("s1", "k3s", &["server"]).unwrap();
    wait_until("s1 ready", Duration::from_secs(60), || ready(&lab, "s1"));
    assert!(
        log(&lab, "s1").contains("bootstrap data created"),
        "{}",
        log(&lab, "s1")
    );
    // No etcd anywhere: the datastore is MariaDB.
    assert!(
        daemon::running_pid(&lab.node_root("s1"), "k3s-etcd")
            .unwrap()
            .is_none()
    );
    assert!(
        !lab.root("s1")
            .join("var/lib/rancher/k3s/server/tls/etcd")
            .exists()
    );

    // The second server with the full token s1 wrote (CA hash pinned).
    let token = std::fs::read_to_string(lab.root("s1").join("var/lib/rancher/k3s/server/token"))
        .unwrap()
        .trim()
        .to_string();
    assert!(token.ends_with(&format!("::server:{TOKEN}")), "{token}");
    configure_server(&lab, "s2", 32, &token, &endpoint);
    let _s2 = lab.spawn("s2", "k3s", &["server"]).unwrap();
    wait_until("s2 ready", Duration::from_secs(60), || ready(&lab, "s2"));
    assert!(
        log(&lab, "s2").contains("bootstrap data read"),
        "{}",
        log(&lab, "s2")
    );
    assert_eq!(server_ca(&lab, "s1"), server_ca(&lab, "s2"));
    assert_eq!(bootstrap_creations(&db), "1");

    // s2's serving certificate verifies against s1's CA, and s2 takes s1's admin cert.
    let s2_url = format!("https://{}:6443", lab.ip(32));
    let out = api(&lab, "s1", "s1", Some(&s2_url), "get", "/readyz", None);
    assert!(out.ok(), "{}", out.all());

    // Written through s1, read through s2.
    let cm = r#"{"apiVersion":"v1","kind":"ConfigMap","data":{"written-by":"s1"}}"#;
    let out = api(
        &lab,
        "s1",
        "s1",
        None,
        "put",
        "/api/v1/namespaces/default/configmaps/shared",
        Some(cm),
    );
    assert!(out.ok(), "{}", out.all());
    let out = api(
        &lab,
        "s2",
        "s2",
        None,
        "get",
        "/api/v1/namespaces/default/configmaps/shared",
        None,
    );
    assert!(
        out.ok() && out.stdout.contains("\"written-by\": \"s1\""),
        "{}",
        out.all()
    );
    // Deleted through s2, gone through s1.
    let out = api(
        &lab,
        "s2",
        "s2",
        None,
        "delete",
        "/api/v1/namespaces/default/configmaps/shared",
        None,
    );
    assert!(out.ok(), "{}", out.all());
    let out = api(
        &lab,
        "s1",
        "s1",
        None,
        "get",
        "/api/v1/namespaces/default/configmaps/shared",
        None,
    );
    assert!(
        !out.ok() && out.stdout.contains("NotFound"),
        "{}",
        out.all()
    );

    // An agent joins through s2 and is seen through s1.
    let _a1 = lab
        .spawn(
            "a1",
            "k3s",
            &[
                "agent",
                "--server",
                &s2_url,
                "--token",
                &token,
                "--node-name",
                "a1",
            ],
        )
        .unwrap();
    wait_until("a1 registered", Duration::from_secs(30), || {
        api(&lab, "s1", "s1", None, "get", "/api/v1/nodes/a1", None).ok()
    });

    // A server with another token cannot read the bootstrap data and says why.
    configure_server(&lab, "s3", 33, "not-the-token", &endpoint);
    let out = run(&lab, "s3", "k3s", &["server"]);
    assert!(
        !out.ok() && out.stderr.contains("wrong token"),
        "{}",
        out.all()
    );
    assert!(
        !out.all().contains(DB_PASSWORD),
        "the password leaked into output: {}",
        out.all()
    );
    assert_eq!(bootstrap_creations(&db), "1");
}

#[test]
fn racing_first_servers_create_one_bootstrap() {
    let lab = new_lab("k3s-sql-race", &[("db", 10), ("s1", 31), ("s2", 32)]);
    let (db, endpoint) = start_db(&lab);
    configure_server(&lab, "s1", 31, TOKEN, &endpoint);
    configure_server(&lab, "s2", 32, TOKEN, &endpoint);
    let mut servers: Vec<(&str, Daemon)> = ["s1", "s2"]
        .into_iter()
        .map(|h| (h, lab.spawn(h, "k3s", &["server"]).unwrap()))
        .collect();
    // Each either comes up (creating or reading the bootstrap data) or fails clearly, and
    // then succeeds when started again.
    for (host, d) in servers.iter_mut() {
        let host = *host;
        wait_until(
            &format!("{host} ready or exited"),
            Duration::from_secs(60),
            || ready(&lab, host) || d.exited().is_some(),
        );
        if let Some(st) = d.exited() {
            eprintln!("{host} exited with {st}; retrying:\n{}", log(&lab, host));
            *d = lab.spawn(host, "k3s", &["server"]).unwrap();
            wait_until(
                &format!("{host} ready on retry"),
                Duration::from_secs(60),
                || ready(&lab, host),
            );
        }
    }
    assert_eq!(bootstrap_creations(&db), "1");
    assert_eq!(server_ca(&lab, "s1"), server_ca(&lab, "s2"));
    let created = ["s1", "s2"]
        .iter()
        .filter(|h| log(&lab, h).contains("bootstrap data created"))
        .count();
    assert_eq!(
        created,
        1,
        "s1:\n{}\ns2:\n{}",
        log(&lab, "s1"),
        log(&lab, "s2")
    );
}

/// The datastore-level guarantee under the race above, forced: many writers create the same
/// key at once on a REAL MariaDB (on loopback, no namespace) and exactly one wins.
#[test]
fn concurrent_creates_of_one_key_have_one_winner() {
    use muster_standins::sql::SqlStore;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("mysql://k3s:{DB_PASSWORD}@tcp(127.0.0.1:{port})/k3s");
    let _db = Mariadb::start(
        &dir.path().join("mariadb"),
        None,
        format!("127.0.0.1:{port}").parse().unwrap(),
        &endpoint,
    )
    .unwrap();
    let dsn = model::dsn::Dsn::parse(&endpoint).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SqlStore::connect(&dsn, Duration::from_secs(30))
            .await
            .unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let s = store.clone();
                tokio::spawn(async move { s.create("/race", format!("v{i}").as_bytes()).await })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            if t.await.unwrap().unwrap() {
                wins += 1;
            }
        }
        assert_eq!(wins, 1);
        assert_eq!(store.creations("/race").await.unwrap(), 1);
        // Concurrent updates all land, in some order, and the key keeps one live value.
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let s = store.clone();
                tokio::spawn(async move { s.put("/race", format!("u{i}").as_bytes()).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let v = store.get("/race").await.unwrap().unwrap();
        assert!(v.starts_with(b"u"), "{v:?}");
        assert_eq!(store.list("/ra").await.unwrap().len(), 1);
        assert!(store.delete("/race").await.unwrap());
        assert!(!store.delete("/race").await.unwrap());
        assert!(store.get("/race").await.unwrap().is_none());
        assert!(store.list("/").await.unwrap().is_empty());
        // Created again after the delete: a second life.
        assert!(store.create("/race", b"again").await.unwrap());
        assert_eq!(store.creations("/race").await.unwrap(), 2);
    });
}
