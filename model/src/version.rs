//! Kubernetes release versions as kubeadm (`v1.31.4`) and k3s (`v1.31.6+k3s1`) spell them.

use crate::yaml::Scalar;
use std::fmt;

/// Minor releases muster knows how to configure.
pub const SUPPORTED_MINORS: std::ops::RangeInclusive<u32> = 27..=35;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    /// The `+k3sN` revision of a k3s release.
    pub k3s_revision: Option<u32>,
}

impl KubeVersion {
    /// The minor release as `(major, minor)`, the unit the version-skew policy counts in
    /// (patch and k3s revision do not matter to it).
    pub fn minor_release(&self) -> (u32, u32) {
        (self.major, self.minor)
    }

    /// Whether this release is more than one minor above `other` (a later major counts as
    /// more): the API servers' skew limit.
    pub fn minors_beyond_one_above(&self, other: &KubeVersion) -> bool {
        self.major > other.major
            || (self.major == other.major && self.minor > other.minor.saturating_add(1))
    }

    /// `admin.conf` has no rights until init is partly done from 1.29 on; kube-vip must use
    /// `super-admin.conf` on the init node during `kubeadm init`.
    pub fn needs_super_admin_conf(&self) -> bool {
        self.minor_release() >= (1, 29)
    }

    /// kubeadm before 1.29 adds a joining control plane's etcd member as a voter unless the
    /// `EtcdLearnerMode` gate (alpha in 1.27 and 1.28, on by default from 1.29) is set: a
    /// join dying after its `member add` then costs a two-member cluster its quorum.
    pub fn needs_etcd_learner_gate(&self) -> bool {
        self.minor_release() < (1, 29)
    }

    /// The upstream Kubernetes release of a k3s one (`v1.31.6+k3s1` → `v1.31.6`); itself
    /// for kubeadm's.
    pub fn upstream(&self) -> KubeVersion {
        KubeVersion {
            k3s_revision: None,
            ..*self
        }
    }

    /// kubeadm config API version for this release: v1beta4 from 1.31, v1beta3 before.
    pub fn kubeadm_api(&self) -> &'static str {
        if self.minor_release() >= (1, 31) {
            "kubeadm.k8s.io/v1beta4"
        } else {
            "kubeadm.k8s.io/v1beta3"
        }
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)?;
        if let Some(r) = self.k3s_revision {
            write!(f, "+k3s{r}")?;
        }
        Ok(())
    }
}

impl Scalar for KubeVersion {
    fn parse_scalar(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{text}` is not a Kubernetes version like \"v1.31.4\" (kubeadm) or \"v1.31.6+k3s1\" (k3s)"
            )
        };
        let body = text.strip_prefix('v').ok_or_else(bad)?;
        let (nums, rev) = match body.split_once('+') {
            Some((n, r)) => {
                let r = r.strip_prefix("k3s").ok_or_else(bad)?;
                (n, Some(r.parse::<u32>().map_err(|_| bad())?))
            }
            None => (body, None),
        };
        let parts: Vec<u32> = nums
            .split('.')
            .map(|p| p.parse::<u32>().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let [major, minor, patch] = parts[..] else {
            return Err(bad());
        };
        if major != 1 || !SUPPORTED_MINORS.contains(&minor) {
            return Err(format!(
                "`{text}` is outside the supported releases v1.{}–v1.{}",
                SUPPORTED_MINORS.start(),
                SUPPORTED_MINORS.end()
            ));
        }
        Ok(KubeVersion {
            major,
            minor,
            patch,
            k3s_revision: rev,
        })
    }
}

crate::yaml::serde_as_text!(KubeVersion);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_spellings() {
        let k = KubeVersion::parse_scalar("v1.31.4").unwrap();
        assert_eq!(k.to_string(), "v1.31.4");
        assert_eq!(k.kubeadm_api(), "kubeadm.k8s.io/v1beta4");
        assert!(k.needs_super_admin_conf());
        let k3s = KubeVersion::parse_scalar("v1.31.6+k3s1").unwrap();
        assert_eq!(k3s.k3s_revision, Some(1));
        assert_eq!(k3s.to_string(), "v1.31.6+k3s1");
        let old = KubeVersion::parse_scalar("v1.28.2").unwrap();
        assert!(!old.needs_super_admin_conf());
        assert_eq!(old.kubeadm_api(), "kubeadm.k8s.io/v1beta3");
    }

    #[test]
    fn skew_counts_minor_releases() {
        let v = |s: &str| KubeVersion::parse_scalar(s).unwrap();
        assert_eq!(v("v1.31.4").minor_release(), (1, 31));
        assert!(!v("v1.32.0").minors_beyond_one_above(&v("v1.31.9")));
        assert!(v("v1.33.0").minors_beyond_one_above(&v("v1.31.9")));
        assert!(
            !v("v1.30.0").minors_beyond_one_above(&v("v1.31.0")),
            "older is never beyond"
        );
        let two = KubeVersion {
            major: 2,
            minor: 0,
            patch: 0,
            k3s_revision: None,
        };
        assert!(two.minors_beyond_one_above(&v("v1.31.0")));
        assert!(!v("v1.35.0").minors_beyond_one_above(&two));
    }

    #[test]
    fn upstream_drops_only_the_k3s_revision() {
        let k3s = KubeVersion::parse_scalar("v1.31.6+k3s1").unwrap();
        assert_eq!(k3s.upstream().to_string(), "v1.31.6");
        let kubeadm = KubeVersion::parse_scalar("v1.31.4").unwrap();
        assert_eq!(kubeadm.upstream(), kubeadm);
    }

    #[test]
    fn rejects_bad_versions() {
        for bad in [
            "1.31.4",
            "v1.31",
            "v2.0.0",
            "v1.10.0",
            "v1.31.x",
            "v1.31.4+rke2r1",
            "",
        ] {
            assert!(KubeVersion::parse_scalar(bad).is_err(), "{bad}");
        }
    }
}
