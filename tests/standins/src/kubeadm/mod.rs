//! `kubeadm-standin`: the kubeadm command lines muster's agent uses, doing real work
//! underneath (real certificates, a real etcd member, a TLS API endpoint). NOT kubeadm.

pub mod config;
pub mod external;
pub mod upgrade_policy;

use crate::api::EXPIRES_ANNOTATION;
use crate::client::{Api, Trust, http_client};
use crate::daemon::{self, DaemonSpec};
use crate::etcd::{self, ClientTls, MemberTls};
use crate::knobs::Knobs;
use crate::pki::{self, CertKey, Usage};
use crate::{clock, node_root, read_file, write_file};
use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use config::ExternalEtcd;
use model::node_files::{KUBE_MANIFESTS, NodeRoot};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const PKI: &str = "etc/kubernetes/pki";
pub const KUBELET_DIR: &str = "var/lib/kubelet";
/// The `kubeadm-certs` Secret lives 2 h, like kubeadm's.
pub const CERTS_TTL_SECS: i64 = 2 * 3600;
/// How long a learner may take to catch up before `member promote` gives up: kubeadm's
/// `timeouts.etcdAPICall` default (v1beta4), 2 minutes. A slow machine (TCG) needs it.
const PROMOTE_PATIENCE: Duration = Duration::from_secs(120);
const DEFAULT_TOKEN_TTL: i64 = 24 * 3600;

/// Command-line flags, parsed leniently (`--a=b`, `--a b`, `-v=5`, bare flags).
#[derive(Debug, Default)]
pub struct Flags {
    pub positional: Vec<String>,
    values: Vec<(String, String)>,
    bools: Vec<String>,
}

const BOOL_FLAGS: &[&str] = &[
    "upload-certs",
    "control-plane",
    "print-join-command",
    "force",
    "f",
    "discovery-token-unsafe-skip-ca-verification",
    "dry-run",
    "skip-token-print",
    "skip-certificate-key-print",
    "cleanup-tmp-dir",
    "help",
    "h",
];

impl Flags {
    pub fn parse(args: &[String]) -> Flags {
        let mut f = Flags::default();
        let mut i = 0;
        while i < args.len() {
            let a = &args[i];
            if let Some(stripped) = a.strip_prefix("--").or_else(|| a.strip_prefix('-'))
                && !stripped.is_empty()
                && !a.chars().nth(1).is_some_and(|c| c.is_ascii_digit())
            {
                if let Some((k, v)) = stripped.split_once('=') {
                    f.values.push((k.to_string(), v.to_string()));
                } else if BOOL_FLAGS.contains(&stripped) {
                    f.bools.push(stripped.to_string());
                } else if i + 1 < args.len() {
                    f.values.push((stripped.to_string(), args[i + 1].clone()));
                    i += 1;
                } else {
                    f.bools.push(stripped.to_string());
                }
            } else {
                f.positional.push(a.clone());
            }
            i += 1;
        }
        f
    }
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn values(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(',').map(str::to_string).collect::<Vec<_>>())
            .collect()
    }
    pub fn flag(&self, name: &str) -> bool {
        self.bools.iter().any(|b| b == name)
            || self
                .value(name)
                .is_some_and(|v| matches!(v, "true" | "1" | "yes"))
    }
}

/// Runs `kubeadm ARGS...`; returns the exit code.
pub async fn main(args: Vec<String>) -> i32 {
    let result = dispatch(args).await;
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e:#}");
            eprintln!("To see the stack trace of this error execute with --v=5 or higher");
            1
        }
    }
}

/// `<state>/commands.log`: one line per kubeadm command this node ran (subcommand words
/// only, never flags: they carry tokens and keys; `version` queries are left out) with its
/// outcome, so a test can tell which node ran `kubeadm init` and how often a node joined or
/// reset.
pub const COMMAND_LOG: &str = "commands.log";

fn record(args: &[String], outcome: &str) {
    use std::io::Write;
    let flags = Flags::parse(args);
    let words: Vec<&str> = flags
        .positional
        .iter()
        .map(String::as_str)
        .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .take(3)
        .collect();
    let line = format!(
        "{} {} {outcome}\n",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
        words.join(" ")
    );
    let Ok(dir) = crate::state_dir(&node_root()) else {
        return;
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(COMMAND_LOG))
    {
        let _ = f.write_all(line.as_bytes());
    }
}

async fn dispatch(args: Vec<String>) -> Result<()> {
    // `version` changes nothing (the agent's preflight asks it on every run): not logged.
    let logged = Flags::parse(&args).positional.first().map(String::as_str) != Some("version");
    if logged {
        record(&args, "started");
    }
    let r = dispatch_inner(&args).await;
    if logged {
        record(&args, if r.is_ok() { "ok" } else { "failed" });
    }
    r
}

async fn dispatch_inner(args: &[String]) -> Result<()> {
    let flags = Flags::parse(args);
    let pos: Vec<&str> = flags.positional.iter().map(String::as_str).collect();
    match pos.as_slice() {
        ["init", "phase", "upload-certs", ..] => upload_certs_phase(&flags).await,
        ["init", ..] => init(&flags).await,
        ["join", ..] => join(&flags).await,
        ["reset", ..] => reset(&flags),
        ["token", "create", ..] => token_create(&flags).await,
        ["upgrade", "plan", ..] => upgrade_command(None, false).await,
        ["upgrade", "apply", target, ..] => upgrade_command(Some(target), false).await,
        ["upgrade", "node", ..] => upgrade_command(None, true).await,
        ["version", ..] => {
            let v = version();
            if flags.value("o") == Some("short") || flags.value("output") == Some("short") {
                println!("{v}");
            } else {
                println!(
                    "kubeadm version: &version.Info{{Major:\"1\", Minor:\"31\", GitVersion:\"{v}\", GitCommit:\"muster-standin\", GitTreeState:\"clean\", GoVersion:\"n/a\", Compiler:\"rustc\", Platform:\"linux/amd64\"}}"
                );
            }
            Ok(())
        }
        ["kubelet-sync", ..] => {
            kubelet_sync()?;
            if flags.flag("report-node") {
                kubelet_report_node().await?;
            }
            Ok(())
        }
        _ => bail!(
            "kubeadm-standin (muster stand-in for kubeadm): unsupported command {:?}; supported: init, init phase upload-certs, join, reset, token create, upgrade plan|apply|node, version, kubelet-sync",
            args
        ),
    }
}

fn version() -> String {
    crate::release("v1.31.0")
}

fn phase<T>(name: &str, r: Result<T>) -> Result<T> {
    r.with_context(|| format!("error execution phase {name}"))
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .unwrap_or_else(|_| "localhost".into())
}

fn pki_dir(root: &NodeRoot) -> PathBuf {
    root.path(PKI)
}

fn kube_dir(root: &NodeRoot) -> PathBuf {
    root.path("etc/kubernetes")
}

fn random_token() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut pick = |n: usize| -> String {
        (0..n)
            .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
            .collect()
    };
    let id = pick(6);
    let secret = pick(16);
    format!("{id}.{secret}")
}

fn random_key() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

pub(crate) fn split_host_port(endpoint: &str) -> (String, u16) {
    match endpoint.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (
            h.trim_matches(['[', ']']).to_string(),
            p.parse().unwrap_or(6443),
        ),
        _ => (endpoint.to_string(), 6443),
    }
}

// ---------------------------------------------------------------- preflight

fn dir_nonempty(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

fn port_in_use(addr: &str, port: u16) -> bool {
    std::net::TcpListener::bind((addr, port)).is_err()
}

fn run_checks(checks: Vec<(String, String)>, ignore: &[String]) -> Result<()> {
    let ignore_all = ignore.iter().any(|i| i.eq_ignore_ascii_case("all"));
    let mut fatal = Vec::new();
    for (name, msg) in checks {
        if ignore_all || ignore.iter().any(|i| i.eq_ignore_ascii_case(&name)) {
            println!("\t[WARNING {name}]: {msg}");
        } else {
            fatal.push(format!("\t[ERROR {name}]: {msg}"));
        }
    }
    if !fatal.is_empty() {
        bail!(
            "[preflight] Some fatal errors occurred:\n{}\n[preflight] If you know what you are doing, you can make a check non-fatal with `--ignore-preflight-errors=...`",
            fatal.join("\n")
        );
    }
    Ok(())
}

fn control_plane_checks(
    root: &NodeRoot,
    addr: &str,
    port: u16,
    data_dir: &str,
    external_etcd: bool,
) -> Vec<(String, String)> {
    let mut checks = Vec::new();
    if port_in_use("0.0.0.0", port) {
        checks.push((format!("Port-{port}"), format!("Port {port} is in use")));
    }
    // With an external etcd there is no local member: no etcd ports, manifest or data.
    let local_etcd: &[u16] = if external_etcd { &[] } else { &[2379, 2380] };
    for &p in local_etcd {
        if port_in_use(addr, p) {
            checks.push((format!("Port-{p}"), format!("Port {p} is in use")));
        }
    }
    let manifests: &[&str] = if external_etcd {
        &[
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
        ]
    } else {
        &[
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "etcd",
        ]
    };
    for m in manifests {
        let f = root.path(KUBE_MANIFESTS).join(format!("{m}.yaml"));
        if f.exists() {
            checks.push((
                format!("FileAvailable--etc-kubernetes-manifests-{m}.yaml"),
                format!("/etc/kubernetes/manifests/{m}.yaml already exists"),
            ));
        }
    }
    let data = root.path(data_dir);
    if !external_etcd && dir_nonempty(&data) {
        let dashed = data_dir.trim_matches('/').replace('/', "-");
        checks.push((
            format!("DirAvailable--{dashed}"),
            format!("{data_dir} is not empty"),
        ));
    }
    checks
}

fn join_checks(root: &NodeRoot) -> Vec<(String, String)> {
    let mut checks = Vec::new();
    if dir_nonempty(&root.path(KUBE_MANIFESTS)) {
        checks.push((
            "DirAvailable--etc-kubernetes-manifests".to_string(),
            "/etc/kubernetes/manifests is not empty".to_string(),
        ));
    }
    for f in ["kubelet.conf", "bootstrap-kubelet.conf", "pki/ca.crt"] {
        if kube_dir(root).join(f).exists() {
            checks.push((
                format!("FileAvailable--etc-kubernetes-{}", f.replace('/', "-")),
                format!("/etc/kubernetes/{f} already exists"),
            ));
        }
    }
    checks
}

// ---------------------------------------------------------------- certificates

/// The CAs shared by every control plane.
struct Cas {
    ca: CertKey,
    /// `None` with an external etcd (its CA is the user's; kubeadm makes none).
    etcd: Option<CertKey>,
    front_proxy: CertKey,
}

fn new_cas(pki: &Path, external_etcd: bool) -> Result<Cas> {
    let cas = Cas {
        ca: pki::new_ca("kubernetes")?,
        etcd: if external_etcd {
            None
        } else {
            Some(pki::new_ca("etcd-ca")?)
        },
        front_proxy: pki::new_ca("front-proxy-ca")?,
    };
    pki::write_pair(pki, "ca", &cas.ca)?;
    if let Some(etcd) = &cas.etcd {
        pki::write_pair(&pki.join("etcd"), "ca", etcd)?;
    } else {
        println!("[certs] External etcd mode: Skipping etcd/ca certificate authority generation");
    }
    pki::write_pair(pki, "front-proxy-ca", &cas.front_proxy)?;
    let sa = rcgen::KeyPair::generate()?;
    write_file(&pki.join("sa.key"), sa.serialize_pem(), 0o600)?;
    write_file(&pki.join("sa.pub"), sa.public_key_pem(), 0o644)?;
    Ok(cas)
}

fn read_cas(pki: &Path, external_etcd: bool) -> Result<Cas> {
    Ok(Cas {
        ca: pki::read_pair(pki, "ca")?,
        etcd: if external_etcd {
            None
        } else {
            Some(pki::read_pair(&pki.join("etcd"), "ca")?)
        },
        front_proxy: pki::read_pair(pki, "front-proxy-ca")?,
    })
}

fn apiserver_sans(
    name: &str,
    addr: &str,
    endpoint_host: Option<&str>,
    extra: &[String],
) -> Vec<String> {
    let mut sans: Vec<String> = vec![
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
        name.into(),
        "10.96.0.1".into(),
        addr.into(),
        "127.0.0.1".into(),
    ];
    if let Some(h) = endpoint_host {
        sans.push(h.to_string());
    }
    sans.extend(extra.iter().cloned());
    let mut seen = std::collections::BTreeSet::new();
    sans.retain(|s| seen.insert(s.clone()));
    sans
}

/// This node's own serving and client certificates, signed by the shared CAs.
fn issue_node_certs(
    pki: &Path,
    cas: &Cas,
    name: &str,
    addr: &str,
    sans: Vec<String>,
) -> Result<()> {
    println!("[certs] Generating \"apiserver\" certificate and key");
    println!("[certs] apiserver serving cert is signed for DNS names and IPs {sans:?}");
    pki::write_pair(
        pki,
        "apiserver",
        &pki::issue(&cas.ca, "kube-apiserver", &[], &sans, Usage::Server)?,
    )?;
    pki::write_pair(
        pki,
        "apiserver-kubelet-client",
        &pki::issue(
            &cas.ca,
            "kube-apiserver-kubelet-client",
            &["kubeadm:cluster-admins"],
            &[],
            Usage::Client,
        )?,
    )?;
    pki::write_pair(
        pki,
        "front-proxy-client",
        &pki::issue(
            &cas.front_proxy,
            "front-proxy-client",
            &[],
            &[],
            Usage::Client,
        )?,
    )?;
    let Some(etcd_ca) = &cas.etcd else {
        println!(
            "[certs] External etcd mode: Skipping etcd/server, etcd/peer, etcd/healthcheck-client and apiserver-etcd-client certificates"
        );
        return Ok(());
    };
    let etcd_sans: Vec<String> = vec![
        name.into(),
        "localhost".into(),
        addr.into(),
        "127.0.0.1".into(),
        "::1".into(),
    ];
    let etcd_dir = pki.join("etcd");
    println!("[certs] Generating \"etcd/server\" certificate and key");
    pki::write_pair(
        &etcd_dir,
        "server",
        &pki::issue(etcd_ca, name, &[], &etcd_sans, Usage::ServerAndClient)?,
    )?;
    println!("[certs] Generating \"etcd/peer\" certificate and key");
    pki::write_pair(
        &etcd_dir,
        "peer",
        &pki::issue(etcd_ca, name, &[], &etcd_sans, Usage::ServerAndClient)?,
    )?;
    pki::write_pair(
        &etcd_dir,
        "healthcheck-client",
        &pki::issue(
            etcd_ca,
            "kube-etcd-healthcheck-client",
            &[],
            &[],
            Usage::Client,
        )?,
    )?;
    pki::write_pair(
        pki,
        "apiserver-etcd-client",
        &pki::issue(
            etcd_ca,
            "kube-apiserver-etcd-client",
            &[],
            &[],
            Usage::Client,
        )?,
    )?;
    Ok(())
}

fn write_kubeconfigs(
    root: &NodeRoot,
    cas: &Cas,
    name: &str,
    cluster: &str,
    server: &str,
    local: &str,
) -> Result<()> {
    let dir = kube_dir(root);
    let confs: [(&str, &str, &[&str], &str); 5] = [
        (
            "admin.conf",
            "kubernetes-admin",
            &["kubeadm:cluster-admins"],
            server,
        ),
        (
            "super-admin.conf",
            "kubernetes-super-admin",
            &["system:masters"],
            server,
        ),
        (
            "controller-manager.conf",
            "system:kube-controller-manager",
            &[],
            local,
        ),
        ("scheduler.conf", "system:kube-scheduler", &[], local),
        (
            "kubelet.conf",
            &format!("system:node:{name}"),
            &["system:nodes"],
            server,
        ),
    ];
    for (file, cn, orgs, srv) in confs {
        println!("[kubeconfig] Writing \"{file}\" kubeconfig file");
        let client = pki::issue(&cas.ca, cn, orgs, &[], Usage::Client)?;
        write_file(
            &dir.join(file),
            pki::kubeconfig(cluster, srv, &cas.ca.cert_pem, cn, &client),
            0o600,
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------- daemons

fn etcd_tls(root: &NodeRoot) -> MemberTls {
    let e = pki_dir(root).join("etcd");
    MemberTls {
        ca: e.join("ca.crt"),
        server_cert: e.join("server.crt"),
        server_key: e.join("server.key"),
        peer_cert: e.join("peer.crt"),
        peer_key: e.join("peer.key"),
    }
}

fn etcd_client_tls(root: &NodeRoot) -> ClientTls {
    let p = pki_dir(root);
    ClientTls {
        ca: p.join("etcd/ca.crt"),
        cert: p.join("apiserver-etcd-client.crt"),
        key: p.join("apiserver-etcd-client.key"),
    }
}

fn start_etcd(
    root: &NodeRoot,
    name: &str,
    addr: &str,
    data_dir: &str,
    initial_cluster: &str,
    state: &str,
) -> Result<()> {
    let data = root.path(data_dir);
    // A failed start leaves DATA/member behind (lab-netns.md): start from an empty dir.
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    let spec = etcd::member_spec(name, addr, &data, &etcd_tls(root), initial_cluster, state)?;
    write_file(
        &root.path(KUBE_MANIFESTS).join("etcd.yaml"),
        etcd::manifest(&spec, "etcd"),
        0o600,
    )?;
    println!("[etcd] Creating static Pod manifest for local etcd in \"/etc/kubernetes/manifests\"");
    daemon::spawn(root, &spec)?;
    Ok(())
}

fn apiserver_spec(root: &NodeRoot, port: u16, ext: Option<&ExternalEtcd>) -> DaemonSpec {
    let p = pki_dir(root);
    let s = |x: &str| p.join(x).display().to_string();
    let etcd_args = match ext {
        Some(e) => external::apiserver_etcd_args(root, e),
        None => [
            "--etcd-endpoint=https://127.0.0.1:2379".into(),
            format!("--etcd-cafile={}", s("etcd/ca.crt")),
            format!("--etcd-certfile={}", s("apiserver-etcd-client.crt")),
            format!("--etcd-keyfile={}", s("apiserver-etcd-client.key")),
        ],
    };
    DaemonSpec {
        name: crate::api::DAEMON.to_string(),
        program: crate::sibling_binary(crate::APISERVER_STANDIN),
        args: vec![
            "serve".into(),
            // Like kube-apiserver's default --bind-address=0.0.0.0 (reachable on the VIP too).
            format!("--bind=0.0.0.0:{port}"),
            format!("--cert={}", s("apiserver.crt")),
            format!("--key={}", s("apiserver.key")),
            format!("--client-ca={}", s("ca.crt")),
            format!("--client-ca-key={}", s("ca.key")),
        ]
        .into_iter()
        .chain(etcd_args)
        .collect(),
        env: vec![(
            crate::NODE_ROOT_ENV.to_string(),
            root.root().display().to_string(),
        )],
    }
}

fn start_apiserver(
    root: &NodeRoot,
    addr: &str,
    port: u16,
    ext: Option<&ExternalEtcd>,
) -> Result<()> {
    let _ = addr;
    let spec = apiserver_spec(root, port, ext);
    let manifests = root.path(KUBE_MANIFESTS);
    write_file(
        &manifests.join("kube-apiserver.yaml"),
        etcd::manifest(&spec, "kube-apiserver"),
        0o600,
    )?;
    for inert in ["kube-controller-manager", "kube-scheduler"] {
        write_file(
            &manifests.join(format!("{inert}.yaml")),
            format!(
                "# muster stand-in: {inert} is not run (no pods in the stand-in world)\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {inert}\n  namespace: kube-system\n"
            ),
            0o600,
        )?;
    }
    println!("[control-plane] Creating static Pod manifest for \"kube-apiserver\"");
    daemon::spawn(root, &spec)?;
    Ok(())
}

/// The stand-in kubelet: starts every static-pod daemon whose manifest is present and whose
/// process is not running (`kubeadm-standin kubelet-sync`).
pub fn kubelet_sync() -> Result<()> {
    let root = node_root();
    for (name, manifest) in [
        ("etcd", "etcd.yaml"),
        ("kube-apiserver", "kube-apiserver.yaml"),
    ] {
        if root.path(KUBE_MANIFESTS).join(manifest).exists()
            && let Some(pid) = daemon::respawn(&root, name)?
        {
            println!("[kubelet-standin] started {name} (pid {pid})");
        }
    }
    Ok(())
}

/// How long kubeadm's `api-check` waits for a healthy API server (its
/// `controlPlaneComponentHealthCheck` default, printed as "This can take up to 4m0s").
/// Under TCG a fresh etcd member has needed more than a minute.
/// The restarted kubelet stand-in reports its version on its Node
/// (`status.nodeInfo.kubeletVersion`: this stand-in's [`version`], the node's installed
/// release), as a real kubelet does when it starts. A kubelet newer (by minor) than the
/// API server is refused, as the version-skew policy forbids it: the Node keeps its old
/// version and the command fails (`kubeadm-standin kubelet-sync --report-node`).
async fn kubelet_report_node() -> Result<()> {
    let root = node_root();
    let text = read_file(&kube_dir(&root).join("kubelet.conf"))
        .context("[kubelet-standin] no kubelet.conf: this node never joined")?;
    let api = Api::from_kubeconfig(&text, Duration::from_secs(10))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let server = loop {
        match api.get("/version").await {
            Ok(r) if r.ok() => break r.body["gitVersion"].as_str().unwrap_or("").to_string(),
            other if Instant::now() >= deadline => {
                bail!("[kubelet-standin] the API server did not answer /version: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    let ours = version();
    let (k, a) = (upgrade_policy::parse(&ours), upgrade_policy::parse(&server));
    if let (Some(k), Some(a)) = (k, a)
        && (k.0, k.1) > (a.0, a.1)
    {
        bail!(
            "[kubelet-standin] kubelet {ours} is newer than the API server {server}: the version skew policy forbids it (upgrade the control plane first)"
        );
    }
    let name = hostname();
    let r = api
        .merge_patch(
            &format!("/api/v1/nodes/{name}"),
            &json!({"status": {"nodeInfo": {"kubeletVersion": ours},
                     "conditions": [{ "type": "Ready", "status": "True", "reason": "KubeletReady",
                                      "message": "muster stand-in kubelet (no pods run)",
                                      "lastHeartbeatTime": clock::rfc3339(clock::now_unix()) }]}}),
        )
        .await?;
    anyhow::ensure!(r.ok(), "PATCH node {name}: {} {}", r.status, r.message());
    println!("[kubelet-standin] node {name} reports kubelet {ours}");
    Ok(())
}

pub(crate) const API_CHECK_PATIENCE: Duration = Duration::from_secs(240);

pub(crate) async fn wait_ready(api: &Api, patience: Duration) -> Result<()> {
    let deadline = Instant::now() + patience;
    let mut last;
    loop {
        match api.get("/readyz").await {
            Ok(r) if r.ok() => return Ok(()),
            Ok(r) => last = format!("{} {}", r.status, r.message()),
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() >= deadline {
            bail!(
                "the API server at {} did not become ready within {:?}: {last}",
                api.base,
                patience
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn admin_api(root: &NodeRoot, timeout: Duration) -> Result<Api> {
    let text = read_file(&kube_dir(root).join("admin.conf")).context(
        "couldn't read /etc/kubernetes/admin.conf: is this a control-plane node (init or join --control-plane)?",
    )?;
    Api::from_kubeconfig(&text, timeout)
}

// ---------------------------------------------------------------- objects

fn expiring(secs_from_now: Option<i64>) -> Value {
    match secs_from_now {
        Some(ttl) if ttl > 0 => {
            json!({ EXPIRES_ANNOTATION: (clock::now_unix() + ttl).to_string() })
        }
        _ => json!({}),
    }
}

pub(crate) async fn store_token(
    api: &Api,
    token: &str,
    ttl: Option<i64>,
    description: Option<&str>,
) -> Result<()> {
    let (id, secret) = token.split_once('.').context("malformed token")?;
    let ttl = ttl.unwrap_or(DEFAULT_TOKEN_TTL);
    let mut data = json!({
        "token-id": id, "token-secret": secret,
        "usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true",
        "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token",
        "description": description.unwrap_or(""),
    });
    if ttl > 0 {
        data["expiration"] = Value::String(clock::rfc3339(clock::now_unix() + ttl));
    }
    api.must_put(
        &format!("/api/v1/namespaces/kube-system/secrets/bootstrap-token-{id}"),
        &json!({
            "apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
            "metadata": { "name": format!("bootstrap-token-{id}"), "namespace": "kube-system",
                          "annotations": expiring(Some(ttl)) },
            "stringData": data,
        }),
    )
    .await
}

pub(crate) fn cipher(key_hex: &str) -> Result<chacha20poly1305::ChaCha20Poly1305> {
    use chacha20poly1305::KeyInit;
    let key = hex::decode(key_hex).context("error decoding certificate key")?;
    anyhow::ensure!(
        key.len() == 32,
        "certificate key must be 32 bytes (64 hex characters)"
    );
    chacha20poly1305::ChaCha20Poly1305::new_from_slice(&key)
        .map_err(|_| anyhow::anyhow!("bad key length"))
}

/// Encrypts the shared CAs with the certificate key and stores them as `kubeadm-certs`
/// (ChaCha20-Poly1305, random 12-byte nonce prefixed; kubeadm uses AES-GCM the same way).
async fn upload_certs(api: &Api, root: &NodeRoot, key_hex: &str, external: bool) -> Result<()> {
    use chacha20poly1305::aead::Aead;
    let c = cipher(key_hex)?;
    let pki = pki_dir(root);
    let mut data = serde_json::Map::new();
    for (name, rel) in external::shared_certs(external) {
        let plain = std::fs::read(pki.join(rel)).with_context(|| format!("reading {rel}"))?;
        let nonce: [u8; 12] = rand::random();
        let ct = c
            .encrypt(&nonce.into(), plain.as_slice())
            .map_err(|_| anyhow::anyhow!("encrypting {name}"))?;
        let mut blob = nonce.to_vec();
        blob.extend(ct);
        data.insert(name.to_string(), Value::String(B64.encode(blob)));
    }
    println!(
        "[upload-certs] Storing the certificates in Secret \"kubeadm-certs\" in the \"kube-system\" Namespace"
    );
    api.must_put(
        "/api/v1/namespaces/kube-system/secrets/kubeadm-certs",
        &json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": { "name": "kubeadm-certs", "namespace": "kube-system",
                          "annotations": expiring(Some(CERTS_TTL_SECS)) },
            "stringData": data,
        }),
    )
    .await
}

const CERTS_GONE: &str = "error downloading the secret: Secret \"kubeadm-certs\" was not found in the \"kube-system\" Namespace. This Secret might have expired. Please, run `kubeadm init phase upload-certs --upload-certs` on a control plane to generate a new one";

async fn download_certs(api: &Api, root: &NodeRoot, key_hex: &str, external: bool) -> Result<()> {
    use chacha20poly1305::aead::Aead;
    let r = api
        .get("/api/v1/namespaces/kube-system/secrets/kubeadm-certs")
        .await?;
    if r.status == 404 {
        bail!(CERTS_GONE);
    }
    anyhow::ensure!(r.ok(), "error downloading the secret: {}", r.message());
    // The joiner's clock decides too (a late joiner sees the Secret as gone).
    let exp = r.body["metadata"]["annotations"][EXPIRES_ANNOTATION]
        .as_str()
        .and_then(|s| s.parse::<i64>().ok());
    if exp.is_some_and(|t| t <= clock::now_unix()) {
        bail!(CERTS_GONE);
    }
    let c = cipher(key_hex)?;
    let pki = pki_dir(root);
    for (name, rel) in external::shared_certs(external) {
        let blob = r.body["stringData"][name]
            .as_str()
            .with_context(|| format!("the kubeadm-certs Secret lacks {name}"))
            .and_then(|s| Ok(B64.decode(s)?))?;
        anyhow::ensure!(
            blob.len() > 12,
            "the kubeadm-certs Secret holds a truncated {name}"
        );
        let (nonce, ct) = blob.split_at(12);
        let plain = c
            .decrypt(nonce.into(), ct)
            .map_err(|_| anyhow::anyhow!("error decoding secret data with provided key: cipher: message authentication failed"))?;
        write_file(
            &pki.join(rel),
            plain,
            if rel.ends_with(".key") { 0o600 } else { 0o644 },
        )?;
    }
    Ok(())
}

pub(crate) async fn register_node(
    api: &Api,
    name: &str,
    addr: Option<&str>,
    control_plane: bool,
) -> Result<()> {
    register_node_with(api, name, addr, control_plane, false).await
}

/// `register_node`; `embedded_cni` marks the Node the way k3s's embedded flannel does (the
/// API stand-in then reads it Ready without a CNI DaemonSet: `api::node_ready`).
pub(crate) async fn register_node_with(
    api: &Api,
    name: &str,
    addr: Option<&str>,
    control_plane: bool,
    embedded_cni: bool,
) -> Result<()> {
    let annotations = if embedded_cni {
        json!({ crate::api::node_ready::EMBEDDED_CNI_ANNOTATION: "vxlan" })
    } else {
        json!({})
    };
    let mut labels = json!({
        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
    });
    let mut taints = json!([]);
    if control_plane {
        labels["node-role.kubernetes.io/control-plane"] = Value::String(String::new());
        labels["node.kubernetes.io/exclude-from-external-load-balancers"] =
            Value::String(String::new());
        taints =
            json!([{ "key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule" }]);
    }
    let addresses: Vec<Value> = addr
        .map(|a| {
            vec![
                json!({"type": "InternalIP", "address": a}),
                json!({"type": "Hostname", "address": name}),
            ]
        })
        .unwrap_or_default();
    // A kubelet registering again (a restart) leaves a cordon in place, as a real one does:
    // `spec.unschedulable` is the API's, set and cleared by cordon and uncordon only.
    // Its taints too: a kubelet sets them only when it creates its Node (NodeRestriction
    // refuses a kubelet's change of them afterwards).
    let path = format!("/api/v1/nodes/{name}");
    let (cordoned, taints) = match api.get(&path).await {
        Ok(r) if r.ok() => (
            r.body["spec"]["unschedulable"].as_bool().unwrap_or(false),
            r.body["spec"]["taints"].clone(),
        ),
        _ => (false, taints),
    };
    let mut spec = json!({ "taints": taints });
    if cordoned {
        spec["unschedulable"] = Value::Bool(true);
    }
    api.must_put(
        &path,
        &json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": { "name": name, "labels": labels, "annotations": annotations },
            "spec": spec,
            "status": {
                "addresses": addresses,
                "conditions": [{ "type": "Ready", "status": "True", "reason": "KubeletReady",
                                 "message": "muster stand-in kubelet (no pods run)",
                                 "lastHeartbeatTime": clock::rfc3339(clock::now_unix()) }],
                "nodeInfo": { "kubeletVersion": version() },
            },
        }),
    )
    .await
}

pub(crate) async fn mirror_pods(
    api: &Api,
    name: &str,
    addr: &str,
    port: u16,
    local_etcd: bool,
) -> Result<()> {
    if local_etcd {
        mirror_etcd_pod(api, name, addr).await?;
    }
    mirror_apiserver_pod(api, name, addr, port).await
}

/// A static pod's mirror annotations as the kubelet sets them (`kubernetes.io/config.mirror`
/// with the manifest's hash, `config.source: file`: what `kubectl drain` and the agent's
/// drain leave alone), plus kubeadm's own `key`.
fn mirror_annotations(key: &str, value: &str) -> Value {
    use sha2::Digest;
    let hash = hex::encode(&sha2::Sha256::digest(format!("{key}={value}").as_bytes())[..16]);
    json!({
        key: value,
        "kubernetes.io/config.mirror": hash,
        "kubernetes.io/config.hash": hash,
        "kubernetes.io/config.source": "file",
    })
}

async fn mirror_etcd_pod(api: &Api, name: &str, addr: &str) -> Result<()> {
    api.must_put(
        &format!("/api/v1/namespaces/kube-system/pods/etcd-{name}"),
        &json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": format!("etcd-{name}"), "namespace": "kube-system",
                "labels": { "component": "etcd", "tier": "control-plane" },
                "annotations": mirror_annotations("kubeadm.kubernetes.io/etcd.advertise-client-urls", &format!("https://{addr}:2379")) },
            "spec": { "nodeName": name },
        }),
    )
    .await
}

async fn mirror_apiserver_pod(api: &Api, name: &str, addr: &str, port: u16) -> Result<()> {
    api.must_put(
        &format!("/api/v1/namespaces/kube-system/pods/kube-apiserver-{name}"),
        &json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": format!("kube-apiserver-{name}"), "namespace": "kube-system",
                "labels": { "component": "kube-apiserver", "tier": "control-plane" },
                "annotations": mirror_annotations("kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint", &format!("{addr}:{port}")) },
            "spec": { "nodeName": name },
        }),
    )
    .await
}

// ---------------------------------------------------------------- init

fn load_config_file(flags: &Flags) -> Result<Option<String>> {
    match flags.value("config") {
        Some(p) => {
            Ok(Some(std::fs::read_to_string(p).with_context(|| {
                format!("unable to read config from {p:?}")
            })?))
        }
        None => Ok(None),
    }
}

async fn init(flags: &Flags) -> Result<()> {
    let root = node_root();
    let knobs = Knobs::load(&root)?;
    let mut cfg = match load_config_file(flags)? {
        Some(text) => config::parse_init(&text)?,
        None => config::InitConfig {
            bind_port: 6443,
            cluster_name: "kubernetes".into(),
            kubernetes_version: version(),
            etcd_data_dir: "/var/lib/etcd".into(),
            ..Default::default()
        },
    };
    if let Some(v) = flags.value("control-plane-endpoint") {
        cfg.control_plane_endpoint = Some(v.to_string());
    }
    if let Some(v) = flags.value("apiserver-advertise-address") {
        cfg.advertise_address = Some(v.to_string());
    }
    if let Some(v) = flags.value("node-name") {
        cfg.node_name = Some(v.to_string());
    }
    if let Some(v) = flags.value("certificate-key") {
        config::validate_certificate_key(v)?;
        cfg.certificate_key = Some(v.to_string());
    }
    cfg.cert_sans
        .extend(flags.values("apiserver-cert-extra-sans"));
    cfg.ignore_preflight_errors
        .extend(flags.values("ignore-preflight-errors"));
    cfg.skip_phases.extend(flags.values("skip-phases"));
    let name = cfg.node_name.clone().unwrap_or_else(hostname);
    let addr = cfg
        .advertise_address
        .clone()
        .context("unable to select an IP from default routes.")?;
    let port = cfg.bind_port;
    let endpoint = cfg
        .control_plane_endpoint
        .clone()
        .unwrap_or_else(|| format!("{addr}:{port}"));
    let (ep_host, _) = split_host_port(&endpoint);

    println!(
        "[init] Using Kubernetes version: {}",
        cfg.kubernetes_version
    );
    println!("[preflight] Running pre-flight checks");
    phase("preflight", knobs.checkpoint("preflight"))?;
    let ext = cfg.external_etcd.clone();
    let mut checks = control_plane_checks(&root, &addr, port, &cfg.etcd_data_dir, ext.is_some());
    if let Some(e) = &ext {
        checks.extend(external::preflight(&root, e).await);
    }
    phase(
        "preflight",
        run_checks(checks, &cfg.ignore_preflight_errors),
    )?;

    println!("[certs] Using certificateDir folder \"/etc/kubernetes/pki\"");
    phase("certs", knobs.checkpoint("certs"))?;
    let pki = pki_dir(&root);
    let cas = phase("certs", new_cas(&pki, ext.is_some()))?;
    phase(
        "certs",
        issue_node_certs(
            &pki,
            &cas,
            &name,
            &addr,
            apiserver_sans(&name, &addr, Some(&ep_host), &cfg.cert_sans),
        ),
    )?;
    println!("[kubeconfig] Using kubeconfig folder \"/etc/kubernetes\"");
    phase(
        "kubeconfig",
        write_kubeconfigs(
            &root,
            &cas,
            &name,
            &cfg.cluster_name,
            &format!("https://{endpoint}"),
            &format!("https://{addr}:{port}"),
        ),
    )?;

    phase("etcd", knobs.checkpoint("etcd"))?;
    if ext.is_none() {
        phase(
            "etcd",
            start_etcd(
                &root,
                &name,
                &addr,
                &cfg.etcd_data_dir,
                &format!("{name}=https://{addr}:2380"),
                "new",
            ),
        )?;
    } else {
        println!("[etcd] External etcd mode: Skipping the local etcd static Pod manifest");
    }
    phase("control-plane", knobs.checkpoint("control-plane"))?;
    phase(
        "control-plane",
        start_apiserver(&root, &addr, port, ext.as_ref()),
    )?;

    println!(
        "[wait-control-plane] Waiting for the kubelet to boot up the control plane as static Pods from directory \"/etc/kubernetes/manifests\""
    );
    println!("[api-check] Waiting for a healthy API server. This can take up to 4m0s");
    phase("wait-control-plane", knobs.checkpoint("wait-control-plane"))?;
    let local =
        admin_api(&root, Duration::from_secs(10))?.with_base(&format!("https://{addr}:{port}"));
    phase(
        "wait-control-plane",
        wait_ready(&local, API_CHECK_PATIENCE).await,
    )?;
    println!("[api-check] The API server is healthy");
    let api = through_endpoint(&root, &local).await?;

    println!(
        "[upload-config] Storing the configuration used in ConfigMap \"kubeadm-config\" in the \"kube-system\" Namespace"
    );
    phase("upload-config", knobs.checkpoint("upload-config"))?;
    phase(
        "upload-config",
        api.must_put(
            "/api/v1/namespaces/kube-system/configmaps/kubeadm-config",
            &json!({ "apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": { "name": "kubeadm-config", "namespace": "kube-system" },
                     "data": { "ClusterConfiguration": cfg.cluster_configuration,
                               "controlPlaneEndpoint": cfg.control_plane_endpoint.clone().unwrap_or_default(),
                               "certSANs": cfg.cert_sans.join(",") } }),
        )
        .await,
    )?;
    phase(
        "upload-config",
        api.must_put(
            "/api/v1/namespaces/kube-public/configmaps/cluster-info",
            &json!({ "apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": { "name": "cluster-info", "namespace": "kube-public" },
                     "data": { "kubeconfig": pki::cluster_kubeconfig(&format!("https://{endpoint}"), &cas.ca.cert_pem) } }),
        )
        .await,
    )?;

    let mut cert_key = None;
    if flags.flag("upload-certs") {
        phase("upload-certs", knobs.checkpoint("upload-certs"))?;
        let key = cfg.certificate_key.clone().unwrap_or_else(random_key);
        phase(
            "upload-certs",
            upload_certs(&api, &root, &key, ext.is_some()).await,
        )?;
        println!("[upload-certs] Using certificate key:\n{key}");
        cert_key = Some(key);
    } else {
        println!("[upload-certs] Skipping phase. Please see --upload-certs");
    }

    println!(
        "[mark-control-plane] Marking the node {name} as control-plane by adding the labels: [node-role.kubernetes.io/control-plane node.kubernetes.io/exclude-from-external-load-balancers]"
    );
    phase("mark-control-plane", knobs.checkpoint("mark-control-plane"))?;
    phase(
        "mark-control-plane",
        register_node(&api, &name, Some(&addr), true).await,
    )?;
    phase(
        "mark-control-plane",
        mirror_pods(&api, &name, &addr, port, ext.is_none()).await,
    )?;

    phase("bootstrap-token", knobs.checkpoint("bootstrap-token"))?;
    let mut tokens = cfg.bootstrap_tokens.clone();
    if tokens.is_empty() {
        tokens.push(config::BootstrapToken {
            token: random_token(),
            ttl: None,
            description: None,
        });
    }
    for t in &tokens {
        println!("[bootstrap-token] Using token: {}", t.token);
        phase(
            "bootstrap-token",
            store_token(&api, &t.token, t.ttl, t.description.as_deref()).await,
        )?;
    }
    println!(
        "[bootstrap-token] Creating the \"cluster-info\" ConfigMap in the \"kube-public\" namespace"
    );
    phase("kubelet-finalize", knobs.checkpoint("kubelet-finalize"))?;
    // kubeadm's `addon/kube-proxy` phase, unless skipped (a CNI that replaces kube-proxy).
    // CoreDNS is not modelled.
    if cfg.skips("addon/kube-proxy") {
        println!("[addons] Skipping phase addon/kube-proxy (skipPhases)");
    } else {
        phase("addon", knobs.checkpoint("addon"))?;
        phase(
            "addon/kube-proxy",
            kube_proxy_addon(&api, &cfg.kubernetes_version).await,
        )?;
        println!("[addons] Applied essential addon: kube-proxy");
    }

    let hash = pki::ca_cert_hash(&cas.ca.cert_pem)?;
    let token = &tokens[0].token;
    println!("\nYour Kubernetes control-plane has initialized successfully!\n");
    println!("To start using your cluster, you need to run the following as a regular user:\n");
    println!(
        "  mkdir -p $HOME/.kube\n  sudo cp -i /etc/kubernetes/admin.conf $HOME/.kube/config\n  sudo chown $(id -u):$(id -g) $HOME/.kube/config\n"
    );
    println!(
        "Alternatively, if you are the root user, you can run:\n\n  export KUBECONFIG=/etc/kubernetes/admin.conf\n"
    );
    println!(
        "You should now deploy a pod network to the cluster.\nRun \"kubectl apply -f [podnetwork].yaml\" with one of the options listed at:\n  https://kubernetes.io/docs/concepts/cluster-administration/addons/\n"
    );
    if cfg.control_plane_endpoint.is_some() {
        println!(
            "You can now join any number of control-plane nodes running the following command on each as root:\n"
        );
        print!(
            "  kubeadm join {endpoint} --token {token} \\\n\t--discovery-token-ca-cert-hash {hash} \\\n\t--control-plane"
        );
        match &cert_key {
            Some(k) => println!(" --certificate-key {k}\n"),
            None => println!("\n"),
        }
        if cert_key.is_some() {
            println!(
                "Please note that the certificate-key gives access to cluster sensitive data, keep it secret!\nAs a safeguard, uploaded-certs will be deleted in two hours; If necessary, you can use\n\"kubeadm init phase upload-certs --upload-certs\" to reload certs afterward.\n"
            );
        }
        println!(
            "Then you can join any number of worker nodes by running the following on each as root:\n"
        );
    } else {
        println!(
            "Then you can join any number of worker nodes by running the following on each as root:\n"
        );
    }
    println!(
        "kubeadm join {endpoint} --token {token} \\\n\t--discovery-token-ca-cert-hash {hash} "
    );
    Ok(())
}

/// After the local API server is healthy, kubeadm talks through admin.conf, i.e. the
/// controlPlaneEndpoint (the VIP). If the VIP does not answer within
/// `MUSTER_STANDIN_VIP_WAIT` (default 5s), the stand-in warns and goes on through the local
/// API server, unless `MUSTER_STANDIN_STRICT_VIP=1` (then it fails as kubeadm would hang).
async fn through_endpoint(root: &NodeRoot, local: &Api) -> Result<Api> {
    let api = admin_api(root, Duration::from_secs(10))?;
    if api.base == local.base {
        return Ok(api);
    }
    let wait = std::env::var("MUSTER_STANDIN_VIP_WAIT")
        .ok()
        .and_then(|v| clock::parse_duration(&v).ok())
        .unwrap_or(5);
    let probe = Api {
        http: http_client(&Trust::Insecure, None, Duration::from_secs(2))?,
        ..api.clone()
    };
    let deadline = Instant::now() + Duration::from_secs(wait.max(0) as u64);
    loop {
        if probe.get("/readyz").await.is_ok_and(|r| r.ok()) {
            return Ok(api);
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if std::env::var("MUSTER_STANDIN_STRICT_VIP").is_ok_and(|v| v == "1") {
        bail!(
            "error execution phase upload-config: the control-plane endpoint {} does not answer (is the VIP up?)",
            api.base
        );
    }
    println!(
        "[muster-standin] WARNING: control-plane endpoint {} does not answer; continuing through {} (real kubeadm would wait for the VIP)",
        api.base, local.base
    );
    Ok(local.clone())
}

// ---------------------------------------------------------------- join

struct Discovered {
    ca_pem: String,
    server: String,
}

async fn discover(
    endpoint: &str,
    token: &str,
    hashes: &[String],
    unsafe_skip: bool,
) -> Result<Discovered> {
    let timeout = std::env::var("MUSTER_STANDIN_DISCOVERY_TIMEOUT")
        .ok()
        .and_then(|v| clock::parse_duration(&v).ok())
        .unwrap_or(60);
    let insecure = Api {
        base: format!("https://{endpoint}"),
        http: http_client(&Trust::Insecure, None, Duration::from_secs(5))?,
        bearer: None,
    };
    println!(
        "[discovery] Created cluster-info discovery client, requesting info from \"{endpoint}\""
    );
    let deadline = Instant::now() + Duration::from_secs(timeout.max(1) as u64);
    let reply = loop {
        match insecure
            .get("/api/v1/namespaces/kube-public/configmaps/cluster-info")
            .await
        {
            Ok(r) if r.ok() => break r,
            other => {
                let why = match other {
                    Ok(r) => format!("{} {}", r.status, r.message()),
                    Err(e) => format!("{e:#}"),
                };
                if Instant::now() >= deadline {
                    bail!(
                        "couldn't validate the identity of the API Server: failed to request the cluster-info ConfigMap from {endpoint:?}: {why}"
                    );
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let kubeconfig = reply.body["data"]["kubeconfig"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let id = token.split('.').next().unwrap_or("");
    let sig = reply.body["data"][format!("jws-kubeconfig-{id}")].as_str();
    if sig != Some(crate::api::token_signature(token, &kubeconfig).as_str()) {
        bail!(
            "failed to connect to API Server {endpoint:?}: token id {id:?} is invalid for this cluster or it has expired. Use \"kubeadm token create\" on the control-plane node to create a new valid token"
        );
    }
    let parts = pki::parse_kubeconfig(&kubeconfig)?;
    let hash = pki::ca_cert_hash(&parts.ca_pem)?;
    if !unsafe_skip && !hashes.iter().any(|h| h.eq_ignore_ascii_case(&hash)) {
        bail!(
            "couldn't validate the identity of the API Server: cluster CA found in cluster-info ConfigMap is invalid: none of the public keys \"{hash}\" are pinned"
        );
    }
    println!(
        "[discovery] Cluster info signature and contents are valid and TLS certificate validates against pinned roots, will use API Server \"{endpoint}\""
    );
    Ok(Discovered {
        ca_pem: parts.ca_pem,
        server: parts.server,
    })
}

async fn join(flags: &Flags) -> Result<()> {
    let root = node_root();
    let knobs = Knobs::load(&root)?;
    let mut cfg = match load_config_file(flags)? {
        Some(text) => {
            if !flags
                .positional
                .iter()
                .skip(1)
                .collect::<Vec<_>>()
                .is_empty()
                || flags.value("token").is_some()
            {
                bail!("can not mix '--config' with arguments [discovery-token token]");
            }
            config::parse_join(&text)?
        }
        None => {
            // Flag form: kubeadm join HOST:PORT --token T --discovery-token-ca-cert-hash H ...
            let endpoint = flags.positional.get(1).cloned().unwrap_or_default();
            let token = flags
                .value("discovery-token")
                .or(flags.value("token"))
                .unwrap_or("")
                .to_string();
            let mut text = format!(
                "apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\ndiscovery:\n  bootstrapToken:\n    apiServerEndpoint: {endpoint:?}\n    token: {token:?}\n    unsafeSkipCAVerification: {}\n    caCertHashes: {:?}\n",
                flags.flag("discovery-token-unsafe-skip-ca-verification"),
                flags.values("discovery-token-ca-cert-hash"),
            );
            if flags.flag("control-plane") {
                text.push_str(&format!(
                    "controlPlane:\n  localAPIEndpoint:\n    advertiseAddress: {:?}\n",
                    flags.value("apiserver-advertise-address").unwrap_or("")
                ));
                if let Some(k) = flags.value("certificate-key") {
                    text.push_str(&format!("  certificateKey: {k:?}\n"));
                }
            }
            config::parse_join(&text)?
        }
    };
    if let Some(n) = flags.value("node-name") {
        cfg.node_name = Some(n.to_string());
    }
    cfg.ignore_preflight_errors
        .extend(flags.values("ignore-preflight-errors"));
    let name = cfg.node_name.clone().unwrap_or_else(hostname);

    println!("[preflight] Running pre-flight checks");
    phase("preflight", knobs.checkpoint("preflight"))?;
    phase(
        "preflight",
        run_checks(join_checks(&root), &cfg.ignore_preflight_errors),
    )?;
    phase("preflight", knobs.checkpoint("discovery"))?;
    let disc = phase(
        "preflight",
        discover(
            &cfg.api_server_endpoint,
            &cfg.token,
            &cfg.ca_cert_hashes,
            cfg.unsafe_skip_ca_verification,
        )
        .await,
    )?;
    let boot = Api {
        base: disc.server.trim_end_matches('/').to_string(),
        http: http_client(
            &Trust::Ca(disc.ca_pem.clone()),
            None,
            Duration::from_secs(10),
        )?,
        bearer: Some(cfg.token.clone()),
    };
    // kubeadm's `KubeletVersion` check against the cluster's version (issue 15: a node
    // re-created from a newer image must not join an older control plane).
    let kc = boot
        .get("/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
        .await?;
    if kc.ok() {
        let cc = kc.body["data"]["ClusterConfiguration"]
            .as_str()
            .unwrap_or("");
        let ours = version();
        let cluster = upgrade_policy::cluster_version(cc, &ours);
        let skew = upgrade_policy::kubelet_skew(&ours, &cluster)
            .map(|msg| ("KubeletVersion".to_string(), msg));
        phase(
            "preflight",
            run_checks(skew.into_iter().collect(), &cfg.ignore_preflight_errors),
        )?;
    }
    match &cfg.control_plane {
        Some(cp) => join_control_plane(&root, &knobs, &cfg, cp, &name, &boot, &disc).await,
        None => join_worker(&root, &knobs, &name, cfg.node_ip.as_deref(), &boot, &disc).await,
    }
}

/// A control-plane join on a stacked etcd: find the members through the mirror pods, a
/// REAL member add (as a learner where kubeadm does), the local member started, promoted,
/// healthy.
async fn join_local_etcd(
    root: &NodeRoot,
    knobs: &Knobs,
    name: &str,
    addr: &str,
    boot: &Api,
    ep_host: &str,
    cluster_configuration: &str,
) -> Result<()> {
    let addr = addr.to_string();
    phase("control-plane-join/etcd", knobs.checkpoint("member-add"))?;
    let mut endpoints = boot.announced_etcd_endpoints().await?;
    if endpoints.is_empty() {
        endpoints.push(format!("https://{ep_host}:2379"));
    }
    let learner = config::etcd_learner_mode(&version(), cluster_configuration);
    if learner {
        println!("[etcd] Adding etcd member as learner");
    }
    println!("[etcd] Announced new etcd member joining to the existing etcd cluster");
    let patience = std::env::var("MUSTER_STANDIN_MEMBER_ADD_PATIENCE")
        .ok()
        .and_then(|v| clock::parse_duration(&v).ok())
        .unwrap_or(30);
    let patience = Duration::from_secs(patience.max(0) as u64);
    let initial = phase(
        "control-plane-join/etcd",
        etcd::member_add(
            &endpoints,
            &etcd_client_tls(root),
            name,
            &addr,
            learner,
            patience,
        ),
    )?;
    phase(
        "control-plane-join/etcd",
        knobs.checkpoint("after-member-add"),
    )?;
    phase("control-plane-join/etcd", knobs.checkpoint("etcd-join"))?;
    phase(
        "control-plane-join/etcd",
        start_etcd(root, name, &addr, "/var/lib/etcd", &initial, "existing"),
    )?;
    if learner {
        // kubeadm writes the static pod, then promotes the learner once it is in sync.
        phase(
            "control-plane-join/etcd",
            knobs.checkpoint("before-promote"),
        )?;
        phase(
            "control-plane-join/etcd",
            etcd::member_promote(&endpoints, &etcd_client_tls(root), &addr, PROMOTE_PATIENCE),
        )?;
    }
    println!("[etcd] Waiting for the new etcd member to join the cluster. This can take up to 40s");
    let local_etcd = vec!["https://127.0.0.1:2379".to_string()];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = etcd::etcdctl(&local_etcd, &etcd_client_tls(root), &["endpoint", "health"])?;
        if out.success {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "error execution phase control-plane-join/etcd: error creating local etcd static pod manifest file: timeout waiting for etcd cluster to be available: {}",
                out.stderr.trim()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    Ok(())
}

async fn join_control_plane(
    root: &NodeRoot,
    knobs: &Knobs,
    cfg: &config::JoinConfig,
    cp: &config::JoinControlPlane,
    name: &str,
    boot: &Api,
    disc: &Discovered,
) -> Result<()> {
    let addr = cp
        .advertise_address
        .clone()
        .filter(|a| !a.is_empty())
        .context("unable to select an IP from default routes.")?;
    let port = cp.bind_port;
    println!(
        "[preflight] Running pre-flight checks before initializing the new control plane instance"
    );
    let kc = phase(
        "preflight",
        boot.get("/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
            .await,
    )?;
    if !kc.ok() {
        bail!(
            "error execution phase preflight: unable to fetch the kubeadm-config ConfigMap: {}",
            kc.message()
        );
    }
    // Like kubeadm: the cluster's ClusterConfiguration says where etcd is.
    let cluster_configuration = kc.body["data"]["ClusterConfiguration"]
        .as_str()
        .unwrap_or("");
    let ext = match serde_yaml::from_str::<crate::yaml::Value>(cluster_configuration) {
        Ok(doc) => phase("preflight", config::external_etcd(&doc))?,
        Err(_) => None,
    };
    let mut checks = control_plane_checks(root, &addr, port, "/var/lib/etcd", ext.is_some());
    if let Some(e) = &ext {
        checks.extend(external::preflight(root, e).await);
    }
    phase(
        "preflight",
        run_checks(checks, &cfg.ignore_preflight_errors),
    )?;
    let endpoint = kc.body["data"]["controlPlaneEndpoint"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if endpoint.is_empty() {
        bail!(
            "error execution phase preflight: \nOne or more conditions for hosting a new control plane instance is not satisfied.\n\nunable to add a new control plane instance to a cluster that doesn't have a stable controlPlaneEndpoint address"
        );
    }
    let cert_sans: Vec<String> = kc.body["data"]["certSANs"]
        .as_str()
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let (ep_host, _) = split_host_port(&endpoint);

    println!(
        "[download-certs] Downloading the certificates in Secret \"kubeadm-certs\" in the \"kube-system\" Namespace"
    );
    let phase_dl = "control-plane-prepare/download-certs";
    phase(phase_dl, knobs.checkpoint("download-certs"))?;
    let key = cp.certificate_key.clone().context(
        "error execution phase control-plane-prepare/download-certs: a certificate key is required to download the certificates (controlPlane.certificateKey / --certificate-key)",
    )?;
    phase(
        phase_dl,
        download_certs(boot, root, &key, ext.is_some())
            .await
            .context("error downloading certs"),
    )?;

    phase("control-plane-prepare/certs", knobs.checkpoint("certs"))?;
    let pki = pki_dir(root);
    let cas = read_cas(&pki, ext.is_some())?;
    phase(
        "control-plane-prepare/certs",
        issue_node_certs(
            &pki,
            &cas,
            name,
            &addr,
            apiserver_sans(name, &addr, Some(&ep_host), &cert_sans),
        ),
    )?;
    phase(
        "control-plane-prepare/kubeconfig",
        write_kubeconfigs(
            root,
            &cas,
            name,
            "kubernetes",
            &format!("https://{endpoint}"),
            &format!("https://{addr}:{port}"),
        ),
    )?;

    match &ext {
        None => {
            join_local_etcd(
                root,
                knobs,
                name,
                &addr,
                boot,
                &ep_host,
                cluster_configuration,
            )
            .await?
        }
        Some(_) => println!(
            "[etcd] External etcd mode: Skipping the local etcd member (no member add, no static Pod)"
        ),
    }
    phase(
        "control-plane-prepare/control-plane",
        knobs.checkpoint("control-plane"),
    )?;
    phase(
        "control-plane-prepare/control-plane",
        start_apiserver(root, &addr, port, ext.as_ref()),
    )?;
    let local =
        admin_api(root, Duration::from_secs(10))?.with_base(&format!("https://{addr}:{port}"));
    phase(
        "wait-control-plane",
        wait_ready(&local, API_CHECK_PATIENCE).await,
    )?;
    phase("kubelet-start", knobs.checkpoint("kubelet-start"))?;
    phase(
        "control-plane-join/mark-control-plane",
        register_node(&local, name, Some(&addr), true).await,
    )?;
    phase(
        "control-plane-join/mark-control-plane",
        mirror_pods(&local, name, &addr, port, ext.is_none()).await,
    )?;
    let _ = disc;
    println!(
        "\nThis node has joined the cluster and a new control plane instance was created:\n\n* Certificate signing request was sent to apiserver and approval was received.\n* The Kubelet was informed of the new secure connection details.\n* Control plane label and taint were applied to the new node.\n* The Kubernetes control plane instances scaled up.\n* A new etcd member was added to the local/stacked etcd cluster.\n\nTo start administering your cluster from this node, you need to run the following as a regular user:\n\n\tmkdir -p $HOME/.kube\n\tsudo cp -i /etc/kubernetes/admin.conf $HOME/.kube/config\n\tsudo chown $(id -u):$(id -g) $HOME/.kube/config\n\nRun 'kubectl get nodes' to see this node join the cluster.\n"
    );
    Ok(())
}

async fn join_worker(
    root: &NodeRoot,
    knobs: &Knobs,
    name: &str,
    node_ip: Option<&str>,
    boot: &Api,
    disc: &Discovered,
) -> Result<()> {
    println!(
        "[kubelet-start] Writing kubelet configuration to file \"/var/lib/kubelet/config.yaml\""
    );
    phase("kubelet-start", knobs.checkpoint("kubelet-start"))?;
    let (csr, key_pem) = pki::new_csr(&format!("system:node:{name}"), &["system:nodes"])?;
    let r = phase(
        "kubelet-start",
        boot.post(
            "/apis/certificates.k8s.io/v1/certificatesigningrequests",
            &json!({ "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
                     "metadata": { "generateName": "csr-" },
                     "spec": { "request": B64.encode(csr.as_bytes()), "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                               "usages": ["digital signature", "client auth"] } }),
        )
        .await,
    )?;
    if !r.ok() {
        bail!(
            "error execution phase kubelet-start: TLS bootstrap failed: {}",
            r.message()
        );
    }
    let cert = r.body["status"]["certificate"]
        .as_str()
        .and_then(|s| B64.decode(s).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .context("error execution phase kubelet-start: no certificate in the CSR status")?;
    let client = CertKey {
        cert_pem: cert,
        key_pem,
    };
    write_file(
        &kube_dir(root).join("kubelet.conf"),
        pki::kubeconfig(
            "kubernetes",
            &disc.server,
            &disc.ca_pem,
            &format!("system:node:{name}"),
            &client,
        ),
        0o600,
    )?;
    write_file(&pki_dir(root).join("ca.crt"), &disc.ca_pem, 0o644)?;
    // What the kubelet leaves after its TLS bootstrap: the rotated client cert and key in
    // one file (the agent checks the Node registration with it).
    write_file(
        &root
            .path(KUBELET_DIR)
            .join("pki/kubelet-client-current.pem"),
        format!("{}{}", client.cert_pem, client.key_pem),
        0o600,
    )?;
    write_file(
        &root.path(KUBELET_DIR).join("config.yaml"),
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n# muster stand-in: no kubelet runs\n",
        0o644,
    )?;
    println!(
        "[kubelet-start] Starting the kubelet\n[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap"
    );
    let api = Api::from_kubeconfig(
        &read_file(&kube_dir(root).join("kubelet.conf"))?,
        Duration::from_secs(10),
    )?;
    phase(
        "kubelet-start",
        register_node(&api, name, node_ip, false).await,
    )?;
    println!(
        "\nThis node has joined the cluster:\n* Certificate signing request was sent to apiserver and a response was received.\n* The Kubelet was informed of the new secure connection details.\n\nRun 'kubectl get nodes' on the control-plane to see this node join the cluster.\n"
    );
    Ok(())
}

// ---------------------------------------------------------------- reset

fn reset(flags: &Flags) -> Result<()> {
    let root = node_root();
    let knobs = Knobs::load(&root)?;
    if !(flags.flag("f") || flags.flag("force")) {
        println!(
            "W0000 muster-standin: [reset] WARNING: Changes made to this host by 'kubeadm init' or 'kubeadm join' will be reverted.\n[reset] Are you sure you want to proceed? [y/N]: "
        );
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !answer.trim().eq_ignore_ascii_case("y") {
            bail!("won't proceed; the user didn't answer (Y|n) in order to continue");
        }
    }
    println!("[preflight] Running pre-flight checks");
    phase("preflight", knobs.checkpoint("reset"))?;
    if external::node_is_external(&root) {
        // Like kubeadm: without a local etcd manifest the cluster is external, and reset
        // leaves it alone.
        println!(
            "[reset] No etcd config found. Assuming external etcd\n[reset] Please, manually reset etcd to prevent further issues"
        );
    } else {
        // Real kubeadm would try to remove this node's etcd member here and often cannot;
        // the stand-in leaves it (the agent removes stale members).
        println!(
            "W0000 muster-standin: [reset] The etcd member of this node is NOT removed from the cluster (stand-in behaviour; remove it from a healthy member)"
        );
    }
    println!("[reset] Stopping the kubelet service");
    for name in [crate::api::DAEMON, etcd::DAEMON, "kubelet"] {
        daemon::stop(&root, name, Duration::from_secs(5))?;
        daemon::forget(&root, name)?;
    }
    let etcd_dir = root.path("var/lib/etcd");
    if etcd_dir.exists() {
        std::fs::remove_dir_all(&etcd_dir)?;
        println!("[reset] Deleted contents of the etcd data directory: /var/lib/etcd");
    }
    for dir in [KUBE_MANIFESTS, KUBELET_DIR, PKI] {
        let d = root.path(dir);
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    std::fs::remove_dir_all(&p)?;
                } else {
                    std::fs::remove_file(&p)?;
                }
            }
        }
    }
    println!(
        "[reset] Deleting contents of directories: [/etc/kubernetes/manifests /var/lib/kubelet /etc/kubernetes/pki]"
    );
    let files = [
        "admin.conf",
        "super-admin.conf",
        "kubelet.conf",
        "bootstrap-kubelet.conf",
        "controller-manager.conf",
        "scheduler.conf",
    ];
    for f in files {
        let _ = std::fs::remove_file(kube_dir(&root).join(f));
    }
    println!(
        "[reset] Deleting files: [/etc/kubernetes/admin.conf /etc/kubernetes/super-admin.conf /etc/kubernetes/kubelet.conf /etc/kubernetes/bootstrap-kubelet.conf /etc/kubernetes/controller-manager.conf /etc/kubernetes/scheduler.conf]"
    );
    println!(
        "\nThe reset process does not clean CNI configuration. To do so, you must remove /etc/cni/net.d\n\nThe reset process does not reset or clean up iptables rules or IPVS tables.\n\nThe reset process does not clean your kubeconfig files and you must remove them manually.\nPlease, check the contents of the $HOME/.kube/config file."
    );
    Ok(())
}

// ---------------------------------------------------------------- upload-certs / token

async fn upload_certs_phase(flags: &Flags) -> Result<()> {
    if !flags.flag("upload-certs") {
        println!("[upload-certs] Skipping phase. Please see --upload-certs");
        return Ok(());
    }
    let root = node_root();
    let knobs = Knobs::load(&root)?;
    phase("upload-certs", knobs.checkpoint("upload-certs"))?;
    let mut key = flags.value("certificate-key").map(str::to_string);
    if key.is_none()
        && let Some(text) = load_config_file(flags)?
    {
        key = config::parse_init(&text)?.certificate_key;
    }
    let key = key.unwrap_or_else(random_key);
    config::validate_certificate_key(&key)?;
    let api = admin_api(&root, Duration::from_secs(10))?;
    phase(
        "upload-certs",
        upload_certs(&api, &root, &key, external::node_is_external(&root)).await,
    )?;
    println!("[upload-certs] Using certificate key:\n{key}");
    Ok(())
}

async fn token_create(flags: &Flags) -> Result<()> {
    let root = node_root();
    let knobs = Knobs::load(&root)?;
    knobs.checkpoint("token-create")?;
    let token = match flags.positional.get(2) {
        Some(t) => {
            config::validate_token(t, "token")?;
            t.clone()
        }
        None => random_token(),
    };
    let ttl = match flags.value("ttl") {
        Some(d) => Some(clock::parse_duration(d)?),
        None => None,
    };
    let api = admin_api(&root, Duration::from_secs(10))?;
    store_token(&api, &token, ttl, flags.value("description")).await?;
    if flags.flag("print-join-command") {
        let ca = read_file(&pki_dir(&root).join("ca.crt"))?;
        let hash = pki::ca_cert_hash(&ca)?;
        let host = api.base.trim_start_matches("https://");
        println!("kubeadm join {host} --token {token} --discovery-token-ca-cert-hash {hash} ");
    } else {
        println!("{token}");
    }
    Ok(())
}

/// `kubeadm upgrade plan|apply vX.Y.Z|node`, as far as the stand-in goes: the cluster's
/// version is the `kubernetesVersion` in the `kubeadm-config` ConfigMap; `apply` enforces
/// kubeadm's version policy ([`upgrade_policy`]) and stores the new version there; `node`
/// refuses when this kubeadm is older than the cluster (stand-in wording). It does not
/// restart the control-plane daemons: the API server keeps reporting the version it
/// started with (`tests/standins/tests/standins.rs` runs it in the lab).
/// The `kube-proxy` ConfigMap and DaemonSet (image `registry.k8s.io/kube-proxy:VERSION`) in
/// `kube-system`, as kubeadm's kube-proxy addon creates them (trimmed: no RBAC, no
/// ServiceAccount). The API stand-in computes the DaemonSet's rollout like any other.
pub(crate) async fn kube_proxy_addon(api: &Api, version: &str) -> Result<()> {
    api.must_put(
        "/api/v1/namespaces/kube-system/configmaps/kube-proxy",
        &json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": "kube-proxy", "namespace": "kube-system",
                          "labels": { "app": "kube-proxy" } },
            "data": { "config.conf": "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: iptables\n" },
        }),
    )
    .await?;
    api.must_put(
        KUBE_PROXY_DAEMONSET,
        &json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": { "name": "kube-proxy", "namespace": "kube-system",
                          "labels": { "k8s-app": "kube-proxy" } },
            "spec": {
                "selector": { "matchLabels": { "k8s-app": "kube-proxy" } },
                "template": {
                    "metadata": { "labels": { "k8s-app": "kube-proxy" } },
                    "spec": { "containers": [{ "name": "kube-proxy",
                        "image": format!("registry.k8s.io/kube-proxy:{version}") }] },
                },
            },
        }),
    )
    .await
}

const KUBE_PROXY_DAEMONSET: &str = "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy";

async fn upgrade_command(target: Option<&str>, node: bool) -> Result<()> {
    let root = crate::node_root();
    let knobs = Knobs::load(&root)?;
    let step = match (node, target) {
        (true, _) => "upgrade-node",
        (false, Some(_)) => "upgrade-apply",
        (false, None) => "upgrade-plan",
    };
    knobs.checkpoint(step)?;
    let api = admin_api(&root, Duration::from_secs(10))
        .or_else(|_| {
            let text = read_file(&kube_dir(&root).join("kubelet.conf"))?;
            Api::from_kubeconfig(&text, Duration::from_secs(10))
        })
        .context("[upgrade/config] FATAL: no admin.conf or kubelet.conf to reach the cluster")?;
    let path = "/api/v1/namespaces/kube-system/configmaps/kubeadm-config";
    let kc = api.get(path).await?;
    if !kc.ok() {
        bail!(
            "[upgrade/config] FATAL: failed to get config map: {}",
            kc.message()
        );
    }
    let cc = kc.body["data"]["ClusterConfiguration"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let ours = version();
    let cluster = upgrade_policy::cluster_version(&cc, &ours);
    println!("[upgrade/versions] Cluster version: {cluster}");
    println!("[upgrade/versions] kubeadm version: {ours}");
    if node {
        if upgrade_policy::parse(&ours) < upgrade_policy::parse(&cluster) {
            bail!(
                "[upgrade] FATAL (stand-in): this kubeadm {ours} is older than the cluster version {cluster}: install the cluster's kubeadm first"
            );
        }
        println!("[upgrade] The configuration for this node was successfully updated!");
        return Ok(());
    }
    let Some(target) = target else {
        println!("[upgrade/versions] Target version: {ours}");
        return Ok(());
    };
    println!("[upgrade/version] You have chosen to change the cluster version to {target:?}");
    let errors = upgrade_policy::violations(&cluster, &ours, target);
    if !errors.is_empty() {
        bail!("{}", upgrade_policy::fatal(&errors));
    }
    let mut body = kc.body.clone();
    body["data"]["ClusterConfiguration"] =
        serde_json::Value::from(upgrade_policy::with_version(&cc, target));
    api.must_put(path, &body).await?;
    // kube-proxy follows only where its ConfigMap exists: a cluster initialized without
    // the addon (skipPhases) does not get it back (kubernetes/kubernetes#89593).
    let kube_proxy = api
        .get("/api/v1/namespaces/kube-system/configmaps/kube-proxy")
        .await?;
    if kube_proxy.ok() {
        kube_proxy_addon(&api, target).await?;
        println!("[addons] Applied essential addon: kube-proxy");
    }
    println!("[upgrade/successful] SUCCESS! Your cluster was upgraded to {target:?}. Enjoy!");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_like_cobra() {
        let args: Vec<String> = [
            "join",
            "10.0.0.10:6443",
            "--token",
            "abc",
            "--control-plane",
            "--certificate-key=k",
            "-v=5",
            "--ignore-preflight-errors",
            "a,b",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let f = Flags::parse(&args);
        assert_eq!(f.positional, vec!["join", "10.0.0.10:6443"]);
        assert_eq!(f.value("token"), Some("abc"));
        assert!(f.flag("control-plane"));
        assert_eq!(f.value("certificate-key"), Some("k"));
        assert_eq!(f.values("ignore-preflight-errors"), vec!["a", "b"]);
    }

    #[test]
    fn tokens_have_kubeadm_shape() {
        let t = random_token();
        config::validate_token(&t, "t").unwrap();
        assert_eq!(
            split_host_port("10.0.0.10:6443"),
            ("10.0.0.10".to_string(), 6443)
        );
    }
}
