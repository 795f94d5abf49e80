//! The builder bakes per-node config templates with placeholders; the agent substitutes
//! the secrets and writes the result 0600 where the tool reads it.

use super::{DistroError, DistroResult};
use protocol::records::Secret;
use std::path::Path;

pub const TOKEN: &str = "@@TOKEN@@";
pub const CA_CERT_HASH: &str = "@@CA_CERT_HASH@@";
pub const CERTIFICATE_KEY: &str = "@@CERTIFICATE_KEY@@";

#[derive(Debug, Default)]
pub struct Values<'a> {
    pub token: Option<&'a Secret>,
    pub ca_cert_hash: Option<&'a str>,
    pub certificate_key: Option<&'a Secret>,
}

/// Substitutes the placeholders; a placeholder left without a value is an error naming it
/// (never the value).
pub fn render(template: &str, v: &Values<'_>) -> Result<String, String> {
    let mut out = template.to_string();
    let pairs = [
        (TOKEN, v.token.map(Secret::expose)),
        (CA_CERT_HASH, v.ca_cert_hash),
        (CERTIFICATE_KEY, v.certificate_key.map(Secret::expose)),
    ];
    for (ph, value) in pairs {
        if out.contains(ph) {
            match value {
                Some(val) => out = out.replace(ph, val),
                None => return Err(format!("placeholder {ph} has no value")),
            }
        }
    }
    Ok(out)
}

/// Reads `src`, renders it and writes it atomically to `dst` with mode 0600.
pub fn render_file(step: &'static str, src: &Path, dst: &Path, v: &Values<'_>) -> DistroResult<()> {
    let text = std::fs::read_to_string(src).map_err(|e| DistroError::File {
        step,
        path: src.to_path_buf(),
        detail: e.to_string(),
    })?;
    let rendered = render(&text, v).map_err(|detail| DistroError::File {
        step,
        path: src.to_path_buf(),
        detail,
    })?;
    model::fsutil::write_atomic(dst, rendered.as_bytes(), 0o600).map_err(|e| DistroError::File {
        step,
        path: dst.to_path_buf(),
        detail: e.source.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_and_names_missing() {
        let t = Secret("abcdef.0123456789abcdef".into());
        let text = "token: @@TOKEN@@\nhash: @@CA_CERT_HASH@@\n";
        let v = Values {
            token: Some(&t),
            ca_cert_hash: Some("sha256:ff"),
            certificate_key: None,
        };
        assert_eq!(
            render(text, &v).unwrap(),
            "token: abcdef.0123456789abcdef\nhash: sha256:ff\n"
        );
        let e = render("key: @@CERTIFICATE_KEY@@", &v).unwrap_err();
        assert!(e.contains("@@CERTIFICATE_KEY@@"));
    }
}
