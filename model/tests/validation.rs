//! Spec validation: every example is valid, and each kind of mistake is reported where it is.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use model::{Severity, spec};
use std::path::PathBuf;

fn examples() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_example_is_valid() {
    let all = examples();
    assert!(
        all.len() >= 6,
        "expected the default and the seed examples, found {all:?}"
    );
    for path in all {
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(e) = spec::load(&path.display().to_string(), &text) {
            panic!("{e}");
        }
    }
}

/// Loads `text` and returns (field, line, severity) of every problem.
fn problems(text: &str) -> Vec<(String, usize, Severity, String)> {
    let items = match spec::load("t.yaml", text) {
        Ok((_, warnings)) => warnings.items,
        Err(e) => e.problems.items,
    };
    items
        .into_iter()
        .map(|p| (p.field, p.location.line, p.severity, p.message))
        .collect()
}

const BASE: &str = "apiVersion: muster.dev/v1
kind: Cluster
metadata:
  name: t
spec:
  distribution:
    kind: kubeadm
    version: v1.31.4
  topology:
    controlPlanes: 3
    workers: 2
  network:
    subnet: 10.1.0.0/24
  ha:
    provider: kube-vip
    vip: 10.1.0.5
  rendezvous:
    url: https://10.1.0.2:7443
";

#[test]
fn base_is_valid() {
    assert!(problems(BASE).is_empty(), "{:?}", problems(BASE));
}

fn with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from}");
    BASE.replacen(from, to, 1)
}

fn has(
    ps: &[(String, usize, Severity, String)],
    field: &str,
    line: usize,
    sev: Severity,
    needle: &str,
) {
    assert!(
        ps.iter()
            .any(|(f, l, s, m)| f == field && *l == line && *s == sev && m.contains(needle)),
        "no {sev:?} at {field}:{line} containing {needle:?} in {ps:#?}"
    );
}

#[test]
fn kube_proxy_replacement_needs_cilium() {
    let flannel = with(
        "  topology:",
        "  addons:\n    cni: flannel\n    kubeProxyReplacement: true\n  topology:",
    );
    has(
        &problems(&flannel),
        "spec.addons.kubeProxyReplacement",
        11,
        Severity::Error,
        "only cilium replaces kube-proxy; this spec's CNI is flannel",
    );
    let cilium = flannel.replace("cni: flannel", "cni: cilium");
    assert!(problems(&cilium).is_empty(), "{:?}", problems(&cilium));
}

#[test]
fn vip_equal_to_a_node_address() {
    let ps = problems(&with("vip: 10.1.0.5", "vip: 10.1.0.12"));
    has(
        &ps,
        "spec.ha.vip",
        16,
        Severity::Error,
        "also the address of control-plane 2",
    );
}

#[test]
fn vip_outside_the_subnet() {
    let ps = problems(&with("vip: 10.1.0.5", "vip: 10.2.0.5"));
    has(
        &ps,
        "spec.ha.vip",
        16,
        Severity::Error,
        "outside the subnet",
    );
}

#[test]
fn even_control_plane_count_warns_with_quorum_table() {
    let ps = problems(&with("controlPlanes: 3", "controlPlanes: 4"));
    has(
        &ps,
        "spec.topology.controlPlanes",
        10,
        Severity::Warning,
        "4 members: quorum 3, can lose 1",
    );
    assert!(ps.iter().all(|p| p.2 == Severity::Warning));
}

#[test]
fn unknown_field_suggests_the_known_one() {
    let ps = problems(&with("    workers: 2", "    wrokers: 2"));
    has(
        &ps,
        "spec.topology.wrokers",
        11,
        Severity::Error,
        "unknown field `wrokers`",
    );
    let e = spec::load("t.yaml", &with("    workers: 2", "    wrokers: 2")).unwrap_err();
    assert!(e.to_string().contains("did you mean `workers`?"), "{e}");
}

#[test]
fn bad_version_and_k3s_mismatch() {
    has(
        &problems(&with("v1.31.4", "1.31")),
        "spec.distribution.version",
        8,
        Severity::Error,
        "not a Kubernetes version",
    );
    has(
        &problems(&with("v1.31.4", "v1.31.4+k3s1")),
        "spec.distribution.version",
        8,
        Severity::Error,
        "k3s release",
    );
    has(
        &problems(&with("kind: kubeadm", "kind: k3s")),
        "spec.distribution.version",
        8,
        Severity::Error,
        "+k3s revision",
    );
}

#[test]
fn address_plan_exhausted() {
    let ps = problems(&with("subnet: 10.1.0.0/24", "subnet: 10.1.0.0/28"));
    has(
        &ps,
        "spec.network.addressPlan.workers",
        12,
        Severity::Error,
        "address plan exhausted",
    );
    let ps = problems(&with(
        "subnet: 10.1.0.0/24",
        "subnet: 10.1.0.0/24\n    addressPlan: { controlPlanes: 20 }",
    ));
    has(
        &ps,
        "spec.network.addressPlan.controlPlanes",
        14,
        Severity::Error,
        "runs into the worker block .21–.22",
    );
}

#[test]
fn duplicate_names_ips_and_macs() {
    let text = with(
        "  ha:",
        "    nodes:
      - { role: worker, index: 1, name: t-cp-1 }
      - { role: worker, index: 2, ip: 10.1.0.11, mac: \"52:54:00:00:00:01\" }
      - { role: control-plane, index: 3, mac: \"52:54:00:00:00:01\" }
  ha:",
    );
    let ps = problems(&text);
    has(
        &ps,
        "spec.network.nodes[0].name",
        15,
        Severity::Error,
        "duplicate node name `t-cp-1`",
    );
    has(
        &ps,
        "spec.network.nodes[1].ip",
        16,
        Severity::Error,
        "duplicate address 10.1.0.11",
    );
    // Both MACs are pinned; the clash is reported at the later node in plan order (workers after control planes).
    has(
        &ps,
        "spec.network.nodes[1].mac",
        16,
        Severity::Error,
        "duplicate MAC 52:54:00:00:00:01",
    );
}

#[test]
fn external_datastore_without_endpoint() {
    let ps = problems(&format!("{BASE}  datastore:\n    type: external-etcd\n"));
    has(
        &ps,
        "spec.datastore.endpoints",
        19,
        Severity::Error,
        "needs its endpoints",
    );
    let k3s = with("kind: kubeadm", "kind: k3s").replace("v1.31.4", "v1.31.4+k3s1");
    let ps = problems(&format!("{k3s}  datastore:\n    type: external-sql\n"));
    has(
        &ps,
        "spec.datastore.endpoint",
        19,
        Severity::Error,
        "needs its endpoint",
    );
}

/// https etcd endpoints need the CA and the client cert and key: each missing one is its
/// own located error, all reported at once; http endpoints are a warning, not an error.
#[test]
fn external_etcd_tls_files() {
    let https = format!(
        "{BASE}  datastore:\n    type: external-etcd\n    endpoints: [\"https://10.1.0.81:2379\", \"https://10.1.0.82:2379\", \"https://10.1.0.83:2379\"]\n"
    );
    let ps = problems(&https);
    for field in ["caFile", "certFile", "keyFile"] {
        let p = ps
            .iter()
            .find(|p| p.0 == format!("spec.datastore.{field}"))
            .unwrap_or_else(|| panic!("no {field} problem in {ps:?}"));
        assert_eq!(p.2, Severity::Error, "{p:?}");
        assert!(p.1 >= 18, "located in the datastore section: {p:?}");
    }
    let full =
        format!("{https}    caFile: pki/ca.crt\n    certFile: pki/c.crt\n    keyFile: pki/c.key\n");
    // The files need not exist for the spec (plan) to be valid.
    assert!(problems(&full).is_empty(), "{:?}", problems(&full));
    let (c, _) = spec::load("t.yaml", &full).unwrap();
    let plan = model::plan::resolve(&c, vec![]);
    let q = plan.quorum.unwrap();
    assert_eq!(q.members, 3, "the endpoints, not the control planes");
    assert_eq!(q.external.len(), 3);

    let http = format!(
        "{BASE}  datastore:\n    type: external-etcd\n    endpoints: [\"http://10.1.0.81:2379\", \"http://10.1.0.82:2379\"]\n"
    );
    let ps = problems(&http);
    assert!(ps.iter().all(|p| p.2 == Severity::Warning), "{ps:?}");
    has(
        &ps,
        "spec.datastore.endpoints",
        21,
        Severity::Warning,
        "no TLS to etcd",
    );
    has(
        &ps,
        "spec.datastore.endpoints",
        21,
        Severity::Warning,
        "even count",
    );
}

#[test]
fn providers_and_load_balancers_must_agree() {
    let ps = problems(
        &with("provider: kube-vip", "provider: haproxy")
            .replace("    workers: 2", "    workers: 2\n    loadBalancers: 0"),
    );
    has(
        &ps,
        "spec.topology.loadBalancers",
        12,
        Severity::Error,
        "there are none",
    );
    let ps = problems(&with(
        "    workers: 2",
        "    workers: 2\n    loadBalancers: 2",
    ));
    has(
        &ps,
        "spec.topology.loadBalancers",
        12,
        Severity::Error,
        "would sit unused",
    );
    let nginx = with("provider: kube-vip\n    vip: 10.1.0.5", "provider: nginx");
    let ps = problems(&nginx);
    has(
        &ps,
        "spec.ha",
        14,
        Severity::Warning,
        "single point of failure",
    );
}

#[test]
fn missing_required_fields_are_located_at_their_parent() {
    let ps = problems(&with(
        "  rendezvous:\n    url: https://10.1.0.2:7443\n",
        "  rendezvous: {}\n",
    ));
    has(
        &ps,
        "spec.rendezvous.url",
        17,
        Severity::Error,
        "required field is missing",
    );
}

#[test]
fn unquoted_sexagesimal_looking_mac_is_refused() {
    // YAML 1.1 readers turn 52:54:00:12:34:56 into a number; we read text and insist on six octets.
    let text = with(
        "  ha:",
        "    nodes:\n      - { role: worker, index: 1, mac: 525400123456 }\n  ha:",
    );
    has(
        &problems(&text),
        "spec.network.nodes[0].mac",
        15,
        Severity::Error,
        "not a MAC address",
    );
}

/// The acceptance test: ten different mistakes, ten located errors, one run.
#[test]
fn ten_mistakes_ten_located_errors() {
    let text = "apiVersion: muster.dev/v1
kind: Cluster
metadata:
  name: Ten_Mistakes
spec:
  distribution:
    kind: kubeadm
    version: v1.31
  topology:
    controlPlanes: 3
    wokers: 2
  sizes:
    controlPlane: { cpus: 1 }
  network:
    subnet: 10.1.0.0/24
    gateway: 10.9.0.1
    nodes:
      - { role: worker, index: 7 }
      - { role: control-plane, index: 2, mac: \"01:00:5e:00:00:01\" }
  ha:
    provider: kube-vip
    vip: 10.1.0.11
  datastore:
    type: external-etcd
  rendezvous:
    url: ftp://10.1.0.2
";
    let err = spec::load("ten.yaml", text).unwrap_err();
    let errors: Vec<_> = err.problems.errors().collect();
    let expected = [
        ("metadata.name", 4),
        ("spec.distribution.version", 8),
        ("spec.topology.wokers", 11),
        ("spec.sizes.controlPlane.cpus", 13),
        ("spec.network.gateway", 16),
        ("spec.network.nodes[0].index", 18),
        ("spec.network.nodes[1].mac", 19),
        ("spec.ha.vip", 22),
        ("spec.datastore.endpoints", 23),
        ("spec.rendezvous.url", 26),
    ];
    for (field, line) in expected {
        assert!(
            errors
                .iter()
                .any(|p| p.field == field && p.location.line == line && p.file == "ten.yaml"),
            "missing error at {field}:{line}; got:\n{}",
            err.problems
        );
    }
    assert_eq!(
        errors.len(),
        expected.len(),
        "exactly ten errors:\n{}",
        err.problems
    );
}

/// Issue 18 (4): a huge node count is refused at the field before any node is planned;
/// before, validation planned every node first (20 million: 1.2 GB and still going).
#[test]
fn huge_node_counts_are_refused_at_the_field() {
    let ps = problems(&with("    workers: 2", "    workers: 20000000"));
    has(&ps, "spec.topology.workers", 11, Severity::Error, "at most");
    let ps = problems(&with("    workers: 2", "    workers: 4294967295"));
    has(&ps, "spec.topology.workers", 11, Severity::Error, "at most");
    // Below the absolute cap but more than a /24 holds: refused at the count too.
    let ps = problems(&with("    workers: 2", "    workers: 300"));
    has(
        &ps,
        "spec.topology.workers",
        11,
        Severity::Error,
        "10.1.0.0/24 holds 254",
    );
}

/// Issue 18 (5): a block starting near the top of the u32 range wrapped round to the
/// bottom of the subnet (3 workers at 4294967295 planned "4 VMs", one at a wrapped address).
#[test]
fn address_plan_arithmetic_does_not_wrap() {
    let ps = problems(&with(
        "subnet: 10.1.0.0/24",
        "subnet: 10.1.0.0/24\n    addressPlan: { workers: 4294967295 }",
    ));
    has(
        &ps,
        "spec.network.addressPlan.workers",
        14,
        Severity::Error,
        "address plan exhausted",
    );
    // A /32 has no hosts at all: an error, not an underflow.
    let ps = problems(&with("subnet: 10.1.0.0/24", "subnet: 10.1.0.0/32"));
    has(
        &ps,
        "spec.network.addressPlan.controlPlanes",
        12,
        Severity::Error,
        "address plan exhausted",
    );
}

/// Issue 18 (5): VM ids and the totals of cpus, memory and disk are checked sums.
#[test]
fn vmid_and_total_overflows_are_located_errors() {
    let proxmox =
        format!("{BASE}  platform:\n    type: proxmox\n    node: pve\n    vmIdBase: 4294967294\n");
    has(
        &problems(&proxmox),
        "spec.platform.vmIdBase",
        22,
        Severity::Error,
        "VM id",
    );
    let cpus = format!("{BASE}  sizes:\n    worker: {{ cpus: 4294967295 }}\n");
    has(
        &problems(&cpus),
        "spec.sizes.worker.cpus",
        20,
        Severity::Error,
        "overflows",
    );
    let memory = format!("{BASE}  sizes:\n    worker: {{ memoryMiB: 18446744073709551615 }}\n");
    has(
        &problems(&memory),
        "spec.sizes.worker.memoryMiB",
        20,
        Severity::Error,
        "overflows",
    );
    let disk = format!("{BASE}  sizes:\n    worker: {{ diskGiB: 18446744073709551615 }}\n");
    has(
        &problems(&disk),
        "spec.sizes.worker.diskGiB",
        20,
        Severity::Error,
        "overflows",
    );
    let gib = format!("{BASE}  host:\n    memoryGiB: 18446744073709551615\n");
    has(
        &problems(&gib),
        "spec.host.memoryGiB",
        20,
        Severity::Error,
        "overflows",
    );
    let overhead =
        format!("{BASE}  host:\n    memoryMiB: 65536\n    overheadMiB: 18446744073709551615\n");
    has(
        &problems(&overhead),
        "spec.host.overheadMiB",
        21,
        Severity::Error,
        "overflows",
    );
}

/// Issue 18 (7): a second YAML document, valid or not, is an error at its line.
#[test]
fn a_second_document_is_an_error() {
    for second in ["---\nfoo: bar\n", "---\n: : [garbage\n", "...\n---\n"] {
        let ps = problems(&format!("{BASE}{second}"));
        has(
            &ps,
            "(document)",
            if second.starts_with("...") { 20 } else { 19 },
            Severity::Error,
            "one YAML document",
        );
    }
    // An explicit start and end of the one document are fine.
    let framed = format!("# a comment\n---\n{BASE}...\n# trailing comment\n");
    assert!(problems(&framed).is_empty(), "{:?}", problems(&framed));
}

/// Issue 18 (7): NUL used to end the document silently; it and other control characters
/// are errors at their line and column. Tab, LF and CR are text.
#[test]
fn control_characters_are_located_errors() {
    let text = format!("{BASE}\0garbage: [\n");
    let err = spec::load("t.yaml", &text).unwrap_err();
    let p = err.problems.errors().next().unwrap();
    assert_eq!((p.location.line, p.location.column), (19, 1), "{p}");
    assert!(p.message.contains("U+0000"), "{p}");

    let bell = with("    kind: kubeadm", "    kind: kube\x07adm");
    let err = spec::load("t.yaml", &bell).unwrap_err();
    let p = err.problems.errors().next().unwrap();
    assert_eq!((p.location.line, p.location.column), (7, 15), "{p}");
    assert!(p.message.contains("U+0007"), "{p}");

    let crlf = format!("#\ta comment after a tab\n{BASE}").replace('\n', "\r\n");
    assert!(problems(&crlf).is_empty(), "{:?}", problems(&crlf));
}

fn with_pool(addresses: &str) -> String {
    with(
        "  topology:\n",
        &format!(
            "  addons:\n    loadBalancer:\n      provider: metallb\n      addresses: {addresses}\n  topology:\n"
        ),
    )
}

#[test]
fn a_free_load_balancer_pool_is_valid() {
    let text = with_pool("[10.1.0.170-10.1.0.175, 10.1.0.200/30, 10.1.0.99]");
    assert!(problems(&text).is_empty(), "{:?}", problems(&text));
    let (c, _) = spec::load("t.yaml", &text).unwrap();
    let lb = c.addons.load_balancer.unwrap();
    let printed: Vec<String> = lb.addresses.iter().map(|r| r.to_string()).collect();
    assert_eq!(
        printed,
        [
            "10.1.0.170-10.1.0.175",
            "10.1.0.200-10.1.0.203",
            "10.1.0.99/32"
        ]
    );
}

#[test]
fn load_balancer_pool_must_not_take_a_used_address() {
    let field = |i: usize| format!("spec.addons.loadBalancer.addresses[{i}]");
    let ps = problems(&with_pool("[10.1.0.10-10.1.0.12]"));
    has(
        &ps,
        &field(0),
        12,
        Severity::Error,
        "10.1.0.11, which is control-plane 1",
    );
    let ps = problems(&with_pool("[10.1.0.5]"));
    has(&ps, &field(0), 12, Severity::Error, "the API VIP");
    let ps = problems(&with_pool("[10.1.0.1-10.1.0.3]"));
    has(&ps, &field(0), 12, Severity::Error, "the gateway");
    let ps = problems(&with_pool("[10.1.0.250-10.1.0.255]"));
    has(&ps, &field(0), 12, Severity::Error, "broadcast address");
    let ps = problems(&with_pool("[10.1.1.10-10.1.1.20]"));
    has(
        &ps,
        &field(0),
        12,
        Severity::Error,
        "not inside the node subnet 10.1.0.0/24",
    );
    let ps = problems(&with_pool("[10.1.0.170-10.1.0.180, 10.1.0.176/30]"));
    has(
        &ps,
        &field(1),
        12,
        Severity::Error,
        "overlaps 10.1.0.170-10.1.0.180",
    );
    let ps = problems(&with_pool("[10.1.0.175-10.1.0.170]"));
    has(&ps, &field(0), 12, Severity::Error, "backwards");
    let ps = problems(&with_pool("[]"));
    has(
        &ps,
        "spec.addons.loadBalancer.addresses",
        12,
        Severity::Error,
        "no addresses",
    );
}

const PROXMOX: &str = "  platform:
    type: proxmox
    node: pve
    templateId: 9000
    vmIdBase: 100
";

fn vmids(text: &str) -> Vec<(String, u32)> {
    let (c, w) = spec::load("t.yaml", text).unwrap();
    model::plan::resolve(&c, w.items)
        .nodes
        .iter()
        .map(|n| (n.name.to_string(), n.vmid.unwrap()))
        .collect()
}

#[test]
fn proxmox_vm_ids_follow_addresses_so_growing_a_role_shifts_nothing() {
    let before = vmids(&format!("{BASE}{PROXMOX}"));
    let after = vmids(&format!(
        "{}{PROXMOX}",
        with(
            "controlPlanes: 3\n    workers: 2",
            "controlPlanes: 3\n    workers: 3"
        )
    ));
    assert_eq!(before.len() + 1, after.len());
    // Every node of the old plan keeps its id; the new worker takes a new one.
    for node in &before {
        assert!(after.contains(node), "{node:?} changed: {after:?}");
    }
    assert!(after.contains(&("t-w-3".to_string(), 123)), "{after:?}");
    assert!(before.contains(&("t-cp-1".to_string(), 111)), "{before:?}");
}

#[test]
fn proxmox_vm_ids_must_miss_the_templates_and_fit() {
    let text = format!(
        "{BASE}{}",
        PROXMOX.replace("templateId: 9000", "templateId: 121")
    );
    let ps = problems(&text);
    // Worker 2 is at .22: 100 + 22 = 122 = templateId + 1.
    assert!(
        ps.iter()
            .any(|(f, _, s, m)| f == "spec.network.addressPlan.workers"
                && *s == Severity::Error
                && m.contains("worker 2 would get VM id 122, which is the node image template")),
        "{ps:#?}"
    );
    let text = format!(
        "{BASE}{}",
        PROXMOX.replace("vmIdBase: 100", "vmIdBase: 999999990")
    );
    let ps = problems(&text);
    assert!(
        ps.iter()
            .any(|(f, _, _, m)| f == "spec.platform.vmIdBase" && m.contains("999999990 + 22")),
        "{ps:#?}"
    );
}

#[test]
fn an_empty_key_is_located_under_a_name() {
    // `\r?` made an empty top-level key (CR is a line break; `?` an explicit key).
    let text = format!("\r?\n{BASE}");
    let ps = problems(&text);
    assert!(
        ps.iter().any(|(f, l, s, m)| f == "\"\""
            && *l >= 1
            && *s == Severity::Error
            && m.contains("unknown field `\"\"`")),
        "{ps:#?}"
    );
    assert!(ps.iter().all(|(f, ..)| !f.is_empty()), "{ps:#?}");
}

/// A life of adds and removes (issue 16): workers 2 → 5 → 1 → 3, control planes 3 → 5 → 3.
/// At every step each node that stays keeps its VM id, a node that comes back gets the id
/// it had, and ids never collide.
#[test]
fn proxmox_vm_ids_are_stable_across_add_and_remove_sequences() {
    let steps = [(3, 2), (3, 5), (3, 1), (5, 1), (5, 3), (3, 3)];
    let mut ever: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    let mut previous: Vec<(String, u32)> = Vec::new();
    for (cps, workers) in steps {
        let now = vmids(&format!(
            "{}{PROXMOX}",
            with(
                "controlPlanes: 3\n    workers: 2",
                &format!("controlPlanes: {cps}\n    workers: {workers}")
            )
        ));
        assert_eq!(now.len(), cps + workers, "{now:?}");
        let ids: std::collections::HashSet<u32> = now.iter().map(|(_, id)| *id).collect();
        assert_eq!(
            ids.len(),
            now.len(),
            "ids collide at {cps}+{workers}: {now:?}"
        );
        for (name, id) in &now {
            if let Some(was) = ever.insert(name.clone(), *id) {
                assert_eq!(was, *id, "{name} moved at {cps}+{workers}");
            }
            // No id that another name held before is handed to this one.
            let other = ever.iter().find(|(n, i)| **i == *id && *n != name);
            assert!(other.is_none(), "{name} took {other:?}'s id");
        }
        for kept in previous
            .iter()
            .filter(|(n, _)| now.iter().any(|(m, _)| m == n))
        {
            assert!(now.contains(kept), "{kept:?} changed at {cps}+{workers}");
        }
        previous = now;
    }
    assert_eq!(ever.get("t-w-5"), Some(&125), "{ever:?}");
    assert_eq!(ever.get("t-cp-5"), Some(&115), "{ever:?}");
}

#[test]
fn max_unavailable_defaults_to_one_and_zero_is_refused() {
    let (c, _) = spec::load("t.yaml", BASE).unwrap();
    assert_eq!(c.distribution.max_unavailable, 1);
    let two = BASE.replace(
        "version: v1.31.4",
        "version: v1.31.4\n    maxUnavailable: 2",
    );
    let (c, _) = spec::load("t.yaml", &two).unwrap();
    assert_eq!(c.distribution.max_unavailable, 2);
    let zero = BASE.replace(
        "version: v1.31.4",
        "version: v1.31.4\n    maxUnavailable: 0",
    );
    let p = problems(&zero);
    assert!(
        p.iter()
            .any(|(f, line, s, _)| f == "spec.distribution.maxUnavailable"
                && *line == 9
                && *s == Severity::Error),
        "{p:?}"
    );
}
