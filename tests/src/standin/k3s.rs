//! `k3s-standin`: the k3s command lines muster's agent uses (`k3s server`, `k3s agent`,
//! `k3s-killall.sh`), with a REAL etcd member underneath (k3s's embedded etcd) and the API
//! server stand-in in-process. NOT k3s. Runs in the foreground like `k3s server` under its
//! systemd unit; SIGTERM stops it and its etcd.
//!
//! Reads `<root>/etc/rancher/k3s/config.yaml` (`cluster-init`, `server`, `token`, `tls-san`,
//! `node-ip`, `advertise-address`, `node-name`); the same keys as `--flags` override it.
//! `datastore-endpoint` (external SQL) is NOT supported and fails with a message.

use crate::standin::client::{Api, Trust, http_client};
use crate::standin::daemon;
use crate::standin::etcd::{self, ClientTls, MemberTls};
use crate::standin::knobs::Knobs;
use crate::standin::kubeadm::{self, Flags};
use crate::standin::pki::{self, CertKey, Usage};
use crate::standin::{api, clock, node_root, read_file, write_file, yaml};
use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use model::node_files::{K3S_CONFIG, NodeRoot};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const SERVER_DIR: &str = "var/lib/rancher/k3s/server";
pub const TLS_DIR: &str = "var/lib/rancher/k3s/server/tls";
pub const AGENT_DIR: &str = "var/lib/rancher/k3s/agent";
pub const KUBECONFIG: &str = "etc/rancher/k3s/k3s.yaml";
const ETCD_DAEMON: &str = "k3s-etcd";
const SELF_DAEMON: &str = "k3s";
/// CA files shipped to joining servers (name, path under tls/).
const SHARED: &[(&str, &str)] = &[
    ("server-ca.crt", "server-ca.crt"),
    ("server-ca.key", "server-ca.key"),
    ("etcd-server-ca.crt", "etcd/server-ca.crt"),
    ("etcd-server-ca.key", "etcd/server-ca.key"),
];

#[derive(Debug, Default, Clone)]
struct K3sConfig {
    cluster_init: bool,
    server: Option<String>,
    token: Option<String>,
    tls_san: Vec<String>,
    node_ip: Option<String>,
    advertise_address: Option<String>,
    node_name: Option<String>,
    datastore_endpoint: Option<String>,
}

fn load_config(root: &NodeRoot, flags: &Flags) -> Result<K3sConfig> {
    let path = root.path(K3S_CONFIG);
    let mut c = K3sConfig::default();
    if let Ok(text) = std::fs::read_to_string(&path) {
        let docs = yaml::documents(&text).with_context(|| format!("parsing {}", path.display()))?;
        if let Some(v) = docs.first() {
            let s = |k: &str| yaml::str_at(v, &[k]).map(str::to_string);
            c.cluster_init = yaml::bool_at(v, &["cluster-init"]).unwrap_or(false);
            c.server = s("server");
            c.token = s("token");
            c.tls_san = yaml::strings_at(v, &["tls-san"]);
            c.node_ip = s("node-ip");
            c.advertise_address = s("advertise-address");
            c.node_name = s("node-name");
            c.datastore_endpoint = s("datastore-endpoint");
        }
    }
    if flags.flag("cluster-init") {
        c.cluster_init = true;
    }
    for (k, slot) in [
        ("server", &mut c.server),
        ("token", &mut c.token),
        ("node-ip", &mut c.node_ip),
        ("advertise-address", &mut c.advertise_address),
        ("node-name", &mut c.node_name),
        ("datastore-endpoint", &mut c.datastore_endpoint),
    ] {
        if let Some(v) = flags.value(k) {
            *slot = Some(v.to_string());
        }
    }
    c.tls_san.extend(flags.values("tls-san"));
    Ok(c)
}

pub async fn main(args: Vec<String>) -> i32 {
    match dispatch(args).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("level=fatal msg=\"{e:#}\"");
            1
        }
    }
}

async fn dispatch(args: Vec<String>) -> Result<()> {
    let flags = Flags::parse(&args);
    match flags.positional.first().map(String::as_str) {
        Some("server") => server(&flags).await,
        Some("agent") => agent(&flags).await,
        Some("reset") => reset(true),
        Some("killall") => reset(false),
        Some("--version") | Some("-v") | Some("version") => {
            println!("k3s version v1.31.6+k3s1 (muster-standin)");
            Ok(())
        }
        _ => bail!(
            "k3s-standin (muster stand-in for k3s): supported: server, agent, reset, killall (also as k3s-killall.sh)"
        ),
    }
}

fn tls(root: &NodeRoot) -> PathBuf {
    root.path(TLS_DIR)
}

/// `password` of a `K10<hash>::server:<password>` token, or the token itself.
fn split_token(token: &str) -> (Option<String>, String) {
    match token.strip_prefix("K10").and_then(|t| t.split_once("::")) {
        Some((hash, rest)) => (
            Some(hash.to_string()),
            rest.split_once(':')
                .map(|(_, p)| p.to_string())
                .unwrap_or_else(|| rest.to_string()),
        ),
        None => (None, token.to_string()),
    }
}

/// The kubeadm-shaped bootstrap token the stand-in derives from the k3s password.
fn bearer_for(password: &str) -> String {
    let id = hex::encode(Sha256::digest(format!("id:{password}")));
    let secret = hex::encode(Sha256::digest(format!("secret:{password}")));
    format!("{}.{}", &id[..6], &secret[..16])
}

fn bundle_key(password: &str) -> String {
    hex::encode(Sha256::digest(format!("bootstrap:{password}")))
}

fn write_pid(root: &NodeRoot) -> Result<()> {
    let dir = crate::standin::state_dir(root)?;
    write_file(
        &dir.join(format!("{SELF_DAEMON}.pid")),
        format!("{}\n", std::process::id()),
        0o644,
    )
}

fn member_tls(root: &NodeRoot) -> MemberTls {
    let e = tls(root).join("etcd");
    MemberTls {
        ca: e.join("server-ca.crt"),
        server_cert: e.join("server-client.crt"),
        server_key: e.join("server-client.key"),
        peer_cert: e.join("peer-server-client.crt"),
        peer_key: e.join("peer-server-client.key"),
    }
}

fn client_tls(root: &NodeRoot) -> ClientTls {
    let e = tls(root).join("etcd");
    ClientTls {
        ca: e.join("server-ca.crt"),
        cert: e.join("client.crt"),
        key: e.join("client.key"),
    }
}

fn issue_server_certs(root: &NodeRoot, name: &str, addr: &str, sans: &[String]) -> Result<()> {
    let t = tls(root);
    let ca = pki::read_pair(&t, "server-ca")?;
    let etcd_ca = pki::read_pair(&t.join("etcd"), "server-ca")?;
    // One CA signs serving and client certs in the stand-in (k3s has server-ca and client-ca).
    pki::write_pair(&t, "client-ca", &ca)?;
    let mut all: Vec<String> = vec![
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc.cluster.local".into(),
        "localhost".into(),
        name.into(),
        addr.into(),
        "127.0.0.1".into(),
        "10.43.0.1".into(),
    ];
    all.extend(sans.iter().cloned());
    pki::write_pair(
        &t,
        "serving-kube-apiserver",
        &pki::issue(&ca, "kube-apiserver", &[], &all, Usage::Server)?,
    )?;
    pki::write_pair(
        &t,
        "client-admin",
        &pki::issue(&ca, "system:admin", &["system:masters"], &[], Usage::Client)?,
    )?;
    let esans: Vec<String> = vec![
        name.into(),
        "localhost".into(),
        addr.into(),
        "127.0.0.1".into(),
        "::1".into(),
    ];
    let e = t.join("etcd");
    pki::write_pair(
        &e,
        "server-client",
        &pki::issue(&etcd_ca, "etcd-server", &[], &esans, Usage::ServerAndClient)?,
    )?;
    pki::write_pair(
        &e,
        "peer-server-client",
        &pki::issue(&etcd_ca, "etcd-peer", &[], &esans, Usage::ServerAndClient)?,
    )?;
    pki::write_pair(
        &e,
        "client",
        &pki::issue(&etcd_ca, "etcd-client", &[], &[], Usage::Client)?,
    )?;
    let admin = pki::read_pair(&t, "client-admin")?;
    write_file(
        &root.path(KUBECONFIG),
        pki::kubeconfig(
            "default",
            "https://127.0.0.1:6443",
            &ca.cert_pem,
            "default",
            &admin,
        ),
        0o600,
    )?;
    Ok(())
}

fn ready_marker(root: &NodeRoot) -> PathBuf {
    root.path(SERVER_DIR).join("db/.standin-ready")
}

fn start_etcd(root: &NodeRoot, name: &str, addr: &str, initial: &str, state: &str) -> Result<()> {
    let data = root.path(SERVER_DIR).join("db/etcd");
    daemon::stop(root, ETCD_DAEMON, Duration::from_secs(5))?;
    if !ready_marker(root).exists() {
        // A failed first start leaves DATA/member behind: start clean. A restart keeps data.
        let _ = std::fs::remove_dir_all(&data);
    }
    std::fs::create_dir_all(&data)?;
    let mut spec = etcd::member_spec(name, addr, &data, &member_tls(root), initial, state)?;
    spec.name = ETCD_DAEMON.to_string();
    daemon::spawn(root, &spec)?;
    Ok(())
}

async fn wait_etcd(root: &NodeRoot) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = etcd::etcdctl(
            &["https://127.0.0.1:2379".to_string()],
            &client_tls(root),
            &["endpoint", "health"],
        )?;
        if out.success {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("etcd did not become healthy: {}", out.stderr.trim());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn api_config(root: &NodeRoot) -> Result<api::ServerConfig> {
    let t = tls(root);
    let e = t.join("etcd");
    Ok(api::ServerConfig {
        bind: "0.0.0.0:6443".parse()?,
        serving: pki::read_pair(&t, "serving-kube-apiserver")?,
        client_ca: pki::read_pair(&t, "server-ca")?,
        client_ca_has_key: true,
        etcd_endpoint: "https://127.0.0.1:2379".into(),
        etcd_ca_pem: read_file(&e.join("server-ca.crt"))?,
        etcd_client: pki::read_pair(&e, "client")?,
    })
}

async fn server(flags: &Flags) -> Result<()> {
    let root = node_root();
    let knobs = Knobs::load(&root)?;
    let cfg = load_config(&root, flags)?;
    if let Some(ds) = &cfg.datastore_endpoint {
        bail!(
            "muster stand-in: datastore-endpoint {ds:?} (external SQL datastore) is not supported; use embedded etcd (cluster-init / server)"
        );
    }
    let name = cfg.node_name.clone().unwrap_or_else(kubeadm::hostname);
    let addr = cfg.advertise_address.clone().or(cfg.node_ip.clone()).context("node-ip or advertise-address is required by the stand-in (no default route in the lab)")?;
    write_pid(&root)?;
    knobs.checkpoint("preflight")?;
    let t = tls(&root);
    let password;
    if ready_marker(&root).exists() {
        // Restart of a server that has run before: keep the data, rejoin with it.
        let saved = read_file(&root.path(SERVER_DIR).join("token"))?;
        password = split_token(saved.trim()).1;
        issue_server_certs(&root, &name, &addr, &cfg.tls_san)?;
        start_etcd(
            &root,
            &name,
            &addr,
            &format!("{name}=https://{addr}:2380"),
            "existing",
        )?;
    } else if let Some(url) = cfg.server.clone().filter(|_| !cfg.cluster_init) {
        // Joining server.
        let token = cfg
            .token
            .clone()
            .context("--token is required to join a server")?;
        let (hash, pw) = split_token(&token);
        password = pw;
        let ca_pem = fetch_cacerts(&url, hash.as_deref()).await?;
        let boot = Api {
            base: url.trim_end_matches('/').to_string(),
            http: http_client(&Trust::Ca(ca_pem), None, Duration::from_secs(10))?,
            bearer: Some(bearer_for(&password)),
        };
        knobs.checkpoint("download-certs")?;
        let r = boot
            .get("/api/v1/namespaces/kube-system/secrets/k3s-bootstrap")
            .await?;
        anyhow::ensure!(
            r.ok(),
            "failed to get bootstrap data from {url}: {} {}",
            r.status,
            r.message()
        );
        decrypt_bundle(&r.body, &password, &t)?;
        issue_server_certs(&root, &name, &addr, &cfg.tls_san)?;
        knobs.checkpoint("member-add")?;
        let pods = boot.get("/api/v1/namespaces/kube-system/pods").await?;
        let endpoints: Vec<String> = pods.body["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                p["metadata"]["annotations"]["kubeadm.kubernetes.io/etcd.advertise-client-urls"]
                    .as_str()
            })
            .map(str::to_string)
            .collect();
        anyhow::ensure!(!endpoints.is_empty(), "no etcd members announced by {url}");
        // Plain add: real k3s adds learners and promotes them itself; the stand-in does not
        // model that (yet).
        let initial = etcd::member_add(
            &endpoints,
            &client_tls(&root),
            &name,
            &addr,
            false,
            Duration::from_secs(30),
        )?;
        knobs.checkpoint("after-member-add")?;
        start_etcd(&root, &name, &addr, &initial, "existing")?;
    } else {
        if !cfg.cluster_init {
            bail!(
                "muster stand-in: only `cluster-init: true` (embedded etcd) or `server:` joins are supported"
            );
        }
        let existing = t.join("server-ca.crt").exists();
        if !existing {
            pki::write_pair(
                &t,
                "server-ca",
                &pki::new_ca(&format!("k3s-server-ca@{}", clock::now_unix()))?,
            )?;
            pki::write_pair(
                &t.join("etcd"),
                "server-ca",
                &pki::new_ca("etcd-server-ca")?,
            )?;
        }
        issue_server_certs(&root, &name, &addr, &cfg.tls_san)?;
        password = match &cfg.token {
            Some(tok) => split_token(tok).1,
            None => hex::encode(rand::random::<[u8; 16]>()),
        };
        knobs.checkpoint("etcd")?;
        start_etcd(
            &root,
            &name,
            &addr,
            &format!("{name}=https://{addr}:2380"),
            "new",
        )?;
    }
    let ca_pem = read_file(&t.join("server-ca.crt"))?;
    let token = format!(
        "K10{}::server:{password}",
        hex::encode(Sha256::digest(ca_pem.as_bytes()))
    );
    write_file(
        &root.path(SERVER_DIR).join("token"),
        format!("{token}\n"),
        0o600,
    )?;
    write_file(
        &root.path(SERVER_DIR).join("node-token"),
        format!("{token}\n"),
        0o600,
    )?;
    wait_etcd(&root).await?;
    write_file(&ready_marker(&root), b"", 0o644)?;
    knobs.checkpoint("control-plane")?;
    let server_task = tokio::spawn(api::serve(api_config(&root)?));
    let admin = Api::from_kubeconfig(&read_file(&root.path(KUBECONFIG))?, Duration::from_secs(10))?;
    kubeadm::wait_ready(&admin, Duration::from_secs(60)).await?;
    kubeadm::store_token(
        &admin,
        &bearer_for(&password),
        Some(0),
        Some("k3s-standin server token"),
    )
    .await?;
    if cfg.cluster_init && cfg.server.is_none() {
        upload_bundle(&admin, &password, &t).await?;
    }
    kubeadm::register_node(&admin, &name, Some(&addr), true).await?;
    kubeadm::mirror_pods(&admin, &name, &addr, 6443).await?;
    println!("level=info msg=\"k3s is up and running\" (muster stand-in; node {name})");
    // Foreground until SIGTERM/SIGINT, like `k3s server`.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        r = server_task => { eprintln!("level=error msg=\"apiserver stopped: {r:?}\""); }
    }
    daemon::stop(&root, ETCD_DAEMON, Duration::from_secs(5))?;
    Ok(())
}

async fn fetch_cacerts(url: &str, hash: Option<&str>) -> Result<String> {
    let insecure = http_client(&Trust::Insecure, None, Duration::from_secs(5))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let pem = loop {
        match insecure
            .get(format!("{}/cacerts", url.trim_end_matches('/')))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => break r.text().await?,
            other => {
                if Instant::now() >= deadline {
                    bail!("failed to get CA certs from {url}: {other:?}");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    if let Some(h) = hash {
        let got = hex::encode(Sha256::digest(pem.as_bytes()));
        if !got.eq_ignore_ascii_case(h) {
            bail!("token CA hash does not match the Cluster CA certificate hash: {got} != {h}");
        }
    }
    Ok(pem)
}

async fn upload_bundle(api: &Api, password: &str, t: &std::path::Path) -> Result<()> {
    use chacha20poly1305::aead::Aead;
    let c = kubeadm::cipher(&bundle_key(password))?;
    let mut data = serde_json::Map::new();
    for (name, rel) in SHARED {
        let nonce: [u8; 12] = rand::random();
        let ct = c
            .encrypt(&nonce.into(), std::fs::read(t.join(rel))?.as_slice())
            .map_err(|_| anyhow::anyhow!("encrypting {name}"))?;
        let mut blob = nonce.to_vec();
        blob.extend(ct);
        data.insert(name.to_string(), Value::String(B64.encode(blob)));
    }
    api.must_put("/api/v1/namespaces/kube-system/secrets/k3s-bootstrap", &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "k3s-bootstrap"}, "stringData": data})).await
}

fn decrypt_bundle(secret: &Value, password: &str, t: &std::path::Path) -> Result<()> {
    use chacha20poly1305::aead::Aead;
    let c = kubeadm::cipher(&bundle_key(password))?;
    for (name, rel) in SHARED {
        let blob = B64.decode(
            secret["stringData"][*name]
                .as_str()
                .with_context(|| format!("bootstrap data lacks {name}"))?,
        )?;
        anyhow::ensure!(blob.len() > 12, "truncated {name}");
        let (nonce, ct) = blob.split_at(12);
        let plain = c.decrypt(nonce.into(), ct).map_err(|_| {
            anyhow::anyhow!("bootstrap data cannot be decrypted with the token (wrong token?)")
        })?;
        write_file(&t.join(rel), plain, 0o600)?;
    }
    Ok(())
}

async fn agent(flags: &Flags) -> Result<()> {
    let root = node_root();
    let knobs = Knobs::load(&root)?;
    let cfg = load_config(&root, flags)?;
    let url = cfg.server.clone().context("--server is required")?;
    let token = cfg.token.clone().context("--token is required")?;
    let name = cfg.node_name.clone().unwrap_or_else(kubeadm::hostname);
    write_pid(&root)?;
    knobs.checkpoint("preflight")?;
    let (hash, password) = split_token(&token);
    let ca_pem = fetch_cacerts(&url, hash.as_deref()).await?;
    let boot = Api {
        base: url.trim_end_matches('/').to_string(),
        http: http_client(&Trust::Ca(ca_pem.clone()), None, Duration::from_secs(10))?,
        bearer: Some(bearer_for(&password)),
    };
    knobs.checkpoint("kubelet-start")?;
    let (csr, key_pem) = pki::new_csr(&format!("system:node:{name}"), &["system:nodes"])?;
    let r = boot
        .post(
            "/apis/certificates.k8s.io/v1/certificatesigningrequests",
            &json!({"spec": {"request": B64.encode(csr.as_bytes())}}),
        )
        .await?;
    anyhow::ensure!(r.ok(), "node password/CSR rejected: {}", r.message());
    let cert = r.body["status"]["certificate"]
        .as_str()
        .and_then(|s| B64.decode(s).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .context("no certificate returned")?;
    let kc = pki::kubeconfig(
        "default",
        &url,
        &ca_pem,
        &format!("system:node:{name}"),
        &CertKey {
            cert_pem: cert,
            key_pem,
        },
    );
    write_file(&root.path(AGENT_DIR).join("kubelet.kubeconfig"), &kc, 0o600)?;
    let api = Api::from_kubeconfig(&kc, Duration::from_secs(10))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    println!("level=info msg=\"k3s agent is up and running\" (muster stand-in; node {name})");
    loop {
        // Heartbeat: the stand-in kubelet re-registers the Node (Ready) every 10 s.
        if let Err(e) = kubeadm::register_node(&api, &name, cfg.node_ip.as_deref(), false).await {
            eprintln!("level=warning msg=\"node heartbeat: {e:#}\"");
        }
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

/// `k3s-killall.sh` (stop everything) and `k3s-standin reset` (also wipe server/agent state,
/// keeping `config.yaml`).
fn reset(wipe: bool) -> Result<()> {
    let root = node_root();
    for d in [SELF_DAEMON, ETCD_DAEMON] {
        if daemon::stop(&root, d, Duration::from_secs(5))? {
            println!("+ stopped {d}");
        }
    }
    if wipe {
        let _ = std::fs::remove_dir_all(root.path("var/lib/rancher/k3s"));
        let _ = std::fs::remove_file(root.path(KUBECONFIG));
        daemon::forget(&root, ETCD_DAEMON)?;
        println!("+ removed /var/lib/rancher/k3s and /etc/rancher/k3s/k3s.yaml (config.yaml kept)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert_eq!(
            split_token("K10abc::server:pw"),
            (Some("abc".into()), "pw".into())
        );
        assert_eq!(split_token("plain"), (None, "plain".into()));
        let b = bearer_for("pw");
        kubeadm::config::validate_token(&b, "t").unwrap();
    }
}
