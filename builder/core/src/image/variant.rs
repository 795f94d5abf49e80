//! A variant of the node image. Users' images have none; the lab's TEST image
//! (`muster_lab::test_image`, with stand-ins for what cannot be downloaded on test machines)
//! is the one there is. The build calls a variant at three fixed points: the package
//! selection, a check that describes what it adds (kept in `image.json` and the build key),
//! and one step in the chroot after the shared node preparation.

use super::ImageError;
use super::packages::Selection;
use crate::spec_source::LoadedSpec;
use std::fmt;
use std::path::Path;

pub trait ImageVariant: fmt::Debug + Send + Sync {
    /// Shown before the variant's steps and in the summary (e.g. "TEST IMAGE").
    fn label(&self) -> &'static str;
    /// Adds the Debian packages only this variant needs.
    fn add_packages(&self, selection: &mut Selection, cluster: &model::Cluster);
    /// Checks the variant's inputs for this spec and says what it will add.
    fn prepare(&self, spec: &LoadedSpec) -> Result<Box<dyn PreparedVariant>, ImageError>;
}

/// A variant checked against one spec: what it adds, and its step.
pub trait PreparedVariant: fmt::Debug {
    /// Recorded in `image.json` (`testVariant`).
    fn report(&self) -> Result<serde_json::Value, ImageError>;
    /// A digest input: everything the variant adds, so a change rebuilds the image.
    fn key_part(&self) -> String;
    /// One line for the human summary.
    fn summary(&self) -> String;
    /// Runs the variant's step on the prepared root filesystem.
    fn apply(&self, rootfs: &Path) -> Result<(), ImageError>;
}
