//! Server-side printing: `kubectl get` asks for `Accept: application/json;as=Table;v=v1;
//! g=meta.k8s.io,...` and prints the `meta.k8s.io/v1` Table it gets. Nodes get the real
//! server's columns (NAME, STATUS, ROLES, AGE, VERSION; with `-o wide` INTERNAL-IP,
//! EXTERNAL-IP, OS-IMAGE, KERNEL-VERSION, CONTAINER-RUNTIME), their STATUS read from the
//! stored Ready condition; namespaces, ConfigMaps, Secrets and CRDs theirs; anything else
//! NAME and AGE, like a CRD without printer columns.

use super::resources::Resource;
use axum::http::HeaderMap;
use serde_json::{Value, json};

/// Whether the client asked for a Table.
pub fn wanted(headers: &HeaderMap) -> bool {
    headers
        .get_all("accept")
        .iter()
        .filter_map(|h| h.to_str().ok())
        .any(|a| a.contains("as=Table"))
}

/// kubectl's short human duration (`duration.HumanDuration`).
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

fn age(obj: &Value, now: i64) -> String {
    obj["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .map_or_else(
            || "<unknown>".to_string(),
            |t| human_duration(now - t.unix_timestamp()),
        )
}

/// A Node's STATUS column: its Ready condition (`Unknown` without one), and
/// `SchedulingDisabled` when cordoned.
pub fn node_status(node: &Value) -> String {
    let ready = node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| match c["status"].as_str() {
            Some("True") => "Ready",
            _ => "NotReady",
        })
        .unwrap_or("Unknown");
    if node["spec"]["unschedulable"].as_bool() == Some(true) {
        format!("{ready},SchedulingDisabled")
    } else {
        ready.to_string()
    }
}

fn node_roles(node: &Value) -> String {
    let mut roles: Vec<&str> = node["metadata"]["labels"]
        .as_object()
        .map(|l| {
            l.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_default();
    roles.sort_unstable();
    if roles.is_empty() {
        "<none>".into()
    } else {
        roles.join(",")
    }
}

fn node_address(node: &Value, kind: &str) -> String {
    node["status"]["addresses"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["type"] == kind))
        .and_then(|x| x["address"].as_str())
        .unwrap_or("<none>")
        .to_string()
}

fn info(node: &Value, field: &str) -> String {
    node["status"]["nodeInfo"][field]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("<unknown>")
        .to_string()
}

fn count(v: &Value) -> usize {
    v.as_object().map_or(0, serde_json::Map::len)
}

fn column(name: &str, ty: &str, priority: u8) -> Value {
    json!({
        "name": name, "type": ty, "format": if name == "Name" { "name" } else { "" },
        "description": "", "priority": priority,
    })
}

/// Columns and cells of one resource's table.
fn columns(res: &Resource) -> Vec<Value> {
    let c = |n: &str| column(n, "string", 0);
    match (res.group.as_str(), res.plural.as_str()) {
        ("", "nodes") => vec![
            c("Name"),
            c("Status"),
            c("Roles"),
            c("Age"),
            c("Version"),
            column("Internal-IP", "string", 1),
            column("External-IP", "string", 1),
            column("OS-Image", "string", 1),
            column("Kernel-Version", "string", 1),
            column("Container-Runtime", "string", 1),
        ],
        ("", "namespaces") => vec![c("Name"), c("Status"), c("Age")],
        ("", "configmaps") => vec![c("Name"), column("Data", "integer", 0), c("Age")],
        ("", "secrets") => vec![c("Name"), c("Type"), column("Data", "integer", 0), c("Age")],
        (super::resources::CRD_GROUP, "customresourcedefinitions") => {
            vec![c("Name"), column("Created At", "date", 0)]
        }
        _ => vec![c("Name"), c("Age")],
    }
}

fn cells(res: &Resource, obj: &Value, now: i64) -> Vec<Value> {
    let name = json!(obj["metadata"]["name"].as_str().unwrap_or(""));
    match (res.group.as_str(), res.plural.as_str()) {
        ("", "nodes") => vec![
            name,
            json!(node_status(obj)),
            json!(node_roles(obj)),
            json!(age(obj, now)),
            json!(info(obj, "kubeletVersion")),
            json!(node_address(obj, "InternalIP")),
            json!(node_address(obj, "ExternalIP")),
            json!(info(obj, "osImage")),
            json!(info(obj, "kernelVersion")),
            json!(info(obj, "containerRuntimeVersion")),
        ],
        ("", "namespaces") => vec![
            name,
            json!(obj["status"]["phase"].as_str().unwrap_or("Active")),
            json!(age(obj, now)),
        ],
        ("", "configmaps") => vec![
            name,
            json!(count(&obj["data"]) + count(&obj["binaryData"])),
            json!(age(obj, now)),
        ],
        ("", "secrets") => vec![
            name,
            json!(obj["type"].as_str().unwrap_or("Opaque")),
            json!(count(&obj["data"]) + count(&obj["stringData"])),
            json!(age(obj, now)),
        ],
        (super::resources::CRD_GROUP, "customresourcedefinitions") => {
            vec![name, obj["metadata"]["creationTimestamp"].clone()]
        }
        _ => vec![name, json!(age(obj, now))],
    }
}

/// The Table of `items`.
pub fn render(res: &Resource, items: &[Value], resource_version: &str) -> Value {
    let now = crate::clock::now_unix();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            json!({
                "cells": cells(res, o, now),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"],
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns(res),
        "rows": rows,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::*;

    #[test]
    fn durations_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(125), "2m5s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
    }

    #[test]
    fn node_rows_read_the_ready_condition() {
        let res = super::super::resources::builtin()
            .into_iter()
            .find(|r| r.plural == "nodes")
            .unwrap();
        let node = |ready: &str| {
            json!({"metadata": {"name": "cp-1", "creationTimestamp": "2026-01-01T00:00:00Z",
                                "labels": {"node-role.kubernetes.io/control-plane": ""}},
                   "status": {"conditions": [{"type": "Ready", "status": ready}],
                              "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                              "nodeInfo": {"kubeletVersion": "v1.31.4"}}})
        };
        let t = render(&res, &[node("True"), node("False")], "1");
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 10);
        let row = |i: usize| t["rows"][i]["cells"].as_array().unwrap().clone();
        assert_eq!(row(0)[1], "Ready");
        assert_eq!(row(1)[1], "NotReady");
        assert_eq!(row(0)[2], "control-plane");
        assert_eq!(row(0)[4], "v1.31.4");
        assert_eq!(row(0)[5], "10.0.0.1");
        assert_eq!(node_status(&json!({"metadata": {}})), "Unknown");
    }
}
