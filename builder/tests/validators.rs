//! Every generated file checked by the real tool that consumes it (how each runs offline:
//! /work/shared/notes/validators.md), and for each check a deliberately broken sample that
//! must fail. A missing tool fails the test and names what to install.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;
use common::show;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const INSTALL: &str = "run `sudo scripts/install-test-deps.sh` (scripts/deps/build-core.sh)";
const CACHE: &str = "/var/cache/muster-validators";

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("validator `{name}` is not installed: {INSTALL}");
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}; {INSTALL}"))
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

// ---------- HAProxy ----------

fn haproxy_check(text: &[u8]) -> Output {
    let d = tmp();
    let f = d.path().join("haproxy.cfg");
    std::fs::write(&f, text).unwrap();
    run(Command::new(tool("haproxy")).arg("-c").arg("-f").arg(&f))
}

#[test]
fn haproxy_configs_pass_haproxy_c() {
    let files = common::files_ending("etc/haproxy/haproxy.cfg");
    assert!(
        files.len() >= 4,
        "expected haproxy configs from seeds 001 and 004"
    );
    for (label, text) in files {
        let o = haproxy_check(&text);
        assert!(o.status.success(), "{label}: {}", show(&o));
    }
    let (_, good) = &common::files_ending("etc/haproxy/haproxy.cfg")[0];
    let bad = String::from_utf8_lossy(good).replace("mode tcp", "mode tcpx");
    assert!(
        !haproxy_check(bad.as_bytes()).status.success(),
        "broken sample passed"
    );
}

// ---------- keepalived, inside a fresh network namespace that has the interface ----------

fn keepalived_check(conf: &[u8], check: &[u8], iface: &str) -> Output {
    let d = tmp();
    let dir = d.path().join("keepalived");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("keepalived.conf"), conf).unwrap();
    let script = dir.join("check_apiserver.sh");
    std::fs::write(&script, check).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let keepalived = tool("keepalived");
    tool("ip");
    let script = format!(
        "mount --bind '{}' /etc/keepalived && ip link add {iface} type veth peer name {iface}p && ip link set lo up && '{}' -t -f /etc/keepalived/keepalived.conf",
        dir.display(),
        keepalived.display()
    );
    if !Path::new("/etc/keepalived").is_dir() {
        panic!("/etc/keepalived is missing (keepalived not installed): {INSTALL}");
    }
    run(Command::new(tool("unshare")).args(["-n", "-m", "sh", "-c", &script]))
}

#[test]
fn keepalived_configs_pass_keepalived_t_in_a_namespace() {
    let mut count = 0;
    let mut sample = None;
    for r in common::render_all() {
        for (p, a) in &r.files.files {
            let Some(tree) = p.strip_suffix("etc/keepalived/keepalived.conf") else {
                continue;
            };
            let check = &r.files.files[&format!("{tree}etc/keepalived/check_apiserver.sh")];
            let text = String::from_utf8_lossy(&a.contents).into_owned();
            let iface = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("interface "))
                .unwrap()
                .to_string();
            let o = keepalived_check(&a.contents, &check.contents, &iface);
            assert!(o.status.success(), "{}:{p}: {}", r.name, show(&o));
            count += 1;
            sample.get_or_insert((text, check.contents.clone(), iface));
        }
    }
    assert!(
        count >= 7,
        "expected keepalived on seeds 001, 003, 004 ({count})"
    );
    let (text, check, iface) = sample.unwrap();
    // Broken: a VRRP instance on an interface the namespace does not have.
    let bad = text.replace(&format!("interface {iface}"), "interface nosuchif0");
    let o = keepalived_check(bad.as_bytes(), &check, &iface);
    assert!(!o.status.success(), "broken sample passed: {}", show(&o));
    // Broken: a syntax error.
    let bad = text.replace("advert_int 1", "advert_int");
    let o = keepalived_check(bad.as_bytes(), &check, &iface);
    assert!(!o.status.success(), "broken sample passed: {}", show(&o));
}

/// The lab's kube-vip stand-in (keepalived on kube-vip's timing, for the default spec's
/// control planes) passes the real keepalived too, and says that timing.
#[test]
fn the_kube_vip_stand_in_config_passes_keepalived_t() {
    use model::spec::Role;
    use muster_build::render::{Input, keepalived};
    use muster_lab::vip::KUBE_VIP_STANDIN_TIMING as T;
    let path = common::repo().join("examples/default.yaml");
    let loaded = muster_build::spec_source::load(Some(&path)).unwrap();
    let plan = model::plan::resolve(&loaded.cluster, vec![]);
    let input = Input::new(&loaded.cluster, &plan);
    let vip = loaded.cluster.ha.vip.expect("the default spec has a VIP");
    let node = plan
        .nodes
        .iter()
        .find(|n| n.role == Role::ControlPlane)
        .expect("the default spec has control planes");
    let text = keepalived::config_timed(&input, node, vip, T);
    let timing = format!(
        "    interval {}\n    timeout {}\n    fall {}\n    rise {}\n",
        T.interval_s, T.timeout_s, T.fall, T.rise
    );
    assert!(text.contains(&timing), "{text}");
    assert_ne!(text, keepalived::config(&input, node, vip));
    let iface = loaded.cluster.network.interface.to_string();
    let check = keepalived::check_script(&input);
    let o = keepalived_check(text.as_bytes(), check.as_bytes(), &iface);
    assert!(o.status.success(), "keepalived -t: {}", show(&o));
}

// ---------- nginx stream ----------

fn nginx_check(text: &[u8]) -> Output {
    let d = tmp();
    let f = d.path().join("nginx.conf");
    std::fs::write(&f, text).unwrap();
    let module = muster_build::render::nginx::STREAM_MODULE;
    assert!(
        Path::new(module).exists(),
        "{module} missing (libnginx-mod-stream): {INSTALL}"
    );
    run(Command::new(tool("nginx"))
        .args(["-t", "-q", "-c"])
        .arg(&f)
        .arg("-p")
        .arg(format!("{}/", d.path().display())))
}

#[test]
fn nginx_configs_pass_nginx_t() {
    let files = common::files_ending("etc/nginx/nginx.conf");
    assert!(!files.is_empty(), "expected the nginx config of seed 002");
    for (label, text) in &files {
        let o = nginx_check(text);
        assert!(o.status.success(), "{label}: {}", show(&o));
    }
    let bad =
        String::from_utf8_lossy(&files[0].1).replace("proxy_pass kube_apiserver;", "proxy_pass;");
    assert!(
        !nginx_check(bad.as_bytes()).status.success(),
        "broken sample passed"
    );
}

// ---------- cloud-init (Debian's cloud-init 22.4.2, unpacked into a venv) ----------

/// Runs many `cloud-init` CLI invocations in one Python process (one process per file took
/// about 1.5 s each here). Each line of stdin is one tab-separated argument list; the
/// driver prints `rc<TAB>output` per job, one line each (output escaped by `repr`).
const DRIVER: &str = r#"
import sys, io, contextlib
from cloudinit.cmd import main as ci
for line in sys.stdin.read().splitlines():
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            rc = ci.main(["cloud-init"] + line.split("\t"))
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    except Exception as e:
        rc = 99
        out.write(repr(e))
    print(f"{rc or 0}\t{out.getvalue()!r}", flush=True)
"#;

fn cloud_init_batch(jobs: &[Vec<String>]) -> Vec<(i32, String)> {
    let py = Path::new(CACHE).join("venv/bin/python");
    let pkgs = Path::new(CACHE).join("cloud-init/usr/lib/python3/dist-packages");
    assert!(
        py.exists() && pkgs.join("cloudinit").is_dir(),
        "cloud-init validator missing under {CACHE}: {INSTALL}"
    );
    let d = tmp();
    let driver = d.path().join("driver.py");
    std::fs::write(&driver, DRIVER).unwrap();
    let input: String = jobs.iter().map(|j| j.join("\t") + "\n").collect();
    let stdin = d.path().join("jobs.txt");
    std::fs::write(&stdin, input).unwrap();
    let o = run(Command::new(py)
        .env("PYTHONPATH", pkgs)
        .arg(&driver)
        .stdin(std::fs::File::open(&stdin).unwrap()));
    assert!(o.status.success(), "cloud-init driver: {}", show(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let results: Vec<(i32, String)> = text
        .lines()
        .map(|l| {
            let (rc, out) = l.split_once('\t').unwrap();
            (rc.parse().unwrap(), out.to_string())
        })
        .collect();
    assert_eq!(results.len(), jobs.len(), "driver output: {}", show(&o));
    results
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn schema_job(path: &Path) -> Vec<String> {
    args(&["schema", "-c", &path.display().to_string()])
}

fn net_convert_job(path: &Path, out: &Path, target: &str) -> Vec<String> {
    args(&[
        "devel",
        "net-convert",
        "-p",
        &path.display().to_string(),
        "-k",
        "yaml",
        "-d",
        &out.display().to_string(),
        "-D",
        "debian",
        "-O",
        target,
    ])
}

#[test]
fn cloud_init_files_pass_schema_and_net_convert() {
    let d = tmp();
    let all = common::render_all();
    let mut jobs = Vec::new();
    let mut labels = Vec::new();
    for r in &all {
        for (node, seed) in &r.seeds {
            let dir = d.path().join(&r.name).join(node);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("user-data"), &seed.user_data).unwrap();
            std::fs::write(dir.join("network-config"), &seed.network_config).unwrap();
            jobs.push(schema_job(&dir.join("user-data")));
            labels.push(format!("{}/{node}/user-data", r.name));
            for target in ["networkd", "eni"] {
                jobs.push(net_convert_job(
                    &dir.join("network-config"),
                    &dir.join(target),
                    target,
                ));
                labels.push(format!("{}/{node}/network-config ({target})", r.name));
            }
        }
    }
    // Packer's build-time user-data (qemu, Proxmox ISO), for every example: a spec without
    // sshAuthorizedKeys (seed 000's) must still give a valid cloud-config.
    let mut packer_files = 0;
    for path in common::examples() {
        let loaded = muster_build::spec_source::load(Some(&path)).unwrap();
        let plan = model::plan::resolve(&loaded.cluster, vec![]);
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        for (rel, a) in muster_build::render::packer::render(&loaded.cluster, &plan).files {
            if !rel.ends_with("user-data") {
                continue;
            }
            let file = d.path().join(&stem).join(rel.replace('/', "_"));
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, &a.contents).unwrap();
            jobs.push(schema_job(&file));
            labels.push(format!("{stem}/{rel}"));
            packer_files += 1;
        }
    }
    assert!(
        packer_files >= 7,
        "Packer user-data of every example: {packer_files}"
    );
    // Broken samples: a non-boolean lock_passwd, and the `to: default` route 22.4.2 rejects.
    let good = &all[0].seeds[0].1;
    let bad_ud = good
        .user_data
        .replace("lock_passwd: true", "lock_passwd: \"maybe\"");
    let bad_nc = good
        .network_config
        .replace("to: \"0.0.0.0/0\"", "to: default");
    assert_ne!(bad_ud, good.user_data);
    assert_ne!(bad_nc, good.network_config);
    std::fs::write(d.path().join("bad-user-data"), &bad_ud).unwrap();
    std::fs::write(d.path().join("bad-network-config"), &bad_nc).unwrap();
    jobs.push(schema_job(&d.path().join("bad-user-data")));
    jobs.push(net_convert_job(
        &d.path().join("bad-network-config"),
        &d.path().join("bad-out"),
        "networkd",
    ));
    let results = cloud_init_batch(&jobs);
    let n = labels.len();
    for (label, (rc, out)) in labels.iter().zip(&results[..n]) {
        assert_eq!(*rc, 0, "{label}: {out}");
    }
    assert_ne!(results[n].0, 0, "broken user-data passed: {}", results[n].1);
    assert_ne!(
        results[n + 1].0,
        0,
        "broken network-config passed: {}",
        results[n + 1].1
    );
    // What networkd gets: matched by MAC, with the gateway route.
    let r = &all[0];
    let node = &r.seeds[0].0;
    let mut text = String::new();
    for e in walk(&d.path().join(&r.name).join(node).join("networkd")) {
        text.push_str(&std::fs::read_to_string(e).unwrap());
    }
    assert!(text.contains("MACAddress="), "{text}");
    assert!(text.contains("Gateway="), "{text}");
    // The payload's networkd drop-in (no router discovery on the cluster NIC) names the
    // file cloud-init itself writes for that NIC on every node, or networkd ignores it.
    for r in &all {
        let dropins: Vec<&String> = r
            .files
            .files
            .keys()
            .filter(|p| p.starts_with(model::node_files::NETWORKD_DROPINS))
            .collect();
        assert_eq!(dropins.len(), 1, "{}: {dropins:?}", r.name);
        let dir = Path::new(dropins[0]).parent().unwrap();
        let target = dir.file_name().unwrap().to_string_lossy();
        let target = target.strip_suffix(".d").unwrap();
        let text = String::from_utf8_lossy(&r.files.get(dropins[0]).unwrap().contents);
        assert!(text.contains("\n[Network]\nIPv6AcceptRA=no\n"), "{text}");
        for (node, _) in &r.seeds {
            let written = d
                .path()
                .join(&r.name)
                .join(node)
                .join("networkd/etc/systemd/network")
                .join(target);
            assert!(
                written.is_file(),
                "{}/{node}: cloud-init wrote no {target} for the drop-in {}",
                r.name,
                dropins[0]
            );
        }
    }
}

/// The `/etc/cloud/cloud.cfg.d/*.cfg` drop-ins the image scripts write (heredocs), by name:
/// cloud-init merges them into every node's config and warns "Invalid cloud-config
/// provided" at boot when one breaks its schema.
fn image_cloud_cfg_dropins() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for script in ["images/image-build.sh", "images/provision.sh"] {
        let path = format!("{}/../{script}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        while let Some(l) = lines.next() {
            let Some(rest) = l.split_once("/etc/cloud/cloud.cfg.d/").map(|(_, r)| r) else {
                continue;
            };
            let Some((name, marker)) = rest.split_once(" <<") else {
                continue;
            };
            let marker = marker.trim_matches(|c| c == '\'' || c == '"');
            let body: Vec<&str> = lines.by_ref().take_while(|b| *b != marker).collect();
            out.push((format!("{script}: {name}"), body.join("\n") + "\n"));
        }
    }
    out
}

#[test]
fn image_cloud_cfg_dropins_pass_the_schema() {
    let dropins = image_cloud_cfg_dropins();
    let names: Vec<&str> = dropins.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.iter().any(|n| n.ends_with("91-muster-image.cfg")),
        "{names:?}"
    );
    let d = tmp();
    let mut jobs = Vec::new();
    for (i, (_, body)) in dropins.iter().enumerate() {
        // `schema -c` wants the user-data header; the drop-in's keys are the same schema.
        let p = d.path().join(format!("{i}.cfg"));
        std::fs::write(&p, format!("#cloud-config\n{body}")).unwrap();
        jobs.push(schema_job(&p));
    }
    // A broken sample: the boolean `locale: false`, which cloud-init honours but its
    // schema (a string) rejects.
    let bad = d.path().join("bad.cfg");
    std::fs::write(&bad, "#cloud-config\nlocale: false\n").unwrap();
    jobs.push(schema_job(&bad));
    let results = cloud_init_batch(&jobs);
    for ((label, _), (rc, out)) in dropins.iter().zip(&results) {
        assert_eq!(*rc, 0, "{label}: {out}");
    }
    let (rc, out) = results.last().unwrap();
    assert_ne!(*rc, 0, "broken drop-in passed: {out}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(walk(&p));
        } else {
            v.push(p);
        }
    }
    v
}

// ---------- kube-vip Pod ----------

fn kubernetes_validate(text: &[u8]) -> Output {
    let exe = Path::new(CACHE).join("venv/bin/kubernetes-validate");
    assert!(exe.exists(), "kubernetes-validate missing: {INSTALL}");
    let d = tmp();
    let f = d.path().join("pod.yaml");
    std::fs::write(&f, text).unwrap();
    run(Command::new(exe).args(["-k", "1.31.0", "--strict"]).arg(&f))
}

/// k8s-openapi's Pod plus serde_ignored: every field must be known.
fn k8s_openapi_unknown_fields(text: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_yaml::from_slice(text).unwrap();
    let mut unknown = Vec::new();
    let r: Result<k8s_openapi::api::core::v1::Pod, _> =
        serde_ignored::deserialize(v, |p| unknown.push(p.to_string()));
    if let Err(e) = r {
        unknown.push(format!("error: {e}"));
    }
    unknown
}

#[test]
fn kube_vip_manifests_pass_kubernetes_validate_strict() {
    let files = common::files_ending("kube-vip.yaml");
    assert!(
        files.len() >= 8,
        "expected kube-vip manifests (seed 000, default)"
    );
    for (label, text) in &files {
        let o = kubernetes_validate(text);
        assert!(o.status.success(), "{label}: {}", show(&o));
        assert_eq!(
            k8s_openapi_unknown_fields(text),
            Vec::<String>::new(),
            "{label}"
        );
    }
    let bad =
        String::from_utf8_lossy(&files[0].1).replace("hostNetwork: true", "hostNetwrok: true");
    assert!(
        !kubernetes_validate(bad.as_bytes()).status.success(),
        "broken sample passed"
    );
    assert!(
        !k8s_openapi_unknown_fields(bad.as_bytes()).is_empty(),
        "broken sample passed"
    );
}

// ---------- NoCloud seed volume ----------

fn seed_checks(img: &[u8], files: &[(&str, &str)]) -> Result<(), String> {
    let d = tmp();
    let p = d.path().join("seed.img");
    std::fs::write(&p, img).unwrap();
    let o = run(Command::new(tool("fsck.vfat")).arg("-n").arg(&p));
    if !o.status.success() {
        return Err(format!("fsck.vfat: {}", show(&o)));
    }
    let o = run(Command::new(tool("blkid"))
        .args(["-o", "value", "-s", "LABEL"])
        .arg(&p));
    if String::from_utf8_lossy(&o.stdout).trim() != "CIDATA" {
        return Err(format!("blkid label: {}", show(&o)));
    }
    for (name, text) in files {
        let out = d.path().join(format!("out-{name}"));
        let o = run(Command::new(tool("mcopy"))
            .arg("-n")
            .arg("-i")
            .arg(&p)
            .arg(format!("::{name}"))
            .arg(&out));
        if !o.status.success() {
            return Err(format!("mcopy {name}: {}", show(&o)));
        }
        if std::fs::read(&out).unwrap() != text.as_bytes() {
            return Err(format!("{name} read back differs"));
        }
    }
    Ok(())
}

#[test]
fn seed_volumes_pass_fsck_blkid_and_read_back() {
    let r = common::render(&common::examples()[0]);
    for (node, seed) in &r.seeds {
        let files = seed.files();
        let img = muster_build::bake::seed_volume::build(&files).unwrap();
        seed_checks(&img, &files).unwrap_or_else(|e| panic!("{node}: {e}"));
        assert_eq!(img, muster_build::bake::seed_volume::build(&files).unwrap());
    }
    let files = r.seeds[0].1.files();
    let mut img = muster_build::bake::seed_volume::build(&files).unwrap();
    // Broken: wipe the boot sector.
    img[..512].fill(0);
    assert!(seed_checks(&img, &files).is_err(), "broken sample passed");
}

// ---------- add-on manifests ----------

#[test]
fn baked_addon_manifests_pass_kubernetes_validate_strict() {
    let source = muster_build::addons::source::Source::Artifacts(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/artifacts").into(),
    );
    let charts = tmp();
    let chart = muster_lab::standins::cilium_test_chart(charts.path()).unwrap();
    let helm = muster_build::addons::chart::Helm {
        program: muster_lab::standins::target_binary("helm-standin").unwrap(),
    };
    let mut checked = Vec::new();
    for name in [
        "default.yaml",
        "seed-002-k3s-nginx-mariadb.yaml",
        "seed-003-k3s-keepalived.yaml",
        "seed-000-kubeadm-kube-vip.yaml",
    ] {
        let path = common::repo().join("examples").join(name);
        let mut loaded = muster_build::spec_source::load(Some(&path)).unwrap();
        if loaded.cluster.addons.cni == model::spec::Cni::Cilium {
            loaded
                .cluster
                .addons
                .manifests
                .push(model::spec::AddonManifest {
                    name: "cilium".into(),
                    url: None,
                    file: Some(chart.display().to_string()),
                    sha256: None,
                });
        }
        let version = loaded.cluster.distribution.version.to_string();
        let k = version.trim_start_matches('v');
        let bake = |cluster: &model::Cluster| {
            let inputs = muster_build::addons::bake::Inputs {
                source: &source,
                charts: &helm,
                spec_dir: &loaded.dir(),
                api_address: cluster.ha.vip,
            };
            muster_build::addons::bake::bake(cluster, &inputs).unwrap()
        };
        let mut baked = bake(&loaded.cluster);
        // Seed 000's cilium: the test chart (cilium's own is not here) rendered by the helm
        // stand-in, and calico (pinned) in its place once too.
        if loaded.cluster.addons.cni == model::spec::Cni::Cilium {
            let mut calico = loaded.cluster.clone();
            calico.addons.cni = model::spec::Cni::Calico;
            let mut c = bake(&calico);
            c.files.retain(|(f, _)| f == "01-calico.yaml");
            baked.files.extend(c.files);
        }
        for (file, bytes) in &baked.files {
            let d = tmp();
            let f = d.path().join(file);
            std::fs::write(&f, bytes).unwrap();
            let exe = Path::new(CACHE).join("venv/bin/kubernetes-validate");
            let o = run(Command::new(exe).args(["-k", k, "--strict"]).arg(&f));
            // The add-ons' own kinds (MetalLB's, calico's, longhorn's) have no schema in
            // kubernetes-validate: it says so (a warning), and fails anything it can check.
            assert!(o.status.success(), "{name} {file}: {}", show(&o));
            checked.push(file.clone());
        }
    }
    checked.sort();
    checked.dedup();
    assert_eq!(
        checked,
        [
            "01-calico.yaml",
            "01-cilium.yaml",
            "01-flannel.yaml",
            "01-metallb.yaml",
            "02-longhorn.yaml",
            "02-metallb-pool.yaml",
            "03-ingress-nginx.yaml"
        ]
    );
    let bad = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: x\nspec:\n  selectr: {}\n";
    let d = tmp();
    std::fs::write(d.path().join("bad.yaml"), bad).unwrap();
    let exe = Path::new(CACHE).join("venv/bin/kubernetes-validate");
    let o = run(Command::new(exe)
        .args(["-k", "1.31.0", "--strict"])
        .arg(d.path().join("bad.yaml")));
    assert!(!o.status.success(), "broken sample passed");
}

// ---------- configs a running load balancer renders again when the cluster grows ----------

/// Seed 004's spec grown by two control planes that joined after the build (the agent's
/// `lb_follow` renders exactly this): haproxy, nginx and keepalived accept the result.
#[test]
fn configs_rerendered_for_a_grown_membership_pass_the_real_tools() {
    use model::lb_config::{self, SeenMember};
    use model::spec::Role;
    let spec = common::examples()
        .into_iter()
        .find(|p| {
            p.to_string_lossy()
                .ends_with("seed-004-kubeadm-haproxy.yaml")
        })
        .expect("seed 004 example");
    let loaded = muster_build::spec_source::load(Some(&spec)).unwrap();
    let plan = model::plan::resolve(&loaded.cluster, vec![]);
    let joined = |name: &str, role, ip: &str| SeenMember {
        name: name.into(),
        role,
        joined: true,
        ip: Some(ip.parse().unwrap()),
    };
    let members = [
        joined("added-cp-4", Role::ControlPlane, "10.250.0.250"),
        joined("added-cp-5", Role::ControlPlane, "10.250.0.251"),
        joined("added-lb-3", Role::LoadBalancer, "10.250.0.252"),
    ];
    let cps = lb_config::select(Role::ControlPlane, &plan.nodes, &members);
    let planned_cps = plan
        .nodes
        .iter()
        .filter(|n| n.role == Role::ControlPlane)
        .count();
    assert_eq!(cps.len(), planned_cps + 2);
    let port = loaded.cluster.ha.api_port;

    let text = lb_config::haproxy(port, &cps);
    for (name, ip) in [
        ("added-cp-4", "10.250.0.250"),
        ("added-cp-5", "10.250.0.251"),
    ] {
        assert!(
            text.contains(&format!("    server {name} {ip}:{port} check\n")),
            "{text}"
        );
    }
    let o = haproxy_check(text.as_bytes());
    assert!(o.status.success(), "haproxy -c: {}", show(&o));

    let o = nginx_check(lb_config::nginx(port, &cps).as_bytes());
    assert!(o.status.success(), "nginx -t: {}", show(&o));

    let lbs = lb_config::select(Role::LoadBalancer, &plan.nodes, &members);
    let node = plan
        .nodes
        .iter()
        .find(|n| n.role == Role::LoadBalancer)
        .expect("seed 004 has load balancers");
    let vip = loaded.cluster.ha.vip.expect("seed 004 has a VIP");
    let text = lb_config::keepalived(&loaded.cluster, node, vip, &lbs);
    assert!(text.contains("        10.250.0.252\n"), "{text}");
    let check = "#!/bin/bash\n: </dev/tcp/127.0.0.1/6443\n";
    let iface = loaded.cluster.network.interface.to_string();
    let o = keepalived_check(text.as_bytes(), check.as_bytes(), &iface);
    assert!(o.status.success(), "keepalived -t: {}", show(&o));
}
