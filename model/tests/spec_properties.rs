//! Property tests of spec loading and planning (issue 18): arbitrary YAML trees built from
//! the real spec's field names mixed with random keys and values (huge numbers included)
//! never panic, every problem is located, a spec that loads plans every node it asks for at
//! distinct addresses inside its subnet, and the planner stays within its caps even for a
//! cluster nobody validated. `PROPTEST_CASES=n` raises the case count (docs/testing.md).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use model::spec::{self, Cluster, Platform, Role};
use proptest::prelude::*;
use std::collections::HashSet;

/// Cases per property unless `PROPTEST_CASES` says otherwise: a few seconds in CI.
const DEFAULT_CASES: u32 = 128;

fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = DEFAULT_CASES;
    }
    // A failing seed is kept next to this file (`<name>.proptest-regressions`) and
    // replayed first; there is no `src/lib.rs` beside `tests/` for the default to find.
    c.failure_persistence = Some(Box::new(
        proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
    ));
    c
}

/// A YAML tree: scalars are text, rendered plain when safe and double-quoted otherwise.
#[derive(Debug, Clone)]
enum Y {
    S(String),
    M(Vec<(String, Y)>),
    L(Vec<Y>),
}

fn s(text: &str) -> Y {
    Y::S(text.to_string())
}

fn m(entries: &[(&str, Y)]) -> Y {
    Y::M(
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

/// A valid spec (kubeadm on Proxmox, so VM ids are planned too) that mutations start from.
fn base() -> Y {
    m(&[
        ("apiVersion", s("muster.dev/v1")),
        ("kind", s("Cluster")),
        ("metadata", m(&[("name", s("t"))])),
        (
            "spec",
            m(&[
                (
                    "distribution",
                    m(&[("kind", s("kubeadm")), ("version", s("v1.31.4"))]),
                ),
                (
                    "topology",
                    m(&[("controlPlanes", s("3")), ("workers", s("2"))]),
                ),
                (
                    "sizes",
                    m(&[(
                        "worker",
                        m(&[
                            ("cpus", s("2")),
                            ("memoryMiB", s("4096")),
                            ("diskGiB", s("20")),
                        ]),
                    )]),
                ),
                (
                    "network",
                    m(&[
                        ("subnet", s("10.1.0.0/24")),
                        (
                            "addressPlan",
                            m(&[("controlPlanes", s("11")), ("workers", s("21"))]),
                        ),
                        (
                            "nodes",
                            Y::L(vec![m(&[
                                ("role", s("worker")),
                                ("index", s("1")),
                                ("ip", s("10.1.0.99")),
                            ])]),
                        ),
                    ]),
                ),
                (
                    "ha",
                    m(&[("provider", s("kube-vip")), ("vip", s("10.1.0.5"))]),
                ),
                ("rendezvous", m(&[("url", s("https://10.1.0.2:7443"))])),
                (
                    "platform",
                    m(&[
                        ("type", s("proxmox")),
                        ("node", s("pve")),
                        ("vmIdBase", s("100")),
                    ]),
                ),
                ("host", m(&[("memoryGiB", s("64"))])),
            ]),
        ),
    ])
}

const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "spec",
    "distribution",
    "version",
    "disable",
    "controlPlaneTaints",
    "addons",
    "cni",
    "topology",
    "controlPlanes",
    "workers",
    "loadBalancers",
    "sizes",
    "controlPlane",
    "worker",
    "loadBalancer",
    "cpus",
    "memoryMiB",
    "diskGiB",
    "network",
    "subnet",
    "gateway",
    "dns",
    "interface",
    "podSubnet",
    "serviceSubnet",
    "addressPlan",
    "naming",
    "nodes",
    "role",
    "index",
    "ip",
    "mac",
    "ha",
    "provider",
    "vip",
    "apiPort",
    "virtualRouterId",
    "datastore",
    "type",
    "endpoints",
    "endpoint",
    "rendezvous",
    "url",
    "workerJoinCap",
    "platform",
    "vmIdBase",
    "templateId",
    "host",
    "memoryGiB",
    "overheadMiB",
    "access",
    "user",
];

const WORDS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "9",
    "11",
    "21",
    "100",
    "254",
    "255",
    "256",
    "1000",
    "1001",
    "65535",
    "65536",
    "2147483647",
    "4294967294",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "-1",
    "99999999999999999999999999",
    "",
    "~",
    "kubeadm",
    "k3s",
    "v1.31.4",
    "v1.31.6+k3s1",
    "kube-vip",
    "haproxy",
    "keepalived",
    "nginx",
    "stacked-etcd",
    "external-etcd",
    "external-sql",
    "qemu",
    "vagrant",
    "proxmox",
    "control-plane",
    "worker",
    "load-balancer",
    "https://10.1.0.2:7443",
    "http://10.1.0.81:2379",
    "52:54:00:12:34:56",
    "0.0.0.0/0",
    "10.1.0.0/31",
    "10.1.0.0/32",
    "255.255.255.255",
    "{cluster}-w",
];

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(WORDS).prop_map(str::to_string),
        2 => any::<u32>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        2 => (any::<u32>(), 0u8..=32).prop_map(|(a, p)| {
            format!("{}/{p}", std::net::Ipv4Addr::from(a))
        }),
        2 => any::<u32>().prop_map(|a| std::net::Ipv4Addr::from(a).to_string()),
        1 => ".{0,12}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => "[a-zA-Z]{1,10}",
    ]
}

fn tree() -> impl Strategy<Value = Y> {
    scalar().prop_map(Y::S).prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Y::L),
            prop::collection::vec((key(), inner), 0..4).prop_map(Y::M),
        ]
    })
}

#[derive(Debug, Clone)]
enum Op {
    Set(String),
    Insert(String, Y),
    Remove,
    Replace(Y),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => scalar().prop_map(Op::Set),
        2 => (key(), tree()).prop_map(|(k, v)| Op::Insert(k, v)),
        1 => Just(Op::Remove),
        1 => tree().prop_map(Op::Replace),
    ]
}

/// Walks down by `picks` (each an index modulo the children) and applies `op` there.
fn apply(y: &mut Y, picks: &[usize], op: &Op) {
    let children = match y {
        Y::M(entries) if !entries.is_empty() => entries.len(),
        Y::L(items) if !items.is_empty() => items.len(),
        _ => 0,
    };
    if let (Some((&first, rest)), true) = (picks.split_first(), children > 0) {
        let i = first % children;
        // Removal acts on the parent: the last pick names the child to drop.
        if rest.is_empty() && matches!(op, Op::Remove) {
            match y {
                Y::M(entries) => drop(entries.remove(i)),
                Y::L(items) => drop(items.remove(i)),
                Y::S(_) => {}
            }
            return;
        }
        let child = match y {
            Y::M(entries) => &mut entries[i].1,
            Y::L(items) => &mut items[i],
            Y::S(_) => return,
        };
        return apply(child, rest, op);
    }
    match (op, &mut *y) {
        (Op::Set(text), _) => *y = Y::S(text.clone()),
        (Op::Insert(k, v), Y::M(entries)) => entries.push((k.clone(), v.clone())),
        (Op::Insert(_, v), Y::L(items)) => items.push(v.clone()),
        (Op::Replace(v), _) => *y = v.clone(),
        _ => {}
    }
}

fn spec_tree() -> impl Strategy<Value = Y> {
    prop::collection::vec((prop::collection::vec(any::<usize>(), 0..6), op()), 0..8).prop_map(
        |ops| {
            let mut y = base();
            for (picks, op) in &ops {
                apply(&mut y, picks, op);
            }
            y
        },
    )
}

fn plain_ok(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_/+".contains(c))
        && !text.starts_with(['-', '.'])
}

fn scalar_text(text: &str) -> String {
    if plain_ok(text) {
        text.to_string()
    } else {
        serde_json::to_string(text).unwrap()
    }
}

fn flow(y: &Y) -> String {
    match y {
        Y::S(t) => scalar_text(t),
        Y::L(items) => format!(
            "[{}]",
            items.iter().map(flow).collect::<Vec<_>>().join(", ")
        ),
        Y::M(entries) => format!(
            "{{{}}}",
            entries
                .iter()
                .map(|(k, v)| format!("{}: {}", scalar_text(k), flow(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Mappings in block style down the tree, lists and what is inside them in flow style.
fn render(y: &Y, indent: usize, out: &mut String) {
    let Y::M(entries) = y else {
        out.push_str(&flow(y));
        out.push('\n');
        return;
    };
    for (k, v) in entries {
        out.push_str(&" ".repeat(indent));
        out.push_str(&scalar_text(k));
        out.push(':');
        match v {
            Y::M(inner) if !inner.is_empty() => {
                out.push('\n');
                render(v, indent + 2, out);
            }
            _ => {
                out.push(' ');
                out.push_str(&flow(v));
                out.push('\n');
            }
        }
    }
}

fn text_of(y: &Y) -> String {
    let mut out = String::new();
    render(y, 0, &mut out);
    out
}

/// What a loaded spec's plan must satisfy: every node it asks for, each at a distinct
/// usable address of its subnet, distinct names and MACs, VM ids (base + host number,
/// distinct) and totals without wrap.
fn check_plan(c: &Cluster) -> Result<(), TestCaseError> {
    let plan = model::plan::resolve(c, vec![]);
    let asked: u64 = Role::ALL.iter().map(|&r| u64::from(c.count(r))).sum();
    prop_assert_eq!(plan.nodes.len() as u64, asked);
    let net = c.network.subnet;
    let mut ips = HashSet::new();
    let mut names = HashSet::new();
    let mut macs = HashSet::new();
    let mut vmids = HashSet::new();
    for n in &plan.nodes {
        prop_assert!(net.contains(&n.ip), "{} outside {net}", n.ip);
        prop_assert!(n.ip != net.network() && n.ip != net.broadcast(), "{}", n.ip);
        prop_assert!(ips.insert(n.ip), "duplicate address {}", n.ip);
        prop_assert!(names.insert(n.name.clone()), "duplicate name {}", n.name);
        prop_assert!(macs.insert(n.mac), "duplicate MAC {}", n.mac);
        prop_assert!(Some(n.ip) != c.ha.vip, "VIP {} is a node's", n.ip);
        if let Platform::Proxmox { vm_id_base, .. } = c.platform {
            // The base plus the address's host number: tied to the address, so unique.
            let host = u32::from(n.ip) - u32::from(net.network());
            prop_assert_eq!(
                n.vmid.map(u64::from),
                Some(u64::from(vm_id_base) + u64::from(host))
            );
            prop_assert!(vmids.insert(n.vmid), "duplicate VM id {:?}", n.vmid);
        }
    }
    let sum = |f: &dyn Fn(&model::PlannedNode) -> u64| -> u128 {
        plan.nodes.iter().map(|n| u128::from(f(n))).sum()
    };
    prop_assert_eq!(u128::from(plan.totals.cpus), sum(&|n| u64::from(n.cpus)));
    prop_assert_eq!(u128::from(plan.totals.memory_mib), sum(&|n| n.memory_mib));
    prop_assert_eq!(u128::from(plan.totals.disk_gib), sum(&|n| n.disk_gib));
    prop_assert_eq!(
        u128::from(plan.budget.needed_mib),
        sum(&|n| n.memory_mib) + u128::from(c.host.overhead_mib)
    );
    Ok(())
}

fn check_located(e: &model::SpecError) -> Result<(), TestCaseError> {
    prop_assert!(e.problems.has_errors());
    for p in &e.problems.items {
        prop_assert!(p.location.line >= 1 && p.location.column >= 1, "{p}");
        prop_assert_eq!(&p.file, "p.yaml");
        prop_assert!(!p.field.is_empty(), "{p}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Mutated specs: no panic; an error is located; a spec that loads plans soundly.
    #[test]
    fn mutated_specs_load_or_fail_located(y in spec_tree()) {
        let text = text_of(&y);
        match spec::load("p.yaml", &text) {
            Ok((c, warnings)) => {
                for w in &warnings.items {
                    prop_assert!(w.location.line >= 1 && w.location.column >= 1, "{w}");
                }
                check_plan(&c)?;
            }
            Err(e) => check_located(&e)?,
        }
    }

    /// Trees that are mostly noise, as the whole document.
    #[test]
    fn random_documents_fail_located(y in tree()) {
        let text = text_of(&y);
        match spec::load("p.yaml", &text) {
            Ok((c, _)) => check_plan(&c)?,
            Err(e) => check_located(&e)?,
        }
    }

    /// Raw text spliced into a valid spec (control characters, document markers, stray
    /// syntax): never a panic, never Ok with a control character or a second document.
    #[test]
    fn spliced_text_is_refused_where_it_is(
        at in any::<prop::sample::Index>(),
        junk in prop_oneof![
            "[\\x00-\\x1f\\x7f]",
            Just("\n---\n".to_string()),
            Just("\n---\nspec: {}\n".to_string()),
            Just("\n...\nx: 1\n".to_string()),
            ".{0,8}",
        ],
    ) {
        let valid = text_of(&base());
        let chars: Vec<char> = valid.chars().collect();
        let i = at.index(chars.len() + 1);
        let prefix: String = chars[..i].iter().collect();
        let suffix: String = chars[i..].iter().collect();
        let text = format!("{prefix}{junk}{suffix}");
        // A document marker line after the first document's content starts a second one.
        let second_document = i > 0 && (junk.starts_with("\n---") || junk.starts_with("\n..."));
        let control = text
            .char_indices()
            .find(|(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r'));
        match spec::load("p.yaml", &text) {
            Ok((c, _)) => {
                prop_assert!(control.is_none(), "control character accepted: {text:?}");
                prop_assert!(!second_document, "second document accepted: {text:?}");
                check_plan(&c)?;
            }
            Err(e) => {
                check_located(&e)?;
                if let Some((byte, ch)) = control {
                    // Lines end at LF, CRLF or a lone CR, as in YAML.
                    let before = text[..byte].replace("\r\n", "\n").replace('\r', "\n");
                    let line = before.matches('\n').count() + 1;
                    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
                    let code = format!("U+{:04X}", u32::from(ch));
                    prop_assert!(
                        e.problems.errors().any(|p| p.location.line == line
                            && p.location.column == column
                            && p.message.contains(&code)),
                        "{code} at {line}:{column} not reported: {}", e.problems
                    );
                }
            }
        }
    }

    /// The planner given a cluster nobody validated (counts, blocks, subnet, VM ids and
    /// sizes at any value): no panic, no more nodes than the caps, no wrapped address or
    /// VM id.
    #[test]
    fn planner_is_bounded_without_validation(
        counts in prop::array::uniform3(prop_oneof![0u32..8, any::<u32>()]),
        firsts in prop::array::uniform3(prop_oneof![0u32..300, any::<u32>()]),
        subnet in (any::<u32>(), 0u8..=32),
        vm_id_base in any::<u32>(),
        cpus in any::<u32>(),
        memory in any::<u64>(),
    ) {
        let text = text_of(&base());
        let (mut c, _) = spec::load("p.yaml", &text).unwrap();
        c.topology.control_planes = counts[0];
        c.topology.workers = counts[1];
        c.topology.load_balancers = counts[2];
        c.network.address_plan.control_planes = firsts[0];
        c.network.address_plan.workers = firsts[1];
        c.network.address_plan.load_balancers = firsts[2];
        c.network.subnet = ipnet::Ipv4Net::new(subnet.0.into(), subnet.1).unwrap().trunc();
        c.network.nodes.clear();
        c.sizes.worker.cpus = cpus;
        c.sizes.worker.memory_mib = memory;
        if let Platform::Proxmox { vm_id_base: b, .. } = &mut c.platform {
            *b = vm_id_base;
        }
        let plan = model::plan::resolve(&c, vec![]);
        prop_assert!(plan.nodes.len() <= 3 * spec::MAX_NODES_PER_ROLE as usize);
        for n in &plan.nodes {
            prop_assert!(c.network.subnet.contains(&n.ip), "{} outside {}", n.ip, c.network.subnet);
            if let Some(id) = n.vmid {
                prop_assert!(id >= vm_id_base, "VM id {id} wrapped below {vm_id_base}");
            }
        }
    }
}
