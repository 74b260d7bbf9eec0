//! The admin API's answers: JSON with `Cache-Control: no-store`, and its errors.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderValue};
use http::StatusCode;
use serde::Serialize;

use super::wire::ErrorJson;
use crate::inbox::error::InboxError;

/// `value` as a JSON answer with `status`.
pub(super) fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => with_headers(status, Body::from(bytes)),
        // Our types always serialize; answer in the same shape if one ever does not.
        Err(_) => with_headers(
            StatusCode::INTERNAL_SERVER_ERROR,
            Body::from(r#"{"error":"the answer could not be written as JSON"}"#),
        ),
    }
}

fn with_headers(status: StatusCode, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // Events hold personal data: no cache keeps a copy.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A request the admin API refuses or cannot serve: `{"error": message}` with its status.
#[derive(Debug)]
pub(super) struct AdminError {
    status: StatusCode,
    message: String,
    /// The `Allow` header of a `405`.
    allow: Option<&'static str>,
}

impl AdminError {
    pub(super) fn bad_request(message: String) -> Self {
        AdminError {
            status: StatusCode::BAD_REQUEST,
            message,
            allow: None,
        }
    }

    pub(super) fn forbidden(message: &str) -> Self {
        AdminError {
            status: StatusCode::FORBIDDEN,
            message: message.to_owned(),
            allow: None,
        }
    }

    /// A method the route does not take; `allow` lists those it does.
    pub(super) fn method_not_allowed(allow: &'static str) -> Self {
        AdminError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: format!("method not allowed: this path takes {allow}"),
            allow: Some(allow),
        }
    }

    pub(super) fn not_found(message: String) -> Self {
        AdminError {
            status: StatusCode::NOT_FOUND,
            message,
            allow: None,
        }
    }

    pub(super) fn conflict(message: String) -> Self {
        AdminError {
            status: StatusCode::CONFLICT,
            message,
            allow: None,
        }
    }
}

/// The store could not be read or could not commit: `503`, logged.
impl From<InboxError> for AdminError {
    fn from(error: InboxError) -> Self {
        tracing::warn!(%error, "inbox admin: the store failed");
        AdminError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: error.to_string(),
            allow: None,
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let mut response = json(
            self.status,
            &ErrorJson {
                error: &self.message,
            },
        );
        if let Some(allow) = self.allow {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}
