//! `k3s-standin`: the k3s command lines muster's agent uses (`k3s server`, `k3s agent`,
//! `k3s-killall.sh`), with a REAL etcd member underneath (k3s's embedded etcd) and the API
//! server stand-in in-process. NOT k3s. Runs in the foreground like `k3s server` under its
//! systemd unit; SIGTERM stops it and its etcd.
//!
//! Reads `<root>/etc/rancher/k3s/config.yaml` and then its drop-ins
//! `config.yaml.d/*.yaml` (and `*.yml`) in file-name order, as k3s does: a later file's key
//! replaces an earlier one's, `key+:` appends to a list (`tls-san`). Keys: `cluster-init`,
//! `server`, `token`, `tls-san`, `node-ip`, `advertise-address`, `node-name`,
//! `datastore-endpoint`; the same keys as `--flags` override the files.
//!
//! With `datastore-endpoint: mysql://user:pass@tcp(host:port)/db` there is NO etcd: the
//! server keeps the cluster's bootstrap data (the server CA cert and key) in a REAL MariaDB,
//! sealed with a key derived from the token, and the apiserver stand-in stores its objects
//! there too ([`crate::sql`]), so every server serves the same cluster. The first server
//! creates the bootstrap data; one that finds it decrypts it with its token (a wrong token
//! fails: "cannot be decrypted with the token"); two servers racing to create it cannot both
//! succeed (the datastore refuses the second create) and the loser uses the winner's.
//! Only `mysql://` endpoints over `tcp(...)` are supported (no PostgreSQL).

use crate::client::{Api, Trust, http_client};
use crate::daemon;
use crate::etcd::{self, ClientTls, MemberTls};
use crate::knobs::Knobs;
use crate::kubeadm::{self, Flags};
use crate::pki::{self, CertKey, Usage};
use crate::sql::SqlStore;
use crate::{api, clock, node_root, read_file, write_file, yaml};
use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use model::node_files::{K3S_CONFIG, NodeRoot};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const SERVER_DIR: &str = "var/lib/rancher/k3s/server";
pub const TLS_DIR: &str = "var/lib/rancher/k3s/server/tls";
pub const AGENT_DIR: &str = "var/lib/rancher/k3s/agent";
pub const KUBECONFIG: &str = "etc/rancher/k3s/k3s.yaml";
/// How long a joining server's learner may take to catch up before promotion gives up
/// (as the kubeadm stand-in: 2 min, which a slow machine under TCG needs).
const PROMOTE_PATIENCE: Duration = Duration::from_secs(120);
const ETCD_DAEMON: &str = "k3s-etcd";
const SELF_DAEMON: &str = "k3s";
/// CA files shipped to joining servers (name, path under tls/).
const SHARED: &[(&str, &str)] = &[
    ("server-ca.crt", "server-ca.crt"),
    ("server-ca.key", "server-ca.key"),
    ("etcd-server-ca.crt", "etcd/server-ca.crt"),
    ("etcd-server-ca.key", "etcd/server-ca.key"),
];
/// What servers on an SQL datastore share (no etcd, so no etcd CA).
const SQL_SHARED: &[(&str, &str)] = &[
    ("server-ca.crt", "server-ca.crt"),
    ("server-ca.key", "server-ca.key"),
];
/// The datastore key of the sealed bootstrap data.
pub const BOOTSTRAP_KEY: &str = "/bootstrap/muster-standin";

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
    /// `none` when another CNI replaces k3s's embedded flannel.
    flannel_backend: Option<String>,
}

impl K3sConfig {
    /// k3s's embedded flannel gives its nodes a pod network (unless `flannel-backend: none`).
    fn embedded_cni(&self) -> bool {
        self.flannel_backend.as_deref() != Some("none")
    }
}

/// The single-valued string keys and where they go.
fn string_keys(c: &mut K3sConfig) -> [(&'static str, &mut Option<String>); 7] {
    [
        ("server", &mut c.server),
        ("token", &mut c.token),
        ("node-ip", &mut c.node_ip),
        ("advertise-address", &mut c.advertise_address),
        ("node-name", &mut c.node_name),
        ("datastore-endpoint", &mut c.datastore_endpoint),
        ("flannel-backend", &mut c.flannel_backend),
    ]
}

/// `config.yaml`, then `config.yaml.d/*.yaml|*.yml` sorted by name (either may be absent).
fn config_files(root: &NodeRoot) -> Result<Vec<PathBuf>> {
    let main = root.path(K3S_CONFIG);
    let mut files: Vec<PathBuf> = main.is_file().then(|| main.clone()).into_iter().collect();
    let dropins = PathBuf::from(format!("{}.d", main.display()));
    let mut extra = Vec::new();
    match std::fs::read_dir(&dropins) {
        Ok(rd) => {
            for e in rd {
                let p = e
                    .with_context(|| format!("reading {}", dropins.display()))?
                    .path();
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().to_ascii_lowercase())
                    .unwrap_or_default();
                if p.is_file() && (name.ends_with(".yaml") || name.ends_with(".yml")) {
                    extra.push(p);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", dropins.display())),
    }
    extra.sort();
    files.extend(extra);
    Ok(files)
}

/// One config file's keys over what earlier files set.
fn apply_file(c: &mut K3sConfig, v: &yaml::Value) {
    if let Some(b) = yaml::bool_at(v, &["cluster-init"]) {
        c.cluster_init = b;
    }
    for (k, slot) in string_keys(c) {
        if let Some(val) = yaml::str_at(v, &[k]) {
            *slot = Some(val.to_string());
        }
    }
    if yaml::at(v, &["tls-san"]).is_some() {
        c.tls_san = yaml::strings_at(v, &["tls-san"]);
    }
    c.tls_san.extend(yaml::strings_at(v, &["tls-san+"]));
}

fn load_config(root: &NodeRoot, flags: &Flags) -> Result<K3sConfig> {
    let mut c = K3sConfig::default();
    for path in config_files(root)? {
        let text = read_file(&path)?;
        let docs = yaml::documents(&text).with_context(|| format!("parsing {}", path.display()))?;
        if let Some(v) = docs.first() {
            apply_file(&mut c, v);
        }
    }
    if flags.flag("cluster-init") {
        c.cluster_init = true;
    }
    for (k, slot) in string_keys(&mut c) {
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
            // logfmt quotes the message: its own quotes and backslashes escaped.
            let msg = format!("{e:#}").replace('\\', "\\\\").replace('"', "\\\"");
            eprintln!("level=fatal msg=\"{msg}\"");
            1
        }
    }
}

async fn dispatch(args: Vec<String>) -> Result<()> {
    let flags = Flags::parse(&args);
    // `k3s --version` alone: the flag parser reads it as a boolean flag, not a command.
    if flags.positional.is_empty() && (flags.flag("version") || flags.flag("v")) {
        print_version();
        return Ok(());
    }
    match flags.positional.first().map(String::as_str) {
        Some("server") => server(&flags).await,
        Some("agent") => agent(&flags).await,
        Some("reset") => reset(true),
        Some("killall") => reset(false),
        Some("--version") | Some("-v") | Some("version") => {
            print_version();
            Ok(())
        }
        _ => bail!(
            "k3s-standin (muster stand-in for k3s): supported: server, agent, reset, killall (also as k3s-killall.sh)"
        ),
    }
}

/// The release this binary is: `MUSTER_STANDIN_K8S_VERSION` (what the lab's stand-in k3s
/// release files set when they exec the stand-in, so the binary installed on the node
/// decides the version, as a real k3s binary does), else the node's spec's
/// (`crate::release`).
pub fn release() -> String {
    crate::release("v1.31.6+k3s1")
}

/// As real k3s prints it: `k3s version v1.31.6+k3s1 (6ab750f9)` then its Go version.
fn print_version() {
    println!("k3s version {} (5e4d4b1c)", release());
    println!("go version go1.22.12");
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
    let dir = crate::state_dir(root)?;
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

/// Serving, admin client and (with embedded etcd) etcd certificates from the CAs in tls/,
/// and the admin kubeconfig.
fn issue_server_certs(
    root: &NodeRoot,
    name: &str,
    addr: &str,
    sans: &[String],
    with_etcd: bool,
) -> Result<()> {
    let t = tls(root);
    let ca = pki::read_pair(&t, "server-ca")?;
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
    if with_etcd {
        issue_etcd_certs(&t, name, addr)?;
    }
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

fn issue_etcd_certs(t: &Path, name: &str, addr: &str) -> Result<()> {
    let etcd_ca = pki::read_pair(&t.join("etcd"), "server-ca")?;
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
    )
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
    // Real k3s keeps waiting for its embedded etcd; a bounded wait (as long as kubeadm's
    // API check) still ends a stand-in whose member can never start.
    let deadline = Instant::now() + kubeadm::API_CHECK_PATIENCE;
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

/// The embedded etcd member, through its JSON gateway.
fn etcd_gateway(root: &NodeRoot) -> Result<etcd::Gateway> {
    let e = tls(root).join("etcd");
    etcd::Gateway::new(
        "https://127.0.0.1:2379",
        &read_file(&e.join("server-ca.crt"))?,
        &pki::read_pair(&e, "client")?,
        etcd::gateway_timeout()?,
    )
}

fn api_config(root: &NodeRoot, storage: Arc<dyn api::Storage>) -> Result<api::ServerConfig> {
    let t = tls(root);
    Ok(api::ServerConfig {
        bind: "0.0.0.0:6443".parse()?,
        serving: pki::read_pair(&t, "serving-kube-apiserver")?,
        client_ca: pki::read_pair(&t, "server-ca")?,
        client_ca_has_key: true,
        storage,
        version: release(),
    })
}

/// Where a server keeps the cluster.
enum Datastore {
    /// Embedded etcd (a real etcd member this process started).
    Etcd,
    /// An external SQL datastore.
    Sql,
}

async fn server(flags: &Flags) -> Result<()> {
    let root = node_root();
    let knobs = Knobs::load(&root)?;
    let cfg = load_config(&root, flags)?;
    let name = cfg.node_name.clone().unwrap_or_else(kubeadm::hostname);
    let addr = cfg.advertise_address.clone().or(cfg.node_ip.clone()).context("node-ip or advertise-address is required by the stand-in (no default route in the lab)")?;
    write_pid(&root)?;
    knobs.checkpoint("preflight")?;
    let t = tls(&root);
    let (password, storage, store): (String, Arc<dyn api::Storage>, Datastore) =
        match cfg.datastore_endpoint.clone() {
            Some(endpoint) => {
                let (pw, sql) = sql_datastore(&root, &knobs, &cfg, &endpoint).await?;
                issue_server_certs(&root, &name, &addr, &cfg.tls_san, false)?;
                (pw, Arc::new(sql), Datastore::Sql)
            }
            None => {
                let pw = embedded_etcd(&root, &knobs, &cfg, &name, &addr).await?;
                (pw, Arc::new(etcd_gateway(&root)?), Datastore::Etcd)
            }
        };
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
    if matches!(store, Datastore::Etcd) {
        wait_etcd(&root).await?;
    }
    write_file(&ready_marker(&root), b"", 0o644)?;
    knobs.checkpoint("control-plane")?;
    let server_task = tokio::spawn(api::serve(api_config(&root, storage)?));
    let admin = Api::from_kubeconfig(&read_file(&root.path(KUBECONFIG))?, Duration::from_secs(10))?;
    kubeadm::wait_ready(&admin, kubeadm::API_CHECK_PATIENCE).await?;
    kubeadm::store_token(
        &admin,
        &bearer_for(&password),
        Some(0),
        Some("k3s-standin server token"),
    )
    .await?;
    let embedded = matches!(store, Datastore::Etcd);
    if embedded && cfg.cluster_init && cfg.server.is_none() {
        upload_bundle(&admin, &password, &t).await?;
    }
    kubeadm::register_node_with(&admin, &name, Some(&addr), true, cfg.embedded_cni()).await?;
    if embedded {
        // Announces this etcd member to joining servers (and to muster's compensation).
        kubeadm::mirror_pods(&admin, &name, &addr, 6443, true).await?;
    }
    println!("level=info msg=\"k3s is up and running\" (muster stand-in; node {name})");
    crate::notify_ready();
    // Foreground until SIGTERM/SIGINT, like `k3s server`.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        r = server_task => { eprintln!("level=error msg=\"apiserver stopped: {r:?}\""); }
    }
    if embedded {
        daemon::stop(&root, ETCD_DAEMON, Duration::from_secs(5))?;
    }
    Ok(())
}

/// Starts (restart, join or cluster-init) the embedded etcd member; returns the token's
/// password.
async fn embedded_etcd(
    root: &NodeRoot,
    knobs: &Knobs,
    cfg: &K3sConfig,
    name: &str,
    addr: &str,
) -> Result<String> {
    let t = tls(root);
    let password;
    if ready_marker(root).exists() {
        // Restart of a server that has run before: keep the data, rejoin with it.
        password = saved_password(root)?;
        issue_server_certs(root, name, addr, &cfg.tls_san, true)?;
        start_etcd(
            root,
            name,
            addr,
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
        let files = open_bundle(&r.body["stringData"], &password, SHARED)?;
        write_shared(&t, SHARED, &files)?;
        issue_server_certs(root, name, addr, &cfg.tls_san, true)?;
        knobs.checkpoint("member-add")?;
        let endpoints = boot.announced_etcd_endpoints().await?;
        anyhow::ensure!(!endpoints.is_empty(), "no etcd members announced by {url}");
        // As k3s does: the new member joins as a learner (it does not vote, so a slow start
        // cannot cost the cluster its quorum; a plain add wedged etcd under TCG: two voters,
        // one started) and is promoted once it has caught up.
        let initial = etcd::member_add(
            &endpoints,
            &client_tls(root),
            name,
            addr,
            true,
            Duration::from_secs(30),
        )?;
        knobs.checkpoint("after-member-add")?;
        start_etcd(root, name, addr, &initial, "existing")?;
        etcd::member_promote(&endpoints, &client_tls(root), addr, PROMOTE_PATIENCE)?;
    } else {
        if !cfg.cluster_init {
            bail!(
                "muster stand-in: `cluster-init: true` (embedded etcd), `server:` joins or `datastore-endpoint:` (external SQL) are supported"
            );
        }
        let existing = t.join("server-ca.crt").exists();
        if !existing {
            pki::write_pair(&t, "server-ca", &new_server_ca()?)?;
            pki::write_pair(
                &t.join("etcd"),
                "server-ca",
                &pki::new_ca("etcd-server-ca")?,
            )?;
        }
        issue_server_certs(root, name, addr, &cfg.tls_san, true)?;
        password = first_password(cfg);
        knobs.checkpoint("etcd")?;
        start_etcd(
            root,
            name,
            addr,
            &format!("{name}=https://{addr}:2380"),
            "new",
        )?;
    }
    Ok(password)
}

fn new_server_ca() -> Result<CertKey> {
    pki::new_ca(&format!("k3s-server-ca@{}", clock::now_unix()))
}

/// The password of the token this server saved on its first start.
fn saved_password(root: &NodeRoot) -> Result<String> {
    let saved = read_file(&root.path(SERVER_DIR).join("token"))?;
    Ok(split_token(saved.trim()).1)
}

/// The first server's password: the configured token's, or a new random one.
fn first_password(cfg: &K3sConfig) -> String {
    match &cfg.token {
        Some(tok) => split_token(tok).1,
        None => hex::encode(rand::random::<[u8; 16]>()),
    }
}

/// Connects to the SQL datastore and creates or reads the cluster's bootstrap data (the
/// server CA) there; returns the token's password and the store.
async fn sql_datastore(
    root: &NodeRoot,
    knobs: &Knobs,
    cfg: &K3sConfig,
    endpoint: &str,
) -> Result<(String, SqlStore)> {
    // The endpoint holds the password: errors name what is wrong, never the endpoint.
    let dsn = model::dsn::Dsn::parse(endpoint).context("datastore-endpoint")?;
    knobs.checkpoint("datastore")?;
    let store = SqlStore::connect(&dsn, datastore_patience()).await?;
    let (hash, password) = if ready_marker(root).exists() {
        (None, saved_password(root)?)
    } else {
        match &cfg.token {
            Some(tok) => split_token(tok),
            None => (None, first_password(cfg)),
        }
    };
    let t = tls(root);
    let outcome = sql_bootstrap(&store, &password, &t).await?;
    println!(
        "level=info msg=\"bootstrap data {outcome} (datastore {})\"",
        dsn.address()
    );
    if let Some(h) = hash {
        let got = hex::encode(Sha256::digest(
            read_file(&t.join("server-ca.crt"))?.as_bytes(),
        ));
        if !got.eq_ignore_ascii_case(&h) {
            bail!("token CA hash does not match the Cluster CA certificate hash: {got} != {h}");
        }
    }
    Ok((password, store))
}

/// How long a server waits for its datastore before its fatal exit: 60 s, or
/// `MUSTER_STANDIN_DATASTORE_PATIENCE_MS` (tests of an unreachable datastore; real k3s
/// exits at its first refused connection).
fn datastore_patience() -> Duration {
    std::env::var("MUSTER_STANDIN_DATASTORE_PATIENCE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(60), Duration::from_millis)
}

/// Reads the bootstrap data from the datastore, or creates it (a new server CA) when there
/// is none. Only one create can win: the others read the winner's.
async fn sql_bootstrap(store: &SqlStore, password: &str, t: &Path) -> Result<&'static str> {
    let read = |bytes: Vec<u8>| -> Result<()> {
        let v: Value = serde_json::from_slice(&bytes).context("bootstrap data is not JSON")?;
        let files = open_bundle(&v, password, SQL_SHARED)
            .context("reading the datastore's bootstrap data")?;
        write_shared(t, SQL_SHARED, &files)
    };
    if let Some(bytes) = store.get(BOOTSTRAP_KEY).await? {
        read(bytes)?;
        return Ok("read");
    }
    let ca = new_server_ca()?;
    let files = vec![
        ("server-ca.crt".to_string(), ca.cert_pem.into_bytes()),
        ("server-ca.key".to_string(), ca.key_pem.into_bytes()),
    ];
    let sealed = Value::Object(seal_bundle(password, &files)?);
    if store
        .create(BOOTSTRAP_KEY, &serde_json::to_vec(&sealed)?)
        .await?
    {
        write_shared(t, SQL_SHARED, &files)?;
        return Ok("created");
    }
    let bytes = store
        .get(BOOTSTRAP_KEY)
        .await?
        .context("the bootstrap data another server created vanished")?;
    read(bytes)?;
    Ok("read (another server created it first)")
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

/// `name → base64(nonce ‖ ChaCha20-Poly1305(file))` under a key derived from the token's
/// password (k3s seals its bootstrap data with a key derived from the token too).
fn seal_bundle(password: &str, files: &[(String, Vec<u8>)]) -> Result<Map<String, Value>> {
    use chacha20poly1305::aead::Aead;
    let c = kubeadm::cipher(&bundle_key(password))?;
    let mut data = Map::new();
    for (name, plain) in files {
        let nonce: [u8; 12] = rand::random();
        let ct = c
            .encrypt(&nonce.into(), plain.as_slice())
            .map_err(|_| anyhow::anyhow!("encrypting {name}"))?;
        let mut blob = nonce.to_vec();
        blob.extend(ct);
        data.insert(name.clone(), Value::String(B64.encode(blob)));
    }
    Ok(data)
}

/// The files of `shared` out of a sealed bundle.
fn open_bundle(
    data: &Value,
    password: &str,
    shared: &[(&str, &str)],
) -> Result<Vec<(String, Vec<u8>)>> {
    use chacha20poly1305::aead::Aead;
    let c = kubeadm::cipher(&bundle_key(password))?;
    let mut out = Vec::new();
    for (name, _) in shared {
        let blob = B64.decode(
            data[*name]
                .as_str()
                .with_context(|| format!("bootstrap data lacks {name}"))?,
        )?;
        anyhow::ensure!(blob.len() > 12, "truncated {name}");
        let (nonce, ct) = blob.split_at(12);
        let plain = c.decrypt(nonce.into(), ct).map_err(|_| {
            anyhow::anyhow!("bootstrap data cannot be decrypted with the token (wrong token?)")
        })?;
        out.push((name.to_string(), plain));
    }
    Ok(out)
}

fn write_shared(t: &Path, shared: &[(&str, &str)], files: &[(String, Vec<u8>)]) -> Result<()> {
    for (name, bytes) in files {
        let rel = shared
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, rel)| *rel)
            .with_context(|| format!("unexpected bootstrap file {name}"))?;
        write_file(&t.join(rel), bytes, 0o600)?;
    }
    Ok(())
}

async fn upload_bundle(api: &Api, password: &str, t: &Path) -> Result<()> {
    let mut files = Vec::new();
    for (name, rel) in SHARED {
        let p = t.join(rel);
        files.push((
            name.to_string(),
            std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
        ));
    }
    let data = seal_bundle(password, &files)?;
    api.must_put("/api/v1/namespaces/kube-system/secrets/k3s-bootstrap", &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "k3s-bootstrap"}, "stringData": data})).await
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
    refuse_skew(&boot).await?;
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
    // Where k3s's agent keeps the kubelet's client certificate and the server CA.
    let agent_dir = root.path(AGENT_DIR);
    write_file(&agent_dir.join("server-ca.crt"), &ca_pem, 0o644)?;
    write_file(&agent_dir.join("client-kubelet.crt"), &cert, 0o644)?;
    write_file(&agent_dir.join("client-kubelet.key"), &key_pem, 0o600)?;
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
    write_file(&agent_dir.join("kubelet.kubeconfig"), &kc, 0o600)?;
    let api = Api::from_kubeconfig(&kc, Duration::from_secs(10))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    println!("level=info msg=\"k3s agent is up and running\" (muster stand-in; node {name})");
    crate::notify_ready();
    let mut registered = false;
    loop {
        // The stand-in kubelet registers the Node once (again if it is gone), then
        // heartbeats its status every 10 s as a kubelet does: its spec (a cordon) is the
        // API's, never reset here.
        let beat = if registered {
            heartbeat(&api, &name).await
        } else {
            kubeadm::register_node_with(
                &api,
                &name,
                cfg.node_ip.as_deref(),
                false,
                // The flannel setting is the servers' (agents learn it from them): a
                // server's annotated Node stands for the whole cluster (`api::node_ready`).
                false,
            )
            .await
        };
        registered = beat.is_ok();
        if let Err(e) = beat {
            eprintln!("level=warning msg=\"node heartbeat: {e:#}\"");
        }
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

/// The kubelet's status update: Ready now, at this binary's version (a merge patch of
/// status only).
async fn heartbeat(api: &Api, name: &str) -> Result<()> {
    let r = api
        .merge_patch(
            &format!("/api/v1/nodes/{name}"),
            &json!({"status": {"nodeInfo": {"kubeletVersion": release()},
                     "conditions": [{ "type": "Ready", "status": "True", "reason": "KubeletReady",
                                      "message": "muster stand-in kubelet (no pods run)",
                                      "lastHeartbeatTime": clock::rfc3339(clock::now_unix()) }]}}),
        )
        .await?;
    anyhow::ensure!(r.ok(), "PATCH node {name}: {} {}", r.status, r.message());
    Ok(())
}

/// An agent (its kubelet) newer by minor than the server it joins is refused, as the
/// version skew policy forbids (the kubelet must not be newer than kube-apiserver): the
/// servers are upgraded first.
async fn refuse_skew(api: &Api) -> Result<()> {
    let ours = release();
    let r = api.get("/version").await?;
    anyhow::ensure!(r.ok(), "GET /version: {} {}", r.status, r.message());
    let server = r.body["gitVersion"].as_str().unwrap_or("").to_string();
    if let Some(cause) = skew(&ours, &server) {
        bail!("{cause}");
    }
    Ok(())
}

/// Why an agent at `agent` may not join a server at `server` (`None`: it may).
pub fn skew(agent: &str, server: &str) -> Option<String> {
    use crate::kubeadm::upgrade_policy::parse;
    let (a, s) = (parse(agent)?, parse(server)?);
    ((a.0, a.1) > (s.0, s.1)).then(|| {
        format!(
            "k3s agent {agent} is newer than the server {server}: the version skew policy forbids a kubelet newer than kube-apiserver (upgrade the servers first)"
        )
    })
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
    fn an_agent_newer_than_its_server_is_refused() {
        assert_eq!(skew("v1.31.6+k3s1", "v1.31.6+k3s1"), None);
        assert_eq!(skew("v1.31.6+k3s1", "v1.32.2+k3s1"), None);
        let e = skew("v1.32.2+k3s1", "v1.31.6+k3s1").unwrap();
        assert!(e.contains("newer than the server v1.31.6+k3s1"), "{e}");
    }

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

    #[test]
    fn dropins_merge_in_name_order_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let root = NodeRoot::new(dir.path());
        let w = |rel: &str, text: &str| write_file(&root.path(rel), text, 0o600).unwrap();
        w(
            K3S_CONFIG,
            "token: t1\nnode-ip: 10.0.0.1\ntls-san: [a]\ncluster-init: true\n",
        );
        w(
            "etc/rancher/k3s/config.yaml.d/50-datastore.yaml",
            "datastore-endpoint: \"mysql://u:p@tcp(10.0.0.9:3306)/k3s\"\ntls-san+: [b]\n",
        );
        w(
            "etc/rancher/k3s/config.yaml.d/60-later.yml",
            "node-ip: 10.0.0.2\ncluster-init: false\n",
        );
        w(
            "etc/rancher/k3s/config.yaml.d/70-ignored.txt",
            "token: nope\n",
        );
        let c = load_config(&root, &Flags::parse(&[])).unwrap();
        assert_eq!(
            c.datastore_endpoint.as_deref(),
            Some("mysql://u:p@tcp(10.0.0.9:3306)/k3s")
        );
        assert_eq!(c.node_ip.as_deref(), Some("10.0.0.2"));
        assert_eq!(c.token.as_deref(), Some("t1"));
        assert_eq!(c.tls_san, vec!["a".to_string(), "b".to_string()]);
        assert!(!c.cluster_init);
        let args: Vec<String> = [
            "server",
            "--token",
            "t2",
            "--datastore-endpoint",
            "mysql://x@tcp(h:1)/d",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let c = load_config(&root, &Flags::parse(&args)).unwrap();
        assert_eq!(c.token.as_deref(), Some("t2"));
        assert_eq!(
            c.datastore_endpoint.as_deref(),
            Some("mysql://x@tcp(h:1)/d")
        );
        // Only drop-ins, no config.yaml: still read.
        std::fs::remove_file(root.path(K3S_CONFIG)).unwrap();
        let c = load_config(&root, &Flags::parse(&[])).unwrap();
        assert!(c.datastore_endpoint.is_some() && c.token.is_none());
    }

    #[test]
    fn bundles_open_only_with_the_same_token() {
        let files = vec![("server-ca.crt".to_string(), b"CERT".to_vec())];
        let sealed = Value::Object(seal_bundle("pw", &files).unwrap());
        let shared = &SQL_SHARED[..1];
        assert_eq!(open_bundle(&sealed, "pw", shared).unwrap(), files);
        let err = open_bundle(&sealed, "other", shared).unwrap_err();
        assert!(format!("{err:#}").contains("wrong token"), "{err:#}");
    }
}
