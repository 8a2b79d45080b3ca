//! The API's one error type and its single mapping to HTTP status and JSON body.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::job::SpecError;
use crate::state::StateError;
use crate::submit::SubmitError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    InvalidSpec(#[from] SpecError),
    #[error("{0}")]
    BadRequest(String),
    #[error("job {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// The job's record is there but cannot be read (no spec, an unknown status): not
    /// something a retry fixes.
    #[error("{0}")]
    Unreadable(String),
    /// No token, or one the API does not know.
    #[error("{0}")]
    Unauthorized(String),
    /// A known token that may not do this.
    #[error("{message}")]
    Forbidden {
        message: String,
        field: Option<String>,
    },
}

/// Body of every error response: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorDetail {
    /// What kind of refusal: `invalid_spec`, `bad_request`, `not_found`, `conflict`,
    /// `unavailable`, `unreadable_record`, `unauthorized`, `forbidden`, `too_large`,
    /// `method_not_allowed`, `unsupported_media_type`, `invalid_request` or `internal`.
    pub code: String,
    /// What was wrong and what to do, for a person.
    pub message: String,
    /// The spec field or S3 location at fault (`invalid_spec`, `forbidden`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl From<SubmitError> for ApiError {
    fn from(err: SubmitError) -> Self {
        match err {
            SubmitError::Invalid(spec) => ApiError::InvalidSpec(spec),
            SubmitError::Forbidden(refused) => ApiError::Forbidden {
                field: Some(refused.field.clone()),
                message: refused.to_string(),
            },
            SubmitError::OutputInUse(message) => ApiError::Conflict(message),
            SubmitError::Unavailable(message) => ApiError::Unavailable(message),
        }
    }
}

impl From<StateError> for ApiError {
    fn from(err: StateError) -> Self {
        match err {
            StateError::NotFound(id) => ApiError::NotFound(id),
            e @ StateError::Corrupt { .. } => ApiError::Unreadable(e.to_string()),
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, field) = match &self {
            ApiError::InvalidSpec(e) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_spec",
                Some(e.field.clone()),
            ),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", None),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", None),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None),
            ApiError::Unreadable(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "unreadable_record", None)
            }
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            ApiError::Forbidden { field, .. } => {
                (StatusCode::FORBIDDEN, "forbidden", field.clone())
            }
        };
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: self.to_string(),
                field,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
