//! The one error type of the HTTP API: a documented kind (which fixes the status) and a
//! human-readable value, sent as `{"kind": …, "value": …}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use protocol::wire::{ErrorBody, ErrorKind};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {value}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub value: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, value: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            value: value.into(),
        }
    }

    pub fn bad_request(value: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::BadRequest, value)
    }

    pub fn unauthenticated(value: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Unauthenticated, value)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!("answering {status}: {self}");
        } else {
            tracing::debug!("answering {status}: {self}");
        }
        let body = ErrorBody {
            kind: self.kind,
            value: self.value,
        };
        (status, Json(body)).into_response()
    }
}
