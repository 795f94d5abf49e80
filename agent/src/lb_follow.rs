//! Load balancers follow the membership: when a rebuild adds control planes (or load
//! balancers), the running HAProxy/nginx backends and keepalived peers must list them,
//! though their configs were baked before those nodes existed. This module holds the pure
//! decisions: which members count ([`seen`]), what this node's configs should say now
//! ([`desired`]), which of them differ from what is on disk ([`to_rewrite`]), and how each
//! daemon checks and reloads a config ([`Daemon`]). The renderers are the builder's own
//! (`model::lb_config`), so a config rendered here equals the baked one for the same
//! members.
//!
//! The driver runs [`follow`] in `Done` (`Action::FollowMembers`), on every member change
//! and every idle tick: render, install only what the daemon's own checker accepts
//! ([`check_and_install`]), reload only daemons whose config changed or whose last reload
//! failed ([`reloads`]), report a problem in status ([`problem`]).

use crate::coord::Member;
use model::PlannedNode;
use model::baked::BakedCluster;
use model::lb_config::{self, SeenMember};
use model::node_files as nf;
use model::spec::{Role, VipProvider};

/// The members as the selection needs them: a member counts as joined once its report
/// says `done` (a control plane that has joined and verified); its address is the one it
/// reported. A report that does not parse counts as not joined (never guess an address).
pub fn seen(members: &[Member]) -> Vec<SeenMember> {
    members
        .iter()
        .map(|m| {
            let report: Option<protocol::report::MemberReport> =
                serde_json::from_value(m.report.clone()).ok();
            SeenMember {
                name: m.name.clone(),
                role: m.role,
                joined: report.as_ref().is_some_and(|r| r.done),
                ip: report.and_then(|r| r.ip),
            }
        })
        .collect()
}

/// A daemon whose config follows the membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    Haproxy,
    Nginx,
    Keepalived,
}

impl Daemon {
    /// The daemon a unit runs, for the units whose config follows the membership.
    pub fn for_unit(unit: &str) -> Option<Daemon> {
        [Daemon::Haproxy, Daemon::Nginx, Daemon::Keepalived]
            .into_iter()
            .find(|d| d.unit() == unit)
    }

    pub fn unit(self) -> &'static str {
        match self {
            Daemon::Haproxy => "haproxy.service",
            Daemon::Nginx => "nginx.service",
            Daemon::Keepalived => "keepalived.service",
        }
    }

    /// The command that checks `config` without touching the running daemon; a reload
    /// happens only after it succeeds.
    pub fn check_command(self, config: &str) -> (&'static str, Vec<String>) {
        let c = config.to_string();
        match self {
            Daemon::Haproxy => ("haproxy", vec!["-c".into(), "-f".into(), c]),
            Daemon::Nginx => ("nginx", vec!["-t".into(), "-q".into(), "-c".into(), c]),
            Daemon::Keepalived => ("keepalived", vec!["-t".into(), "-f".into(), c]),
        }
    }

    /// The signal a graceful reload sends the main process (what each distribution's
    /// unit `ExecReload` does): HAProxy's master re-execs its workers on SIGUSR2, nginx and
    /// keepalived re-read their config on SIGHUP; connections in flight are kept.
    pub fn reload_signal(self) -> &'static str {
        match self {
            Daemon::Haproxy => "SIGUSR2",
            Daemon::Nginx | Daemon::Keepalived => "SIGHUP",
        }
    }
}

/// One config this node should have: where (relative to `/`), for which daemon, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub path: &'static str,
    pub daemon: Daemon,
    pub contents: String,
}

/// The configs `node` runs that depend on the membership, rendered from the baked plan and
/// the joined members: HAProxy or nginx on a load balancer (its backends, the control
/// planes), keepalived wherever it floats the VIP (its peers, the nodes of its own role).
pub fn desired(baked: &BakedCluster, node: &PlannedNode, members: &[SeenMember]) -> Vec<Desired> {
    let c = &baked.spec;
    let mut out = Vec::new();
    if node.role == Role::LoadBalancer {
        let backends = lb_config::select(Role::ControlPlane, &baked.nodes, members);
        let port = c.ha.api_port;
        match c.ha.provider {
            VipProvider::Haproxy => out.push(Desired {
                path: nf::HAPROXY_CONF,
                daemon: Daemon::Haproxy,
                contents: lb_config::haproxy(port, &backends),
            }),
            VipProvider::Nginx => out.push(Desired {
                path: nf::NGINX_CONF,
                daemon: Daemon::Nginx,
                contents: lb_config::nginx(port, &backends),
            }),
            VipProvider::KubeVip | VipProvider::Keepalived => {}
        }
    }
    let keepalived_role = match c.ha.provider {
        VipProvider::Keepalived => Some(Role::ControlPlane),
        VipProvider::Haproxy | VipProvider::Nginx if c.ha.vip.is_some() => Some(Role::LoadBalancer),
        _ => None,
    };
    if keepalived_role == Some(node.role)
        && let Some(vip) = c.ha.vip
    {
        let peers = lb_config::select(node.role, &baked.nodes, members);
        out.push(Desired {
            path: nf::KEEPALIVED_CONF,
            daemon: Daemon::Keepalived,
            contents: lb_config::keepalived(c, node, vip, &peers),
        });
    }
    out
}

/// The configs whose text differs from what is on disk (`current(path)`, `None` when
/// unreadable): only these are written, checked and reloaded, so an unchanged membership
/// causes no reload at all.
pub fn to_rewrite(desired: &[Desired], current: impl Fn(&str) -> Option<String>) -> Vec<&Desired> {
    desired
        .iter()
        .filter(|d| current(d.path).as_deref() != Some(d.contents.as_str()))
        .collect()
}

/// Whether `node` runs any config that follows the membership (then its agent keeps
/// following once done).
pub fn follows(baked: &BakedCluster, node: &PlannedNode) -> bool {
    !desired(baked, node, &[]).is_empty()
}

/// The daemons to reload after a pass: those whose config was just installed and those
/// whose reload failed before (their new config is on disk but not running), each once,
/// in a fixed order.
pub fn reloads(installed: &[Daemon], pending: &[Daemon]) -> Vec<Daemon> {
    [Daemon::Haproxy, Daemon::Nginx, Daemon::Keepalived]
        .into_iter()
        .filter(|d| installed.contains(d) || pending.contains(d))
        .collect()
}

/// The one line status shows for a pass's failures (`None`: every config this node
/// should run is installed and reloaded).
pub fn problem(errors: &[String]) -> Option<String> {
    (!errors.is_empty()).then(|| format!("load-balancer config not applied: {}", errors.join("; ")))
}

/// What following needs to know about this node: its root, the baked cluster and itself.
#[derive(Debug, Clone)]
pub struct Follow {
    pub root: model::node_files::NodeRoot,
    pub baked: std::sync::Arc<BakedCluster>,
    pub node: PlannedNode,
}

/// What one pass did: the daemons reloaded, those whose reload failed (to retry on the
/// next pass), and the errors met.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    pub reloaded: Vec<Daemon>,
    pub unreloaded: Vec<Daemon>,
    pub errors: Vec<String>,
}

/// One pass (the driver's thin effect): render from `members`, install each changed config
/// the daemon's checker accepts (a rejected one leaves the old config running), then reload
/// the daemons [`reloads`] names through the service manager (`systemctl reload`; the lab's
/// runner signals its own daemons).
pub async fn follow(
    f: &Follow,
    members: &[Member],
    pending: &[Daemon],
    runner: &impl crate::exec::CommandRunner,
    systemd: &impl crate::systemd::Systemd,
) -> Pass {
    let want = desired(&f.baked, &f.node, &seen(members));
    let current = |p: &str| std::fs::read_to_string(f.root.path(p)).ok();
    let mut pass = Pass::default();
    let mut installed = Vec::new();
    for d in to_rewrite(&want, current) {
        // Checked as the daemon will read it (the lab re-roots absolute paths).
        let as_read = match systemd.as_read(d.daemon.unit(), &d.contents) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "keeping the running config");
                pass.errors.push(e.to_string());
                continue;
            }
        };
        match check_and_install(f.root.root(), d, &as_read, runner).await {
            Ok(()) => {
                tracing::info!(path = d.path, daemon = ?d.daemon, "membership changed: new config installed");
                installed.push(d.daemon);
            }
            Err(e) => {
                tracing::error!(error = %e, "keeping the running config");
                pass.errors.push(e.to_string());
            }
        }
    }
    for daemon in reloads(&installed, pending) {
        match systemd.reload(daemon.unit()).await {
            Ok(()) => pass.reloaded.push(daemon),
            Err(e) => {
                tracing::error!(error = %e, "reload failed; retried on the next pass");
                pass.errors.push(e.to_string());
                pass.unreloaded.push(daemon);
            }
        }
    }
    pass
}

/// Why a config was not installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Write(#[from] model::fsutil::WriteError),
    #[error("cannot check {path} with {program}: {source}")]
    Check {
        path: String,
        program: &'static str,
        #[source]
        source: crate::exec::ExecError,
    },
    #[error("{program} rejected the new {path} (the old one stays): {output}")]
    Rejected {
        path: String,
        program: &'static str,
        output: String,
    },
}

/// Writes `d` next to its place under `root`, has the daemon's own checker accept it, and
/// only then moves it into place atomically: a config the daemon would refuse never
/// replaces a working one. `as_read` is the text the daemon will read once `d` is
/// installed (`Systemd::as_read`: `d.contents` on a node; in the lab, with its paths
/// re-rooted): that is what is checked. The caller reloads the daemon afterwards.
pub async fn check_and_install(
    root: &std::path::Path,
    d: &Desired,
    as_read: &str,
    runner: &impl crate::exec::CommandRunner,
) -> Result<(), InstallError> {
    let target = root.join(d.path);
    let staged = target.with_extension("muster-next");
    model::fsutil::write_atomic(&staged, d.contents.as_bytes(), 0o644)?;
    let checked = if as_read == d.contents {
        staged.clone()
    } else {
        let c = target.with_extension("muster-check");
        if let Err(e) = model::fsutil::write_atomic(&c, as_read.as_bytes(), 0o644) {
            let _ = std::fs::remove_file(&staged);
            return Err(e.into());
        }
        c
    };
    let checked_text = checked.to_string_lossy().into_owned();
    let (program, args) = d.daemon.check_command(&checked_text);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = runner
        .run(program, &args)
        .await
        .map_err(|source| InstallError::Check {
            path: d.path.to_string(),
            program,
            source,
        });
    if checked != staged {
        let _ = std::fs::remove_file(&checked);
    }
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
    };
    if out.status != 0 {
        let _ = std::fs::remove_file(&staged);
        return Err(InstallError::Rejected {
            path: d.path.to_string(),
            program,
            output: format!("{}{}", out.stdout, out.stderr).trim().to_string(),
        });
    }
    std::fs::rename(&staged, &target).map_err(|source| model::fsutil::WriteError {
        path: target.clone(),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baked(seed: &str) -> BakedCluster {
        let file = format!("{}/../examples/{seed}", env!("CARGO_MANIFEST_DIR"));
        let (spec, _) = model::spec::load(&file, &std::fs::read_to_string(&file).unwrap()).unwrap();
        let plan = model::plan::resolve(&spec, vec![]);
        BakedCluster {
            format: 1,
            cluster_id: "c".into(),
            nodes: plan.nodes,
            api_endpoint: "10.0.0.10:6443".into(),
            rendezvous: model::baked::BakedRendezvous {
                url: spec.rendezvous.url.clone(),
                cert_sha256: None,
            },
            spec,
        }
    }

    fn member(name: &str, role: Role, done: bool, ip: &str) -> Member {
        Member {
            name: name.into(),
            role,
            report: serde_json::json!({
                "node": name, "role": role.as_str(), "phase": if done { "done" } else { "joining" },
                "sinceMs": null, "attempt": 1, "lastError": null, "updatedMs": 1,
                "done": done, "ip": ip,
            }),
        }
    }

    fn node(b: &BakedCluster, role: Role) -> PlannedNode {
        b.nodes.iter().find(|n| n.role == role).unwrap().clone()
    }

    #[test]
    fn seen_reads_done_and_the_reported_address() {
        let s = seen(&[
            member("cp9", Role::ControlPlane, true, "10.0.0.99"),
            member("cp8", Role::ControlPlane, false, "10.0.0.98"),
            Member {
                name: "old".into(),
                role: Role::ControlPlane,
                report: serde_json::json!({"garbage": true}),
            },
        ]);
        assert!(s[0].joined && s[0].ip == Some("10.0.0.99".parse().unwrap()));
        assert!(!s[1].joined);
        assert!(!s[2].joined && s[2].ip.is_none());
    }

    #[test]
    fn with_no_new_member_the_configs_equal_what_the_builder_baked() {
        // Same renderer, same plan: nothing to rewrite on a freshly built cluster.
        let b = baked("seed-001-k3s-haproxy-proxmox.yaml");
        let lb = node(&b, Role::LoadBalancer);
        let d = desired(&b, &lb, &[]);
        assert_eq!(
            d.iter().map(|d| d.daemon).collect::<Vec<_>>(),
            [Daemon::Haproxy, Daemon::Keepalived]
        );
        let cps: Vec<_> = b
            .nodes
            .iter()
            .filter(|n| n.role == Role::ControlPlane)
            .collect();
        for cp in &cps {
            assert!(
                d[0].contents
                    .contains(&format!("server {} {}:", cp.name, cp.ip))
            );
        }
        let again = desired(
            &b,
            &lb,
            &seen(&[member(
                cps[0].name.as_str(),
                Role::ControlPlane,
                true,
                "10.9.9.9",
            )]),
        );
        assert!(
            to_rewrite(&again, |p| d
                .iter()
                .find(|x| x.path == p)
                .map(|x| x.contents.clone()))
            .is_empty()
        );
    }

    #[test]
    fn a_joined_control_plane_from_a_rebuild_rewrites_haproxy_only() {
        let b = baked("seed-001-k3s-haproxy-proxmox.yaml");
        let lb = node(&b, Role::LoadBalancer);
        let before = desired(&b, &lb, &[]);
        let on_disk = |p: &str| {
            before
                .iter()
                .find(|x| x.path == p)
                .map(|x| x.contents.clone())
        };
        let pending = desired(
            &b,
            &lb,
            &seen(&[member("new-cp", Role::ControlPlane, false, "10.0.0.99")]),
        );
        assert!(
            to_rewrite(&pending, on_disk).is_empty(),
            "not joined yet: no reload"
        );
        let after = desired(
            &b,
            &lb,
            &seen(&[member("new-cp", Role::ControlPlane, true, "10.0.0.99")]),
        );
        let w = to_rewrite(&after, on_disk);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].daemon, Daemon::Haproxy);
        assert!(
            w[0].contents
                .contains("    server new-cp 10.0.0.99:6443 check\n")
        );
    }

    #[test]
    fn keepalived_control_planes_follow_their_peers() {
        let b = baked("seed-003-k3s-keepalived.yaml");
        let cp = node(&b, Role::ControlPlane);
        let d = desired(
            &b,
            &cp,
            &seen(&[member("new-cp", Role::ControlPlane, true, "10.0.0.99")]),
        );
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].daemon, Daemon::Keepalived);
        assert!(d[0].contents.contains("        10.0.0.99\n"));
    }

    #[test]
    fn nginx_load_balancers_follow_too() {
        let b = baked("seed-002-k3s-nginx-mariadb.yaml");
        let lb = node(&b, Role::LoadBalancer);
        let d = desired(
            &b,
            &lb,
            &seen(&[member("new-cp", Role::ControlPlane, true, "10.0.0.99")]),
        );
        assert_eq!(d[0].daemon, Daemon::Nginx);
        assert!(d[0].contents.contains("server 10.0.0.99:6443 max_fails=2"));
        assert_eq!(
            Daemon::Nginx.check_command("/etc/nginx/nginx.conf").0,
            "nginx"
        );
    }

    #[test]
    fn reloads_are_the_installed_and_the_failed_ones_once() {
        use Daemon::*;
        assert_eq!(reloads(&[], &[]), vec![]);
        assert_eq!(
            reloads(&[Keepalived, Haproxy], &[Haproxy]),
            vec![Haproxy, Keepalived]
        );
        assert_eq!(reloads(&[], &[Nginx]), vec![Nginx]);
        assert_eq!(problem(&[]), None);
        assert_eq!(
            problem(&["haproxy rejected it".into()]).unwrap(),
            "load-balancer config not applied: haproxy rejected it"
        );
        assert_eq!(Daemon::for_unit("nginx.service"), Some(Nginx));
        assert_eq!(Daemon::for_unit("k3s.service"), None);
    }

    #[test]
    fn who_follows() {
        let b = baked("seed-001-k3s-haproxy-proxmox.yaml");
        assert!(follows(&b, &node(&b, Role::LoadBalancer)));
        assert!(!follows(&b, &node(&b, Role::ControlPlane)));
        assert!(!follows(&b, &node(&b, Role::Worker)));
        let k = baked("seed-003-k3s-keepalived.yaml");
        assert!(follows(&k, &node(&k, Role::ControlPlane)));
        let kv = baked("seed-000-kubeadm-kube-vip.yaml");
        assert!(!follows(&kv, &node(&kv, Role::ControlPlane)));
    }

    /// A pass against a fake service manager: a grown membership installs the config
    /// the real haproxy accepted and reloads it once; the same membership again does
    /// nothing; a failed reload is retried on the next pass.
    #[tokio::test]
    async fn a_pass_installs_checks_and_reloads_only_on_change() {
        let b = baked("seed-001-k3s-haproxy-proxmox.yaml");
        let lb = node(&b, Role::LoadBalancer);
        let dir = tempfile::tempdir().unwrap();
        let f = Follow {
            root: model::node_files::NodeRoot::new(dir.path()),
            baked: std::sync::Arc::new(b.clone()),
            node: lb.clone(),
        };
        let runner = crate::exec::RealRunner::default();
        for d in desired(&b, &lb, &[]) {
            let p = dir.path().join(d.path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, &d.contents).unwrap();
        }
        let sd = crate::systemd::FakeSystemd::default();
        assert_eq!(follow(&f, &[], &[], &runner, &sd).await, Pass::default());
        let grown = [member("new-cp", Role::ControlPlane, true, "10.0.0.99")];
        let pass = follow(&f, &grown, &[], &runner, &sd).await;
        assert_eq!(pass.reloaded, vec![Daemon::Haproxy], "{pass:?}");
        assert!(pass.errors.is_empty(), "{pass:?}");
        assert_eq!(sd.log(), vec!["reload haproxy.service".to_string()]);
        let cfg = std::fs::read_to_string(dir.path().join(nf::HAPROXY_CONF)).unwrap();
        assert!(cfg.contains("server new-cp 10.0.0.99:"), "{cfg}");
        assert_eq!(follow(&f, &grown, &[], &runner, &sd).await, Pass::default());
        sd.fail("haproxy.service");
        let retry = follow(&f, &grown, &[Daemon::Haproxy], &runner, &sd).await;
        assert_eq!(retry.unreloaded, vec![Daemon::Haproxy], "{retry:?}");
        assert!(problem(&retry.errors).is_some());
    }

    /// Seed 001's load balancer's HAProxy config once a new control plane joined.
    fn haproxy_for_a_new_control_plane() -> Desired {
        let b = baked("seed-001-k3s-haproxy-proxmox.yaml");
        let lb = node(&b, Role::LoadBalancer);
        let seen = seen(&[member("new-cp", Role::ControlPlane, true, "10.0.0.99")]);
        desired(&b, &lb, &seen).swap_remove(0)
    }

    /// The real haproxy checks the staged file: a good one replaces the old config, a
    /// broken one never does.
    #[tokio::test]
    async fn a_config_is_installed_only_after_the_real_haproxy_accepts_it() {
        let root = tempfile::tempdir().unwrap();
        let runner = crate::exec::RealRunner::default();
        let grown = haproxy_for_a_new_control_plane();
        let haproxy = &grown;
        check_and_install(root.path(), haproxy, &haproxy.contents, &runner)
            .await
            .unwrap();
        let path = root.path().join(haproxy.path);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), haproxy.contents);

        let broken = Desired {
            contents: haproxy
                .contents
                .replace("balance roundrobin", "balance nonsense"),
            ..haproxy.clone()
        };
        let e = check_and_install(root.path(), &broken, &broken.contents, &runner)
            .await
            .unwrap_err();
        assert!(matches!(e, InstallError::Rejected { .. }), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), haproxy.contents);
        assert!(!path.with_extension("muster-next").exists());
    }

    /// What is checked is the text the daemon will read (`as_read`), what is installed is
    /// the rendered config: the lab's keepalived reads a copy whose check script path is
    /// re-rooted, and the product path does not exist on the lab's host. Here a config
    /// the real haproxy accepts is installed only when its as-read text passes too, and
    /// the as-read copy is removed either way.
    #[tokio::test]
    async fn the_check_reads_the_config_as_the_daemon_will() {
        let root = tempfile::tempdir().unwrap();
        let runner = crate::exec::RealRunner::default();
        let grown = haproxy_for_a_new_control_plane();
        let haproxy = &grown;
        let path = root.path().join(haproxy.path);
        let unreadable = haproxy
            .contents
            .replace("balance roundrobin", "balance nonsense");
        let e = check_and_install(root.path(), haproxy, &unreadable, &runner)
            .await
            .unwrap_err();
        assert!(matches!(e, InstallError::Rejected { .. }), "{e}");
        assert!(
            !path.exists(),
            "installed though its as-read text was rejected"
        );
        let as_read = haproxy.contents.replace("roundrobin", "leastconn");
        check_and_install(root.path(), haproxy, &as_read, &runner)
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), haproxy.contents);
        assert!(!path.with_extension("muster-check").exists());
        assert!(!path.with_extension("muster-next").exists());
    }
}
