//! The Eviction subresource (`POST /api/v1/namespaces/NS/pods/NAME/eviction`, `policy/v1`),
//! minimal, for `muster remove`'s drain: an admin's Eviction of an existing pod deletes it
//! (the stand-in has no kubelet grace period) and answers 201 `Success`; a missing pod is a
//! 404, a body that is not an Eviction naming the pod a 422. No PodDisruptionBudgets are
//! consulted (strict PDB refusals, 429, are left to the upgrade work's stand-in).

use super::{AppState, Who, status, storage_error};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub(super) async fn evict(st: &AppState, who: &Who, ns: &str, name: &str, body: &[u8]) -> Response {
    if !matches!(who, Who::Admin(_)) {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "pods \"{name}\" is forbidden: User {:?} cannot create resource \"pods/eviction\" in the namespace {ns:?}",
                who.user()
            ),
        );
    }
    let eviction: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let named = eviction["metadata"]["name"].as_str() == Some(name);
    if eviction["kind"] != "Eviction" || !named {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("an Eviction naming pod {name:?} is required"),
        );
    }
    let key = format!("/registry/pods/{ns}/{name}");
    match st.store.delete(&key).await {
        Ok(true) => (
            StatusCode::CREATED,
            Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})),
        )
            .into_response(),
        Ok(false) => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("pods \"{name}\" not found"),
        ),
        Err(e) => storage_error(e),
    }
}
