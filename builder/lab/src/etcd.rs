//! A REAL external etcd cluster for `muster lab` (`datastore: {type: external-etcd}`):
//! Debian's `etcd` 3.4, one member per spec endpoint, each in a namespace of its own on the
//! lab bridge at the endpoint's address (`<id>-etcd-N`), detached like every lab daemon
//! ([`crate::process`]), started before any node boots. TLS everywhere: client-cert auth
//! (`--client-cert-auth`, `--trusted-ca-file`) and peer TLS with peer client-cert auth.
//!
//! The lab makes the PKI in its state dir (`etcd/pki/`): an etcd CA, one server/peer
//! certificate per member with its IP in the SANs, and the API server's client
//! certificate. The lab builds the cluster with those three client files in place of the
//! spec's `caFile`/`certFile`/`keyFile` (and says so).

use crate::error::{LabError, Result};
use crate::process::Service;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// The lab's etcd dir in its state dir.
pub const DIR: &str = "etcd";
/// `(tool, Debian package)`.
pub const TOOLS: [(&str, &str); 2] = [("etcd", "etcd-server"), ("etcdctl", "etcd-client")];

/// One member of the lab's external etcd cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// `etcd-1`, `etcd-2`, ...
    pub name: String,
    pub ip: Ipv4Addr,
    pub client_port: u16,
    pub ns: String,
    pub service: Service,
}

impl Member {
    pub fn client_url(&self) -> String {
        format!("https://{}:{}", self.ip, self.client_port)
    }
}

/// Where the lab's etcd PKI files are.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("apiserver-etcd-client.crt")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("apiserver-etcd-client.key")
    }
    fn member(&self, name: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{name}.{ext}"))
    }
}

/// `(host, port)` of an `https://IPv4:port` endpoint.
pub fn endpoint_addr(url: &model::HttpUrl) -> Result<(Ipv4Addr, u16)> {
    let bad = |why: &str| {
        LabError::Unsupported(vec![format!(
            "datastore endpoint {url}: {why} (the lab runs each member at its endpoint)"
        )])
    };
    let auth = url.authority();
    let (host, port) = auth.rsplit_once(':').unwrap_or((auth, "2379"));
    let ip: Ipv4Addr = host.parse().map_err(|_| bad("needs an IPv4 address"))?;
    let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
    if !url.is_https() {
        return Err(bad("the lab runs etcd with TLS only, use https://"));
    }
    Ok((ip, port))
}

fn pki_err(e: rcgen::Error) -> LabError {
    LabError::Command {
        cmd: "generating the lab's etcd PKI".into(),
        detail: e.to_string(),
    }
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    muster_build::bake::write::write_atomic(path, text.as_bytes(), mode).map_err(LabError::io(path))
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    ips: &[IpAddr],
    dns: &[&str],
    usages: Vec<ExtendedKeyUsagePurpose>,
) -> Result<(String, String)> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(pki_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    for ip in ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    for d in dns {
        params
            .subject_alt_names
            .push(SanType::DnsName((*d).try_into().map_err(pki_err)?));
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = usages;
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(pki_err)?;
    let cert = params.signed_by(&key, issuer).map_err(pki_err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Makes the CA, each member's server/peer certificate (its IP, its name and 127.0.0.1 in
/// the SANs) and the API server's client certificate in `dir`.
pub fn generate(dir: &Path, members: &[(String, Ipv4Addr)]) -> Result<Pki> {
    std::fs::create_dir_all(dir).map_err(LabError::io(dir))?;
    let pki = Pki {
        dir: dir.to_path_buf(),
    };
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(pki_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "etcd-ca (muster lab)");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::CrlSign,
    ];
    let ca_key = KeyPair::generate().map_err(pki_err)?;
    let ca = params.self_signed(&ca_key).map_err(pki_err)?;
    write(&pki.ca(), &ca.pem(), 0o644)?;
    write(&dir.join("ca.key"), &ca_key.serialize_pem(), 0o600)?;
    let issuer = Issuer::new(params, ca_key);
    let both = || {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    };
    for (name, ip) in members {
        let ips = [IpAddr::V4(*ip), IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let (cert, key) = leaf(&issuer, name, &ips, &[name.as_str(), "localhost"], both())?;
        write(&pki.member(name, "crt"), &cert, 0o644)?;
        write(&pki.member(name, "key"), &key, 0o600)?;
    }
    let (cert, key) = leaf(
        &issuer,
        "kube-apiserver-etcd-client",
        &[],
        &[],
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    )?;
    write(&pki.client_cert(), &cert, 0o644)?;
    write(&pki.client_key(), &key, 0o600)?;
    Ok(pki)
}

/// `name=https://IP:2380,...` of every member.
pub fn initial_cluster(members: &[(String, Ipv4Addr)]) -> String {
    members
        .iter()
        .map(|(n, ip)| format!("{n}=https://{ip}:2380"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The detached `etcd` of one member, in `ns`, its data and log under `dir`.
pub fn member_service(
    dir: &Path,
    pki: &Pki,
    ns: &str,
    (name, ip, client_port): (&str, Ipv4Addr, u16),
    initial: &str,
) -> Result<Service> {
    let etcd = crate::prereq::require("etcd", "etcd-server")?;
    let p = |p: PathBuf| p.display().to_string();
    let data = dir.join(name);
    Ok(Service {
        name: name.to_string(),
        ns: ns.to_string(),
        argv: vec![
            etcd.display().to_string(),
            format!("--name={name}"),
            format!("--data-dir={}", data.join("data").display()),
            format!("--listen-client-urls=https://{ip}:{client_port}"),
            format!("--advertise-client-urls=https://{ip}:{client_port}"),
            format!("--listen-peer-urls=https://{ip}:2380"),
            format!("--initial-advertise-peer-urls=https://{ip}:2380"),
            format!("--initial-cluster={initial}"),
            "--initial-cluster-state=new".into(),
            "--initial-cluster-token=muster-lab-external-etcd".into(),
            "--client-cert-auth=true".into(),
            format!("--trusted-ca-file={}", p(pki.ca())),
            format!("--cert-file={}", p(pki.member(name, "crt"))),
            format!("--key-file={}", p(pki.member(name, "key"))),
            "--peer-client-cert-auth=true".into(),
            format!("--peer-trusted-ca-file={}", p(pki.ca())),
            format!("--peer-cert-file={}", p(pki.member(name, "crt"))),
            format!("--peer-key-file={}", p(pki.member(name, "key"))),
            "--listen-metrics-urls=http://127.0.0.1:2381".into(),
        ],
        env: Vec::new(),
        log: data.join("etcd.log"),
        pid_file: data.join("etcd.pid"),
    })
}

/// `etcdctl` flags for the external cluster with the API server's client certificate.
pub fn etcdctl_flags(pki: &Pki, endpoints: &[String]) -> Vec<String> {
    vec![
        format!("--endpoints={}", endpoints.join(",")),
        format!("--cacert={}", pki.ca().display()),
        format!("--cert={}", pki.client_cert().display()),
        format!("--key={}", pki.client_key().display()),
        "--command-timeout=5s".into(),
        "--dial-timeout=2s".into(),
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn pki_chains_and_names_each_member() {
        let dir = tempfile::tempdir().unwrap();
        let members = vec![
            ("etcd-1".to_string(), Ipv4Addr::new(10, 0, 0, 81)),
            ("etcd-2".to_string(), Ipv4Addr::new(10, 0, 0, 82)),
        ];
        let pki = generate(dir.path(), &members).unwrap();
        // The build's own check: the client pair chains to the CA and matches its key.
        let ca = std::fs::read_to_string(pki.ca()).unwrap();
        assert!(ca.contains("BEGIN CERTIFICATE"));
        let spec = muster_build::spec_source::load(Some(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../examples/seed-004-kubeadm-external-etcd.yaml"),
        ))
        .unwrap();
        let mut c = spec.cluster;
        if let model::spec::Datastore::ExternalEtcd {
            ca_file,
            cert_file,
            key_file,
            ..
        } = &mut c.datastore
        {
            *ca_file = Some(pki.ca().display().to_string());
            *cert_file = Some(pki.client_cert().display().to_string());
            *key_file = Some(pki.client_key().display().to_string());
        }
        assert!(
            muster_build::bake::etcd_tls::load(&c, Path::new("/"))
                .unwrap()
                .is_some()
        );
        assert_eq!(
            initial_cluster(&members),
            "etcd-1=https://10.0.0.81:2380,etcd-2=https://10.0.0.82:2380"
        );
        let url = &c.external_etcd().unwrap()[0];
        assert_eq!(
            endpoint_addr(url).unwrap(),
            (Ipv4Addr::new(192, 168, 1, 81), 2379)
        );
        let http: model::HttpUrl = serde_json::from_str("\"http://10.0.0.81:2379\"").unwrap();
        assert!(endpoint_addr(&http).is_err());
    }
}
