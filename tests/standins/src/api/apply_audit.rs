//! The API stand-in's audit of server-side applies: one line per apply request it
//! accepted (`MANAGER KIND NAMESPACE/NAME`, `-` for a cluster-scoped object), appended to
//! `<node root>/var/lib/muster-standin/apply-audit.log` of the server that took it, whether
//! or not the apply changed the object (an identical apply leaves no trace in the object).
//! Tests count applies per object across the servers with [`read`]. The knob
//! `hang_at=apply-KIND-NAME` (`crate::knobs`) holds every apply of that object unanswered
//! while it is set, like a server stuck mid-request (its marker is written the first time).

use model::node_files::NodeRoot;
use std::io::Write;

pub const APPLY_AUDIT: &str = "var/lib/muster-standin/apply-audit.log";

/// One accepted apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub manager: String,
    pub kind: String,
    /// `NAMESPACE/NAME`, or `-/NAME` for a cluster-scoped object.
    pub object: String,
}

/// The knob step that holds the apply of `kind` `name`.
pub fn hang_step(kind: &str, name: &str) -> String {
    format!("apply-{kind}-{name}")
}

/// Appends one line; a write failure is logged, never fails the request.
pub fn record(root: &NodeRoot, manager: &str, kind: &str, ns: Option<&str>, name: &str) {
    let path = root.path(APPLY_AUDIT);
    let line = format!("{manager} {kind} {}/{name}\n", ns.unwrap_or("-"));
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
        })
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!("apiserver-standin: {}: {e}", path.display());
    }
}

/// The applies a server rooted at `root` accepted (none when it took none).
pub fn read(root: &NodeRoot) -> Vec<Applied> {
    std::fs::read_to_string(root.path(APPLY_AUDIT))
        .unwrap_or_default()
        .lines()
        .filter_map(parse)
        .collect()
}

fn parse(line: &str) -> Option<Applied> {
    let mut parts = line.split_whitespace();
    Some(Applied {
        manager: parts.next()?.to_string(),
        kind: parts.next()?.to_string(),
        object: parts.next()?.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_are_appended_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let root = NodeRoot::new(dir.path());
        assert!(read(&root).is_empty());
        record(
            &root,
            "muster",
            "DaemonSet",
            Some("kube-flannel"),
            "kube-flannel-ds",
        );
        record(&root, "muster", "Namespace", None, "kube-flannel");
        let got = read(&root);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].object, "kube-flannel/kube-flannel-ds");
        assert_eq!(got[1].object, "-/kube-flannel");
        assert_eq!(hang_step("DaemonSet", "x"), "apply-DaemonSet-x");
    }
}
