//! Where a spec comes from: a file the user names, or the built-in default.

use model::{Cluster, Plan, Problems, SpecError};
use std::io::Read;
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
    #[error("spec file {path} is not a regular file (it is {kind})")]
    NotAFile { path: String, kind: &'static str },
    #[error("spec file {path} is larger than 1 MiB ({limit} bytes); a cluster spec is a few KiB")]
    TooLarge { path: String, limit: usize },
    #[error("spec file {path} is not UTF-8 text")]
    NotText {
        path: String,
        #[source]
        source: std::string::FromUtf8Error,
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
            let text = read_spec_file(p, &origin)?;
            (origin, text)
        }
    };
    Ok(LoadedSpec::parse(origin, text)?)
}

/// Reads a spec file: a regular file of at most `model::spec::MAX_SPEC_BYTES`, never more
/// than one byte past that read. Opened non-blocking so a FIFO cannot hang the open.
fn read_spec_file(p: &Path, origin: &str) -> Result<String, LoadError> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let read_err = |source| LoadError::Read {
        path: origin.to_string(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(p)
        .map_err(read_err)?;
    let kind = file.metadata().map_err(read_err)?.file_type();
    if !kind.is_file() {
        let kind = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(LoadError::NotAFile {
            path: origin.to_string(),
            kind,
        });
    }
    let bytes = read_limited(file, model::spec::MAX_SPEC_BYTES).map_err(read_err)?;
    let Some(bytes) = bytes else {
        return Err(LoadError::TooLarge {
            path: origin.to_string(),
            limit: model::spec::MAX_SPEC_BYTES,
        });
    };
    String::from_utf8(bytes).map_err(|source| LoadError::NotText {
        path: origin.to_string(),
        source,
    })
}

/// At most `limit` bytes of `r`; `None` when there are more (it reads `limit + 1` at most,
/// so a file that grows or lies about its size cannot make this read more).
fn read_limited(r: impl Read, limit: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    r.take(cap).read_to_end(&mut bytes)?;
    Ok((bytes.len() <= limit).then_some(bytes))
}

#[cfg(test)]
mod tests {
    #[test]
    fn read_limited_stops_one_byte_past_the_limit() {
        // An endless reader: reading it whole would never return.
        assert_eq!(
            super::read_limited(std::io::repeat(b'a'), 10).unwrap(),
            None
        );
        let ten = super::read_limited(&b"0123456789"[..], 10).unwrap();
        assert_eq!(ten.as_deref(), Some(&b"0123456789"[..]));
    }

    #[test]
    fn default_spec_is_valid_and_quiet() {
        let s = super::load(None).unwrap();
        assert_eq!(s.cluster.topology.control_planes, 3);
        assert_eq!(s.cluster.topology.workers, 3);
        assert!(s.warnings.items.is_empty(), "{}", s.warnings);
    }
}
