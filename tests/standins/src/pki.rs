//! Real X.509 material with rcgen: CAs, serving and client certificates, kubeconfigs,
//! and the discovery hash kubeadm pins (`sha256:` of the CA's SubjectPublicKeyInfo).

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::path::Path;

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CertKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertKey").finish_non_exhaustive()
    }
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
    ServerAndClient,
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(days);
}

/// A new self-signed CA with common name `cn` (10 years, like kubeadm's CAs).
pub fn new_ca(cn: &str) -> Result<CertKey> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::CrlSign,
    ];
    validity(&mut params, 3650);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(CertKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A leaf certificate signed by `ca` (1 year). `sans` may mix DNS names and IP addresses.
pub fn issue(
    ca: &CertKey,
    cn: &str,
    orgs: &[&str],
    sans: &[String],
    usage: Usage,
) -> Result<CertKey> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).context("parsing CA key")?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).context("parsing CA cert")?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    let mut seen = std::collections::BTreeSet::new();
    for san in sans {
        if san.is_empty() || !seen.insert(san.clone()) {
            continue;
        }
        params.subject_alt_names.push(match san.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(san.as_str().try_into()?),
        });
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = match usage {
        Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Usage::ServerAndClient => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, 365);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Signs a PEM certificate signing request with `ca` as a client certificate (the stand-in
/// for the CSR signer that completes a kubelet's TLS bootstrap).
pub fn sign_client_csr(ca: &CertKey, csr_pem: &str) -> Result<String> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .context("parsing the certificate signing request")?;
    csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    csr.params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    csr.params.is_ca = IsCa::NoCa;
    csr.params.use_authority_key_identifier_extension = true;
    validity(&mut csr.params, 365);
    Ok(csr.signed_by(&issuer)?.pem())
}

/// A new key and a CSR for `cn` in organisations `orgs`.
pub fn new_csr(cn: &str, orgs: &[&str]) -> Result<(String, String)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    let key = KeyPair::generate()?;
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// First certificate of a PEM bundle as DER.
pub fn first_cert_der(pem: &str) -> Result<Vec<u8>> {
    let mut reader = std::io::BufReader::new(pem.as_bytes());
    let cert = rustls_pemfile::certs(&mut reader)
        .next()
        .context("no certificate in PEM")??;
    Ok(cert.to_vec())
}

/// `sha256:<hex>` of the certificate's SubjectPublicKeyInfo, as kubeadm's
/// `--discovery-token-ca-cert-hash`.
pub fn ca_cert_hash(cert_pem: &str) -> Result<String> {
    let der = first_cert_der(cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow::anyhow!("parsing certificate: {e}"))?;
    let spki = cert.tbs_certificate.subject_pki.raw;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(spki))))
}

/// The subject alternative names of a PEM certificate, DNS names and IPs as strings.
pub fn cert_sans(cert_pem: &str) -> Result<Vec<String>> {
    let der = first_cert_der(cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow::anyhow!("parsing certificate: {e}"))?;
    let mut out = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => out.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        out.push(IpAddr::from(a).to_string());
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        out.push(IpAddr::from(a).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Writes `<dir>/<base>.crt` (0644) and `<dir>/<base>.key` (0600).
pub fn write_pair(dir: &Path, base: &str, ck: &CertKey) -> Result<()> {
    crate::write_file(&dir.join(format!("{base}.crt")), &ck.cert_pem, 0o644)?;
    crate::write_file(&dir.join(format!("{base}.key")), &ck.key_pem, 0o600)?;
    Ok(())
}

/// Reads `<dir>/<base>.crt` and `.key`.
pub fn read_pair(dir: &Path, base: &str) -> Result<CertKey> {
    Ok(CertKey {
        cert_pem: crate::read_file(&dir.join(format!("{base}.crt")))?,
        key_pem: crate::read_file(&dir.join(format!("{base}.key")))?,
    })
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// A kubeconfig with embedded CA and client certificate, in the layout kubeadm writes.
pub fn kubeconfig(
    cluster: &str,
    server: &str,
    ca_pem: &str,
    user: &str,
    client: &CertKey,
) -> String {
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: {cluster}\ncontexts:\n- context:\n    cluster: {cluster}\n    user: {user}\n  name: {user}@{cluster}\ncurrent-context: {user}@{cluster}\nkind: Config\npreferences: {{}}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n",
        ca = b64(ca_pem),
        cert = b64(&client.cert_pem),
        key = b64(&client.key_pem),
    )
}

/// A kubeconfig with only the cluster (what `cluster-info` publishes).
pub fn cluster_kubeconfig(server: &str, ca_pem: &str) -> String {
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\nkind: Config\npreferences: {{}}\nusers: null\n",
        ca = b64(ca_pem)
    )
}

/// The parts of a kubeconfig the stand-ins use.
#[derive(Debug, Clone)]
pub struct KubeconfigParts {
    pub server: String,
    pub ca_pem: String,
    pub client: Option<CertKey>,
    pub token: Option<String>,
}

/// Parses the current (or first) cluster and user of a kubeconfig.
pub fn parse_kubeconfig(text: &str) -> Result<KubeconfigParts> {
    use base64::Engine;
    let v: serde_yaml::Value = serde_yaml::from_str(text).context("kubeconfig is not YAML")?;
    let dec = |s: &str| -> Result<String> {
        Ok(String::from_utf8(
            base64::engine::general_purpose::STANDARD.decode(s.trim())?,
        )?)
    };
    let cluster = v["clusters"][0]["cluster"].clone();
    let server = cluster["server"]
        .as_str()
        .context("kubeconfig: clusters[0].cluster.server missing")?
        .to_string();
    let ca_pem = dec(cluster["certificate-authority-data"]
        .as_str()
        .context("kubeconfig: certificate-authority-data missing")?)?;
    let user = &v["users"][0]["user"];
    let client = match (
        user["client-certificate-data"].as_str(),
        user["client-key-data"].as_str(),
    ) {
        (Some(c), Some(k)) => Some(CertKey {
            cert_pem: dec(c)?,
            key_pem: dec(k)?,
        }),
        _ => None,
    };
    let token = user["token"].as_str().map(str::to_string);
    Ok(KubeconfigParts {
        server,
        ca_pem,
        client,
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_and_hash() {
        let ca = new_ca("kubernetes").unwrap();
        let leaf = issue(
            &ca,
            "kube-apiserver",
            &[],
            &["10.0.0.1".into(), "kubernetes".into(), "10.0.0.1".into()],
            Usage::Server,
        )
        .unwrap();
        let sans = cert_sans(&leaf.cert_pem).unwrap();
        assert_eq!(sans, vec!["10.0.0.1".to_string(), "kubernetes".to_string()]);
        let h = ca_cert_hash(&ca.cert_pem).unwrap();
        assert!(h.starts_with("sha256:") && h.len() == 7 + 64);
        let kc = kubeconfig(
            "kubernetes",
            "https://1.2.3.4:6443",
            &ca.cert_pem,
            "admin",
            &leaf,
        );
        let parts = parse_kubeconfig(&kc).unwrap();
        assert_eq!(parts.server, "https://1.2.3.4:6443");
        assert_eq!(parts.ca_pem, ca.cert_pem);
        let (csr, _key) = new_csr("system:node:w1", &["system:nodes"]).unwrap();
        let signed = sign_client_csr(&ca, &csr).unwrap();
        assert!(signed.contains("BEGIN CERTIFICATE"));
    }
}
