//! Placeholders in the kubeadm and k3s config templates the builder bakes into each node
//! tree. The agent substitutes them at run time with the values it gets from the
//! rendezvous (see docs/kubeadm-templates.md). Each appears inside a quoted YAML string.

/// A kubeadm bootstrap token (`abcdef.0123456789abcdef`) or the k3s cluster token.
pub const TOKEN: &str = "@@TOKEN@@";
/// `sha256:<hex>` of the cluster CA's public key (kubeadm discovery).
pub const CA_CERT_HASH: &str = "@@CA_CERT_HASH@@";
/// The key that encrypts the control-plane certificates uploaded by `kubeadm init --upload-certs`.
pub const CERTIFICATE_KEY: &str = "@@CERTIFICATE_KEY@@";

pub const ALL: [&str; 3] = [TOKEN, CA_CERT_HASH, CERTIFICATE_KEY];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template still contains {0} after substitution: no value was given for it")]
    Unfilled(&'static str),
    #[error("value for {placeholder} contains a character that is not allowed in it")]
    BadValue { placeholder: &'static str },
}

/// Replaces every placeholder with its value. Values may only hold characters that need no
/// quoting in a YAML string (`[A-Za-z0-9.:_-]`); every placeholder must be filled.
pub fn fill(template: &str, values: &[(&'static str, &str)]) -> Result<String, TemplateError> {
    let mut out = template.to_string();
    for (placeholder, value) in values {
        let ok = value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '_' | '-'));
        if !ok {
            return Err(TemplateError::BadValue { placeholder });
        }
        out = out.replace(placeholder, value);
    }
    match ALL.into_iter().find(|p| out.contains(p)) {
        Some(p) => Err(TemplateError::Unfilled(p)),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_and_reports_leftovers() {
        let t = "token: \"@@TOKEN@@\"\nkey: \"@@CERTIFICATE_KEY@@\"\n";
        assert_eq!(
            fill(t, &[(TOKEN, "abc.def"), (CERTIFICATE_KEY, "00ff")]).unwrap(),
            "token: \"abc.def\"\nkey: \"00ff\"\n"
        );
        assert_eq!(
            fill(t, &[(TOKEN, "abc.def")]),
            Err(TemplateError::Unfilled(CERTIFICATE_KEY))
        );
        assert_eq!(
            fill(t, &[(TOKEN, "a\"b")]),
            Err(TemplateError::BadValue { placeholder: TOKEN })
        );
    }
}
