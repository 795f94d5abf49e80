//! A registry stand-in: the read side of the OCI distribution API over plain HTTP on
//! 127.0.0.1, serving OCI image layouts built in the test ([`super::artifacts::oci_layout`]),
//! so the real `ctr` pulls from it. Not a registry: no auth, no push, no range requests,
//! one request per connection.
//!
//! - `GET /v2/`: 200 (API version 2).
//! - `GET|HEAD /v2/<name>/manifests/<tag or digest>`: the image's manifest, with its
//!   media type as Content-Type and its digest as Docker-Content-Digest.
//! - `GET|HEAD /v2/<name>/blobs/<digest>`: a blob of that image.
//!
//! Images are keyed by their full name (`registry.k8s.io/pause`): a mirror request names
//! the upstream registry in `?ns=` (containerd's hosts.toml mirrors do), a direct request
//! is for the stand-in's own host (`127.0.0.1:PORT/name`). Everything else is a 404 with
//! the distribution API's error body (MANIFEST_UNKNOWN, BLOB_UNKNOWN, NAME_UNKNOWN).
//!
//! Digest-pinned references: an image is served under its tag and its manifest's digest
//! ([`Registry::pinned`] spells `name:tag@sha256:…`). [`Registry::serve_any_digest`] makes
//! it a registry that lies: a manifest asked for by a digest it does not have is answered
//! with the image's own manifest under the asked digest (a tampered mirror), which a
//! client must refuse after checking the bytes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One served image: its layout dir, tag, and manifest (digest, media type).
struct Served {
    layout: PathBuf,
    tag: String,
    manifest_digest: String,
    manifest_type: String,
}

pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// Every request line served (method, path and query), in order.
    pub requests: Arc<Mutex<Vec<String>>>,
    /// Each served image (`name:tag`) and its manifest's digest.
    digests: BTreeMap<String, String>,
    lies: Arc<AtomicBool>,
}

impl Registry {
    /// `image` (`name:tag`, one of the served) pinned to its manifest's digest:
    /// `name:tag@sha256:…`.
    pub fn pinned(&self, image: &str) -> String {
        format!("{image}@{}", self.digest(image))
    }

    /// The digest of `image`'s manifest (`sha256:…`).
    pub fn digest(&self, image: &str) -> String {
        self.digests
            .get(image)
            .unwrap_or_else(|| panic!("{image} is not served"))
            .clone()
    }

    /// From now on, answer a manifest request by an unknown digest with the image's own
    /// manifest under that digest (`true`), or with MANIFEST_UNKNOWN (`false`, the default).
    pub fn serve_any_digest(&self, lie: bool) {
        self.lies.store(lie, Ordering::SeqCst);
    }

    /// A containerd hosts.toml layout under `dir` (returned: pass it as `--hosts-dir`)
    /// making this stand-in the plain-HTTP mirror of each of `upstreams` (registry names
    /// like `registry.k8s.io`), and its server too: containerd tries the server after a
    /// mirror's 404, and no test may reach the real registry.
    pub fn hosts_dir(&self, dir: &Path, upstreams: &[&str]) -> PathBuf {
        for u in upstreams {
            let d = dir.join(u);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("hosts.toml"),
                format!(
                    "server = \"http://{h}\"\n\n[host.\"http://{h}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                    h = self.host
                ),
            )
            .unwrap();
        }
        dir.to_path_buf()
    }
}

/// Splits `registry.k8s.io/coredns/coredns:v1.11.3` into (`registry.k8s.io/coredns/coredns`,
/// `v1.11.3`). Served images are named by tag; their digests are the stand-in's own
/// ([`Registry::pinned`]).
fn split(image: &str) -> (String, String) {
    assert!(
        !image.contains('@'),
        "the stand-in serves tags only: {image}"
    );
    let (name, tag) = image.rsplit_once(':').unwrap();
    assert!(!tag.contains('/'), "{image} needs a tag");
    (name.to_string(), tag.to_string())
}

/// Serves each of `images` (full references with a tag) as a one-layer stand-in image built
/// under `work`, until the test process exits.
pub fn start(images: &[String], work: &Path) -> Registry {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let mut served: BTreeMap<String, Served> = BTreeMap::new();
    let mut digests = BTreeMap::new();
    for image in images {
        let layout = super::artifacts::oci_layout(image, work);
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let m = &index["manifests"][0];
        let (name, tag) = split(image);
        digests.insert(image.clone(), m["digest"].as_str().unwrap().to_string());
        served.insert(
            name,
            Served {
                layout,
                tag,
                manifest_digest: m["digest"].as_str().unwrap().to_string(),
                manifest_type: m["mediaType"].as_str().unwrap().to_string(),
            },
        );
    }
    let served = Arc::new(served);
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = requests.clone();
    let own = host.clone();
    let lies = Arc::new(AtomicBool::new(false));
    let lying = lies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (served, log, own) = (served.clone(), log.clone(), own.clone());
            let lying = lying.load(Ordering::SeqCst);
            std::thread::spawn(move || {
                let Some(first) = super::artifacts::read_request(&stream) else {
                    return;
                };
                let mut parts = first.split_whitespace();
                let method = parts.next().unwrap_or("").to_string();
                let target = parts.next().unwrap_or("/").to_string();
                log.lock().unwrap().push(format!("{method} {target}"));
                let response = respond(&served, &own, &target, lying);
                let _ = stream.write_all(&response.head(method == "HEAD"));
            });
        }
    });
    Registry {
        host,
        requests,
        digests,
        lies,
    }
}

struct Response {
    status: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Response {
    fn head(self, head_only: bool) -> Vec<u8> {
        let mut r = format!(
            "HTTP/1.1 {}\r\nContent-Length: {}\r\nConnection: close\r\nDocker-Distribution-API-Version: registry/2.0\r\n",
            self.status,
            self.body.len()
        );
        for (k, v) in &self.headers {
            r.push_str(&format!("{k}: {v}\r\n"));
        }
        r.push_str("\r\n");
        let mut r = r.into_bytes();
        if !head_only {
            r.extend(self.body);
        }
        r
    }
}

fn not_found(code: &str, what: &str) -> Response {
    Response {
        status: "404 Not Found",
        headers: vec![("Content-Type", "application/json".into())],
        body: serde_json::json!({"errors": [{"code": code, "message": what}]})
            .to_string()
            .into_bytes(),
    }
}

fn respond(served: &BTreeMap<String, Served>, own: &str, target: &str, lying: bool) -> Response {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path == "/v2/" || path == "/v2" {
        return Response {
            status: "200 OK",
            headers: vec![("Content-Type", "application/json".into())],
            body: b"{}".to_vec(),
        };
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return not_found("NAME_UNKNOWN", "not a /v2/ path");
    };
    let ns = query.split('&').find_map(|kv| kv.strip_prefix("ns="));
    let (name, kind, reference) = if let Some((n, r)) = rest.rsplit_once("/manifests/") {
        (n, "manifests", r)
    } else if let Some((n, r)) = rest.rsplit_once("/blobs/") {
        (n, "blobs", r)
    } else {
        return not_found("NAME_UNKNOWN", rest);
    };
    // A mirror request names its registry (`?ns=`); without it, the stand-in's own name,
    // else the one served image of that repository path on any registry (a server entry
    // of a hosts.toml is asked without `ns`).
    let found = match ns {
        Some(ns) => served.get_key_value(&format!("{ns}/{name}")),
        None => served.get_key_value(&format!("{own}/{name}")).or_else(|| {
            served
                .iter()
                .find(|(k, _)| k.split_once('/').is_some_and(|(_, n)| n == name))
        }),
    };
    let Some((full, image)) = found else {
        return not_found("NAME_UNKNOWN", &format!("repository {name} not known"));
    };
    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:")?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        std::fs::read(image.layout.join("blobs/sha256").join(hex)).ok()
    };
    let lie = lying && reference.starts_with("sha256:");
    match kind {
        "manifests" if reference == image.tag || reference == image.manifest_digest || lie => {
            let body = blob(&image.manifest_digest).unwrap();
            let digest = if lie {
                reference
            } else {
                &image.manifest_digest
            };
            Response {
                status: "200 OK",
                headers: vec![
                    ("Content-Type", image.manifest_type.clone()),
                    ("Docker-Content-Digest", digest.to_string()),
                ],
                body,
            }
        }
        "manifests" => not_found("MANIFEST_UNKNOWN", &format!("{full}:{reference}")),
        _ => match blob(reference) {
            Some(body) => Response {
                status: "200 OK",
                headers: vec![
                    ("Content-Type", "application/octet-stream".into()),
                    ("Docker-Content-Digest", reference.to_string()),
                ],
                body,
            },
            None => not_found("BLOB_UNKNOWN", reference),
        },
    }
}
