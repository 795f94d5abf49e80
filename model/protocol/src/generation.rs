//! Assembly generations. `muster reset` retires a cluster's assembly: it raises the durable
//! `generation` record and deletes what the retired assembly left (`initialized`, the join
//! material, a pending refresh request, removal tombstones). Every `initialized` record
//! carries the generation it was published in, and an agent treats a record of an older
//! generation as no init at all: it never joins a retired cluster, even if a record of it
//! is still (or again) at the rendezvous.

use crate::clock::Millis;
use crate::keys;
use crate::records::InitRecord;
use serde::{Deserialize, Serialize};

/// The value of the `generation` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationRecord {
    pub generation: u64,
    /// Who raised it (`muster-operator`) and when.
    pub by: String,
    pub at_ms: Millis,
}

/// The current generation: 0 while no reset ever happened (no record).
pub fn current(record: Option<&GenerationRecord>) -> u64 {
    record.map_or(0, |r| r.generation)
}

/// Whether `init` is the current assembly's: an older generation's record is retired and
/// must never be joined; a newer one than we know of is current (the reset raced our read
/// of `generation`, and the record was published after it).
pub fn is_current(init: &InitRecord, current: u64) -> bool {
    init.generation >= current
}

/// The records a reset deletes: the retired assembly's init, its join material, any
/// pending refresh request and the record of its applied add-ons. Tombstones (`removed.*`) are listed at the rendezvous and
/// added by the caller.
pub const RETIRED_KEYS: [&str; 4] = [
    keys::INITIALIZED,
    keys::JOIN_MATERIAL,
    keys::REFRESH_REQUEST,
    keys::ADDONS_APPLIED,
];

/// The record a reset of an assembly at `current` writes.
pub fn next(current: u64, by: &str, now: Millis) -> GenerationRecord {
    GenerationRecord {
        generation: current.saturating_add(1),
        by: by.to_string(),
        at_ms: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init(generation: u64) -> InitRecord {
        InitRecord {
            node: "cp-1".into(),
            token: 3,
            at_ms: 1,
            generation,
        }
    }

    #[test]
    fn no_record_is_generation_zero_and_a_reset_raises_it() {
        assert_eq!(current(None), 0);
        let r = next(current(None), "muster-operator", 5);
        assert_eq!((r.generation, r.at_ms), (1, 5));
        assert_eq!(next(current(Some(&r)), "x", 6).generation, 2);
    }

    #[test]
    fn an_older_generations_init_is_never_current() {
        assert!(is_current(&init(0), 0), "before any reset");
        assert!(!is_current(&init(0), 1), "the init before the first reset");
        assert!(!is_current(&init(4), 5));
        assert!(is_current(&init(5), 5));
        assert!(
            is_current(&init(6), 5),
            "published after a reset we have not read"
        );
    }

    #[test]
    fn an_init_record_from_before_generations_reads_as_generation_zero() {
        let r: InitRecord = serde_json::from_str(r#"{"node":"cp-1","token":2,"atMs":9}"#).unwrap();
        assert_eq!(r.generation, 0);
        assert!(!is_current(&r, 1));
    }

    #[test]
    fn a_reset_retires_the_init_and_everything_joiners_read() {
        for k in [
            keys::INITIALIZED,
            keys::JOIN_MATERIAL,
            keys::REFRESH_REQUEST,
            keys::ADDONS_APPLIED,
        ] {
            assert!(RETIRED_KEYS.contains(&k), "{k}");
        }
        assert!(!RETIRED_KEYS.contains(&keys::GENERATION));
    }
}
