//! Property tests of what the agent reads back from disk and from the network: its
//! persisted state (`AGENT_STATE`) and member reports. Whatever the bytes, reading never
//! panics and an unreadable file is an error naming it; whatever the agent wrote, it reads
//! back unchanged. `PROPTEST_CASES=N` runs more cases (CI runs the default).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use model::node_files::{AGENT_STATE, AGENT_STATUS, NodeRoot};
use nodeagent::bootstrap::{FileStore, Persisted, Phase, State, Store};
use proptest::prelude::*;
use protocol::report::{DistroReason, MemberReport, Unreachable};

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

fn root() -> (tempfile::TempDir, NodeRoot) {
    let dir = tempfile::tempdir().unwrap();
    let root = NodeRoot::new(dir.path());
    std::fs::create_dir_all(root.path(AGENT_STATE).parent().unwrap()).unwrap();
    (dir, root)
}

/// Phases with and without payloads, nested ones included.
fn phase() -> impl Strategy<Value = Phase> {
    let leaf = prop_oneof![
        Just(Phase::Preflight),
        Just(Phase::Registering),
        Just(Phase::WaitingForInit),
        Just(Phase::Electing),
        any::<u64>().prop_map(|token| Phase::Initializing { token }),
        (any::<u64>(), any::<u32>(), any::<u32>()).prop_map(|(token, successes, failures)| {
            Phase::Verifying {
                token,
                successes,
                failures,
            }
        }),
        any::<u64>().prop_map(|token| Phase::Joining { token }),
        Just(Phase::Done),
    ];
    leaf.prop_recursive(2, 4, 1, |inner| {
        (any::<u64>(), inner, any::<bool>()).prop_map(|(delay_ms, then, poll)| Phase::Backoff {
            delay_ms,
            then: Box::new(then),
            poll,
        })
    })
}

/// Text as agents see it in errors: any characters, control characters included.
fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..40).prop_map(|v| v.into_iter().collect())
}

fn report() -> impl Strategy<Value = MemberReport> {
    (
        text(),
        text(),
        proptest::option::of(text()),
        any::<u64>(),
        any::<bool>(),
        proptest::option::of((
            text(),
            proptest::option::of(text()),
            proptest::collection::vec(text(), 0..4),
        )),
        proptest::collection::vec((text(), text(), text()), 0..3),
    )
        .prop_map(
            |(node, phase, last_error, updated_ms, done, reason, unreachable)| MemberReport {
                // Written first: it copies `node` before `node` moves in.
                stranded: (!done).then(|| format!("stranded {node}")),
                node,
                role: "worker".into(),
                phase,
                since_ms: None,
                attempt: 1,
                last_error,
                updated_ms,
                done,
                etcd: None,
                ip: None,
                lb_config: None,
                readiness: None,
                reason: reason.map(|(source, message, log_tail)| DistroReason {
                    source,
                    phase: None,
                    message,
                    log_tail,
                }),
                unreachable: unreachable
                    .into_iter()
                    .map(|(what, endpoint, error)| Unreachable {
                        what,
                        endpoint,
                        error,
                    })
                    .collect(),
            },
        )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_in_the_state_file_read_as_a_state_or_an_error_naming_it(
        bytes in proptest::collection::vec(any::<u8>(), 0..512)
    ) {
        let (_dir, root) = root();
        let path = root.path(AGENT_STATE);
        std::fs::write(&path, &bytes).unwrap();
        match FileStore::new(root).load() {
            Ok(state) => prop_assert!(state.is_some()),
            Err(e) => prop_assert!(
                e.to_string().contains(&path.display().to_string()),
                "{e}"
            ),
        }
    }

    #[test]
    fn a_saved_state_reads_back_unchanged_and_any_cut_of_it_is_refused_or_read(
        steps in proptest::collection::vec((phase(), any::<u32>(), proptest::option::of(text())), 0..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let (_dir, root) = root();
        let store = FileStore::new(root.clone());
        let mut p = Persisted::new("lab-cp-1", 1);
        for (i, (phase, attempt, last_error)) in (1u64..).zip(steps) {
            p.enter(State { phase, attempt, last_error }, 1 + i);
        }
        store.save(&p).unwrap();
        prop_assert_eq!(store.load().unwrap(), Some(p));

        // A write cut short (the rename makes this impossible on a real node, but a
        // damaged disk is not): never a panic, never a silently different state.
        let path = root.path(AGENT_STATE);
        let full = std::fs::read(&path).unwrap();
        let at = cut.index(full.len().max(1));
        std::fs::write(&path, &full[..at]).unwrap();
        if let Ok(Some(read)) = store.load() {
            // Only trailing whitespace can be cut without changing the document.
            prop_assert!(full[at..].iter().all(u8::is_ascii_whitespace), "{read:?}");
        }
    }

    #[test]
    fn member_reports_round_trip_and_any_bytes_read_safely(
        r in report(),
        noise in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        prop_assert_eq!(MemberReport::from_json(&r.to_json()), Some(r.clone()));
        let (_dir, root) = root();
        let path = root.path(AGENT_STATUS);
        std::fs::write(&path, serde_json::to_vec(&r).unwrap()).unwrap();
        prop_assert_eq!(MemberReport::read_local(&root).unwrap(), Some(r));
        std::fs::write(&path, &noise).unwrap();
        if let Err(e) = MemberReport::read_local(&root) {
            prop_assert!(e.contains(&path.display().to_string()), "{e}");
        }
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&noise) {
            let _ = MemberReport::from_json(&v);
        }
    }
}
