//! The embedded [`Store`]: one redb file in the data dir, one fsync'd transaction per
//! group of batches. Values are JSON (ciphertext stays base64, as on the wire).

use crate::store::{Batch, ClusterData, Meta, Op, Store, StoreError};
use protocol::wire::AuditEntry;
use redb::{Database, Durability, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");
const MEMBERS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("members");
const SEMAPHORES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("semaphores");
const AUDIT: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("audit");

/// File name of the database inside `--data DIR`.
pub const DB_FILE: &str = "rendezvous.redb";

/// The first bytes of every redb file, and the length of its fixed header (magic, god
/// byte, layout, two commit slots): a shorter or differently starting file is not one.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
const REDB_HEADER_LEN: u64 = 320;

#[derive(Debug)]
pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

impl RedbStore {
    /// Opens (creating if needed) `dir/rendezvous.redb`, the dir mode 0700 and the file
    /// 0600 (they hold cluster metadata). A damaged file is an error saying what to do;
    /// redb's own assertions on a damaged file are caught, never a panic.
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        let path = dir.join(DB_FILE);
        create_private_dir(dir).map_err(|e| err(&path, format!("creating the dir: {e}")))?;
        check_header(&path)?;
        create_private_file(&path)
            .map_err(|e| err(&path, format!("creating the file mode 0600: {e}")))?;
        let db = guarded(&path, || Database::create(&path)).and_then(|r| {
            r.map_err(|e| match e {
                redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
                    damaged(&path, detail)
                }
                redb::DatabaseError::Storage(redb::StorageError::Io(e))
                    if e.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    damaged(&path, format!("it ends early: {e}"))
                }
                other => err(&path, other),
            })
        })?;
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
        guarded(&self.path, || self.load_unguarded(cluster))?
    }

    fn commit(&self, batches: &[Batch]) -> Result<(), StoreError> {
        guarded(&self.path, || self.commit_unguarded(batches))?
    }

    fn audit(
        &self,
        cluster: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        guarded(&self.path, || self.audit_unguarded(cluster, after, limit))?
    }
}

impl RedbStore {
    fn load_unguarded(&self, cluster: &str) -> Result<ClusterData, StoreError> {
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

    fn commit_unguarded(&self, batches: &[Batch]) -> Result<(), StoreError> {
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

    fn audit_unguarded(
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

/// Runs `f`, turning a panic inside redb (its assertions on a damaged file) into an
/// error naming the file.
fn guarded<T>(path: &Path, f: impl FnOnce() -> T) -> Result<T, StoreError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let detail = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "redb panicked".to_string());
        damaged(path, format!("redb failed on it: {detail}"))
    })
}

/// A non-empty store must start with redb's header; a truncated or foreign file is
/// refused here, before redb reads it.
fn check_header(path: &Path) -> Result<(), StoreError> {
    use std::io::Read;
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(path, format!("opening it: {e}"))),
    };
    let len = file
        .metadata()
        .map_err(|e| err(path, format!("reading its size: {e}")))?
        .len();
    if len == 0 {
        // redb initializes an empty file; so does a crash right after creating it.
        return Ok(());
    }
    if len < REDB_HEADER_LEN {
        return Err(damaged(
            path,
            format!(
                "it is {len} bytes, shorter than redb's {REDB_HEADER_LEN}-byte header (truncated)"
            ),
        ));
    }
    let mut header = [0u8; REDB_HEADER_LEN as usize];
    file.read_exact(&mut header)
        .map_err(|e| err(path, format!("reading its header: {e}")))?;
    if header[..REDB_MAGIC.len()] != REDB_MAGIC {
        return Err(damaged(path, "it does not start with redb's header"));
    }
    match layout_len(&header) {
        None => Err(damaged(path, "its header's layout is impossible")),
        Some(want) if len < want => Err(damaged(
            path,
            format!("it is {len} bytes but its header describes {want} (truncated)"),
        )),
        Some(_) => Ok(()),
    }
}

/// The file length redb's header describes (redb 2 layout: a header page, then full
/// regions and an optional trailing one, each region's header pages then data pages);
/// redb asserts the file is at least this long. `None` for a layout redb cannot open.
fn layout_len(header: &[u8]) -> Option<u64> {
    let u32_at = |at: usize| -> Option<u64> {
        let bytes: [u8; 4] = header.get(at..at + 4)?.try_into().ok()?;
        Some(u64::from(u32::from_le_bytes(bytes)))
    };
    let page = u32_at(12)?;
    let region_header_pages = u32_at(16)?;
    let region_data_pages = u32_at(20)?;
    let full_regions = u32_at(24)?;
    let trailing_pages = u32_at(28)?;
    if page == 0 || region_data_pages == 0 || (full_regions == 0 && trailing_pages == 0) {
        return None;
    }
    let full = (region_header_pages + region_data_pages).checked_mul(page)?;
    let trailing = if trailing_pages > 0 {
        (region_header_pages + trailing_pages).checked_mul(page)?
    } else {
        0
    };
    page.checked_add(full_regions.checked_mul(full)?)?
        .checked_add(trailing)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                "rendezvous data dir {} has mode {mode:o}: group or others can reach the store; chmod 700 it",
                dir.display()
            );
        }
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates the store file mode 0600 if missing, and takes group and other access away
/// from an existing one (it is this service's own file).
fn create_private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    let mode = file.metadata()?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
}

/// The error for a damaged store: which file, what is wrong, and what the operator can do.
fn damaged(path: &Path, detail: impl std::fmt::Display) -> StoreError {
    err(
        path,
        format!(
            "the store is damaged ({detail}). Restore {p} from a backup, or move it aside \
             (`mv {p} {p}.damaged`) to start with an empty store: nodes register again, but \
             records, leases and the audit log are lost",
            p = path.display()
        ),
    )
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
            previous_slots: None,
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
