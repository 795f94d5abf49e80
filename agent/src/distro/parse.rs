//! Parsers of kubeadm and etcd output, separate from invoking them and tested on captured
//! real output (`tests/fixtures/`).

use crate::upgrade::order::ControlPlaneVersions;
use protocol::records::Secret;
use protocol::report::{DistroReason, MAX_REASON_LINES};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinCommand {
    pub endpoint: String,
    pub token: Secret,
    pub ca_cert_hash: String,
    pub control_plane: bool,
    pub certificate_key: Option<Secret>,
}

/// Finds the first `kubeadm join …` command in `text` (lines continued with `\` are
/// joined), as printed by `kubeadm init` and `kubeadm token create --print-join-command`.
pub fn join_command(text: &str) -> Result<JoinCommand, String> {
    let mut logical = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(body) = t.strip_suffix('\\') {
            cur.push_str(body.trim_end());
            cur.push(' ');
        } else {
            cur.push_str(t);
            logical.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        logical.push(cur);
    }
    let line = logical
        .iter()
        .find(|l| l.starts_with("kubeadm join "))
        .ok_or("no `kubeadm join` command in the output")?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut endpoint = None;
    let mut token = None;
    let mut hash = None;
    let mut control_plane = false;
    let mut key = None;
    let mut i = 2;
    while i < words.len() {
        let w = words[i];
        let next = words.get(i + 1).copied();
        match w {
            "--token" => {
                token = next;
                i += 1;
            }
            "--discovery-token-ca-cert-hash" => {
                hash = next;
                i += 1;
            }
            "--certificate-key" => {
                key = next;
                i += 1;
            }
            "--control-plane" => control_plane = true,
            w if !w.starts_with('-') && endpoint.is_none() => endpoint = Some(w),
            _ => {}
        }
        i += 1;
    }
    let token = token.ok_or("the join command has no --token")?;
    let (id, secret) = token.split_once('.').ok_or("the token is not id.secret")?;
    if id.len() != 6 || secret.len() != 16 {
        return Err("the token is not 6.16 characters".into());
    }
    let hash = hash.ok_or("the join command has no --discovery-token-ca-cert-hash")?;
    let hex = hash
        .strip_prefix("sha256:")
        .ok_or("the CA hash is not sha256:")?;
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err("the CA hash is not 64 hex digits".into());
    }
    Ok(JoinCommand {
        endpoint: endpoint
            .ok_or("the join command has no endpoint")?
            .to_string(),
        token: Secret(token.to_string()),
        ca_cert_hash: hash.to_string(),
        control_plane,
        certificate_key: key.map(|k| Secret(k.to_string())),
    })
}

fn is_cert_key(s: &str) -> bool {
    s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// The key printed after `[upload-certs] Using certificate key:`.
/// Whether a failed `kubeadm join` says its material expired: the uploaded certificates
/// (`kubeadm-certs`, 2 h) or the bootstrap token are gone. kubeadm's own words; the
/// cluster's clock decides, which may disagree with the expiry times the agent keeps.
pub fn material_expired(stderr: &str) -> bool {
    const SIGNS: &[&str] = &[
        "Secret \"kubeadm-certs\" was not found",
        "This Secret might have expired",
        "is invalid for this cluster or it has expired",
        "could not find a JWS signature in the cluster-info ConfigMap",
    ];
    SIGNS.iter().any(|s| stderr.contains(s))
}

pub fn certificate_key(text: &str) -> Result<Secret, String> {
    let mut lines = text.lines().map(str::trim);
    while let Some(l) = lines.next() {
        if l.ends_with("Using certificate key:") {
            return match lines.next() {
                Some(k) if is_cert_key(k) => Ok(Secret(k.to_string())),
                _ => Err("no 64-hex-digit key after `Using certificate key:`".into()),
            };
        }
    }
    Err("no `Using certificate key:` line in the output".into())
}

/// etcd's member list and `/health` answers: the parsers live beside the gateway calls
/// (`protocol::etcd_gateway`); tested here on the captured fixtures.
pub use protocol::etcd_gateway::{parse_health as etcd_health, parse_members as etcd_members};

/// The last `n` non-empty lines of `text`, trailing blanks trimmed, oldest first.
/// A Node object (JSON) whose `Ready` condition is `True`.
pub fn node_ready(json: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(json).is_ok_and(|v| {
        v.pointer("/status/conditions")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
    })
}

/// The first user's client certificate and key (PEM) of a kubeconfig with embedded
/// `client-certificate-data` / `client-key-data` (what kubeadm writes to admin.conf).
pub fn kubeconfig_identity(text: &str) -> Result<(String, String), String> {
    use base64::Engine as _;
    let v: serde_json::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let user = v
        .pointer("/users/0/user")
        .ok_or("no users[0].user in the kubeconfig")?;
    let field = |name: &str| -> Result<String, String> {
        let b64 = user
            .get(name)
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| format!("no {name} in users[0].user"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| format!("{name}: {e}"))?;
        String::from_utf8(bytes).map_err(|_| format!("{name}: not PEM text"))
    };
    Ok((field("client-certificate-data")?, field("client-key-data")?))
}

/// The first cluster's `server` and CA (PEM, from `certificate-authority-data`) of a
/// kubeconfig.
pub fn kubeconfig_server(text: &str) -> Result<(String, String), String> {
    use base64::Engine as _;
    let v: serde_json::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let cluster = v
        .pointer("/clusters/0/cluster")
        .ok_or("no clusters[0].cluster in the kubeconfig")?;
    let server = cluster
        .get("server")
        .and_then(serde_json::Value::as_str)
        .ok_or("no server in clusters[0].cluster")?;
    let b64 = cluster
        .get("certificate-authority-data")
        .and_then(serde_json::Value::as_str)
        .ok_or("no certificate-authority-data in clusters[0].cluster")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("certificate-authority-data: {e}"))?;
    let ca = String::from_utf8(bytes).map_err(|_| "certificate-authority-data: not PEM text")?;
    Ok((server.to_string(), ca))
}

/// The running control plane's versions ([`ControlPlaneVersions`]): the lowest of the API
/// server's `/version` (`gitVersion`) and the kubelet of every Node labelled
/// `node-role.kubernetes.io/control-plane` in a Node list but `joiner`'s own, and the
/// newest of those kubelets (`/version` when there is none). kubeadm's ClusterConfiguration
/// moves with the first control plane's `upgrade apply`, each control plane's kubelet only
/// at the end of its own upgrade, so a control plane still upgrading holds the lowest back.
/// The joiner's own Node is left out: a control plane re-created under its name finds the
/// Node of its previous machine there, at the old version, which only its own join can
/// move (it would wait for itself for ever).
pub fn control_plane_version(
    version: &str,
    nodes: &str,
    joiner: &str,
) -> Result<ControlPlaneVersions, String> {
    // A vendor suffix (`v1.30.4-gke.1`, `v1.32.0-rc.1`) does not change the minor.
    let parse = |what: &str, text: &str| -> Result<model::KubeVersion, String> {
        let core = text.split_once('-').map_or(text, |(c, _)| c);
        core.parse::<model::KubeVersion>()
            .map_err(|e| format!("{what} {text:?}: {e}"))
    };
    let v: serde_json::Value =
        serde_json::from_str(version).map_err(|e| format!("/version: {e}"))?;
    let git = v["gitVersion"]
        .as_str()
        .ok_or("/version has no gitVersion")?;
    let server = parse("/version gitVersion", git)?;
    let list: serde_json::Value =
        serde_json::from_str(nodes).map_err(|e| format!("the Node list: {e}"))?;
    let items = list["items"]
        .as_array()
        .ok_or("the Node list has no items")?;
    let mut kubelets = Vec::new();
    for n in items {
        let labels = &n["metadata"]["labels"];
        if labels
            .get("node-role.kubernetes.io/control-plane")
            .is_none()
        {
            continue;
        }
        let name = n["metadata"]["name"].as_str().unwrap_or("?");
        if name == joiner {
            continue;
        }
        let Some(k) = n["status"]["nodeInfo"]["kubeletVersion"].as_str() else {
            continue;
        };
        kubelets.push(parse(&format!("Node {name} kubeletVersion"), k)?);
    }
    Ok(ControlPlaneVersions {
        lowest: kubelets.iter().copied().fold(server, Ord::min),
        newest: kubelets.iter().copied().max().unwrap_or(server),
    })
}

pub fn last_lines(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let skip = lines.len().saturating_sub(n);
    lines[skip..].iter().map(|l| l.to_string()).collect()
}

/// Why a kubeadm command failed, from its stderr: the last `error execution phase PHASE:
/// ERROR` line (kubeadm's workflow runner wraps every phase's error so), else only the
/// output's last lines. With `--v=5` the phase line stands alone before a stack trace.
pub fn kubeadm_reason(source: &str, stderr: &str) -> DistroReason {
    const PREFIX: &str = "error execution phase ";
    let found = stderr.lines().rev().find_map(|l| {
        let rest = l.trim().strip_prefix(PREFIX)?;
        Some(match rest.split_once(": ") {
            Some((phase, error)) => (phase.to_string(), Some(error.trim().to_string())),
            None => (rest.trim().to_string(), None),
        })
    });
    let (phase, message) = found.map_or((None, None), |(p, m)| (Some(p), m));
    DistroReason {
        source: source.to_string(),
        phase,
        message,
        log_tail: last_lines(stderr, MAX_REASON_LINES),
    }
    .bounded()
}

/// Why a k3s server or agent stopped, from its log (`journalctl -u k3s -o cat`, syslog
/// lines or the lab's log file): the last fatal line's message, logfmt
/// `level=fatal msg="…"` (as under systemd) or the terminal form `FATA[0000] …`.
pub fn k3s_reason(source: &str, log: &str) -> DistroReason {
    let message = log.lines().rev().find_map(fatal_message);
    DistroReason {
        source: source.to_string(),
        phase: None,
        message,
        log_tail: last_lines(log, MAX_REASON_LINES),
    }
    .bounded()
}

/// The message of one logrus fatal line, in either of its formats.
fn fatal_message(line: &str) -> Option<String> {
    if let Some(at) = line.find("level=fatal ") {
        let rest = &line[at..];
        let quoted = rest.find("msg=\"")? + "msg=\"".len();
        return Some(unquote_logfmt(&rest[quoted..]));
    }
    let at = line.find("FATA[")?;
    let rest = &line[at..];
    let end = rest.find(']')?;
    Some(rest[end + 1..].trim().to_string())
}

/// A logfmt value after its opening quote, up to the closing one, `\"` and `\\` undone.
fn unquote_logfmt(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('n') => out.push(' '),
                Some('t') => out.push(' '),
                Some(o) => out.push(o),
                None => break,
            },
            c => out.push(c),
        }
    }
    out
}

/// `kubeadm version -o short`: one line, `v1.31.4`.
pub fn kubeadm_short_version(stdout: &str) -> Result<String, String> {
    let v = stdout.trim();
    if v.starts_with('v') && !v.contains(char::is_whitespace) && v.len() > 1 {
        Ok(v.to_string())
    } else {
        Err(format!(
            "`kubeadm version -o short` printed {v:?}, not vX.Y.Z"
        ))
    }
}

/// `k3s --version`: `k3s version v1.31.6+k3s1 (6ab750f9)` then `go version go1.22.12`;
/// the release is the third word of the first line.
pub fn k3s_version(stdout: &str) -> Result<String, String> {
    let first = stdout.lines().next().unwrap_or("").trim();
    match first.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["k3s", "version", v, ..] if v.starts_with('v') => Ok(v.to_string()),
        _ => Err(format!(
            "`k3s --version` printed {first:?}, not `k3s version vX.Y.Z+k3sN (commit)`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::etcd_view::EtcdMember;

    #[test]
    fn node_ready_reads_the_ready_condition() {
        let n = |s: &str| {
            format!(
                r#"{{"kind":"Node","status":{{"conditions":[{{"type":"MemoryPressure","status":"False"}},{{"type":"Ready","status":"{s}","reason":"KubeletNotReady"}}]}}}}"#
            )
        };
        assert!(node_ready(&n("True")));
        assert!(!node_ready(&n("False")));
        assert!(!node_ready(r#"{"kind":"Node","status":{}}"#));
        assert!(!node_ready("not json"));
    }

    #[test]
    fn kubeconfig_identity_decodes_the_embedded_pem() {
        // The shape kubeadm writes (admin.conf), with short stand-in data.
        let kc = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: QUJD\n    server: https://10.0.0.10:6443\n  name: c\nusers:\n- name: kubernetes-admin\n  user:\n    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZ\n";
        assert_eq!(
            kubeconfig_identity(kc).unwrap(),
            ("CERT".to_string(), "KEY".to_string())
        );
        let e = kubeconfig_identity("users: []\n").unwrap_err();
        assert!(e.contains("users[0]"), "{e}");
    }

    #[test]
    fn kubeconfig_server_reads_the_first_cluster() {
        let kc = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: QUJD\n    server: https://10.0.0.10:6443\n  name: c\n";
        assert_eq!(
            kubeconfig_server(kc).unwrap(),
            ("https://10.0.0.10:6443".to_string(), "ABC".to_string())
        );
        let e = kubeconfig_server("clusters:\n- cluster:\n    server: https://x\n").unwrap_err();
        assert!(e.contains("certificate-authority-data"), "{e}");
    }

    /// `/version` in kube-apiserver's `version.Info` shape; Nodes as the API lists them.
    fn version_info(git: &str) -> String {
        format!(
            r#"{{"major":"1","minor":"32","gitVersion":"{git}","gitCommit":"70d3cc986aa8221cd1dfb1121852688902d3bf53","gitTreeState":"clean","buildDate":"2024-12-11T17:57:28Z","goVersion":"go1.23.3","compiler":"gc","platform":"linux/amd64"}}"#
        )
    }

    fn nodes(list: &[(&str, bool, &str)]) -> String {
        let items: Vec<serde_json::Value> = list
            .iter()
            .map(|(name, cp, kubelet)| {
                let mut labels = serde_json::json!({"kubernetes.io/hostname": name});
                if *cp {
                    labels["node-role.kubernetes.io/control-plane"] = "".into();
                }
                serde_json::json!({"kind": "Node", "metadata": {"name": name, "labels": labels},
                    "status": {"nodeInfo": {"kubeletVersion": kubelet}}})
            })
            .collect();
        serde_json::json!({"kind": "NodeList", "apiVersion": "v1", "items": items}).to_string()
    }

    /// The first control plane's `upgrade apply` moved the API server; the others'
    /// kubelets still run the old minor, so the control plane has not reached it; workers
    /// do not count.
    #[test]
    fn the_control_plane_version_is_its_lowest_part_and_its_newest_kubelet() {
        let v = |s: &str| s.parse::<model::KubeVersion>().unwrap();
        let both = |lowest: &str, newest: &str| ControlPlaneVersions {
            lowest: v(lowest),
            newest: v(newest),
        };
        let mid_roll = nodes(&[
            ("cp-1", true, "v1.32.0"),
            ("cp-2", true, "v1.31.4"),
            ("w-1", false, "v1.30.9"),
        ]);
        assert_eq!(
            control_plane_version(&version_info("v1.32.0"), &mid_roll, "w-9").unwrap(),
            both("v1.31.4", "v1.32.0")
        );
        // The API server behind the VIP may be either: the kubelets decide the newest.
        assert_eq!(
            control_plane_version(&version_info("v1.31.4"), &mid_roll, "w-9").unwrap(),
            both("v1.31.4", "v1.32.0")
        );
        let done = nodes(&[
            ("cp-1", true, "v1.32.0"),
            ("cp-2", true, "v1.32.0"),
            ("w-1", false, "v1.31.4"),
        ]);
        assert_eq!(
            control_plane_version(&version_info("v1.32.0"), &done, "w-9").unwrap(),
            both("v1.32.0", "v1.32.0")
        );
        // Before `upgrade apply` the API server holds the lowest back, whatever the
        // kubelets say.
        assert_eq!(
            control_plane_version(&version_info("v1.31.4"), &done, "w-9")
                .unwrap()
                .lowest,
            v("v1.31.4")
        );
        // The first control plane mid-upgrade: `upgrade apply` moved its API server, its
        // kubelet not yet; the newest kubelet is still the old one.
        let applying = nodes(&[("cp-1", true, "v1.31.4"), ("cp-2", true, "v1.31.4")]);
        assert_eq!(
            control_plane_version(&version_info("v1.32.0"), &applying, "cp-3").unwrap(),
            both("v1.31.4", "v1.31.4")
        );
        // k3s spells its revision; vendors add a suffix; no control-plane Node listed:
        // the API server is both.
        assert_eq!(
            control_plane_version(&version_info("v1.32.2+k3s1"), &nodes(&[]), "w-9").unwrap(),
            both("v1.32.2+k3s1", "v1.32.2+k3s1")
        );
        assert_eq!(
            control_plane_version(&version_info("v1.30.4-gke.1348000"), &nodes(&[]), "w-9")
                .unwrap(),
            both("v1.30.4", "v1.30.4")
        );
        // A control plane re-created under its name: its previous machine's Node (at the
        // old version) does not hold it back; the others do.
        assert_eq!(
            control_plane_version(&version_info("v1.32.0"), &mid_roll, "cp-2").unwrap(),
            both("v1.32.0", "v1.32.0")
        );
        assert_eq!(
            control_plane_version(&version_info("v1.32.0"), &mid_roll, "cp-1").unwrap(),
            both("v1.31.4", "v1.31.4")
        );
        let e = control_plane_version("{}", &done, "w-9").unwrap_err();
        assert!(e.contains("gitVersion"), "{e}");
        let e = control_plane_version(&version_info("v1.32.0"), "{}", "w-9").unwrap_err();
        assert!(e.contains("items"), "{e}");
    }

    use crate::test_fixture as fixture;

    #[test]
    fn init_output_gives_the_control_plane_join() {
        let j = join_command(&fixture("kubeadm-init-v1.20.out")).unwrap();
        assert_eq!(j.endpoint, "192.168.4.20:6443");
        assert_eq!(j.token.expose(), "zlo94s.6bws9rl0j69jx1ob");
        assert_eq!(
            j.ca_cert_hash,
            "sha256:0e1d9858d9a6ea37e4933820490e34598732d43f872c9f4dd82832b906816d18"
        );
        assert!(j.control_plane);
        assert_eq!(
            j.certificate_key.unwrap().expose(),
            "2fb2e3372428723ed5ccc023a88e8c2e076cd9fcbb31bf4cb5f41455cc3b2390"
        );
    }

    #[test]
    fn token_create_output() {
        let j = join_command(&fixture("kubeadm-token-create-print-join-v1.20.out")).unwrap();
        assert_eq!(j.token.expose(), "2m0ktp.8gz9uqovnj3uaatd");
        assert!(!j.control_plane);
        assert!(j.certificate_key.is_none());
    }

    #[test]
    fn upload_certs_output() {
        let k = certificate_key(&fixture("kubeadm-upload-certs-v1.20.out")).unwrap();
        assert_eq!(
            k.expose(),
            "aeb912d5a51562817f32c1ec5184160f5681d375fae721b6a74d469bbda866a5"
        );
    }

    #[test]
    fn bad_outputs_are_named() {
        assert!(
            join_command("error execution phase")
                .unwrap_err()
                .contains("no `kubeadm join`")
        );
        assert!(
            join_command(
                "kubeadm join 1.2.3.4:6443 --token abc.def --discovery-token-ca-cert-hash sha256:00"
            )
            .unwrap_err()
            .contains("6.16")
        );
        assert!(certificate_key("[upload-certs] Using certificate key:\nshort").is_err());
    }

    #[test]
    fn etcdctl_member_list() {
        let m = etcd_members(&fixture("etcdctl-member-list-v3.json")).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].id, 5800301375361824262);
        assert_eq!(m[0].name, "nodeb");
        assert_eq!(m[0].peer_urls, vec!["http://172.17.0.3:2380"]);
        assert!(m.iter().all(EtcdMember::started));
    }

    #[test]
    fn etcd_3_4_learners_unstarted_started_and_through_the_gateway() {
        // Captured from etcd 3.4.23: `member add --learner`, before and after the learner
        // started; the same list through the v3 JSON gateway.
        let m = etcd_members(&fixture("etcdctl-member-list-learner-v3.4.json")).unwrap();
        assert_eq!(m.len(), 2);
        assert!(m[0].started() && !m[0].is_learner);
        assert!(!m[1].started() && m[1].is_learner && m[1].name.is_empty());
        assert_eq!(m[1].id, 15271815033826767767);
        let gw = etcd_members(&fixture("etcd-gateway-member-list-learner-v3.4.json")).unwrap();
        assert_eq!(gw, m);
        let s = etcd_members(&fixture("etcdctl-member-list-learner-started-v3.4.json")).unwrap();
        assert!(s[1].started() && s[1].is_learner);
        assert_eq!(s[1].name, "e2");
    }

    #[test]
    fn etcd_health_bodies() {
        assert_eq!(etcd_health(&fixture("etcd-health-v3.4.json")), Ok(true));
        assert_eq!(
            etcd_health(&fixture("etcd-health-no-quorum-v3.4.json")),
            Ok(false)
        );
        assert_eq!(etcd_health(r#"{"health":true,"reason":""}"#), Ok(true));
        assert!(etcd_health("503 Service Unavailable").is_err());
    }

    #[test]
    fn gateway_ids_are_strings_and_unstarted_members_have_no_name() {
        let json = r#"{"members":[{"ID":"6636428871878721128","peerURLs":["https://10.0.0.12:2380"],"isLearner":true}]}"#;
        let m = etcd_members(json).unwrap();
        assert_eq!(m[0].id, 6636428871878721128);
        assert!(!m[0].started());
        assert!(m[0].is_learner);
    }

    #[test]
    fn expired_material_is_recognized() {
        let certs = "error execution phase control-plane-prepare/download-certs: error downloading certs: error downloading the secret: Secret \"kubeadm-certs\" was not found in the \"kube-system\" Namespace. This Secret might have expired. Please, run `kubeadm init phase upload-certs --upload-certs` on a control plane to generate a new one\nTo see the stack trace of this error execute with --v=5 or higher";
        assert!(material_expired(certs));
        let token = "error execution phase preflight: couldn't validate the identity of the API Server: could not find a JWS signature in the cluster-info ConfigMap for token ID \"abcdef\"";
        assert!(material_expired(token));
        let other = "error execution phase kubelet-start: timed out waiting for the condition";
        assert!(!material_expired(other));
    }

    #[test]
    fn kubeadm_failing_phase_and_error() {
        let r = kubeadm_reason(
            "kubeadm init",
            &fixture("kubeadm-init-wait-control-plane-v1.19.err"),
        );
        assert_eq!(r.phase.as_deref(), Some("wait-control-plane"));
        assert_eq!(
            r.message.as_deref(),
            Some("couldn't initialize a Kubernetes cluster")
        );
        assert_eq!(r.log_tail.len(), 3);
        assert!(r.log_tail[2].starts_with("To see the stack trace"));
        // With --v=5 the phase line stands alone before the stack trace.
        let verbose = "couldn't initialize a Kubernetes cluster\nerror execution phase wait-control-plane\nk8s.io/kubernetes/cmd/kubeadm/app/cmd/phases/workflow.(*Runner).Run.func1\n";
        let r = kubeadm_reason("kubeadm init", verbose);
        assert_eq!(r.phase.as_deref(), Some("wait-control-plane"));
        assert_eq!(r.message, None);
        let none = kubeadm_reason("kubeadm join", "I0101 some klog line\nkilled\n");
        assert_eq!((none.phase, none.message), (None, None));
        assert_eq!(none.log_tail, vec!["I0101 some klog line", "killed"]);
    }

    #[test]
    fn k3s_fatal_line_under_systemd_and_on_a_terminal() {
        let r = k3s_reason(
            "k3s.service log",
            &fixture("k3s-journal-datastore-refused-v1.18.log"),
        );
        assert_eq!(
            r.message.as_deref(),
            Some(
                "starting kubernetes: preparing server: creating storage endpoint: building kine: dial tcp 45.79.122.91:3306: connect: connection refused"
            )
        );
        assert_eq!(r.log_tail.len(), 5);
        let tty = k3s_reason("k3s", &fixture("k3s-fatal-tty-v1.26.log"));
        assert!(
            tty.message
                .as_deref()
                .is_some_and(|m| m.starts_with("starting kubernetes: preparing server")
                    && m.ends_with("statements at once?")),
            "{tty:?}"
        );
        let quoted = r#"time="x" level=fatal msg="token CA hash \"abc\" does not match" foo=bar"#;
        assert_eq!(
            k3s_reason("k3s", quoted).message.as_deref(),
            Some(r#"token CA hash "abc" does not match"#)
        );
        let alive = k3s_reason("k3s", "level=info msg=\"Starting k3s\"\n");
        assert_eq!(alive.message, None);
        assert_eq!(alive.log_tail.len(), 1);
    }

    #[test]
    fn a_long_log_keeps_its_last_lines_only() {
        let log: String = (0..500)
            .map(|i| format!("level=info msg=\"line {i}\"\n"))
            .collect();
        let r = k3s_reason("k3s", &log);
        assert_eq!(r.log_tail.len(), MAX_REASON_LINES);
        assert!(r.log_tail.last().unwrap().contains("line 499"));
    }

    #[test]
    fn version_outputs() {
        assert_eq!(kubeadm_short_version("v1.31.4\n"), Ok("v1.31.4".into()));
        assert!(kubeadm_short_version("kubeadm version: &version.Info{}").is_err());
        assert_eq!(
            k3s_version(&fixture("k3s-version-v1.26.out")),
            Ok("v1.26.8+k3s1".into())
        );
        assert!(k3s_version("go version go1.20.7\n").is_err());
    }
}
