//! HTTPS clients of the stand-ins: to the apiserver stand-in and to etcd's v3 JSON gateway.

use crate::pki::CertKey;
use anyhow::{Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;
use std::time::Duration;

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let mut reader = std::io::BufReader::new(pem.as_bytes());
    let certs = rustls_pemfile::certs(&mut reader).collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in PEM");
    Ok(certs)
}

pub fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>> {
    let mut reader = std::io::BufReader::new(pem.as_bytes());
    rustls_pemfile::private_key(&mut reader)?.context("no private key in PEM")
}

/// Accepts any server certificate: kubeadm's discovery fetches `cluster-info` this way and
/// then checks the CA it contains against the pinned hash and the token signature.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Trust for a client: a CA to verify the server against, or none (insecure discovery).
#[derive(Debug, Clone)]
pub enum Trust {
    Ca(String),
    Insecure,
}

pub fn tls_config(trust: &Trust, client: Option<&CertKey>) -> Result<rustls::ClientConfig> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match trust {
        Trust::Ca(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in parse_certs(pem)? {
                roots.add(c)?;
            }
            builder.with_root_certificates(roots)
        }
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider))),
    };
    Ok(match client {
        Some(ck) => {
            builder.with_client_auth_cert(parse_certs(&ck.cert_pem)?, parse_key(&ck.key_pem)?)?
        }
        None => builder.with_no_client_auth(),
    })
}

pub fn http_client(
    trust: &Trust,
    client: Option<&CertKey>,
    timeout: Duration,
) -> Result<reqwest::Client> {
    let tls = tls_config(trust, client)?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(3)))
        .no_proxy()
        .build()
        .context("building HTTPS client")
}

/// A client of the apiserver stand-in.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub bearer: Option<String>,
}

/// An HTTP answer: status and body (JSON if it parses, else a string value).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: serde_json::Value,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
    pub fn message(&self) -> String {
        match &self.body {
            serde_json::Value::String(s) => s.clone(),
            v => v
                .get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string()),
        }
    }
}

impl Api {
    /// From a kubeconfig file (admin.conf, kubelet.conf, ...).
    pub fn from_kubeconfig(text: &str, timeout: Duration) -> Result<Api> {
        let parts = crate::pki::parse_kubeconfig(text)?;
        Ok(Api {
            base: parts.server.trim_end_matches('/').to_string(),
            http: http_client(&Trust::Ca(parts.ca_pem), parts.client.as_ref(), timeout)?,
            bearer: parts.token,
        })
    }

    pub fn with_base(&self, base: &str) -> Api {
        Api {
            base: base.trim_end_matches('/').to_string(),
            ..self.clone()
        }
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(b) = &self.bearer {
            req = req.bearer_auth(b);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Ok(Reply { status, body })
    }

    pub async fn get(&self, path: &str) -> Result<Reply> {
        self.request(reqwest::Method::GET, path, None).await
    }
    pub async fn put(&self, path: &str, body: &serde_json::Value) -> Result<Reply> {
        self.request(reqwest::Method::PUT, path, Some(body)).await
    }
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> Result<Reply> {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    /// The etcd client URLs the control planes announce on their mirror pods (kubeadm's
    /// `etcd.advertise-client-urls` annotation).
    pub async fn announced_etcd_endpoints(&self) -> Result<Vec<String>> {
        let pods = self.get("/api/v1/namespaces/kube-system/pods").await?;
        Ok(pods.body["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                p["metadata"]["annotations"]["kubeadm.kubernetes.io/etcd.advertise-client-urls"]
                    .as_str()
            })
            .map(str::to_string)
            .collect())
    }

    /// A JSON merge patch (`application/merge-patch+json`).
    pub async fn merge_patch(&self, path: &str, body: &serde_json::Value) -> Result<Reply> {
        let url = format!("{}{}", self.base, path);
        let mut req = self
            .http
            .patch(&url)
            .header("content-type", "application/merge-patch+json")
            .body(body.to_string());
        if let Some(b) = &self.bearer {
            req = req.bearer_auth(b);
        }
        let resp = req.send().await.with_context(|| format!("PATCH {url}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Ok(Reply { status, body })
    }

    /// PUT that must succeed.
    pub async fn must_put(&self, path: &str, body: &serde_json::Value) -> Result<()> {
        let r = self.put(path, body).await?;
        anyhow::ensure!(r.ok(), "PUT {path}: {} {}", r.status, r.message());
        Ok(())
    }
}
