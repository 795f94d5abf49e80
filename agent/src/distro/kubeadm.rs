//! kubeadm: the exact command lines (the lab's stand-ins implement these) and the files
//! it leaves behind.

use super::http;
use super::template::{self, Values};
use super::{
    Credentials, Distro, DistroError, DistroResult, InitSecrets, Issued, NodeContext, parse,
};
use crate::exec::CommandRunner;
use protocol::pem_client::ClientCache;
use protocol::records::{EtcdCreds, JoinMaterial, Secret};
use std::path::PathBuf;

/// The builder bakes one join template per node (`controlPlane` only on control planes).
pub const INIT_TEMPLATE: &str = model::node_files::KUBEADM_INIT_TEMPLATE;
pub const JOIN_TEMPLATE: &str = model::node_files::KUBEADM_JOIN_TEMPLATE;
/// kubeadm's preflight check that `/etc/kubernetes/manifests` is empty before a
/// control-plane join; the baked kube-vip static pod is meant to be there.
pub const IGNORE_MANIFESTS_DIR: &str =
    "--ignore-preflight-errors=DirAvailable--etc-kubernetes-manifests";
/// Rendered configs (they hold secrets: 0600, under the agent's state dir).
pub const RENDERED_DIR: &str = "var/lib/nodeagent";

/// etcd client credentials on a kubeadm control plane: the etcd CA and the health-check
/// client certificate kubeadm issues (its etcd liveness probe uses the same).
pub fn etcd_creds(root: &model::node_files::NodeRoot) -> DistroResult<EtcdCreds> {
    const STEP: &str = "read kubeadm etcd credentials";
    let pki = |f: &str| http::read(STEP, &root.path("etc/kubernetes/pki/etcd").join(f));
    Ok(EtcdCreds {
        ca_pem: pki("ca.crt")?,
        cert_pem: pki("healthcheck-client.crt")?,
        key_pem: Secret(pki("healthcheck-client.key")?),
    })
}

/// The API server's client credentials for an external etcd cluster: the etcd CA and the
/// `apiserver-etcd-client` pair the control plane's own seed delivered (kubeadm's paths).
pub fn external_etcd_creds(root: &model::node_files::NodeRoot) -> DistroResult<EtcdCreds> {
    use model::node_files as nf;
    const STEP: &str = "read the external etcd client credentials";
    let read = |rel: &str| http::read(STEP, &root.path(rel));
    Ok(EtcdCreds {
        ca_pem: read(nf::ETCD_EXTERNAL_CA)?,
        cert_pem: read(nf::ETCD_EXTERNAL_CLIENT_CERT)?,
        key_pem: Secret(read(nf::ETCD_EXTERNAL_CLIENT_KEY)?),
    })
}

/// The credentials a kubeadm control plane asks etcd with for its view: the external
/// cluster's client pair, or the stacked etcd's health-check client.
pub fn view_creds(root: &model::node_files::NodeRoot, external: bool) -> DistroResult<EtcdCreds> {
    if external {
        external_etcd_creds(root)
    } else {
        etcd_creds(root)
    }
}

#[derive(Debug, Clone)]
pub struct Kubeadm<R> {
    pub ctx: NodeContext,
    pub runner: R,
    /// The API and etcd clients health probes reuse.
    clients: ClientCache,
}

impl<R: CommandRunner> Kubeadm<R> {
    pub fn new(ctx: NodeContext, runner: R) -> Self {
        Kubeadm {
            ctx,
            runner,
            clients: ClientCache::new(),
        }
    }

    fn rendered(&self, name: &str) -> PathBuf {
        self.ctx.root.path(RENDERED_DIR).join(name)
    }

    fn file(&self, rel: &str) -> PathBuf {
        self.ctx.root.path(rel)
    }

    async fn kubeadm(&self, step: &'static str, args: &[&str]) -> DistroResult<String> {
        self.runner
            .run_ok("kubeadm", args)
            .await
            .map(|o| o.stdout)
            .map_err(|source| DistroError::Exec { step, source })
    }

    async fn join(
        &self,
        step: &'static str,
        control_plane: bool,
        m: &JoinMaterial,
    ) -> DistroResult<()> {
        let out = self.rendered(&format!("kubeadm-{step}.yaml").replace(' ', "-"));
        let values = Values {
            token: Some(&m.token),
            ca_cert_hash: Some(&m.ca_cert_hash),
            certificate_key: m.certificate_key.as_ref(),
        };
        template::render_file(step, &self.ctx.tree_file(JOIN_TEMPLATE), &out, &values)?;
        let path = out.display().to_string();
        let mut args = vec!["join", "--config", &path];
        // A control plane with kube-vip has its static pod in the manifests dir before the
        // join (installed from the node tree, or restored after a reset), like kube-vip's
        // documented kubeadm flow; kubeadm refuses a non-empty dir unless told.
        if control_plane
            && self
                .ctx
                .root
                .path(model::node_files::KUBE_VIP_MANIFEST)
                .exists()
        {
            args.push(IGNORE_MANIFESTS_DIR);
        }
        match self.kubeadm(step, &args).await {
            Err(DistroError::Exec {
                source: crate::exec::ExecError::Failed { stderr_tail, .. },
                ..
            }) if parse::material_expired(&stderr_tail) => Err(DistroError::MaterialRejected {
                step,
                detail: stderr_tail,
            }),
            r => r.map(|_| ()),
        }
    }

    fn api_client(&self, step: &'static str) -> DistroResult<reqwest::Client> {
        let ca = http::read(step, &self.file("etc/kubernetes/pki/ca.crt"))?;
        http::client(step, &self.clients, &ca, None)
    }
}

impl<R: CommandRunner> super::EtcdApi for Kubeadm<R> {
    fn clients(&self) -> ClientCache {
        self.clients.clone()
    }
}

impl<R: CommandRunner> Distro for Kubeadm<R> {
    async fn reset(&self) -> DistroResult<()> {
        self.kubeadm("kubeadm reset", &["reset", "-f"]).await?;
        Ok(())
    }

    async fn init(&self, secrets: &InitSecrets) -> DistroResult<Issued> {
        const STEP: &str = "kubeadm init";
        let out = self.rendered("kubeadm-init.yaml");
        let values = Values {
            token: Some(&secrets.token),
            ca_cert_hash: None,
            certificate_key: Some(&secrets.certificate_key),
        };
        template::render_file(STEP, &self.ctx.tree_file(INIT_TEMPLATE), &out, &values)?;
        let path = out.display().to_string();
        let stdout = self
            .kubeadm(STEP, &["init", "--config", &path, "--upload-certs"])
            .await?;
        let join = parse::join_command(&stdout)
            .map_err(|detail| DistroError::Parse { step: STEP, detail })?;
        Ok(Issued {
            token: join.token,
            ca_cert_hash: join.ca_cert_hash,
            certificate_key: Some(
                join.certificate_key
                    .unwrap_or_else(|| secrets.certificate_key.clone()),
            ),
        })
    }

    async fn join_control_plane(&self, m: &JoinMaterial) -> DistroResult<()> {
        if m.certificate_key.is_none() {
            return Err(DistroError::Other {
                step: "kubeadm join control plane",
                detail: "the join material has no certificate key".into(),
            });
        }
        self.join("join control plane", true, m).await
    }

    async fn join_worker(&self, m: &JoinMaterial) -> DistroResult<()> {
        self.join("join worker", false, m).await
    }

    async fn refresh_join_material(
        &self,
        certificate_key: Option<&Secret>,
    ) -> DistroResult<Issued> {
        const CERTS: &str = "kubeadm upload-certs";
        const TOKEN: &str = "kubeadm token create";
        let key = certificate_key.ok_or(DistroError::Other {
            step: CERTS,
            detail: "no certificate key to re-upload the certificates with".into(),
        })?;
        let out = self
            .kubeadm(
                CERTS,
                &[
                    "init",
                    "phase",
                    "upload-certs",
                    "--upload-certs",
                    "--certificate-key",
                    key.expose(),
                ],
            )
            .await?;
        let used = parse::certificate_key(&out).map_err(|detail| DistroError::Parse {
            step: CERTS,
            detail,
        })?;
        let out = self
            .kubeadm(
                TOKEN,
                &["token", "create", "--ttl", "24h", "--print-join-command"],
            )
            .await?;
        let join = parse::join_command(&out).map_err(|detail| DistroError::Parse {
            step: TOKEN,
            detail,
        })?;
        Ok(Issued {
            token: join.token,
            ca_cert_hash: join.ca_cert_hash,
            certificate_key: Some(used),
        })
    }

    async fn credentials(&self) -> DistroResult<Credentials> {
        const STEP: &str = "read kubeadm credentials";
        let admin = http::read(STEP, &self.file("etc/kubernetes/admin.conf"))?;
        Ok(Credentials {
            admin_kubeconfig: Some(Secret(admin)),
            // Joiners get etcd access to clean stale members of a stacked etcd; an external
            // etcd has no control-plane members, and its client key stays on the control
            // planes that got it from their seeds.
            etcd: if self.ctx.external_etcd {
                None
            } else {
                Some(etcd_creds(&self.ctx.root)?)
            },
        })
    }

    async fn etcd_view_creds(&self) -> DistroResult<Option<EtcdCreds>> {
        view_creds(&self.ctx.root, self.ctx.external_etcd).map(Some)
    }

    async fn control_plane_version(
        &self,
        m: &JoinMaterial,
    ) -> DistroResult<Option<crate::upgrade::order::ControlPlaneVersions>> {
        self.ctx.control_plane_version(&self.clients, m).await
    }

    async fn node_ready(&self) -> DistroResult<bool> {
        let (c, base) = self.admin_api().await?;
        Ok(http::node_registered(&c, &base, self.ctx.node.as_str()).await)
    }

    async fn admin_api(&self) -> DistroResult<(reqwest::Client, String)> {
        const STEP: &str = "admin API client";
        let ca = http::read(STEP, &self.file("etc/kubernetes/pki/ca.crt"))?;
        let admin = http::read(STEP, &self.file("etc/kubernetes/admin.conf"))?;
        let (cert, key) =
            super::parse::kubeconfig_identity(&admin).map_err(|detail| DistroError::Parse {
                step: STEP,
                detail: format!("etc/kubernetes/admin.conf: {detail}"),
            })?;
        let c = http::client(STEP, &self.clients, &ca, Some((&cert, &key)))?;
        Ok((
            c,
            format!("https://{}:{}", self.ctx.advertise, self.ctx.api_port),
        ))
    }

    async fn local_api_ready(&self) -> DistroResult<bool> {
        let c = self.api_client("local API ready")?;
        let base = format!("https://{}:{}", self.ctx.advertise, self.ctx.api_port);
        Ok(http::readyz(&c, &base).await)
    }

    async fn vip_api_ready(&self) -> DistroResult<bool> {
        let c = self.api_client("VIP API ready")?;
        Ok(http::readyz(&c, &format!("https://{}", self.ctx.api_endpoint)).await)
    }

    async fn kubelet_registered(&self) -> DistroResult<bool> {
        const STEP: &str = "kubelet registered";
        let ca = http::read(STEP, &self.file("etc/kubernetes/pki/ca.crt"))?;
        // The kubelet's rotated client certificate holds certificate and key in one file.
        let pem = http::read(
            STEP,
            &self.file("var/lib/kubelet/pki/kubelet-client-current.pem"),
        )?;
        let c = http::client(STEP, &self.clients, &ca, Some((&pem, &pem)))?;
        let base = format!("https://{}", self.ctx.api_endpoint);
        Ok(http::node_registered(&c, &base, self.ctx.node.as_str()).await)
    }

    /// kubeadm's own failing phase and error from the failed command; for a call that
    /// hung (killed, no output) the kubelet's last journal lines, what kubeadm waits on.
    async fn reason(&self, failed: Option<&DistroError>) -> Option<protocol::report::DistroReason> {
        if let Some((step, output)) = failed.and_then(DistroError::failed_output) {
            let source = if step.starts_with("kubeadm") {
                step.to_string()
            } else {
                format!("kubeadm {step}")
            };
            return Some(parse::kubeadm_reason(&source, output));
        }
        let n = super::REASON_LOG_LINES.to_string();
        let out = self
            .runner
            .run(
                "journalctl",
                &["-u", "kubelet.service", "-n", &n, "--no-pager", "-o", "cat"],
            )
            .await
            .ok()
            .filter(|o| o.status == 0)?;
        let lines = parse::last_lines(&out.stdout, protocol::report::MAX_REASON_LINES);
        let lines: Vec<String> = lines
            .into_iter()
            .filter(|l| !l.starts_with("-- "))
            .collect();
        (!lines.is_empty()).then(|| {
            protocol::report::DistroReason {
                source: "kubelet.service log".into(),
                phase: None,
                message: None,
                log_tail: lines,
            }
            .bounded()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::FakeRunner;
    use model::node_files::NodeRoot;

    use crate::test_fixture as fixture;

    fn setup() -> (tempfile::TempDir, Kubeadm<FakeRunner>) {
        let dir = tempfile::tempdir().unwrap();
        let ctx = NodeContext {
            root: NodeRoot::new(dir.path()),
            node: "cp-1".parse().unwrap(),
            advertise: "10.0.0.11".parse().unwrap(),
            api_endpoint: "10.0.0.10:6443".into(),
            api_port: 6443,
            external_etcd: false,
        };
        let tree = ctx.root.node_tree(&ctx.node);
        std::fs::create_dir_all(tree.join("etc/muster/kubeadm")).unwrap();
        std::fs::write(
            tree.join(INIT_TEMPLATE),
            "bootstrapTokens:\n- token: @@TOKEN@@\ncertificateKey: @@CERTIFICATE_KEY@@\n",
        )
        .unwrap();
        std::fs::write(
            tree.join(JOIN_TEMPLATE),
            "token: @@TOKEN@@\ncaCertHashes: [@@CA_CERT_HASH@@]\ncertificateKey: @@CERTIFICATE_KEY@@\n",
        )
        .unwrap();
        (dir, Kubeadm::new(ctx, FakeRunner::new()))
    }

    #[tokio::test]
    async fn init_renders_runs_and_parses() {
        let (dir, k) = setup();
        k.runner.on(
            "kubeadm init --config",
            0,
            &fixture("kubeadm-init-v1.20.out"),
        );
        let issued = k
            .init(&InitSecrets {
                token: Secret("zlo94s.6bws9rl0j69jx1ob".into()),
                certificate_key: Secret("a".repeat(64)),
            })
            .await
            .unwrap();
        assert!(issued.ca_cert_hash.starts_with("sha256:0e1d98"));
        let path = dir.path().join("var/lib/nodeagent/kubeadm-init.yaml");
        let rendered = std::fs::read_to_string(&path).unwrap();
        assert!(rendered.contains("token: zlo94s.6bws9rl0j69jx1ob"));
        assert_eq!(
            k.runner.calls(),
            vec![format!(
                "kubeadm init --config {} --upload-certs",
                path.display()
            )]
        );
    }

    #[tokio::test]
    async fn refresh_uses_the_documented_commands() {
        let (_dir, k) = setup();
        k.runner.on(
            "kubeadm init phase upload-certs --upload-certs --certificate-key",
            0,
            &fixture("kubeadm-upload-certs-v1.20.out"),
        );
        k.runner.on(
            "kubeadm token create --ttl 24h --print-join-command",
            0,
            &fixture("kubeadm-token-create-print-join-v1.20.out"),
        );
        let key = Secret("aeb912d5a51562817f32c1ec5184160f5681d375fae721b6a74d469bbda866a5".into());
        let issued = k.refresh_join_material(Some(&key)).await.unwrap();
        assert_eq!(issued.token.expose(), "2m0ktp.8gz9uqovnj3uaatd");
        assert_eq!(issued.certificate_key, Some(key));
    }

    #[tokio::test]
    async fn failures_name_the_step() {
        let (_dir, k) = setup();
        k.runner.on("kubeadm reset", 1, "");
        let e = k.reset().await.unwrap_err().to_string();
        assert!(
            e.starts_with("kubeadm reset: `kubeadm reset -f` exited with 1"),
            "{e}"
        );
        let m = JoinMaterial {
            init_token: 1,
            token: Secret("abcdef.0123456789abcdef".into()),
            token_expires_ms: 1,
            ca_cert_hash: "sha256:ff".into(),
            certificate_key: Some(Secret("k".into())),
            certificate_key_expires_ms: Some(1),
            admin_kubeconfig: None,
            etcd: None,
        };
        k.runner.on("kubeadm join", 1, "");
        let e = k.join_control_plane(&m).await.unwrap_err().to_string();
        assert!(e.contains("join control plane"), "{e}");
        assert!(!e.contains("0123456789abcdef"), "no secret in errors: {e}");
    }

    /// With an external etcd, joiners get no etcd access (the control planes are not
    /// members, the client key stays where the seeds put it), and the view asks with the
    /// API server's external-etcd client pair.
    #[tokio::test]
    async fn external_etcd_creds_are_the_api_servers_client_pair() {
        let (dir, mut k) = setup();
        k.ctx.external_etcd = true;
        let put = |rel: &str, text: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        put("etc/kubernetes/admin.conf", "admin");
        let e = k.etcd_view_creds().await.unwrap_err().to_string();
        assert!(
            e.contains("apiserver-etcd-client") || e.contains("etcd/ca.crt"),
            "{e}"
        );
        put(model::node_files::ETCD_EXTERNAL_CA, "ca");
        put(model::node_files::ETCD_EXTERNAL_CLIENT_CERT, "cert");
        put(model::node_files::ETCD_EXTERNAL_CLIENT_KEY, "key");
        assert!(k.credentials().await.unwrap().etcd.is_none());
        let c = k.etcd_view_creds().await.unwrap().unwrap();
        assert_eq!((c.ca_pem.as_str(), c.cert_pem.as_str()), ("ca", "cert"));
        assert_eq!(c.key_pem.expose(), "key");
        k.ctx.external_etcd = false;
        let e = k.credentials().await.unwrap_err().to_string();
        assert!(
            e.contains("healthcheck-client") || e.contains("etcd/ca.crt"),
            "{e}"
        );
    }
}
