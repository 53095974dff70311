//! JSON errors with a stable `code`.

use actors::ports::PortError;
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Seconds a client is asked to wait before retrying a 503.
pub const RETRY_AFTER_SECS: u32 = 5;

/// Errors of the HTTP layer: what a client sees.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or malformed credentials (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials without the needed scope (403).
    #[error("{0}")]
    Forbidden(String),
    /// The request is malformed or impossible (400).
    #[error("{0}")]
    BadRequest(String),
    /// Nothing there (404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the resource's current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The request body is larger than allowed (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request body is not of a type the route takes (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A dependency is down; try again (503).
    #[error("{0}")]
    Unavailable(String),
    /// Too much work in progress; try again (503).
    #[error("{0}")]
    Overloaded(String),
    /// A bug or an unexpected failure (500). The detail is logged, never returned.
    #[error("internal error")]
    Internal(String),
}

/// The one mapping from a store's or bus's failure to what a client sees: only an
/// unavailable service is a 503 (worth a retry); data the store refused is a 400, a
/// conflict a 409, a missing record a 404.
impl From<PortError> for ApiError {
    fn from(e: PortError) -> Self {
        match e {
            PortError::Unavailable { service, message } => {
                tracing::warn!(service, error = %message, "a dependency is unavailable");
                ApiError::Unavailable(format!("{service} is unavailable; try again"))
            }
            PortError::Conflict(m) => ApiError::Conflict(m),
            PortError::NotFound(m) => ApiError::NotFound(m),
            PortError::Rejected(m) => ApiError::BadRequest(m),
        }
    }
}

impl From<actors::provcache::CacheError> for ApiError {
    fn from(e: actors::provcache::CacheError) -> Self {
        match e {
            actors::provcache::CacheError::Store(e) => e.into(),
        }
    }
}

impl From<crate::adapters::AdapterError> for ApiError {
    fn from(e: crate::adapters::AdapterError) -> Self {
        PortError::from(e).into()
    }
}

/// The body of every error answer (the `Error` schema of the OpenAPI document).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    /// What went wrong.
    #[schema(inline)]
    error: Detail<'a>,
}

/// An error's stable code and its message.
#[derive(Serialize, utoipa::ToSchema)]
struct Detail<'a> {
    /// Stable and machine-readable: `bad_request`, `unauthorized`, `not_found`, ...
    code: &'a str,
    /// For people; it names the field or parameter at fault.
    message: String,
}

impl ApiError {
    /// The stable code and the status.
    pub fn code(&self) -> (&'static str, StatusCode) {
        match self {
            ApiError::Unauthorized(_) => ("unauthorized", StatusCode::UNAUTHORIZED),
            ApiError::Forbidden(_) => ("forbidden", StatusCode::FORBIDDEN),
            ApiError::BadRequest(_) => ("bad_request", StatusCode::BAD_REQUEST),
            ApiError::NotFound(_) => ("not_found", StatusCode::NOT_FOUND),
            ApiError::Conflict(_) => ("conflict", StatusCode::CONFLICT),
            ApiError::PayloadTooLarge(_) => ("payload_too_large", StatusCode::PAYLOAD_TOO_LARGE),
            ApiError::UnsupportedMediaType(_) => {
                ("unsupported_media_type", StatusCode::UNSUPPORTED_MEDIA_TYPE)
            }
            ApiError::Unavailable(_) => ("unavailable", StatusCode::SERVICE_UNAVAILABLE),
            ApiError::Overloaded(_) => ("overloaded", StatusCode::SERVICE_UNAVAILABLE),
            ApiError::Internal(_) => ("internal", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, status) = self.code();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "internal error");
        }
        let mut resp = (
            status,
            Json(ErrorBody {
                error: Detail {
                    code,
                    message: self.to_string(),
                },
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(RETRY_AFTER_SECS),
            );
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is never read, so the connection cannot carry another
            // request: say so, or a client may reuse it and fail its next request.
            resp.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        resp
    }
}

/// The stable code of an error status that no [`ApiError`] produced (axum's own answers).
fn status_code_name(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

/// The longest request target (path and query) a route is given. Longer ones are a 414
/// with the documented error body; hyper itself answers a 414 without a body only past
/// 64 KiB.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// Gives every error answer the documented `{"error": {"code", "message"}}` shape: the ones
/// axum writes itself (405 with its `Allow`, a path parameter that does not decode, a body
/// over a route's limit, a missing content type) are plain text or empty. Status and
/// headers are kept; the text, if any, becomes the message. A request target longer than
/// [`MAX_URI_BYTES`] is a 414 before any route sees it.
pub async fn json_errors(req: Request, next: axum::middleware::Next) -> Response {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let resp = if target > MAX_URI_BYTES {
        let mut resp = Response::new(axum::body::Body::from(format!(
            "the request target has {target} bytes, more than {MAX_URI_BYTES}"
        )));
        *resp.status_mut() = StatusCode::URI_TOO_LONG;
        resp
    } else {
        next.run(req).await
    };
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.ends_with("+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // axum's rejection texts are one short line; anything longer is cut, not buffered.
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    let body = serde_json::json!({
        "error": {"code": status_code_name(status), "message": message}
    })
    .to_string();
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // As for an ApiError's 413: the unread rest of the body spoils the connection.
        parts.headers.insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// A JSON body whose rejections are [`ApiError`]s.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(e) => Err(json_rejection(e)),
        }
    }
}

fn json_rejection(e: JsonRejection) -> ApiError {
    // A body cut off at the route's limit is too large, not malformed.
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge(format!("the body is too large: {}", e.body_text()));
    }
    if e.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        return ApiError::UnsupportedMediaType(e.body_text());
    }
    ApiError::BadRequest(format!("invalid JSON body: {}", e.body_text()))
}

/// Query parameters whose rejections are [`ApiError`]s.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(e) => Err(query_rejection(e)),
        }
    }
}

fn query_rejection(e: QueryRejection) -> ApiError {
    ApiError::BadRequest(format!("invalid query: {}", e.body_text()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(e: PortError) -> Response {
        ApiError::from(e).into_response()
    }

    #[test]
    fn each_failure_kind_keeps_its_status() {
        let down = answer(PortError::Unavailable {
            service: "postgres",
            message: "connection refused".into(),
        });
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(down.headers()[axum::http::header::RETRY_AFTER], "5");
        for (e, status) in [
            (
                PortError::Rejected("value too long".into()),
                StatusCode::BAD_REQUEST,
            ),
            (
                PortError::Conflict("duplicate".into()),
                StatusCode::CONFLICT,
            ),
            (PortError::NotFound("no row".into()), StatusCode::NOT_FOUND),
        ] {
            let r = answer(e);
            assert_eq!(r.status(), status);
            // Only an outage is worth a retry.
            assert!(r.headers().get(axum::http::header::RETRY_AFTER).is_none());
        }
    }
}
