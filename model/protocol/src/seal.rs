//! The rendezvous crypto, pure: keys derived from the cluster secret (HKDF-SHA256), the
//! request signature (HMAC-SHA256) and sealing of stored values (ChaCha20-Poly1305).
//! Randomness (nonces) comes from the caller, so this module does no I/O and tests are
//! deterministic.

use crate::wire::Sealed;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hmac::{Hmac, Mac};
use model::secret::ClusterSecret;
use sha2::{Digest, Sha256};
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

const HKDF_SALT: &[u8] = b"muster rendezvous v1";
const SIGN_INFO: &[u8] = b"request signing";
const SEAL_INFO: &[u8] = b"value sealing";
const SIGN_DOMAIN: &str = "muster-rdv-sign-v1";
const SEAL_DOMAIN: &[u8] = b"muster-rdv-seal-v1";
const NONCE_LEN: usize = 12;

/// Both derived keys of one cluster. Nodes (and `muster status`) hold this; the server
/// holds only the [`SigningKey`], so it can check requests but never open a value.
#[derive(Clone)]
pub struct ClusterKeys {
    cluster_id: String,
    sign: SigningKey,
    seal: [u8; 32],
}

/// The HMAC key that authenticates requests of one cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey([u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("sealed value for `{context}` is not valid base64 or is too short")]
    Malformed { context: String },
    #[error(
        "sealed value for `{context}` does not open with this cluster's key (wrong cluster, wrong key, or tampered)"
    )]
    Forged { context: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a signing key is 64 hex digits; this one is not")]
pub struct BadSigningKey;

impl ClusterKeys {
    pub fn derive(secret: &ClusterSecret) -> ClusterKeys {
        ClusterKeys {
            cluster_id: secret.cluster_id(),
            sign: SigningKey(hkdf32(secret.as_bytes(), SIGN_INFO)),
            seal: hkdf32(secret.as_bytes(), SEAL_INFO),
        }
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.sign
    }

    /// Seals `plaintext` for `context` (a record key via [`record_context`] or a member
    /// via [`member_context`]); the cluster id and context are bound as associated data,
    /// so a value moved to another key or cluster does not open.
    pub fn seal(&self, context: &str, plaintext: &[u8], nonce: [u8; NONCE_LEN]) -> Sealed {
        let cipher = ChaCha20Poly1305::new(&self.seal.into());
        let aad = self.aad(context);
        // Encryption fails only for plaintexts over ~256 GiB, far beyond any body limit.
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Sealed(B64.encode(out))
    }

    pub fn open(&self, context: &str, sealed: &Sealed) -> Result<Vec<u8>, OpenError> {
        let raw = B64.decode(&sealed.0).map_err(|_| OpenError::Malformed {
            context: context.to_string(),
        })?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(OpenError::Malformed {
                context: context.to_string(),
            });
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let cipher = ChaCha20Poly1305::new(&self.seal.into());
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: &self.aad(context),
                },
            )
            .map_err(|_| OpenError::Forged {
                context: context.to_string(),
            })
    }

    fn aad(&self, context: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(64 + context.len());
        aad.extend_from_slice(SEAL_DOMAIN);
        aad.push(0);
        aad.extend_from_slice(self.cluster_id.as_bytes());
        aad.push(0);
        aad.extend_from_slice(context.as_bytes());
        aad
    }
}

impl fmt::Debug for ClusterKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKeys({}, <redacted>)", self.cluster_id)
    }
}

/// Seal context of a record value.
pub fn record_context(key: &str) -> String {
    format!("record:{key}")
}

/// Seal context of a member report.
pub fn member_context(name: &str) -> String {
    format!("member:{name}")
}

/// What a request signature covers. `path_and_query` is exactly the request target sent
/// (e.g. `/v1/clusters/abc/records?prefix=a`).
#[derive(Debug, Clone, Copy)]
pub struct RequestToSign<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub body: &'a [u8],
    /// Unix seconds.
    pub timestamp: u64,
    pub nonce: &'a str,
    pub client: &'a str,
}

impl RequestToSign<'_> {
    fn canonical(&self) -> String {
        let body_hash = hex::encode(Sha256::digest(self.body));
        format!(
            "{SIGN_DOMAIN}\n{}\n{}\n{body_hash}\n{}\n{}\n{}",
            self.method, self.path_and_query, self.timestamp, self.nonce, self.client
        )
    }
}

impl SigningKey {
    /// Hex HMAC-SHA256 of the canonical request.
    pub fn sign(&self, req: &RequestToSign<'_>) -> String {
        hex::encode(self.mac(req).finalize().into_bytes())
    }

    /// Constant-time check of a hex signature.
    pub fn verify(&self, req: &RequestToSign<'_>, signature_hex: &str) -> bool {
        match hex::decode(signature_hex) {
            Ok(sig) => self.mac(req).verify_slice(&sig).is_ok(),
            Err(_) => false,
        }
    }

    fn mac(&self, req: &RequestToSign<'_>) -> HmacSha256 {
        // HMAC accepts keys of any length; 32 bytes cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(req.canonical().as_bytes());
        mac
    }

    /// A bearer token for one `purpose` (hex, 128 bits): HMAC-SHA256 of the purpose under
    /// this key. Both the builder (from the cluster secret) and the rendezvous (from its key
    /// file) can compute it; neither the secret nor the key can be recovered from it.
    pub fn derive_token(&self, purpose: &str) -> String {
        // HMAC accepts keys of any length; 32 bytes cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(purpose.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// The key file form the server reads: 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Result<SigningKey, BadSigningKey> {
        let bytes = hex::decode(text.trim()).map_err(|_| BadSigningKey)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| BadSigningKey)?;
        Ok(SigningKey(arr))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

fn hkdf32(ikm: &[u8], info: &[u8]) -> [u8; 32] {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(HKDF_SALT), ikm);
    let mut okm = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 8160-byte output limit.
    hk.expand(info, &mut okm)
        .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF output length"));
    okm
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(b: u8) -> ClusterKeys {
        ClusterKeys::derive(&ClusterSecret::from_bytes([b; 32]))
    }

    #[test]
    fn sealed_values_open_only_in_their_context_and_cluster() {
        let k = keys(1);
        let s = k.seal(
            &record_context("join/token"),
            b"abcdef.0123456789abcdef",
            [9; 12],
        );
        assert!(!s.0.contains("abcdef"));
        assert_eq!(
            k.open(&record_context("join/token"), &s).unwrap(),
            b"abcdef.0123456789abcdef"
        );
        assert!(matches!(
            k.open(&record_context("other"), &s),
            Err(OpenError::Forged { .. })
        ));
        assert!(matches!(
            keys(2).open(&record_context("join/token"), &s),
            Err(OpenError::Forged { .. })
        ));
        assert!(matches!(
            k.open("x", &Sealed("!!".into())),
            Err(OpenError::Malformed { .. })
        ));
    }

    #[test]
    fn signing_and_sealing_keys_differ_and_signatures_cover_every_field() {
        let k = keys(1);
        assert_ne!(k.signing_key().0, k.seal);
        let req = RequestToSign {
            method: "POST",
            path_and_query: "/v1/clusters/x/records",
            body: b"{}",
            timestamp: 100,
            nonce: "n1",
            client: "cp-1",
        };
        let sig = k.signing_key().sign(&req);
        assert!(k.signing_key().verify(&req, &sig));
        assert!(!keys(2).signing_key().verify(&req, &sig));
        let variants = [
            RequestToSign {
                method: "PUT",
                ..req
            },
            RequestToSign {
                path_and_query: "/v1/clusters/y/records",
                ..req
            },
            RequestToSign {
                body: b"{ }",
                ..req
            },
            RequestToSign {
                timestamp: 101,
                ..req
            },
            RequestToSign { nonce: "n2", ..req },
            RequestToSign {
                client: "cp-2",
                ..req
            },
        ];
        for v in variants {
            assert!(!k.signing_key().verify(&v, &sig), "{v:?}");
        }
        assert!(!k.signing_key().verify(&req, "zz"));
    }

    #[test]
    fn signing_key_hex_round_trip() {
        let k = keys(3);
        let hex = k.signing_key().to_hex();
        assert_eq!(&SigningKey::from_hex(&hex).unwrap(), k.signing_key());
        assert!(SigningKey::from_hex("12").is_err());
        assert!(!format!("{:?}{:?}", k, k.signing_key()).contains(&hex[..8]));
    }
}
