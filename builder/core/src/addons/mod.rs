//! The add-ons a spec asks for, resolved to pinned upstream manifests and the objects muster
//! derives from the spec. Pure: which manifest (URL at a release tag, its SHA-256), how
//! muster adapts it to the cluster (pod network and interface for flannel and calico, a
//! LoadBalancer Service for ingress-nginx when MetalLB hands out addresses), and the MetalLB
//! pool. `source` fetches the pinned bytes (cache or `--artifacts DIR`), `bake` puts them
//! into the payload.
//!
//! Pins are the bytes of the file at the release tag (what `raw.githubusercontent.com`
//! serves for that tag, which is the URL each project's install docs give), hashed from
//! git mirrors of the upstream repositories (`git show TAG:PATH`); the same bytes are in
//! `tests/fixtures/artifacts/addons/`.
//!
//! Cilium publishes no kubectl manifest, only a Helm chart: muster pins the packaged chart
//! and `muster build` renders it with `helm template` and values from the spec ([`chart`]).
//! A spec may bring its own rendered manifest (or another chart) instead, as an
//! `addons.manifests` entry named `cilium`. The user's own add-ons (`addons.manifests`) are
//! applied after the built-in ones, in spec order; a user's `.tgz` is a chart, rendered the
//! same way.

pub mod bake;
pub mod chart;
pub mod source;

use model::Cluster;
use model::spec::{AddonManifest, Cni, DistroKind, LoadBalancerProvider};
use std::borrow::Cow;
use std::fmt::Write as _;

/// An upstream manifest pinned by release and content (built-in pins are constants; a
/// user's `url` + `sha256` is one too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedManifest {
    pub name: Cow<'static, str>,
    pub version: Cow<'static, str>,
    pub url: Cow<'static, str>,
    pub sha256: Cow<'static, str>,
}

const fn pin(
    name: &'static str,
    version: &'static str,
    url: &'static str,
    sha256: &'static str,
) -> PinnedManifest {
    PinnedManifest {
        name: Cow::Borrowed(name),
        version: Cow::Borrowed(version),
        url: Cow::Borrowed(url),
        sha256: Cow::Borrowed(sha256),
    }
}

pub const FLANNEL: PinnedManifest = pin(
    "flannel",
    "v0.28.9",
    "https://raw.githubusercontent.com/flannel-io/flannel/v0.28.9/Documentation/kube-flannel.yml",
    "e875824be2f552b45711dbda91af81b17eb961d00025d914d9fef18fad8f09c0",
);

pub const METALLB: PinnedManifest = pin(
    "metallb",
    "v0.15.3",
    "https://raw.githubusercontent.com/metallb/metallb/v0.15.3/config/manifests/metallb-native.yaml",
    "84b4e102f2b65f5d69085f5816c29362b74641873d8ac3de996e5f86a8219176",
);

/// Calico's operator-less manifest (`manifests/calico.yaml`), IPIP, as the Calico docs'
/// "manifest" install has it.
pub const CALICO: PinnedManifest = pin(
    "calico",
    "v3.32.1",
    "https://raw.githubusercontent.com/projectcalico/calico/v3.32.1/manifests/calico.yaml",
    "a1df919d9721cf667accdc3e72848911b0cb25cfab7d2478ad0c996302c95744",
);

/// ingress-nginx's bare-metal manifest (a NodePort Service; a LoadBalancer one when MetalLB
/// is in the spec).
pub const INGRESS_NGINX: PinnedManifest = pin(
    "ingress-nginx",
    "controller-v1.15.1",
    "https://raw.githubusercontent.com/kubernetes/ingress-nginx/controller-v1.15.1/deploy/static/provider/baremetal/deploy.yaml",
    "16b9b62df45b8ed8f1ecaed0341d583b3360e4b63c41fe00413f6a1fa2f95bec",
);

pub const LONGHORN: PinnedManifest = pin(
    "longhorn",
    "v1.12.1",
    "https://raw.githubusercontent.com/longhorn/longhorn/v1.12.1/deploy/longhorn.yaml",
    "41648963af867ac1d0c85755fb53cf61cacd57c9bb22e1942e3fb0439eeb04fd",
);

/// The built-in pin for a `csi` / `ingress` value, if muster has one.
fn builtin(field: &str, name: &str) -> Option<PinnedManifest> {
    match (field, name) {
        ("spec.addons.csi", "longhorn") => Some(LONGHORN),
        ("spec.addons.ingress", "nginx" | "ingress-nginx") => Some(INGRESS_NGINX),
        _ => None,
    }
}

/// How an add-on reaches the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Install {
    /// An upstream manifest, adapted by `adapt` before it is applied.
    Manifest(PinnedManifest),
    /// Part of the distribution itself (k3s's own flannel).
    Bundled,
    /// The user's manifest (`addons.manifests`).
    User(UserSource),
    /// Named in the spec, but muster pins no manifest for it and the spec brings none:
    /// `muster build` refuses the spec.
    NoSource,
}

/// Where a user's manifest comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserSource {
    /// `url` + `sha256`: fetched and cached like a built-in pin.
    Url(PinnedManifest),
    /// A local `file`, relative to the spec file; its `sha256` checked when given.
    File {
        name: String,
        path: String,
        sha256: Option<String>,
    },
}

impl UserSource {
    fn of(m: &AddonManifest) -> UserSource {
        match (&m.url, &m.sha256) {
            (Some(url), Some(sha)) => UserSource::Url(PinnedManifest {
                name: Cow::Owned(m.name.clone()),
                // Names the offline artifact (`NAME-sha256-XXXXXXXXXXXX.yaml`).
                version: Cow::Owned(format!("sha256-{}", &sha.as_str()[..12])),
                url: Cow::Owned(url.to_string()),
                sha256: Cow::Owned(sha.to_string()),
            }),
            // decode admits an entry only with a url + sha256 or a file.
            _ => UserSource::File {
                name: m.name.clone(),
                path: m.file.clone().unwrap_or_default(),
                sha256: m.sha256.as_ref().map(|s| s.to_string()),
            },
        }
    }
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
    let cni = a.cni.name();
    let user = |name: &str| {
        a.manifests
            .iter()
            .find(|m| m.name == name)
            .map(|m| Install::User(UserSource::of(m)))
    };
    let install = user(cni).unwrap_or(match (a.cni, cluster.distribution.kind) {
        (Cni::Flannel, DistroKind::K3s) => Install::Bundled,
        (Cni::Flannel, DistroKind::Kubeadm) => Install::Manifest(FLANNEL),
        (Cni::Calico, _) => Install::Manifest(CALICO),
        (Cni::Cilium, _) => Install::Manifest(chart::CILIUM_CHART),
    });
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
            let install = user(n)
                .or_else(|| builtin(field, n).map(Install::Manifest))
                .unwrap_or(Install::NoSource);
            out.push(Addon {
                field,
                name: n.clone(),
                install,
            });
        }
    }
    let named: Vec<&str> = out.iter().map(|x| x.name.as_str()).collect();
    let extra: Vec<Addon> = a
        .manifests
        .iter()
        .filter(|m| !named.contains(&m.name.as_str()))
        .map(|m| Addon {
            field: "spec.addons.manifests",
            name: m.name.clone(),
            install: Install::User(UserSource::of(m)),
        })
        .collect();
    out.extend(extra);
    out
}

/// What the user is told for an add-on muster pins nothing for.
pub fn no_source_hint(field: &str, name: &str) -> String {
    format!(
        "muster pins no manifest for `{name}` ({field}); add `manifests: [{{name: {name}, file: ...}}]` \
         (or `url` + `sha256`) under spec.addons"
    )
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
            Install::Manifest(m) if chart::is_chart(&m.url) => format!(
                "{} {}: chart {} (sha256 {}), rendered by `helm template` at build time",
                m.name, m.version, m.url, m.sha256
            ),
            Install::Manifest(m) => format!(
                "{} {} from {} (sha256 {})",
                m.name, m.version, m.url, m.sha256
            ),
            Install::Bundled => format!("{}: part of k3s itself", a.name),
            Install::User(UserSource::Url(m)) => {
                format!("{} from {} (sha256 {})", m.name, m.url, m.sha256)
            }
            Install::User(UserSource::File { name, path, .. }) => {
                format!("{name} from the file {path}")
            }
            Install::NoSource => format!(
                "{}: NO SOURCE, `muster build` refuses this spec: {}",
                a.name,
                no_source_hint(a.field, &a.name)
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
            "  note: k3s's own flannel and network policy controller are turned off for it"
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
    pub addon: String,
    pub version: String,
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
            addon: m.name.to_string(),
            version: m.version.to_string(),
            anchor: anchor.to_string(),
            found,
        });
    }
    Ok(text.replacen(anchor, with, 1))
}

/// The manifest as this cluster applies it. Flannel and calico get the spec's pod network
/// (their defaults are 10.244.0.0/16 and 192.168.0.0/16) and the cluster interface (the
/// first one would be Vagrant's NAT NIC); ingress-nginx's controller Service becomes a
/// LoadBalancer when MetalLB hands out addresses (seed 003's second VIP); the others apply
/// as published.
pub fn adapt(cluster: &Cluster, m: &PinnedManifest, text: &str) -> Result<String, AdaptError> {
    let net = &cluster.network;
    if *m == FLANNEL {
        let network = replace_once(
            m,
            text,
            r#""Network": "10.244.0.0/16","#,
            &format!(r#""Network": "{}","#, net.pod_subnet),
        )?;
        return replace_once(
            m,
            &network,
            "        - --kube-subnet-mgr\n",
            &format!(
                "        - --kube-subnet-mgr\n        - --iface={}\n",
                net.interface
            ),
        );
    }
    if *m == CALICO {
        return replace_once(
            m,
            text,
            "            # - name: CALICO_IPV4POOL_CIDR\n            #   value: \"192.168.0.0/16\"\n",
            &[
                "            - name: CALICO_IPV4POOL_CIDR\n".to_string(),
                format!("              value: \"{}\"\n", net.pod_subnet),
                "            - name: IP_AUTODETECTION_METHOD\n".to_string(),
                format!("              value: \"interface={}\"\n", net.interface),
            ]
            .concat(),
        );
    }
    if *m == INGRESS_NGINX && cluster.addons.load_balancer.is_some() {
        return replace_once(
            m,
            text,
            "    app.kubernetes.io/name: ingress-nginx\n  type: NodePort\n",
            "    app.kubernetes.io/name: ingress-nginx\n  type: LoadBalancer\n",
        );
    }
    Ok(text.to_string())
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

/// The container images a manifest runs, sorted, for pre-pulling: every `image:` field (a
/// key or a list item, `- image: …`), and the images an operator is told to start as
/// values: a list item after a `--…-image` flag (or `--…-image=REF`), and the `value:` of
/// an env var whose name ends in `_IMAGE` (longhorn's manager names its instance manager,
/// engine and CSI sidecar images so). images/import-images.sh's `--manifest` reads a
/// manifest by the same rules (`import_images_reads_manifests_the_same_way` checks it).
pub fn images(text: &str) -> Vec<String> {
    /// A line without its indent, its list dash and a trailing comment.
    fn item(line: &str) -> &str {
        let l = line.trim_start();
        let l = l.strip_prefix("- ").map_or(l, str::trim_start);
        let l = l.find(" #").map_or(l, |i| &l[..i]);
        l.trim_end()
    }
    fn unquote(v: &str) -> &str {
        v.trim().trim_matches(|c| c == '"' || c == '\'')
    }
    let mut v: Vec<String> = Vec::new();
    let mut prev = "";
    for line in text.lines() {
        let l = item(line);
        let is_list_item = line.trim_start().starts_with("- ");
        let found = if let Some(i) = l.strip_prefix("image:") {
            Some(unquote(i))
        } else if let Some(i) = l.strip_prefix("value:")
            && prev
                .strip_prefix("name:")
                .is_some_and(|n| unquote(n).ends_with("_IMAGE"))
        {
            Some(unquote(i))
        } else if let Some((flag, i)) = unquote(l).split_once('=')
            && is_list_item
            && flag.starts_with("--")
            && flag.ends_with("-image")
        {
            Some(unquote(i))
        } else if is_list_item && prev.starts_with("--") && unquote(prev).ends_with("-image") {
            Some(unquote(l))
        } else {
            None
        };
        if let Some(i) = found.filter(|i| !i.is_empty()) {
            v.push(i.to_string());
        }
        prev = l;
    }
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An example spec's cluster (also used by other modules' tests).
    pub(crate) fn example(name: &str) -> Cluster {
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
                ("cilium".into(), Install::Manifest(chart::CILIUM_CHART)),
                ("longhorn".into(), Install::Manifest(LONGHORN)),
                ("nginx".into(), Install::Manifest(INGRESS_NGINX))
            ]
        );
        // The user's cilium takes the CNI's place (first); other manifests come last.
        let seed0 = std::fs::read_to_string(format!(
            "{}/../../examples/seed-000-kubeadm-kube-vip.yaml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
        .replace(
            "  addons:\n",
            "  addons:\n    manifests:\n    - name: extra\n      url: https://example.com/x.yaml\n      sha256: 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n    - name: cilium\n      file: cilium.yaml\n",
        );
        let c = model::spec::load("t.yaml", &seed0).unwrap().0;
        let r = resolve(&c);
        assert_eq!(r[0].name, "cilium");
        assert_eq!(
            r[0].install,
            Install::User(UserSource::File {
                name: "cilium".into(),
                path: "cilium.yaml".into(),
                sha256: None
            })
        );
        let Install::User(UserSource::Url(m)) = &r.last().unwrap().install else {
            panic!("{r:?}")
        };
        assert_eq!(
            (m.name.as_ref(), m.version.as_ref(), m.url.as_ref()),
            ("extra", "sha256-001122334455", "https://example.com/x.yaml")
        );
        assert!(render(&example("seed-000-kubeadm-kube-vip.yaml")).contains(
            "cilium 1.18.4: chart https://helm.cilium.io/cilium-1.18.4.tgz (sha256 c361ca56"
        ));
    }

    fn fixture(m: &PinnedManifest) -> String {
        std::fs::read_to_string(format!(
            "{}/../../tests/fixtures/artifacts/addons/{}-{}.yaml",
            env!("CARGO_MANIFEST_DIR"),
            m.name,
            m.version
        ))
        .unwrap()
    }

    #[test]
    fn calico_gets_the_pod_network_and_interface() {
        let mut c = example("default.yaml");
        c.network.pod_subnet = "10.50.0.0/16".parse().unwrap();
        let out = adapt(&c, &CALICO, &fixture(&CALICO)).unwrap();
        assert!(
            out.contains(
                "            - name: CALICO_IPV4POOL_CIDR\n              value: \"10.50.0.0/16\"\n            - name: IP_AUTODETECTION_METHOD\n              value: \"interface=eth0\"\n"
            ),
            "pool/interface not set"
        );
        assert!(!out.contains("# - name: CALICO_IPV4POOL_CIDR"));
        assert!(images(&out).contains(&"quay.io/calico/node:v3.32.1".to_string()));
    }

    #[test]
    fn ingress_nginx_gets_a_load_balancer_only_with_metallb() {
        let text = fixture(&INGRESS_NGINX);
        let plain = example("default.yaml");
        assert_eq!(adapt(&plain, &INGRESS_NGINX, &text).unwrap(), text);
        let seed2 = example("seed-002-k3s-nginx-mariadb.yaml");
        let out = adapt(&seed2, &INGRESS_NGINX, &text).unwrap();
        assert!(!out.contains("type: NodePort"));
        assert_eq!(out.matches("type: LoadBalancer").count(), 1);
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

    #[test]
    fn images_include_list_items_flags_and_image_env_values() {
        let text = r#"
      containers:
      - image: "quay.io/a/list-item:v1" # a list item
        command:
        - manager
        - --engine-image
        - "docker.io/x/engine:v2"
        - --other
        - not-an-image
        - --ui-image=docker.io/x/ui:v3
        env:
        - name: CSI_ATTACHER_IMAGE
          value: 'docker.io/x/attacher:v4'
        - name: LOG_LEVEL
          value: debug
      - name: plain
        image: ghcr.io/b/plain:v5
"#;
        assert_eq!(
            images(text),
            [
                "docker.io/x/attacher:v4",
                "docker.io/x/engine:v2",
                "docker.io/x/ui:v3",
                "ghcr.io/b/plain:v5",
                "quay.io/a/list-item:v1",
            ]
        );
    }

    /// images/import-images.sh's `--manifest` (Packer's `--artifacts` form) reads every
    /// pinned manifest muster knows the same way as [`images`]: its awk run on each.
    #[test]
    fn import_images_reads_manifests_the_same_way() {
        let script = crate::render::images::IMPORT_IMAGES_SH;
        let start = script.find("manifest_images() {").unwrap();
        let end = start + script[start..].find("\n}\n").unwrap() + 3;
        let function = &script[start..end];
        let dir = format!(
            "{}/../../tests/fixtures/artifacts/addons",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut seen = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let out = std::process::Command::new("bash")
                .arg("-c")
                .arg(format!("{function}\nmanifest_images \"$1\""))
                .arg("manifest-images")
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let mut got: Vec<String> = String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect();
            got.sort();
            got.dedup();
            let want = images(&std::fs::read_to_string(&path).unwrap());
            assert!(!want.is_empty(), "{}", path.display());
            assert_eq!(got, want, "{}", path.display());
            seen += 1;
        }
        assert_eq!(seen, 5, "the five pinned manifests in {dir}");
    }
}
