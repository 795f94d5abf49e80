//! `muster plan` output: the machines as a table, totals, RAM budget, quorum and warnings.

use model::plan::Plan;
use model::plan_diff::PlanDiff;
use std::fmt::Write;

/// `4096` → `4 GiB`, `1536` → `1536 MiB`.
pub fn mib(m: u64) -> String {
    if m.is_multiple_of(1024) {
        format!("{} GiB", m / 1024)
    } else {
        format!("{m} MiB")
    }
}

/// The lines under the table that say what the rebuild changes.
pub fn changes(d: &PlanDiff) -> String {
    let mut out = String::new();
    if d.is_empty() {
        let _ = writeln!(out, "\nAgainst the previous build: no machine changes.");
        return out;
    }
    let _ = writeln!(
        out,
        "\nAgainst the previous build: {} new (+), {} changed (~), {} removed.",
        d.added.len(),
        d.changed.len(),
        d.removed.len()
    );
    for c in &d.changed {
        let _ = writeln!(out, "  ~ {}: {}", c.name, c.fields.join(", "));
    }
    for n in &d.removed {
        let vmid = n.vmid.map(|id| format!(", VM {id}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "  - {} ({} {}{vmid}): no longer planned; its machine is not deleted by a rebuild",
            n.name, n.role, n.ip
        );
    }
    for m in &d.moved {
        let _ = writeln!(
            out,
            "  ! {} {} was {}'s and is now {}'s: a machine created for {} would take over {}'s",
            m.what, m.value, m.from, m.to, m.to, m.from
        );
    }
    out
}

fn signed_mib(m: i64) -> String {
    if m < 0 {
        format!("-{}", mib(m.unsigned_abs()))
    } else {
        mib(m.unsigned_abs())
    }
}

/// Lays out rows in columns separated by two spaces; the last column is not padded.
pub fn columns(rows: &[Vec<String>]) -> String {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; width];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

// Long on purpose: a renderer is one straight run of output lines in the order the

// file shows them; split up, the layout of what it writes could no longer be read here.

pub fn render(plan: &Plan) -> String {
    render_against(plan, None)
}

/// The plan, with each node marked against the previous build when there is one: `+` new,
/// `~` changed, and the removed nodes and moved identities listed after the table.
pub fn render_against(plan: &Plan, diff: Option<&PlanDiff>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Cluster {}: {}, API {} via {}, platform {}\n",
        plan.cluster, plan.distribution, plan.api_endpoint, plan.vip_provider, plan.platform
    );
    let mut rows = vec![
        ["NAME", "ROLE", "VCPU", "RAM", "DISK", "IP", "MAC"]
            .map(String::from)
            .to_vec(),
    ];
    if plan.nodes.iter().any(|n| n.vmid.is_some()) {
        rows[0].push("VMID".into());
    }
    if diff.is_some() {
        rows[0].insert(0, String::new());
    }
    for n in &plan.nodes {
        let mut row = vec![
            n.name.to_string(),
            n.role.to_string(),
            n.cpus.to_string(),
            mib(n.memory_mib),
            format!("{} GiB", n.disk_gib),
            n.ip.to_string(),
            n.mac.to_string(),
        ];
        if let Some(id) = n.vmid {
            row.push(id.to_string());
        }
        if let Some(d) = diff {
            row.insert(0, d.mark(&n.name).into());
        }
        rows.push(row);
    }
    let t = &plan.totals;
    let mut total = vec![
        "TOTAL".into(),
        format!("{} VMs", t.vms),
        t.cpus.to_string(),
        mib(t.memory_mib),
        format!("{} GiB", t.disk_gib),
    ];
    if diff.is_some() {
        total.insert(0, String::new());
    }
    rows.push(total);
    out.push_str(&columns(&rows));
    if let Some(d) = diff {
        out.push_str(&changes(d));
    }

    let b = &plan.budget;
    let _ = write!(
        out,
        "\nRAM: VMs {} + host overhead {} = {}",
        mib(t.memory_mib),
        mib(b.overhead_mib),
        mib(b.needed_mib)
    );
    match (b.host_memory_mib, b.headroom_mib) {
        (Some(host), Some(head)) => {
            let _ = writeln!(
                out,
                " of {} host RAM; headroom {}",
                mib(host),
                signed_mib(head)
            );
        }
        _ => {
            let _ = writeln!(
                out,
                " (no host RAM given: set spec.host.memoryGiB to check the budget)"
            );
        }
    }

    match &plan.quorum {
        Some(q) => {
            if q.external.is_empty() {
                let _ = writeln!(
                    out,
                    "\netcd quorum (stacked on the control planes, {} members):",
                    q.members
                );
            } else {
                let _ = writeln!(
                    out,
                    "\netcd quorum (external etcd cluster, {} members; the control planes are not members):",
                    q.members
                );
                for e in &q.external {
                    let _ = writeln!(out, "  member {e}");
                }
            }
            let mut rows = vec![vec![
                "".into(),
                "MEMBERS".into(),
                "QUORUM".into(),
                "CAN LOSE".into(),
            ]];
            for r in &q.table {
                let mark = if r.members == q.members { ">" } else { "" };
                rows.push(vec![
                    mark.into(),
                    r.members.to_string(),
                    r.quorum.to_string(),
                    r.can_lose.to_string(),
                ]);
            }
            for line in columns(&rows).lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
        None => {
            let _ = writeln!(out, "\nDatastore is external SQL: no etcd quorum.");
        }
    }

    if !plan.warnings.is_empty() {
        let _ = writeln!(out, "\nWarnings:");
        for w in &plan.warnings {
            let _ = writeln!(out, "  {w}");
        }
    }
    out
}
