//! Writes as the real server shapes them: server-side apply (`PATCH` with
//! `application/apply-patch+yaml`), JSON merge patches, and the metadata the server owns
//! (uid, creationTimestamp, resourceVersion, generation, managedFields).
//!
//! Server-side apply here tracks ownership per top-level field (`data`, `spec`, ...) and per
//! label and annotation, not per leaf as the real server does: a manager's apply replaces
//! the fields it sends, removes the ones it owned and no longer sends, and leaves other
//! managers' fields alone. Changing a field another *applier* owns is a 409 Conflict unless
//! `force=true` (which moves the ownership). `status` is never written by apply (the status
//! subresource's rule). An apply that changes nothing writes nothing (same
//! resourceVersion): applies are idempotent.
//!
//! CustomResourceDefinitions are checked (name `<plural>.<group>`, one storage version, a
//! scope) and become `Established` with their accepted names when stored.

use super::resources::{CRD_GROUP, Resource};
use serde_json::{Map, Value, json};

/// Why a write is refused: an HTTP status code, the Status `reason`, a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} ({code}): {message}")]
pub struct Refusal {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

fn invalid(message: String) -> Refusal {
    Refusal {
        code: 422,
        reason: "Invalid",
        message,
    }
}

fn bad(message: String) -> Refusal {
    Refusal {
        code: 400,
        reason: "BadRequest",
        message,
    }
}

/// Metadata fields a manager's apply may own one key at a time.
const KEYED_METADATA: &[&str] = &["labels", "annotations"];
/// Top-level fields the server owns.
const SERVER_OWNED: &[&str] = &["apiVersion", "kind", "metadata", "status"];

/// A body in YAML or JSON (JSON is YAML).
pub fn parse_body(bytes: &[u8]) -> Result<Value, Refusal> {
    let y: serde_yaml::Value = serde_yaml::from_slice(bytes)
        .map_err(|e| bad(format!("error decoding the apply patch: {e}")))?;
    serde_json::to_value(y).map_err(|e| bad(format!("error decoding the apply patch: {e}")))
}

/// The applied object names the URL's resource, namespace and name.
pub fn check_identity(
    res: &Resource,
    ns: Option<&str>,
    name: &str,
    obj: &Value,
) -> Result<(), Refusal> {
    if !obj.is_object() {
        return Err(bad("the body must be an object".into()));
    }
    let (api_version, kind) = (obj["apiVersion"].as_str(), obj["kind"].as_str());
    if api_version != Some(res.api_version().as_str()) || kind != Some(res.kind.as_str()) {
        return Err(bad(format!(
            "the body is {}/{} but the URL is {} {}",
            api_version.unwrap_or("<no apiVersion>"),
            kind.unwrap_or("<no kind>"),
            res.api_version(),
            res.kind
        )));
    }
    match obj["metadata"]["name"].as_str() {
        Some(n) if n == name => {}
        other => {
            return Err(bad(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                other.unwrap_or("<none>")
            )));
        }
    }
    if let (Some(want), Some(got)) = (ns, obj["metadata"]["namespace"].as_str())
        && want != got
    {
        return Err(bad(format!(
            "the namespace of the object ({got}) does not match the namespace on the URL ({want})"
        )));
    }
    Ok(())
}

/// What one manager owns: top-level field names, and `metadata.labels`/`annotations` keys.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Owned {
    top: Vec<String>,
    keyed: Vec<(String, String)>,
}

impl Owned {
    fn of_applied(applied: &Value) -> Owned {
        let mut o = Owned::default();
        if let Some(m) = applied.as_object() {
            o.top = m
                .keys()
                .filter(|k| !SERVER_OWNED.contains(&k.as_str()))
                .cloned()
                .collect();
        }
        for field in KEYED_METADATA {
            if let Some(m) = applied["metadata"][field].as_object() {
                o.keyed
                    .extend(m.keys().map(|k| ((*field).to_string(), k.clone())));
            }
        }
        o
    }

    /// `fieldsV1` in the real notation (`f:data`, `f:metadata.f:labels.f:KEY`).
    fn fields_v1(&self) -> Value {
        let mut root = Map::new();
        for t in &self.top {
            root.insert(format!("f:{t}"), json!({}));
        }
        let mut meta = Map::new();
        for (field, key) in &self.keyed {
            let m = meta
                .entry(format!("f:{field}"))
                .or_insert_with(|| json!({}));
            m[format!("f:{key}")] = json!({});
        }
        if !meta.is_empty() {
            root.insert("f:metadata".into(), Value::Object(meta));
        }
        Value::Object(root)
    }

    fn from_fields_v1(f: &Value) -> Owned {
        let mut o = Owned::default();
        let Some(m) = f.as_object() else { return o };
        for (k, v) in m {
            match k.strip_prefix("f:") {
                Some("metadata") => {
                    for field in KEYED_METADATA {
                        if let Some(keys) = v[format!("f:{field}")].as_object() {
                            o.keyed.extend(keys.keys().filter_map(|key| {
                                key.strip_prefix("f:")
                                    .map(|key| ((*field).to_string(), key.to_string()))
                            }));
                        }
                    }
                }
                Some(top) => o.top.push(top.to_string()),
                None => {}
            }
        }
        o
    }
}

/// The managers' entries of an object: (manager, operation, owned).
fn managers(obj: &Value) -> Vec<(String, String, Owned)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap_or("").to_string(),
                        e["operation"].as_str().unwrap_or("").to_string(),
                        Owned::from_fields_v1(&e["fieldsV1"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn managed_entry(manager: &str, api_version: &str, owned: &Owned, now: &str) -> Value {
    json!({
        "manager": manager, "operation": "Apply", "apiVersion": api_version,
        "time": now, "fieldsType": "FieldsV1", "fieldsV1": owned.fields_v1(),
    })
}

/// Server-side apply of `applied` by `manager` onto `existing` (None: create). The result
/// still lacks the server's metadata ([`stamp`] adds it).
pub fn apply(
    res: &Resource,
    existing: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
) -> Result<Value, Refusal> {
    let now = crate::clock::rfc3339(crate::clock::now_unix());
    let mine = Owned::of_applied(applied);
    let Some(existing) = existing else {
        let mut obj = applied.clone();
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
        obj["metadata"]["managedFields"] =
            json!([managed_entry(manager, &res.api_version(), &mine, &now)]);
        return Ok(obj);
    };
    let all = managers(existing);
    let before = all
        .iter()
        .find(|(m, op, _)| m == manager && op == "Apply")
        .map(|(_, _, o)| o.clone())
        .unwrap_or_default();

    // ---- conflicts: a field another applier owns, sent with another value
    let mut conflicts: Vec<String> = Vec::new();
    for (other, op, owned) in &all {
        if other == manager || op != "Apply" {
            continue;
        }
        for t in &mine.top {
            if owned.top.contains(t) && existing[t] != applied[t] {
                conflicts.push(format!("conflict with {other:?}: .{t}"));
            }
        }
        for (field, key) in &mine.keyed {
            if owned.keyed.contains(&(field.clone(), key.clone()))
                && existing["metadata"][field][key] != applied["metadata"][field][key]
            {
                conflicts.push(format!("conflict with {other:?}: .metadata.{field}.{key}"));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(Refusal {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Apply failed with {} conflict{}: {}",
                conflicts.len(),
                if conflicts.len() == 1 { "" } else { "s" },
                conflicts.join("; ")
            ),
        });
    }

    // ---- merge: drop what this manager owned and no longer sends, then take what it sends
    let mut obj = existing.clone();
    let others_own_top = |t: &String| {
        all.iter()
            .any(|(m, _, o)| m != manager && o.top.contains(t))
    };
    for t in before.top.iter().filter(|t| !mine.top.contains(t)) {
        if !others_own_top(t)
            && let Some(m) = obj.as_object_mut()
        {
            m.remove(t);
        }
    }
    for (field, key) in before.keyed.iter().filter(|k| !mine.keyed.contains(k)) {
        if let Some(m) = obj["metadata"][field].as_object_mut() {
            m.remove(key);
        }
    }
    for t in &mine.top {
        obj[t] = applied[t].clone();
    }
    for (field, key) in &mine.keyed {
        obj["metadata"][field][key] = applied["metadata"][field][key].clone();
    }

    // ---- ownership: this manager's entry; forced fields leave the others'
    let mut entries: Vec<Value> = Vec::new();
    for (e, (m, op, owned)) in existing["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .zip(all.iter())
    {
        if m == manager && op == "Apply" {
            continue;
        }
        if op == "Apply" && force {
            let kept = Owned {
                top: owned
                    .top
                    .iter()
                    .filter(|t| !mine.top.contains(t))
                    .cloned()
                    .collect(),
                keyed: owned
                    .keyed
                    .iter()
                    .filter(|k| !mine.keyed.contains(k))
                    .cloned()
                    .collect(),
            };
            if kept != *owned {
                let mut e = e.clone();
                e["fieldsV1"] = kept.fields_v1();
                entries.push(e);
                continue;
            }
        }
        entries.push(e);
    }
    let unchanged_content = {
        let mut a = obj.clone();
        let mut b = existing.clone();
        for v in [&mut a, &mut b] {
            if let Some(m) = v["metadata"].as_object_mut() {
                m.remove("managedFields");
            }
        }
        a == b
    };
    let same_ownership = before == mine && entries.len() + 1 == all.len();
    if unchanged_content && same_ownership {
        return Ok(existing.clone());
    }
    entries.push(managed_entry(manager, &res.api_version(), &mine, &now));
    obj["metadata"]["managedFields"] = Value::Array(entries);
    Ok(obj)
}

/// RFC 7386 JSON merge patch (also used for kubectl's strategic merge patches: the same
/// for maps, lists replaced whole).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (_, Some(p)) => {
            *target = Value::Object(Map::new());
            merge_patch(target, &Value::Object(p.clone()));
        }
        _ => *target = patch.clone(),
    }
}

fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// A resourceVersion: microseconds since the epoch (monotonic enough across the servers of
/// one lab; the real server uses etcd's revision).
pub fn resource_version() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros().to_string())
        .unwrap_or_else(|_| "1".into())
}

/// The server's metadata on a write: identity (apiVersion, kind, name, namespace) from the
/// URL; uid and creationTimestamp kept from `existing` or new; a new resourceVersion;
/// `generation` bumped when `spec` changed. Namespaces get `status.phase: Active`; CRDs
/// their status.
pub fn stamp(
    res: &Resource,
    ns: Option<&str>,
    name: &str,
    existing: Option<&Value>,
    mut obj: Value,
) -> Value {
    obj["apiVersion"] = json!(res.api_version());
    obj["kind"] = json!(res.kind);
    obj["metadata"]["name"] = json!(name);
    if let (true, Some(ns)) = (res.namespaced, ns) {
        obj["metadata"]["namespace"] = json!(ns);
    }
    let old = existing.map(|e| &e["metadata"]);
    let keep_or = |field: &str, new: Value| match old.map(|m| &m[field]) {
        Some(v) if !v.is_null() => v.clone(),
        _ => new,
    };
    obj["metadata"]["uid"] = keep_or("uid", json!(new_uid()));
    obj["metadata"]["creationTimestamp"] = keep_or(
        "creationTimestamp",
        json!(crate::clock::rfc3339(crate::clock::now_unix())),
    );
    obj["metadata"]["resourceVersion"] = json!(resource_version());
    if !obj["spec"].is_null() {
        let generation = old.and_then(|m| m["generation"].as_i64()).unwrap_or(0);
        let changed = existing.is_none_or(|e| e["spec"] != obj["spec"]);
        obj["metadata"]["generation"] = json!(if changed {
            generation + 1
        } else {
            generation.max(1)
        });
    }
    if res.group.is_empty() && res.plural == "namespaces" && obj["status"]["phase"].is_null() {
        obj["status"] = json!({"phase": "Active"});
    }
    if res.group == CRD_GROUP && res.plural == "customresourcedefinitions" {
        obj["status"] = crd_status(&obj);
    }
    obj
}

/// A CRD's checks, as the real server's validation names them.
pub fn check_crd(name: &str, crd: &Value) -> Result<(), Refusal> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or("");
    let plural = spec["names"]["plural"].as_str().unwrap_or("");
    let mut errs: Vec<String> = Vec::new();
    if group.is_empty() || !group.contains('.') {
        errs.push("spec.group: Invalid value: should be a domain with at least one dot".into());
    }
    if plural.is_empty() {
        errs.push("spec.names.plural: Required value".into());
    }
    if spec["names"]["kind"].as_str().unwrap_or("").is_empty() {
        errs.push("spec.names.kind: Required value".into());
    }
    if name != format!("{plural}.{group}") {
        errs.push(format!(
            "metadata.name: Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"
        ));
    }
    if !matches!(spec["scope"].as_str(), Some("Namespaced" | "Cluster")) {
        errs.push(
            "spec.scope: Unsupported value: supported values: \"Cluster\", \"Namespaced\"".into(),
        );
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let storage = versions
        .iter()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .count();
    if versions.is_empty() {
        errs.push(
            "spec.versions: Invalid value: must have exactly one version marked as storage version"
                .into(),
        );
    } else if storage != 1 {
        errs.push(format!(
            "spec.versions: Invalid value: must have exactly one version marked as storage version, status.storedVersions has {storage}"
        ));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(invalid(format!(
            "CustomResourceDefinition.apiextensions.k8s.io {name:?} is invalid: {}",
            errs.join(", ")
        )))
    }
}

/// A stored CRD's status: names accepted, established.
fn crd_status(crd: &Value) -> Value {
    let now = crate::clock::rfc3339(crate::clock::now_unix());
    let stored: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .filter(|v| v["storage"].as_bool() == Some(true))
                .map(|v| v["name"].clone())
                .collect()
        })
        .unwrap_or_default();
    json!({
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
        "acceptedNames": crd["spec"]["names"],
        "storedVersions": stored,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::*;

    fn cm() -> Resource {
        super::super::resources::builtin()
            .into_iter()
            .find(|r| r.plural == "configmaps")
            .unwrap()
    }

    fn body(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "c", "labels": {"a": "1"}}, "data": data})
    }

    fn applied(existing: Option<&Value>, b: &Value, manager: &str, force: bool) -> Value {
        let r = cm();
        let o = apply(&r, existing, b, manager, force).unwrap();
        if existing == Some(&o) {
            return o;
        }
        stamp(&r, Some("default"), "c", existing, o)
    }

    #[test]
    fn apply_creates_then_is_idempotent_then_updates() {
        let b = body(json!({"k": "v"}));
        let first = applied(None, &b, "muster", false);
        assert_eq!(first["data"]["k"], "v");
        assert_eq!(first["metadata"]["namespace"], "default");
        assert_eq!(first["metadata"]["managedFields"][0]["manager"], "muster");
        let again = applied(Some(&first), &b, "muster", false);
        assert_eq!(again, first, "a second identical apply changed the object");
        let changed = applied(Some(&first), &body(json!({"k": "w"})), "muster", false);
        assert_eq!(changed["data"]["k"], "w");
        assert_eq!(changed["metadata"]["uid"], first["metadata"]["uid"]);
        assert_ne!(
            changed["metadata"]["resourceVersion"],
            first["metadata"]["resourceVersion"]
        );
    }

    #[test]
    fn fields_no_longer_sent_are_removed_and_others_conflict() {
        let first = applied(None, &body(json!({"k": "v"})), "muster", false);
        let mut only_label =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        only_label["metadata"]["labels"] = json!({"b": "2"});
        let second = applied(Some(&first), &only_label, "muster", false);
        assert!(second["data"].is_null(), "{second:#}");
        assert!(second["metadata"]["labels"]["a"].is_null(), "{second:#}");
        assert_eq!(second["metadata"]["labels"]["b"], "2");

        let other = body(json!({"k": "other"}));
        let e = apply(&cm(), Some(&first), &other, "someone", false).unwrap_err();
        assert_eq!(e.code, 409, "{e}");
        assert!(e.message.contains("\"muster\": .data"), "{e}");
        let forced = applied(Some(&first), &other, "someone", true);
        assert_eq!(forced["data"]["k"], "other");
        let owners: Vec<&str> = forced["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["fieldsV1"].get("f:data").is_some())
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(owners, ["someone"]);
    }

    #[test]
    fn crds_are_checked_and_established() {
        let crd = json!({"spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true}]}});
        check_crd("widgets.example.com", &crd).unwrap();
        let e = check_crd("widget.example.com", &crd).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(e.message.contains("metadata.name"), "{e}");
        let res = super::super::resources::builtin()
            .into_iter()
            .find(|r| r.plural == "customresourcedefinitions")
            .unwrap();
        let stored = stamp(&res, None, "widgets.example.com", None, crd);
        assert!(super::super::resources::established(&stored));
        assert_eq!(stored["status"]["storedVersions"], json!(["v1"]));
    }

    #[test]
    fn merge_patches() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(&mut t, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(t, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }
}
