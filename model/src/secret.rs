//! The cluster secret: 32 random bytes, generated once by `muster build`, kept in the
//! build output dir (mode 0600) and delivered to each node by cloud-init. Everything the
//! rendezvous sees is signed and sealed with keys derived from it.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret([u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a cluster secret is 64 hex digits; this one is not")]
pub struct BadSecret;

impl ClusterSecret {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ClusterSecret(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The file form: 64 hex digits and a newline.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Result<Self, BadSecret> {
        let bytes = hex::decode(text.trim()).map_err(|_| BadSecret)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| BadSecret)?;
        Ok(ClusterSecret(arr))
    }

    /// The public cluster id: a hash of the secret, so it is stable across rebuilds and
    /// reveals nothing.
    pub fn cluster_id(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"muster cluster id v1");
        h.update(self.0);
        hex::encode(&h.finalize()[..12])
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_redacted_debug() {
        let s = ClusterSecret::from_bytes([7; 32]);
        assert_eq!(
            ClusterSecret::from_hex(&format!("{}\n", s.to_hex())).unwrap(),
            s
        );
        assert!(!format!("{s:?}").contains("0707"));
        assert!(ClusterSecret::from_hex("abc").is_err());
        assert_eq!(s.cluster_id().len(), 24);
        assert_ne!(
            s.cluster_id(),
            ClusterSecret::from_bytes([8; 32]).cluster_id()
        );
    }
}
