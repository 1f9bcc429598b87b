//! The one error type at the HTTP edge (docs/api.md, "Errors"): each variant maps to a status, a
//! code and a message in the documented envelope. Internal errors are logged once, here, with their
//! cause chain, and leave the service as an opaque 500.

use poem::{IntoResponse, Response, http::StatusCode};
use poem_openapi::{
    ApiResponse,
    registry::{
        MetaHeader, MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry,
    },
    types::Type,
};
use serde::Serialize;

use crate::{
    ingest::SendError, rate_limit::RateLimited, resources::ConversationDetail,
    user_service::UserCheckError,
};

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
    /// The DM conflict (docs/api.md, "Errors"): the existing conversation travels as `data`.
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

/// The answers of the send pipeline's checks (docs/api.md, "Sending messages").
impl From<SendError> for ApiError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::ConversationNotFound => Self::NotFound(CONVERSATION_NOT_FOUND),
            SendError::NotAParticipant => Self::Forbidden(NOT_A_PARTICIPANT),
            SendError::SystemMessage => Self::Forbidden("System messages cannot be sent by users"),
            SendError::ReplyTargetNotFound => Details::one(
                "reply_to_id",
                "reply_to_id must reference a message in this conversation",
            ),
            SendError::RateLimited(limited) => limited.into(),
            SendError::Internal(e) => Self::Internal(e),
        }
    }
}

/// 429 `RATE_LIMITED` with `Retry-After` (docs/api.md, "Rate limits and Retry-After").
impl From<RateLimited> for ApiError {
    fn from(e: RateLimited) -> Self {
        Self::RateLimited {
            retry_after_secs: e.retry_after_secs,
        }
    }
}

/// An unknown user is a validation error of `participant_ids`; a user service that fails is a
/// 500.
impl From<UserCheckError> for ApiError {
    fn from(e: UserCheckError) -> Self {
        match e {
            UserCheckError::Unknown => {
                Details::one("participant_ids", "one or more user IDs do not exist")
            }
            e @ (UserCheckError::Status(_) | UserCheckError::Transport(_)) => {
                Self::Internal(anyhow::Error::new(e))
            }
        }
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

// ----- the error answers of each operation, for the OpenAPI document ------------------------------

// Each `E…` constant is one member of the error sets that [`Fail`] is written with.

/// 400 `VALIDATION_ERROR` or `BAD_REQUEST`.
pub const E400: u32 = 1;
/// 401 `UNAUTHORIZED`: the jwt-mode credential check of [`crate::http::Caller`].
pub const E401: u32 = 1 << 1;
/// 403 `FORBIDDEN`.
pub const E403: u32 = 1 << 2;
/// 404 `NOT_FOUND`.
pub const E404: u32 = 1 << 3;
/// 409 `CONFLICT` without `data`.
pub const E409: u32 = 1 << 4;
/// 409 `CONFLICT` carrying the existing direct conversation as `data` (docs/api.md, "Errors").
pub const E409_DM: u32 = 1 << 5;
/// 413 `PAYLOAD_TOO_LARGE`: a JSON body over 1 MiB.
pub const E413: u32 = 1 << 6;
/// 429 `RATE_LIMITED`, with `Retry-After`.
pub const E429: u32 = 1 << 7;
/// 500 `INTERNAL_ERROR`.
pub const E500: u32 = 1 << 8;

impl ApiError {
    /// The member of a [`Fail`] set this error is answered under.
    fn documented_as(&self) -> u32 {
        match self {
            Self::Validation(_) | Self::BadRequest(_) => E400,
            Self::Unauthorized => E401,
            Self::Forbidden(_) => E403,
            Self::NotFound(_) => E404,
            Self::Conflict(_) => E409,
            Self::DmConflict(_) => E409_DM,
            Self::PayloadTooLarge => E413,
            Self::RateLimited { .. } => E429,
            Self::Internal(_) => E500,
        }
    }
}

/// An operation's error answer: an [`ApiError`], from an operation that can answer only the
/// statuses in `S` (a union of the `E…` constants above). The OpenAPI document lists exactly
/// those for the operation, so each handler's signature is the documented list of its errors,
/// e.g. `Result<Data<Message>, Fail<{ E400 | E401 | E403 | E404 | E500 }>>`.
///
/// Debug builds (the test suite) panic when an error outside `S` is raised, so a handler cannot
/// drift from its documented statuses unnoticed. The 401 of the credential check is answered by
/// the [`crate::http::Caller`] extractor before the handler runs; it is listed with `E401`.
pub struct Fail<const S: u32>(ApiError);

impl<const S: u32, E: Into<ApiError>> From<E> for Fail<S> {
    fn from(e: E) -> Self {
        let e = e.into();
        debug_assert!(
            S & e.documented_as() != 0,
            "the operation answered {} ({e}), which its OpenAPI description does not list",
            e.status()
        );
        Self(e)
    }
}

impl<const S: u32> IntoResponse for Fail<S> {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

impl<const S: u32> From<Fail<S>> for poem::Error {
    fn from(e: Fail<S>) -> Self {
        e.0.into()
    }
}

/// How each member of a [`Fail`] set is described.
struct ErrorDoc {
    member: u32,
    status: u16,
    description: &'static str,
    /// A response header it carries: name, description, schema type.
    header: Option<(&'static str, &'static str, &'static str)>,
}

const ERROR_DOCS: [ErrorDoc; 9] = [
    ErrorDoc {
        member: E400,
        status: 400,
        description: "VALIDATION_ERROR (with `details`) or BAD_REQUEST",
        header: None,
    },
    ErrorDoc {
        member: E401,
        status: 401,
        description: "UNAUTHORIZED: missing or invalid credentials (AUTH_MODE=jwt)",
        header: Some(("WWW-Authenticate", "Always `Bearer`.", "string")),
    },
    ErrorDoc {
        member: E403,
        status: 403,
        description: "FORBIDDEN",
        header: None,
    },
    ErrorDoc {
        member: E404,
        status: 404,
        description: "NOT_FOUND",
        header: None,
    },
    ErrorDoc {
        member: E409,
        status: 409,
        description: "CONFLICT",
        header: None,
    },
    ErrorDoc {
        member: E409_DM,
        status: 409,
        description: "CONFLICT: an active direct conversation between these users already exists; `data` is that ConversationDetail",
        header: None,
    },
    ErrorDoc {
        member: E413,
        status: 413,
        description: "PAYLOAD_TOO_LARGE: the JSON body exceeds 1 MiB",
        header: None,
    },
    ErrorDoc {
        member: E429,
        status: 429,
        description: "RATE_LIMITED",
        header: Some((
            "Retry-After",
            "Seconds to wait before sending again (at least 1).",
            "integer",
        )),
    },
    ErrorDoc {
        member: E500,
        status: 500,
        description: "INTERNAL_ERROR",
        header: None,
    },
];

impl<const S: u32> ApiResponse for Fail<S> {
    fn meta() -> MetaResponses {
        const {
            assert!(
                S & E409 == 0 || S & E409_DM == 0,
                "one status, one description: a set lists 409 with or without `data`, not both"
            )
        };
        let responses = ERROR_DOCS
            .iter()
            .filter(|doc| S & doc.member != 0)
            .map(|doc| MetaResponse {
                description: doc.description,
                status: Some(doc.status),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: "application/json",
                    schema: ErrorEnvelopeDoc::schema_ref(),
                }],
                headers: doc
                    .header
                    .iter()
                    .map(|&(name, description, ty)| MetaHeader {
                        name: name.to_owned(),
                        description: Some(description.to_owned()),
                        required: true,
                        deprecated: false,
                        schema: MetaSchemaRef::Inline(Box::new(MetaSchema::new(ty))),
                    })
                    .collect(),
            })
            .collect();
        MetaResponses { responses }
    }

    fn register(registry: &mut Registry) {
        ErrorEnvelopeDoc::register(registry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{SendRequest, Verdict, verdict};
    use uuid::Uuid;

    fn request(kind: &str) -> SendRequest {
        SendRequest {
            conversation: Uuid::new_v4(),
            sender: Uuid::new_v4(),
            kind: kind.to_owned(),
            content: Some("hi".to_owned()),
            metadata: None,
            reply_to_id: None,
            client_msg_id: None,
        }
    }

    fn name(v: Verdict) -> String {
        match v {
            Verdict::Pass => "pass".to_owned(),
            Verdict::Replay => "replay".to_owned(),
            // As the HTTP edge answers it.
            Verdict::Refuse(e) => ApiError::from(e).to_string(),
        }
    }

    #[test]
    fn a_sends_checks_apply_in_the_spec_order_and_answer_as_documented() {
        let text = request("text");
        let system = request("system");
        // conversation, member, reply ok, client id used
        let cases = [
            (
                &text,
                (false, false, false, true),
                "not found: Conversation not found",
            ),
            (
                &text,
                (true, false, false, true),
                "forbidden: You are not a participant of this conversation",
            ),
            (
                &system,
                (true, true, false, true),
                "forbidden: System messages cannot be sent by users",
            ),
            (&text, (true, true, false, true), "validation failed"),
            (&text, (true, true, true, true), "replay"),
            (&text, (true, true, true, false), "pass"),
        ];
        for (req, (c, m, r, u), expected) in cases {
            assert_eq!(name(verdict(req, c, m, r, u)), expected, "{c} {m} {r} {u}");
        }
    }

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
    #[cfg(debug_assertions)]
    #[should_panic(expected = "which its OpenAPI description does not list")]
    fn an_operation_cannot_answer_a_status_it_does_not_document() {
        let _: Fail<{ E400 | E404 }> = ApiError::Conflict("Already a participant").into();
    }

    #[test]
    fn an_operation_documents_exactly_its_statuses() {
        let statuses = |meta: MetaResponses| {
            meta.responses
                .iter()
                .map(|r| r.status.unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            statuses(Fail::<{ E400 | E401 | E409_DM | E413 | E500 }>::meta()),
            [400, 401, 409, 413, 500]
        );
        assert_eq!(statuses(Fail::<E500>::meta()), [500]);
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
