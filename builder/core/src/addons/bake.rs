//! The add-on files of the payload: each pinned manifest adapted to the spec, the objects
//! muster derives (MetalLB's pool), and the index the agent applies them by. Files are
//! numbered in apply order (network first), so the payload is the same on every rebuild.

use super::source::{self, Source, SourceError};
use super::{AdaptError, Install, adapt, metallb_pool, resolve};
use crate::bake::payload::sha256_hex;
use model::Cluster;
use model::addons::{AddonIndex, AddonSource, BakedAddon};

#[derive(Debug, thiserror::Error)]
pub enum BakeAddonError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Adapt(#[from] AdaptError),
    #[error("add-on {name}: the pinned manifest is not UTF-8 text")]
    NotText { name: &'static str },
}

/// The baked add-ons: (file name under `ADDONS_DIR`, bytes) in apply order, and the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BakedAddons {
    pub files: Vec<(String, Vec<u8>)>,
    pub index: AddonIndex,
}

/// Resolves, fetches (through `source`) and adapts every add-on of `cluster` that muster
/// installs. Add-ons without a pinned source (and k3s's bundled flannel) bake nothing.
pub fn bake(cluster: &Cluster, source: &Source) -> Result<BakedAddons, BakeAddonError> {
    let mut out = BakedAddons {
        files: Vec::new(),
        index: AddonIndex { addons: Vec::new() },
    };
    let mut push = |name: &str, field: &str, version: &str, text: String, src| {
        let file = format!("{:02}-{name}.yaml", out.files.len() + 1);
        out.index.addons.push(BakedAddon {
            name: name.to_string(),
            field: field.to_string(),
            version: version.to_string(),
            file: file.clone(),
            sha256: sha256_hex(text.as_bytes()),
            source: src,
        });
        out.files.push((file, text.into_bytes()));
    };
    for addon in resolve(cluster) {
        let Install::Manifest(m) = &addon.install else {
            continue;
        };
        let bytes = source::fetch(source, m)?;
        let text =
            String::from_utf8(bytes).map_err(|_| BakeAddonError::NotText { name: m.name })?;
        let adapted = adapt(cluster, m, &text)?;
        push(
            m.name,
            addon.field,
            m.version,
            adapted,
            Some(AddonSource {
                url: m.url.to_string(),
                sha256: m.sha256.to_string(),
            }),
        );
        if m.name == super::METALLB.name
            && let Some(pool) = metallb_pool(cluster)
        {
            push("metallb-pool", addon.field, "muster", pool, None);
        }
    }
    Ok(out)
}
