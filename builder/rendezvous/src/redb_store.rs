//! The embedded [`Store`]: one redb file in the data dir, one fsync'd transaction per
//! group of batches. Values are JSON (ciphertext stays base64, as on the wire).

use crate::store::{Batch, ClusterData, Meta, Op, Store, StoreError};
use protocol::wire::AuditEntry;
use redb::{Database, Durability, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");
const MEMBERS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("members");
const SEMAPHORES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("semaphores");
const AUDIT: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("audit");

/// File name of the database inside `--data DIR`.
pub const DB_FILE: &str = "rendezvous.redb";

#[derive(Debug)]
pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

impl RedbStore {
    /// Opens (creating if needed) `dir/rendezvous.redb`.
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        let path = dir.join(DB_FILE);
        std::fs::create_dir_all(dir).map_err(|e| err(&path, format!("creating the dir: {e}")))?;
        let db = Database::create(&path).map_err(|e| err(&path, e))?;
        let store = RedbStore { db, path };
        // Create the tables up front so reads never see a missing table.
        store.write(|_| Ok(()))?;
        Ok(store)
    }

    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().map_err(|e| err(&self.path, e))?;
        tx.set_durability(Durability::Immediate);
        {
            tx.open_table(META).map_err(|e| err(&self.path, e))?;
            tx.open_table(RECORDS).map_err(|e| err(&self.path, e))?;
            tx.open_table(MEMBERS).map_err(|e| err(&self.path, e))?;
            tx.open_table(SEMAPHORES).map_err(|e| err(&self.path, e))?;
            tx.open_table(AUDIT).map_err(|e| err(&self.path, e))?;
        }
        f(&tx)?;
        tx.commit().map_err(|e| err(&self.path, e))
    }
}

impl Store for RedbStore {
    fn load(&self, cluster: &str) -> Result<ClusterData, StoreError> {
        let p = &self.path;
        let tx = self.db.begin_read().map_err(|e| err(p, e))?;
        let mut data = ClusterData::default();
        let meta = tx.open_table(META).map_err(|e| err(p, e))?;
        if let Some(v) = meta.get(cluster).map_err(|e| err(p, e))? {
            data.meta = decode::<Meta>(p, v.value())?;
        }
        let records = tx.open_table(RECORDS).map_err(|e| err(p, e))?;
        for row in records.range((cluster, "")..).map_err(|e| err(p, e))? {
            let (k, v) = row.map_err(|e| err(p, e))?;
            let (c, key) = k.value();
            if c != cluster {
                break;
            }
            data.records.insert(key.to_string(), decode(p, v.value())?);
        }
        let members = tx.open_table(MEMBERS).map_err(|e| err(p, e))?;
        for row in members.range((cluster, "")..).map_err(|e| err(p, e))? {
            let (k, v) = row.map_err(|e| err(p, e))?;
            let (c, name) = k.value();
            if c != cluster {
                break;
            }
            data.members.insert(name.to_string(), decode(p, v.value())?);
        }
        let sems = tx.open_table(SEMAPHORES).map_err(|e| err(p, e))?;
        for row in sems.range((cluster, "")..).map_err(|e| err(p, e))? {
            let (k, v) = row.map_err(|e| err(p, e))?;
            let (c, name) = k.value();
            if c != cluster {
                break;
            }
            data.semaphores
                .insert(name.to_string(), decode(p, v.value())?);
        }
        Ok(data)
    }

    fn commit(&self, batches: &[Batch]) -> Result<(), StoreError> {
        let p = self.path.clone();
        self.write(|tx| {
            let mut meta = tx.open_table(META).map_err(|e| err(&p, e))?;
            let mut records = tx.open_table(RECORDS).map_err(|e| err(&p, e))?;
            let mut members = tx.open_table(MEMBERS).map_err(|e| err(&p, e))?;
            let mut sems = tx.open_table(SEMAPHORES).map_err(|e| err(&p, e))?;
            let mut audit = tx.open_table(AUDIT).map_err(|e| err(&p, e))?;
            for batch in batches {
                let c = batch.cluster.as_str();
                for op in &batch.ops {
                    let r = match op {
                        Op::Meta(m) => meta.insert(c, encode(m).as_slice()).map(drop),
                        Op::PutRecord(k, v) => records
                            .insert((c, k.as_str()), encode(v).as_slice())
                            .map(drop),
                        Op::DeleteRecord(k) => records.remove((c, k.as_str())).map(drop),
                        Op::PutMember(k, v) => members
                            .insert((c, k.as_str()), encode(v).as_slice())
                            .map(drop),
                        Op::DeleteMember(k) => members.remove((c, k.as_str())).map(drop),
                        Op::PutSemaphore(k, v) => {
                            sems.insert((c, k.as_str()), encode(v).as_slice()).map(drop)
                        }
                        Op::Audit(e) => audit.insert((c, e.seq), encode(e).as_slice()).map(drop),
                    };
                    r.map_err(|e| err(&p, e))?;
                }
            }
            Ok(())
        })
    }

    fn audit(
        &self,
        cluster: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let p = &self.path;
        let tx = self.db.begin_read().map_err(|e| err(p, e))?;
        let table = tx.open_table(AUDIT).map_err(|e| err(p, e))?;
        let start = after.saturating_add(1);
        let mut out = Vec::new();
        for row in table
            .range((cluster, start)..=(cluster, u64::MAX))
            .map_err(|e| err(p, e))?
        {
            if out.len() >= limit {
                break;
            }
            let (_, v) = row.map_err(|e| err(p, e))?;
            out.push(decode(p, v.value())?);
        }
        Ok(out)
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs (strings, integers, no maps with non-string keys)
    // cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| err(path, format!("corrupt entry: {e}")))
}

fn err(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError {
        backend: format!("redb {}", path.display()),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredRecord;
    use protocol::wire::{AuditEvent, Sealed};

    #[test]
    fn commits_are_visible_after_reopen_and_clusters_are_separate() {
        let dir = tempfile::tempdir().unwrap();
        let rec = StoredRecord {
            value: Sealed("c2VhbGVk".into()),
            revision: 1,
            create_revision: 1,
            expires_at_ms: None,
        };
        let entry = AuditEntry {
            seq: 1,
            time_ms: 5,
            revision: 1,
            event: AuditEvent::RecordCreated,
            subject: "k".into(),
            holder: None,
            token: None,
            slots: None,
        };
        {
            let s = RedbStore::open(dir.path()).unwrap();
            s.commit(&[Batch {
                cluster: "a".into(),
                ops: vec![
                    Op::Meta(Meta {
                        revision: 1,
                        audit_seq: 1,
                    }),
                    Op::PutRecord("k".into(), rec.clone()),
                    Op::PutRecord("gone".into(), rec.clone()),
                    Op::DeleteRecord("gone".into()),
                    Op::Audit(entry.clone()),
                ],
            }])
            .unwrap();
        }
        let s = RedbStore::open(dir.path()).unwrap();
        let a = s.load("a").unwrap();
        assert_eq!(a.meta.revision, 1);
        assert_eq!(a.records.len(), 1);
        assert_eq!(a.records["k"], rec);
        assert_eq!(s.load("b").unwrap(), ClusterData::default());
        assert_eq!(s.audit("a", 0, 10).unwrap(), vec![entry]);
        assert!(s.audit("a", 1, 10).unwrap().is_empty());
        assert!(s.audit("b", 0, 10).unwrap().is_empty());
    }
}
