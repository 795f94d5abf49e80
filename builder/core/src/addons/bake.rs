//! The add-on files of the payload: each pinned manifest adapted to the spec, the objects
//! muster derives (MetalLB's pool), and the index the agent applies them by. Files are
//! numbered in apply order (network first), so the payload is the same on every rebuild.

use super::chart::{self, ChartError, Renderer};
use super::source::{self, Source, SourceError};
use super::{AdaptError, Install, UserSource, adapt, metallb_pool, no_source_hint, resolve};
use crate::bake::payload::sha256_hex;
use model::Cluster;
use model::addons::{AddonIndex, AddonSource, BakedAddon};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BakeAddonError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Adapt(#[from] AdaptError),
    #[error(transparent)]
    Chart(#[from] ChartError),
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
    /// The images the add-ons name ([`super::images`] of the fetched, checked or rendered
    /// text: pinned manifests, charts, the user's URLs and files), sorted: the payload's
    /// pre-pull list, which `muster image build` and Packer pre-pull.
    pub images: Vec<String>,
}

/// How the build reaches what an add-on needs: its pinned files, a Helm to render charts,
/// the API address the values name.
#[allow(
    missing_debug_implementations,
    reason = "holds a renderer trait object"
)]
pub struct Inputs<'a> {
    pub source: &'a Source,
    /// Renders packaged charts (cilium's): `helm template`, or a test's renderer.
    pub charts: &'a dyn Renderer,
    /// The user's `file` manifests are read relative to this.
    pub spec_dir: &'a Path,
    /// The API's address (the VIP, or the single load balancer), for chart values.
    pub api_address: Option<Ipv4Addr>,
}

/// Resolves, fetches (through `source`), renders (charts) and adapts every add-on of
/// `cluster` that muster installs. k3s's bundled flannel bakes nothing; an add-on without
/// any source is an error naming the fix.
pub fn bake(cluster: &Cluster, inputs: &Inputs<'_>) -> Result<BakedAddons, BakeAddonError> {
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
    // The manifest text of an add-on's bytes: a chart's is what `helm template` makes of
    // it with the spec's values; a manifest's is its bytes as UTF-8.
    let text_of = |name: &str, from: &str, bytes: Vec<u8>| -> Result<String, BakeAddonError> {
        if !chart::is_chart(from) {
            return String::from_utf8(bytes).map_err(|_| BakeAddonError::NotText {
                name: name.to_string(),
            });
        }
        let values = chart::values(cluster, name, inputs.api_address);
        Ok(inputs.charts.render(
            name,
            &bytes,
            values.as_deref(),
            &chart::kube_version(cluster),
        )?)
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
                let full = inputs.spec_dir.join(path);
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
                let text = text_of(name, path, bytes)?;
                images.extend(super::images(&text));
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
        let bytes = source::fetch(inputs.source, m)?;
        let text = text_of(&m.name, &m.url, bytes)?;
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
