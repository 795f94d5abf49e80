//! k3s: a config file (`/etc/rancher/k3s/config.yaml`) and a systemd unit. The init server
//! uses the baked `etc/muster/k3s/init.yaml` (`cluster-init: true`), the others `join.yaml`.
//! Reset follows what `k3s-killall.sh` and `k3s-uninstall.sh` do for a node that must join
//! again: stop the units, kill what they left, remove the server/agent state and config.

use super::http;
use super::template::{self, Values};
use super::{Credentials, Distro, DistroError, DistroResult, InitSecrets, Issued, NodeContext};
use crate::exec::CommandRunner;
use crate::systemd::Systemd;
use model::node_files::K3S_CONFIG;
use protocol::pem_client::ClientCache;
use protocol::records::{EtcdCreds, JoinMaterial, Secret};
use std::path::PathBuf;

pub const CONFIG_INIT_TEMPLATE: &str = model::node_files::K3S_INIT_TEMPLATE;
pub const CONFIG_JOIN_TEMPLATE: &str = model::node_files::K3S_JOIN_TEMPLATE;
pub const SERVER_UNIT: &str = "k3s.service";
pub const AGENT_UNIT: &str = "k3s-agent.service";
const DATA_DIR: &str = "var/lib/rancher/k3s";

/// etcd client credentials on a k3s server with embedded etcd; `None` with an external
/// datastore (no embedded etcd).
pub fn etcd_creds(root: &model::node_files::NodeRoot) -> DistroResult<Option<EtcdCreds>> {
    const STEP: &str = "read k3s etcd credentials";
    let tls = |f: &str| {
        http::read(
            STEP,
            &root.path("var/lib/rancher/k3s/server/tls/etcd").join(f),
        )
    };
    match tls("server-ca.crt") {
        Ok(ca_pem) => Ok(Some(EtcdCreds {
            ca_pem,
            cert_pem: tls("client.crt")?,
            key_pem: Secret(tls("client.key")?),
        })),
        Err(_) => Ok(None),
    }
}

#[derive(Debug, Clone)]
pub struct K3s<R, S> {
    pub ctx: NodeContext,
    pub runner: R,
    pub systemd: S,
    /// The API clients health probes reuse.
    clients: ClientCache,
}

impl<R: CommandRunner, S: Systemd> K3s<R, S> {
    pub fn new(ctx: NodeContext, runner: R, systemd: S) -> Self {
        K3s {
            ctx,
            runner,
            systemd,
            clients: ClientCache::new(),
        }
    }

    fn file(&self, rel: &str) -> PathBuf {
        self.ctx.root.path(rel)
    }

    async fn configure_and_start(
        &self,
        step: &'static str,
        tpl: &str,
        token: &Secret,
        unit: &str,
    ) -> DistroResult<()> {
        let values = Values {
            token: Some(token),
            ..Values::default()
        };
        template::render_file(
            step,
            &self.ctx.tree_file(tpl),
            &self.file(K3S_CONFIG),
            &values,
        )?;
        let unit_err = |e: crate::systemd::SystemdError| DistroError::Unit {
            step,
            detail: e.to_string(),
        };
        self.systemd.enable(&[unit]).await.map_err(unit_err)?;
        self.systemd.start(unit).await.map_err(unit_err)?;
        Ok(())
    }

    fn server_client(&self, step: &'static str) -> DistroResult<reqwest::Client> {
        let tls = "var/lib/rancher/k3s/server/tls";
        let ca = http::read(step, &self.file(&format!("{tls}/server-ca.crt")))?;
        let cert = http::read(step, &self.file(&format!("{tls}/client-admin.crt")))?;
        let key = http::read(step, &self.file(&format!("{tls}/client-admin.key")))?;
        http::client(step, &self.clients, &ca, Some((&cert, &key)))
    }
}

impl<R: CommandRunner, S: Systemd> super::EtcdApi for K3s<R, S> {
    fn clients(&self) -> ClientCache {
        self.clients.clone()
    }
}

impl<R: CommandRunner, S: Systemd> Distro for K3s<R, S> {
    async fn reset(&self) -> DistroResult<()> {
        const STEP: &str = "k3s reset";
        for unit in [SERVER_UNIT, AGENT_UNIT] {
            self.systemd
                .stop(unit)
                .await
                .map_err(|e| DistroError::Unit {
                    step: STEP,
                    detail: e.to_string(),
                })?;
        }
        // Kills containers and unmounts what the units left; absent before first install.
        let out = self
            .runner
            .run("k3s-killall.sh", &[])
            .await
            .map_err(|source| DistroError::Exec { step: STEP, source })?;
        if out.status != 0 && out.status != 127 {
            return Err(DistroError::Other {
                step: STEP,
                detail: format!("k3s-killall.sh exited with {}", out.status),
            });
        }
        for rel in [DATA_DIR, K3S_CONFIG, "etc/rancher/node"] {
            let p = self.file(rel);
            let r = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            match r {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(DistroError::File {
                        step: STEP,
                        path: p,
                        detail: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    async fn init(&self, secrets: &InitSecrets) -> DistroResult<Issued> {
        self.configure_and_start(
            "k3s init",
            CONFIG_INIT_TEMPLATE,
            &secrets.token,
            SERVER_UNIT,
        )
        .await?;
        Ok(Issued {
            token: secrets.token.clone(),
            ca_cert_hash: String::new(),
            certificate_key: None,
        })
    }

    async fn join_control_plane(&self, m: &JoinMaterial) -> DistroResult<()> {
        self.configure_and_start(
            "k3s join server",
            CONFIG_JOIN_TEMPLATE,
            &m.token,
            SERVER_UNIT,
        )
        .await
    }

    async fn join_worker(&self, m: &JoinMaterial) -> DistroResult<()> {
        self.configure_and_start("k3s join agent", CONFIG_JOIN_TEMPLATE, &m.token, AGENT_UNIT)
            .await
    }

    async fn refresh_join_material(&self, _key: Option<&Secret>) -> DistroResult<Issued> {
        // k3s server tokens do not expire; republish the one the server keeps.
        let token = http::read("k3s token", &self.file("var/lib/rancher/k3s/server/token"))?;
        Ok(Issued {
            token: Secret(token.trim().to_string()),
            ca_cert_hash: String::new(),
            certificate_key: None,
        })
    }

    async fn credentials(&self) -> DistroResult<Credentials> {
        const STEP: &str = "read k3s credentials";
        let admin = http::read(STEP, &self.file("etc/rancher/k3s/k3s.yaml"))?;
        Ok(Credentials {
            admin_kubeconfig: Some(Secret(admin)),
            etcd: etcd_creds(&self.ctx.root)?,
        })
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
        let c = self.server_client("admin API client")?;
        Ok((
            c,
            format!("https://{}:{}", self.ctx.advertise, self.ctx.api_port),
        ))
    }

    async fn local_api_ready(&self) -> DistroResult<bool> {
        let c = self.server_client("local API ready")?;
        let base = format!("https://{}:{}", self.ctx.advertise, self.ctx.api_port);
        Ok(http::readyz(&c, &base).await)
    }

    async fn vip_api_ready(&self) -> DistroResult<bool> {
        let c = self.server_client("VIP API ready")?;
        Ok(http::readyz(&c, &format!("https://{}", self.ctx.api_endpoint)).await)
    }

    async fn kubelet_registered(&self) -> DistroResult<bool> {
        const STEP: &str = "kubelet registered";
        let agent = "var/lib/rancher/k3s/agent";
        let ca = http::read(STEP, &self.file(&format!("{agent}/server-ca.crt")))?;
        let cert = http::read(STEP, &self.file(&format!("{agent}/client-kubelet.crt")))?;
        let key = http::read(STEP, &self.file(&format!("{agent}/client-kubelet.key")))?;
        let c = http::client(STEP, &self.clients, &ca, Some((&cert, &key)))?;
        let base = format!("https://{}", self.ctx.api_endpoint);
        Ok(http::node_registered(&c, &base, self.ctx.node.as_str()).await)
    }

    /// k3s reports through its unit's log whatever the start returned: its last fatal line,
    /// else its last lines. The server's unit first; a worker only runs the agent's.
    async fn reason(
        &self,
        _failed: Option<&DistroError>,
    ) -> Option<protocol::report::DistroReason> {
        for unit in [SERVER_UNIT, AGENT_UNIT] {
            match self.systemd.log_tail(unit, super::REASON_LOG_LINES).await {
                Ok(log) if !log.trim().is_empty() => {
                    return Some(super::parse::k3s_reason(&format!("{unit} log"), &log));
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "cannot read the unit's log"),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::FakeRunner;
    use crate::systemd::FakeSystemd;
    use model::node_files::NodeRoot;

    #[tokio::test]
    async fn init_writes_config_and_starts_server_reset_removes_state() {
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
        std::fs::create_dir_all(tree.join(CONFIG_INIT_TEMPLATE).parent().unwrap()).unwrap();
        std::fs::write(
            tree.join(CONFIG_INIT_TEMPLATE),
            "cluster-init: true\ntoken: @@TOKEN@@\n",
        )
        .unwrap();
        let k = K3s::new(ctx, FakeRunner::new(), FakeSystemd::default());
        k.runner.on("k3s-killall.sh", 0, "");
        k.init(&InitSecrets {
            token: Secret("abcdef.0123456789abcdef".into()),
            certificate_key: Secret(String::new()),
        })
        .await
        .unwrap();
        let cfg = std::fs::read_to_string(dir.path().join(K3S_CONFIG)).unwrap();
        assert_eq!(cfg, "cluster-init: true\ntoken: abcdef.0123456789abcdef\n");
        assert_eq!(k.systemd.active_state(SERVER_UNIT).await.unwrap(), "active");
        std::fs::create_dir_all(dir.path().join("var/lib/rancher/k3s/server/db")).unwrap();
        k.reset().await.unwrap();
        assert!(!dir.path().join(K3S_CONFIG).exists());
        assert!(!dir.path().join("var/lib/rancher/k3s").exists());
        assert_eq!(
            k.systemd.active_state(SERVER_UNIT).await.unwrap(),
            "inactive"
        );
    }

    #[tokio::test]
    async fn the_reason_is_the_units_fatal_line() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = NodeContext {
            root: NodeRoot::new(dir.path()),
            node: "w-1".parse().unwrap(),
            advertise: "10.0.0.21".parse().unwrap(),
            api_endpoint: "10.0.0.10:6443".into(),
            api_port: 6443,
            external_etcd: false,
        };
        let k = K3s::new(ctx, FakeRunner::new(), FakeSystemd::default());
        assert_eq!(k.reason(None).await, None, "nothing logged, nothing to say");
        k.systemd.set_unit_log(
            AGENT_UNIT,
            "level=info msg=\"Starting k3s agent\"\nlevel=fatal msg=\"failed to get CA certs: connect: connection refused\"\n",
        );
        let r = k.reason(None).await.unwrap();
        assert_eq!(r.source, "k3s-agent.service log");
        assert_eq!(
            r.message.as_deref(),
            Some("failed to get CA certs: connect: connection refused")
        );
    }
}
