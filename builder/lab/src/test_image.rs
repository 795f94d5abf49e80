//! The TEST image variant (`muster lab image --standins DIR`): after the shared node
//! preparation, `images/test-image.sh` installs muster's stand-ins for kubeadm, k3s and
//! kube-apiserver (which cannot be downloaded on the test machines), points chrony at the
//! VM lab's NTP server (the spec's gateway) and adds a reporter on the second serial port.
//! Never part of a user's image: only this option runs it, and the report lists it.

use model::spec::{DistroKind, Role, VipProvider};
use muster_build::image::files::{io_err, remove_tree, sha256_file};
use muster_build::image::packages::Selection;
use muster_build::image::variant::{ImageVariant, PreparedVariant};
use muster_build::image::{ArtifactReport, ImageError};
use muster_build::render::{Input, keepalived};
use muster_build::spec_source::LoadedSpec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The test-only step, run in the chroot after `provision.sh`.
pub const TEST_IMAGE_SH: &str = include_str!("../../../images/test-image.sh");

/// The stand-in binaries the step installs (cargo builds them from tests/src/bin).
pub const STANDINS: [&str; 3] = ["kubeadm-standin", "k3s-standin", "apiserver-standin"];

/// The stand-ins the TEST image copies in: all of [`STANDINS`] when the image has no
/// distribution (they replace it); only the API server's when the user's install path put
/// the distribution in (its packages or release files hold the kubeadm or k3s stand-in, as
/// a user's hold the real programs). kube-apiserver runs from a container image no
/// stand-in runs, so its stand-in is still copied in, test-only, beside the kubeadm one.
pub fn standins_copied_in(distribution_installed: bool) -> &'static [&'static str] {
    if distribution_installed {
        &STANDINS[2..]
    } else {
        &STANDINS
    }
}

/// Debian packages only the TEST image needs: the kube-vip stand-in is keepalived. Nothing
/// else: the image's base (the debootstrap) stays the product image's, so the VM tier
/// builds one base for all its images.
pub fn add_packages(
    selection: &mut muster_build::image::packages::Selection,
    cluster: &model::Cluster,
) {
    if cluster.ha.provider == VipProvider::KubeVip && cluster.ha.vip.is_some() {
        let p = "keepalived";
        if !selection.packages.iter().any(|have| have == p) {
            selection.packages.push(p.to_string());
        }
    }
    selection.packages.sort();
}

/// Where [`host_tools`] are taken from on the build machine: Debian's etcd-server and
/// etcd-client there (scripts/deps/standins.sh installs them for the namespace lab).
pub const HOST_TOOLS_DIR: &str = "/usr/bin";

/// The build machine's programs the TEST image copies in: real k3s embeds etcd and kubeadm
/// runs it as a static pod; their stand-ins run Debian's etcd where the spec has a stacked
/// etcd, and `etcdctl` (the stand-ins, the reporter and test-image.sh use it). Copied, not
/// installed as packages, so the TEST image shares the product image's base.
pub fn host_tools(cluster: &model::Cluster) -> &'static [&'static str] {
    match (&cluster.distribution.kind, &cluster.datastore) {
        (DistroKind::K3s, _) | (DistroKind::Kubeadm, model::spec::Datastore::StackedEtcd) => {
            &["etcd", "etcdctl"]
        }
        (DistroKind::Kubeadm, model::spec::Datastore::ExternalEtcd { .. }) => &["etcdctl"],
        _ => &[],
    }
}

/// Where the kube-vip stand-in's files are installed in the TEST image.
pub const KUBE_VIP_STANDIN_DIR: &str = "/usr/lib/muster-test/kube-vip-standin";

/// The kube-vip stand-in's files, relative to [`KUBE_VIP_STANDIN_DIR`]: kube-vip is a static
/// pod and the TEST image has no kubelet, so where the spec says kube-vip, keepalived on the
/// control planes floats the VIP (muster's keepalived renderer, as the namespace lab does):
/// `<node>.conf` per control plane and `check_apiserver.sh`. Empty for other providers.
pub fn kube_vip_standin(cluster: &model::Cluster, plan: &model::Plan) -> Vec<(String, String)> {
    let Some(vip) = cluster
        .ha
        .vip
        .filter(|_| cluster.ha.provider == VipProvider::KubeVip)
    else {
        return Vec::new();
    };
    let input = Input::new(cluster, plan);
    let check = format!("{KUBE_VIP_STANDIN_DIR}/check_apiserver.sh");
    let mut files = vec![(
        "check_apiserver.sh".to_string(),
        keepalived::check_script(&input),
    )];
    for node in plan.nodes.iter().filter(|n| n.role == Role::ControlPlane) {
        let conf = keepalived::rehome_check(&keepalived::config(&input, node, vip), &check);
        files.push((format!("{}.conf", node.name), conf));
    }
    files
}

/// What the test variant put into the image, for `image.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestVariant {
    /// Stand-ins (NOT the real programs): name and sha256 of each binary.
    pub stand_ins: Vec<ArtifactReport>,
    /// The build machine's programs copied in for the stand-ins ([`host_tools`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_tools: Vec<ArtifactReport>,
    /// The address chrony in the image syncs with.
    pub ntp_server: String,
    /// Where the image's manifest of stand-ins and test-only files is.
    pub manifest: String,
    /// Control planes whose VIP the kube-vip stand-in (keepalived) floats; empty unless
    /// the spec says kube-vip.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kube_vip_stand_in: Vec<String>,
    /// The stand-in's files ([`kube_vip_standin`]); in the build key, not in image.json.
    #[serde(skip)]
    pub kube_vip_files: Vec<(String, String)>,
    /// cloud-init as the product image has it (every stage and module, every ssh host key
    /// type) instead of the TEST image's trim to the seeds' modules
    /// (`muster lab image --full-cloud-init`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full_cloud_init: bool,
}

/// `images/test-image.sh`'s third argument: whether it trims cloud-init.
pub fn cloud_init_arg(full: bool) -> &'static str {
    if full {
        "full-cloud-init"
    } else {
        "trim-cloud-init"
    }
}

/// Hashes the stand-ins `names` in `dir` (fails naming the first one missing) and renders
/// the kube-vip stand-in's files for `plan`.
pub fn inspect(
    dir: &Path,
    host_tools_dir: &Path,
    names: &[&str],
    ntp_server: &str,
    cluster: &model::Cluster,
    plan: &model::Plan,
) -> Result<TestVariant, ImageError> {
    let report = |dir: &Path, name: &str, how: &str| -> Result<ArtifactReport, ImageError> {
        let path = dir.join(name);
        let meta = std::fs::metadata(&path).map_err(|_| ImageError::Missing {
            step: "test stand-ins".into(),
            what: format!("{} ({how})", path.display()),
        })?;
        Ok(ArtifactReport {
            name: name.to_string(),
            bytes: meta.len(),
            sha256: sha256_file(&path)?,
        })
    };
    let stand_ins = names
        .iter()
        .map(|name| {
            report(
                dir,
                name,
                "build it with `cargo build -p muster-standins --bins`",
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let host_tools = host_tools(cluster)
        .iter()
        .map(|name| {
            report(
                host_tools_dir,
                name,
                "Debian's etcd-server and etcd-client: scripts/deps/standins.sh installs them",
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let kube_vip_files = kube_vip_standin(cluster, plan);
    let kube_vip_stand_in = kube_vip_files
        .iter()
        .filter_map(|(name, _)| name.strip_suffix(".conf").map(str::to_string))
        .collect();
    Ok(TestVariant {
        stand_ins,
        host_tools,
        ntp_server: ntp_server.to_string(),
        manifest: "/usr/share/doc/muster/TEST-IMAGE".into(),
        kube_vip_stand_in,
        kube_vip_files,
        full_cloud_init: false,
    })
}

/// A digest of everything the step adds, for the build key.
pub fn key_part(v: &TestVariant) -> String {
    let mut s = format!(
        "test-image {} {} ",
        v.ntp_server,
        cloud_init_arg(v.full_cloud_init)
    );
    for a in v.stand_ins.iter().chain(&v.host_tools) {
        s.push_str(&format!("{}={} ", a.name, a.sha256));
    }
    for (name, text) in &v.kube_vip_files {
        s.push_str(&format!("{name}:{text} "));
    }
    s.push_str(TEST_IMAGE_SH);
    s
}

/// Copies the stand-ins and the host tools into `ROOTFS/tmp`, runs `images/test-image.sh`
/// in the chroot and removes the copies again.
pub fn apply(
    rootfs: &Path,
    dir: &Path,
    host_tools_dir: &Path,
    v: &TestVariant,
) -> Result<(), ImageError> {
    let step = "test image step (images/test-image.sh)";
    let stage_rel = "tmp/muster-test-standins";
    let stage: PathBuf = rootfs.join(stage_rel);
    std::fs::create_dir_all(&stage).map_err(io_err(step, &stage))?;
    for a in &v.stand_ins {
        let from = dir.join(&a.name);
        std::fs::copy(&from, stage.join(&a.name)).map_err(io_err(step, &from))?;
    }
    if !v.host_tools.is_empty() {
        // test-image.sh installs what it finds here into /usr/bin.
        let tools = stage.join("host-tools");
        std::fs::create_dir_all(&tools).map_err(io_err(step, &tools))?;
        for a in &v.host_tools {
            let from = host_tools_dir.join(&a.name);
            std::fs::copy(&from, tools.join(&a.name)).map_err(io_err(step, &from))?;
        }
    }
    if !v.kube_vip_files.is_empty() {
        // test-image.sh installs what it finds here as the kube-vip stand-in.
        let kv = stage.join("kube-vip");
        std::fs::create_dir_all(&kv).map_err(io_err(step, &kv))?;
        for (name, text) in &v.kube_vip_files {
            let p = kv.join(name);
            std::fs::write(&p, text).map_err(io_err(step, &p))?;
        }
    }
    let result = muster_build::image::customise::run_script(
        step,
        rootfs,
        "test-image.sh",
        TEST_IMAGE_SH,
        &[
            &format!("/{stage_rel}"),
            &v.ntp_server,
            cloud_init_arg(v.full_cloud_init),
        ],
    );
    remove_tree(&stage)?;
    result
}

/// The TEST image: [`ImageVariant`] over the functions above, with the stand-ins from
/// `standins` (a dir holding [`STANDINS`]).
#[derive(Debug, Clone)]
pub struct TestImage {
    pub standins: PathBuf,
    /// Whether the build installs the distribution through the user's install path
    /// (`--artifacts` / `--source-override`): then only [`standins_copied_in`] are copied.
    pub distribution_installed: bool,
    /// Keep the product image's cloud-init ([`TestVariant::full_cloud_init`]).
    pub full_cloud_init: bool,
}

/// The TEST image checked against one spec.
#[derive(Debug)]
struct PreparedTestImage {
    standins: PathBuf,
    variant: TestVariant,
}

impl ImageVariant for TestImage {
    fn label(&self) -> &'static str {
        "TEST IMAGE"
    }

    fn add_packages(&self, selection: &mut Selection, cluster: &model::Cluster) {
        add_packages(selection, cluster);
    }

    fn prepare(&self, spec: &LoadedSpec) -> Result<Box<dyn PreparedVariant>, ImageError> {
        let cluster = &spec.cluster;
        let names = standins_copied_in(self.distribution_installed);
        eprintln!(
            "    TEST IMAGE: stand-ins from {} copied in: {}",
            self.standins.display(),
            names.join(", ")
        );
        let mut variant = inspect(
            &self.standins,
            Path::new(HOST_TOOLS_DIR),
            names,
            &cluster.network.gateway.to_string(),
            cluster,
            &spec.plan,
        )?;
        variant.full_cloud_init = self.full_cloud_init;
        Ok(Box::new(PreparedTestImage {
            standins: self.standins.clone(),
            variant,
        }))
    }
}

impl PreparedVariant for PreparedTestImage {
    fn report(&self) -> Result<serde_json::Value, ImageError> {
        serde_json::to_value(&self.variant).map_err(|e| ImageError::Io {
            step: "TEST IMAGE report".into(),
            path: self.standins.clone(),
            source: std::io::Error::other(e),
        })
    }

    fn key_part(&self) -> String {
        key_part(&self.variant)
    }

    fn summary(&self) -> String {
        let names: Vec<&str> = self
            .variant
            .stand_ins
            .iter()
            .chain(&self.variant.host_tools)
            .map(|a| a.name.as_str())
            .collect();
        format!(
            "TEST IMAGE: stand-ins copied in (test-only): {}; see {}",
            names.join(", "),
            self.variant.manifest
        )
    }

    fn apply(&self, rootfs: &Path) -> Result<(), ImageError> {
        apply(
            rootfs,
            &self.standins,
            Path::new(HOST_TOOLS_DIR),
            &self.variant,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(name: &str) -> (model::Cluster, model::Plan) {
        let path = format!("{}/../../examples/{name}", env!("CARGO_MANIFEST_DIR"));
        let (c, warnings) =
            model::spec::load(name, &std::fs::read_to_string(path).unwrap()).unwrap();
        let plan = model::plan::resolve(&c, warnings.items);
        (c, plan)
    }

    #[test]
    fn missing_standin_is_named_and_key_follows_binaries() {
        let (c, plan) = load("seed-003-k3s-keepalived.yaml");
        let d = tempfile::tempdir().unwrap();
        let err = inspect(d.path(), d.path(), &STANDINS, "10.0.0.1", &c, &plan)
            .unwrap_err()
            .to_string();
        assert!(err.contains("kubeadm-standin"), "{err}");
        for n in STANDINS.iter().chain(&["etcd", "etcdctl"]) {
            std::fs::write(d.path().join(n), n).unwrap();
        }
        let v = inspect(d.path(), d.path(), &STANDINS, "10.0.0.1", &c, &plan).unwrap();
        assert_eq!(v.stand_ins.len(), 3);
        assert!(
            v.kube_vip_stand_in.is_empty(),
            "keepalived spec: no kube-vip stand-in"
        );
        let k = key_part(&v);
        std::fs::write(d.path().join("k3s-standin"), "changed").unwrap();
        assert_ne!(
            k,
            key_part(&inspect(d.path(), d.path(), &STANDINS, "10.0.0.1", &c, &plan).unwrap())
        );
        assert_ne!(
            k,
            key_part(&inspect(d.path(), d.path(), &STANDINS, "10.0.0.9", &c, &plan).unwrap())
        );
        // --full-cloud-init is another image: its own key, and the report says so
        assert!(!v.full_cloud_init);
        let full = TestVariant {
            full_cloud_init: true,
            ..v.clone()
        };
        assert_ne!(key_part(&v), key_part(&full));
        assert_eq!(serde_json::to_value(&full).unwrap()["fullCloudInit"], true);
        assert!(
            serde_json::to_value(&v)
                .unwrap()
                .get("fullCloudInit")
                .is_none()
        );
    }

    #[test]
    fn kube_vip_specs_get_keepalived_on_the_control_planes_as_the_stand_in() {
        let (c, plan) = load("default.yaml");
        let files = kube_vip_standin(&c, &plan);
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        let cps: Vec<String> = plan
            .nodes
            .iter()
            .filter(|n| n.role == Role::ControlPlane)
            .map(|n| format!("{}.conf", n.name))
            .collect();
        assert_eq!(names[0], "check_apiserver.sh");
        assert_eq!(
            names[1..],
            cps.iter().map(String::as_str).collect::<Vec<_>>()[..]
        );
        let vip = c.ha.vip.unwrap().to_string();
        for (name, text) in &files[1..] {
            assert!(text.contains(&vip), "{name} floats {vip}");
            assert!(
                text.contains(&format!("\"{KUBE_VIP_STANDIN_DIR}/check_apiserver.sh\"")),
                "{name}: the check is the stand-in's own\n{text}"
            );
            assert!(!text.contains("/etc/keepalived/"), "{name}");
        }
        let mut sel = muster_build::image::packages::select(&c);
        assert!(!sel.packages.iter().any(|p| p == "keepalived"));
        add_packages(&mut sel, &c);
        assert!(sel.packages.iter().any(|p| p == "keepalived"));

        // The key follows the rendered configs (a different VIP, a different image).
        let d = tempfile::tempdir().unwrap();
        for n in STANDINS.iter().chain(&["etcd", "etcdctl"]) {
            std::fs::write(d.path().join(n), n).unwrap();
        }
        let v = inspect(d.path(), d.path(), &STANDINS, "10.0.0.1", &c, &plan).unwrap();
        assert_eq!(v.kube_vip_stand_in.len(), cps.len());
        let mut other = c.clone();
        other.ha.vip = Some("192.168.10.99".parse().unwrap());
        let w = inspect(d.path(), d.path(), &STANDINS, "10.0.0.1", &other, &plan).unwrap();
        assert_ne!(key_part(&v), key_part(&w));
    }

    #[test]
    fn test_images_copy_the_hosts_etcd_for_their_stand_ins_and_keep_the_product_base() {
        for (example, tools) in [
            ("seed-003-k3s-keepalived.yaml", &["etcd", "etcdctl"][..]),
            ("seed-004-kubeadm-haproxy.yaml", &["etcd", "etcdctl"][..]),
            ("seed-004-kubeadm-external-etcd.yaml", &["etcdctl"][..]),
        ] {
            let (c, plan) = load(example);
            assert_eq!(host_tools(&c), tools, "{example}");
            // The same packages as the product image: one base for both.
            let product = muster_build::image::packages::select(&c);
            let mut sel = product.clone();
            add_packages(&mut sel, &c);
            assert_eq!(sel.packages, product.packages, "{example}");

            let d = tempfile::tempdir().unwrap();
            for n in STANDINS {
                std::fs::write(d.path().join(n), n).unwrap();
            }
            let err = inspect(d.path(), d.path(), &STANDINS, "10.0.0.1", &c, &plan)
                .unwrap_err()
                .to_string();
            assert!(err.contains("etcdctl") || err.contains("etcd "), "{err}");
            assert!(err.contains("scripts/deps/standins.sh"), "{err}");
            for t in tools {
                std::fs::write(d.path().join(t), t).unwrap();
            }
            let v = inspect(d.path(), d.path(), &STANDINS, "10.0.0.1", &c, &plan).unwrap();
            let names: Vec<&str> = v.host_tools.iter().map(|a| a.name.as_str()).collect();
            assert_eq!(names, tools);
            // The key follows the copied tools' bytes.
            std::fs::write(d.path().join(tools[0]), "other").unwrap();
            let w = inspect(d.path(), d.path(), &STANDINS, "10.0.0.1", &c, &plan).unwrap();
            assert_ne!(key_part(&v), key_part(&w));
        }
    }
}
