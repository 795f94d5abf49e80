//! The k3s stand-in's external SQL datastore: a kine-like key/value log in a REAL MariaDB
//! (or MySQL) server, reached with the `mysql_async` client.
//!
//! One table, `kine`: every write appends a row (`id` is the revision; `name` the key;
//! `created`/`deleted` mark the first row of a key's life and its tombstone;
//! `prev_revision` the row it supersedes; `value`). The newest row of a name is its state.
//! A unique index on `(name, prev_revision)` makes two writers that saw the same revision
//! collide, like kine's: the loser retries on the new state, and [`SqlStore::create`] of a
//! key someone else just created fails — which is how only one server can create the
//! cluster's bootstrap data. No compaction (the stand-in's clusters live for minutes).

use anyhow::{Context, Result, bail};
use model::dsn::{Dsn, Scheme};
use mysql_async::prelude::Queryable;
use std::time::{Duration, Instant};

/// Each statement must finish within this (a lost database must not hang a health check).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// MySQL's duplicate-key error.
const ER_DUP_ENTRY: u16 = 1062;
/// How often a write retries after colliding with another writer.
const WRITE_ATTEMPTS: usize = 20;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS kine (
    id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
    name VARBINARY(630) NOT NULL,
    created TINYINT NOT NULL,
    deleted TINYINT NOT NULL,
    prev_revision BIGINT UNSIGNED NOT NULL,
    value MEDIUMBLOB NOT NULL,
    UNIQUE KEY kine_name_prev_revision (name, prev_revision),
    KEY kine_name_id (name, id)
) ENGINE=InnoDB";

/// A connection pool to the datastore named by a `mysql://` endpoint.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: mysql_async::Pool,
    /// `host:port/db`, for messages (never the password).
    label: String,
}

/// The newest row of a key.
struct Latest {
    id: u64,
    deleted: bool,
}

fn is_duplicate(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if s.code == ER_DUP_ENTRY)
}

/// `LIKE` pattern matching every key that starts with `prefix`.
fn like_prefix(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 1);
    for ch in prefix.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('%');
    p
}

impl SqlStore {
    /// Connects (retrying until `patience` runs out: the database may still be starting)
    /// and creates the table if missing.
    pub async fn connect(dsn: &Dsn, patience: Duration) -> Result<SqlStore> {
        if dsn.scheme != Scheme::Mysql || dsn.protocol != "tcp" {
            bail!(
                "muster stand-in: only mysql:// endpoints over tcp(host:port) are supported (got {:?} {})",
                dsn.scheme,
                dsn.protocol
            );
        }
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(dsn.host.clone())
            .tcp_port(dsn.port)
            .user(Some(dsn.user.clone()))
            .pass(dsn.password.clone())
            .db_name(Some(dsn.database.clone()))
            .prefer_socket(false)
            .pool_opts(mysql_async::PoolOpts::default().with_constraints(
                mysql_async::PoolConstraints::new(0, 8).context("pool constraints")?,
            ));
        let store = SqlStore {
            pool: mysql_async::Pool::new(opts),
            label: format!("{}/{}", dsn.address(), dsn.database),
        };
        let deadline = Instant::now() + patience;
        loop {
            match store.exec_drop(SCHEMA, ()).await {
                Ok(()) => return Ok(store),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!(
                        "datastore {} did not answer within {patience:?}",
                        store.label
                    )));
                }
                Err(e) => {
                    eprintln!(
                        "level=info msg=\"waiting for datastore {}: {e:#}\"",
                        store.label
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn conn(&self) -> Result<mysql_async::Conn> {
        tokio::time::timeout(STATEMENT_TIMEOUT, self.pool.get_conn())
            .await
            .with_context(|| format!("connecting to datastore {}: timed out", self.label))?
            .with_context(|| format!("connecting to datastore {}", self.label))
    }

    /// Runs one statement; `Ok(Err(e))` is the server's refusal (e.g. a duplicate key).
    async fn try_exec_drop<P: Into<mysql_async::Params> + Send>(
        &self,
        sql: &str,
        params: P,
    ) -> Result<std::result::Result<(), mysql_async::Error>> {
        let mut c = self.conn().await?;
        tokio::time::timeout(STATEMENT_TIMEOUT, c.exec_drop(sql, params))
            .await
            .with_context(|| format!("datastore {}: statement timed out", self.label))
    }

    async fn exec_drop<P: Into<mysql_async::Params> + Send>(
        &self,
        sql: &str,
        params: P,
    ) -> Result<()> {
        self.try_exec_drop(sql, params)
            .await?
            .with_context(|| format!("datastore {}", self.label))
    }

    async fn rows<T, P>(&self, sql: &str, params: P) -> Result<Vec<T>>
    where
        T: mysql_async::prelude::FromRow + Send + 'static,
        P: Into<mysql_async::Params> + Send,
    {
        let mut c = self.conn().await?;
        tokio::time::timeout(STATEMENT_TIMEOUT, c.exec(sql, params))
            .await
            .with_context(|| format!("datastore {}: query timed out", self.label))?
            .with_context(|| format!("datastore {}", self.label))
    }

    async fn latest(&self, key: &str) -> Result<Option<Latest>> {
        let rows: Vec<(u64, u8)> = self
            .rows(
                "SELECT id, deleted FROM kine WHERE name = ? ORDER BY id DESC LIMIT 1",
                (key.as_bytes(),),
            )
            .await?;
        Ok(rows.into_iter().next().map(|(id, deleted)| Latest {
            id,
            deleted: deleted != 0,
        }))
    }

    /// Appends a row superseding `prev`; `Ok(false)` when another writer got there first.
    async fn append(
        &self,
        key: &str,
        prev: Option<&Latest>,
        deleted: bool,
        value: &[u8],
    ) -> Result<bool> {
        let created = prev.is_none_or(|p| p.deleted);
        let r = self
            .try_exec_drop(
                "INSERT INTO kine (name, created, deleted, prev_revision, value) VALUES (?, ?, ?, ?, ?)",
                (
                    key.as_bytes(),
                    u8::from(created && !deleted),
                    u8::from(deleted),
                    prev.map_or(0, |p| p.id),
                    value,
                ),
            )
            .await?;
        match r {
            Ok(()) => Ok(true),
            Err(e) if is_duplicate(&e) => Ok(false),
            Err(e) => {
                Err(anyhow::Error::new(e)
                    .context(format!("datastore {}: writing {key}", self.label)))
            }
        }
    }

    /// Value of `key`, if it exists.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let rows: Vec<(u8, Vec<u8>)> = self
            .rows(
                "SELECT deleted, value FROM kine WHERE name = ? ORDER BY id DESC LIMIT 1",
                (key.as_bytes(),),
            )
            .await?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|(deleted, v)| (deleted == 0).then_some(v)))
    }

    /// Every live key under `prefix` with its value, sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let rows: Vec<(Vec<u8>, Vec<u8>)> = self
            .rows(
                "SELECT k.name, k.value FROM kine k JOIN \
                 (SELECT MAX(id) AS id FROM kine WHERE name LIKE ? GROUP BY name) m \
                 ON k.id = m.id WHERE k.deleted = 0 ORDER BY k.name",
                (like_prefix(prefix).into_bytes(),),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
            .collect())
    }

    /// Sets `key` to `value`, whatever it was.
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        for _ in 0..WRITE_ATTEMPTS {
            let prev = self.latest(key).await?;
            if self.append(key, prev.as_ref(), false, value).await? {
                return Ok(());
            }
        }
        bail!(
            "datastore {}: {key} kept changing under {WRITE_ATTEMPTS} attempts to write it",
            self.label
        )
    }

    /// Creates `key` only if it does not exist: `Ok(false)` if it does (also when another
    /// writer created it at the same moment).
    pub async fn create(&self, key: &str, value: &[u8]) -> Result<bool> {
        for _ in 0..WRITE_ATTEMPTS {
            let prev = self.latest(key).await?;
            if prev.as_ref().is_some_and(|p| !p.deleted) {
                return Ok(false);
            }
            if self.append(key, prev.as_ref(), false, value).await? {
                return Ok(true);
            }
        }
        bail!(
            "datastore {}: {key} kept changing under {WRITE_ATTEMPTS} attempts to create it",
            self.label
        )
    }

    /// Deletes `key`; `Ok(false)` if it did not exist.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        for _ in 0..WRITE_ATTEMPTS {
            match self.latest(key).await? {
                None => return Ok(false),
                Some(p) if p.deleted => return Ok(false),
                Some(p) => {
                    if self.append(key, Some(&p), true, b"").await? {
                        return Ok(true);
                    }
                }
            }
        }
        bail!(
            "datastore {}: {key} kept changing under {WRITE_ATTEMPTS} attempts to delete it",
            self.label
        )
    }

    /// Rows ever written for `key` that began its life (`created`): how many times it was
    /// created, which tests read to prove a single creation.
    pub async fn creations(&self, key: &str) -> Result<u64> {
        let rows: Vec<(u64,)> = self
            .rows(
                "SELECT COUNT(*) FROM kine WHERE name = ? AND created = 1",
                (key.as_bytes(),),
            )
            .await?;
        Ok(rows.first().map_or(0, |r| r.0))
    }

    /// A round trip to the database.
    pub async fn ping(&self) -> Result<()> {
        let _: Vec<(u8,)> = self.rows("SELECT 1", ()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_prefix("/registry/"), "/registry/%");
        assert_eq!(like_prefix("/a_b%c\\"), "/a\\_b\\%c\\\\%");
    }
}
