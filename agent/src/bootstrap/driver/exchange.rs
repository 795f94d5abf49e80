//! The join-material exchange's effects: reading and writing `initialized`,
//! `join-material` and `refresh-request` at the rendezvous. What to do with what is read
//! is decided by `material_policy`.

use super::{Driver, Outcome, Performed, Stop};
use crate::bootstrap::material_policy::{self, KeyChoice, Serve, Usable};
use crate::bootstrap::store::Store;
use crate::coord::{CoordError, Coordinator, Created, ErrorKind, Fence};
use crate::distro::Distro;
use crate::host::Host;
use crate::systemd::{Notifier, Systemd};
use protocol::clock::Clock;
use protocol::generation::{self, GenerationRecord};
use protocol::keys;
use protocol::records::{InitRecord, JoinMaterial, RefreshRequest, Secret, new_certificate_key};
use std::time::Duration;

/// How long a refresh request lives unanswered (no control plane joined yet, say).
const REFRESH_REQUEST_TTL: Duration = Duration::from_secs(600);

/// A record's bytes; an encoding failure is an error, never empty bytes written.
fn encode<T: serde::Serialize>(what: &str, v: &T) -> Performed<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Stop::failed(&format!("encode {what}"), e))
}

/// A fenced write refused for the fence is a lost lease; anything else a failure.
pub(super) fn fenced_or_failed(what: &str, e: CoordError) -> Stop {
    if e.kind == ErrorKind::Fenced {
        Stop::Fenced(format!("{what}: {e}"))
    } else {
        Stop::failed(what, e)
    }
}

impl<C, D, S, H, K, St, N> Driver<C, D, S, H, K, St, N>
where
    C: Coordinator,
    D: Distro,
    S: Systemd,
    H: Host,
    K: Clock,
    St: Store,
    N: Notifier,
{
    pub(super) async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Performed<Option<(T, u64)>> {
        let r = self
            .coord
            .get(key)
            .await
            .map_err(|e| Stop::failed(&format!("read {key}"), e))?;
        match r {
            None => Ok(None),
            Some(rec) => serde_json::from_slice(&rec.value)
                .map(|v| Some((v, rec.revision)))
                .map_err(|e| Stop::failed(&format!("read {key}"), e)),
        }
    }

    /// The `initialized` record if it belongs to the current assembly generation
    /// (`protocol::generation`): a retired assembly's record is never joined.
    pub(super) async fn current_init(&self) -> Performed<Option<(InitRecord, u64)>> {
        // Independent reads, asked at once: a waiting or joining node's round trips are on
        // the assembly's critical path (issue 17).
        let (init, gen_rec) = tokio::try_join!(
            self.read_json::<InitRecord>(keys::INITIALIZED),
            self.read_json::<GenerationRecord>(keys::GENERATION),
        )?;
        Ok(self.of_current_generation(init, gen_rec.as_ref().map(|(g, _)| g)))
    }

    /// `init` if it belongs to the generation `gen_rec` says is current.
    fn of_current_generation(
        &self,
        init: Option<(InitRecord, u64)>,
        gen_rec: Option<&GenerationRecord>,
    ) -> Option<(InitRecord, u64)> {
        let (rec, rev) = init?;
        let current = generation::current(gen_rec);
        if generation::is_current(&rec, current) {
            Some((rec, rev))
        } else {
            tracing::warn!(
                node = %self.settings.node,
                "ignoring the init record of retired generation {} (by {}); the current generation is {current}",
                rec.generation, rec.node
            );
            None
        }
    }

    /// The generation this node's init is published in.
    pub(super) async fn current_generation(&self) -> Performed<u64> {
        let gen_rec: Option<(GenerationRecord, u64)> = self.read_json(keys::GENERATION).await?;
        Ok(generation::current(gen_rec.as_ref().map(|(g, _)| g)))
    }

    /// The published material and its revision if `material_policy::judge_material`
    /// allows it; otherwise a refresh is requested (or already pending) and the action
    /// stops with `MaterialStale`.
    pub(super) async fn fresh_material(
        &self,
        control_plane: bool,
    ) -> Performed<(JoinMaterial, u64)> {
        // The four records are independent reads: asked at once, one round trip instead
        // of four before every join (issue 17).
        let (init, gen_rec, material, pending) = tokio::try_join!(
            self.read_json::<InitRecord>(keys::INITIALIZED),
            self.read_json::<GenerationRecord>(keys::GENERATION),
            self.read_json::<JoinMaterial>(keys::JOIN_MATERIAL),
            self.refresh_request(),
        )?;
        let init = self.of_current_generation(init, gen_rec.as_ref().map(|(g, _)| g));
        let Some((init, _)) = init else {
            return Err(Stop::Failed("the cluster is not initialized yet".into()));
        };
        let verdict = material_policy::judge_material(
            &init,
            material.as_ref().map(|(m, rev)| (m, *rev)),
            pending.as_ref(),
            control_plane,
            self.clock.now_ms(),
            self.settings.material_margin_ms,
        );
        match (verdict, material) {
            (Usable::Yes { .. }, Some(m)) => Ok(m),
            (Usable::AwaitRefresh, _) => Err(Stop::MaterialStale),
            (Usable::RequestRefresh | Usable::Yes { .. }, _) => {
                self.request_refresh(None).await?;
                Err(Stop::MaterialStale)
            }
        }
    }

    async fn refresh_request(&self) -> Performed<Option<RefreshRequest>> {
        let r = self
            .coord
            .get(keys::REFRESH_REQUEST)
            .await
            .map_err(|e| Stop::failed("read refresh request", e))?;
        Ok(r.map(|r| material_policy::stored_request(&r.value)))
    }

    /// Asks the joined control planes for fresh material; with `rejected_revision`, says
    /// that material was refused (replacing a plain request, so it is refreshed for sure).
    pub(super) async fn request_refresh(&self, rejected_revision: Option<u64>) -> Performed<()> {
        const WHAT: &str = "request fresh join material";
        let req = encode(
            "refresh request",
            &RefreshRequest {
                by: self.settings.node.clone(),
                at_ms: self.clock.now_ms(),
                rejected_revision,
            },
        )?;
        let created = self
            .coord
            .create(keys::REFRESH_REQUEST, &req, Some(REFRESH_REQUEST_TTL), None)
            .await
            .map_err(|e| Stop::failed(WHAT, e))?;
        let Created::Exists { value, revision } = created else {
            return Ok(());
        };
        let existing = RefreshRequest::parse(&value);
        if !material_policy::replaces_request(existing.as_ref(), rejected_revision) {
            return Ok(());
        }
        match self
            .coord
            .compare_and_swap(keys::REFRESH_REQUEST, revision, &req, None)
            .await
        {
            // Changed meanwhile (served, or replaced): the next join attempt sees which.
            Ok(_) => Ok(()),
            Err(e) if e.kind == ErrorKind::Conflict => Ok(()),
            Err(e) => Err(Stop::failed(WHAT, e)),
        }
    }

    async fn new_material(
        &mut self,
        init_token: u64,
        reuse_key: Option<Secret>,
    ) -> Performed<JoinMaterial> {
        let key = match material_policy::certificate_key(
            reuse_key,
            self.settings.cert_key_ttl_ms.is_some(),
        ) {
            KeyChoice::None => None,
            KeyChoice::Reuse(k) => Some(k),
            KeyChoice::Generate => Some(new_certificate_key(&mut self.rng)),
        };
        let issued = self
            .distro
            .refresh_join_material(key.as_ref())
            .await
            .map_err(|e| Stop::failed("issue join material", e))?;
        let creds = self
            .distro
            .credentials()
            .await
            .map_err(|e| Stop::failed("issue join material", e))?;
        let now = self.clock.now_ms();
        Ok(JoinMaterial {
            init_token,
            token: issued.token,
            token_expires_ms: now.saturating_add(self.settings.token_ttl_ms),
            ca_cert_hash: issued.ca_cert_hash,
            certificate_key_expires_ms: issued
                .certificate_key
                .as_ref()
                .and(self.settings.cert_key_ttl_ms.map(|t| now.saturating_add(t))),
            certificate_key: issued.certificate_key,
            admin_kubeconfig: creds.admin_kubeconfig,
            etcd: creds.etcd,
        })
    }

    /// Join material, then the durable `initialized` record, both fenced by the init token.
    /// If our record is there already (written, its answer lost, then the lease expired
    /// while we retried), the cluster is ours and initialized: done, never undone.
    pub(super) async fn publish(&mut self, f: &Fence) -> Performed {
        let node = self.settings.node.clone();
        let published: Option<(InitRecord, u64)> = self.read_json(keys::INITIALIZED).await?;
        if published
            .as_ref()
            .is_some_and(|(r, _)| material_policy::is_ours(r, &node, f.token))
        {
            return Ok(Outcome::Finished);
        }
        self.renew(f).await?;
        let m = self.new_material(f.token, None).await?;
        self.write_material_fenced(&m, f).await?;
        let rec = InitRecord {
            node: node.clone(),
            token: f.token,
            at_ms: self.clock.now_ms(),
            generation: self.current_generation().await?,
        };
        let bytes = encode("initialized", &rec)?;
        let created = self
            .coord
            .create(keys::INITIALIZED, &bytes, None, Some(f))
            .await
            .map_err(|e| fenced_or_failed("publish initialized", e))?;
        let Created::Exists { value, revision } = created else {
            return Ok(Outcome::Finished);
        };
        match serde_json::from_slice::<InitRecord>(&value) {
            // Our own earlier write whose answer was lost.
            Ok(r) if material_policy::is_ours(&r, &node, f.token) => Ok(Outcome::Finished),
            // A retired assembly's record (left or written back after a reset): replaced.
            Ok(r) if !generation::is_current(&r, rec.generation) => {
                self.coord
                    .compare_and_swap(keys::INITIALIZED, revision, &bytes, Some(f))
                    .await
                    .map_err(|e| fenced_or_failed("replace a retired initialized record", e))?;
                Ok(Outcome::Finished)
            }
            Ok(r) => Err(Stop::Fenced(format!(
                "the cluster was initialized by {} (token {})",
                r.node, r.token
            ))),
            Err(e) => Err(Stop::failed("read initialized", e)),
        }
    }

    async fn write_material_fenced(&self, m: &JoinMaterial, f: &Fence) -> Performed<()> {
        const WHAT: &str = "publish join material";
        let bytes = encode("join material", m)?;
        let created = self
            .coord
            .create(keys::JOIN_MATERIAL, &bytes, None, Some(f))
            .await
            .map_err(|e| fenced_or_failed(WHAT, e))?;
        if let Created::Exists { revision, .. } = created {
            self.coord
                .compare_and_swap(keys::JOIN_MATERIAL, revision, &bytes, Some(f))
                .await
                .map_err(|e| fenced_or_failed(WHAT, e))?;
        }
        Ok(())
    }

    /// On a joined control plane: answer a joiner's request for fresh material as
    /// `material_policy::serve` says.
    pub(super) async fn serve_refresh(&mut self) -> Performed<()> {
        let Some(req) = self.refresh_request().await? else {
            return Ok(());
        };
        let init = self.current_init().await?;
        let Some((init, _)) = init else {
            return Ok(());
        };
        let current: Option<(JoinMaterial, u64)> = self.read_json(keys::JOIN_MATERIAL).await?;
        let (reuse_key, revision) = match material_policy::serve(
            &req,
            &init,
            current.as_ref().map(|(m, rev)| (m, *rev)),
            self.clock.now_ms(),
            self.settings.material_margin_ms,
        ) {
            Serve::ClearOnly => {
                // Best effort: a request left behind is served again next time.
                let _ = self.coord.delete(keys::REFRESH_REQUEST, None).await;
                return Ok(());
            }
            Serve::Refresh {
                reuse_key,
                revision,
            } => (reuse_key, revision),
        };
        tracing::info!(by = %req.by, rejected = ?req.rejected_revision,
            "refreshing the join material for a late joiner");
        let m = self.new_material(init.token, reuse_key).await?;
        let bytes = encode("join material", &m)?;
        let written = match revision {
            Some(rev) => self
                .coord
                .compare_and_swap(keys::JOIN_MATERIAL, rev, &bytes, None)
                .await
                .map(|_| ()),
            None => self
                .coord
                .create(keys::JOIN_MATERIAL, &bytes, None, None)
                .await
                .map(|_| ()),
        };
        match written {
            Ok(()) => {}
            // Another control plane refreshed it first.
            Err(e) if e.kind == ErrorKind::Conflict => {}
            Err(e) => return Err(Stop::failed("write join material", e)),
        }
        self.coord
            .delete(keys::REFRESH_REQUEST, None)
            .await
            .map_err(|e| Stop::failed("clear refresh request", e))
    }
}
