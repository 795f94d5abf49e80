//! `muster status` and `muster kubeconfig` against a real rendezvous (in-process, TLS on
//! 127.0.0.1 with the certificate `muster build` wrote) for a cluster built into a temp dir.
//! Nodes are simulated with the agent's own client and record types; the API is a TLS
//! server on other loopback addresses with a certificate from a test CA.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;
#[path = "rendezvous/support.rs"]
#[allow(dead_code, reason = "shared with the rendezvous tests")]
mod support;

use base64::Engine as _;
use model::baked::BakedCluster;
use model::secret::ClusterSecret;
use muster_build::bake::{BuildOptions, build, rendezvous_cert};
use muster_build::ops::upgrade;
use muster_rendezvous::{Limits, tls};
use nodeagent::bootstrap::{Persisted, Phase, State};
use nodeagent::distro::EtcdMember;
use protocol::Client;
use protocol::etcd_view::EtcdView;
use protocol::keys;
use protocol::records::{InitRecord, JoinMaterial, Secret};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::Server;

const CLIENT_KEY: &str = "c2VjcmV0LWNsaWVudC1rZXktZG8tbm90LXByaW50";
const TOKEN: &str = "abcdef.0123456789abcdef";

struct Cluster {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    secret: ClusterSecret,
    server: Server,
}

/// Builds the default cluster, serves its rendezvous on loopback and points the dir's
/// `cluster.json` at it; `edit` adjusts the baked config further.
async fn cluster(edit: impl FnOnce(&mut Value)) -> Cluster {
    let tmp = tempfile::tempdir().unwrap();
    let agent = tmp.path().join("nodeagent");
    std::fs::write(&agent, b"\x7fELF fake nodeagent for tests\n").unwrap();
    let dir = tmp.path().join("out");
    let spec = muster_build::spec_source::load(Some(&common::repo().join("examples/default.yaml")))
        .unwrap();
    build(
        &spec,
        &dir,
        &BuildOptions {
            agent_bin: agent,
            mtime: 0,
            helm: Default::default(),
            addons: muster_build::addons::source::Source::Artifacts(
                concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/artifacts").into(),
            ),
        },
    )
    .unwrap();
    let secret = ClusterSecret::from_hex(
        std::fs::read_to_string(dir.join("cluster-secret"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let cert = rendezvous_cert::load_or_create(&dir, &spec.cluster.rendezvous.url).unwrap();
    let server = Server::start_with(
        secret.clone(),
        Some((cert.cert_pem, cert.key_pem, cert.sha256)),
        Limits::default(),
    )
    .await;
    let path = dir.join("cluster.json");
    let mut baked: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    baked["rendezvous"]["url"] = Value::from(server.base.as_str().trim_end_matches('/'));
    edit(&mut baked);
    std::fs::write(&path, serde_json::to_vec_pretty(&baked).unwrap()).unwrap();
    Cluster {
        _tmp: tmp,
        dir,
        secret,
        server,
    }
}

impl Cluster {
    fn baked(&self) -> BakedCluster {
        serde_json::from_slice(&std::fs::read(self.dir.join("cluster.json")).unwrap()).unwrap()
    }

    /// The client a node builds from its baked config.
    fn node(&self, name: &str) -> Client {
        Client::from_baked(&self.baked().rendezvous, &self.secret, name).unwrap()
    }

    /// Registers `name` with the report the agent's driver heartbeats.
    async fn report(&self, name: &str, role: &str, state: State, since_ms: u64) {
        self.report_etcd(name, role, state, since_ms, None).await;
    }

    /// A report carrying the etcd view a done control plane adds.
    async fn report_etcd(
        &self,
        name: &str,
        role: &str,
        state: State,
        since_ms: u64,
        etcd: Option<EtcdView>,
    ) {
        let mut p = Persisted::new(name, since_ms);
        p.enter(state, since_ms);
        let role_kind = model::Role::parse(role).unwrap();
        let report = nodeagent::report::member_report(role_kind, &p, since_ms)
            .with_etcd(etcd)
            .to_json();
        self.node(name)
            .register(name, role, &report, Duration::from_secs(60))
            .await
            .unwrap();
    }

    /// A done control plane's report with its readiness view (issue 14): `ready` of the
    /// named Nodes `Ready`, flannel's DaemonSet available on as many.
    async fn report_ready(&self, name: &str, nodes: &[&str], ready: usize) {
        use protocol::readiness::{NodeReady, Readiness, Rollout};
        let mut p = Persisted::new(name, now_ms());
        p.enter(state(Phase::Done, 0, None), now_ms());
        let view = Readiness {
            observed_by: name.into(),
            observed_ms: now_ms(),
            nodes: nodes
                .iter()
                .enumerate()
                .map(|(i, n)| NodeReady {
                    name: (*n).into(),
                    ready: i < ready,
                    reason: Some(
                        if i < ready {
                            "KubeletReady"
                        } else {
                            "KubeletNotReady"
                        }
                        .into(),
                    ),
                    message: None,
                })
                .collect(),
            rollouts: vec![Rollout {
                addon: "flannel".into(),
                kind: "DaemonSet".into(),
                namespace: "kube-flannel".into(),
                name: "kube-flannel-ds".into(),
                desired: nodes.len() as u64,
                available: ready as u64,
                error: None,
            }],
            error: None,
        };
        let report = nodeagent::report::member_report(model::Role::ControlPlane, &p, now_ms())
            .with_readiness(Some(view))
            .to_json();
        self.node(name)
            .register(name, "control-plane", &report, Duration::from_secs(60))
            .await
            .unwrap();
    }

    /// What the initializer publishes: the init record and the join material, fenced by
    /// its init slot.
    async fn initialize(&self, by: &str, admin_kubeconfig: String) {
        let c = self.node(by);
        let token = match c
            .acquire(keys::INIT_SEMAPHORE, 1, by, Duration::from_secs(60))
            .await
            .unwrap()
        {
            protocol::AcquireResponse::Granted { token, .. } => token,
            other => panic!("{other:?}"),
        };
        let fence = || {
            Some(protocol::Fence {
                semaphore: keys::INIT_SEMAPHORE.into(),
                token,
            })
        };
        let m = JoinMaterial {
            init_token: token,
            token: Secret(TOKEN.into()),
            token_expires_ms: now_ms() + 3_600_000,
            ca_cert_hash: "sha256:00".into(),
            certificate_key: Some(Secret("k".repeat(64))),
            certificate_key_expires_ms: Some(now_ms() + 3_600_000),
            admin_kubeconfig: Some(Secret(admin_kubeconfig)),
            etcd: None,
        };
        c.create(
            keys::JOIN_MATERIAL,
            &serde_json::to_vec(&m).unwrap(),
            None,
            fence(),
        )
        .await
        .unwrap();
        let rec = InitRecord {
            node: by.into(),
            token,
            at_ms: now_ms(),
            generation: 0,
        };
        c.create(
            keys::INITIALIZED,
            &serde_json::to_vec(&rec).unwrap(),
            None,
            fence(),
        )
        .await
        .unwrap();
        c.release(keys::INIT_SEMAPHORE, by, token).await.unwrap();
    }

    async fn muster(&self, args: &[&str]) -> (i32, String, String) {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_muster"))
            .args(args)
            .arg("--out")
            .arg(&self.dir)
            .env("MUSTER_LOG", "warn")
            .output()
            .await
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn now_ms() -> u64 {
    muster_build::ops::now_ms()
}

fn state(phase: Phase, attempt: u32, last_error: Option<&str>) -> State {
    State {
        phase,
        attempt,
        last_error: last_error.map(str::to_string),
    }
}

fn node<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {status:#}"))
}

/// A test CA and an API server certificate for `ip`, signed by it.
fn api_certs(ip: &str) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![ip.to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// A TLS server on `addr` that completes handshakes and hangs up.
async fn serve_tls(addr: SocketAddr, cert_pem: &str, key_pem: &str) -> SocketAddr {
    let config = tls::server_config(cert_pem.as_bytes(), key_pem.as_bytes(), "api").unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let local = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(stream).await;
            });
        }
    });
    local
}

fn admin_kubeconfig(ca_pem: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: https://10.240.0.5:6443\n  name: lab\ncontexts:\n- context:\n    cluster: lab\n    user: kubernetes-admin\n  name: kubernetes-admin@lab\ncurrent-context: kubernetes-admin@lab\nusers:\n- name: kubernetes-admin\n  user:\n    client-certificate-data: Y2VydA==\n    client-key-data: {CLIENT_KEY}\n"
    )
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_members_phases_slots_and_absent_nodes() {
    let port = closed_port();
    let c = cluster(|b| b["apiEndpoint"] = Value::from(format!("127.0.0.1:{port}"))).await;
    let t0 = now_ms() - 90_000;
    c.report("lab-cp-1", "control-plane", state(Phase::Done, 0, None), t0)
        .await;
    c.report(
        "lab-cp-2",
        "control-plane",
        state(
            Phase::Joining { token: 2 },
            3,
            Some("join: etcdserver: Peer URLs already exists"),
        ),
        t0,
    )
    .await;
    c.report(
        "lab-w-1",
        "worker",
        state(Phase::AcquiringJoinSlot, 1, None),
        t0,
    )
    .await;
    // lab-cp-2 holds the cp-join slot; lab-w-1 held a worker slot and gave it back;
    // lab-w-2 holds one.
    let cp2 = c.node("lab-cp-2");
    cp2.acquire(
        keys::CP_JOIN_SEMAPHORE,
        1,
        "lab-cp-2",
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let w1 = c.node("lab-w-1");
    let protocol::AcquireResponse::Granted { token, .. } = w1
        .acquire(
            keys::WORKER_JOIN_SEMAPHORE,
            2,
            "lab-w-1",
            Duration::from_secs(60),
        )
        .await
        .unwrap()
    else {
        panic!("not granted")
    };
    w1.release(keys::WORKER_JOIN_SEMAPHORE, "lab-w-1", token)
        .await
        .unwrap();
    c.node("lab-w-2")
        .acquire(
            keys::WORKER_JOIN_SEMAPHORE,
            2,
            "lab-w-2",
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    c.initialize("lab-cp-1", admin_kubeconfig("not a real CA"))
        .await;

    let (code, out, err) = c.muster(&["status", "--json", "--timeout", "2s"]).await;
    assert_eq!(code, 1, "not every node is done: {out}\n{err}");
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["allDone"], false);
    assert_eq!(s["nodes"].as_array().unwrap().len(), 6);
    let cp1 = node(&s, "lab-cp-1");
    assert_eq!(
        (cp1["live"].as_bool(), cp1["phase"].as_str()),
        (Some(true), Some("done"))
    );
    assert_eq!(cp1["done"], true);
    let cp2 = node(&s, "lab-cp-2");
    assert_eq!(cp2["phase"], "joining");
    assert_eq!(cp2["attempt"], 3);
    assert_eq!(cp2["role"], "control-plane");
    assert_eq!(
        cp2["lastError"],
        "join: etcdserver: Peer URLs already exists"
    );
    let secs = cp2["secondsInPhase"].as_u64().unwrap();
    assert!((89..200).contains(&secs), "{secs}");
    assert_eq!(node(&s, "lab-w-1")["phase"], "acquiring-join-slot");
    for absent in ["lab-cp-3", "lab-w-2", "lab-w-3"] {
        let n = node(&s, absent);
        assert_eq!(
            (n["live"].as_bool(), n["phase"].as_str()),
            (Some(false), Some("absent"))
        );
    }
    assert_eq!(s["initialized"]["node"], "lab-cp-1");
    assert_eq!(s["joinMaterial"], true);
    assert_eq!(s["cpJoinHolders"][0]["holder"], "lab-cp-2");
    let workers: Vec<&str> = s["workerJoinHolders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["holder"].as_str().unwrap())
        .collect();
    assert_eq!(workers, ["lab-w-2"], "w-1 released its slot");
    assert_eq!(s["initHolders"].as_array().unwrap().len(), 0, "released");
    assert_eq!(s["api"]["tcp"], false);
    assert!(
        s["api"]["error"].as_str().unwrap().contains("TCP connect"),
        "{s:#}"
    );
    assert!(!out.contains(TOKEN) && !out.contains(CLIENT_KEY), "{out}");

    // The table says the same.
    let (code, text, _) = c.muster(&["status"]).await;
    assert_eq!(code, 1);
    assert!(text.contains("initialized by: lab-cp-1"), "{text}");
    assert!(text.contains("cp-join slot: lab-cp-2"), "{text}");
    assert!(text.contains("Peer URLs already exists"), "{text}");
    assert!(text.contains("absent"), "{text}");

    // Every planned node done, but no control plane reported the Nodes' readiness: exit 1.
    for (name, role) in [
        ("lab-cp-2", "control-plane"),
        ("lab-cp-3", "control-plane"),
        ("lab-w-1", "worker"),
        ("lab-w-2", "worker"),
        ("lab-w-3", "worker"),
    ] {
        c.report(name, role, state(Phase::Done, 0, None), now_ms())
            .await;
    }
    let (code, out, err) = c.muster(&["status", "--json"]).await;
    assert_eq!(code, 1, "{out}\n{err}");
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["allDone"], true);
    assert_eq!(
        s["readinessProblems"][0],
        "no control plane has reported the Nodes' readiness yet"
    );

    // A control plane reports one Node NotReady (flannel 5/6): exit 1, and why.
    let planned = [
        "lab-cp-1", "lab-cp-2", "lab-cp-3", "lab-w-1", "lab-w-2", "lab-w-3",
    ];
    c.report_ready("lab-cp-3", &planned, 5).await;
    let (code, text, _) = c.muster(&["status"]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("not healthy: Node lab-w-3 is not Ready; add-on flannel not rolled out: DaemonSet kube-flannel/kube-flannel-ds 5/6"), "{text}");
    assert!(
        text.contains("Nodes and add-ons, as lab-cp-3 read them"),
        "{text}"
    );

    // Every Node Ready and flannel rolled out: exit 0.
    c.report_ready("lab-cp-3", &planned, 6).await;
    let (code, out, err) = c.muster(&["status", "--json"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["allDone"], true);
    assert_eq!(s["nodes"][5]["kubeNode"]["ready"], true);
    assert_eq!(s["readiness"]["rollouts"][0]["available"], 6);

    // Every node done, but the freshest etcd view says quorum is lost: exit 1, and why.
    let member = |id: u64, name: &str, ip: &str| EtcdMember {
        id,
        name: name.into(),
        peer_urls: vec![format!("https://{ip}:2380")],
        client_urls: vec![format!("https://{ip}:2379")],
        is_learner: false,
    };
    let members = [
        member(1, "lab-cp-1", "10.0.0.11"),
        member(2, "lab-cp-2", "10.0.0.12"),
        member(3, "lab-cp-3", "10.0.0.13"),
    ];
    let older = EtcdView::new("lab-cp-2", now_ms() - 5_000, &members, &[true; 3]);
    let lost = EtcdView::new("lab-cp-1", now_ms(), &members, &[true, false, false]);
    let done = || state(Phase::Done, 0, None);
    c.report_etcd("lab-cp-2", "control-plane", done(), now_ms(), Some(older))
        .await;
    c.report_etcd("lab-cp-1", "control-plane", done(), now_ms(), Some(lost))
        .await;
    let (code, out, err) = c.muster(&["status", "--json"]).await;
    assert_eq!(code, 1, "quorum lost: {out}\n{err}");
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["allDone"], true);
    assert_eq!(s["etcd"]["observedBy"], "lab-cp-1", "the freshest view");
    assert_eq!(s["etcd"]["quorum"]["hasQuorum"], false);
    let (_, text, _) = c.muster(&["status"]).await;
    assert!(text.contains("etcd, as lab-cp-1 reported it"), "{text}");
    assert!(text.contains("LOST"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_an_unreachable_rendezvous_and_usage_errors_exit_2() {
    let port = closed_port();
    let c = cluster(|b| {
        b["rendezvous"]["url"] = Value::from(format!("https://127.0.0.1:{port}"));
    })
    .await;
    let (code, out, err) = c.muster(&["status", "--timeout", "1s"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains(&format!("rendezvous https://127.0.0.1:{port}")),
        "{err}"
    );
    let (code, _, _) = c.muster(&["status", "--bogus"]).await;
    assert_eq!(code, 2);
    let _ = c.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_falls_back_from_a_vip_whose_certificate_does_not_name_it() {
    // The API server certificate names 127.0.0.2 only. The "VIP" 127.0.0.4 answers with it
    // (so TLS must fail for it), lab-cp-1 (127.0.0.3) does not answer, lab-cp-2 (127.0.0.2)
    // passes.
    let (ca_pem, cert_pem, key_pem) = api_certs("127.0.0.2");
    let good = serve_tls("127.0.0.2:0".parse().unwrap(), &cert_pem, &key_pem).await;
    let port = good.port();
    serve_tls(
        format!("127.0.0.4:{port}").parse().unwrap(),
        &cert_pem,
        &key_pem,
    )
    .await;
    let c = cluster(|b| {
        b["apiEndpoint"] = Value::from(format!("127.0.0.4:{port}"));
        b["spec"]["ha"]["apiPort"] = Value::from(port);
        for (node, ip) in [
            ("lab-cp-1", "127.0.0.3"),
            ("lab-cp-2", "127.0.0.2"),
            ("lab-cp-3", "127.0.0.2"),
        ] {
            let n = b["nodes"]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .find(|n| n["name"] == node)
                .unwrap();
            n["ip"] = Value::from(ip);
        }
    })
    .await;

    // Before init: a clear error, nothing written.
    let (code, _, err) = c.muster(&["kubeconfig"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no join material yet"), "{err}");
    assert!(!c.dir.join("kubeconfig").exists());

    c.initialize("lab-cp-1", admin_kubeconfig(&ca_pem)).await;
    let target = c.dir.join("sub/admin.conf");
    let (code, out, err) = c
        .muster(&[
            "kubeconfig",
            "--write",
            target.to_str().unwrap(),
            "--timeout",
            "2s",
        ])
        .await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("warning:"), "{err}");
    assert!(err.contains(&format!("VIP (127.0.0.4:{port})")), "{err}");
    assert!(err.contains("not valid for name"), "{err}");
    assert!(
        err.contains(&format!("control plane lab-cp-2 (127.0.0.2:{port})")),
        "{err}"
    );
    assert!(
        out.contains(&format!("server https://127.0.0.2:{port}")),
        "{out}"
    );
    for text in [&out, &err] {
        assert!(
            !text.contains(CLIENT_KEY) && !text.contains(TOKEN),
            "{text}"
        );
    }
    let written = std::fs::read_to_string(&target).unwrap();
    assert!(
        written.contains(&format!("server: https://127.0.0.2:{port}")),
        "{written}"
    );
    assert!(!written.contains("10.240.0.5"), "{written}");
    assert!(
        written.contains(CLIENT_KEY),
        "the admin credentials are kept"
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&target).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A VIP that works is used as is, with no warning.
    let path = c.dir.join("cluster.json");
    let mut baked: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    baked["apiEndpoint"] = Value::from(format!("127.0.0.2:{port}"));
    std::fs::write(&path, serde_json::to_vec(&baked).unwrap()).unwrap();
    let (code, out, err) = c.muster(&["kubeconfig"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!err.contains("warning"), "{err}");
    let written = std::fs::read_to_string(c.dir.join("kubeconfig")).unwrap();
    assert!(written.contains(&format!("server: https://127.0.0.2:{port}")));

    // status verifies the endpoint's certificate against the kubeconfig's CA too.
    let (_, out, _) = c.muster(&["status", "--json"]).await;
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["api"]["tls"], true, "{s:#}");
}

#[test]
fn build_writes_the_baked_config_beside_the_payload() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = tmp.path().join("nodeagent");
    std::fs::write(&agent, b"fake").unwrap();
    let dir = tmp.path().join("out");
    let spec = muster_build::spec_source::load(Some(&common::repo().join("examples/default.yaml")))
        .unwrap();
    build(
        &spec,
        &dir,
        &BuildOptions {
            agent_bin: agent,
            mtime: 0,
            helm: Default::default(),
            addons: muster_build::addons::source::Source::Artifacts(
                concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/artifacts").into(),
            ),
        },
    )
    .unwrap();
    let beside = std::fs::read(dir.join("cluster.json")).unwrap();
    let tgz = std::fs::read(dir.join("payload.tar.gz")).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&tgz[..]));
    let inside = ar
        .entries()
        .unwrap()
        .map(Result::unwrap)
        .find_map(|mut e| {
            (e.path().unwrap().to_string_lossy() == "usr/lib/muster/cluster.json").then(|| {
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut b).unwrap();
                b
            })
        })
        .unwrap();
    assert_eq!(beside, inside);
    // And the operator commands can still read a dir built before cluster.json existed.
    std::fs::remove_file(dir.join("cluster.json")).unwrap();
    let d = muster_build::ops::BuildDir::load(&dir).unwrap();
    assert_eq!(d.baked.nodes.len(), 6);
    let _: &Path = &d.dir;
}

/// `muster reset`: refused without confirmation (nothing changed); with `--yes` it raises
/// the generation and deletes the retired assembly's init record, join material and
/// removal tombstones; a second reset raises it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_needs_confirmation_then_retires_the_assembly() {
    let c = cluster(|_| {}).await;
    c.initialize("cp-1", "kubeconfig".into()).await;
    let op = c.node("muster-test");
    op.create("removed.wk-1", b"{}", None, None).await.unwrap();
    let (code, out, err) = c.muster(&["reset"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("--yes"), "{err}");
    assert!(
        op.get(keys::INITIALIZED).await.unwrap().is_some(),
        "untouched"
    );
    assert!(op.get(keys::GENERATION).await.unwrap().is_none());

    let (code, out, err) = c.muster(&["reset", "--yes", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["previousGeneration"], 0);
    assert_eq!(r["generation"], 1);
    let deleted: Vec<&str> = r["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(deleted, ["initialized", "join-material", "removed.wk-1"]);
    for k in [keys::INITIALIZED, keys::JOIN_MATERIAL, "removed.wk-1"] {
        assert!(op.get(k).await.unwrap().is_none(), "{k} left");
    }
    let g: protocol::generation::GenerationRecord =
        serde_json::from_slice(&op.get(keys::GENERATION).await.unwrap().unwrap().value).unwrap();
    assert_eq!(g.generation, 1);

    let (code, out, err) = c.muster(&["reset", "--yes"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("generation 1 retired, now 2"), "{out}");
    assert!(out.contains("no records of the retired assembly"), "{out}");
    let _ = c.server.stop().await;
}

/// Issue 16: `muster status` tells planned-but-absent, present-but-not-planned and removed
/// (tombstoned) nodes apart; a removed planned node is not waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tells_absent_unplanned_and_removed_members_apart() {
    let c = cluster(|_| {}).await;
    let t0 = now_ms() - 1_000;
    for (n, role) in [
        ("lab-cp-1", "control-plane"),
        ("lab-cp-2", "control-plane"),
        ("lab-cp-3", "control-plane"),
        ("lab-w-1", "worker"),
        ("lab-w-2", "worker"),
        ("lab-w-9", "worker"),
    ] {
        c.report(n, role, state(Phase::Done, 0, None), t0).await;
    }
    // The Nodes the API still lists are Ready (the removed ones' Node objects are gone).
    c.report_ready(
        "lab-cp-1",
        &[
            "lab-cp-1", "lab-cp-2", "lab-cp-3", "lab-w-1", "lab-w-2", "lab-w-9",
        ],
        6,
    )
    .await;
    let op = c.node("muster-test");
    for gone in ["lab-w-3", "lab-w-4"] {
        let t = protocol::removal::Tombstone {
            node: gone.into(),
            role: "worker".into(),
            by: "muster-test".into(),
            at_ms: t0,
        };
        op.create(
            &protocol::removal::tombstone_key(gone),
            &serde_json::to_vec(&t).unwrap(),
            None,
            None,
        )
        .await
        .unwrap();
    }
    let (code, out, err) = c.muster(&["status", "--json", "--timeout", "2s"]).await;
    let s: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(node(&s, "lab-w-3")["phase"], "removed", "{s:#}");
    assert_eq!(s["removed"], serde_json::json!(["lab-w-3", "lab-w-4"]));
    assert_eq!(s["plannedAbsent"], serde_json::json!([]));
    assert_eq!(s["unplannedMembers"], serde_json::json!(["lab-w-9"]));
    assert_eq!(s["allDone"], true, "the removed node is not waited for");
    assert_eq!(code, 0, "every planned node not removed is done: {out}");

    // `muster remove --forget-tombstone`: lab-w-3's is cleared (a replacement may join),
    // lab-w-7 had none (reported, not an error); no confirmation, nothing is taken down.
    let (code, out, err) = c
        .muster(&[
            "remove",
            "--forget-tombstone",
            "lab-w-3",
            "lab-w-7",
            "--json",
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    let cleared: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(
        cleared,
        serde_json::json!([{"node": "lab-w-3", "cleared": true}, {"node": "lab-w-7", "cleared": false}])
    );
    assert!(err.contains("lab-w-3: tombstone cleared"), "{err}");
    assert!(op.get("removed.lab-w-3").await.unwrap().is_none());
    assert!(
        op.get("removed.lab-w-4").await.unwrap().is_some(),
        "untouched"
    );
    let (code, _, err) = c.muster(&["remove", "--forget-tombstone", "--prune"]).await;
    assert_eq!(
        code, 2,
        "--forget-tombstone names nodes, never prunes: {err}"
    );
    let (_, out, _) = c.muster(&["status", "--timeout", "2s"]).await;
    assert!(out.contains("planned but absent: lab-w-3"), "{out}");
    assert!(out.contains("removed: lab-w-4"), "{out}");
    assert!(
        out.contains("members not in this build's plan: lab-w-9"),
        "{out}"
    );
    assert!(out.contains("5/6 nodes done"), "{out}");
    let _ = c.server.stop().await;
}

/// Issue 15: `muster upgrade` publishes the rebuilt dir's release (sealed chunks, digest),
/// refuses a minor skip against the previous release before writing anything, shows the
/// roll (lock holder, each node's phase and step, what stopped it) and writes resume
/// requests. The nodes' side is simulated with the records the agent writes.
#[tokio::test]
async fn upgrade_publishes_refuses_a_skip_shows_the_roll_and_resumes() {
    use protocol::release::{self, Progress, ResumeRequest};
    let c = cluster(|_| {}).await;
    let set_version = |v: &str| {
        let path = c.dir.join("cluster.json");
        let mut baked: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        baked["spec"]["distribution"]["version"] = Value::from(v);
        std::fs::write(&path, serde_json::to_vec_pretty(&baked).unwrap()).unwrap();
    };
    let (code, out, err) = c.muster(&["upgrade", "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let first: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(first["sequence"], 1);
    assert_eq!(first["version"], "v1.31.4");
    assert!(err.contains("publishing payload: chunk"), "progress: {err}");
    let payload = std::fs::read(c.dir.join("payload.tar.gz")).unwrap();
    assert_eq!(first["payload"]["sha256"], release::sha256_hex(&payload));

    // Rebuilt two minors up: refused before anything is written.
    set_version("v1.33.0");
    let (code, out, err) = c.muster(&["upgrade"]).await;
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("skipping a minor version"), "{err}");
    let node = c.node("lab-cp-1");
    let (now, _) = protocol::release_transfer::current_release(&node)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.sequence, 1, "the refused release was not published");

    set_version("v1.32.1");
    let (code, out, err) = c.muster(&["upgrade"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("published release 2 (v1.32.1"), "{out}");

    // The nodes' side: cp-1 done, cp-2 stopped in its drain holding the lock.
    let progress = |node: &str, phase: &str, step: Option<&str>, detail: Option<&str>| Progress {
        node: node.into(),
        sequence: 2,
        phase: phase.into(),
        step: step.map(Into::into),
        detail: detail.map(Into::into),
        lock_token: None,
        at_ms: now_ms(),
    };
    let cp2 = c.node("lab-cp-2");
    let token = match cp2
        .acquire(
            release::UPGRADE_SEMAPHORE,
            1,
            "lab-cp-2",
            Duration::from_secs(60),
        )
        .await
        .unwrap()
    {
        protocol::AcquireResponse::Granted { token, .. } => token,
        other => panic!("{other:?}"),
    };
    for p in [
        progress("lab-cp-1", "done", None, None),
        progress(
            "lab-cp-2",
            "stopped",
            Some("drain"),
            Some("PodDisruptionBudget default/web allows no disruption"),
        ),
        progress(
            "lab-cp-3",
            "waiting",
            None,
            Some("the roll stopped at lab-cp-2"),
        ),
    ] {
        let key = release::progress_key(&p.node);
        c.node(&p.node)
            .create(&key, &serde_json::to_vec(&p).unwrap(), None, None)
            .await
            .unwrap();
    }
    let (code, out, _) = c.muster(&["upgrade", "--status"]).await;
    assert_eq!(code, 1, "a stopped roll is not done: {out}");
    assert!(
        out.contains(&format!("upgrade lock: lab-cp-2 (token {token})")),
        "{out}"
    );
    assert!(
        out.contains("STOPPED at lab-cp-2 step drain: PodDisruptionBudget default/web"),
        "{out}"
    );
    let (_, out, _) = c.muster(&["upgrade", "--status", "--json"]).await;
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["stopped"]["name"], "lab-cp-2");
    assert_eq!(s["release"]["version"], "v1.32.1");
    let w1 = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "lab-w-1")
        .unwrap();
    assert_eq!(w1["phase"], upgrade::NO_REPORT);
    // `muster status` shows the roll too.
    let (_, out, _) = c.muster(&["status", "--json"]).await;
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["upgrade"]["stopped"]["step"], "drain", "{out}");
    let (_, out, _) = c.muster(&["status"]).await;
    assert!(out.contains("upgrade: release 2 v1.32.1"), "{out}");
    assert!(out.contains("STOPPED at lab-cp-2 step drain"), "{out}");

    for expected in [1, 2] {
        let (code, out, err) = c.muster(&["upgrade", "--resume", "--json"]).await;
        assert_eq!(code, 0, "{out}{err}");
        let r: ResumeRequest = serde_json::from_str(&out).unwrap();
        assert_eq!((r.sequence, r.count), (2, expected));
    }
}

/// One FleetLock call with the real curl as the client (OpenSSL, trusting the rendezvous
/// certificate as Zincati's node would after `update-ca-trust`): the URL is the base URL
/// `muster fleetlock` printed joined with the protocol's relative path, as Zincati joins
/// it. `(HTTP status, body)`.
fn fleetlock_call(base_url: &str, cert: &str, op: &str, id: &str, header: bool) -> (u16, Value) {
    let url = reqwest::Url::parse(base_url).unwrap().join(op).unwrap();
    // The certificate names the spec's rendezvous address; the test server listens on
    // loopback: curl connects there while checking the name the URL gives.
    let port = url.port().unwrap();
    let spec_host = "10.240.0.2";
    let mut named = url.clone();
    named.set_host(Some(spec_host)).unwrap();
    let body = format!(r#"{{"client_params": {{"group": "default", "id": "{id}"}}}}"#);
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--cacert", cert])
        .arg("--connect-to")
        .arg(format!("{spec_host}:{port}:127.0.0.1:{port}"))
        .args(["-X", "POST", "-d", &body])
        .arg(named.as_str());
    if header {
        cmd.args(["-H", "fleet-lock-protocol: true"]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), serde_json::from_str(body).unwrap())
}

/// Issue 15: FleetLock (Zincati's reboot lock) on the cluster's upgrade lock. A reboot
/// slot is the upgrade slot: while an OS-update client holds it no node takes it to
/// upgrade, and the other way round; locks are owned and recursive; the protocol's header
/// and the cluster's token are required.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleetlock_clients_share_the_upgrade_lock_with_the_agents() {
    use protocol::release::UPGRADE_SEMAPHORE;
    let c = cluster(|_| {}).await;
    let (code, out, err) = c.muster(&["fleetlock", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let cfg: Value = serde_json::from_str(&out).unwrap();
    let base = cfg["baseUrl"].as_str().unwrap().to_string();
    let cert = cfg["certificate"].as_str().unwrap().to_string();
    assert!(base.ends_with('/'), "{base}");
    assert!(
        cfg["zincatiConfig"]
            .as_str()
            .unwrap()
            .contains(&format!("base_url = \"{base}\"")),
        "{cfg:#}"
    );
    let (code, text, err) = c.muster(&["fleetlock"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("strategy = \"fleet_lock\"") && text.contains(&cert),
        "{text}"
    );

    let call = |op: &str, id: &str| fleetlock_call(&base, &cert, op, id, true);
    const PRE: &str = "v1/pre-reboot";
    const STEADY: &str = "v1/steady-state";

    // Zincati on node A takes the slot, again (recursive), and B is refused with the
    // protocol's error form.
    assert_eq!(call(PRE, "node-a"), (200, serde_json::json!({})));
    assert_eq!(call(PRE, "node-a").0, 200);
    let (code, e) = call(PRE, "node-b");
    assert_eq!(code, 409, "{e}");
    assert_eq!(e["kind"], "semaphore_full");
    assert!(
        e["value"]
            .as_str()
            .unwrap()
            .contains("fleetlock/default/node-a"),
        "{e}"
    );
    // An agent wanting to upgrade waits for it.
    let agent = c.node("cp-1");
    let ttl = Duration::from_secs(60);
    match agent
        .acquire(UPGRADE_SEMAPHORE, 1, "cp-1", ttl)
        .await
        .unwrap()
    {
        protocol::AcquireResponse::Busy { holders, .. } => {
            assert_eq!(holders.len(), 1);
            assert_eq!(holders[0].holder, "fleetlock/default/node-a");
        }
        other => panic!("granted while node-a reboots: {other:?}"),
    }
    // Unlock is owned: B's steady-state frees nothing; A's frees the slot.
    assert_eq!(call(STEADY, "node-b").0, 200);
    assert_eq!(call(PRE, "node-b").0, 409);
    assert_eq!(call(STEADY, "node-a").0, 200);
    assert_eq!(
        call(STEADY, "node-a").0,
        200,
        "unlock if held: twice is fine"
    );
    // Now the agent upgrades, and no reboot starts meanwhile.
    let token = match agent
        .acquire(UPGRADE_SEMAPHORE, 1, "cp-1", ttl)
        .await
        .unwrap()
    {
        protocol::AcquireResponse::Granted { token, .. } => token,
        other => panic!("the free slot was not granted: {other:?}"),
    };
    let (code, e) = call(PRE, "node-b");
    assert_eq!(code, 409, "{e}");
    assert!(e["value"].as_str().unwrap().contains("cp-1"), "{e}");
    assert!(
        agent
            .release(UPGRADE_SEMAPHORE, "cp-1", token)
            .await
            .unwrap()
    );
    assert_eq!(call(PRE, "node-b").0, 200);
    assert_eq!(call(STEADY, "node-b").0, 200);

    // Refused: no protocol header, a wrong token, a bad group.
    let (code, e) = fleetlock_call(&base, &cert, PRE, "node-c", false);
    assert_eq!(
        (code, e["kind"].as_str()),
        (400, Some("bad_request")),
        "{e}"
    );
    let wrong = base.replace(
        base.trim_end_matches('/').rsplit('/').next().unwrap(),
        &"0".repeat(32),
    );
    let (code, e) = fleetlock_call(&wrong, &cert, PRE, "node-c", true);
    assert_eq!(code, 401, "{e}");
    let (code, e) = fleetlock_call(&base, &cert, PRE, "node c", true);
    assert_eq!(code, 400, "{e}");

    // The audit log shows the reboots' grants and releases like the agents'.
    let audit = agent.audit(0).await.unwrap();
    let by = |who: &str, ev: protocol::AuditEvent| {
        audit
            .iter()
            .filter(|e| {
                e.subject == UPGRADE_SEMAPHORE && e.event == ev && e.holder.as_deref() == Some(who)
            })
            .count()
    };
    assert_eq!(
        by("fleetlock/default/node-a", protocol::AuditEvent::Granted),
        1
    );
    assert_eq!(
        by("fleetlock/default/node-a", protocol::AuditEvent::Released),
        1
    );
    assert_eq!(
        by("fleetlock/default/node-b", protocol::AuditEvent::Granted),
        1
    );
    assert_eq!(by("cp-1", protocol::AuditEvent::Granted), 1);
    let _ = c.server.stop().await;
}
