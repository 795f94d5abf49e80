//! `muster reset`: start over. Retires the cluster's assembly at the rendezvous so fresh
//! nodes built from the same output assemble afresh: the `generation` record is raised
//! first (from then on no agent joins the retired assembly's init, even if its record
//! lingered), then the retired assembly's records are deleted (`initialized`, join
//! material, refresh request, removal tombstones). Members and slot leases are not
//! touched: they expire with their TTL once the old machines are gone; live ones are
//! listed so the operator sees what is still running.

use super::{BuildDir, CLIENT_NAME, OpsError};
use protocol::generation::{self, GenerationRecord};
use protocol::{ErrorKind, keys};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResetReport {
    pub cluster: String,
    pub previous_generation: u64,
    pub generation: u64,
    /// The records deleted (those that existed).
    pub deleted: Vec<String>,
    /// Members still heartbeating: machines of the retired assembly that are still up.
    pub live_members: Vec<String>,
}

/// Raises the generation, then deletes the retired assembly's records.
pub async fn reset(dir: &BuildDir, timeout: Duration) -> Result<ResetReport, OpsError> {
    let client = dir.client(timeout)?;
    let err = |e| dir.rendezvous_error(e);
    let existing = client.get(keys::GENERATION).await.map_err(err)?;
    let previous = match &existing {
        None => None,
        Some(r) => Some(
            serde_json::from_slice::<GenerationRecord>(&r.value).map_err(|e| OpsError::Record {
                url: dir.rendezvous_url(),
                what: format!("record `{}` does not read: {e}", keys::GENERATION),
            })?,
        ),
    };
    let previous_generation = generation::current(previous.as_ref());
    let next = generation::next(previous_generation, CLIENT_NAME, super::now_ms());
    let bytes = serde_json::to_vec(&next).map_err(|e| OpsError::Record {
        url: dir.rendezvous_url(),
        what: format!("encode the generation record: {e}"),
    })?;
    // CAS on the revision read: two resets at once raise it once each, never lose one.
    match &existing {
        None => client.create(keys::GENERATION, &bytes, None, None).await,
        Some(r) => {
            client
                .cas(keys::GENERATION, r.revision, &bytes, None, None)
                .await
        }
    }
    .map_err(err)?;
    let (_, tombstones) = client.list(keys::REMOVED_PREFIX).await.map_err(err)?;
    let mut deleted = Vec::new();
    let retired = generation::RETIRED_KEYS
        .iter()
        .map(|k| (*k).to_string())
        .chain(tombstones.into_iter().map(|r| r.key));
    for key in retired {
        match client.delete(&key, None).await {
            Ok(_) => deleted.push(key),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => {}
            Err(e) => return Err(err(e)),
        }
    }
    let (_, members) = client.members_each().await.map_err(err)?;
    Ok(ResetReport {
        cluster: dir.baked.spec.name.to_string(),
        previous_generation,
        generation: next.generation,
        deleted,
        live_members: members.into_iter().map(|m| m.name).collect(),
    })
}

/// Whether the typed confirmation names the cluster (surrounding blanks ignored).
pub fn confirmed(typed: &str, cluster: &str) -> bool {
    typed.trim() == cluster
}

/// The human form.
pub fn render(r: &ResetReport) -> String {
    let mut o = format!(
        "cluster {}: generation {} retired, now {}\n",
        r.cluster, r.previous_generation, r.generation
    );
    if r.deleted.is_empty() {
        o.push_str("no records of the retired assembly were left\n");
    } else {
        o.push_str(&format!("deleted: {}\n", r.deleted.join(", ")));
    }
    if !r.live_members.is_empty() {
        o.push_str(&format!(
            "still heartbeating (machines of the retired assembly still up? their membership \
             expires once they stop): {}\n",
            r.live_members.join(", ")
        ));
    }
    o.push_str("nodes booted from this build now assemble a new cluster\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_cluster_name_confirms() {
        assert!(confirmed("lab\n", "lab"));
        assert!(confirmed("  lab ", "lab"));
        assert!(!confirmed("y\n", "lab"));
        assert!(!confirmed("", "lab"));
        assert!(!confirmed("lab2", "lab"));
    }

    #[test]
    fn the_report_names_generations_and_what_is_still_up() {
        let r = ResetReport {
            cluster: "lab".into(),
            previous_generation: 0,
            generation: 1,
            deleted: vec!["initialized".into(), "join-material".into()],
            live_members: vec!["cp-1".into()],
        };
        let t = render(&r);
        assert!(t.contains("generation 0 retired, now 1"), "{t}");
        assert!(t.contains("deleted: initialized, join-material"), "{t}");
        assert!(
            t.contains("still heartbeating") && t.contains("cp-1"),
            "{t}"
        );
    }
}
