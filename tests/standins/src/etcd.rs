//! The REAL etcd underneath the stand-ins: Debian's `etcd` 3.4 started as a detached member,
//! `etcdctl` for membership, and the v3 JSON gateway for reads and writes.

use crate::client::{Trust, http_client};
use crate::daemon::DaemonSpec;
use crate::pki::CertKey;
use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Daemon name of the etcd member.
pub const DAEMON: &str = "etcd";

/// Files an etcd member serves with.
#[derive(Debug, Clone)]
pub struct MemberTls {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub peer_cert: PathBuf,
    pub peer_key: PathBuf,
}

/// The command line of a stacked member, as kubeadm's etcd static pod has it.
pub fn member_spec(
    name: &str,
    addr: &str,
    data_dir: &Path,
    tls: &MemberTls,
    initial_cluster: &str,
    state: &str,
) -> Result<DaemonSpec> {
    let etcd = crate::require_tool("etcd", "etcd-server")?;
    let p = |p: &Path| p.display().to_string();
    let args = vec![
        format!("--name={name}"),
        format!("--data-dir={}", data_dir.display()),
        format!("--advertise-client-urls=https://{addr}:2379"),
        format!("--initial-advertise-peer-urls=https://{addr}:2380"),
        format!("--listen-client-urls=https://127.0.0.1:2379,https://{addr}:2379"),
        format!("--listen-peer-urls=https://{addr}:2380"),
        "--listen-metrics-urls=http://127.0.0.1:2381".to_string(),
        format!("--initial-cluster={initial_cluster}"),
        format!("--initial-cluster-state={state}"),
        "--client-cert-auth=true".to_string(),
        format!("--trusted-ca-file={}", p(&tls.ca)),
        format!("--cert-file={}", p(&tls.server_cert)),
        format!("--key-file={}", p(&tls.server_key)),
        "--peer-client-cert-auth=true".to_string(),
        format!("--peer-trusted-ca-file={}", p(&tls.ca)),
        format!("--peer-cert-file={}", p(&tls.peer_cert)),
        format!("--peer-key-file={}", p(&tls.peer_key)),
        "--snapshot-count=10000".to_string(),
    ];
    Ok(DaemonSpec {
        name: DAEMON.to_string(),
        program: etcd,
        args,
        env: vec![],
    })
}

/// A static-pod-shaped manifest describing the member (the stand-in kubelet does not read
/// it beyond its presence; the command is kept in the daemon record).
pub fn manifest(spec: &DaemonSpec, component: &str) -> String {
    let mut s = format!(
        "# muster stand-in: a static pod manifest shaped like kubeadm's; the process is started\n# by the stand-in, not by a kubelet.\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {component}\n  namespace: kube-system\n  labels:\n    component: {component}\n    tier: control-plane\nspec:\n  hostNetwork: true\n  containers:\n  - name: {component}\n    command:\n    - {}\n",
        spec.program.display()
    );
    for a in &spec.args {
        s.push_str(&format!("    - {}\n", serde_json::Value::String(a.clone())));
    }
    s
}

/// Client credentials for etcdctl and the gateway.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Output of one etcdctl run.
#[derive(Debug, Clone)]
pub struct CtlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `etcdctl` (v3 API) against `endpoints` with `tls`.
pub fn etcdctl(endpoints: &[String], tls: &ClientTls, args: &[&str]) -> Result<CtlOutput> {
    let bin = crate::require_tool("etcdctl", "etcd-client")?;
    let out = std::process::Command::new(bin)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .arg(format!("--cacert={}", tls.ca.display()))
        .arg(format!("--cert={}", tls.cert.display()))
        .arg(format!("--key={}", tls.key.display()))
        .arg("--dial-timeout=3s")
        .arg("--command-timeout=5s")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running etcdctl")?;
    Ok(CtlOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `etcdctl member add NAME [--learner] --peer-urls=https://ADDR:2380`, retried while etcd
/// refuses, e.g. with `unhealthy cluster` or `not enough started members` (measured: refused
/// for ~4–5 s after each join). A plain add that meets `Peer URLs already exists` reuses an
/// unstarted member with this peer URL, as kubeadm's `AddMember` does; a learner add retries
/// it like every other error until `patience` runs out, as kubeadm's `AddMemberAsLearner`
/// does (so a stale member must be removed first). Returns the `ETCD_INITIAL_CLUSTER`
/// etcdctl prints.
pub fn member_add(
    endpoints: &[String],
    tls: &ClientTls,
    name: &str,
    addr: &str,
    learner: bool,
    patience: Duration,
) -> Result<String> {
    let peer = format!("--peer-urls=https://{addr}:2380");
    let deadline = Instant::now() + patience;
    let mut args = vec!["member", "add", name];
    if learner {
        args.push("--learner");
    }
    args.push(&peer);
    loop {
        let out = etcdctl(endpoints, tls, &args)?;
        if out.success {
            for line in out.stdout.lines() {
                if let Some(v) = line.strip_prefix("ETCD_INITIAL_CLUSTER=") {
                    return Ok(v.trim_matches('"').to_string());
                }
            }
            bail!(
                "etcdctl member add printed no ETCD_INITIAL_CLUSTER:\n{}",
                out.stdout
            );
        }
        let err = out.stderr.trim().to_string();
        // A peer URL that is already a member: what kubeadm's `AddMember` does since
        // v1.2x — list the members and go on with the existing one (the unstarted member
        // of a crashed join, kubeadm#2095: starting it completes the join). A member with
        // that URL that already runs is a real conflict.
        if !learner && err.contains("Peer URLs already exists") {
            let url = format!("https://{addr}:2380");
            let members = member_list(endpoints, tls)
                .with_context(|| format!("etcdctl member add {name}: {err}"))?;
            match members.iter().find(|m| m.peer_urls.contains(&url)) {
                Some(m) if !m.started() => {
                    println!(
                        "[etcd] The peer URL for the added etcd member already exists. Reusing member {:x}",
                        m.id
                    );
                    return Ok(initial_cluster(&members, name, &url));
                }
                _ => bail!("etcdctl member add {name}: {err}"),
            }
        }
        // Like kubeadm's backoff: retry everything else (unhealthy cluster, not enough
        // started members, leader changed, the brief `member not found` after a remove).
        if Instant::now() >= deadline {
            bail!("etcdctl member add {name}: {err}");
        }
        std::thread::sleep(Duration::from_millis(400));
    }
}

/// `etcdctl member promote ID` for the learner with peer URL `https://ADDR:2380`, retried
/// while etcd answers `can only promote a learner member which is in sync with leader`
/// (measured on etcd 3.4.23: right after the learner starts) or anything else, until
/// `patience` runs out; like kubeadm's `MemberPromote`. A member that is no learner any
/// more (promoted by an earlier attempt) is fine.
pub fn member_promote(
    endpoints: &[String],
    tls: &ClientTls,
    addr: &str,
    patience: Duration,
) -> Result<()> {
    let url = format!("https://{addr}:2380");
    let deadline = Instant::now() + patience;
    // One try: Ok(None) promoted (or already a voter), Ok(Some(why)) not yet in sync.
    let try_once = || -> Result<Option<String>> {
        let members = member_list(endpoints, tls)?;
        let m = members
            .iter()
            .find(|m| m.peer_urls.contains(&url))
            .with_context(|| format!("no etcd member with peer URL {url} to promote"))?;
        if !m.learner {
            return Ok(None);
        }
        let out = etcdctl(
            endpoints,
            tls,
            &["member", "promote", &format!("{:x}", m.id)],
        )?;
        if !out.success {
            return Ok(Some(format!(
                "etcdctl member promote {:x}: {}",
                m.id,
                out.stderr.trim()
            )));
        }
        println!(
            "[etcd] Promoted learner member {:x} to a voting member",
            m.id
        );
        Ok(None)
    };
    loop {
        // Like kubeadm, keep trying through slow answers and a learner still catching up
        // until the patience runs out.
        let why = match try_once() {
            Ok(None) => return Ok(()),
            Ok(Some(why)) => why,
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("{why}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `ETCD_INITIAL_CLUSTER` for `name` joining at `url`: the started members and itself.
fn initial_cluster(members: &[Member], name: &str, url: &str) -> String {
    let mut parts: Vec<String> = members
        .iter()
        .filter(|m| m.started())
        .flat_map(|m| m.peer_urls.iter().map(move |u| format!("{}={u}", m.name)))
        .collect();
    parts.push(format!("{name}={url}"));
    parts.join(",")
}

/// A member as `etcdctl member list -w json` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    /// A non-voting learner (`isLearner`).
    pub learner: bool,
}

impl Member {
    /// A member that was added but never started has no name and no client URLs.
    pub fn started(&self) -> bool {
        !self.name.is_empty() && !self.client_urls.is_empty()
    }
}

pub fn member_list(endpoints: &[String], tls: &ClientTls) -> Result<Vec<Member>> {
    let out = etcdctl(endpoints, tls, &["member", "list", "-w", "json"])?;
    if !out.success {
        bail!("etcdctl member list: {}", out.stderr.trim());
    }
    parse_member_list(&out.stdout)
}

pub fn parse_member_list(json: &str) -> Result<Vec<Member>> {
    let v: serde_json::Value = serde_json::from_str(json)?;
    let strs = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(v["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| Member {
                    id: m["ID"].as_u64().unwrap_or(0),
                    name: m["name"].as_str().unwrap_or("").to_string(),
                    peer_urls: strs(&m["peerURLs"]),
                    client_urls: strs(&m["clientURLs"]),
                    learner: m["isLearner"].as_bool().unwrap_or(false),
                })
                .collect()
        })
        .unwrap_or_default())
}

/// etcd's v3 JSON gateway (`/v3/kv/*`) over TLS with a client certificate, on one or more
/// endpoints (comma-separated, like kube-apiserver's `--etcd-servers`): a call goes to the
/// endpoint that answered last and moves on to the next when one cannot be reached. An
/// answer with an error status (e.g. no quorum) is final.
#[derive(Debug)]
pub struct Gateway {
    bases: Vec<String>,
    current: std::sync::atomic::AtomicUsize,
    http: reqwest::Client,
    /// How long a read is retried while etcd answers `Unavailable` (a leader election).
    read_patience: Duration,
}

fn b64(s: &[u8]) -> String {
    B64.encode(s)
}

/// The key after every key with `prefix` (etcd's range_end for a prefix scan).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Overrides how long the API stand-ins wait for etcd per request (whole seconds). The
/// default, 3 s, keeps a lost quorum quick to see in the namespace lab; the VM TEST image
/// sets more (software-emulated CPUs made single-member puts miss 3 s).
pub const GATEWAY_TIMEOUT_ENV: &str = "MUSTER_STANDIN_ETCD_TIMEOUT_SECS";

/// The per-request etcd wait of the API stand-ins: [`GATEWAY_TIMEOUT_ENV`] or 3 s.
pub fn gateway_timeout() -> Result<Duration> {
    parse_gateway_timeout(std::env::var(GATEWAY_TIMEOUT_ENV).ok().as_deref())
}

fn parse_gateway_timeout(value: Option<&str>) -> Result<Duration> {
    let Some(v) = value else {
        return Ok(Duration::from_secs(3));
    };
    match v.trim().parse::<u64>() {
        Ok(secs @ 1..=60) => Ok(Duration::from_secs(secs)),
        _ => bail!("{GATEWAY_TIMEOUT_ENV}={v:?}: expected whole seconds from 1 to 60"),
    }
}

impl Gateway {
    pub fn new(endpoint: &str, ca_pem: &str, client: &CertKey, timeout: Duration) -> Result<Self> {
        let bases: Vec<String> = endpoint
            .split(',')
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .filter(|e| !e.is_empty())
            .collect();
        anyhow::ensure!(!bases.is_empty(), "no etcd endpoint in `{endpoint}`");
        Ok(Gateway {
            bases,
            current: std::sync::atomic::AtomicUsize::new(0),
            http: http_client(&Trust::Ca(ca_pem.to_string()), Some(client), timeout)?,
            read_patience: timeout,
        })
    }

    /// Sends to the endpoints in turn, from the one that answered last; the last
    /// transport error when none answers.
    async fn send(&self, path: &str, body: &serde_json::Value) -> Result<reqwest::Response> {
        use std::sync::atomic::Ordering;
        let start = self.current.load(Ordering::Relaxed);
        let mut failed = Vec::new();
        for i in 0..self.bases.len() {
            let at = (start + i) % self.bases.len();
            let url = format!("{}{}", self.bases[at], path);
            match self.http.post(&url).json(body).send().await {
                Ok(r) => {
                    self.current.store(at, Ordering::Relaxed);
                    return Ok(r);
                }
                Err(e) => {
                    let why = if e.is_timeout() {
                        "no answer in time".to_string()
                    } else {
                        format!("{:#}", anyhow::Error::new(e))
                    };
                    failed.push(format!("{}: {why}", self.bases[at]));
                }
            }
        }
        anyhow::bail!("etcd {path}: no endpoint answered ({})", failed.join("; "))
    }

    async fn call(&self, path: &str, body: serde_json::Value) -> Result<serde_json::Value> {
        self.call_once(path, &body).await.map_err(|(e, _)| e)
    }

    /// One request; on failure also whether etcd said `Unavailable` (HTTP 503 through the
    /// gateway: no leader, or the leader changed during the request).
    async fn call_once(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> std::result::Result<serde_json::Value, (anyhow::Error, bool)> {
        let resp = self.send(path, body).await.map_err(|e| (e, false))?;
        let status = resp.status();
        let v: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            let msg = v["message"]
                .as_str()
                .or_else(|| v["error"].as_str())
                .unwrap_or("")
                .to_string();
            return Err((
                anyhow::anyhow!("etcd {path}: {status}: {msg}"),
                status == reqwest::StatusCode::SERVICE_UNAVAILABLE,
            ));
        }
        Ok(v)
    }

    /// A read, retried while etcd answers `Unavailable`, as the real API server's etcd
    /// client (clientv3) retries immutable requests during a leader election; writes are
    /// not retried (they may have been applied).
    async fn read(&self, body: serde_json::Value) -> Result<serde_json::Value> {
        const PATH: &str = "/v3/kv/range";
        let began = std::time::Instant::now();
        loop {
            match self.call_once(PATH, &body).await {
                Ok(v) => return Ok(v),
                Err((_, true)) if began.elapsed() < self.read_patience => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Linearizable (quorum) read of one key.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let v = self
            .read(serde_json::json!({ "key": b64(key.as_bytes()) }))
            .await?;
        match v["kvs"].as_array().and_then(|a| a.first()) {
            Some(kv) => Ok(Some(B64.decode(kv["value"].as_str().unwrap_or(""))?)),
            None => Ok(None),
        }
    }

    /// Linearizable read of all keys under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let v = self
            .read(serde_json::json!({
                "key": b64(prefix.as_bytes()),
                "range_end": b64(&prefix_end(prefix.as_bytes())),
            }))
            .await?;
        let mut out = Vec::new();
        for kv in v["kvs"].as_array().into_iter().flatten() {
            let k = B64.decode(kv["key"].as_str().unwrap_or(""))?;
            let val = B64.decode(kv["value"].as_str().unwrap_or(""))?;
            out.push((String::from_utf8_lossy(&k).into_owned(), val));
        }
        Ok(out)
    }

    pub async fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        self.call(
            "/v3/kv/put",
            serde_json::json!({ "key": b64(key.as_bytes()), "value": b64(value) }),
        )
        .await?;
        Ok(())
    }

    pub async fn delete(&self, key: &str) -> Result<bool> {
        let v = self
            .call(
                "/v3/kv/deleterange",
                serde_json::json!({ "key": b64(key.as_bytes()) }),
            )
            .await?;
        Ok(v["deleted"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
            > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_list_json() {
        let json = r#"{"header":{"cluster_id":1},"members":[{"ID":1,"name":"cp1","peerURLs":["https://10.0.0.1:2380"],"clientURLs":["https://10.0.0.1:2379"]},{"ID":2,"peerURLs":["https://10.0.0.3:2380"],"isLearner":true}]}"#;
        let ms = parse_member_list(json).unwrap();
        assert_eq!(ms.len(), 2);
        assert!(ms[0].started() && !ms[0].learner);
        assert!(!ms[1].started() && ms[1].learner);
        assert_eq!(prefix_end(b"/a"), b"/b".to_vec());
    }

    #[test]
    fn gateway_timeout_defaults_to_3_s_and_refuses_nonsense() {
        assert_eq!(parse_gateway_timeout(None).unwrap(), Duration::from_secs(3));
        assert_eq!(
            parse_gateway_timeout(Some(" 8 ")).unwrap(),
            Duration::from_secs(8)
        );
        for bad in ["0", "61", "8s", ""] {
            let e = parse_gateway_timeout(Some(bad)).unwrap_err().to_string();
            assert!(e.contains(GATEWAY_TIMEOUT_ENV), "{e}");
        }
    }
}
