//! What the initializer publishes for joiners (sealed by the rendezvous client) and the
//! durable `initialized` record. Secrets have a redacted `Debug`.

use crate::clock::Millis;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A secret string (bootstrap token, certificate key, private key): never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Client credentials for etcd's v3 JSON gateway (PEM), so a node that has not joined yet
/// can remove its own stale member through a healthy one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdCreds {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinMaterial {
    /// Fencing token of the init that produced the cluster this material joins.
    pub init_token: u64,
    pub token: Secret,
    pub token_expires_ms: Millis,
    /// `sha256:<hex>` (kubeadm); empty for k3s.
    pub ca_cert_hash: String,
    /// kubeadm `--certificate-key` for control-plane joins (uploaded certs live 2 h).
    pub certificate_key: Option<Secret>,
    pub certificate_key_expires_ms: Option<Millis>,
    pub admin_kubeconfig: Option<Secret>,
    pub etcd: Option<EtcdCreds>,
}

impl JoinMaterial {
    /// Whether a joiner of this kind can still use the material `margin_ms` from now.
    pub fn fresh_for(&self, control_plane: bool, now: Millis, margin_ms: u64) -> bool {
        let until = now.saturating_add(margin_ms);
        let token_ok = self.token_expires_ms > until;
        let key_ok = !control_plane
            || match (
                self.certificate_key.as_ref(),
                self.certificate_key_expires_ms,
            ) {
                (Some(_), Some(exp)) => exp > until,
                (None, None) => true, // k3s: no certificate key
                _ => false,
            };
        token_ok && key_ok
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitRecord {
    pub node: String,
    pub token: u64,
    pub at_ms: Millis,
    /// The assembly generation the init belongs to (`crate::generation`); records written
    /// before generations existed are generation 0.
    #[serde(default)]
    pub generation: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshRequest {
    pub by: String,
    pub at_ms: Millis,
    /// The `join-material` revision a join was refused with (kubeadm said it expired): it
    /// is refreshed whatever its expiry times say, and joiners wait for that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_revision: Option<u64>,
}

/// The value of `keys::ADDONS_APPLIED`: which baked add-ons (their index digest,
/// `model::addons::AddonIndex::digest`) the cluster applied, in which assembly generation,
/// by which control plane under which `addons` lease token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddonsRecord {
    pub node: String,
    pub token: u64,
    pub digest: String,
    pub generation: u64,
    /// How many objects were applied.
    pub objects: usize,
    pub at_ms: Millis,
}

impl AddonsRecord {
    /// Whether this record says the add-ons with `digest` are applied in the assembly
    /// generation `current`: a retired generation's record, or another payload's add-ons
    /// (a rebuilt payload with other pins), do not count.
    pub fn covers(&self, digest: &str, current: u64) -> bool {
        self.digest == digest && self.generation >= current
    }
}

impl RefreshRequest {
    /// Whether this request says the material at `revision` was refused.
    pub fn rejects(&self, revision: u64) -> bool {
        self.rejected_revision == Some(revision)
    }

    /// A request as stored (`None` if unreadable: then it only asks for a refresh).
    pub fn parse(bytes: &[u8]) -> Option<RefreshRequest> {
        serde_json::from_slice(bytes).ok()
    }
}

/// A kubeadm bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}` (also fine as a k3s token).
pub fn new_bootstrap_token(rng: &mut impl rand::Rng) -> Secret {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut pick = |n: usize| -> String {
        (0..n)
            .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
            .collect()
    };
    let id = pick(6);
    let secret = pick(16);
    Secret(format!("{id}.{secret}"))
}

/// A certificate key as `kubeadm certs certificate-key` prints it: 32 random bytes, hex.
pub fn new_certificate_key(rng: &mut impl rand::Rng) -> Secret {
    let mut b = [0u8; 32];
    rng.fill(&mut b);
    Secret(hex::encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_addons_record_covers_its_digest_in_its_generation_only() {
        let r = AddonsRecord {
            node: "cp-2".into(),
            token: 4,
            digest: "abc".into(),
            generation: 2,
            objects: 9,
            at_ms: 1,
        };
        assert!(r.covers("abc", 2));
        assert!(
            r.covers("abc", 1),
            "a reset raced our read of the generation"
        );
        assert!(!r.covers("abc", 3), "a retired assembly's apply");
        assert!(!r.covers("def", 2), "another payload's add-ons");
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"generation\":2"), "{text}");
        assert_eq!(serde_json::from_str::<AddonsRecord>(&text).unwrap(), r);
    }

    fn material() -> JoinMaterial {
        JoinMaterial {
            init_token: 1,
            token: Secret("abcdef.0123456789abcdef".into()),
            token_expires_ms: 100_000,
            ca_cert_hash: "sha256:00".into(),
            certificate_key: Some(Secret("k".into())),
            certificate_key_expires_ms: Some(50_000),
            admin_kubeconfig: None,
            etcd: None,
        }
    }

    #[test]
    fn freshness_depends_on_role() {
        let m = material();
        assert!(m.fresh_for(true, 10_000, 1_000));
        assert!(
            !m.fresh_for(true, 49_500, 1_000),
            "certificate key expiring"
        );
        assert!(m.fresh_for(false, 49_500, 1_000), "workers need no key");
        assert!(!m.fresh_for(false, 99_500, 1_000), "token expiring");
    }

    #[test]
    fn a_request_rejects_only_its_revision() {
        let plain = br#"{"by":"cp-3","atMs":5}"#;
        let r = RefreshRequest::parse(plain).unwrap();
        assert!(
            !r.rejects(7),
            "a request from before the field rejects nothing"
        );
        let r = RefreshRequest {
            rejected_revision: Some(7),
            ..r
        };
        let back = RefreshRequest::parse(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert!(back.rejects(7));
        assert!(!back.rejects(8), "refreshed material is not rejected");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = format!("{:?}", material());
        assert!(!s.contains("0123456789abcdef"), "{s}");
    }

    #[test]
    fn generated_formats() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let t = new_bootstrap_token(&mut rng);
        let (a, b) = t.expose().split_once('.').unwrap();
        assert_eq!((a.len(), b.len()), (6, 16));
        assert_eq!(new_certificate_key(&mut rng).expose().len(), 64);
    }
}
