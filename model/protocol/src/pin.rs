//! TLS for the rendezvous client: the server's certificate is self-signed, so instead
//! of a CA the client pins the SHA-256 of its DER (baked by `muster build`).

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("pinned certificate fingerprint `{0}` is not 64 hex digits")]
    BadPin(String),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// A `reqwest::Client` for the rendezvous: with `pin`, HTTPS accepts only a server whose
/// end-entity certificate has that SHA-256 (hex); without it, only plain HTTP works
/// (every HTTPS certificate is rejected). `timeout` bounds each request except watches,
/// which set their own.
pub fn http_client(pin: Option<&str>, timeout: Duration) -> Result<reqwest::Client, TlsError> {
    http_client_from(pin, timeout, None)
}

/// [`http_client`] whose connections leave from `source` (a load test gives each group of
/// simulated agents an address of its own, as real nodes have, so the server's per-IP
/// limits see what they would see in a real cluster).
pub fn http_client_from(
    pin: Option<&str>,
    timeout: Duration,
    source: Option<std::net::IpAddr>,
) -> Result<reqwest::Client, TlsError> {
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls_client_config(pin)?)
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .local_address(source)
        .build()?)
}

/// The rustls client config of [`http_client`] (HTTP/1.1, ring): with `pin`, only the
/// server whose end-entity certificate has that SHA-256 (hex) is accepted; without it, none.
pub fn tls_client_config(pin: Option<&str>) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = match pin {
        Some(pin) => {
            let fingerprint: [u8; 32] = hex::decode(pin.trim_start_matches("sha256:"))
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| TlsError::BadPin(pin.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCert {
                    fingerprint,
                    provider,
                }))
                .with_no_client_auth()
        }
        None => builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts exactly one certificate, by fingerprint. Host names are not checked: the pin
/// is stronger than any name, and nodes reach the service by IP.
#[derive(Debug)]
struct PinnedCert {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if Sha256::digest(end_entity.as_ref()).as_slice() == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
