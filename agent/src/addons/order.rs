//! Which object is applied when. Pure: the baked files' documents become objects in four
//! stages — namespaces, CustomResourceDefinitions, every other built-in object, then the
//! custom resources of the CRDs in the set (applied once those are `Established`). Within a
//! stage the baked order holds, so every run applies the same sequence.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Namespaces,
    Crds,
    Objects,
    CustomResources,
}

/// One object to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub stage: Stage,
    /// `v1`, `apps/v1`, `metallb.io/v1beta1`.
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    /// The baked file it came from, for errors.
    pub file: String,
    pub body: Value,
}

impl Object {
    /// `group` of `apiVersion` (empty for the core group).
    pub fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }

    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

/// The objects of `files` (name, YAML text) in apply order. Empty documents are skipped;
/// a document without apiVersion, kind or metadata.name is refused, naming the file.
pub fn objects(files: &[(String, String)]) -> Result<Vec<Object>, super::AddonError> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (file, text) in files {
        for doc in serde_yaml::Deserializer::from_str(text) {
            let v = Value::deserialize(doc).map_err(|e| super::AddonError::Manifest {
                file: file.clone(),
                detail: e.to_string(),
            })?;
            if v.is_null() {
                continue;
            }
            let field = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
            let missing = |what: &str| super::AddonError::Manifest {
                file: file.clone(),
                detail: format!("a document without {what}"),
            };
            let api_version = field("/apiVersion").ok_or_else(|| missing("apiVersion"))?;
            let kind = field("/kind").ok_or_else(|| missing("kind"))?;
            let name = field("/metadata/name").ok_or_else(|| missing("metadata.name"))?;
            let stage = match kind.as_str() {
                "Namespace" => Stage::Namespaces,
                "CustomResourceDefinition" => Stage::Crds,
                _ => Stage::Objects,
            };
            out.push(Object {
                stage,
                api_version,
                kind,
                name,
                namespace: field("/metadata/namespace"),
                file: file.clone(),
                body: v,
            });
        }
    }
    let crd_groups: Vec<String> = out
        .iter()
        .filter(|o| o.stage == Stage::Crds)
        .filter_map(|o| o.body.pointer("/spec/group").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    for o in &mut out {
        if o.stage == Stage::Objects && crd_groups.iter().any(|g| g == o.group()) {
            o.stage = Stage::CustomResources;
        }
    }
    // Stable: the baked order within a stage.
    out.sort_by_key(|o| o.stage);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> (String, String) {
        let path = format!(
            "{}/../tests/fixtures/artifacts/addons/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        (name.to_string(), std::fs::read_to_string(path).unwrap())
    }

    const POOL: &str = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: muster\n  namespace: metallb-system\nspec:\n  addresses:\n  - 10.0.0.1-10.0.0.2\n";

    #[test]
    fn namespaces_then_crds_then_objects_then_custom_resources() {
        let files = vec![
            ("00-pool.yaml".to_string(), POOL.to_string()),
            fixture("metallb-v0.15.3.yaml"),
            fixture("flannel-v0.28.9.yaml"),
        ];
        let objs = objects(&files).unwrap();
        let stages: Vec<Stage> = objs.iter().map(|o| o.stage).collect();
        let mut sorted = stages.clone();
        sorted.sort();
        assert_eq!(stages, sorted);
        assert_eq!(objs[0].describe(), "Namespace metallb-system");
        assert_eq!(objs[1].describe(), "Namespace kube-flannel");
        assert_eq!(objs[2].kind, "CustomResourceDefinition");
        // The pool came first in the files but waits for MetalLB's CRDs.
        let last = objs.last().unwrap();
        assert_eq!(last.describe(), "IPAddressPool metallb-system/muster");
        assert_eq!(last.stage, Stage::CustomResources);
        assert!(
            objs.iter()
                .any(|o| o.describe() == "DaemonSet kube-flannel/kube-flannel-ds")
        );
        // Built-ins of a group that also has CRDs elsewhere stay objects.
        assert!(
            objs.iter()
                .filter(|o| o.kind == "Deployment")
                .all(|o| o.stage == Stage::Objects)
        );
        // Same input, same sequence.
        assert_eq!(objects(&files).unwrap(), objs);
    }

    #[test]
    fn a_document_without_a_name_is_refused_naming_the_file() {
        let files = vec![(
            "01-x.yaml".to_string(),
            "apiVersion: v1\nkind: ConfigMap\n".to_string(),
        )];
        let e = objects(&files).unwrap_err().to_string();
        assert!(
            e.contains("01-x.yaml") && e.contains("metadata.name"),
            "{e}"
        );
        let empty = vec![("02-e.yaml".to_string(), "---\n---\n".to_string())];
        assert!(objects(&empty).unwrap().is_empty());
    }
}
