//! The rendezvous server's certificate in the build output dir: made once by
//! [`generate_for`] for the rendezvous URL's host, then reused, so the
//! fingerprint the agents pin stays the same across rebuilds.

use crate::bake::write::write_atomic;
use model::HttpUrl;
use sha2::Digest as _;
use std::path::{Path, PathBuf};

pub const CERT_FILE: &str = "rendezvous.crt";
pub const KEY_FILE: &str = "rendezvous.key";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("spec.rendezvous.url: `{0}` has no host for the certificate")]
    NoHost(String),
    #[error("generating the rendezvous certificate for `{host}`")]
    Generate {
        host: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it")]
    NotPem { path: PathBuf },
}

/// A certificate, its key, and the SHA-256 of the certificate's DER (what agents pin).
#[derive(Clone)]
pub struct RendezvousCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub sha256: String,
}

impl std::fmt::Debug for RendezvousCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RendezvousCert")
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// The host part of the URL, without port or IPv6 brackets.
pub fn url_host(url: &HttpUrl) -> Option<String> {
    let auth = url.authority();
    let host = if let Some(rest) = auth.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        auth.rsplit_once(':').map(|(h, _)| h).unwrap_or(auth)
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// Self-signed certificate with the host as its only SAN (an IP SAN for an address).
pub fn generate(host: &str) -> Result<RendezvousCert, CertError> {
    let c = generate_for(&[host]).map_err(|source| CertError::Generate {
        host: host.to_string(),
        source,
    })?;
    Ok(RendezvousCert {
        cert_pem: c.cert_pem,
        key_pem: c.key_pem,
        sha256: c.cert_sha256,
    })
}

/// A generated certificate and key (PEM) and the fingerprint nodes pin.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedCert {
    pub cert_pem: String,
    pub key_pem: String,
    /// Lowercase hex SHA-256 of the certificate's DER; goes to
    /// `BakedRendezvous::cert_sha256`.
    pub cert_sha256: String,
}

impl std::fmt::Debug for GeneratedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedCert")
            .field("cert_sha256", &self.cert_sha256)
            .finish_non_exhaustive()
    }
}

/// A self-signed certificate for `sans` (IP addresses or DNS names, e.g. `["10.0.0.2"]`).
pub fn generate_for<S: AsRef<str>>(sans: &[S]) -> Result<GeneratedCert, rcgen::Error> {
    let names: Vec<String> = sans.iter().map(|s| s.as_ref().to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names)?;
    Ok(GeneratedCert {
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
        cert_sha256: fingerprint(ck.cert.der()),
    })
}

/// Lowercase hex SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(der))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reuses `DIR/rendezvous.{crt,key}` when both exist, else generates and stores them
/// (key mode 0600).
pub fn load_or_create(dir: &Path, url: &HttpUrl) -> Result<RendezvousCert, CertError> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    if cert_path.exists() && key_path.exists() {
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| CertError::NotPem {
                path: cert_path.clone(),
            })?;
        let sha256 = crate::bake::payload::sha256_hex(&der);
        return Ok(RendezvousCert {
            cert_pem,
            key_pem,
            sha256,
        });
    }
    let host = url_host(url).ok_or_else(|| CertError::NoHost(url.to_string()))?;
    let cert = generate(&host)?;
    write_atomic(&key_path, cert.key_pem.as_bytes(), 0o600).map_err(io(&key_path))?;
    write_atomic(&cert_path, cert.cert_pem.as_bytes(), 0o644).map_err(io(&cert_path))?;
    Ok(cert)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_cert_has_the_fingerprint_of_its_der_and_hides_its_key() {
        let g = generate_for(&["127.0.0.1", "rendezvous.local"]).unwrap();
        assert_eq!(g.cert_sha256.len(), 64);
        let der = rustls_pemfile::certs(&mut g.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(fingerprint(&der), g.cert_sha256);
        assert!(!format!("{g:?}").contains("PRIVATE"));
    }
}
