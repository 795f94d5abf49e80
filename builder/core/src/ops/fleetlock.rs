//! `muster fleetlock --out DIR`: how an OS-update agent (Zincati on Fedora CoreOS, or any
//! FleetLock client) joins the cluster's upgrade lock at the rendezvous: the base URL with
//! the cluster's token, Zincati's config snippet, and the certificate to trust. Pure: it
//! reads the build dir's secret and baked config, nothing on the network.

use super::BuildDir;
use crate::bake::rendezvous_cert::CERT_FILE;
use protocol::seal::ClusterKeys;
use serde::Serialize;
use std::path::PathBuf;

/// Where Zincati reads drop-in config; `55-` sorts after the distribution's defaults.
pub const ZINCATI_DROPIN: &str = "/etc/zincati/config.d/55-updates-strategy.toml";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetLockConfig {
    /// FleetLock's base URL: `BASE/v1/pre-reboot`, `BASE/v1/steady-state`.
    pub base_url: String,
    /// The rendezvous certificate the client must trust (muster makes it; no public CA
    /// signed it).
    pub certificate: PathBuf,
    pub zincati_dropin: String,
    pub zincati_config: String,
}

pub fn config(dir: &BuildDir) -> FleetLockConfig {
    let keys = ClusterKeys::derive(&dir.secret);
    let token = protocol::fleetlock::token(keys.signing_key());
    let base_url = protocol::fleetlock::base_url(&dir.rendezvous_url(), keys.cluster_id(), &token);
    let zincati_config = format!(
        "# muster: reboot for OS updates only while no node upgrades Kubernetes (one slot,\n\
         # shared with muster's upgrade roll at the rendezvous).\n\
         [updates]\n\
         strategy = \"fleet_lock\"\n\
         \n\
         [updates.fleet_lock]\n\
         base_url = \"{base_url}\"\n"
    );
    FleetLockConfig {
        base_url,
        certificate: dir.dir.join(CERT_FILE),
        zincati_dropin: ZINCATI_DROPIN.into(),
        zincati_config,
    }
}

/// The human form: the URL, the drop-in with its path, and what else the node needs.
pub fn render(c: &FleetLockConfig) -> String {
    format!(
        "FleetLock base URL (keep it private: the token in it takes the cluster's upgrade lock):\n  {}\n\n\
         Zincati ({}):\n{}\n\
         The client must trust the rendezvous certificate {} (on Fedora CoreOS: copy it to\n\
         /etc/pki/ca-trust/source/anchors/ and run update-ca-trust).\n\
         A FleetLock holder keeps the slot until its steady-state call, at most {} min;\n\
         `muster upgrade --status` shows it as the lock holder `fleetlock/GROUP/ID`.\n",
        c.base_url,
        c.zincati_dropin,
        c.zincati_config,
        c.certificate.display(),
        protocol::fleetlock::LEASE_MS / 60_000,
    )
}
