//! YAML → `Cluster`: fields, types and defaults. Problems spanning several fields are
//! left to `validate`. A field that fails to parse is reported and replaced by its default
//! so that every other problem in the file is still found in the same run; `validate`
//! skips the checks that involve a field already reported bad.

use super::*;
use crate::yaml::{self, Ctx, Field, Map, Scalar};

pub(super) fn decode(ctx: &mut Ctx, text: &str) -> Option<Cluster> {
    let root = yaml::load(ctx, text);
    let mut top = ctx.parse_document(&root)?;
    check_header(ctx, &mut top);
    let name = top
        .require(ctx, "metadata", "add `metadata: {name: stage}`")
        .and_then(|f| f.map(ctx))
        .and_then(|mut m| {
            let name = m.require(
                ctx,
                "name",
                "give the cluster a short lowercase name, e.g. `stage`",
            );
            m.finish(ctx);
            name
        })
        .and_then(|f| f.parse::<NodeName>(ctx))
        .unwrap_or_else(|| NodeName::placeholder("invalid"));
    let spec = top.require(ctx, "spec", "the cluster description goes under `spec:`");
    top.finish(ctx);
    let mut spec = spec?.map(ctx)?;
    let cluster = decode_spec(ctx, &mut spec, name);
    spec.finish(ctx);
    Some(cluster)
}

fn check_header(ctx: &mut Ctx, top: &mut Map<'_>) {
    let hint_api = format!("write `apiVersion: {API_VERSION}`");
    match top
        .require(ctx, "apiVersion", &hint_api)
        .and_then(|f| f.parse::<String>(ctx))
    {
        Some(v) if v != API_VERSION => ctx.error(
            "apiVersion",
            format!("unsupported apiVersion `{v}`"),
            Some(hint_api),
        ),
        _ => {}
    }
    match top
        .require(ctx, "kind", "write `kind: Cluster`")
        .and_then(|f| f.parse::<String>(ctx))
    {
        Some(k) if k != KIND => ctx.error(
            "kind",
            format!("unsupported kind `{k}`"),
            Some("write `kind: Cluster`".into()),
        ),
        _ => {}
    }
}

/// Parses one of a fixed set of words.
fn choice<T: Copy>(ctx: &mut Ctx, field: Option<Field<'_>>, options: &[(&str, T)]) -> Option<T> {
    let field = field?;
    let word: String = field.parse(ctx)?;
    let found = options.iter().find(|(w, _)| *w == word).map(|(_, v)| *v);
    if found.is_none() {
        let all: Vec<&str> = options.iter().map(|(w, _)| *w).collect();
        ctx.error(
            &field.path,
            format!("`{word}` is not one of: {}", all.join(", ")),
            None,
        );
    }
    found
}

/// A section that may be absent: decoded from its mapping, or `None` when not written.
fn section<'n>(ctx: &mut Ctx, spec: &mut Map<'n>, key: &'static str) -> Option<Map<'n>> {
    spec.map(ctx, key)
}

/// A section that must be present; a missing one is reported with a hint.
fn required_section<'n>(
    ctx: &mut Ctx,
    spec: &mut Map<'n>,
    key: &'static str,
    hint: &str,
) -> Option<Map<'n>> {
    spec.require(ctx, key, hint).and_then(|f| f.map(ctx))
}

fn done(ctx: &mut Ctx, m: Option<Map<'_>>) {
    if let Some(m) = m {
        m.finish(ctx);
    }
}

fn get<'n>(ctx: &mut Ctx, m: &mut Option<Map<'n>>, key: &'static str) -> Option<Field<'n>> {
    m.as_mut().and_then(|m| m.get(ctx, key))
}

fn parse<T: Scalar>(ctx: &mut Ctx, m: &mut Option<Map<'_>>, key: &'static str) -> Option<T> {
    get(ctx, m, key).and_then(|f| f.parse(ctx))
}

fn require<'n>(
    ctx: &mut Ctx,
    m: &mut Option<Map<'n>>,
    key: &'static str,
    hint: &str,
) -> Option<Field<'n>> {
    m.as_mut().and_then(|m| m.require(ctx, key, hint))
}

fn list<T: Scalar>(ctx: &mut Ctx, m: &mut Option<Map<'_>>, key: &'static str) -> Vec<T> {
    m.as_mut().map(|m| m.list(ctx, key)).unwrap_or_default()
}

fn decode_spec(ctx: &mut Ctx, spec: &mut Map<'_>, name: NodeName) -> Cluster {
    let distribution = distribution(ctx, spec);
    let ha = ha(ctx, spec);
    Cluster {
        name,
        addons: addons(ctx, spec),
        topology: topology(ctx, spec, ha.provider),
        sizes: sizes(ctx, spec),
        network: network(ctx, spec, distribution.kind),
        datastore: datastore(ctx, spec),
        rendezvous: rendezvous(ctx, spec),
        platform: platform(ctx, spec),
        image: image(ctx, spec),
        host: host(ctx, spec),
        access: access(ctx, spec),
        distribution,
        ha,
    }
}

fn distribution(ctx: &mut Ctx, spec: &mut Map<'_>) -> Distribution {
    let mut m = required_section(
        ctx,
        spec,
        "distribution",
        "add `distribution: {kind: kubeadm, version: \"v1.31.4\"}`",
    );
    let kind_field = require(ctx, &mut m, "kind", "`kubeadm` or `k3s`");
    let kind = choice(
        ctx,
        kind_field,
        &[("kubeadm", DistroKind::Kubeadm), ("k3s", DistroKind::K3s)],
    )
    .unwrap_or(DistroKind::Kubeadm);
    let version = require(
        ctx,
        &mut m,
        "version",
        "e.g. \"v1.31.4\" for kubeadm or \"v1.31.6+k3s1\" for k3s",
    )
    .and_then(|f| f.parse::<KubeVersion>(ctx))
    .unwrap_or(KubeVersion {
        major: 1,
        minor: 31,
        patch: 0,
        k3s_revision: (kind == DistroKind::K3s).then_some(1),
    });
    let disable = list(ctx, &mut m, "disable");
    let control_plane_taints = list(ctx, &mut m, "controlPlaneTaints");
    let max_unavailable =
        parse(ctx, &mut m, "maxUnavailable").unwrap_or(super::DEFAULT_MAX_UNAVAILABLE);
    done(ctx, m);
    Distribution {
        kind,
        version,
        disable,
        control_plane_taints,
        max_unavailable,
    }
}

fn addons(ctx: &mut Ctx, spec: &mut Map<'_>) -> Addons {
    let mut m = section(ctx, spec, "addons");
    let cni_field = get(ctx, &mut m, "cni");
    let cni = choice(
        ctx,
        cni_field,
        &[
            ("cilium", Cni::Cilium),
            ("flannel", Cni::Flannel),
            ("calico", Cni::Calico),
        ],
    )
    .unwrap_or(Cni::Flannel);
    let csi = parse(ctx, &mut m, "csi");
    let ingress = parse(ctx, &mut m, "ingress");
    let load_balancer = m
        .as_mut()
        .and_then(|m| m.map(ctx, "loadBalancer"))
        .map(|lb| load_balancer_addon(ctx, lb));
    let manifests = get(ctx, &mut m, "manifests")
        .and_then(|f| f.seq(ctx))
        .unwrap_or_default()
        .iter()
        .filter_map(|f| addon_manifest(ctx, f))
        .collect();
    let kube_proxy_replacement: Option<bool> = parse(ctx, &mut m, "kubeProxyReplacement");
    done(ctx, m);
    Addons {
        cni,
        csi,
        ingress,
        load_balancer,
        manifests,
        kube_proxy_replacement: kube_proxy_replacement.unwrap_or(false),
    }
}

/// One `addons.manifests` entry: a name and exactly one source (`url` with its `sha256`,
/// or a local `file`).
fn addon_manifest(ctx: &mut Ctx, field: &Field<'_>) -> Option<AddonManifest> {
    let path = field.path.clone();
    let mut m = Some(field.map(ctx)?);
    let name: Option<String> = require(
        ctx,
        &mut m,
        "name",
        "a short name, e.g. `cert-manager`, or `cilium` to supply the CNI's manifest",
    )
    .and_then(|f| f.parse(ctx));
    let url: Option<HttpUrl> = parse(ctx, &mut m, "url");
    let file: Option<String> = parse(ctx, &mut m, "file");
    let sha256: Option<Sha256Hex> = parse(ctx, &mut m, "sha256");
    done(ctx, m);
    let name = name?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        ctx.error(
            &format!("{path}.name"),
            format!("`{name}` is not a name of lowercase letters, digits and `-`"),
            None,
        );
        return None;
    }
    match (&url, &file, &sha256) {
        (Some(_), None, Some(_)) | (None, Some(_), _) => {}
        (Some(_), None, None) => {
            ctx.error(
                &format!("{path}.sha256"),
                format!("add-on `{name}`: a `url` needs the `sha256` of the file it serves"),
                Some("pin it: `sha256sum` of the downloaded file".into()),
            );
            return None;
        }
        _ => {
            ctx.error(
                &path,
                format!("add-on `{name}`: give exactly one of `url` (with `sha256`) or `file`"),
                None,
            );
            return None;
        }
    }
    Some(AddonManifest {
        name,
        url,
        file,
        sha256,
    })
}

fn load_balancer_addon(ctx: &mut Ctx, lb: Map<'_>) -> LoadBalancerAddon {
    let mut m = Some(lb);
    let provider_field = require(ctx, &mut m, "provider", "write `provider: metallb`");
    let provider = choice(
        ctx,
        provider_field,
        &[("metallb", LoadBalancerProvider::Metallb)],
    )
    .unwrap_or(LoadBalancerProvider::Metallb);
    let addresses = require(
        ctx,
        &mut m,
        "addresses",
        "list free addresses of the node subnet, e.g. [192.168.0.170-192.168.0.175]",
    )
    .and_then(|f| f.parse_list(ctx))
    .unwrap_or_default();
    done(ctx, m);
    LoadBalancerAddon {
        provider,
        addresses,
    }
}

fn topology(ctx: &mut Ctx, spec: &mut Map<'_>, provider: VipProvider) -> Topology {
    let mut m = required_section(
        ctx,
        spec,
        "topology",
        "add `topology: {controlPlanes: 3, workers: 3}`",
    );
    let control_planes = require(
        ctx,
        &mut m,
        "controlPlanes",
        "3 for a highly available control plane",
    )
    .and_then(|f| f.parse(ctx))
    .unwrap_or(3);
    let workers = parse(ctx, &mut m, "workers").unwrap_or(0);
    // HAProxy comes as a pair with keepalived; nginx as one node, as the seeds have them.
    let default_lbs = match provider {
        VipProvider::Haproxy => 2,
        VipProvider::Nginx => 1,
        _ => 0,
    };
    let load_balancers = parse(ctx, &mut m, "loadBalancers").unwrap_or(default_lbs);
    done(ctx, m);
    Topology {
        control_planes,
        workers,
        load_balancers,
    }
}

pub const DEFAULT_SIZES: Sizes = Sizes {
    control_plane: Size {
        cpus: 2,
        memory_mib: 4096,
        disk_gib: 40,
    },
    worker: Size {
        cpus: 2,
        memory_mib: 8192,
        disk_gib: 40,
    },
    load_balancer: Size {
        cpus: 1,
        memory_mib: 2048,
        disk_gib: 20,
    },
};

fn size(ctx: &mut Ctx, sizes: &mut Option<Map<'_>>, key: &'static str, default: Size) -> Size {
    let mut m = sizes.as_mut().and_then(|s| s.map(ctx, key));
    let out = Size {
        cpus: parse(ctx, &mut m, "cpus").unwrap_or(default.cpus),
        memory_mib: parse(ctx, &mut m, "memoryMiB").unwrap_or(default.memory_mib),
        disk_gib: parse(ctx, &mut m, "diskGiB").unwrap_or(default.disk_gib),
    };
    done(ctx, m);
    out
}

fn sizes(ctx: &mut Ctx, spec: &mut Map<'_>) -> Sizes {
    let mut m = section(ctx, spec, "sizes");
    let out = Sizes {
        control_plane: size(ctx, &mut m, "controlPlane", DEFAULT_SIZES.control_plane),
        worker: size(ctx, &mut m, "worker", DEFAULT_SIZES.worker),
        load_balancer: size(ctx, &mut m, "loadBalancer", DEFAULT_SIZES.load_balancer),
    };
    done(ctx, m);
    out
}

fn net(text: &str) -> Ipv4Net {
    text.parse().unwrap_or_default()
}

fn network(ctx: &mut Ctx, spec: &mut Map<'_>, kind: DistroKind) -> Network {
    let mut m = required_section(
        ctx,
        spec,
        "network",
        "add `network: {subnet: 192.168.62.0/24}`",
    );
    let subnet = require(
        ctx,
        &mut m,
        "subnet",
        "the nodes' network in CIDR form, e.g. 192.168.62.0/24",
    )
    .and_then(|f| f.parse::<Ipv4Net>(ctx))
    .map(|n| n.trunc())
    .unwrap_or_else(|| net("10.0.0.0/24"));
    let first_host = ipnet::Ipv4AddrRange::new(subnet.network(), subnet.broadcast())
        .nth(1)
        .unwrap_or(subnet.network());
    let gateway = parse(ctx, &mut m, "gateway").unwrap_or(first_host);
    let dns = match get(ctx, &mut m, "dns") {
        Some(f) => f.parse_list(ctx).unwrap_or_default(),
        None => vec![gateway],
    };
    let interface =
        parse(ctx, &mut m, "interface").unwrap_or_else(|| InterfaceName::placeholder("eth0"));
    let (pods, services) = match kind {
        DistroKind::Kubeadm => ("10.244.0.0/16", "10.96.0.0/12"),
        DistroKind::K3s => ("10.42.0.0/16", "10.43.0.0/16"),
    };
    let pod_subnet = parse(ctx, &mut m, "podSubnet").unwrap_or_else(|| net(pods));
    let service_subnet = parse(ctx, &mut m, "serviceSubnet").unwrap_or_else(|| net(services));
    let address_plan = address_plan(ctx, &mut m);
    let naming = naming(ctx, &mut m);
    let nodes = get(ctx, &mut m, "nodes")
        .and_then(|f| f.seq(ctx))
        .unwrap_or_default()
        .iter()
        .filter_map(|f| node_override(ctx, f))
        .collect();
    done(ctx, m);
    Network {
        subnet,
        gateway,
        dns,
        interface,
        pod_subnet,
        service_subnet,
        address_plan,
        naming,
        nodes,
    }
}

fn address_plan(ctx: &mut Ctx, network: &mut Option<Map<'_>>) -> AddressPlan {
    let mut m = network.as_mut().and_then(|n| n.map(ctx, "addressPlan"));
    let out = AddressPlan {
        control_planes: parse(ctx, &mut m, "controlPlanes").unwrap_or(11),
        workers: parse(ctx, &mut m, "workers").unwrap_or(21),
        load_balancers: parse(ctx, &mut m, "loadBalancers").unwrap_or(6),
    };
    done(ctx, m);
    out
}

fn naming(ctx: &mut Ctx, network: &mut Option<Map<'_>>) -> Naming {
    let mut m = network.as_mut().and_then(|n| n.map(ctx, "naming"));
    let out = Naming {
        control_plane: parse(ctx, &mut m, "controlPlane")
            .unwrap_or_else(|| "{cluster}-cp-{n}".into()),
        worker: parse(ctx, &mut m, "worker").unwrap_or_else(|| "{cluster}-w-{n}".into()),
        load_balancer: parse(ctx, &mut m, "loadBalancer")
            .unwrap_or_else(|| "{cluster}-lb-{n}".into()),
    };
    done(ctx, m);
    out
}

fn node_override(ctx: &mut Ctx, field: &Field<'_>) -> Option<NodeOverride> {
    let mut m = Some(field.map(ctx)?);
    let role_field = require(
        ctx,
        &mut m,
        "role",
        "control-plane, worker or load-balancer",
    );
    let role = choice(
        ctx,
        role_field,
        &[
            ("control-plane", Role::ControlPlane),
            ("worker", Role::Worker),
            ("load-balancer", Role::LoadBalancer),
        ],
    );
    let index = require(
        ctx,
        &mut m,
        "index",
        "which node of that role, counting from 1",
    )
    .and_then(|f| f.parse(ctx));
    let name = parse(ctx, &mut m, "name");
    let ip = parse(ctx, &mut m, "ip");
    let mac = parse(ctx, &mut m, "mac");
    done(ctx, m);
    Some(NodeOverride {
        role: role?,
        index: index?,
        name,
        ip,
        mac,
    })
}

fn ha(ctx: &mut Ctx, spec: &mut Map<'_>) -> Ha {
    let mut m = required_section(
        ctx,
        spec,
        "ha",
        "add `ha: {provider: kube-vip, vip: 192.168.62.5}`",
    );
    let provider_field = require(
        ctx,
        &mut m,
        "provider",
        "kube-vip, haproxy, keepalived or nginx",
    );
    let provider = choice(
        ctx,
        provider_field,
        &[
            ("kube-vip", VipProvider::KubeVip),
            ("haproxy", VipProvider::Haproxy),
            ("keepalived", VipProvider::Keepalived),
            ("nginx", VipProvider::Nginx),
        ],
    )
    .unwrap_or(VipProvider::KubeVip);
    let vip = parse(ctx, &mut m, "vip");
    let api_port = parse(ctx, &mut m, "apiPort").unwrap_or(6443);
    let virtual_router_id = parse(ctx, &mut m, "virtualRouterId").unwrap_or(51);
    done(ctx, m);
    Ha {
        provider,
        vip,
        api_port,
        virtual_router_id,
    }
}

fn datastore(ctx: &mut Ctx, spec: &mut Map<'_>) -> Datastore {
    #[derive(Clone, Copy)]
    enum T {
        Stacked,
        Etcd,
        Sql,
    }
    let mut m = section(ctx, spec, "datastore");
    let type_field = get(ctx, &mut m, "type");
    let t = choice(
        ctx,
        type_field,
        &[
            ("stacked-etcd", T::Stacked),
            ("external-etcd", T::Etcd),
            ("external-sql", T::Sql),
        ],
    )
    .unwrap_or(T::Stacked);
    let endpoints: Vec<HttpUrl> = list(ctx, &mut m, "endpoints");
    let endpoint: Option<String> = parse(ctx, &mut m, "endpoint");
    let ca_file: Option<String> = parse(ctx, &mut m, "caFile");
    let cert_file: Option<String> = parse(ctx, &mut m, "certFile");
    let key_file: Option<String> = parse(ctx, &mut m, "keyFile");
    done(ctx, m);
    match t {
        T::Stacked => Datastore::StackedEtcd,
        T::Etcd => {
            if endpoints.is_empty() {
                ctx.error(
                    "spec.datastore.endpoints",
                    "external etcd needs its endpoints",
                    Some("list the etcd client URLs, e.g. [\"https://10.0.0.5:2379\"]".into()),
                );
            }
            Datastore::ExternalEtcd {
                endpoints,
                ca_file,
                cert_file,
                key_file,
            }
        }
        T::Sql => {
            if endpoint.is_none() {
                ctx.error(
                    "spec.datastore.endpoint",
                    "external SQL datastore needs its endpoint",
                    Some("e.g. \"mysql://k3s:PASSWORD@tcp(192.168.0.156:3306)/k3s\"".into()),
                );
            }
            Datastore::ExternalSql {
                endpoint: endpoint.unwrap_or_default(),
            }
        }
    }
}

fn rendezvous(ctx: &mut Ctx, spec: &mut Map<'_>) -> Rendezvous {
    let mut m = required_section(
        ctx,
        spec,
        "rendezvous",
        "add `rendezvous: {url: \"https://192.168.62.2:7443\"}`",
    );
    let url = require(
        ctx,
        &mut m,
        "url",
        "where the nodes meet, e.g. https://192.168.62.2:7443",
    )
    .and_then(|f| f.parse(ctx))
    .unwrap_or_else(|| HttpUrl::placeholder("https://rendezvous.invalid"));
    let worker_join_cap = parse(ctx, &mut m, "workerJoinCap").unwrap_or(3);
    done(ctx, m);
    Rendezvous {
        url,
        worker_join_cap,
    }
}

fn platform(ctx: &mut Ctx, spec: &mut Map<'_>) -> Platform {
    #[derive(Clone, Copy)]
    enum T {
        Qemu,
        Vagrant,
        Proxmox,
    }
    let mut m = section(ctx, spec, "platform");
    if m.is_none() {
        return Platform::Qemu;
    }
    let type_field = require(ctx, &mut m, "type", "qemu, vagrant or proxmox");
    let t = choice(
        ctx,
        type_field,
        &[
            ("qemu", T::Qemu),
            ("vagrant", T::Vagrant),
            ("proxmox", T::Proxmox),
        ],
    );
    let out = match t.unwrap_or(T::Qemu) {
        T::Qemu => Platform::Qemu,
        T::Vagrant => {
            let pf = get(ctx, &mut m, "provider");
            let provider = choice(
                ctx,
                pf,
                &[
                    ("libvirt", VagrantProvider::Libvirt),
                    ("virtualbox", VagrantProvider::Virtualbox),
                ],
            )
            .unwrap_or(VagrantProvider::Libvirt);
            let box_name =
                parse(ctx, &mut m, "box").unwrap_or_else(|| "debian/bookworm64".to_string());
            Platform::Vagrant { provider, box_name }
        }
        T::Proxmox => Platform::Proxmox {
            node: require(ctx, &mut m, "node", "the Proxmox node name, e.g. pve")
                .and_then(|f| f.parse(ctx))
                .unwrap_or_default(),
            storage: parse(ctx, &mut m, "storage").unwrap_or_else(|| "local-lvm".to_string()),
            bridge: parse(ctx, &mut m, "bridge").unwrap_or_else(|| "vmbr0".to_string()),
            template_id: parse(ctx, &mut m, "templateId").unwrap_or(9000),
            vm_id_base: parse(ctx, &mut m, "vmIdBase").unwrap_or(100),
        },
    };
    done(ctx, m);
    out
}

fn image(ctx: &mut Ctx, spec: &mut Map<'_>) -> BaseImage {
    let default = BaseImage {
        name: "debian-12-genericcloud-amd64".into(),
        url: HttpUrl::placeholder(
            "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2",
        ),
        sha256: None,
    };
    let mut m = section(ctx, spec, "image");
    if m.is_none() {
        return default;
    }
    let name = require(ctx, &mut m, "name", "e.g. debian-12-genericcloud-amd64")
        .and_then(|f| f.parse(ctx));
    let url = require(
        ctx,
        &mut m,
        "url",
        "where the base image is downloaded from",
    )
    .and_then(|f| f.parse(ctx));
    let sha256 = parse(ctx, &mut m, "sha256");
    done(ctx, m);
    BaseImage {
        name: name.unwrap_or(default.name),
        url: url.unwrap_or(default.url),
        sha256,
    }
}

fn host(ctx: &mut Ctx, spec: &mut Map<'_>) -> HostBudget {
    let mut m = section(ctx, spec, "host");
    let gib: Option<u64> = parse(ctx, &mut m, "memoryGiB");
    let mib: Option<u64> = parse(ctx, &mut m, "memoryMiB");
    if gib.is_some() && mib.is_some() {
        ctx.error(
            "spec.host.memoryMiB",
            "give the host memory once",
            Some("keep either memoryGiB or memoryMiB".into()),
        );
    }
    let overhead_mib = parse(ctx, &mut m, "overheadMiB").unwrap_or(3072);
    done(ctx, m);
    let gib_in_mib = gib.and_then(|g| {
        let mib = g.checked_mul(1024);
        if mib.is_none() {
            ctx.error(
                "spec.host.memoryGiB",
                format!("{g} GiB overflows when counted in MiB"),
                None,
            );
        }
        mib
    });
    HostBudget {
        memory_mib: mib.or(gib_in_mib),
        overhead_mib,
    }
}

fn access(ctx: &mut Ctx, spec: &mut Map<'_>) -> Access {
    let mut m = section(ctx, spec, "access");
    let user = parse(ctx, &mut m, "user").unwrap_or_else(|| "muster".to_string());
    let ssh_authorized_keys = list(ctx, &mut m, "sshAuthorizedKeys");
    done(ctx, m);
    Access {
        user,
        ssh_authorized_keys,
    }
}
