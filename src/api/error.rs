//! The one error type of the HTTP API. Every error body is
//! `{"error": "stable_snake_case_code", "message": "what to fix"}`; 4xx messages say what
//! to fix, a 500 says nothing internal (the cause goes to the log).

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, snake_case: clients branch on it.
    pub error: String,
    /// Human-readable: what to fix.
    pub message: String,
}

/// The stable code of an error response, left on the response for the metrics middleware.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after: None }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError { retry_after: Some(1), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", message) }
    }
    /// An unexpected failure: logged in full, answered with nothing internal.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an unexpected error occurred; it has been logged",
        )
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: self.code.to_string(), message: self.message.clone() }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut b = HttpResponse::build(self.status);
        if let Some(s) = self.retry_after {
            b.insert_header((header::RETRY_AFTER, s.to_string()));
        }
        let mut res = b.json(self.body());
        res.extensions_mut().insert(ErrorCode(self.code));
        res
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found("not_found", "no such record"),
            StoreError::Conflict(m) => ApiError::conflict("conflict", m),
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "store unavailable");
                ApiError::unavailable("the database is unavailable; retry shortly")
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        ApiError::internal(e)
    }
}

/// 413 `payload_too_large`: the one answer for a body over `max_body_bytes`, on every route.
pub fn payload_too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body is larger than {limit} bytes"),
    )
}

/// Reads a whole raw body of at most `limit` bytes (for handlers that parse it themselves);
/// over the limit, with or without a `Content-Length`: 413 `payload_too_large`.
pub async fn read_body(payload: actix_web::web::Payload, limit: usize) -> Result<actix_web::web::Bytes, ApiError> {
    match payload.to_bytes_limited(limit).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(ApiError::bad_request("invalid_body", format!("cannot read the request body: {e}"))),
        Err(_) => Err(payload_too_large(limit)),
    }
}

/// Maps body-parsing failures to stable codes: 413 too large, 415 wrong content type,
/// 400 malformed JSON, 422 well-formed JSON of the wrong shape.
pub fn json_error(err: &actix_web::error::JsonPayloadError) -> ApiError {
    use actix_web::error::JsonPayloadError as J;
    match err {
        J::Overflow { limit } | J::OverflowKnownLength { limit, .. } => payload_too_large(*limit),
        J::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        ),
        J::Deserialize(e) if e.is_data() => {
            ApiError::unprocessable("invalid_request", format!("the request does not match the schema: {e}"))
        }
        J::Deserialize(e) => ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}")),
        other => ApiError::bad_request("invalid_body", format!("cannot read the request body: {other}")),
    }
}
