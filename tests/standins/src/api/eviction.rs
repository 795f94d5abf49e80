//! The Eviction subresource (`POST /api/v1/namespaces/NS/pods/NAME/eviction`, `policy/v1`)
//! with the PodDisruptionBudgets it honours, as the real API server does: an eviction
//! that would leave a budget's selected pods below `minAvailable` (or more than
//! `maxUnavailable` of them unavailable) is refused with 429 TooManyRequests and the
//! budget named in the causes (`DisruptionBudget`); an allowed one deletes the pod (the
//! stand-in runs no kubelet: there is no graceful termination to wait for). Integer
//! budgets only; a percentage is refused as unsupported, never read as zero. Self-contained
//! (the decision is pure, [`decide`]), so another eviction path can be folded into it.

use super::{AppState, Who, status as status_response, storage_error as storage_failed};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Why an eviction is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// 429: the budget allows no disruption now.
    Budget { budget: String, message: String },
    /// 500: a budget the stand-in cannot evaluate (a percentage, no selector).
    Unsupported { budget: String, detail: String },
}

fn labels_match(selector: &Value, pod: &Value) -> bool {
    let Some(want) = selector["matchLabels"].as_object() else {
        return false;
    };
    let have = &pod["metadata"]["labels"];
    want.iter().all(|(k, v)| &have[k] == v)
}

fn healthy(pod: &Value) -> bool {
    pod["status"]["phase"].as_str().unwrap_or("Running") == "Running"
        && pod["metadata"]["deletionTimestamp"].is_null()
}

/// Whether evicting `pod` keeps every budget of its namespace (`budgets`) over the pods of
/// that namespace (`pods`, `pod` among them).
pub fn decide(budgets: &[Value], pods: &[Value], pod: &Value) -> Result<(), Refused> {
    for b in budgets {
        let name = b["metadata"]["name"].as_str().unwrap_or("?").to_string();
        let sel = &b["spec"]["selector"];
        if !labels_match(sel, pod) {
            continue;
        }
        let selected: Vec<&Value> = pods.iter().filter(|p| labels_match(sel, p)).collect();
        let expected = selected.len() as i64;
        let healthy_now = selected.iter().filter(|p| healthy(p)).count() as i64;
        let after = if healthy(pod) {
            healthy_now - 1
        } else {
            healthy_now
        };
        let needed = match (&b["spec"]["minAvailable"], &b["spec"]["maxUnavailable"]) {
            (Value::Number(n), _) => n.as_i64().unwrap_or(0),
            (_, Value::Number(n)) => expected - n.as_i64().unwrap_or(0),
            (Value::Null, Value::Null) => continue,
            (other, Value::Null) | (_, other) => {
                return Err(Refused::Unsupported {
                    budget: name,
                    detail: format!(
                        "the API stand-in honours integer minAvailable/maxUnavailable only, not {other}"
                    ),
                });
            }
        };
        if after < needed {
            return Err(Refused::Budget {
                message: format!(
                    "The disruption budget {name} needs {needed} healthy pods and has {healthy_now} currently"
                ),
                budget: name,
            });
        }
    }
    Ok(())
}

async fn values(st: &AppState, prefix: &str) -> anyhow::Result<Vec<Value>> {
    Ok(st
        .store
        .list(prefix)
        .await?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect())
}

/// Serves one eviction.
pub(super) async fn evict(st: &AppState, who: &Who, ns: &str, name: &str) -> Response {
    if !matches!(who, Who::Admin(_) | Who::Node(_)) {
        return status_response(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "pods/eviction {name:?} is forbidden: User {:?} cannot create resource \"pods/eviction\" in the namespace {ns:?}",
                who.user()
            ),
        );
    }
    let key = format!("/registry/pods/{ns}/{name}");
    let pod = match st.read(&key).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return status_response(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("pods {name:?} not found"),
            );
        }
        Err(e) => return storage_failed(e),
    };
    // NodeRestriction: a kubelet evicts only pods bound to its node.
    if let Who::Node(node) = who
        && pod["spec"]["nodeName"].as_str() != Some(node.as_str())
    {
        return status_response(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "pods/eviction {name:?} is forbidden: node {node:?} can only evict pods with spec.nodeName set to itself"
            ),
        );
    }
    let (pdb_prefix, pod_prefix) = (
        format!("/registry/poddisruptionbudgets/{ns}/"),
        format!("/registry/pods/{ns}/"),
    );
    let (budgets, pods) = match tokio::try_join!(values(st, &pdb_prefix), values(st, &pod_prefix)) {
        Ok(x) => x,
        Err(e) => return storage_failed(e),
    };
    match decide(&budgets, &pods, &pod) {
        Ok(()) => match st.store.delete(&key).await {
            Ok(_) => (
                StatusCode::CREATED,
                Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Success", "code": 201})),
            )
                .into_response(),
            Err(e) => storage_failed(e),
        },
        Err(Refused::Budget { message, .. }) => (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure",
                "message": "Cannot evict pod as it would violate the pod's disruption budget.",
                "reason": "TooManyRequests",
                "details": {"causes": [{"reason": "DisruptionBudget", "message": message}]},
                "code": 429,
            })),
        )
            .into_response(),
        Err(Refused::Unsupported { budget, detail }) => status_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("PodDisruptionBudget {budget}: {detail}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, app: &str, phase: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"app": app}}, "status": {"phase": phase}})
    }

    fn pdb(spec: Value) -> Value {
        let mut s = spec;
        s["selector"] = json!({"matchLabels": {"app": "web"}});
        json!({"metadata": {"name": "web"}, "spec": s})
    }

    #[test]
    fn min_available_refuses_the_eviction_that_would_break_it() {
        let pods = vec![pod("a", "web", "Running"), pod("b", "web", "Running")];
        let budget = [pdb(json!({"minAvailable": 1}))];
        assert_eq!(decide(&budget, &pods, &pods[0]), Ok(()));
        let one = vec![pod("b", "web", "Running")];
        let err = decide(&budget, &one, &one[0]).unwrap_err();
        assert_eq!(
            err,
            Refused::Budget {
                budget: "web".into(),
                message: "The disruption budget web needs 1 healthy pods and has 1 currently"
                    .into()
            }
        );
    }

    #[test]
    fn max_unavailable_counts_pods_already_down_and_others_are_free() {
        let pods = vec![pod("a", "web", "Running"), pod("b", "web", "Pending")];
        let budget = [pdb(json!({"maxUnavailable": 1}))];
        // b is already unavailable: evicting a would make two.
        assert!(matches!(
            decide(&budget, &pods, &pods[0]),
            Err(Refused::Budget { .. })
        ));
        // Evicting the pending one changes nothing healthy.
        assert_eq!(decide(&budget, &pods, &pods[1]), Ok(()));
        let other = pod("c", "db", "Running");
        assert_eq!(
            decide(&budget, std::slice::from_ref(&other), &other),
            Ok(())
        );
    }

    #[test]
    fn a_percentage_is_refused_as_unsupported_not_read_as_zero() {
        let pods = vec![pod("a", "web", "Running")];
        let budget = [pdb(json!({"minAvailable": "50%"}))];
        assert!(matches!(
            decide(&budget, &pods, &pods[0]),
            Err(Refused::Unsupported { .. })
        ));
    }
}
