//! Parsers of kubeadm and etcd output, separate from invoking them and tested on captured
//! real output (`tests/fixtures/`).

use super::EtcdMember;
use protocol::records::Secret;

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

/// etcd's member list as JSON: from `etcdctl member list -w json` (IDs as numbers) or the
/// v3 gateway `POST /v3/cluster/member/list` (IDs as strings).
pub fn etcd_members(json: &str) -> Result<Vec<EtcdMember>, String> {
    #[derive(serde::Deserialize)]
    struct List {
        #[serde(default)]
        members: Vec<M>,
    }
    #[derive(serde::Deserialize)]
    struct M {
        #[serde(rename = "ID")]
        id: serde_json::Value,
        #[serde(default)]
        name: String,
        #[serde(rename = "peerURLs", default)]
        peer_urls: Vec<String>,
        #[serde(rename = "clientURLs", default)]
        client_urls: Vec<String>,
        #[serde(rename = "isLearner", default)]
        is_learner: bool,
    }
    let list: List = serde_json::from_str(json).map_err(|e| e.to_string())?;
    list.members
        .into_iter()
        .map(|m| {
            let id = match &m.id {
                serde_json::Value::Number(n) => n.as_u64(),
                serde_json::Value::String(s) => s.parse::<u64>().ok(),
                _ => None,
            }
            .ok_or_else(|| format!("member ID {} is not a uint64", m.id))?;
            Ok(EtcdMember {
                id,
                name: m.name,
                peer_urls: m.peer_urls,
                client_urls: m.client_urls,
                is_learner: m.is_learner,
            })
        })
        .collect()
}

/// etcd's `/health` body: `{"health":"true"}` or `{"health":"false"}` (a string in 3.4;
/// later releases add a `reason`).
pub fn etcd_health(body: &str) -> Result<bool, String> {
    #[derive(serde::Deserialize)]
    struct Health {
        health: serde_json::Value,
    }
    let h: Health = serde_json::from_str(body).map_err(|e| format!("etcd /health: {e}"))?;
    match &h.health {
        serde_json::Value::String(s) if s == "true" => Ok(true),
        serde_json::Value::String(s) if s == "false" => Ok(false),
        serde_json::Value::Bool(b) => Ok(*b),
        other => Err(format!("etcd /health: unexpected value {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        std::fs::read_to_string(&p).unwrap()
    }

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
}
