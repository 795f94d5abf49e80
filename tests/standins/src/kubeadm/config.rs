//! kubeadm configuration files (`kubeadm.k8s.io/v1beta4` and `v1beta3`), read leniently
//! (unknown fields ignored) but failing like kubeadm on what it requires.

use crate::yaml::{self, Value, bool_at, str_at, strings_at};
use anyhow::{Result, bail};

pub const SUPPORTED: &[&str] = &["kubeadm.k8s.io/v1beta4", "kubeadm.k8s.io/v1beta3"];

#[derive(Debug, Clone, Default)]
pub struct BootstrapToken {
    pub token: String,
    /// Seconds; `None` = kubeadm's default 24h; `Some(0)` = never expires.
    pub ttl: Option<i64>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct InitConfig {
    pub node_name: Option<String>,
    pub advertise_address: Option<String>,
    pub bind_port: u16,
    pub bootstrap_tokens: Vec<BootstrapToken>,
    pub certificate_key: Option<String>,
    pub ignore_preflight_errors: Vec<String>,
    pub control_plane_endpoint: Option<String>,
    pub cert_sans: Vec<String>,
    pub cluster_name: String,
    pub kubernetes_version: String,
    pub etcd_data_dir: String,
    /// `etcd.external`: no local etcd member; the API server uses this cluster.
    pub external_etcd: Option<ExternalEtcd>,
    /// The ClusterConfiguration document as given (uploaded to `kubeadm-config`).
    pub cluster_configuration: String,
    /// `skipPhases` (like `addon/kube-proxy`), with `--skip-phases` added by the command.
    pub skip_phases: Vec<String>,
}

impl InitConfig {
    /// Whether the phase `name` (like `addon/kube-proxy`) is skipped: named itself or by
    /// its parent (`addon`), as kubeadm's phase runner reads `skipPhases`.
    pub fn skips(&self, name: &str) -> bool {
        let parent = name.split('/').next().unwrap_or(name);
        self.skip_phases.iter().any(|p| p == name || p == parent)
    }
}

/// A ClusterConfiguration's `etcd.external`: client URLs and the API server's TLS files
/// (absolute paths on the node).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalEtcd {
    pub endpoints: Vec<String>,
    pub ca_file: String,
    pub cert_file: String,
    pub key_file: String,
}

/// `etcd.external` of a ClusterConfiguration document, checked like kubeadm does (local
/// and external are mutually exclusive; https endpoints need the three files).
pub fn external_etcd(doc: &Value) -> Result<Option<ExternalEtcd>> {
    if yaml::at(doc, &["etcd", "external"]).is_none() {
        return Ok(None);
    }
    if yaml::at(doc, &["etcd", "local"]).is_some() {
        bail!("etcd.local and etcd.external are mutually exclusive");
    }
    let f = |k: &str| {
        str_at(doc, &["etcd", "external", k])
            .unwrap_or("")
            .to_string()
    };
    let e = ExternalEtcd {
        endpoints: strings_at(doc, &["etcd", "external", "endpoints"]),
        ca_file: f("caFile"),
        cert_file: f("certFile"),
        key_file: f("keyFile"),
    };
    if e.endpoints.is_empty() {
        bail!("etcd.external.endpoints: Required value: empty etcd.external.endpoints");
    }
    if e.endpoints.iter().any(|u| u.starts_with("https://"))
        && (e.ca_file.is_empty() || e.cert_file.is_empty() || e.key_file.is_empty())
    {
        bail!(
            "etcd.external: Invalid value: caFile, certFile and keyFile are required for https endpoints"
        );
    }
    Ok(Some(e))
}

#[derive(Debug, Clone, Default)]
pub struct JoinControlPlane {
    pub advertise_address: Option<String>,
    pub bind_port: u16,
    pub certificate_key: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct JoinConfig {
    pub api_server_endpoint: String,
    pub token: String,
    pub ca_cert_hashes: Vec<String>,
    pub unsafe_skip_ca_verification: bool,
    pub node_name: Option<String>,
    /// `nodeRegistration.kubeletExtraArgs` `node-ip`: the address the kubelet reports.
    pub node_ip: Option<String>,
    pub ignore_preflight_errors: Vec<String>,
    pub control_plane: Option<JoinControlPlane>,
}

/// `node-ip` of `nodeRegistration.kubeletExtraArgs`: a `[{name, value}]` list (v1beta4) or
/// a map (v1beta3).
fn kubelet_node_ip(doc: &Value) -> Option<String> {
    let args = yaml::at(doc, &["nodeRegistration", "kubeletExtraArgs"])?;
    if let Some(v) = str_at(args, &["node-ip"]) {
        return Some(v.to_string());
    }
    args.as_sequence()?
        .iter()
        .find(|a| str_at(a, &["name"]) == Some("node-ip"))
        .and_then(|a| str_at(a, &["value"]))
        .map(str::to_string)
}

/// The documents of a kubeadm config file keyed by kind, checking apiVersions like kubeadm.
fn kubeadm_documents(text: &str) -> Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    for doc in yaml::documents(text)? {
        let api = str_at(&doc, &["apiVersion"]).unwrap_or("").to_string();
        let kind = str_at(&doc, &["kind"]).unwrap_or("").to_string();
        if api.is_empty() || kind.is_empty() {
            bail!(
                "invalid configuration: kind and apiVersion is mandatory information that must be specified"
            );
        }
        if let Some(version) = api.strip_prefix("kubeadm.k8s.io/")
            && !SUPPORTED.contains(&api.as_str())
        {
            {
                if matches!(
                    version,
                    "v1alpha1" | "v1alpha2" | "v1alpha3" | "v1beta1" | "v1beta2"
                ) {
                    bail!(
                        "your configuration file uses an old API spec: {api:?}. Please use kubeadm v1.22 instead and run 'kubeadm config migrate --old-config old.yaml --new-config new.yaml', which will write the new, similar spec using a newer API version."
                    );
                }
                bail!(
                    "no kind {kind:?} is registered for version {api:?} in scheme \"k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/scheme/scheme.go:31\""
                );
            }
        }
        out.push((kind, doc));
    }
    Ok(out)
}

fn token_ok(t: &str) -> bool {
    let Some((id, secret)) = t.split_once('.') else {
        return false;
    };
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    };
    ok(id, 6) && ok(secret, 16)
}

pub fn validate_token(t: &str, field: &str) -> Result<()> {
    if !token_ok(t) {
        bail!(
            "{field}: Invalid value: {t:?}: the bootstrap token {t:?} was not of the form \"^([a-z0-9]{{6}})\\\\.([a-z0-9]{{16}})$\""
        );
    }
    Ok(())
}

pub fn validate_certificate_key(k: &str) -> Result<()> {
    match hex::decode(k) {
        Ok(b) if b.len() == 32 => Ok(()),
        _ => bail!(
            "certificateKey: Invalid value: {k:?}: certificate key must be a hex encoded string of an AES key of size 32 bytes"
        ),
    }
}

fn port(v: &Value, path: &[&str]) -> u16 {
    yaml::at(v, path)
        .and_then(|p| p.as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(6443)
}

pub fn parse_init(text: &str) -> Result<InitConfig> {
    let docs = kubeadm_documents(text)?;
    let mut cfg = InitConfig {
        bind_port: 6443,
        cluster_name: "kubernetes".into(),
        kubernetes_version: std::env::var("MUSTER_STANDIN_K8S_VERSION")
            .unwrap_or_else(|_| "v1.31.0".into()),
        etcd_data_dir: "/var/lib/etcd".into(),
        ..Default::default()
    };
    let mut seen_init_or_cluster = false;
    for (kind, doc) in &docs {
        match kind.as_str() {
            "InitConfiguration" => {
                seen_init_or_cluster = true;
                cfg.node_name = str_at(doc, &["nodeRegistration", "name"]).map(str::to_string);
                cfg.advertise_address =
                    str_at(doc, &["localAPIEndpoint", "advertiseAddress"]).map(str::to_string);
                cfg.bind_port = port(doc, &["localAPIEndpoint", "bindPort"]);
                cfg.certificate_key = str_at(doc, &["certificateKey"]).map(str::to_string);
                cfg.ignore_preflight_errors =
                    strings_at(doc, &["nodeRegistration", "ignorePreflightErrors"]);
                cfg.skip_phases = strings_at(doc, &["skipPhases"]);
                if let Some(Value::Sequence(tokens)) = yaml::at(doc, &["bootstrapTokens"]) {
                    for (i, t) in tokens.iter().enumerate() {
                        let Some(token) = str_at(t, &["token"]) else {
                            bail!("bootstrapTokens[{i}].token: Required value");
                        };
                        validate_token(token, &format!("bootstrapTokens[{i}].token"))?;
                        let ttl = match str_at(t, &["ttl"]) {
                            Some(d) => Some(crate::clock::parse_duration(d)?),
                            None => None,
                        };
                        cfg.bootstrap_tokens.push(BootstrapToken {
                            token: token.to_string(),
                            ttl,
                            description: str_at(t, &["description"]).map(str::to_string),
                        });
                    }
                }
                if let Some(k) = &cfg.certificate_key {
                    validate_certificate_key(k)?;
                }
            }
            "ClusterConfiguration" => {
                seen_init_or_cluster = true;
                cfg.control_plane_endpoint =
                    str_at(doc, &["controlPlaneEndpoint"]).map(str::to_string);
                cfg.cert_sans = strings_at(doc, &["apiServer", "certSANs"]);
                if let Some(n) = str_at(doc, &["clusterName"]) {
                    cfg.cluster_name = n.to_string();
                }
                if let Some(v) = str_at(doc, &["kubernetesVersion"]) {
                    cfg.kubernetes_version = v.to_string();
                }
                cfg.external_etcd = external_etcd(doc)?;
                if let Some(d) = str_at(doc, &["etcd", "local", "dataDir"]) {
                    cfg.etcd_data_dir = d.to_string();
                }
                cfg.cluster_configuration = serde_yaml::to_string(doc)?;
            }
            "JoinConfiguration" => bail!(
                "invalid configuration for GroupVersionKind JoinConfiguration: kind and apiVersion is mandatory information that must be specified... a JoinConfiguration is not accepted by `kubeadm init`"
            ),
            other => {
                eprintln!(
                    "W0000 muster-standin: [config] WARNING: Ignored YAML document with kind {other:?}"
                );
            }
        }
    }
    if !seen_init_or_cluster {
        bail!("no InitConfiguration or ClusterConfiguration kind was found in the YAML file");
    }
    Ok(cfg)
}

/// Whether a control-plane join adds its etcd member as a learner and promotes it once in
/// sync (kubeadm's `EtcdLearnerMode`): alpha in v1.27–v1.28 (off unless the
/// ClusterConfiguration's `featureGates` turn it on), beta and on by default from v1.29,
/// GA (always on) from v1.32. `kubeadm_version` is this kubeadm's own version.
pub fn etcd_learner_mode(kubeadm_version: &str, cluster_configuration: &str) -> bool {
    let minor = kubeadm_version
        .trim_start_matches('v')
        .split('.')
        .nth(1)
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    let gate = serde_yaml::from_str::<serde_yaml::Value>(cluster_configuration)
        .ok()
        .and_then(|doc| doc["featureGates"]["EtcdLearnerMode"].as_bool());
    match minor {
        0..=26 => false,
        27..=31 => gate.unwrap_or(minor >= 29),
        _ => true,
    }
}

pub fn parse_join(text: &str) -> Result<JoinConfig> {
    let docs = kubeadm_documents(text)?;
    let Some((_, doc)) = docs.iter().find(|(k, _)| k == "JoinConfiguration") else {
        bail!("no JoinConfiguration kind was found in the YAML file");
    };
    let mut errs: Vec<String> = Vec::new();
    let bt = yaml::at(doc, &["discovery", "bootstrapToken"]);
    if bt.is_none() {
        if yaml::at(doc, &["discovery", "file"]).is_some() {
            bail!(
                "muster stand-in: file-based discovery (discovery.file) is not supported; use discovery.bootstrapToken"
            );
        }
        errs.push("discovery: Invalid value: \"\": bootstrapToken or file must be set".into());
    }
    let empty = Value::Null;
    let bt = bt.unwrap_or(&empty);
    let endpoint = str_at(bt, &["apiServerEndpoint"]).unwrap_or("").to_string();
    let token = str_at(bt, &["token"])
        .or_else(|| str_at(doc, &["discovery", "tlsBootstrapToken"]))
        .unwrap_or("")
        .to_string();
    let hashes = strings_at(bt, &["caCertHashes"]);
    let unsafe_skip = bool_at(bt, &["unsafeSkipCAVerification"]).unwrap_or(false);
    if yaml::at(doc, &["discovery", "bootstrapToken"]).is_some() {
        if endpoint.is_empty() {
            errs.push("discovery.bootstrapToken.apiServerEndpoint: Invalid value: \"\": address must be set".into());
        }
        if token.is_empty() {
            errs.push("discovery.bootstrapToken.token: Invalid value: \"\": the bootstrap token is invalid".into());
        } else if !token_ok(&token) {
            errs.push(format!(
                "discovery.bootstrapToken.token: Invalid value: {token:?}: the bootstrap token is invalid"
            ));
        }
        if hashes.is_empty() && !unsafe_skip {
            errs.push("discovery.bootstrapToken.caCertHashes: Invalid value: \"\": using token-based discovery without caCertHashes can be unsafe. Set unsafeSkipCAVerification as true in your kubeadm config file or pass --discovery-token-unsafe-skip-ca-verification flag to continue".into());
        }
        for h in &hashes {
            if !h.starts_with("sha256:") || hex::decode(&h[7..]).map(|b| b.len()) != Ok(32) {
                errs.push(format!(
                    "discovery.bootstrapToken.caCertHashes: Invalid value: {h:?}: the hash must be of the form \"sha256:<64 hex characters>\""
                ));
            }
        }
    }
    let control_plane = yaml::at(doc, &["controlPlane"]).map(|cp| JoinControlPlane {
        advertise_address: str_at(cp, &["localAPIEndpoint", "advertiseAddress"])
            .map(str::to_string),
        bind_port: port(cp, &["localAPIEndpoint", "bindPort"]),
        certificate_key: str_at(cp, &["certificateKey"]).map(str::to_string),
    });
    if let Some(cp) = &control_plane
        && let Some(k) = &cp.certificate_key
        && validate_certificate_key(k).is_err()
    {
        errs.push(format!(
            "controlPlane.certificateKey: Invalid value: {k:?}: certificate key must be a hex encoded string of an AES key of size 32 bytes"
        ));
    }
    if !errs.is_empty() {
        bail!("[{}]", errs.join(", "));
    }
    Ok(JoinConfig {
        api_server_endpoint: endpoint,
        token,
        ca_cert_hashes: hashes,
        unsafe_skip_ca_verification: unsafe_skip,
        node_name: str_at(doc, &["nodeRegistration", "name"]).map(str::to_string),
        node_ip: kubelet_node_ip(doc),
        ignore_preflight_errors: strings_at(doc, &["nodeRegistration", "ignorePreflightErrors"]),
        control_plane,
    })
}

#[cfg(test)]
mod learner_tests {
    use super::etcd_learner_mode;

    #[test]
    fn learner_mode_follows_the_kubeadm_version_and_the_gate() {
        assert!(!etcd_learner_mode("v1.28.9", ""));
        assert!(etcd_learner_mode(
            "v1.28.9",
            "featureGates:\n  EtcdLearnerMode: true\n"
        ));
        assert!(etcd_learner_mode("v1.29.0", ""));
        assert!(!etcd_learner_mode(
            "v1.30.2",
            "featureGates:\n  EtcdLearnerMode: false\n"
        ));
        assert!(etcd_learner_mode(
            "v1.32.0",
            "featureGates:\n  EtcdLearnerMode: false\n"
        ));
        assert!(!etcd_learner_mode(
            "v1.26.0",
            "featureGates:\n  EtcdLearnerMode: true\n"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INIT: &str = r#"
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
bootstrapTokens:
- token: abcdef.0123456789abcdef
  ttl: 24h0m0s
localAPIEndpoint:
  advertiseAddress: 10.0.0.11
  bindPort: 6443
nodeRegistration:
  name: cp1
  kubeletExtraArgs:
  - name: node-ip
    value: 10.0.0.11
certificateKey: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
controlPlaneEndpoint: 10.0.0.10:6443
apiServer:
  certSANs: [10.0.0.10, k8s.lab]
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
"#;

    #[test]
    fn init_v1beta4() {
        let c = parse_init(INIT).unwrap();
        assert_eq!(c.node_name.as_deref(), Some("cp1"));
        assert_eq!(c.advertise_address.as_deref(), Some("10.0.0.11"));
        assert_eq!(c.control_plane_endpoint.as_deref(), Some("10.0.0.10:6443"));
        assert_eq!(c.cert_sans, vec!["10.0.0.10", "k8s.lab"]);
        assert_eq!(c.bootstrap_tokens[0].ttl, Some(86400));
    }

    #[test]
    fn external_etcd_is_read_and_checked() {
        assert_eq!(parse_init(INIT).unwrap().external_etcd, None);
        let ext = "apiServer:\n  certSANs: [10.0.0.10, k8s.lab]\netcd:\n  external:\n    endpoints: [\"https://10.0.0.81:2379\"]\n    caFile: /etc/kubernetes/pki/etcd/ca.crt\n    certFile: /etc/kubernetes/pki/apiserver-etcd-client.crt\n    keyFile: /etc/kubernetes/pki/apiserver-etcd-client.key\n";
        let text = INIT.replace("apiServer:\n  certSANs: [10.0.0.10, k8s.lab]\n", ext);
        let e = parse_init(&text).unwrap().external_etcd.unwrap();
        assert_eq!(e.endpoints, vec!["https://10.0.0.81:2379"]);
        assert_eq!(e.key_file, "/etc/kubernetes/pki/apiserver-etcd-client.key");
        let no_key = text.replace(
            "    keyFile: /etc/kubernetes/pki/apiserver-etcd-client.key\n",
            "",
        );
        let err = parse_init(&no_key).unwrap_err().to_string();
        assert!(err.contains("required for https"), "{err}");
    }

    #[test]
    fn old_api_is_refused() {
        let e = parse_init(&INIT.replace("v1beta4", "v1beta2")).unwrap_err();
        assert!(e.to_string().contains("old API spec"), "{e}");
    }

    #[test]
    fn join_requires_discovery_fields() {
        let e = parse_join(
            "apiVersion: kubeadm.k8s.io/v1beta3\nkind: JoinConfiguration\ndiscovery:\n  bootstrapToken:\n    token: abcdef.0123456789abcdef\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("apiServerEndpoint"), "{e}");
        assert!(e.contains("without caCertHashes can be unsafe"), "{e}");
        let e = parse_join("apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bootstrapToken or file must be set"), "{e}");
    }

    #[test]
    fn join_control_plane() {
        let j = parse_join(&format!(
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\ndiscovery:\n  bootstrapToken:\n    apiServerEndpoint: 10.0.0.10:6443\n    token: abcdef.0123456789abcdef\n    caCertHashes: [sha256:{}]\nnodeRegistration:\n  name: cp2\ncontrolPlane:\n  localAPIEndpoint:\n    advertiseAddress: 10.0.0.12\n  certificateKey: {}\n",
            "a".repeat(64),
            "b".repeat(64)
        ))
        .unwrap();
        assert_eq!(
            j.control_plane.unwrap().advertise_address.as_deref(),
            Some("10.0.0.12")
        );
    }
}
