//! Pure decisions about what the status says of a stuck node: which of the dependencies
//! the spec names to probe for reachability in a phase (`targets`), when to probe again
//! (`probe_due`), and when to ask the distribution for its reason or drop it
//! (`reason_after`). The driver performs the probes and the asking.

use super::state::Phase;
use super::transition::Event;
use model::Role;
use model::baked::BakedCluster;
use protocol::clock::Millis;

/// What the spec says this node depends on, each as `host:port`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dependencies {
    /// k3s's external SQL datastore (control planes only: agents never open it).
    pub datastore: Option<String>,
    /// The external etcd cluster's client endpoints (control planes only).
    pub etcd: Vec<String>,
    /// The API endpoint: the VIP, or the load balancer.
    pub api: Option<String>,
    pub rendezvous: Option<String>,
}

/// One endpoint to probe and what it is, as the status names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub what: &'static str,
    pub endpoint: String,
}

impl Dependencies {
    /// The dependencies of a node of `role` in `baked`'s cluster. A DSN or URL that does
    /// not parse is left out: validation refused those before the build.
    pub fn of(baked: &BakedCluster, role: Role) -> Dependencies {
        let spec = &baked.spec;
        let control_plane = role == Role::ControlPlane;
        let datastore = match &spec.datastore {
            model::spec::Datastore::ExternalSql { endpoint } if control_plane => {
                model::dsn::Dsn::parse(endpoint)
                    .ok()
                    .filter(|d| d.protocol != "unix")
                    .map(|d| d.address())
            }
            _ => None,
        };
        let etcd = match spec.external_etcd() {
            Some(urls) if control_plane => urls.iter().map(with_port).collect(),
            _ => Vec::new(),
        };
        Dependencies {
            datastore,
            etcd,
            api: (role != Role::LoadBalancer).then(|| baked.api_endpoint.clone()),
            rendezvous: Some(with_port(&baked.rendezvous.url)),
        }
    }
}

/// `host:port` of a URL, the scheme's port when it names none.
fn with_port(url: &model::names::HttpUrl) -> String {
    let authority = url.authority();
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.ends_with(']') && p.parse::<u16>().is_ok());
    if has_port {
        authority.to_string()
    } else if url.is_https() {
        format!("{authority}:443")
    } else {
        format!("{authority}:80")
    }
}

/// Where a phase stands with respect to the cluster's first control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Not waiting on the cluster: nothing to probe (preflight, done, load balancer).
    Idle,
    /// Before or during init: the VIP is not up yet, so it is not probed.
    BeforeInit,
    /// Some control plane is initialized (this one, or the cluster's).
    AfterInit,
}

fn stage(p: &Phase) -> Stage {
    match p {
        Phase::CheckingInit
        | Phase::WaitingForInit
        | Phase::Electing
        | Phase::Initializing { .. } => Stage::BeforeInit,
        Phase::CheckingHealth { .. }
        | Phase::AwaitingRefresh
        | Phase::CheckingControlPlaneVersion
        | Phase::WaitingForControlPlaneVersion { .. }
        | Phase::AcquiringJoinSlot
        | Phase::CleaningStaleMember { .. }
        | Phase::Joining { .. }
        | Phase::ReleasingJoinSlot { .. }
        | Phase::Verifying { .. } => Stage::AfterInit,
        // An undo or a wait belongs to what it resumes.
        Phase::Compensating { then, .. } | Phase::Backoff { then, .. } => stage(then),
        Phase::Preflight
        | Phase::Registering
        | Phase::ConfiguringLb
        | Phase::Publishing { .. }
        | Phase::Releasing { .. }
        | Phase::SettingUpAddons
        | Phase::ApplyingAddons { .. }
        | Phase::AddonsFailed { .. }
        | Phase::AwaitingReady { .. }
        | Phase::Done
        | Phase::Removed => Stage::Idle,
    }
}

/// What to probe in `phase`: the datastore, external etcd and the rendezvous before init,
/// join and while waiting; the API endpoint too once a control plane is initialized.
pub fn targets(d: &Dependencies, phase: &Phase) -> Vec<Target> {
    let st = stage(phase);
    if st == Stage::Idle {
        return Vec::new();
    }
    let mut t = Vec::new();
    if let Some(ds) = &d.datastore {
        t.push(Target {
            what: "datastore",
            endpoint: ds.clone(),
        });
    }
    t.extend(d.etcd.iter().map(|e| Target {
        what: "etcd",
        endpoint: e.clone(),
    }));
    if st == Stage::AfterInit
        && let Some(api) = &d.api
    {
        t.push(Target {
            what: super::stranded::API_ENDPOINT,
            endpoint: api.clone(),
        });
    }
    if let Some(r) = &d.rendezvous {
        t.push(Target {
            what: "rendezvous",
            endpoint: r.clone(),
        });
    }
    t
}

/// Whether the last probe (at `last`) is older than `every_ms`, or there was none.
pub fn probe_due(last: Option<Millis>, now: Millis, every_ms: u64) -> bool {
    last.is_none_or(|t| now.saturating_sub(t) >= every_ms)
}

/// What to do with the distribution's reason after `event` ended a run of `phase`'s
/// actions and `next` is the phase entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonAsk {
    /// Leave it as it is (still the latest word on the last failure).
    Keep,
    /// Read it again: a health probe failed, the distribution may say why.
    Refresh,
    /// The node is past init/join: there is nothing left to explain.
    Clear,
}

pub fn reason_after(phase: &Phase, event: &Event, next: &Phase) -> ReasonAsk {
    if matches!(
        next,
        Phase::Publishing { .. } | Phase::Releasing { .. } | Phase::Done
    ) {
        return ReasonAsk::Clear;
    }
    match (phase, event) {
        (Phase::CheckingHealth { .. } | Phase::Verifying { .. }, Event::Probe(false)) => {
            ReasonAsk::Refresh
        }
        _ => ReasonAsk::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::Fence;

    fn deps() -> Dependencies {
        Dependencies {
            datastore: Some("10.0.0.5:3306".into()),
            etcd: vec!["10.0.0.31:2379".into()],
            api: Some("10.0.0.10:6443".into()),
            rendezvous: Some("10.0.0.2:8443".into()),
        }
    }

    fn names(t: &[Target]) -> Vec<&str> {
        t.iter().map(|t| t.what).collect()
    }

    #[test]
    fn the_vip_is_probed_only_once_a_control_plane_is_initialized() {
        let before = targets(&deps(), &Phase::Electing);
        assert_eq!(names(&before), ["datastore", "etcd", "rendezvous"]);
        assert_eq!(before[0].endpoint, "10.0.0.5:3306");
        let health = Phase::CheckingHealth {
            token: 1,
            successes: 0,
            failures: 2,
        };
        assert_eq!(
            names(&targets(&deps(), &health)),
            ["datastore", "etcd", "API endpoint", "rendezvous"]
        );
        let join = Phase::Joining { token: 3 };
        assert!(names(&targets(&deps(), &join)).contains(&"API endpoint"));
    }

    #[test]
    fn waits_and_undos_probe_as_what_they_resume() {
        let after_failed_init = Phase::Compensating {
            slot: Some(Fence {
                semaphore: "init".into(),
                token: 1,
            }),
            remove_own_member: false,
            then: Box::new(Phase::CheckingInit),
        };
        assert_eq!(
            names(&targets(&deps(), &after_failed_init)),
            ["datastore", "etcd", "rendezvous"]
        );
        let waiting_to_join = Phase::Backoff {
            delay_ms: 1,
            then: Box::new(Phase::AcquiringJoinSlot),
            poll: true,
        };
        assert!(names(&targets(&deps(), &waiting_to_join)).contains(&"API endpoint"));
        let preflight_retry = Phase::Backoff {
            delay_ms: 1,
            then: Box::new(Phase::Preflight),
            poll: false,
        };
        assert!(targets(&deps(), &preflight_retry).is_empty());
        assert!(targets(&deps(), &Phase::Done).is_empty());
        assert!(targets(&Dependencies::default(), &Phase::Electing).is_empty());
    }

    #[test]
    fn probes_are_spaced() {
        assert!(probe_due(None, 0, 10_000));
        assert!(!probe_due(Some(5_000), 14_999, 10_000));
        assert!(probe_due(Some(5_000), 15_000, 10_000));
    }

    #[test]
    fn the_reason_is_refreshed_on_failed_probes_and_cleared_once_healthy() {
        let health = Phase::CheckingHealth {
            token: 1,
            successes: 0,
            failures: 0,
        };
        let next = health.clone();
        assert_eq!(
            reason_after(&health, &Event::Probe(false), &next),
            ReasonAsk::Refresh
        );
        assert_eq!(
            reason_after(&health, &Event::Probe(true), &next),
            ReasonAsk::Keep
        );
        assert_eq!(
            reason_after(
                &health,
                &Event::Probe(true),
                &Phase::Publishing { token: 1 }
            ),
            ReasonAsk::Clear
        );
        assert_eq!(
            reason_after(&Phase::Electing, &Event::Busy, &Phase::WaitingForInit),
            ReasonAsk::Keep
        );
    }

    #[test]
    fn dependencies_from_a_k3s_spec_on_an_external_datastore() {
        let file = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/seed-002-k3s-nginx-mariadb.yaml"
        );
        let (spec, _) = model::spec::load(file, &std::fs::read_to_string(file).unwrap()).unwrap();
        let baked = BakedCluster {
            format: 1,
            cluster_id: "c".into(),
            nodes: Vec::new(),
            api_endpoint: "10.0.0.10:6443".into(),
            rendezvous: model::baked::BakedRendezvous {
                url: spec.rendezvous.url.clone(),
                cert_sha256: None,
            },
            spec,
        };
        let cp = Dependencies::of(&baked, Role::ControlPlane);
        assert!(
            cp.datastore.as_ref().is_some_and(|d| d.ends_with(":3306")),
            "{cp:?}"
        );
        let w = Dependencies::of(&baked, Role::Worker);
        assert_eq!(w.datastore, None, "agents never open the datastore");
        assert_eq!(w.api.as_deref(), Some(baked.api_endpoint.as_str()));
        assert!(w.rendezvous.as_ref().is_some_and(|r| r.contains(':')));
    }
}
