//! What a rebuild changes about the machines: nodes added, removed, or changed (size,
//! address, MAC, VM id), matched by name against the previous build's `cluster.json`.
//! Identities that moved between names are called out, since a re-created VM would then
//! take over another machine's address or id.

use crate::names::NodeName;
use crate::plan::PlannedNode;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanDiff {
    /// In the new plan only.
    pub added: Vec<NodeName>,
    /// In the previous build only.
    pub removed: Vec<PlannedNode>,
    /// In both, with the fields that differ (`role`, `cpus`, `memory`, `disk`, `ip`, `mac`,
    /// `vmid`).
    pub changed: Vec<ChangedNode>,
    /// An address, MAC or VM id that belonged to one node before and to another now.
    pub moved: Vec<MovedIdentity>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangedNode {
    pub name: NodeName,
    pub fields: Vec<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MovedIdentity {
    /// `ip`, `mac` or `vmid`.
    pub what: &'static str,
    pub value: String,
    pub from: NodeName,
    pub to: NodeName,
}

impl PlanDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.moved.is_empty()
    }

    /// `+` added, `~` changed, blank otherwise: the plan table's first column.
    pub fn mark(&self, name: &NodeName) -> &'static str {
        if self.added.contains(name) {
            "+"
        } else if self.changed.iter().any(|c| &c.name == name) {
            "~"
        } else {
            ""
        }
    }
}

fn changed_fields(a: &PlannedNode, b: &PlannedNode) -> Vec<&'static str> {
    let checks = [
        ("role", a.role != b.role),
        ("cpus", a.cpus != b.cpus),
        ("memory", a.memory_mib != b.memory_mib),
        ("disk", a.disk_gib != b.disk_gib),
        ("ip", a.ip != b.ip),
        ("mac", a.mac != b.mac),
        ("vmid", a.vmid != b.vmid),
    ];
    checks
        .into_iter()
        .filter(|(_, differs)| *differs)
        .map(|(f, _)| f)
        .collect()
}

/// The identities of a node that must never silently pass to another node.
fn identities(n: &PlannedNode) -> Vec<(&'static str, String)> {
    let mut v = vec![("ip", n.ip.to_string()), ("mac", n.mac.to_string())];
    if let Some(id) = n.vmid {
        v.push(("vmid", id.to_string()));
    }
    v
}

/// `previous` is the node list of the last build, `current` the new plan's.
pub fn diff(previous: &[PlannedNode], current: &[PlannedNode]) -> PlanDiff {
    let before: BTreeMap<&NodeName, &PlannedNode> = previous.iter().map(|n| (&n.name, n)).collect();
    let after: BTreeMap<&NodeName, &PlannedNode> = current.iter().map(|n| (&n.name, n)).collect();
    let added = current
        .iter()
        .filter(|n| !before.contains_key(&n.name))
        .map(|n| n.name.clone())
        .collect();
    let removed = previous
        .iter()
        .filter(|n| !after.contains_key(&n.name))
        .cloned()
        .collect();
    let changed = current
        .iter()
        .filter_map(|n| {
            let old = before.get(&n.name)?;
            let fields = changed_fields(old, n);
            (!fields.is_empty()).then(|| ChangedNode {
                name: n.name.clone(),
                fields,
            })
        })
        .collect();
    let owner_before: BTreeMap<(&'static str, String), &NodeName> = previous
        .iter()
        .flat_map(|n| identities(n).into_iter().map(move |k| (k, &n.name)))
        .collect();
    let moved = current
        .iter()
        .flat_map(|n| identities(n).into_iter().map(move |k| (k, &n.name)))
        .filter_map(|((what, value), to)| {
            let from = owner_before.get(&(what, value.clone()))?;
            (*from != to).then(|| MovedIdentity {
                what,
                value,
                from: (*from).clone(),
                to: to.clone(),
            })
        })
        .collect();
    PlanDiff {
        added,
        removed,
        changed,
        moved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Role;

    fn node(name: &str, ip: &str, vmid: u32) -> PlannedNode {
        crate::plan::test_node(name, Role::Worker, ip, Some(vmid))
    }

    #[test]
    fn same_plan_is_no_change() {
        let p = vec![node("a", "10.0.0.1", 101), node("b", "10.0.0.2", 102)];
        assert!(diff(&p, &p).is_empty());
    }

    #[test]
    fn added_removed_changed_by_name() {
        let before = vec![node("a", "10.0.0.1", 101), node("b", "10.0.0.2", 102)];
        let mut a = node("a", "10.0.0.1", 101);
        a.cpus = 4;
        let after = vec![a, node("c", "10.0.0.3", 103)];
        let d = diff(&before, &after);
        assert_eq!(d.added, vec!["c".parse::<NodeName>().unwrap()]);
        assert_eq!(d.removed.len(), 1);
        assert_eq!(d.removed[0].name.as_str(), "b");
        assert_eq!(d.changed.len(), 1);
        assert_eq!(d.changed[0].fields, vec!["cpus"]);
        assert!(d.moved.is_empty(), "{d:?}");
        assert_eq!(d.mark(&"c".parse().unwrap()), "+");
        assert_eq!(d.mark(&"a".parse().unwrap()), "~");
    }

    #[test]
    fn an_address_or_id_passing_to_another_name_is_called_out() {
        // The old positional VM ids: a new worker in front shifts b's id onto c.
        let before = vec![node("a", "10.0.0.1", 101), node("b", "10.0.0.2", 102)];
        let after = vec![
            node("a", "10.0.0.1", 101),
            node("c", "10.0.0.3", 102),
            node("b", "10.0.0.2", 103),
        ];
        let d = diff(&before, &after);
        assert_eq!(d.moved.len(), 1, "{d:?}");
        let m = &d.moved[0];
        assert_eq!(
            (m.what, m.value.as_str(), m.from.as_str(), m.to.as_str()),
            ("vmid", "102", "b", "c")
        );
        assert_eq!(d.changed[0].fields, vec!["vmid"]);
    }
}
