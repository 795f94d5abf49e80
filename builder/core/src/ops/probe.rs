//! Does an API endpoint answer? A TCP connect, then (with the cluster CA) a TLS handshake
//! whose certificate must chain to that CA and name the endpoint's IP in its SANs: what
//! kubectl will demand of it.

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("{addr}: TCP connect: {detail}")]
    Connect { addr: SocketAddr, detail: String },
    #[error("{addr}: TLS: {detail}")]
    Tls { addr: SocketAddr, detail: String },
    #[error("cluster CA: {0}")]
    Ca(String),
}

/// What a probe found, for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    pub endpoint: String,
    pub tcp: bool,
    /// `None` when no handshake was tried (no CA known, or TCP failed).
    pub tls: Option<bool>,
    pub error: Option<String>,
}

impl ProbeResult {
    pub fn ok(&self) -> bool {
        self.tcp && self.tls != Some(false) && self.error.is_none()
    }
}

/// The trust roots from PEM (a kubeconfig's decoded `certificate-authority-data`).
pub fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, ProbeError> {
    let mut roots = RootCertStore::empty();
    let mut any = false;
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        let cert: CertificateDer<'static> =
            cert.map_err(|e| ProbeError::Ca(format!("bad PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| ProbeError::Ca(format!("unusable certificate: {e}")))?;
        any = true;
    }
    if !any {
        return Err(ProbeError::Ca("no certificate in the PEM".into()));
    }
    Ok(roots)
}

/// TCP connect within `timeout`.
pub async fn tcp(addr: SocketAddr, timeout: Duration) -> Result<tokio::net::TcpStream, ProbeError> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(ProbeError::Connect {
            addr,
            detail: e.to_string(),
        }),
        Err(_) => Err(ProbeError::Connect {
            addr,
            detail: format!("no answer within {}", humantime::format_duration(timeout)),
        }),
    }
}

/// TCP connect, then a TLS handshake verified against `roots` for the IP of `addr`, each
/// within `timeout`.
pub async fn tls(
    addr: SocketAddr,
    roots: &RootCertStore,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let stream = tcp(addr, timeout).await?;
    let tls_err = |detail: String| ProbeError::Tls { addr, detail };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::IpAddress(addr.ip().into());
    match tokio::time::timeout(timeout, connector.connect(name, stream)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(tls_err(e.to_string())),
        Err(_) => Err(tls_err(format!(
            "no handshake within {}",
            humantime::format_duration(timeout)
        ))),
    }
}

/// TCP, then TLS when `roots` are known; never fails, the outcome is in the result.
pub async fn check(
    addr: SocketAddr,
    roots: Option<&RootCertStore>,
    timeout: Duration,
) -> ProbeResult {
    let endpoint = addr.to_string();
    match roots {
        None => match tcp(addr, timeout).await {
            Ok(_) => ProbeResult {
                endpoint,
                tcp: true,
                tls: None,
                error: None,
            },
            Err(e) => ProbeResult {
                endpoint,
                tcp: false,
                tls: None,
                error: Some(e.to_string()),
            },
        },
        Some(roots) => match tls(addr, roots, timeout).await {
            Ok(()) => ProbeResult {
                endpoint,
                tcp: true,
                tls: Some(true),
                error: None,
            },
            Err(e @ ProbeError::Tls { .. }) => ProbeResult {
                endpoint,
                tcp: true,
                tls: Some(false),
                error: Some(e.to_string()),
            },
            Err(e) => ProbeResult {
                endpoint,
                tcp: false,
                tls: None,
                error: Some(e.to_string()),
            },
        },
    }
}
