//! etcd quorum arithmetic: a write commits when a majority of members agree.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuorumRow {
    pub members: u32,
    pub quorum: u32,
    pub can_lose: u32,
}

pub fn row(members: u32) -> QuorumRow {
    let quorum = members / 2 + 1;
    QuorumRow {
        members,
        quorum,
        can_lose: members - quorum,
    }
}

/// Rows for 1 to max(5, chosen) members, so the chosen count is always shown in context.
pub fn table(chosen: u32) -> Vec<QuorumRow> {
    (1..=chosen.max(5)).map(row).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_seed_table() {
        assert_eq!(
            row(1),
            QuorumRow {
                members: 1,
                quorum: 1,
                can_lose: 0
            }
        );
        assert_eq!(
            row(3),
            QuorumRow {
                members: 3,
                quorum: 2,
                can_lose: 1
            }
        );
        assert_eq!(
            row(4),
            QuorumRow {
                members: 4,
                quorum: 3,
                can_lose: 1
            }
        );
        assert_eq!(
            row(5),
            QuorumRow {
                members: 5,
                quorum: 3,
                can_lose: 2
            }
        );
    }
}
