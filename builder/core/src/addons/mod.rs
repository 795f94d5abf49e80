//! The add-ons a spec asks for, resolved to pinned upstream manifests and the objects muster
//! derives from the spec. Pure: which manifest (URL at a release tag, its SHA-256), how
//! muster adapts it to the cluster (flannel's pod network and interface), and the MetalLB
//! pool. `source` fetches the pinned bytes (cache or `--artifacts DIR`), `bake` puts them
//! into the payload.
//!
//! Pins are the bytes of the file at the release tag (what `raw.githubusercontent.com`
//! serves for that tag), hashed from the upstream repositories' tags: flannel's
//! `Documentation/kube-flannel.yml` at tag v0.28.9 and MetalLB's
//! `config/manifests/metallb-native.yaml` at tag v0.15.3, both re-checked from git mirrors
//! of the upstream repositories (the same bytes are in `tests/fixtures/artifacts/addons/`).
//! Calico, cilium, ingress-nginx and longhorn have no pin yet: muster does not invent one.

pub mod bake;
pub mod source;

use model::Cluster;
use model::spec::{Cni, DistroKind, LoadBalancerProvider};
use std::fmt::Write as _;

/// An upstream manifest pinned by release and content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedManifest {
    pub name: &'static str,
    pub version: &'static str,
    pub url: &'static str,
    pub sha256: &'static str,
}

pub const FLANNEL: PinnedManifest = PinnedManifest {
    name: "flannel",
    version: "v0.28.9",
    url: "https://raw.githubusercontent.com/flannel-io/flannel/v0.28.9/Documentation/kube-flannel.yml",
    sha256: "e875824be2f552b45711dbda91af81b17eb961d00025d914d9fef18fad8f09c0",
};

pub const METALLB: PinnedManifest = PinnedManifest {
    name: "metallb",
    version: "v0.15.3",
    url: "https://raw.githubusercontent.com/metallb/metallb/v0.15.3/config/manifests/metallb-native.yaml",
    sha256: "84b4e102f2b65f5d69085f5816c29362b74641873d8ac3de996e5f86a8219176",
};

/// How an add-on reaches the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Install {
    /// An upstream manifest, adapted by `adapt` before it is applied.
    Manifest(PinnedManifest),
    /// Part of the distribution itself (k3s's own flannel).
    Bundled,
    /// Named in the spec, but muster has no pinned source for it yet: the user installs it.
    NoSource,
}

/// One add-on as the plan shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addon {
    /// The spec field that asked for it.
    pub field: &'static str,
    pub name: String,
    pub install: Install,
}

/// The add-ons of `cluster`, in the order they are applied (network first).
pub fn resolve(cluster: &Cluster) -> Vec<Addon> {
    let a = &cluster.addons;
    let mut out = Vec::new();
    let cni = match a.cni {
        Cni::Flannel => "flannel",
        Cni::Calico => "calico",
        Cni::Cilium => "cilium",
    };
    let install = match (a.cni, cluster.distribution.kind) {
        (Cni::Flannel, DistroKind::K3s) => Install::Bundled,
        (Cni::Flannel, DistroKind::Kubeadm) => Install::Manifest(FLANNEL),
        _ => Install::NoSource,
    };
    out.push(Addon {
        field: "spec.addons.cni",
        name: cni.into(),
        install,
    });
    if let Some(lb) = &a.load_balancer {
        match lb.provider {
            LoadBalancerProvider::Metallb => out.push(Addon {
                field: "spec.addons.loadBalancer",
                name: "metallb".into(),
                install: Install::Manifest(METALLB),
            }),
        }
    }
    for (field, name) in [
        ("spec.addons.csi", &a.csi),
        ("spec.addons.ingress", &a.ingress),
    ] {
        if let Some(n) = name {
            out.push(Addon {
                field,
                name: n.clone(),
                install: Install::NoSource,
            });
        }
    }
    out
}

/// The `muster plan` lines about add-ons: what each resolves to. `muster build` bakes the
/// pinned ones into the payload and the init node applies them; the others are the user's.
pub fn render(cluster: &Cluster) -> String {
    let mut out = String::from(
        "\nAdd-ons (`muster build` bakes the pinned ones into the payload, under /usr/lib/muster/addons; \
         the init node applies them once it has published the cluster):\n",
    );
    for a in resolve(cluster) {
        let how = match &a.install {
            Install::Manifest(m) => format!(
                "{} {} from {} (sha256 {})",
                m.name, m.version, m.url, m.sha256
            ),
            Install::Bundled => format!("{}: part of k3s itself", a.name),
            Install::NoSource => format!(
                "{}: no pinned source in muster yet; install it yourself",
                a.name
            ),
        };
        let _ = writeln!(out, "  {:<26} {how}", a.field);
    }
    if metallb_pool(cluster).is_some() {
        let _ = writeln!(
            out,
            "  {:<26} IPAddressPool `muster` + L2Advertisement in metallb-system",
            "spec.addons.loadBalancer"
        );
    }
    if cluster.distribution.kind == DistroKind::K3s && cluster.addons.cni != Cni::Flannel {
        let _ = writeln!(
            out,
            "  note: k3s's own flannel is turned off for it: pods have no network until it is installed"
        );
    }
    out
}

/// Why an upstream manifest could not be adapted: the pinned bytes changed shape.
#[derive(Debug, thiserror::Error)]
#[error(
    "{addon} {version}: expected `{anchor}` exactly once in the manifest, found it {found} times"
)]
pub struct AdaptError {
    pub addon: &'static str,
    pub version: &'static str,
    pub anchor: String,
    pub found: usize,
}

fn replace_once(
    m: &PinnedManifest,
    text: &str,
    anchor: &str,
    with: &str,
) -> Result<String, AdaptError> {
    let found = text.matches(anchor).count();
    if found != 1 {
        return Err(AdaptError {
            addon: m.name,
            version: m.version,
            anchor: anchor.to_string(),
            found,
        });
    }
    Ok(text.replacen(anchor, with, 1))
}

/// The manifest as this cluster applies it. Flannel gets the spec's pod network (its
/// default is kubeadm's default, 10.244.0.0/16) and the cluster interface (the first one
/// would be Vagrant's NAT NIC); the others apply as published.
pub fn adapt(cluster: &Cluster, m: &PinnedManifest, text: &str) -> Result<String, AdaptError> {
    if m.name != FLANNEL.name {
        return Ok(text.to_string());
    }
    let network = replace_once(
        m,
        text,
        r#""Network": "10.244.0.0/16","#,
        &format!(r#""Network": "{}","#, cluster.network.pod_subnet),
    )?;
    replace_once(
        m,
        &network,
        "        - --kube-subnet-mgr\n",
        &format!(
            "        - --kube-subnet-mgr\n        - --iface={}\n",
            cluster.network.interface
        ),
    )
}

/// The MetalLB objects for the spec's pool: one `IPAddressPool` and one `L2Advertisement`
/// for it, in `metallb-system`. `None` without a MetalLB pool.
pub fn metallb_pool(cluster: &Cluster) -> Option<String> {
    let lb = cluster.addons.load_balancer.as_ref()?;
    let mut out = String::from(
        "# Generated by muster from spec.addons.loadBalancer.\n\
         apiVersion: metallb.io/v1beta1\n\
         kind: IPAddressPool\n\
         metadata:\n  name: muster\n  namespace: metallb-system\n\
         spec:\n  addresses:\n",
    );
    for r in &lb.addresses {
        let _ = writeln!(out, "  - {r}");
    }
    out.push_str(
        "---\n\
         apiVersion: metallb.io/v1beta1\n\
         kind: L2Advertisement\n\
         metadata:\n  name: muster\n  namespace: metallb-system\n\
         spec:\n  ipAddressPools:\n  - muster\n",
    );
    Some(out)
}

/// The container images a manifest runs (`image:` fields), sorted, for pre-pulling.
pub fn images(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("image:"))
        .map(|i| i.trim().trim_matches('"').to_string())
        .filter(|i| !i.is_empty())
        .collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> Cluster {
        let text = std::fs::read_to_string(format!(
            "{}/../../examples/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        model::spec::load(name, &text).unwrap().0
    }

    /// The parts of flannel's published manifest muster adapts, in their published layout.
    const FLANNEL_EXCERPT: &str = r#"  net-conf.json: |
    {
      "Network": "10.244.0.0/16",
      "EnableNFTables": false,
      "Backend": {
        "Type": "vxlan"
      }
    }
---
      containers:
      - name: kube-flannel
        image: ghcr.io/flannel-io/flannel:v0.28.9
        command:
        - /opt/bin/flanneld
        args:
        - --ip-masq
        - --kube-subnet-mgr
        - --healthz-port=8081
"#;

    #[test]
    fn each_example_resolves_to_what_it_asks_for() {
        let names = |c: &Cluster| -> Vec<(String, Install)> {
            resolve(c)
                .into_iter()
                .map(|a| (a.name, a.install))
                .collect()
        };
        assert_eq!(
            names(&example("default.yaml")),
            [("flannel".into(), Install::Manifest(FLANNEL))]
        );
        assert_eq!(
            names(&example("seed-002-k3s-nginx-mariadb.yaml")),
            [
                ("flannel".into(), Install::Bundled),
                ("metallb".into(), Install::Manifest(METALLB))
            ]
        );
        let seed0 = names(&example("seed-000-kubeadm-kube-vip.yaml"));
        assert_eq!(
            seed0,
            [
                ("cilium".into(), Install::NoSource),
                ("longhorn".into(), Install::NoSource),
                ("nginx".into(), Install::NoSource)
            ]
        );
    }

    #[test]
    fn flannel_gets_the_pod_network_and_interface() {
        let mut c = example("default.yaml");
        c.network.pod_subnet = "10.50.0.0/16".parse().unwrap();
        let out = adapt(&c, &FLANNEL, FLANNEL_EXCERPT).unwrap();
        assert!(out.contains(r#""Network": "10.50.0.0/16","#), "{out}");
        assert!(
            out.contains("        - --kube-subnet-mgr\n        - --iface=eth0\n"),
            "{out}"
        );
        assert_eq!(images(&out), ["ghcr.io/flannel-io/flannel:v0.28.9"]);
        // A manifest that changed shape is refused, naming the anchor.
        let e = adapt(&c, &FLANNEL, "kind: DaemonSet\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("flannel v0.28.9: expected `\"Network\""),
            "{e}"
        );
        // Others pass through unchanged.
        assert_eq!(adapt(&c, &METALLB, "x: 1\n").unwrap(), "x: 1\n");
    }

    #[test]
    fn metallb_pool_lists_the_spec_addresses() {
        let c = example("seed-002-k3s-nginx-mariadb.yaml");
        let pool = metallb_pool(&c).unwrap();
        assert!(pool.contains("kind: IPAddressPool"), "{pool}");
        assert!(
            pool.contains("  addresses:\n  - 192.168.0.170-192.168.0.175\n"),
            "{pool}"
        );
        assert!(pool.contains("  ipAddressPools:\n  - muster\n"), "{pool}");
        for doc in pool.split("---\n") {
            let v: serde_yaml::Value = serde_yaml::from_str(doc).unwrap();
            assert_eq!(v["metadata"]["namespace"], "metallb-system");
        }
        assert!(metallb_pool(&example("default.yaml")).is_none());
    }
}
