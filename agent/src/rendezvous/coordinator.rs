//! The bootstrap's `Coordinator` over the real HTTP client: the one place where the wire
//! protocol's answers become the state machine's vocabulary.

use crate::coord::{
    Acquired, Change, ChangeKind, Changes, CoordError, CoordResult, Coordinator, Created,
    ErrorKind, Fence, Member, Record,
};
use model::Role;
use protocol::wire::{AcquireResponse, ErrorKind as Wire};
use protocol::{Client, ClientError};
use std::time::Duration;

impl Coordinator for Client {
    async fn heartbeat(
        &self,
        member: &str,
        role: Role,
        report: &serde_json::Value,
        ttl: Duration,
    ) -> CoordResult<u64> {
        self.register(member, role.as_str(), report, ttl)
            .await
            .map(|r| r.revision)
            .map_err(|e| coord_error("heartbeat", member, e))
    }

    async fn members(&self) -> CoordResult<Vec<Member>> {
        let (_, members) = Client::members(self)
            .await
            .map_err(|e| coord_error("members", "", e))?;
        Ok(members
            .into_iter()
            .filter_map(|m| {
                // A member that reports a role this build does not know is not ours to judge.
                let role = Role::parse(&m.role)?;
                Some(Member {
                    name: m.name,
                    role,
                    report: m.report,
                })
            })
            .collect())
    }

    async fn create(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        fence: Option<&Fence>,
    ) -> CoordResult<Created> {
        match Client::create(self, key, value, ttl, fence.map(wire_fence)).await {
            Ok(revision) => Ok(Created::Created { revision }),
            Err(e) if e.kind() == Some(Wire::Exists) => match Coordinator::get(self, key).await? {
                Some(r) => Ok(Created::Exists {
                    value: r.value,
                    revision: r.revision,
                }),
                // Expired or deleted between the two calls: the caller retries the create.
                None => Err(CoordError::new(
                    "create",
                    key,
                    ErrorKind::Conflict,
                    e.to_string(),
                )),
            },
            Err(e) => Err(coord_error("create", key, e)),
        }
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected_revision: u64,
        value: &[u8],
        fence: Option<&Fence>,
    ) -> CoordResult<u64> {
        self.cas(key, expected_revision, value, None, fence.map(wire_fence))
            .await
            .map_err(|e| coord_error("compare-and-swap", key, e))
    }

    async fn get(&self, key: &str) -> CoordResult<Option<Record>> {
        let r = Client::get(self, key)
            .await
            .map_err(|e| coord_error("get", key, e))?;
        Ok(r.map(|r| Record {
            key: r.key,
            value: r.value,
            revision: r.revision,
        }))
    }

    async fn list(&self, prefix: &str) -> CoordResult<Vec<Record>> {
        let (_, records) = Client::list(self, prefix)
            .await
            .map_err(|e| coord_error("list", prefix, e))?;
        Ok(records
            .into_iter()
            .map(|r| Record {
                key: r.key,
                value: r.value,
                revision: r.revision,
            })
            .collect())
    }

    async fn delete(&self, key: &str, fence: Option<&Fence>) -> CoordResult<()> {
        match Client::delete(self, key, fence.map(wire_fence)).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == Some(Wire::NotFound) => Ok(()),
            Err(e) => Err(coord_error("delete", key, e)),
        }
    }

    async fn acquire(
        &self,
        semaphore: &str,
        slots: u32,
        holder: &str,
        ttl: Duration,
    ) -> CoordResult<Acquired> {
        match Client::acquire(self, semaphore, slots, holder, ttl).await {
            Ok(AcquireResponse::Granted { token, .. }) => Ok(Acquired::Granted { token, ttl }),
            Ok(AcquireResponse::Busy { holders, .. }) => Ok(Acquired::Busy {
                holders: holders.into_iter().map(|h| h.holder).collect(),
            }),
            Err(e) => Err(coord_error("acquire", semaphore, e)),
        }
    }

    async fn renew(
        &self,
        semaphore: &str,
        holder: &str,
        token: u64,
        ttl: Duration,
    ) -> CoordResult<()> {
        Client::renew(self, semaphore, holder, token, ttl)
            .await
            .map(drop)
            .map_err(|e| coord_error("renew", semaphore, e))
    }

    async fn release(&self, semaphore: &str, holder: &str, token: u64) -> CoordResult<()> {
        match Client::release(self, semaphore, holder, token).await {
            Ok(_) => Ok(()),
            // Not held any more (expired, or released by an earlier try): nothing to undo.
            Err(e)
                if matches!(
                    e.kind(),
                    Some(Wire::NotHeld | Wire::Fenced | Wire::NotFound)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(coord_error("release", semaphore, e)),
        }
    }

    async fn watch(&self, after_revision: u64, timeout: Duration) -> CoordResult<Changes> {
        let w = Client::watch(self, after_revision, timeout)
            .await
            .map_err(|e| coord_error("watch", "", e))?;
        Ok(Changes {
            revision: w.revision,
            changes: w
                .changes
                .into_iter()
                .map(|c| Change {
                    kind: change_kind(c.kind),
                    name: c.name,
                })
                .collect(),
            compacted: w.compacted,
        })
    }
}

fn change_kind(k: protocol::wire::ChangeKind) -> ChangeKind {
    use protocol::wire::ChangeKind as K;
    match k {
        K::RecordPut | K::RecordDeleted | K::RecordExpired => ChangeKind::Record,
        K::MemberUp | K::MemberExpired | K::MemberForgotten => ChangeKind::Member,
        K::SemaphoreGranted => ChangeKind::SlotTaken,
        K::SemaphoreReleased | K::SemaphoreExpired => ChangeKind::SlotFreed,
    }
}

fn wire_fence(f: &Fence) -> protocol::wire::Fence {
    protocol::wire::Fence {
        semaphore: f.semaphore.clone(),
        token: f.token,
    }
}

/// Maps the wire's error kinds onto the few the state machine acts on.
fn coord_error(op: &'static str, key: &str, e: ClientError) -> CoordError {
    let kind = match e.kind() {
        Some(Wire::Fenced | Wire::NotHeld) => ErrorKind::Fenced,
        Some(Wire::RevisionMismatch | Wire::Exists) => ErrorKind::Conflict,
        Some(Wire::Unavailable | Wire::Internal | Wire::RateLimited) | None
            if !matches!(e, ClientError::Open(_) | ClientError::Report { .. }) =>
        {
            ErrorKind::Unavailable
        }
        _ => ErrorKind::Protocol,
    };
    CoordError::new(op, key, kind, format!("{e:#}"))
}
