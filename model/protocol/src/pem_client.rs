//! HTTPS clients that trust one CA given as PEM and may present a client identity (cert
//! PEM, key PEM): what the agent and `muster remove` use for the Kubernetes API and etcd's
//! v3 JSON gateway.

use std::sync::Arc;
use std::time::Duration;

/// A client trusting only `ca_pem`, presenting `identity` (cert PEM, key PEM) if given;
/// 5 s per request, 3 s to connect. The error says which part of the input is wrong.
pub fn client(ca_pem: &str, identity: Option<(&str, &str)>) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("CA PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("CA certificate: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert_pem, key_pem)) => {
            let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client certificate PEM: {e}"))?;
            let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
                .map_err(|e| format!("client key PEM: {e}"))?
                .ok_or_else(|| "no private key in the client key PEM".to_string())?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("client identity: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}
