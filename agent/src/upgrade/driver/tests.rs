//! A whole roll through the real transitions and driver loop, on an in-memory cluster
//! (one-slot lock, kubelet versions, progress records, a PodDisruptionBudget that blocks a
//! drain), the nodes interleaved round by round.

use super::*;
use crate::upgrade::order::{self, NodeView, RollView};
use crate::upgrade::transition::restart;
use model::spec::DistroKind;
use model::{KubeVersion, Role};
use protocol::release::Verdict;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

fn v(s: &str) -> KubeVersion {
    s.parse().unwrap()
}

#[derive(Default)]
struct World {
    target: Option<KubeVersion>,
    api: Option<KubeVersion>,
    nodes: BTreeMap<String, (Role, KubeVersion)>,
    lock: Option<(String, u64)>,
    next_token: u64,
    /// (node, what) in the order it happened.
    log: Vec<(String, String)>,
    /// node → (phase label, step, detail)
    progress: BTreeMap<String, (String, Option<String>, Option<String>)>,
    pdb_blocks: Option<String>,
    lose_lease_once: Option<(String, Step)>,
    resume: Option<(u64, u64)>,
    /// An etcd member down (seen by a fresh quorum check) for this many checks.
    member_down_for: u32,
    /// (node, phase label): that node's next report of that phase is lost once.
    lose_report_once: Option<(String, String)>,
}

struct Node {
    name: String,
    world: Rc<RefCell<World>>,
    saved: Option<Phase>,
}

impl Node {
    /// The roll as the real view shows it: by the published progress (and the lock).
    fn view(&self) -> RollView {
        let w = self.world.borrow();
        let stopped = w.progress.iter().find_map(|(n, (label, step, detail))| {
            (label == "stopped").then(|| {
                (
                    n.clone(),
                    step.clone().unwrap_or_default(),
                    detail.clone().unwrap_or_default(),
                )
            })
        });
        RollView {
            target: w.target.unwrap(),
            control_plane: w.api.unwrap(),
            nodes: w
                .nodes
                .iter()
                .map(|(name, (role, ver))| NodeView {
                    name: name.clone(),
                    role: *role,
                    kubelet: Some(*ver),
                    // As the real view: by the published progress (and the lock).
                    upgrading: w.lock.as_ref().is_some_and(|(h, _)| h == name)
                        || w.progress.get(name).is_some_and(|p| p.0 == "upgrading"),
                    fetched: w
                        .progress
                        .get(name)
                        .is_some_and(|p| p.0 != "queued" && p.0 != "fetching"),
                })
                .collect(),
            stopped,
            max_unavailable: 1,
        }
    }
}

impl Effects for Node {
    async fn save(&mut self, phase: &Phase) {
        self.saved = Some(phase.clone());
    }
    async fn report(&mut self, phase: &Phase) -> bool {
        let lost = Some((self.name.clone(), phase.label().to_string()));
        if self.world.borrow().lose_report_once == lost {
            self.world.borrow_mut().lose_report_once = None;
            return false;
        }
        let (step, detail) = match phase {
            Phase::Running { step, .. } => (Some(step.name().to_string()), None),
            Phase::Stopped { step, cause, .. } => {
                (Some(step.name().to_string()), Some(cause.clone()))
            }
            Phase::Waiting { why, .. } => (None, Some(why.clone())),
            _ => (None, None),
        };
        self.world
            .borrow_mut()
            .progress
            .insert(self.name.clone(), (phase.label().into(), step, detail));
        true
    }
    async fn check_fetch_turn(&mut self) -> Result<(), Wait> {
        order::may_fetch(&self.view(), &self.name)
    }
    async fn fetch(&mut self, _: u64) -> Result<(), String> {
        self.world
            .borrow_mut()
            .log
            .push((self.name.clone(), "fetch".into()));
        Ok(())
    }
    async fn check_turn(&mut self) -> Result<(), Wait> {
        order::my_turn(&self.view(), &self.name)
    }
    async fn check_quorum(&mut self) -> Result<(), Wait> {
        let mut w = self.world.borrow_mut();
        w.log.push((self.name.clone(), "check-quorum".into()));
        if w.member_down_for > 0 {
            w.member_down_for -= 1;
            return Err(Wait::EtcdUnhealthy {
                member: "cp-3".into(),
            });
        }
        Ok(())
    }
    async fn acquire(&mut self) -> Option<u64> {
        let mut w = self.world.borrow_mut();
        match &w.lock {
            Some((h, t)) if *h == self.name => Some(*t),
            Some(_) => None,
            None => {
                w.next_token += 1;
                let t = w.next_token;
                w.lock = Some((self.name.clone(), t));
                w.log.push((self.name.clone(), "acquire".into()));
                Some(t)
            }
        }
    }
    async fn run(&mut self, step: Step) -> Result<(), StepError> {
        let mut w = self.world.borrow_mut();
        w.log.push((self.name.clone(), step.name().into()));
        if w.lose_lease_once == Some((self.name.clone(), step)) {
            w.lose_lease_once = None;
            w.lock = None;
            return Err(StepError::LeaseLost);
        }
        if step == Step::Drain && w.pdb_blocks.as_deref() == Some(&self.name) {
            return Err(StepError::Failed {
                cause: "PodDisruptionBudget default/web allows no disruption".into(),
                can_serve: true,
            });
        }
        let target = w.target.unwrap();
        match step {
            Step::UpgradeApply => w.api = Some(target),
            Step::WaitReady => {
                if let Some(n) = w.nodes.get_mut(&self.name) {
                    n.1 = target;
                }
            }
            _ => {}
        }
        Ok(())
    }
    async fn uncordon(&mut self) {
        let mut w = self.world.borrow_mut();
        w.log
            .push((self.name.clone(), "uncordon-after-failure".into()));
    }
    async fn release(&mut self, token: u64) {
        let mut w = self.world.borrow_mut();
        if w.lock.as_ref().is_some_and(|(_, t)| *t == token) {
            w.lock = None;
        }
        w.log.push((self.name.clone(), "release".into()));
    }
    async fn resume_request(&mut self) -> Option<(u64, u64)> {
        self.world.borrow().resume
    }
}

struct Roll {
    world: Rc<RefCell<World>>,
    nodes: Vec<(Me, Node, Phase, Vec<Action>)>,
}

fn roll() -> Roll {
    let old = v("v1.30.5");
    let mut world = World {
        target: Some(v("v1.31.2")),
        api: Some(old),
        ..World::default()
    };
    // Listed workers first: the order must come from names and roles, not from this list.
    let names = [
        ("w-2", Role::Worker),
        ("w-1", Role::Worker),
        ("cp-3", Role::ControlPlane),
        ("cp-1", Role::ControlPlane),
        ("cp-2", Role::ControlPlane),
    ];
    for (n, r) in names {
        world.nodes.insert(n.into(), (r, old));
    }
    let world = Rc::new(RefCell::new(world));
    let nodes = names
        .iter()
        .map(|(n, r)| {
            let me = Me {
                distribution: DistroKind::Kubeadm,
                role: *r,
                first_control_plane: *n == "cp-1",
            };
            let (phase, acts) = step(
                &me,
                Phase::Idle,
                Event::Release {
                    sequence: 1,
                    verdict: Ok(Verdict::Upgrade {
                        from: old,
                        to: v("v1.31.2"),
                    }),
                },
            );
            let node = Node {
                name: (*n).into(),
                world: world.clone(),
                saved: None,
            };
            (me, node, phase, acts)
        })
        .collect();
    Roll { world, nodes }
}

impl Roll {
    /// Rounds until nothing changes for a whole pass (or everyone is done).
    async fn settle(&mut self) {
        for _ in 0..200 {
            let before = self.world.borrow().log.len();
            let phases_before: Vec<Phase> = self.nodes.iter().map(|n| n.2.clone()).collect();
            for (me, node, phase, acts) in &mut self.nodes {
                let (p, r) = round(me, phase.clone(), std::mem::take(acts), node).await;
                *phase = p;
                *acts = match r {
                    Round::Pause(a) => a,
                    Round::Quiet => vec![],
                };
            }
            let phases: Vec<Phase> = self.nodes.iter().map(|n| n.2.clone()).collect();
            if self.world.borrow().log.len() == before && phases == phases_before {
                return;
            }
        }
        panic!("the roll did not settle in 200 passes");
    }

    fn phase(&self, name: &str) -> &Phase {
        &self.nodes.iter().find(|n| n.1.name == name).unwrap().2
    }

    fn steps_of(&self, name: &str) -> Vec<String> {
        self.world
            .borrow()
            .log
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
            .collect()
    }
}

/// One holder at a time: between a node's `acquire` and its `release` nobody else acts
/// (downloading the release is not acting on the node: the next ones download meanwhile).
fn assert_one_at_a_time(log: &[(String, String)]) {
    let mut holder: Option<&str> = None;
    for (n, what) in log {
        match (holder, what.as_str()) {
            (_, "fetch") => {}
            (None, "acquire") => holder = Some(n),
            (Some(h), "release") if h == n => holder = None,
            (Some(h), _) => assert_eq!(h, n, "{n} acted ({what}) while {h} held the lock: {log:?}"),
            (None, _) => {}
        }
    }
}

fn all_done(r: &Roll) -> bool {
    r.nodes.iter().all(|n| matches!(n.2, Phase::Done { .. }))
}

/// Every node done, or the phases they stopped in.
fn assert_all_done(r: &Roll) {
    assert!(
        all_done(r),
        "{:?}",
        r.nodes.iter().map(|n| &n.2).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn control_planes_first_one_node_at_a_time_then_workers() {
    let mut r = roll();
    r.settle().await;
    assert_all_done(&r);
    let w = r.world.borrow();
    assert!(w.nodes.values().all(|(_, ver)| *ver == v("v1.31.2")));
    assert_eq!(w.api, Some(v("v1.31.2")));
    assert_one_at_a_time(&w.log);
    let acquired: Vec<&str> = w
        .log
        .iter()
        .filter(|(_, s)| s == "acquire")
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(acquired, vec!["cp-1", "cp-2", "cp-3", "w-1", "w-2"]);
    // Each node downloads once, before its turn (the order of downloads is
    // `order::may_fetch`'s test: this harness runs a node's whole turn in one round).
    for n in ["cp-1", "cp-2", "cp-3", "w-1", "w-2"] {
        let at = |what: &str| w.log.iter().position(|(m, s)| m == n && s == what);
        assert_eq!(
            w.log.iter().filter(|(m, s)| m == n && s == "fetch").count(),
            1,
            "{n}"
        );
        assert!(at("fetch") < at("acquire"), "{n}: {:?}", w.log);
    }
    drop(w);
    assert!(r.steps_of("cp-1").contains(&"upgrade-apply".to_string()));
    for n in ["cp-2", "cp-3", "w-1", "w-2"] {
        let s = r.steps_of(n);
        assert!(
            s.contains(&"upgrade-node".to_string()) && !s.contains(&"upgrade-apply".to_string()),
            "{n}: {s:?}"
        );
    }
}

#[tokio::test]
async fn a_done_report_that_was_lost_is_published_next_round_and_the_roll_goes_on() {
    // Simulation seed 504: w-1's `done` never reached the rendezvous, so w-2 counted it as
    // upgrading (maxUnavailable 1) and waited forever.
    let mut r = roll();
    r.world.borrow_mut().lose_report_once = Some(("w-1".into(), "done".into()));
    r.settle().await;
    assert_all_done(&r);
    let w = r.world.borrow();
    assert!(w.lose_report_once.is_none(), "the loss was never exercised");
    assert_eq!(w.progress["w-1"].0, "done");
    assert_eq!(w.progress["w-2"].0, "done");
}

#[tokio::test]
async fn a_pdb_blocking_a_drain_stops_the_roll_until_resumed() {
    let mut r = roll();
    r.world.borrow_mut().pdb_blocks = Some("w-1".into());
    r.settle().await;
    assert!(matches!(
        r.phase("w-1"),
        Phase::Stopped {
            step: Step::Drain,
            uncordoned: true,
            ..
        }
    ));
    let started: Vec<String> = r
        .steps_of("w-2")
        .into_iter()
        .filter(|s| s != "fetch")
        .collect();
    assert!(started.is_empty(), "w-2 must not start: {started:?}");
    {
        let w = r.world.borrow();
        assert_eq!(
            w.lock.as_ref().map(|l| l.0.as_str()),
            Some("w-1"),
            "the lock stays held"
        );
        let (label, step, detail) = &w.progress["w-1"];
        assert_eq!(
            (label.as_str(), step.as_deref()),
            ("stopped", Some("drain"))
        );
        assert!(detail.as_deref().unwrap().contains("PodDisruptionBudget"));
        assert!(
            w.progress["w-2"]
                .2
                .as_deref()
                .unwrap()
                .contains("roll stopped at w-1")
        );
    }
    // The operator relaxes the budget and resumes.
    r.world.borrow_mut().pdb_blocks = None;
    r.world.borrow_mut().resume = Some((1, 1));
    r.settle().await;
    assert!(all_done(&r));
    let s = r.steps_of("w-1");
    let drains = s.iter().filter(|x| *x == "drain").count();
    assert_eq!(drains, 2, "{s:?}");
    // Re-cordoned before the retried drain.
    let after_fail = s
        .iter()
        .position(|x| x == "uncordon-after-failure")
        .unwrap();
    assert_eq!(s[after_fail + 1], "cordon");
    assert_one_at_a_time(&r.world.borrow().log);
}

#[tokio::test]
async fn a_lost_lease_retakes_the_lock_and_repeats_the_step() {
    let mut r = roll();
    r.world.borrow_mut().lose_lease_once = Some(("cp-2".into(), Step::Drain));
    r.settle().await;
    assert!(all_done(&r));
    assert_eq!(
        r.steps_of("cp-2").iter().filter(|x| *x == "drain").count(),
        2
    );
    // cp-3 acquires only after cp-2 released.
    let log = r.world.borrow().log.clone();
    let cp2_release = log
        .iter()
        .position(|(n, s)| n == "cp-2" && s == "release")
        .unwrap();
    let cp3_acquire = log
        .iter()
        .position(|(n, s)| n == "cp-3" && s == "acquire")
        .unwrap();
    assert!(cp3_acquire > cp2_release, "{log:?}");
}

#[tokio::test]
async fn a_control_plane_checks_quorum_afresh_right_before_taking_its_member_down() {
    let mut r = roll();
    // A member goes down after cp-1's turn was decided: the next two fresh looks see it.
    r.world.borrow_mut().member_down_for = 2;
    r.settle().await;
    assert!(all_done(&r));
    for n in ["cp-1", "cp-2", "cp-3", "w-1"] {
        let s = r.steps_of(n);
        let down = if n == "cp-1" {
            "upgrade-apply"
        } else {
            "upgrade-node"
        };
        let at = s.iter().position(|x| x == down).unwrap();
        if n.starts_with("cp-") {
            assert_eq!(s[at - 1], "check-quorum", "{n}: {s:?}");
        } else {
            assert!(!s.contains(&"check-quorum".to_string()), "{n}: {s:?}");
        }
    }
    let s = r.steps_of("cp-1");
    assert_eq!(
        s.iter().filter(|x| *x == "check-quorum").count(),
        3,
        "denied twice, then allowed: {s:?}"
    );
    assert_eq!(s.iter().filter(|x| *x == "upgrade-apply").count(), 1);
    // The lock stayed with cp-1 while it waited for etcd.
    assert_one_at_a_time(&r.world.borrow().log);
}

#[tokio::test]
async fn a_node_rebooted_mid_step_resumes_from_its_saved_phase() {
    let mut r = roll();
    r.world.borrow_mut().pdb_blocks = Some("cp-1".into());
    r.settle().await;
    // cp-1 stopped at drain; "reboot" it: restart from what it saved.
    let idx = r.nodes.iter().position(|n| n.1.name == "cp-1").unwrap();
    let saved = r.nodes[idx].1.saved.clone().unwrap();
    assert!(matches!(saved, Phase::Stopped { .. }));
    let (p, acts) = restart(saved);
    r.nodes[idx].2 = p;
    r.nodes[idx].3 = acts;
    r.world.borrow_mut().pdb_blocks = None;
    r.settle().await;
    assert!(
        matches!(r.phase("cp-1"), Phase::Stopped { .. }),
        "a reboot does not resume a stopped roll"
    );
    r.world.borrow_mut().resume = Some((1, 1));
    r.settle().await;
    assert!(all_done(&r));
}
