//! The join-material exchange, as decisions: whether a joiner may use the published
//! material, when it asks for a refresh, whose `initialized` record is whose, and what a
//! joined control plane does with a refresh request. Pure; the driver reads the records,
//! asks these functions, and writes what they say.
//!
//! Ownership: the initializer publishes the first material fenced by its init token;
//! material belongs to the cluster whose `initialized` record carries that token. After
//! that any joined control plane may refresh it (unfenced, compare-and-swap), and only on
//! a request: a joiner that finds it missing, stale or refused writes one and waits.

use protocol::clock::Millis;
use protocol::records::{InitRecord, JoinMaterial, RefreshRequest, Secret};

/// What a joiner does with the published material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Usable {
    /// Join with the material at this revision.
    Yes { revision: u64 },
    /// This revision was refused and a refresh is asked for already: wait for it.
    AwaitRefresh,
    /// Missing, from another init, or expiring within the margin: ask for a refresh, wait.
    RequestRefresh,
}

/// Whether `material` (with its revision) can be used by a joiner of this kind now.
pub fn judge_material(
    init: &InitRecord,
    material: Option<(&JoinMaterial, u64)>,
    pending: Option<&RefreshRequest>,
    control_plane: bool,
    now: Millis,
    margin_ms: u64,
) -> Usable {
    match material {
        Some((_, rev)) if pending.is_some_and(|r| r.rejects(rev)) => Usable::AwaitRefresh,
        Some((m, rev)) if belongs_to(m, init) && m.fresh_for(control_plane, now, margin_ms) => {
            Usable::Yes { revision: rev }
        }
        Some(_) | None => Usable::RequestRefresh,
    }
}

/// Material made by the published init (not left from an init that was undone).
pub fn belongs_to(m: &JoinMaterial, init: &InitRecord) -> bool {
    m.init_token == init.token
}

/// A stored refresh request; one that does not parse still asks for a refresh.
pub fn stored_request(bytes: &[u8]) -> RefreshRequest {
    RefreshRequest::parse(bytes).unwrap_or(RefreshRequest {
        by: String::new(),
        at_ms: 0,
        rejected_revision: None,
    })
}

/// A refresh request already stored (`existing`, unreadable as `None`) is replaced only
/// to say that `rejected` was refused, so it is refreshed whatever its expiry times say;
/// any other request already asks for what a plain one would.
pub fn replaces_request(existing: Option<&RefreshRequest>, rejected: Option<u64>) -> bool {
    rejected.is_some_and(|rev| !existing.is_some_and(|r| r.rejects(rev)))
}

/// Whose an `initialized` record is, seen by the node publishing with `token`.
pub fn is_ours(record: &InitRecord, node: &str, token: u64) -> bool {
    record.token == token && record.node == node
}

/// What a joined control plane does with a pending refresh request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serve {
    /// The material is fresh enough to outlive a join by a wide margin and was not
    /// refused: only clear the request.
    ClearOnly,
    /// Issue new material, keeping the certificate key it had (`reuse_key`), and write it
    /// over `revision` (compare-and-swap) or create it when there is none.
    Refresh {
        reuse_key: Option<Secret>,
        revision: Option<u64>,
    },
}

/// How a joined control plane answers `request` given the current material.
pub fn serve(
    request: &RefreshRequest,
    init: &InitRecord,
    current: Option<(&JoinMaterial, u64)>,
    now: Millis,
    margin_ms: u64,
) -> Serve {
    // Twice the joiners' margin, so a joiner does not ask again right away.
    let wide = margin_ms.saturating_mul(2);
    match current {
        Some((m, rev)) if belongs_to(m, init) => {
            if !request.rejects(rev)
                && m.fresh_for(true, now, wide)
                && m.fresh_for(false, now, wide)
            {
                Serve::ClearOnly
            } else {
                Serve::Refresh {
                    reuse_key: m.certificate_key.clone(),
                    revision: Some(rev),
                }
            }
        }
        Some((_, rev)) => Serve::Refresh {
            reuse_key: None,
            revision: Some(rev),
        },
        None => Serve::Refresh {
            reuse_key: None,
            revision: None,
        },
    }
}

/// Which certificate key new material carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChoice {
    /// The distribution has no certificate key (k3s).
    None,
    /// Keep the key joiners may hold already.
    Reuse(Secret),
    Generate,
}

/// `uses_keys`: the distribution uploads control-plane certificates under a key (kubeadm).
pub fn certificate_key(reuse: Option<Secret>, uses_keys: bool) -> KeyChoice {
    match (reuse, uses_keys) {
        (_, false) => KeyChoice::None,
        (Some(k), true) => KeyChoice::Reuse(k),
        (None, true) => KeyChoice::Generate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARGIN: u64 = 1_000;

    fn init(token: u64) -> InitRecord {
        InitRecord {
            node: "cp-1".into(),
            token,
            at_ms: 0,
            generation: 0,
        }
    }

    /// Token until 100 s, certificate key until 50 s, from the init with token 1.
    fn material() -> JoinMaterial {
        JoinMaterial {
            init_token: 1,
            token: Secret("abcdef.0123456789abcdef".into()),
            token_expires_ms: 100_000,
            ca_cert_hash: "sha256:00".into(),
            certificate_key: Some(Secret("key".into())),
            certificate_key_expires_ms: Some(50_000),
            admin_kubeconfig: None,
            etcd: None,
        }
    }

    fn request(rejected: Option<u64>) -> RefreshRequest {
        RefreshRequest {
            by: "cp-3".into(),
            at_ms: 0,
            rejected_revision: rejected,
        }
    }

    #[test]
    fn fresh_material_of_the_published_init_is_used() {
        let m = material();
        assert_eq!(
            judge_material(&init(1), Some((&m, 7)), None, true, 10_000, MARGIN),
            Usable::Yes { revision: 7 }
        );
        assert_eq!(
            judge_material(
                &init(1),
                Some((&m, 7)),
                Some(&request(None)),
                true,
                10_000,
                MARGIN
            ),
            Usable::Yes { revision: 7 },
            "a plain pending request does not stop a joiner whose material is fresh"
        );
    }

    #[test]
    fn stale_foreign_or_missing_material_asks_for_a_refresh() {
        let m = material();
        let cases = [
            ("none published", None, init(1), true, 10_000),
            ("from an undone init", Some((&m, 7)), init(2), true, 10_000),
            ("key expiring", Some((&m, 7)), init(1), true, 49_500),
            ("token expiring", Some((&m, 7)), init(1), false, 99_500),
        ];
        for (why, material, init, cp, now) in cases {
            assert_eq!(
                judge_material(&init, material, None, cp, now, MARGIN),
                Usable::RequestRefresh,
                "{why}"
            );
        }
        assert_eq!(
            judge_material(&init(1), Some((&m, 7)), None, false, 49_500, MARGIN),
            Usable::Yes { revision: 7 },
            "a worker needs no certificate key"
        );
    }

    #[test]
    fn refused_material_waits_for_the_refresh_already_asked_for() {
        let m = material();
        assert_eq!(
            judge_material(
                &init(1),
                Some((&m, 7)),
                Some(&request(Some(7))),
                true,
                0,
                MARGIN
            ),
            Usable::AwaitRefresh,
            "fresh by its expiry times, but refused by the cluster"
        );
        assert_eq!(
            judge_material(
                &init(1),
                Some((&m, 8)),
                Some(&request(Some(7))),
                true,
                0,
                MARGIN
            ),
            Usable::Yes { revision: 8 },
            "the refreshed revision is not the refused one"
        );
    }

    #[test]
    fn only_a_refusal_replaces_a_pending_request() {
        assert!(
            !replaces_request(None, None),
            "a plain request: create only"
        );
        assert!(!replaces_request(Some(&request(None)), None));
        assert!(replaces_request(Some(&request(None)), Some(7)));
        assert!(replaces_request(Some(&request(Some(6))), Some(7)));
        assert!(replaces_request(None, Some(7)), "an unreadable request");
        assert!(
            !replaces_request(Some(&request(Some(7))), Some(7)),
            "already says so"
        );
    }

    #[test]
    fn an_unreadable_request_is_a_plain_one() {
        let r = stored_request(b"not json");
        assert!(!r.rejects(0));
        assert_eq!(r.rejected_revision, None);
        assert!(stored_request(br#"{"by":"w-1","atMs":5,"rejectedRevision":3}"#).rejects(3));
    }

    #[test]
    fn an_initialized_record_is_ours_only_with_our_name_and_token() {
        let r = init(4);
        assert!(is_ours(&r, "cp-1", 4));
        assert!(!is_ours(&r, "cp-1", 5), "an earlier init of ours, undone");
        assert!(!is_ours(&r, "cp-2", 4));
    }

    #[test]
    fn serving_clears_a_request_when_the_material_is_fresh_by_a_wide_margin() {
        let m = material();
        assert_eq!(
            serve(&request(None), &init(1), Some((&m, 7)), 10_000, MARGIN),
            Serve::ClearOnly
        );
        assert_eq!(
            serve(&request(None), &init(1), Some((&m, 7)), 48_500, MARGIN),
            Serve::Refresh {
                reuse_key: Some(Secret("key".into())),
                revision: Some(7)
            },
            "fresh for a joiner (margin 1 s) but not by twice that"
        );
    }

    #[test]
    fn serving_refreshes_refused_foreign_or_missing_material() {
        let m = material();
        assert_eq!(
            serve(&request(Some(7)), &init(1), Some((&m, 7)), 10_000, MARGIN),
            Serve::Refresh {
                reuse_key: Some(Secret("key".into())),
                revision: Some(7)
            },
            "refused: refreshed whatever its expiry times say, keeping the key"
        );
        assert_eq!(
            serve(&request(None), &init(2), Some((&m, 7)), 10_000, MARGIN),
            Serve::Refresh {
                reuse_key: None,
                revision: Some(7)
            },
            "another init's key is no use"
        );
        assert_eq!(
            serve(&request(None), &init(1), None, 10_000, MARGIN),
            Serve::Refresh {
                reuse_key: None,
                revision: None
            }
        );
    }

    #[test]
    fn certificate_keys_only_where_the_distribution_uses_them() {
        let k = Secret("k".into());
        assert_eq!(certificate_key(Some(k.clone()), false), KeyChoice::None);
        assert_eq!(certificate_key(None, false), KeyChoice::None);
        assert_eq!(certificate_key(Some(k.clone()), true), KeyChoice::Reuse(k));
        assert_eq!(certificate_key(None, true), KeyChoice::Generate);
    }
}
