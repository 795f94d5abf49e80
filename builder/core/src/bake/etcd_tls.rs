//! The external etcd cluster's TLS material a build delivers to the control planes: the
//! etcd CA and the API server's etcd client certificate and key, read from the files the
//! spec names (`spec.datastore.caFile`, `certFile`, `keyFile`, relative to the spec file).
//!
//! They go into the control planes' cloud-init user-data only (the key is a secret), never
//! into the shared payload nor any other node's seed. Checked here so a wrong file fails the
//! build, not a control plane's first boot: each must be PEM, the certificate must parse as
//! one and chain to the CA (client use), and the key must be a private key matching it.

use model::spec::{Cluster, Datastore};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The three PEM texts, as the control planes' `write_files` carry them.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdClientTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for EtcdClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClientTls").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EtcdTlsError {
    #[error("spec.datastore.{field}: cannot read {path}: {source}")]
    Read {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spec.datastore.{field}: {path} is not {what}")]
    NotPem {
        field: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error(
        "spec.datastore.certFile: {cert} does not chain to the CA in {ca} (or is expired or not for client use): {reason}"
    )]
    Chain {
        cert: PathBuf,
        ca: PathBuf,
        reason: String,
    },
    #[error("spec.datastore.keyFile: {key} is not the key of the certificate in {cert}: {reason}")]
    KeyMismatch {
        key: PathBuf,
        cert: PathBuf,
        reason: String,
    },
}

/// Reads and checks the material for `cluster`; `None` unless the datastore is an external
/// etcd with the files set (http endpoints need none). `spec_dir` is the spec file's dir.
pub fn load(cluster: &Cluster, spec_dir: &Path) -> Result<Option<EtcdClientTls>, EtcdTlsError> {
    let Datastore::ExternalEtcd {
        ca_file: Some(ca),
        cert_file: Some(cert),
        key_file: Some(key),
        ..
    } = &cluster.datastore
    else {
        return Ok(None);
    };
    let (ca_path, cert_path, key_path) =
        (spec_dir.join(ca), spec_dir.join(cert), spec_dir.join(key));
    let ca_pem = read("caFile", &ca_path)?;
    let cert_pem = read("certFile", &cert_path)?;
    let key_pem = read("keyFile", &key_path)?;
    let ca_der = first_cert("caFile", &ca_path, &ca_pem)?;
    let cert_der = first_cert("certFile", &cert_path, &cert_pem)?;
    let key_der = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .ok()
        .flatten()
        .ok_or_else(|| EtcdTlsError::NotPem {
            field: "keyFile",
            path: key_path.clone(),
            what: "a PEM private key",
        })?;
    check_chain(&ca_path, ca_der, &cert_path, cert_der.clone())?;
    check_key(&key_path, key_der, &cert_path, cert_der)?;
    Ok(Some(EtcdClientTls {
        ca_pem,
        cert_pem,
        key_pem,
    }))
}

fn read(field: &'static str, path: &Path) -> Result<String, EtcdTlsError> {
    std::fs::read_to_string(path).map_err(|source| EtcdTlsError::Read {
        field,
        path: path.to_path_buf(),
        source,
    })
}

fn first_cert(
    field: &'static str,
    path: &Path,
    pem: &str,
) -> Result<CertificateDer<'static>, EtcdTlsError> {
    let der = rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| EtcdTlsError::NotPem {
            field,
            path: path.to_path_buf(),
            what: "a PEM certificate",
        })?;
    // A PEM block is not yet a certificate: let webpki parse it.
    let parsed = rustls::server::ParsedCertificate::try_from(&der);
    if parsed.is_err() {
        return Err(EtcdTlsError::NotPem {
            field,
            path: path.to_path_buf(),
            what: "a PEM certificate (the block does not parse as X.509)",
        });
    }
    Ok(der)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Verifies the client certificate against the CA as a TLS server with client auth would.
fn check_chain(
    ca_path: &Path,
    ca: CertificateDer<'static>,
    cert_path: &Path,
    cert: CertificateDer<'static>,
) -> Result<(), EtcdTlsError> {
    let chain_err = |reason: String| EtcdTlsError::Chain {
        cert: cert_path.to_path_buf(),
        ca: ca_path.to_path_buf(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca)
        .map_err(|e| chain_err(format!("the CA is not usable as a trust anchor: {e}")))?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| chain_err(e.to_string()))?;
    verifier
        .verify_client_cert(&cert, &[], UnixTime::now())
        .map_err(|e| chain_err(e.to_string()))?;
    Ok(())
}

fn check_key(
    key_path: &Path,
    key: PrivateKeyDer<'static>,
    cert_path: &Path,
    cert: CertificateDer<'static>,
) -> Result<(), EtcdTlsError> {
    let mismatch = |reason: String| EtcdTlsError::KeyMismatch {
        key: key_path.to_path_buf(),
        cert: cert_path.to_path_buf(),
        reason,
    };
    let p = provider();
    let signing = p
        .key_provider
        .load_private_key(key)
        .map_err(|e| mismatch(format!("unsupported key: {e}")))?;
    rustls::sign::CertifiedKey::new(vec![cert], signing)
        .keys_match()
        .map_err(|e| mismatch(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn example() -> (Cluster, PathBuf) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let spec = crate::spec_source::load(Some(&dir.join("seed-004-kubeadm-external-etcd.yaml")))
            .unwrap();
        (spec.cluster, dir)
    }

    #[test]
    fn the_example_material_loads() {
        let (c, dir) = example();
        let tls = load(&c, &dir).unwrap().unwrap();
        assert!(tls.key_pem.contains("PRIVATE KEY"));
        assert!(tls.cert_pem.contains("CERTIFICATE"));
    }

    #[test]
    fn wrong_files_name_the_field_and_file() {
        let (mut c, dir) = example();
        let tmp = tempfile::tempdir().unwrap();
        let pki = dir.join("seed-004-etcd-pki");
        std::fs::write(tmp.path().join("garbage"), "not pem\n").unwrap();
        for f in [
            "etcd-ca.crt",
            "apiserver-etcd-client.crt",
            "apiserver-etcd-client.key",
        ] {
            std::fs::copy(pki.join(f), tmp.path().join(f)).unwrap();
        }
        let set = |c: &mut Cluster, ca: &str, cert: &str, key: &str| {
            if let Datastore::ExternalEtcd {
                ca_file,
                cert_file,
                key_file,
                ..
            } = &mut c.datastore
            {
                *ca_file = Some(ca.into());
                *cert_file = Some(cert.into());
                *key_file = Some(key.into());
            }
        };
        let cases = [
            (
                "missing",
                "apiserver-etcd-client.crt",
                "apiserver-etcd-client.key",
                "caFile: cannot read",
            ),
            (
                "etcd-ca.crt",
                "garbage",
                "apiserver-etcd-client.key",
                "certFile",
            ),
            (
                "etcd-ca.crt",
                "apiserver-etcd-client.crt",
                "garbage",
                "keyFile",
            ),
            // The CA is not the client cert's issuer when the client cert itself is the "CA".
            (
                "apiserver-etcd-client.crt",
                "apiserver-etcd-client.crt",
                "apiserver-etcd-client.key",
                "does not chain",
            ),
            (
                "etcd-ca.crt",
                "etcd-ca.crt",
                "apiserver-etcd-client.key",
                "certFile",
            ),
        ];
        for (ca, cert, key, want) in cases {
            set(&mut c, ca, cert, key);
            let e = load(&c, tmp.path()).unwrap_err().to_string();
            assert!(e.contains(want), "{ca} {cert} {key}: {e}");
        }
    }
}
