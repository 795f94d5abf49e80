//! The add-on files of the payload: each pinned manifest adapted to the spec, the objects
//! muster derives (MetalLB's pool), and the index the agent applies them by. Files are
//! numbered in apply order (network first), so the payload is the same on every rebuild.

use super::source::{self, Source, SourceError};
use super::{AdaptError, Install, UserSource, adapt, metallb_pool, no_source_hint, resolve};
use crate::bake::payload::sha256_hex;
use model::Cluster;
use model::addons::{AddonIndex, AddonSource, BakedAddon};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BakeAddonError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Adapt(#[from] AdaptError),
    #[error("add-on {name}: the manifest is not UTF-8 text")]
    NotText { name: String },
    #[error("{field}: add-on `{name}` has no manifest: {hint}")]
    NoSource {
        field: &'static str,
        name: String,
        hint: String,
    },
    #[error("spec.addons.manifests: add-on `{name}`: cannot read {}: {source}", path.display())]
    File {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "spec.addons.manifests: add-on `{name}`: {} has sha256 {got}, the spec expects {expected}",
        path.display()
    )]
    FileMismatch {
        name: String,
        path: PathBuf,
        got: String,
        expected: String,
    },
}

/// The baked add-ons: (file name under `ADDONS_DIR`, bytes) in apply order, and the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BakedAddons {
    pub files: Vec<(String, Vec<u8>)>,
    pub index: AddonIndex,
    /// The images the pinned manifests name ([`super::images`] of the fetched, checked
    /// bytes), sorted: pre-pulled into the image. A user's local file adds none (as
    /// `image::prepull::needs`).
    pub images: Vec<String>,
}

/// Resolves, fetches (through `source`) and adapts every add-on of `cluster` that muster
/// installs; the user's `file` manifests are read relative to `spec_dir`. k3s's bundled
/// flannel bakes nothing; an add-on without any source is an error naming the fix.
pub fn bake(
    cluster: &Cluster,
    source: &Source,
    spec_dir: &Path,
) -> Result<BakedAddons, BakeAddonError> {
    let mut out = BakedAddons {
        files: Vec::new(),
        index: AddonIndex { addons: Vec::new() },
        images: Vec::new(),
    };
    let mut images = Vec::new();
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
        let m = match &addon.install {
            Install::Bundled => continue,
            Install::NoSource => {
                return Err(BakeAddonError::NoSource {
                    field: addon.field,
                    hint: no_source_hint(addon.field, &addon.name),
                    name: addon.name,
                });
            }
            Install::User(UserSource::File { name, path, sha256 }) => {
                let full = spec_dir.join(path);
                let bytes = std::fs::read(&full).map_err(|e| BakeAddonError::File {
                    name: name.clone(),
                    path: full.clone(),
                    source: e,
                })?;
                let got = sha256_hex(&bytes);
                if let Some(expected) = sha256
                    && *expected != got
                {
                    return Err(BakeAddonError::FileMismatch {
                        name: name.clone(),
                        path: full,
                        got,
                        expected: expected.clone(),
                    });
                }
                let text = String::from_utf8(bytes)
                    .map_err(|_| BakeAddonError::NotText { name: name.clone() })?;
                push(
                    name,
                    addon.field,
                    "user",
                    text,
                    Some(AddonSource {
                        // As written in the spec: the payload does not depend on where it is built.
                        url: format!("file:{path}"),
                        sha256: got,
                    }),
                );
                continue;
            }
            Install::Manifest(m) | Install::User(UserSource::Url(m)) => m,
        };
        let bytes = source::fetch(source, m)?;
        let text = String::from_utf8(bytes).map_err(|_| BakeAddonError::NotText {
            name: m.name.to_string(),
        })?;
        images.extend(super::images(&text));
        let adapted = adapt(cluster, m, &text)?;
        push(
            &m.name,
            addon.field,
            &m.version,
            adapted,
            Some(AddonSource {
                url: m.url.to_string(),
                sha256: m.sha256.to_string(),
            }),
        );
        if *m == super::METALLB
            && let Some(pool) = metallb_pool(cluster)
        {
            push("metallb-pool", addon.field, "muster", pool, None);
        }
    }
    images.sort();
    images.dedup();
    out.images = images;
    Ok(out)
}
