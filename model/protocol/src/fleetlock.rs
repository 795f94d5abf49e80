//! FleetLock (the reboot-coordination protocol of Zincati and other OS-update agents) on
//! the cluster's upgrade lock: what a client sends, how its group is checked, the holder
//! name it gets in the lock, and the per-cluster base URL with its bearer token.
//!
//! The protocol (coreos/zincati `docs/development/fleetlock/protocol.md`): `POST
//! BASE/v1/pre-reboot` takes a slot, `POST BASE/v1/steady-state` gives it back, both with
//! the header `fleet-lock-protocol: true` and the body `{"client_params": {"id", "group"}}`;
//! 200 is success, anything else a failure with `{"kind", "value"}`. Locks are owned and
//! recursive. FleetLock clients cannot sign requests as agents do, so the rendezvous
//! takes them under `/fleetlock/CLUSTER/TOKEN/`, the token derived from the cluster's
//! request-signing key ([`token`]).

use crate::seal::SigningKey;
use crate::wire::check_name;
use serde::{Deserialize, Serialize};

/// The header every FleetLock request carries, with the value `true`: a request that was
/// redirected here by accident does not take or free the lock.
pub const HEADER: &str = "fleet-lock-protocol";
/// Routes under the rendezvous: `/fleetlock/{cluster}/{token}/v1/{pre-reboot,steady-state}`.
pub const PREFIX: &str = "/fleetlock";
/// How long a FleetLock slot lasts without the client coming back: a node that took it to
/// reboot and never returned must not stop muster's upgrades for good. A recursive
/// `pre-reboot` extends it.
pub const LEASE_MS: u64 = 3600 * 1000;
/// What the token is derived for (changing it invalidates every configured URL).
const TOKEN_PURPOSE: &str = "muster fleetlock v1";
/// Holder names of FleetLock clients in the upgrade lock start with this.
pub const HOLDER_PREFIX: &str = "fleetlock/";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockRequest {
    pub client_params: ClientParams,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientParams {
    /// Case-sensitive, persisted by the client (Zincati: an app-specific machine id).
    pub id: String,
    /// The client's reboot group, `^[a-zA-Z0-9.-]+$` (Zincati's default: `default`).
    pub group: String,
}

/// The cluster's FleetLock token: only holders of the cluster key (the builder, the
/// rendezvous) can make it.
pub fn token(key: &SigningKey) -> String {
    key.derive_token(TOKEN_PURPOSE)
}

/// The base URL a FleetLock client is configured with (Zincati's `fleet_lock.base_url`),
/// ending in `/` so that the client's relative `v1/pre-reboot` lands under it.
pub fn base_url(rendezvous_url: &str, cluster_id: &str, token: &str) -> String {
    format!(
        "{}{PREFIX}/{cluster_id}/{token}/",
        rendezvous_url.trim_end_matches('/')
    )
}

/// The holder name a client gets in the upgrade lock, after checking what it sent: the
/// group by the protocol's pattern, the id non-empty printable ASCII without spaces.
pub fn holder(params: &ClientParams) -> Result<String, String> {
    let group = &params.group;
    if group.is_empty()
        || !group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return Err(format!(
            "client_params.group `{}` must match ^[a-zA-Z0-9.-]+$",
            group.escape_default()
        ));
    }
    if params.id.is_empty() {
        return Err("client_params.id must not be empty".into());
    }
    let name = format!("{HOLDER_PREFIX}{group}/{}", params.id);
    check_name("client_params.id", &name)?;
    Ok(name)
}

/// A FleetLock client's holder name, as [`holder`] made it: `(group, id)`.
pub fn client_of(holder: &str) -> Option<(&str, &str)> {
    holder.strip_prefix(HOLDER_PREFIX)?.split_once('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(id: &str, group: &str) -> ClientParams {
        ClientParams {
            id: id.into(),
            group: group.into(),
        }
    }

    #[test]
    fn the_protocol_body_decodes_and_unknown_fields_are_refused() {
        let body =
            r#"{"client_params": {"group": "workers", "id": "c988d2509fdf5cdcbed39037c56406fb"}}"#;
        let r: LockRequest = serde_json::from_str(body).unwrap();
        assert_eq!(
            r.client_params,
            params("c988d2509fdf5cdcbed39037c56406fb", "workers")
        );
        let extra = r#"{"client_params": {"group": "g", "id": "i", "x": 1}}"#;
        assert!(serde_json::from_str::<LockRequest>(extra).is_err());
        assert!(serde_json::from_str::<LockRequest>(r#"{"client_params": {"id": "i"}}"#).is_err());
    }

    #[test]
    fn holders_name_group_and_id_and_bad_ones_say_what_is_wrong() {
        let h = holder(&params("c988d250", "default")).unwrap();
        assert_eq!(h, "fleetlock/default/c988d250");
        assert_eq!(client_of(&h), Some(("default", "c988d250")));
        assert_eq!(client_of("cp-1"), None);
        for (id, group, says) in [
            ("x", "", "group"),
            ("x", "a b", "group"),
            ("x", "a/b", "group"),
            ("", "default", "id"),
            ("a b", "default", "id"),
        ] {
            let e = holder(&params(id, group)).unwrap_err();
            assert!(e.contains(says), "{id:?} {group:?}: {e}");
        }
        assert!(holder(&params(&"x".repeat(300), "g")).is_err());
    }

    #[test]
    fn the_token_depends_on_the_key_and_the_url_ends_in_a_slash() {
        let a = SigningKey::from_hex(&"11".repeat(32)).unwrap();
        let b = SigningKey::from_hex(&"22".repeat(32)).unwrap();
        assert_eq!(token(&a), token(&a));
        assert_ne!(token(&a), token(&b));
        assert_eq!(token(&a).len(), 32);
        assert_eq!(
            base_url("https://10.0.0.1:7443/", "abc", "tok"),
            "https://10.0.0.1:7443/fleetlock/abc/tok/"
        );
    }
}
