//! The one error type at the HTTP edge (http-api.md §2.2): each variant maps to a status, a code
//! and a message in the documented envelope. Internal errors are logged once, here, with their
//! cause chain, and leave the service as an opaque 500.

use poem::{IntoResponse, Response, http::StatusCode};
use poem_openapi::{
    ApiResponse,
    registry::{MetaMediaType, MetaResponse, MetaResponses, Registry},
    types::Type,
};
use serde::Serialize;

use crate::resources::ConversationDetail;

pub const CONVERSATION_NOT_FOUND: &str = "Conversation not found";
pub const MESSAGE_NOT_FOUND: &str = "Message not found";
pub const PARTICIPANT_NOT_FOUND: &str = "Participant not found";
pub const NOT_A_PARTICIPANT: &str = "You are not a participant of this conversation";
pub const INVALID_JSON: &str = "Invalid JSON body";
pub const INVALID_CONVERSATION_ID: &str = "Invalid conversation ID format, expected UUID";
pub const INVALID_MESSAGE_ID: &str = "Invalid message ID format, expected UUID";
pub const INVALID_USER_ID: &str = "Invalid user ID format, expected UUID";
pub const INVALID_USER_HEADER: &str = "Missing or invalid X-User-ID header";

/// `details` of a `VALIDATION_ERROR`: field → message, in the order first set; setting a field
/// again overwrites its message in place ("the later row overwrites an earlier one").
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Details(Vec<(&'static str, String)>);

impl Details {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&mut self, field: &'static str, message: impl Into<String>) {
        let message = message.into();
        match self.0.iter_mut().find(|(f, _)| *f == field) {
            Some(entry) => entry.1 = message,
            None => self.0.push((field, message)),
        }
    }

    pub fn has(&self, field: &str) -> bool {
        self.0.iter().any(|(f, _)| *f == field)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Err(Validation)` when any field failed.
    pub fn into_result(self) -> Result<(), ApiError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self))
        }
    }

    /// One failing field.
    pub fn one(field: &'static str, message: impl Into<String>) -> ApiError {
        let mut d = Self::new();
        d.set(field, message);
        ApiError::Validation(d)
    }
}

impl Serialize for Details {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Everything a route can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("validation failed")]
    Validation(Details),
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("unauthorized")]
    Unauthorized,
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("not found: {0}")]
    NotFound(&'static str),
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The DM conflict of http-api.md §5.1: the existing conversation travels as `data`.
    #[error("direct conversation already exists")]
    DmConflict(Box<ConversationDetail>),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(anyhow::Error::new(e).context("database"))
    }
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a Details>,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a, T: Serialize> {
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a T>,
    error: ErrorObject<'a>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) | Self::DmConflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Validation(_) => "VALIDATION_ERROR",
            Self::BadRequest(_) => "BAD_REQUEST",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::NotFound(_) => "NOT_FOUND",
            Self::Conflict(_) | Self::DmConflict(_) => "CONFLICT",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::Internal(_) => "INTERNAL_ERROR",
        }
    }

    fn message(&self) -> &str {
        match self {
            Self::Validation(_) => "Invalid request parameters",
            Self::BadRequest(m) | Self::Forbidden(m) | Self::NotFound(m) | Self::Conflict(m) => m,
            Self::Unauthorized => "Missing or invalid credentials",
            Self::DmConflict(_) => "Direct conversation already exists between these users",
            Self::PayloadTooLarge => "Request body too large",
            Self::RateLimited { .. } => "Too many requests",
            Self::Internal(_) => "An unexpected error occurred",
        }
    }

    fn body(&self) -> Vec<u8> {
        let error = ErrorObject {
            code: self.code(),
            message: self.message(),
            details: match self {
                Self::Validation(d) => Some(d),
                _ => None,
            },
        };
        let data = match self {
            Self::DmConflict(d) => Some(d.as_ref()),
            _ => None,
        };
        serde_json::to_vec(&ErrorEnvelope { data, error }).expect("error envelope serialises")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(e) = &self {
            tracing::error!(error = format!("{e:#}"), "request failed");
        }
        let mut resp = Response::builder()
            .status(self.status())
            .content_type("application/json");
        match &self {
            Self::Unauthorized => resp = resp.header("WWW-Authenticate", "Bearer"),
            Self::RateLimited { retry_after_secs } => {
                resp = resp.header("Retry-After", retry_after_secs.max(&1).to_string())
            }
            _ => {}
        }
        resp.body(self.body())
    }
}

impl From<ApiError> for poem::Error {
    fn from(e: ApiError) -> Self {
        poem::Error::from_response(e.into_response())
    }
}

/// Schema of the error envelope, for the OpenAPI document.
#[derive(poem_openapi::Object)]
#[oai(rename = "ErrorBody")]
struct ErrorBodyDoc {
    /// `VALIDATION_ERROR`, `BAD_REQUEST`, `UNAUTHORIZED`, `FORBIDDEN`, `NOT_FOUND`, `CONFLICT`,
    /// `PAYLOAD_TOO_LARGE`, `RATE_LIMITED` or `INTERNAL_ERROR`.
    code: String,
    message: String,
    /// Only with `VALIDATION_ERROR`: field → message.
    details: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(poem_openapi::Object)]
#[oai(rename = "Error")]
struct ErrorEnvelopeDoc {
    /// Present only on the direct-conversation conflict (the existing ConversationDetail).
    data: Option<ConversationDetail>,
    error: ErrorBodyDoc,
}

impl ApiResponse for ApiError {
    fn meta() -> MetaResponses {
        let content = || {
            vec![MetaMediaType {
                content_type: "application/json",
                schema: ErrorEnvelopeDoc::schema_ref(),
            }]
        };
        let mut responses = Vec::new();
        for (status, description) in [
            (400, "VALIDATION_ERROR or BAD_REQUEST"),
            (401, "UNAUTHORIZED (jwt mode)"),
            (403, "FORBIDDEN"),
            (404, "NOT_FOUND"),
            (409, "CONFLICT"),
            (413, "PAYLOAD_TOO_LARGE"),
            (429, "RATE_LIMITED"),
            (500, "INTERNAL_ERROR"),
        ] {
            responses.push(MetaResponse {
                description,
                status: Some(status),
                status_range: None,
                content: content(),
                headers: vec![],
            });
        }
        MetaResponses { responses }
    }

    fn register(registry: &mut Registry) {
        ErrorEnvelopeDoc::register(registry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_keep_first_position_and_last_message() {
        let mut d = Details::new();
        d.set("name", "a");
        d.set("type", "b");
        d.set("name", "c");
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"name":"c","type":"b"}"#
        );
    }

    #[test]
    fn a_validation_error_renders_the_documented_envelope() {
        let body = Details::one("limit", "limit must be a positive integer");
        let ApiError::Validation(_) = &body else {
            unreachable!()
        };
        assert_eq!(
            String::from_utf8(body.body()).unwrap(),
            r#"{"error":{"code":"VALIDATION_ERROR","message":"Invalid request parameters","details":{"limit":"limit must be a positive integer"}}}"#
        );
    }

    #[test]
    fn internal_errors_never_leak_their_cause() {
        let e = ApiError::Internal(anyhow::anyhow!("password=hunter2"));
        assert_eq!(
            String::from_utf8(e.body()).unwrap(),
            r#"{"error":{"code":"INTERNAL_ERROR","message":"An unexpected error occurred"}}"#
        );
    }
}
