//! Checks that span several fields: addresses, the VIP, roles against providers,
//! datastores against distributions. Every problem is reported, none stops the rest.

use super::*;
use crate::plan::{Slot, assign, host_address};
use crate::quorum;
use crate::yaml::Ctx;
use std::collections::HashMap;

pub(super) fn validate(ctx: &mut Ctx, c: &Cluster) {
    if !ctx.is_bad("spec.distribution") {
        distribution(ctx, c);
    }
    // Counts first: every check below that walks the nodes relies on them being capped.
    counts(ctx, c);
    topology(ctx, c);
    sizes(ctx, c);
    // Address checks need a sound subnet, plan and overrides to say anything true.
    let addresses_sound = ![
        "spec.network.subnet",
        "spec.network.addressPlan",
        "spec.topology.controlPlanes",
        "spec.topology.workers",
        "spec.topology.loadBalancers",
    ]
    .iter()
    .any(|p| ctx.is_bad(p));
    if addresses_sound {
        blocks(ctx, c);
        overrides(ctx, c);
        let slots = assign(c);
        nodes(ctx, c, &slots);
        if !ctx.is_bad("spec.ha") {
            vip(ctx, c, &slots);
        }
        if !ctx.is_bad("spec.addons.loadBalancer") {
            load_balancer_pool(ctx, c, &slots);
        }
        subnets(ctx, c);
    }
    if !ctx.is_bad("spec.datastore") && !ctx.is_bad("spec.distribution") {
        datastore(ctx, c);
    }
    misc(ctx, c);
    if c.addons.kube_proxy_replacement && c.addons.cni != Cni::Cilium {
        ctx.error(
            "spec.addons.kubeProxyReplacement",
            format!(
                "only cilium replaces kube-proxy; this spec's CNI is {}",
                c.addons.cni.name()
            ),
            Some("set `cni: cilium`, or drop kubeProxyReplacement".into()),
        );
    }
    let counts_sound = !["controlPlanes", "workers", "loadBalancers"]
        .iter()
        .any(|k| ctx.is_bad(&format!("spec.topology.{k}")));
    if counts_sound && addresses_sound {
        vm_ids(ctx, c, &assign(c));
    }
    if counts_sound && let Some(vm_memory) = totals(ctx, c) {
        budget(ctx, c, vm_memory);
    }
}

/// Host numbers a subnet offers (neither the network nor the broadcast address).
fn hosts(net: &Ipv4Net) -> u64 {
    (u64::from(u32::from(net.broadcast())) - u64::from(u32::from(net.network()))).saturating_sub(1)
}

/// Each role's count within the absolute cap and what the subnet can hold, checked before
/// anything is planned per node.
fn counts(ctx: &mut Ctx, c: &Cluster) {
    let net = c.network.subnet;
    let room = hosts(&net);
    for role in Role::ALL {
        let n = c.count(role);
        let path = format!("spec.topology.{}", plural_key(role));
        let what = match role {
            Role::ControlPlane => "control planes",
            Role::Worker => "workers",
            Role::LoadBalancer => "load balancers",
        };
        if n > MAX_NODES_PER_ROLE {
            ctx.error(
                &path,
                format!(
                    "{n} {what} is more than muster plans: at most {MAX_NODES_PER_ROLE} of a role"
                ),
                None,
            );
        } else if room > 0 && !ctx.is_bad("spec.network.subnet") && u64::from(n) > room {
            // A subnet without any host is reported as such (`subnets`).
            ctx.error(
                &path,
                format!("{n} {what} do not fit in the subnet: {net} holds {room} hosts"),
                Some("use a larger subnet or fewer nodes".into()),
            );
        }
    }
}

fn distribution(ctx: &mut Ctx, c: &Cluster) {
    let d = &c.distribution;
    match (d.kind, d.version.k3s_revision) {
        (DistroKind::K3s, None) => ctx.error(
            "spec.distribution.version",
            format!(
                "k3s releases carry a +k3s revision; `{}` has none",
                d.version
            ),
            Some(format!("e.g. \"{}+k3s1\"", d.version)),
        ),
        (DistroKind::Kubeadm, Some(_)) => ctx.error(
            "spec.distribution.version",
            format!(
                "`{}` is a k3s release, but the distribution is kubeadm",
                d.version
            ),
            Some("drop the +k3s suffix, or set `kind: k3s`".into()),
        ),
        _ => {}
    }
    if d.kind == DistroKind::Kubeadm && !d.disable.is_empty() {
        ctx.error(
            "spec.distribution.disable",
            "`disable` turns off k3s packaged components; kubeadm has none",
            Some("remove it, or set `kind: k3s`".into()),
        );
    }
    for (i, t) in d.control_plane_taints.iter().enumerate() {
        if let Err(msg) = check_taint(t) {
            ctx.error(
                &format!("spec.distribution.controlPlaneTaints[{i}]"),
                msg,
                Some("e.g. CriticalAddonsOnly=true:NoExecute".into()),
            );
        }
    }
}

fn check_taint(t: &str) -> Result<(), String> {
    let (kv, effect) = t
        .rsplit_once(':')
        .ok_or_else(|| format!("taint `{t}` has no effect"))?;
    if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
        return Err(format!(
            "taint effect `{effect}` is not NoSchedule, PreferNoSchedule or NoExecute"
        ));
    }
    let key = kv.split('=').next().unwrap_or("");
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(format!("taint `{t}` has no key"));
    }
    Ok(())
}

fn topology(ctx: &mut Ctx, c: &Cluster) {
    let cp = c.topology.control_planes;
    let path = "spec.topology.controlPlanes";
    if ctx.is_bad(path) {
        // Already refused by `counts`.
    } else if cp == 0 {
        ctx.error(
            path,
            "a cluster needs at least one control plane",
            Some("3 for high availability".into()),
        );
    } else if cp > 9 {
        ctx.error(
            path,
            format!("{cp} control planes is more than etcd should have"),
            Some("use 3 or 5".into()),
        );
    } else if c.stacked_etcd() && cp.is_multiple_of(2) {
        even_members(ctx, path, cp);
    } else if cp == 1 {
        ctx.warn(
            path,
            "one control plane is not highly available",
            Some("use 3".into()),
        );
    }
    if c.distribution.max_unavailable == 0 {
        ctx.error(
            "spec.distribution.maxUnavailable",
            "an upgrade must be able to take out at least 1 worker at a time",
            Some("1 (the default) upgrades one worker at a time".into()),
        );
    }
    if c.rendezvous.worker_join_cap == 0 {
        ctx.error(
            "spec.rendezvous.workerJoinCap",
            "the worker join cap must be at least 1",
            None,
        );
    }
    let lbs = c.topology.load_balancers;
    let lb_path = "spec.topology.loadBalancers";
    let provider = c.ha.provider;
    if ctx.is_bad(lb_path) {
        // Already refused by `counts`.
    } else if provider.needs_load_balancers() && lbs == 0 {
        ctx.error(
            lb_path,
            format!(
                "the {} provider runs on load-balancer nodes, and there are none",
                provider.as_str()
            ),
            Some("set loadBalancers: 2 (a pair, keepalived floats the VIP)".into()),
        );
    } else if !provider.needs_load_balancers() && lbs > 0 {
        ctx.error(
            lb_path,
            format!(
                "{} runs on the control planes; {lbs} load-balancer node(s) would sit unused",
                provider.as_str()
            ),
            Some("set loadBalancers: 0, or use provider haproxy or nginx".into()),
        );
    } else if provider == VipProvider::Haproxy && lbs == 1 {
        ctx.warn(
            lb_path,
            "a single HAProxy node is a single point of failure",
            Some("use 2 so keepalived can fail over".into()),
        );
    }
}

/// The warning for an even etcd member count (stacked: the control planes; external: the
/// endpoints), with the quorum rows around it.
fn even_members(ctx: &mut Ctx, path: &str, n: u32) {
    let table: Vec<String> = [n - 1, n, n + 1]
        .iter()
        .map(|&m| {
            let r = quorum::row(m);
            format!(
                "{} members: quorum {}, can lose {}",
                r.members, r.quorum, r.can_lose
            )
        })
        .collect();
    ctx.warn(
        path,
        format!(
            "an even count adds cost without more fault tolerance ({})",
            table.join("; ")
        ),
        Some(format!("use {} or {}", n - 1, n + 1)),
    );
}

fn sizes(ctx: &mut Ctx, c: &Cluster) {
    for (role, key) in [
        (Role::ControlPlane, "controlPlane"),
        (Role::Worker, "worker"),
        (Role::LoadBalancer, "loadBalancer"),
    ] {
        if c.count(role) == 0 {
            continue;
        }
        let s = c.size(role);
        let base = format!("spec.sizes.{key}");
        if s.cpus == 0 {
            ctx.error(
                &format!("{base}.cpus"),
                "a VM needs at least one vCPU",
                None,
            );
        }
        if s.memory_mib < 512 {
            ctx.error(
                &format!("{base}.memoryMiB"),
                format!("{} MiB is too little to boot a node", s.memory_mib),
                Some("at least 512".into()),
            );
        }
        if s.disk_gib < 4 {
            ctx.error(
                &format!("{base}.diskGiB"),
                format!("{} GiB cannot hold the node image", s.disk_gib),
                Some("at least 10".into()),
            );
        }
        // kubeadm's own preflight refuses a control plane below 2 CPUs or 1700 MB.
        if role == Role::ControlPlane && c.distribution.kind == DistroKind::Kubeadm {
            if s.cpus == 1 {
                ctx.error(
                    &format!("{base}.cpus"),
                    "kubeadm's preflight needs 2 vCPUs on a control plane",
                    Some("cpus: 2".into()),
                );
            }
            if (512..1700).contains(&s.memory_mib) {
                ctx.error(
                    &format!("{base}.memoryMiB"),
                    "kubeadm's preflight needs 1700 MB on a control plane",
                    Some("memoryMiB: 2048 or more".into()),
                );
            }
        }
    }
}

/// Each role's address block must lie inside the subnet and clear of the others. In u64,
/// where a block starting near the top of the u32 range cannot wrap round to the bottom.
fn blocks(ctx: &mut Ctx, c: &Cluster) {
    let last_host = hosts(&c.network.subnet);
    let keys = [
        (Role::ControlPlane, "controlPlanes"),
        (Role::Worker, "workers"),
        (Role::LoadBalancer, "loadBalancers"),
    ];
    let ranges: Vec<(Role, &str, u64, u64)> = keys
        .iter()
        .filter(|(r, _)| c.count(*r) > 0)
        .map(|&(r, k)| {
            let start = u64::from(c.first_host(r));
            (r, k, start, start + u64::from(c.count(r)) - 1)
        })
        .collect();
    for &(role, key, start, end) in &ranges {
        let path = format!("spec.network.addressPlan.{key}");
        if start == 0 {
            ctx.error(
                &path,
                "host number 0 is the network address",
                Some("start at 1 or later".into()),
            );
        } else if end > last_host {
            ctx.error(
                &path,
                format!(
                    "address plan exhausted: {} {}s from host .{start} need up to .{end}, but {} ends at .{last_host}",
                    c.count(role),
                    role,
                    c.network.subnet
                ),
                Some("start the block lower, use a larger subnet, or pin addresses under network.nodes".into()),
            );
        }
        for &(other, okey, ostart, oend) in &ranges {
            if other > role && start <= oend && ostart <= end {
                ctx.error(
                    &path,
                    format!("address plan exhausted: the {role} block .{start}–.{end} runs into the {other} block .{ostart}–.{oend} ({okey})"),
                    Some("move one block so the ranges do not overlap".into()),
                );
            }
        }
    }
}

fn overrides(ctx: &mut Ctx, c: &Cluster) {
    let mut seen: HashMap<(Role, u32), usize> = HashMap::new();
    for (i, o) in c.network.nodes.iter().enumerate() {
        let path = format!("spec.network.nodes[{i}]");
        if o.index == 0 || o.index > c.count(o.role) {
            ctx.error(
                &format!("{path}.index"),
                format!(
                    "there is no {} number {} (the topology has {})",
                    o.role,
                    o.index,
                    c.count(o.role)
                ),
                Some("indexes count from 1".into()),
            );
        }
        if let Some(prev) = seen.insert((o.role, o.index), i) {
            ctx.error(
                &path,
                format!(
                    "{} {} is already overridden at network.nodes[{prev}]",
                    o.role, o.index
                ),
                Some("merge the two entries".into()),
            );
        }
        if let Some(ip) = o.ip
            && !c.network.subnet.contains(&ip)
        {
            ctx.error(
                &format!("{path}.ip"),
                format!("{ip} is outside the subnet {}", c.network.subnet),
                None,
            );
        }
    }
}

/// Path of the field that gave a node its name, address or MAC, for locating duplicates.
fn slot_path(c: &Cluster, s: &Slot, field: &str) -> String {
    match s.override_at {
        Some(i) if override_has(&c.network.nodes[i], field) => {
            format!("spec.network.nodes[{i}].{field}")
        }
        _ => match field {
            "ip" => format!("spec.network.addressPlan.{}", plural_key(s.role)),
            "name" => format!("spec.network.naming.{}", singular_key(s.role)),
            _ => format!("spec.topology.{}", plural_key(s.role)),
        },
    }
}

/// For a clash between two nodes, the field the user pinned by hand if either did.
fn pinned_path(c: &Cluster, s: &Slot, prev: &Slot, field: &str) -> String {
    let pinned = |x: &Slot| {
        x.override_at
            .is_some_and(|i| override_has(&c.network.nodes[i], field))
    };
    if !pinned(s) && pinned(prev) {
        slot_path(c, prev, field)
    } else {
        slot_path(c, s, field)
    }
}

fn override_has(o: &NodeOverride, field: &str) -> bool {
    match field {
        "name" => o.name.is_some(),
        "ip" => o.ip.is_some(),
        _ => o.mac.is_some(),
    }
}

fn plural_key(r: Role) -> &'static str {
    match r {
        Role::ControlPlane => "controlPlanes",
        Role::Worker => "workers",
        Role::LoadBalancer => "loadBalancers",
    }
}

fn singular_key(r: Role) -> &'static str {
    match r {
        Role::ControlPlane => "controlPlane",
        Role::Worker => "worker",
        Role::LoadBalancer => "loadBalancer",
    }
}

fn nodes(ctx: &mut Ctx, c: &Cluster, slots: &[Slot]) {
    let mut names: HashMap<String, &Slot> = HashMap::new();
    let mut ips: HashMap<Ipv4Addr, &Slot> = HashMap::new();
    let mut macs: HashMap<Mac, &Slot> = HashMap::new();
    let mut bad_template_reported = Vec::new();
    for s in slots {
        match &s.name {
            Err(msg) => {
                let path = slot_path(c, s, "name");
                if !bad_template_reported.contains(&path) {
                    ctx.error(
                        &path,
                        format!("node name {msg}"),
                        Some("templates may use {cluster}, {n} and {nn}".into()),
                    );
                    bad_template_reported.push(path);
                }
            }
            Ok(name) => {
                if let Some(prev) = names.insert(name.to_string(), s) {
                    ctx.error(
                        &slot_path(c, s, "name"),
                        format!(
                            "duplicate node name `{name}` ({} {} and {} {})",
                            prev.role, prev.index, s.role, s.index
                        ),
                        Some("include {n} or {nn} in the name template, or rename one node".into()),
                    );
                }
            }
        }
        let ip_path = slot_path(c, s, "ip");
        if s.ip.is_none() && !ctx.is_bad(&ip_path) {
            // `blocks` reports a block past the subnet; this catches anything it did not.
            ctx.error(
                &ip_path,
                format!(
                    "{} {} has no address in {}",
                    s.role, s.index, c.network.subnet
                ),
                None,
            );
        }
        if let Some(ip) = s.ip {
            if ip == c.network.gateway {
                ctx.error(
                    &slot_path(c, s, "ip"),
                    format!("{} {} would take the gateway address {ip}", s.role, s.index),
                    None,
                );
            }
            if let Some(prev) = ips.insert(ip, s) {
                ctx.error(
                    &pinned_path(c, s, prev, "ip"),
                    format!(
                        "duplicate address {ip} ({} {} and {} {})",
                        prev.role, prev.index, s.role, s.index
                    ),
                    None,
                );
            }
        }
        if let Some(prev) = macs.insert(s.mac, s) {
            ctx.error(
                &pinned_path(c, s, prev, "mac"),
                format!(
                    "duplicate MAC {} ({} {} and {} {})",
                    s.mac, prev.role, prev.index, s.role, s.index
                ),
                None,
            );
        }
    }
}

fn vip(ctx: &mut Ctx, c: &Cluster, slots: &[Slot]) {
    let path = "spec.ha.vip";
    let Some(vip) = c.ha.vip else {
        let single_nginx = c.ha.provider == VipProvider::Nginx && c.topology.load_balancers == 1;
        if single_nginx {
            ctx.warn(
                "spec.ha",
                "no VIP: the single nginx node's own address is the API endpoint, a single point of failure",
                Some("add a second load balancer and a vip; keepalived then floats it".into()),
            );
        } else {
            ctx.error(
                path,
                format!("the {} provider needs a virtual IP", c.ha.provider.as_str()),
                Some(format!("pick a free address in {}", c.network.subnet)),
            );
        }
        return;
    };
    let net = c.network.subnet;
    if !net.contains(&vip) {
        ctx.error(
            path,
            format!("VIP {vip} is outside the subnet {net}"),
            Some(format!("pick a free address in {net}")),
        );
    } else if vip == net.network() || vip == net.broadcast() {
        ctx.error(
            path,
            format!("VIP {vip} is the subnet's network or broadcast address"),
            None,
        );
    }
    if vip == c.network.gateway {
        ctx.error(path, format!("VIP {vip} is the gateway address"), None);
    }
    if let Some(s) = slots.iter().find(|s| s.ip == Some(vip)) {
        ctx.error(
            path,
            format!("VIP {vip} is also the address of {} {}", s.role, s.index),
            Some("the VIP must be an address no node owns".into()),
        );
    }
    if c.ha.virtual_router_id == 0 {
        ctx.error(
            "spec.ha.virtualRouterId",
            "VRRP router ids run from 1 to 255",
            None,
        );
    }
}

/// The LoadBalancer pool hands its addresses to Services: each must be free on the node
/// subnet (MetalLB's layer-2 mode answers ARP for it there), so none may be a node's, the
/// VIP, the gateway, or the subnet's network or broadcast address, and ranges must not
/// overlap (one address, two pools' worth of claims).
fn load_balancer_pool(ctx: &mut Ctx, c: &Cluster, slots: &[Slot]) {
    let Some(lb) = &c.addons.load_balancer else {
        return;
    };
    let base = "spec.addons.loadBalancer.addresses";
    if lb.addresses.is_empty() {
        if !ctx.is_bad(base) {
            ctx.error(
                base,
                "the pool has no addresses",
                Some("e.g. [192.168.0.170-192.168.0.175]".into()),
            );
        }
        return;
    }
    let net = c.network.subnet;
    for (i, r) in lb.addresses.iter().enumerate() {
        let path = format!("{base}[{i}]");
        if !r.within(&net) {
            ctx.error(
                &path,
                format!("{r} is not inside the node subnet {net}"),
                Some("MetalLB's layer-2 mode announces addresses on the nodes' own subnet".into()),
            );
            continue;
        }
        let mut taken: Vec<(Ipv4Addr, String)> = vec![
            (net.network(), "the subnet's network address".into()),
            (net.broadcast(), "the subnet's broadcast address".into()),
            (c.network.gateway, "the gateway".into()),
        ];
        if let Some(vip) = c.ha.vip {
            taken.push((vip, "the API VIP".into()));
        }
        taken.extend(
            slots
                .iter()
                .filter_map(|s| s.ip.map(|ip| (ip, format!("{} {}", s.role, s.index)))),
        );
        if let Some((ip, owner)) = taken.iter().find(|(ip, _)| r.contains(*ip)) {
            ctx.error(
                &path,
                format!("{r} includes {ip}, which is {owner}"),
                Some("give the pool addresses no node, VIP or gateway uses".into()),
            );
        }
        if let Some((j, other)) = lb.addresses[..i]
            .iter()
            .enumerate()
            .find(|(_, o)| o.overlaps(r))
        {
            ctx.error(
                &path,
                format!("{r} overlaps {other} (addresses[{j}])"),
                None,
            );
        }
    }
}

fn subnets(ctx: &mut Ctx, c: &Cluster) {
    let n = &c.network;
    if !n.subnet.contains(&n.gateway) {
        ctx.error(
            "spec.network.gateway",
            format!("gateway {} is outside the subnet {}", n.gateway, n.subnet),
            None,
        );
    }
    let overlaps = |a: &Ipv4Net, b: &Ipv4Net| a.contains(&b.network()) || b.contains(&a.network());
    for (key, net) in [
        ("podSubnet", n.pod_subnet),
        ("serviceSubnet", n.service_subnet),
    ] {
        if overlaps(&net, &n.subnet) {
            ctx.error(
                &format!("spec.network.{key}"),
                format!("{net} overlaps the node subnet {}", n.subnet),
                None,
            );
        }
    }
    if overlaps(&n.pod_subnet, &n.service_subnet) {
        ctx.error(
            "spec.network.serviceSubnet",
            format!(
                "{} overlaps the pod subnet {}",
                n.service_subnet, n.pod_subnet
            ),
            None,
        );
    }
    if host_address(c, 1).is_none() {
        ctx.error(
            "spec.network.subnet",
            format!("{} has no room for hosts", n.subnet),
            None,
        );
    }
}

fn datastore(ctx: &mut Ctx, c: &Cluster) {
    match (&c.datastore, c.distribution.kind) {
        (Datastore::ExternalEtcd { .. }, DistroKind::K3s) => ctx.error(
            "spec.datastore.type",
            "external etcd is wired for kubeadm here; k3s takes an external datastore as external-sql",
            None,
        ),
        (Datastore::ExternalEtcd { .. }, DistroKind::Kubeadm) => external_etcd(ctx, c),
        (Datastore::ExternalSql { .. }, DistroKind::Kubeadm) => ctx.error(
            "spec.datastore.type",
            "kubeadm cannot use an SQL datastore",
            Some("use stacked-etcd or external-etcd, or set distribution kind: k3s".into()),
        ),
        (Datastore::ExternalSql { endpoint }, DistroKind::K3s) => {
            match crate::dsn::Dsn::parse(endpoint) {
                Err(e) => ctx.error(
                    "spec.datastore.endpoint",
                    e.to_string(),
                    Some("e.g. \"mysql://k3s:PASSWORD@tcp(192.168.0.156:3306)/k3s\"".into()),
                ),
                Ok(d) if d.password.as_deref() == Some(crate::dsn::PLACEHOLDER_PASSWORD) => ctx
                    .warn(
                        "spec.datastore.endpoint",
                        "the datastore password is still the placeholder CHANGE-ME",
                        Some("set the database user's real password".into()),
                    ),
                Ok(_) => {}
            }
        }
        _ => {}
    }
}

/// External etcd: https endpoints need the CA and the API server's client cert and key
/// (each missing one is its own error); http endpoints work without TLS, with a warning.
fn external_etcd(ctx: &mut Ctx, c: &Cluster) {
    let Datastore::ExternalEtcd {
        endpoints,
        ca_file,
        cert_file,
        key_file,
    } = &c.datastore
    else {
        return;
    };
    if endpoints.iter().any(|e| e.is_https()) {
        let files = [
            ("caFile", ca_file, "the etcd cluster's CA certificate (PEM)"),
            (
                "certFile",
                cert_file,
                "the API server's etcd client certificate (PEM), signed by that CA",
            ),
            (
                "keyFile",
                key_file,
                "the private key of that client certificate (PEM)",
            ),
        ];
        for (field, value, what) in files {
            if value.is_none() {
                ctx.error(
                    &format!("spec.datastore.{field}"),
                    format!("https etcd endpoints need {field}: {what}"),
                    Some(format!(
                        "add `{field}: pki/{}` (a path relative to the spec file)",
                        match field {
                            "caFile" => "etcd-ca.crt",
                            "certFile" => "apiserver-etcd-client.crt",
                            _ => "apiserver-etcd-client.key",
                        }
                    )),
                );
            }
        }
    }
    if let Some(plain) = endpoints.iter().find(|e| !e.is_https()) {
        ctx.warn(
            "spec.datastore.endpoints",
            format!("{plain} is plain http: no TLS to etcd, anyone on the network can read and write the cluster's state"),
            Some("serve etcd over https with client-certificate auth".into()),
        );
    }
    let n = u32::try_from(endpoints.len()).unwrap_or(u32::MAX);
    if n > 1 && n.is_multiple_of(2) {
        even_members(ctx, "spec.datastore.endpoints", n);
    }
}

fn misc(ctx: &mut Ctx, c: &Cluster) {
    if !c.rendezvous.url.is_https() {
        ctx.warn(
            "spec.rendezvous.url",
            "plain HTTP: the rendezvous then needs --insecure-http and requests are only signed, not encrypted",
            Some("use https://".into()),
        );
    }
    if c.ha.api_port == 0 {
        ctx.error(
            "spec.ha.apiPort",
            "port 0 is not a port",
            Some("6443".into()),
        );
    }
    if let Platform::Proxmox { vm_id_base, .. } = c.platform
        && vm_id_base < 100
    {
        ctx.error(
            "spec.platform.vmIdBase",
            "Proxmox VM ids start at 100",
            None,
        );
    }
    if c.access.user.is_empty() || c.access.user == "root" {
        ctx.error(
            "spec.access.user",
            "the login user must be a named, non-root user",
            Some("e.g. muster".into()),
        );
    }
}

/// Proxmox VM ids are the base plus each node's host number (`plan::vm_id`): every one must
/// still be a VM id, and none may be one of the two templates' ids.
fn vm_ids(ctx: &mut Ctx, c: &Cluster, slots: &[Slot]) {
    let Platform::Proxmox {
        vm_id_base,
        template_id,
        ..
    } = c.platform
    else {
        return;
    };
    let base = u32::from(c.network.subnet.network());
    let Some(top) = slots
        .iter()
        .filter_map(|s| s.ip)
        .map(|ip| u64::from(u32::from(ip).saturating_sub(base)))
        .max()
    else {
        return;
    };
    let last = u64::from(vm_id_base) + top;
    if last > u64::from(MAX_PROXMOX_VMID) {
        ctx.error(
            "spec.platform.vmIdBase",
            format!(
                "VM ids are vmIdBase + each node's host number: {vm_id_base} + {top} = {last} runs past Proxmox's largest VM id {MAX_PROXMOX_VMID}"
            ),
            Some("start lower, e.g. 100".into()),
        );
        return;
    }
    let templates = [
        (template_id, "the base template (templateId)"),
        (
            template_id.saturating_add(1),
            "the node image template (templateId + 1)",
        ),
    ];
    for s in slots {
        let Some(id) = s.ip.and_then(|ip| crate::plan::vm_id(c, ip)) else {
            continue;
        };
        if let Some((_, what)) = templates.iter().find(|(t, _)| *t == id) {
            ctx.error(
                &slot_path(c, s, "ip"),
                format!(
                    "{} {} would get VM id {id}, which is {what}",
                    s.role, s.index
                ),
                Some("move templateId or vmIdBase so the node ids (vmIdBase + host number) stay clear of it".into()),
            );
        }
    }
}

/// The plan's totals of vCPUs, memory and disk must fit their types; each overflow is an
/// error at the size that tips it over. Returns the VMs' memory when it fits with the
/// host overhead.
fn totals(ctx: &mut Ctx, c: &Cluster) -> Option<u64> {
    let (mut cpus, mut memory, mut disk) = (Some(0u32), Some(0u64), Some(0u64));
    for role in Role::ALL {
        let n = c.count(role);
        let s = c.size(role);
        let base = format!("spec.sizes.{}", singular_key(role));
        let sum_cpus = cpus.and_then(|t| t.checked_add(s.cpus.checked_mul(n)?));
        let sum_memory = memory.and_then(|t| t.checked_add(s.memory_mib.checked_mul(n.into())?));
        let sum_disk = disk.and_then(|t| t.checked_add(s.disk_gib.checked_mul(n.into())?));
        for (was, now, key, unit) in [
            (cpus.is_some(), sum_cpus.is_some(), "cpus", "vCPUs"),
            (
                memory.is_some(),
                sum_memory.is_some(),
                "memoryMiB",
                "MiB of memory",
            ),
            (disk.is_some(), sum_disk.is_some(), "diskGiB", "GiB of disk"),
        ] {
            if was && !now {
                ctx.error(
                    &format!("{base}.{key}"),
                    format!(
                        "the plan's total {unit} overflows with {n} {role} node(s) of this size"
                    ),
                    None,
                );
            }
        }
        (cpus, memory, disk) = (sum_cpus, sum_memory, sum_disk);
    }
    let vms = memory?;
    if vms.checked_add(c.host.overhead_mib).is_none() {
        ctx.error(
            "spec.host.overheadMiB",
            format!(
                "the VMs' {vms} MiB plus a host overhead of {} MiB overflows",
                c.host.overhead_mib
            ),
            None,
        );
        return None;
    }
    Some(vms)
}

fn budget(ctx: &mut Ctx, c: &Cluster, vms: u64) {
    let Some(host) = c.host.memory_mib else {
        return;
    };
    // `totals` has checked that this sum fits.
    let needed = vms.saturating_add(c.host.overhead_mib);
    if needed > host {
        ctx.warn(
            "spec.host",
            format!(
                "the plan needs {} MiB (VMs {vms} + host {}) but the host has {host} MiB",
                needed, c.host.overhead_mib
            ),
            Some("shrink the sizes or the node counts".into()),
        );
    }
}
