//! Where a spec comes from: a file the user names, or the built-in default.

use model::{Cluster, Plan, Problems, SpecError};
use std::path::Path;

/// The built-in default cluster: 3 control planes behind a VIP and 3 workers.
pub const DEFAULT_SPEC: &str = include_str!("../../../examples/default.yaml");
pub const DEFAULT_NAME: &str = "(built-in default)";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read spec file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] SpecError),
}

/// A loaded, valid spec with its text (kept so outputs can record what they came from) and
/// its plan, resolved once here for every command that needs it.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    pub origin: String,
    pub text: String,
    pub cluster: Cluster,
    pub warnings: Problems,
    pub plan: Plan,
}

impl LoadedSpec {
    /// Decodes, validates and plans `text`; `origin` names it in every problem.
    pub fn parse(origin: String, text: String) -> Result<LoadedSpec, SpecError> {
        let (cluster, warnings) = model::spec::load(&origin, &text)?;
        let plan = model::plan::resolve(&cluster, warnings.items.clone());
        Ok(LoadedSpec {
            origin,
            text,
            cluster,
            warnings,
            plan,
        })
    }

    /// The directory the spec's relative file paths (e.g. `spec.datastore.caFile`) start
    /// from: the spec file's, or the current dir for the built-in default.
    pub fn dir(&self) -> std::path::PathBuf {
        if self.origin == DEFAULT_NAME {
            return std::path::PathBuf::from(".");
        }
        match Path::new(&self.origin).parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        }
    }
}

pub fn load(path: Option<&Path>) -> Result<LoadedSpec, LoadError> {
    let (origin, text) = match path {
        None => (DEFAULT_NAME.to_string(), DEFAULT_SPEC.to_string()),
        Some(p) => {
            let origin = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|source| LoadError::Read {
                path: origin.clone(),
                source,
            })?;
            (origin, text)
        }
    };
    Ok(LoadedSpec::parse(origin, text)?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_spec_is_valid_and_quiet() {
        let s = super::load(None).unwrap();
        assert_eq!(s.cluster.topology.control_planes, 3);
        assert_eq!(s.cluster.topology.workers, 3);
        assert!(s.warnings.items.is_empty(), "{}", s.warnings);
    }
}
