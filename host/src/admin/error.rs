//! The one place API errors become HTTP answers: `{"error": "..."}` with a 4xx naming what was
//! wrong, or a 500 whose details go to the log only.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::schedule::ScheduleError;
use crate::store::StoreError;

/// An API call that did not work out.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("a request body must be JSON, sent with Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("the request body is larger than the API takes (a sync trigger is a few bytes)")]
    PayloadTooLarge,
    #[error("the connector is shutting down; no new syncs start")]
    ShuttingDown,
    /// Exchange refused or could not be reached (a device action's lookup or cmdlet).
    #[error("{0}")]
    Exchange(String),
    #[error("the store failed")]
    Store(#[from] StoreError),
}

impl From<ScheduleError> for ApiError {
    fn from(err: ScheduleError) -> Self {
        match err {
            ScheduleError::UnknownOrg(_) => ApiError::NotFound(err.to_string()),
            ScheduleError::ShuttingDown => ApiError::ShuttingDown,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Exchange(_) => StatusCode::BAD_GATEWAY,
            ApiError::Store(err) => {
                tracing::error!(error = %err, "admin API: store error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let body = Json(serde_json::json!({ "error": self.to_string() }));
        let mut response = (status, body).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
